"""Messaging: the MQTT plumbing every component shares — broker URLs and clients, change hints, and the
broker accounts (who may connect and what each may do)."""
