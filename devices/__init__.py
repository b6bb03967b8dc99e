"""Devices at the client's home: the simulated fleet and the video endpoint, speaking protocol v1."""
