"""A user can be deactivated: ``users.disabled_ms`` (when; NULL for an active user). A deactivated user's
sign-in is refused and their sessions are deleted when it happens.

Every existing user stays active. The downgrade drops the column (deactivated users become active again).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("disabled_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_ms")
