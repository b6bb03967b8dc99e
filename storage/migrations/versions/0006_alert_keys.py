"""Alerts keyed by what they are about (device, dose, visit, the open alarm) instead of one per client and
kind; alarms linked to the incident they arrived in; reused msg_ids; ending maintenance windows; the
service's own runs (its downtime is not the devices') and what each component says of itself; the chain's
incidents; the service's own (probe) client.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _key(kind: str, client_id: int, device_id: str | None, subject: str | None) -> str:
    """The same key ``care.rules.open_key`` gives (copied: a migration must not change with the code)."""
    if kind == "alarm":
        return f"alarm:c{client_id}"
    if subject:
        return f"{kind}:c{client_id}:{subject}"
    return f"{kind}:c{client_id}:d{device_id or '-'}"


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_index("uq_alerts_one_open")
        batch.add_column(sa.Column("open_key", sa.String(length=120), nullable=True))
        batch.add_column(sa.Column("incident_alert_id", _ID, nullable=True))
        batch.create_foreign_key(
            "fk_alerts_incident_alert_id_alerts", "alerts", ["incident_alert_id"], ["id"]
        )
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, kind, client_id, device_id, subject, state FROM alerts WHERE state <> 'resolved'")
    ).all()
    for alert_id, kind, client_id, device_id, subject, state in rows:
        if kind == "alarm" and state != "open":
            continue  # an alarm in progress no longer counts repeats: a new press is news
        conn.execute(
            sa.text("UPDATE alerts SET open_key = :k WHERE id = :i"),
            {"k": _key(kind, client_id, device_id, subject), "i": alert_id},
        )
    op.create_index(
        "uq_alerts_open_key",
        "alerts",
        ["open_key"],
        unique=True,
        postgresql_where=sa.text("open_key IS NOT NULL"),
        sqlite_where=sa.text("open_key IS NOT NULL"),
    )
    with op.batch_alter_table("device_events") as batch:
        batch.add_column(sa.Column("reused_msg_id", sa.String(length=64), nullable=True))
    with op.batch_alter_table("maintenance_windows") as batch:
        batch.add_column(sa.Column("created_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("ended_by", _ID, nullable=True))
        batch.create_foreign_key("fk_maintenance_windows_ended_by_users", "users", ["ended_by"], ["id"])
    op.create_table(
        "service_runs",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("component", sa.String(length=32), nullable=False),
        sa.Column("instance", sa.String(length=100), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_beat_ms", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "chain_incidents",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("ended_ms", sa.BigInteger(), nullable=True),
        sa.Column("problems", sa.Text(), nullable=False),
        sa.Column("paged_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_chain_incidents_started_ms"), "chain_incidents", ["started_ms"], unique=False)
    op.create_index(
        "uq_chain_incidents_open",
        "chain_incidents",
        ["scope"],
        unique=True,
        postgresql_where=sa.text("ended_ms IS NULL"),
        sqlite_where=sa.text("ended_ms IS NULL"),
    )
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("system", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.create_index(op.f("ix_service_runs_component"), "service_runs", ["component"], unique=False)
    op.create_index(op.f("ix_service_runs_last_beat_ms"), "service_runs", ["last_beat_ms"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("system")
    op.drop_index("uq_chain_incidents_open", table_name="chain_incidents")
    op.drop_index(op.f("ix_chain_incidents_started_ms"), table_name="chain_incidents")
    op.drop_table("chain_incidents")
    op.drop_index(op.f("ix_service_runs_last_beat_ms"), table_name="service_runs")
    op.drop_index(op.f("ix_service_runs_component"), table_name="service_runs")
    op.drop_table("service_runs")
    with op.batch_alter_table("maintenance_windows") as batch:
        batch.drop_constraint("fk_maintenance_windows_ended_by_users", type_="foreignkey")
        batch.drop_column("ended_by")
        batch.drop_column("created_ms")
    with op.batch_alter_table("device_events") as batch:
        batch.drop_column("reused_msg_id")
    op.drop_index("uq_alerts_open_key", table_name="alerts")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_constraint("fk_alerts_incident_alert_id_alerts", type_="foreignkey")
        batch.drop_column("incident_alert_id")
        batch.drop_column("open_key")
    # Going back to one open alert per client and kind: resolve the extra ones so the old index fits.
    op.execute(
        "UPDATE alerts SET state = 'resolved', outcome = 'other' WHERE state <> 'resolved' AND id NOT IN "
        "(SELECT MIN(id) FROM alerts WHERE state <> 'resolved' GROUP BY client_id, kind)"
    )
    op.create_index(
        "uq_alerts_one_open",
        "alerts",
        ["client_id", "kind"],
        unique=True,
        postgresql_where=sa.text("state <> 'resolved'"),
        sqlite_where=sa.text("state <> 'resolved'"),
    )
