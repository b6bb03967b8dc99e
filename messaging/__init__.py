"""Messaging: the MQTT plumbing every component shares — broker URLs and clients, change hints, command
publishing (``mqtt.py``) — and the broker accounts: who may connect and what each may do (``accounts.py``).

Exceptions (one root, ``accounts.py``)::

    BrokerError                  the broker could not be started or reached
    └── BrokerAdminError         the broker did not carry out an account change
        └── BrokerUnreachable    no connection as the service account
"""
