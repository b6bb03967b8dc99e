"""Commands sent to devices (set_schedule, ...) and the device's answer to each.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("command", sa.String(length=32), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("sent_ms", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=True),
        sa.Column("result_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_commands_device_id_devices"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_commands_device_id"), "commands", ["device_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_commands_device_id"), table_name="commands")
    op.drop_table("commands")
