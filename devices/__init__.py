"""Devices at the client's home: the simulated fleet (and, later, the video endpoint)."""
