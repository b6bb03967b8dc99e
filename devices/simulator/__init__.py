"""Simulated devices that speak protocol v1 to a real broker, as real devices would."""
