"""Video calls: the calls timeline (and monitoring audit) and the clients' recorded video consent.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("answered_ms", sa.BigInteger(), nullable=True),
        sa.Column("connected_ms", sa.BigInteger(), nullable=True),
        sa.Column("ended_ms", sa.BigInteger(), nullable=True),
        sa.Column("nurse_user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("quality", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name="fk_calls_client_id_clients"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_calls_device_id_devices"),
        sa.ForeignKeyConstraint(["nurse_user_id"], ["users.id"], name="fk_calls_nurse_user_id_users"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_calls_client_started", "calls", ["client_id", "started_ms"], unique=False)
    op.create_index(op.f("ix_calls_state"), "calls", ["state"], unique=False)
    op.create_table(
        "video_consents",
        sa.Column("client_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("monitoring_allowed", sa.Boolean(), nullable=False),
        sa.Column("auto_answer", sa.Boolean(), nullable=False),
        sa.Column("recorded_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("recorded_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name="fk_video_consents_client_id_clients"),
        sa.ForeignKeyConstraint(["recorded_by"], ["users.id"], name="fk_video_consents_recorded_by_users"),
        sa.PrimaryKeyConstraint("client_id"),
    )


def downgrade() -> None:
    op.drop_table("video_consents")
    op.drop_index(op.f("ix_calls_state"), table_name="calls")
    op.drop_index("ix_calls_client_started", table_name="calls")
    op.drop_table("calls")
