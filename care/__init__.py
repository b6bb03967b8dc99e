"""Care: the care domain under both the monitor and central — the alert lifecycle and its store, the
escalation chain (policy, steps, roster, channels, notifier), visits, doses, maintenance windows, device
commands and what a device event means (rules). Pure rules take time as an argument; stores take a session.

Lifecycles (alerts, escalation steps, notifications, dose instances, visits) are enums with one transition
table each: ``care.alerts`` and ``care.lifecycles``.

Exceptions (each importable from the module named; ``CareError`` from here too)::

    CareError                       care.errors: the root
     ├── IllegalTransition          care.errors (and care.alerts): a move a lifecycle's table refuses
     ├── AlertNotFound              care.alert_store: no alert with that id (also a LookupError)
     ├── AlertConflict              care.alert_store: the alert kept changing under us; retry
     ├── VisitNotFound              care.visits: no visit with that id under way (also a LookupError)
     ├── PolicyError                care.policy: an unknown or out-of-range policy setting (a ValueError)
     ├── ChannelError               care.channels: a notification could not be handed over; retried
     └── WindowError                care.windows: a maintenance-window request that cannot be carried out
          ├── WindowInvalid         breaks a rule, or names no existing client or device (a ValueError)
          ├── WindowNotFound        no window with that id (a LookupError)
          └── WindowAlreadyEnded    ending a window that is over
"""

from .errors import CareError

__all__ = ["CareError"]
