"""The outbox: a durable, bounded SQLite (WAL) queue between the scale and the broker.

Rules (architecture.md §4, domain.md §5 lessons from thingsboard-gateway / telegraf):

* Every event is written here *before* it is published, and deleted only when the
  **gateway** confirms it has committed it (:meth:`Outbox.confirm`, the signed ``stored``
  command: end-to-end acknowledgement, docs/architecture.md). The broker's PUBACK only
  frees an in-flight slot; whatever a broker loses after its PUBACK is still here and is
  published again. (A device without a key cannot authenticate the gateway's
  confirmation: its rows leave on PUBACK, :meth:`Outbox.ack`.) Samples carry no seq and
  leave on PUBACK. A crash or power loss loses nothing committed.
* Sequence numbers are per device, monotonic, assigned in the same transaction as the
  insert, and survive restarts (table ``seqs``).
* Bounded by ``max_rows``, ``max_bytes`` (payload bytes) and ``max_age_s`` (samples,
  heartbeats and zero checks older than that go, whatever the room). When full: raw
  samples go first (oldest first), then heartbeats and zero checks; **sale, re-weigh,
  counter and fault events are never dropped**: when only they remain the outbox
  accepts them beyond the bound, raises ``alarm`` (reported in the heartbeat and,
  once per episode, as an ``outbox-full`` fault event: :meth:`Outbox.take_alarm`)
  and refuses samples until confirmed rows make room again. A heartbeat always gets
  in (it is how the alarm is seen): when nothing may be evicted for it, it replaces
  the device's queued heartbeats, so at most one per device lies beyond the bound.
* Every drop is counted (``dropped``, and by class) and reported. A dropped event had a
  seq: it is remembered (table ``dropped``) until the agent declares it in an
  ``outbox-dropped`` fault event (:meth:`Outbox.put_drop_report`, written in the same
  transaction that forgets it), so the gateway tells a declared drop from a loss.
* Write failures are translated at this seam: a full disk or a read-only file system
  raises :class:`OutboxWriteError` (transient: nothing was written, the caller keeps the
  event and retries), a damaged file :class:`OutboxCorruptError` (fatal: the agent exits
  non-zero so that systemd restarts it). The in-memory counts are re-read after any
  failed transaction, so they never drift from the file.
* A small key/value table (``state``) holds what the agent must remember across
  restarts besides events: the weighing state machine's checkpoint of an unfinished
  load and the last-seen counter / identity / calibration registers. A checkpoint can
  be written in the same transaction as the event that completes it, so a crash
  between the two can neither lose nor repeat the sale.

This module is the put / take API (and where callers import the errors from); the file's
tables, migration and error translation are :mod:`edge_agent.outbox_schema`'s, the bounds
(what gives way, the alarm, the drops to declare) :mod:`edge_agent.outbox_retention`'s.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import msgspec

from edge_agent.outbox_retention import KEEP, LOW, PRIORITY, SAMPLE, Retention, now_ms
from edge_agent.outbox_schema import (
    OutboxCorruptError,
    OutboxWriteError,
    bump,
    open_db,
    translate,
    write_state,
)
from weighing import wire
from weighing.signing import sign_event

__all__ = ["DROPPED_CODE", "Outbox", "OutboxCorruptError", "OutboxWriteError", "Row"]

#: code of the fault event that declares dropped events
DROPPED_CODE = "outbox-dropped"


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    device: str
    channel: str
    seq: int | None
    payload: bytes


class Outbox:
    """A thread-safe durable queue. One file may serve several devices."""

    def __init__(
        self, path: str | Path, *, max_rows: int = 100_000, max_bytes: int | None = None,
        max_age_s: float | None = None,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = open_db(self.path)
        self._room = Retention(self._db, max_rows=max_rows, max_bytes=max_bytes,
                               max_age_s=max_age_s)
        try:
            self._room.recount()
        except sqlite3.Error as err:
            raise translate(err) from err
        self.write_failures = 0

    @property
    def max_rows(self) -> int:
        return self._room.max_rows

    @property
    def max_bytes(self) -> int | None:
        return self._room.max_bytes

    @property
    def max_age_s(self) -> float | None:
        return self._room.max_age_s

    @property
    def alarm(self) -> bool:
        """At the bound with only never-dropped events queued (samples are refused)."""
        return self._room.alarm

    # -- transactions -------------------------------------------------------------------

    def _begin(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise translate(err) from err

    def _commit(self) -> None:
        self._db.execute("COMMIT")

    def _fail(self, err: BaseException) -> BaseException:
        """Undo a failed transaction (SQLite may have rolled it back itself: a full disk
        does) and re-read the counts; the error to raise, translated when it is SQLite's."""
        self.write_failures += 1
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._room.recount()
        except sqlite3.Error:
            pass  # the original error says more
        if isinstance(err, sqlite3.Error):
            return translate(err)
        return err

    # -- counters ---------------------------------------------------------------------

    def _bump(self, name: str, n: int = 1) -> None:
        bump(self._db, name, n)

    def counters(self) -> dict[str, int]:
        with self._lock:
            try:
                got = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            except sqlite3.Error as err:
                raise translate(err) from err
            got["queued"] = self._room.rows
            got["queued_bytes"] = self._room.bytes
            return got

    # -- writes -----------------------------------------------------------------------

    def put_event(
        self, device: str, event: wire.Event, *, key: bytes | None = None,
        state: dict[str, bytes | None] | None = None,
    ) -> int:
        """Assign the next seq of ``device``, sign, store; return the seq (-1: dropped).

        ``state`` entries (``None`` deletes) are written in the same transaction. Raises
        :class:`OutboxWriteError` / :class:`OutboxCorruptError`: then nothing was written.
        """
        kind = type(event).__struct_config__.tag
        prio = PRIORITY.get(str(kind), LOW)
        with self._lock:
            self._begin()
            try:
                if state:
                    write_state(self._db, device, state)
                seq = self._insert_event(device, event, kind=str(kind), prio=prio, key=key)
                self._commit()
            except BaseException as err:
                raise self._fail(err) from err
            return seq

    def _insert_event(self, device: str, event: wire.Event, *, kind: str, prio: int,
                      key: bytes | None) -> int:
        self._room.age_out()
        if not self._room.make_room(prio, 256) and not (
            kind == "heartbeat" and self._room.replace_heartbeats(device)
        ):
            self._bump("dropped")
            self._bump(f"dropped_{kind}")
            return -1
        row = self._db.execute(
            "SELECT next_seq FROM seqs WHERE device = ?", (device,)
        ).fetchone()
        seq = int(row[0]) if row else 1
        self._db.execute(
            "INSERT INTO seqs(device, next_seq) VALUES (?, ?) "
            "ON CONFLICT(device) DO UPDATE SET next_seq = excluded.next_seq",
            (device, seq + 1),
        )
        ev = msgspec.structs.replace(event, seq=seq)
        if key is not None:
            ev = sign_event(key, device, ev)
        payload = wire.encode_event(ev)
        self._db.execute(
            "INSERT INTO outbox(device, channel, seq, priority, payload, created_ms) "
            "VALUES (?, 'events', ?, ?, ?, ?)",
            (device, seq, prio, payload, now_ms()),
        )
        self._room.added(len(payload))
        self._bump("accepted")
        if prio == KEEP:
            self._room.alarm_if_full()
        return seq

    def put_samples(self, device: str, batch: wire.SampleBatch) -> bool:
        """Store a samples payload; False (and counted) when there is no room for it."""
        payload = wire.encode(batch)
        with self._lock:
            self._begin()
            try:
                self._room.age_out()
                if self._room.alarm or not self._room.make_room(SAMPLE, len(payload)):
                    self._bump("dropped")
                    self._bump("dropped_samples")
                    self._room.note_dropped_samples(device, 1)
                    self._commit()
                    return False
                self._db.execute(
                    "INSERT INTO outbox(device, channel, seq, priority, payload, created_ms) "
                    "VALUES (?, 'samples', NULL, ?, ?, ?)",
                    (device, SAMPLE, payload, now_ms()),
                )
                self._room.added(len(payload))
                self._commit()
            except BaseException as err:
                raise self._fail(err) from err
            return True

    def take_alarm(self) -> bool:
        """True once each time the alarm is raised (to emit one ``outbox-full`` event)."""
        with self._lock:
            pending, self._room.alarm_pending = self._room.alarm_pending, False
            return pending

    # -- declaring drops ------------------------------------------------------------------

    def has_undeclared_drops(self, device: str) -> bool:
        return device in self._room.undeclared

    def put_drop_report(self, device: str, *, key: bytes | None = None) -> int:
        """Declare the device's dropped events and samples in one ``outbox-dropped`` fault
        event, forgetting them in the same transaction; its seq (0: nothing to declare).

        Up to 256 seq ranges per event; more wait for the next report.
        """
        with self._lock:
            self._begin()
            try:
                ranges, n_samples = self._room.undeclared_drops(device)
                if not ranges and not n_samples:
                    self._room.undeclared.discard(device)
                    self._commit()
                    return 0
                declared = sum(b - a + 1 for a, b in ranges)
                event = wire.FaultEvent(
                    seq=0, ts_ms=now_ms(), code=DROPPED_CODE,
                    detail=f"outbox bound reached: {declared} events (heartbeats / zero "
                           f"checks) and {n_samples} sample batches dropped, oldest first; "
                           f"sales are never dropped",
                    dropped_seqs=[(a, b) for a, b in ranges] or None,
                    dropped_samples=n_samples or None)
                seq = self._insert_event(device, event, kind="fault", prio=KEEP, key=key)
                self._room.forget_declared(device, ranges)
                self._bump("drop_reports")
                self._commit()
            except BaseException as err:
                raise self._fail(err) from err
            return seq

    # -- persistent agent state -------------------------------------------------------

    def set_state(self, device: str, entries: dict[str, bytes | None]) -> None:
        """Write (``None``: delete) state entries of ``device`` in one transaction."""
        with self._lock:
            self._begin()
            try:
                write_state(self._db, device, entries)
                self._commit()
            except BaseException as err:
                raise self._fail(err) from err

    def get_state(self, device: str, name: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM state WHERE device = ? AND name = ?", (device, name)
            ).fetchone()
        return None if row is None else bytes(row[0])

    # -- reads and acknowledgement ----------------------------------------------------

    def peek(
        self, device: str, channel: str, *, limit: int = 50, after_id: int = 0,
        max_seq: int | None = None,
    ) -> list[Row]:
        """The oldest rows of ``device``/``channel`` with id > ``after_id`` (and, for
        events, seq ≤ ``max_seq``)."""
        with self._lock:
            if max_seq is None:
                rows = self._db.execute(
                    "SELECT id, device, channel, seq, payload FROM outbox "
                    "WHERE device = ? AND channel = ? AND id > ? ORDER BY id LIMIT ?",
                    (device, channel, after_id, limit),
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT id, device, channel, seq, payload FROM outbox "
                    "WHERE device = ? AND channel = ? AND id > ? AND seq <= ? "
                    "ORDER BY id LIMIT ?", (device, channel, after_id, max_seq, limit),
                ).fetchall()
        return [Row(*r) for r in rows]

    def id_before_seq(self, device: str, seq: int) -> int:
        """The largest row id of the device's events with a seq below ``seq`` (0: none):
        a publisher cursor from which the rows from ``seq`` on are read again."""
        with self._lock:
            row = self._db.execute(
                "SELECT max(id) FROM outbox WHERE device = ? AND channel = 'events' "
                "AND seq < ?", (device, seq)).fetchone()
        return int(row[0] or 0)

    def floor(self, device: str) -> int:
        """The lowest seq of the device still here (else its next seq): every seq below it
        is confirmed by the gateway or dropped (and declared or about to be)."""
        with self._lock:
            row = self._db.execute(
                "SELECT min(seq) FROM outbox WHERE device = ? AND channel = 'events'",
                (device,)).fetchone()
            if row[0] is not None:
                return int(row[0])
            nxt = self._db.execute("SELECT next_seq FROM seqs WHERE device = ?",
                                   (device,)).fetchone()
        return int(nxt[0]) if nxt else 1

    def ack(self, ids: list[int]) -> None:
        """Delete rows the broker acknowledged (samples; events of a device without key)."""
        if not ids:
            return
        with self._lock:
            self._begin()
            try:
                n = nbytes = 0
                for i in ids:
                    got = self._db.execute(
                        "DELETE FROM outbox WHERE id = ? RETURNING length(payload)", (i,)
                    ).fetchone()
                    if got is not None:
                        n += 1
                        nbytes += got[0]
                self._bump("sent", n)
                self._commit()
            except BaseException as err:
                raise self._fail(err) from err
            self._room.freed(n, nbytes)

    def confirm(self, device: str, stored_seq: int) -> int:
        """The gateway has committed every event of ``device`` up to ``stored_seq``: delete
        them (idempotent); the number of rows deleted."""
        with self._lock:
            self._begin()
            try:
                n, nbytes = self._db.execute(
                    "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox "
                    "WHERE device = ? AND channel = 'events' AND seq <= ?",
                    (device, stored_seq)).fetchone()
                if n:
                    self._db.execute(
                        "DELETE FROM outbox WHERE device = ? AND channel = 'events' "
                        "AND seq <= ?", (device, stored_seq))
                    self._bump("sent", n)
                    self._bump("confirmed", n)
                self._commit()
            except BaseException as err:
                raise self._fail(err) from err
            self._room.freed(n, nbytes)
            return int(n)

    def depth(self, device: str | None = None, channel: str | None = None) -> int:
        with self._lock:
            if device is None:
                return int(self._room.rows)
            if channel is None:
                return int(self._db.execute(
                    "SELECT count(*) FROM outbox WHERE device = ?", (device,)
                ).fetchone()[0])
            return int(self._db.execute(
                "SELECT count(*) FROM outbox WHERE device = ? AND channel = ?",
                (device, channel)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

