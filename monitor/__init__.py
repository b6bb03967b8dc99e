"""The monitor: turns what devices report into alerts, and (later) escalates them in time."""
