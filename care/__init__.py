"""Care: the care domain under both the monitor and central — the alert lifecycle and its store, the
escalation chain (policy, steps, roster, channels, notifier), visits, doses, maintenance windows, device
commands and what a device event means (rules). Pure rules take time as an argument; stores take a session.

Lifecycles (alerts, escalation steps, notifications, dose instances, visits) are enums with one transition
table each: ``care.alerts`` and ``care.lifecycles``. Escalation steps name their alert, dose instance or
visit by foreign key (``care.step_store`` writes and cancels them); which dose instance a dispenser's report
is about is one rule, ``care.dose_match``.

Exceptions (each importable from the module named; ``CareError`` from here too)::

    CareError                       care.errors: the root
     ├── IllegalTransition          care.errors (and care.alerts): a move a lifecycle's table refuses
     │                              (a ValueError)
     ├── AlertNotFound              care.alert_store: no alert with that id (a LookupError)
     ├── AlertConflict              care.alert_store: the alert kept changing under us; retry (a RuntimeError)
     ├── VisitNotFound              care.visits: no visit with that id under way (a LookupError)
     ├── PolicyError                care.policy: an unknown or out-of-range policy setting (a ValueError)
     ├── ChannelError               care.channels: a message could not be handed over (a RuntimeError)
     └── WindowError                care.windows: a maintenance-window request that cannot be carried out
          ├── WindowInvalid         breaks a rule, or names no existing client or device (a ValueError)
          ├── WindowNotFound        no window with that id (a LookupError)
          └── WindowAlreadyEnded    ending a window that is over
"""

from .errors import CareError

__all__ = ["CareError"]
