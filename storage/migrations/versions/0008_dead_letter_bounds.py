"""Bounded dead letters: a refused payload is kept as its first 4 KiB with its size and SHA-256; a summary
row counts a device's refusals beyond the gateway's hourly cap (``refusals``); an index for a device's rows
of an hour.

Rows stored before this revision get their size and hash from their payload, and the payload is cut to its
first 4096 bytes (that is what frees the space; a VACUUM or VACUUM FULL returns it to the file system). The
downgrade drops the new columns but cannot give the cut payloads back.

Revision ID: 0008
Revises: 0007
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_KEEP = 4096  # gateway.ingest.DEAD_LETTER_KEEP_BYTES, copied: a migration must not change with the code
_CHUNK = 500


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("payload_size", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("payload_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("refusals", sa.Integer(), server_default=sa.text("1"), nullable=False))
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text(
                "UPDATE dead_letters SET payload_size = length(payload), "
                "payload_sha256 = encode(sha256(payload), 'hex'), "
                "payload = substring(payload FROM 1 FOR :keep)"
            ),
            {"keep": _KEEP},
        )
    else:
        # SQLite has no SHA-256: hash in Python, a chunk of rows at a time (the payloads may be large).
        last = 0
        while True:
            rows = conn.execute(
                sa.text("SELECT id, payload FROM dead_letters WHERE id > :last ORDER BY id LIMIT :n"),
                {"last": last, "n": _CHUNK},
            ).all()
            if not rows:
                break
            conn.execute(
                sa.text(
                    "UPDATE dead_letters SET payload_size = :size, payload_sha256 = :sha, payload = :head "
                    "WHERE id = :id"
                ),
                [
                    {
                        "id": row_id,
                        "size": len(payload),
                        "sha": hashlib.sha256(payload).hexdigest(),
                        "head": bytes(payload[:_KEEP]),
                    }
                    for row_id, payload in rows
                ],
            )
            last = rows[-1][0]
    op.create_index(
        "ix_dead_letters_device_id_received_ms", "dead_letters", ["device_id", "received_ms"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_dead_letters_device_id_received_ms", table_name="dead_letters")
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("refusals")
        batch.drop_column("payload_size")
        batch.drop_column("payload_sha256")
