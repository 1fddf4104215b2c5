"""The outbox's SQLite file: its tables, its one migration, and how its errors read.

* :func:`open_db` opens (creating) the file in WAL mode with ``synchronous=FULL`` (a
  committed event survives power loss, not just a process crash), creates what is missing
  and migrates an outbox file of an older agent (``created_ms``, the age bound's column).
* Tables: ``outbox`` (the queued rows: one event, or one whole samples payload, each),
  ``seqs`` (each device's next sequence number), ``counters`` (what is reported),
  ``state`` (the agent's key/value memory across restarts), ``dropped`` and
  ``dropped_samples`` (drops not yet declared to the gateway).
* :func:`translate` is the seam for SQLite's errors: a full disk or a read-only file
  system is :class:`OutboxWriteError` (transient), anything else
  :class:`OutboxCorruptError` (fatal).

Callers import the errors from :mod:`edge_agent.outbox`.
"""

from __future__ import annotations

import sqlite3

from weighing.errors import GatewayError


class OutboxWriteError(GatewayError):
    """The outbox cannot write now (disk full, read-only file system); nothing was written."""


class OutboxCorruptError(GatewayError):
    """The outbox file is damaged (not a database, malformed): the agent cannot go on."""


def translate(err: sqlite3.Error) -> GatewayError:
    """SQLite's error as the outbox's: write (transient) or corrupt (fatal)."""
    text = str(err).lower()
    if isinstance(err, sqlite3.OperationalError) or "full" in text or "readonly" in text:
        return OutboxWriteError(f"outbox write failed: {err}")
    return OutboxCorruptError(f"outbox damaged: {err}")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    channel TEXT NOT NULL,         -- events | samples
    seq INTEGER,                   -- events only
    priority INTEGER NOT NULL,
    payload BLOB NOT NULL,         -- one encoded event, or one whole samples payload
    created_ms INTEGER             -- for the age bound (NULL: written by an older agent)
);
CREATE INDEX IF NOT EXISTS outbox_dev ON outbox(device, channel, id);
CREATE INDEX IF NOT EXISTS outbox_prio ON outbox(priority, id);
CREATE TABLE IF NOT EXISTS seqs (device TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    device TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (device, name)
);
-- dropped events (and a count of dropped sample batches) not yet declared to the gateway
CREATE TABLE IF NOT EXISTS dropped (device TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dropped_samples (device TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


def open_db(path: str) -> sqlite3.Connection:
    """Open (create, migrate) the outbox file; errors translated (:func:`translate`)."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed event survives power loss, not just a process crash
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        cols = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
        if "created_ms" not in cols:  # an outbox file of an older agent
            db.execute("ALTER TABLE outbox ADD COLUMN created_ms INTEGER")
    except sqlite3.Error as err:
        raise translate(err) from err
    return db


def bump(db: sqlite3.Connection, name: str, n: int = 1) -> None:
    """Add ``n`` to counter ``name`` (inside the caller's transaction)."""
    db.execute(
        "INSERT INTO counters(name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
        (name, n),
    )


def write_state(db: sqlite3.Connection, device: str, entries: dict[str, bytes | None]) -> None:
    """Write (``None``: delete) ``state`` entries of ``device`` (in the caller's transaction)."""
    for name, value in entries.items():
        if value is None:
            db.execute("DELETE FROM state WHERE device = ? AND name = ?", (device, name))
        else:
            db.execute(
                "INSERT INTO state(device, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT(device, name) DO UPDATE SET value = excluded.value",
                (device, name, value),
            )
