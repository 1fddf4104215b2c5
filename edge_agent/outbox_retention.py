"""The outbox's bounds: what gives way when it is full, the alarm, and the drops to declare.

Rules (the outbox's, edge_agent.outbox; architecture.md §4):

* Bounded by ``max_rows``, ``max_bytes`` (payload bytes) and ``max_age_s`` (samples,
  heartbeats and zero checks older than that go, whatever the room, swept at most once a
  second). When full: raw samples go first (oldest first), then heartbeats and zero
  checks; sale, re-weigh, counter and fault events (:data:`KEEP`) are never victims: when
  only they remain a newcomer of theirs is kept beyond the bound and the ``alarm`` is
  raised, while samples are refused until confirmed rows make room again. A heartbeat
  that finds no room replaces the device's queued heartbeats
  (:meth:`Retention.replace_heartbeats`).
* Every drop is counted (``dropped``, and by class). A dropped event's seq is remembered
  (table ``dropped``) and a dropped sample batch counted (``dropped_samples``) until the
  outbox declares them; :attr:`Retention.undeclared` names the devices that have some.
* :class:`Retention` keeps the in-memory row and byte counts the bounds are checked
  against; :meth:`Retention.recount` re-reads them from the file (after a failed
  transaction, so they never drift).

Every method runs with the outbox's lock held and inside its transaction; nothing here
begins or commits one.
"""

from __future__ import annotations

import sqlite3
import time

from edge_agent.outbox_schema import bump

#: priority classes: lower survives longer
KEEP, LOW, SAMPLE = 0, 1, 2
PRIORITY = {
    "sale": KEEP, "reweigh": KEEP, "counter": KEEP, "fault": KEEP,
    "zero": LOW, "heartbeat": LOW,
}

#: seq ranges declared in one report (wire.FaultEvent.dropped_seqs max_length)
MAX_RANGES = 256

#: how an encoded heartbeat begins (msgspec writes the tag field first)
_HEARTBEAT_HEAD = b'{"kind":"heartbeat"'


def now_ms() -> int:
    """Wall-clock ms: a row's ``created_ms`` and the age bound's clock."""
    return time.time_ns() // 1_000_000


class Retention:
    """The bounds of one outbox file and the counts they are checked against."""

    def __init__(
        self, db: sqlite3.Connection, *, max_rows: int, max_bytes: int | None,
        max_age_s: float | None,
    ) -> None:
        self._db = db
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.rows = 0
        self.bytes = 0
        #: devices with dropped events or samples not yet declared
        self.undeclared: set[str] = set()
        self.alarm = False
        self.alarm_pending = False  # raised, not yet reported by Outbox.take_alarm()
        self._aged_ms = 0  # last age sweep

    def recount(self) -> None:
        self.rows, self.bytes = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
        self.undeclared = {r[0] for r in self._db.execute(
            "SELECT device FROM dropped UNION SELECT device FROM dropped_samples")}

    def added(self, nbytes: int) -> None:
        """One row of ``nbytes`` payload bytes was inserted."""
        self.rows += 1
        self.bytes += nbytes

    def freed(self, n: int, nbytes: int) -> None:
        """``n`` rows were delivered and deleted: the alarm ends when they made room."""
        self.rows -= n
        self.bytes -= nbytes
        if not self.over():
            self.alarm = False

    def over(self, extra_bytes: int = 0) -> bool:
        return self.rows >= self.max_rows or (
            self.max_bytes is not None and self.bytes + extra_bytes > self.max_bytes)

    def make_room(self, prio: int, size: int) -> bool:
        """Evict to stay within the bounds; True when a row of ``prio`` may be added."""
        while self.over(size):
            if not self._evict_one(prio):
                if prio == KEEP:
                    # only events that must never be dropped remain: keep it, raise the alarm
                    self.raise_alarm()
                    return True
                return False
        self.alarm = False
        return True

    def alarm_if_full(self) -> None:
        """After a :data:`KEEP` row was added: at the bound with nothing left that may give
        way, raise the alarm."""
        if self.over() and self._db.execute(
            "SELECT 1 FROM outbox WHERE priority > ? LIMIT 1", (KEEP,)
        ).fetchone() is None:
            self.raise_alarm()

    def _evict_one(self, prio: int) -> bool:
        # evict the oldest row of the least important class present, but only rows less
        # important than, or as important as, the newcomer (KEEP rows are never victims)
        for victim in (SAMPLE, LOW):
            if victim < prio:
                continue
            row = self._db.execute(
                "SELECT id, device, seq, length(payload) FROM outbox WHERE priority = ? "
                "ORDER BY id LIMIT 1", (victim,)
            ).fetchone()
            if row is None:
                continue
            self._drop_rows([row], victim)
            return True
        return False

    def _drop_rows(self, rows: list[tuple[int, str, int | None, int]], victim: int) -> None:
        self._db.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
        self.rows -= len(rows)
        self.bytes -= sum(r[3] for r in rows)
        bump(self._db, "dropped", len(rows))
        bump(self._db, "dropped_samples" if victim == SAMPLE else "dropped_low", len(rows))
        for _id, device, seq, _n in rows:
            if seq is None:
                self.note_dropped_samples(device, 1)
            else:
                self._db.execute("INSERT INTO dropped(device, seq) VALUES (?, ?)", (device, seq))
                self.undeclared.add(device)

    def note_dropped_samples(self, device: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO dropped_samples(device, n) VALUES (?, ?) "
            "ON CONFLICT(device) DO UPDATE SET n = n + excluded.n", (device, n))
        self.undeclared.add(device)

    def age_out(self) -> None:
        """Drop samples, heartbeats and zero checks older than ``max_age_s`` (once a second)."""
        if self.max_age_s is None:
            return
        now = now_ms()
        if now - self._aged_ms < 1000:
            return
        self._aged_ms = now
        for victim in (SAMPLE, LOW):
            rows = self._db.execute(
                "SELECT id, device, seq, length(payload) FROM outbox WHERE priority = ? "
                "AND created_ms < ? ORDER BY id LIMIT 10000",
                (victim, now - int(self.max_age_s * 1000))).fetchall()
            if rows:
                self._drop_rows(rows, victim)

    def raise_alarm(self) -> None:
        if not self.alarm:
            bump(self._db, "alarms")
            self.alarm_pending = True
        self.alarm = True

    def replace_heartbeats(self, device: str) -> bool:
        """Make way for a heartbeat beyond the bound by dropping the device's queued ones."""
        rows = self._db.execute(
            "SELECT id, device, seq, length(payload) FROM outbox WHERE device = ? "
            "AND channel = 'events' AND priority = ? AND substr(payload, 1, ?) = ?",
            (device, LOW, len(_HEARTBEAT_HEAD), _HEARTBEAT_HEAD),
        ).fetchall()
        if rows:
            self._drop_rows(rows, LOW)
        return True

    def undeclared_drops(self, device: str) -> tuple[list[tuple[int, int]], int]:
        """The device's dropped seqs not yet declared, as ranges (up to :data:`MAX_RANGES`:
        more wait for the next report), and its dropped sample batches."""
        seqs = [r[0] for r in self._db.execute(
            "SELECT DISTINCT seq FROM dropped WHERE device = ? ORDER BY seq", (device,))]
        row = self._db.execute(
            "SELECT n FROM dropped_samples WHERE device = ?", (device,)).fetchone()
        n_samples = int(row[0]) if row else 0
        return _ranges(seqs)[:MAX_RANGES], n_samples

    def forget_declared(self, device: str, ranges: list[tuple[int, int]]) -> None:
        """Forget what a report declared: these seq ranges and the device's sample count."""
        for a, b in ranges:
            self._db.execute("DELETE FROM dropped WHERE device = ? AND seq BETWEEN ? "
                             "AND ?", (device, a, b))
        self._db.execute("DELETE FROM dropped_samples WHERE device = ?", (device,))
        if len(ranges) < MAX_RANGES:
            self.undeclared.discard(device)


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct ints as inclusive ranges: [1, 2, 3, 7] → [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
