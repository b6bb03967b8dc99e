"""Alembic environment: runs on the connection handed in by storage.db.upgrade."""

from alembic import context

import storage.calls_models  # noqa: F401  (the calls tables join Base.metadata)
import storage.commands_models  # noqa: F401  (the commands table joins Base.metadata)
import storage.records_models  # noqa: F401  (client notes and the audit log join Base.metadata)
from storage.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
