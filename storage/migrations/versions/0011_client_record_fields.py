"""The complete client record: phone, date of birth, language, GP, pharmacy, conditions, allergies, mobility,
pets and the key-safe code on ``clients``; the contact list's order, keyholders and when each is reachable on
``contacts``.

Every new column is "" (or 0, false) for existing rows; existing contacts keep their order by id. The
downgrade drops the columns (what was entered in them is lost).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_CLIENT_COLUMNS = (
    ("phone", sa.String(50)),
    ("birth_date", sa.String(10)),
    ("language", sa.String(50)),
    ("gp", sa.String(300)),
    ("pharmacy", sa.String(300)),
    ("conditions", sa.Text()),
    ("allergies", sa.Text()),
    ("mobility", sa.String(500)),
    ("pets", sa.String(300)),
    ("key_safe_code", sa.String(50)),
)


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        for name, kind in _CLIENT_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=False, server_default=""))
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("position", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("keyholder", sa.Boolean(), nullable=False, server_default=sa.text("false"))
        )
        batch.add_column(sa.Column("reachable", sa.String(200), nullable=False, server_default=""))
    op.execute("UPDATE contacts SET position = id")


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch copy would drop and re-create ``clients``,
    # which SQLite's foreign keys refuse while contacts, devices and alerts point at it.
    with op.batch_alter_table("contacts", recreate="never") as batch:
        for name in ("reachable", "keyholder", "position"):
            batch.drop_column(name)
    with op.batch_alter_table("clients", recreate="never") as batch:
        for name, _kind in reversed(_CLIENT_COLUMNS):
            batch.drop_column(name)
