"""The client record: access and care notes on clients, care notes on the timeline, and the audit log.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("access_notes", sa.String(length=500), server_default="", nullable=False))
        batch.add_column(sa.Column("care_notes", sa.Text(), server_default="", nullable=False))
    op.create_table(
        "client_notes",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("client_id", _ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.String(length=2000), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name="fk_client_notes_client_id_clients"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_client_notes_user_id_users"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_client_notes_client_at", "client_notes", ["client_id", "at_ms"], unique=False)
    op.create_table(
        "audit_log",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.BigInteger(), nullable=True),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_audit_log_user_id_users"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at_ms"], unique=False)
    op.create_index("ix_audit_log_user_at", "audit_log", ["user_id", "at_ms"], unique=False)
    op.create_index("ix_audit_log_client_at", "audit_log", ["client_id", "at_ms"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_log_client_at", table_name="audit_log")
    op.drop_index("ix_audit_log_user_at", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_client_notes_client_at", table_name="client_notes")
    op.drop_table("client_notes")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("care_notes")
        batch.drop_column("access_notes")
