"""Central: the care-station API, the live console and (later) video-call signalling."""
