"""Care: the care domain under both the monitor and central — the alert lifecycle and its store, the
escalation chain (policy, steps, roster, channels, notifier), visits, doses, maintenance windows, device
commands and what a device event means (rules). Pure rules take time as an argument; stores take a session."""
