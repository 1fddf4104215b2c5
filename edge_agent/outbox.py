"""The outbox: a durable, bounded SQLite (WAL) queue between the scale and the broker.

Rules (architecture.md §4, domain.md §5 lessons from thingsboard-gateway / telegraf):

* Every event is written here *before* it is published, and deleted only when the
  broker acknowledges it (PUBACK). A crash or power loss loses nothing committed.
* Sequence numbers are per device, monotonic, assigned in the same transaction as the
  insert, and survive restarts (table ``seqs``).
* Bounded by ``max_rows``. When full: raw samples go first (oldest first), then
  heartbeats and zero checks; **sale, re-weigh, counter and fault events are never
  dropped**: when only they remain the outbox accepts them beyond the bound, raises
  ``alarm`` (reported in the heartbeat and, once per episode, as an ``outbox-full``
  fault event: :meth:`Outbox.take_alarm`) and refuses samples until acknowledged rows
  make room again. A heartbeat always gets in (it is how the alarm is seen): when
  nothing may be evicted for it, it replaces the device's queued heartbeats, so at most
  one per device lies beyond the bound.
* Every drop is counted (``dropped``, and by class) and reported.
* A small key/value table (``state``) holds what the agent must remember across
  restarts besides events: the weighing state machine's checkpoint of an unfinished
  load and the last-seen counter / identity / calibration registers. A checkpoint can
  be written in the same transaction as the event that completes it, so a crash
  between the two can neither lose nor repeat the sale.
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

#: how an encoded heartbeat begins (msgspec writes the tag field first)
_HEARTBEAT_HEAD = b'{"kind":"heartbeat"'

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
CREATE INDEX IF NOT EXISTS outbox_prio ON outbox(priority, id);
CREATE TABLE IF NOT EXISTS seqs (device TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    device TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (device, name)
);
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
        self._alarm_pending = False  # raised, not yet reported by take_alarm()

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

    def put_event(
        self, device: str, event: wire.Event, *, key: bytes | None = None,
        state: dict[str, bytes | None] | None = None,
    ) -> int:
        """Assign the next seq of ``device``, sign, store; return the seq (-1: dropped).

        ``state`` entries (``None`` deletes) are written in the same transaction.
        """
        kind = type(event).__struct_config__.tag
        prio = _PRIORITY.get(str(kind), LOW)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if state:
                    self._write_state(device, state)
                if not self._make_room(prio) and not (
                    kind == "heartbeat" and self._replace_heartbeats(device)
                ):
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
                if prio == KEEP and self._rows >= self.max_rows and self._db.execute(
                    "SELECT 1 FROM outbox WHERE priority > ? LIMIT 1", (KEEP,)
                ).fetchone() is None:
                    self._raise_alarm()  # at the bound, and nothing left that may give way
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
        # important than, or as important as, the newcomer (KEEP rows are never victims)
        for victim in (SAMPLE, LOW):
            if victim < prio:
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
            self._raise_alarm()
            return True
        return False

    def _raise_alarm(self) -> None:
        if not self.alarm:
            self._bump("alarms")
            self._alarm_pending = True
        self.alarm = True

    def _replace_heartbeats(self, device: str) -> bool:
        """Make way for a heartbeat beyond the bound by dropping the device's queued ones."""
        cur = self._db.execute(
            "DELETE FROM outbox WHERE device = ? AND channel = 'events' AND priority = ? "
            "AND substr(payload, 1, ?) = ?",
            (device, LOW, len(_HEARTBEAT_HEAD), _HEARTBEAT_HEAD),
        )
        if cur.rowcount:
            self._rows -= cur.rowcount
            self._bump("dropped", cur.rowcount)
            self._bump("dropped_low", cur.rowcount)
        return True

    def take_alarm(self) -> bool:
        """True once each time the alarm is raised (to emit one ``outbox-full`` event)."""
        with self._lock:
            pending, self._alarm_pending = self._alarm_pending, False
            return pending

    # -- persistent agent state -------------------------------------------------------

    def _write_state(self, device: str, entries: dict[str, bytes | None]) -> None:
        for name, value in entries.items():
            if value is None:
                self._db.execute("DELETE FROM state WHERE device = ? AND name = ?", (device, name))
            else:
                self._db.execute(
                    "INSERT INTO state(device, name, value) VALUES (?, ?, ?) "
                    "ON CONFLICT(device, name) DO UPDATE SET value = excluded.value",
                    (device, name, value),
                )

    def set_state(self, device: str, entries: dict[str, bytes | None]) -> None:
        """Write (``None``: delete) state entries of ``device`` in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._write_state(device, entries)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get_state(self, device: str, name: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM state WHERE device = ? AND name = ?", (device, name)
            ).fetchone()
        return None if row is None else bytes(row[0])

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
                return int(self._rows)
            return int(self._db.execute(
                "SELECT count(*) FROM outbox WHERE device = ?", (device,)
            ).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
