"""An escalation step names its dose instance or visit by foreign key (``dose_instance_id``, ``visit_id``)
instead of a ``subject`` string such as ``dose:17`` that was parsed back into an id; ``subject`` is dropped.

Each step's subject is carried over to its new column. A subject naming a dose instance or visit that no
longer exists (such a step did nothing when it ran) leaves the column empty. The downgrade writes the
subjects back from the columns.

The partial index of pending steps is dropped and made again around SQLite's rebuild of the table, so its
``WHERE`` holds whether or not the installed SQLAlchemy reflects a SQLite index's predicate.

Revision ID: 0009
Revises: 0008
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_CHUNK = 5000
# subject prefix -> (new column, the table it refers to); what care/ wrote: f"dose:{id}", f"visit:{id}"
_KINDS = {"dose": ("dose_instance_id", "dose_instances"), "visit": ("visit_id", "visits")}
_SUBJECT = re.compile(r"(dose|visit):(\d{1,18})")
_FK = {
    "dose_instance_id": "fk_escalation_steps_dose_instance_id_dose_instances",
    "visit_id": "fk_escalation_steps_visit_id_visits",
}


def _drop_pending_index() -> None:
    op.drop_index(
        "ix_escalation_steps_pending",
        table_name="escalation_steps",
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )


def _create_pending_index() -> None:
    op.create_index(
        "ix_escalation_steps_pending",
        "escalation_steps",
        ["due_ms"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )


def _carry_subjects_over(conn: sa.Connection) -> None:
    """Fill the new columns from the subjects, a chunk of steps at a time; then clear dangling ids."""
    last = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT id, subject FROM escalation_steps WHERE subject IS NOT NULL AND id > :last "
                "ORDER BY id LIMIT :n"
            ),
            {"last": last, "n": _CHUNK},
        ).all()
        if not rows:
            break
        found: dict[str, list[dict[str, int]]] = {column: [] for column, _ in _KINDS.values()}
        for step_id, subject in rows:
            match = _SUBJECT.fullmatch(subject)
            if match is not None:
                found[_KINDS[match[1]][0]].append({"i": step_id, "r": int(match[2])})
        for column, params in found.items():
            if params:
                conn.execute(sa.text(f"UPDATE escalation_steps SET {column} = :r WHERE id = :i"), params)
        last = rows[-1][0]
    for column, table in _KINDS.values():
        conn.execute(
            sa.text(
                f"UPDATE escalation_steps SET {column} = NULL WHERE {column} IS NOT NULL "
                f"AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.id = escalation_steps.{column})"
            )
        )


def upgrade() -> None:
    with op.batch_alter_table("escalation_steps") as batch:
        batch.add_column(sa.Column("dose_instance_id", _ID, nullable=True))
        batch.add_column(sa.Column("visit_id", _ID, nullable=True))
    _carry_subjects_over(op.get_bind())
    _drop_pending_index()
    with op.batch_alter_table("escalation_steps") as batch:
        batch.drop_column("subject")
        for column, table in _KINDS.values():
            batch.create_foreign_key(_FK[column], table, [column], ["id"])
            batch.create_index(f"ix_escalation_steps_{column}", [column], unique=False)
    _create_pending_index()


def downgrade() -> None:
    with op.batch_alter_table("escalation_steps") as batch:
        batch.add_column(sa.Column("subject", sa.String(length=64), nullable=True))
    for prefix, (column, _) in _KINDS.items():
        op.execute(
            f"UPDATE escalation_steps SET subject = '{prefix}:' || CAST({column} AS VARCHAR(20)) "
            f"WHERE {column} IS NOT NULL"
        )
    _drop_pending_index()
    with op.batch_alter_table("escalation_steps") as batch:
        for column in _FK:
            batch.drop_index(f"ix_escalation_steps_{column}")
            batch.drop_constraint(_FK[column], type_="foreignkey")
            batch.drop_column(column)
    _create_pending_index()
