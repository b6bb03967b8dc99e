"""The device protocol: topics and payloads shared by the gateway, the monitor and the devices."""
