"""The gateway: where devices meet the service. MQTT in, durable storage, then the acknowledgement."""
