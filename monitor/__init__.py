"""The monitor process: applies what stored device events mean, runs due escalation steps, sweeps silent
devices and plans doses — a thin application on the care domain (``care``)."""
