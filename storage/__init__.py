"""Storage: every table, the engine and session factory, and the Alembic migrations shared by every component.

Exceptions (one root)::

    RegistryError    a device or client the registry cannot add or change as asked (``registry.py``)
"""
