"""Central: the care-station web application — API, live console, client record, management, reports,
video-call signalling, and the chain watchdog behind /healthz. Built on the care domain (``care``)."""
