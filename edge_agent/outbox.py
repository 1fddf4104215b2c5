"""The outbox: a durable, bounded SQLite (WAL) queue between the scale and the broker.

Rules (architecture.md §4, domain.md §5 lessons from thingsboard-gateway / telegraf):

* Every event is written here *before* it is published, and deleted only when the
  broker acknowledges it (PUBACK). A crash or power loss loses nothing committed.
* Sequence numbers are per device, monotonic, assigned in the same transaction as the
  insert, and survive restarts (table ``seqs``).
* Bounded by ``max_rows``. When full: raw samples go first (oldest first), then
  heartbeats and zero checks; **sale, re-weigh, counter and fault events are never
  dropped**: when only they remain the outbox accepts them beyond the bound, raises
  ``alarm`` (reported in the heartbeat and as a fault event) and the agent stops
  taking samples until there is room again.
* Every drop is counted (``dropped``) and reported.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import msgspec

from weighing import wire
from weighing.signing import sign_event

#: priority classes: lower survives longer
KEEP, LOW, SAMPLE = 0, 1, 2
_PRIORITY = {
    "sale": KEEP, "reweigh": KEEP, "counter": KEEP, "fault": KEEP,
    "zero": LOW, "heartbeat": LOW,
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    channel TEXT NOT NULL,         -- events | samples
    seq INTEGER,                   -- events only
    priority INTEGER NOT NULL,
    payload BLOB NOT NULL          -- one encoded event, or one whole samples payload
);
CREATE INDEX IF NOT EXISTS outbox_dev ON outbox(device, channel, id);
CREATE TABLE IF NOT EXISTS seqs (device TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    device: str
    channel: str
    seq: int | None
    payload: bytes


class Outbox:
    """A thread-safe durable queue. One file may serve several devices."""

    def __init__(self, path: str | Path, *, max_rows: int = 100_000) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed event survives power loss, not just a process crash
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._rows = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        self.alarm = False

    # -- counters ---------------------------------------------------------------------

    def _bump(self, name: str, n: int = 1) -> None:
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, n),
        )

    def counters(self) -> dict[str, int]:
        with self._lock:
            got = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            got["queued"] = self._rows
            return got

    # -- writes -----------------------------------------------------------------------

    def put_event(self, device: str, event: wire.Event, *, key: bytes | None = None) -> int:
        """Assign the next seq of ``device``, sign, store; return the seq."""
        kind = type(event).__struct_config__.tag
        prio = _PRIORITY.get(str(kind), LOW)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if not self._make_room(prio):
                    self._bump("dropped")
                    self._bump(f"dropped_{kind}")
                    self._db.execute("COMMIT")
                    return -1
                row = self._db.execute(
                    "SELECT next_seq FROM seqs WHERE device = ?", (device,)
                ).fetchone()
                seq = row[0] if row else 1
                self._db.execute(
                    "INSERT INTO seqs(device, next_seq) VALUES (?, ?) "
                    "ON CONFLICT(device) DO UPDATE SET next_seq = excluded.next_seq",
                    (device, seq + 1),
                )
                ev = msgspec.structs.replace(event, seq=seq)
                if key is not None:
                    ev = sign_event(key, device, ev)
                self._db.execute(
                    "INSERT INTO outbox(device, channel, seq, priority, payload) "
                    "VALUES (?, 'events', ?, ?, ?)",
                    (device, seq, prio, wire.encode_event(ev)),
                )
                self._rows += 1
                self._bump("accepted")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return seq

    def put_samples(self, device: str, batch: wire.SampleBatch) -> bool:
        """Store a samples payload; False (and counted) when there is no room for it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self.alarm or not self._make_room(SAMPLE):
                    self._bump("dropped")
                    self._bump("dropped_samples")
                    self._db.execute("COMMIT")
                    return False
                self._db.execute(
                    "INSERT INTO outbox(device, channel, seq, priority, payload) "
                    "VALUES (?, 'samples', NULL, ?, ?)",
                    (device, SAMPLE, wire.encode(batch)),
                )
                self._rows += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return True

    def _make_room(self, prio: int) -> bool:
        """Evict to stay within ``max_rows``; True when a row of ``prio`` may be added."""
        if self._rows < self.max_rows:
            self.alarm = False
            return True
        # evict the oldest row of the least important class present, but only rows less
        # important than (or, for samples and low events, as important as) the newcomer
        for victim in (SAMPLE, LOW):
            if victim < prio or (victim == prio and prio != KEEP):
                continue
            row = self._db.execute(
                "SELECT id FROM outbox WHERE priority = ? ORDER BY id LIMIT 1", (victim,)
            ).fetchone()
            if row is None:
                continue
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
            self._rows -= 1
            self._bump("dropped")
            self._bump("dropped_samples" if victim == SAMPLE else "dropped_low")
            return True
        if prio == KEEP:
            # only events that must never be dropped remain: keep it, raise the alarm
            if not self.alarm:
                self._bump("alarms")
            self.alarm = True
            return True
        return False

    # -- reads and acknowledgement ----------------------------------------------------

    def peek(
        self, device: str, channel: str, *, limit: int = 50, after_id: int = 0
    ) -> list[Row]:
        """The oldest rows of ``device``/``channel`` with id > ``after_id``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, device, channel, seq, payload FROM outbox "
                "WHERE device = ? AND channel = ? AND id > ? ORDER BY id LIMIT ?",
                (device, channel, after_id, limit),
            ).fetchall()
        return [Row(*r) for r in rows]

    def ack(self, ids: list[int]) -> None:
        """Delete rows the broker acknowledged."""
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self._rows -= cur.rowcount
            self._bump("sent", cur.rowcount)
            self._db.execute("COMMIT")
            if self._rows < self.max_rows:
                self.alarm = False

    def depth(self, device: str | None = None) -> int:
        with self._lock:
            if device is None:
                return self._rows
            return self._db.execute(
                "SELECT count(*) FROM outbox WHERE device = ?", (device,)
            ).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
