"""The embedded database holds client records: its file, and SQLite's -wal and -shm beside it, are readable
by their owner only (0600, in a 0700 directory made for it), whatever the umask; an older file left readable
is made private when the service opens it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import text

from storage.db import make_engine


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_file_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = tmp_path / "data" / "carealarm.sqlite3"
        engine = make_engine(f"sqlite:///{db}")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
            wal, shm = db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")
            assert wal.exists() and shm.exists()
            assert (_mode(db), _mode(wal), _mode(shm)) == (0o600, 0o600, 0o600)
        assert _mode(db.parent) == 0o700
        engine.dispose()
    finally:
        os.umask(old)


def test_a_readable_database_file_is_made_private(tmp_path: Path) -> None:
    db = tmp_path / "carealarm.sqlite3"
    db.touch()
    db.chmod(0o644)
    make_engine(f"sqlite:///{db}").dispose()
    assert _mode(db) == 0o600
