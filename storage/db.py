"""Engine and session factories, and the Alembic upgrade, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "SessionFactory",
    "downgrade",
    "is_sqlite",
    "make_engine",
    "make_session_factory",
    "schema_revision",
    "upgrade",
]

log = logging.getLogger(__name__)

SessionFactory = sessionmaker[Session]
_MIGRATIONS = Path(__file__).parent / "migrations"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys on every connection."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_file(Path(parsed.database))
        # Several threads (gateway writer, monitor, web requests) share the file; the busy timeout makes a
        # writer wait for another's short transaction instead of failing with "database is locked".
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below issue BEGIN, instead of pysqlite's own deferred BEGIN.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable in WAL mode across application crashes; only an OS crash or power loss can
            # lose the last transactions. FULL closes that window too, at a cost per commit: we pay it,
            # since an acknowledged alarm must survive a power cut of the server.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock at the start. With a deferred BEGIN, two transactions that read
            # and then write (acknowledge vs resolve, two monitors) can meet at the write and one fails at
            # once with "database is locked" (SQLITE_BUSY_SNAPSHOT), which the busy timeout cannot cure.
            # SQLite has one writer at a time anyway; this makes them queue instead of fail.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def _private_file(path: Path) -> None:
    """The database holds client records: only its owner may read it. A new directory is made 0700 and the
    file 0600 before SQLite opens it (its -wal and -shm files take the database file's mode); a file left
    readable by an older version is made private too."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o077:
            file.chmod(0o600)


def make_session_factory(engine: Engine) -> SessionFactory:
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` with Alembic."""
    _alembic(url, "upgrade", revision)


def downgrade(url: str, revision: str) -> None:
    """Take the database schema back to ``revision`` (``base`` removes every table)."""
    _alembic(url, "downgrade", revision)


def schema_revision(url: str) -> tuple[str | None, str]:
    """Return (the database's schema revision, the newest revision this code knows)."""
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head() or ""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision(), head
    finally:
        engine.dispose()


def _alembic(url: str, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, direction)(cfg, revision)
    finally:
        engine.dispose()
    log.info("database schema %s to %s", "upgraded" if direction == "upgrade" else "downgraded", revision)
