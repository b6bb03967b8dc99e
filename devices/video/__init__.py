"""The client's video device (tablet / TV box) on aiortc: rings on the MQTT ``ring`` command, answers by a
button or by itself where the care plan allows, calls the care station, and signals monitoring visibly."""
