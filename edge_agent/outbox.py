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
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from weighing import wire
from weighing.errors import GatewayError
from weighing.signing import sign_event


class OutboxWriteError(GatewayError):
    """The outbox cannot write now (disk full, read-only file system); nothing was written."""


class OutboxCorruptError(GatewayError):
    """The outbox file is damaged (not a database, malformed): the agent cannot go on."""


def _translate(err: sqlite3.Error) -> GatewayError:
    text = str(err).lower()
    if isinstance(err, sqlite3.OperationalError) or "full" in text or "readonly" in text:
        return OutboxWriteError(f"outbox write failed: {err}")
    return OutboxCorruptError(f"outbox damaged: {err}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

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

#: code of the fault event that declares dropped events
DROPPED_CODE = "outbox-dropped"
_MAX_RANGES = 256  # wire.FaultEvent.dropped_seqs max_length


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
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed event survives power loss, not just a process crash
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
            if "created_ms" not in cols:  # an outbox file of an older agent
                self._db.execute("ALTER TABLE outbox ADD COLUMN created_ms INTEGER")
            self._recount()
        except sqlite3.Error as err:
            raise _translate(err) from err
        self.alarm = False
        self._alarm_pending = False  # raised, not yet reported by take_alarm()
        self._aged_ms = 0  # last age sweep
        self.write_failures = 0

    def _recount(self) -> None:
        self._rows, self._bytes = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
        self._undeclared = {r[0] for r in self._db.execute(
            "SELECT device FROM dropped UNION SELECT device FROM dropped_samples")}

    # -- transactions -------------------------------------------------------------------

    def _begin(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise _translate(err) from err

    def _commit(self) -> None:
        self._db.execute("COMMIT")

    def _fail(self, err: BaseException) -> BaseException:
        """Undo a failed transaction (SQLite may have rolled it back itself: a full disk
        does) and re-read the counts; the error to raise, translated when it is SQLite's."""
        self.write_failures += 1
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._recount()
        except sqlite3.Error:
            pass  # the original error says more
        if isinstance(err, sqlite3.Error):
            return _translate(err)
        return err

    # -- counters ---------------------------------------------------------------------

    def _bump(self, name: str, n: int = 1) -> None:
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, n),
        )

    def counters(self) -> dict[str, int]:
        with self._lock:
            try:
                got = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            except sqlite3.Error as err:
                raise _translate(err) from err
            got["queued"] = self._rows
            got["queued_bytes"] = self._bytes
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
        prio = _PRIORITY.get(str(kind), LOW)
        with self._lock:
            self._begin()
            try:
                if state:
                    self._write_state(device, state)
                seq = self._insert_event(device, event, kind=str(kind), prio=prio, key=key)
                self._commit()
            except BaseException as err:
                raise self._fail(err) from err
            return seq

    def _insert_event(self, device: str, event: wire.Event, *, kind: str, prio: int,
                      key: bytes | None) -> int:
        self._age_out()
        if not self._make_room(prio, 256) and not (
            kind == "heartbeat" and self._replace_heartbeats(device)
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
            (device, seq, prio, payload, _now_ms()),
        )
        self._rows += 1
        self._bytes += len(payload)
        self._bump("accepted")
        if prio == KEEP and self._over() and self._db.execute(
            "SELECT 1 FROM outbox WHERE priority > ? LIMIT 1", (KEEP,)
        ).fetchone() is None:
            self._raise_alarm()  # at the bound, and nothing left that may give way
        return seq

    def put_samples(self, device: str, batch: wire.SampleBatch) -> bool:
        """Store a samples payload; False (and counted) when there is no room for it."""
        payload = wire.encode(batch)
        with self._lock:
            self._begin()
            try:
                self._age_out()
                if self.alarm or not self._make_room(SAMPLE, len(payload)):
                    self._bump("dropped")
                    self._bump("dropped_samples")
                    self._note_dropped_samples(device, 1)
                    self._commit()
                    return False
                self._db.execute(
                    "INSERT INTO outbox(device, channel, seq, priority, payload, created_ms) "
                    "VALUES (?, 'samples', NULL, ?, ?, ?)",
                    (device, SAMPLE, payload, _now_ms()),
                )
                self._rows += 1
                self._bytes += len(payload)
                self._commit()
            except BaseException as err:
                raise self._fail(err) from err
            return True

    def _over(self, extra_bytes: int = 0) -> bool:
        return self._rows >= self.max_rows or (
            self.max_bytes is not None and self._bytes + extra_bytes > self.max_bytes)

    def _make_room(self, prio: int, size: int) -> bool:
        """Evict to stay within the bounds; True when a row of ``prio`` may be added."""
        while self._over(size):
            if not self._evict_one(prio):
                if prio == KEEP:
                    # only events that must never be dropped remain: keep it, raise the alarm
                    self._raise_alarm()
                    return True
                return False
        self.alarm = False
        return True

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
        self._rows -= len(rows)
        self._bytes -= sum(r[3] for r in rows)
        self._bump("dropped", len(rows))
        self._bump("dropped_samples" if victim == SAMPLE else "dropped_low", len(rows))
        for _id, device, seq, _n in rows:
            if seq is None:
                self._note_dropped_samples(device, 1)
            else:
                self._db.execute("INSERT INTO dropped(device, seq) VALUES (?, ?)", (device, seq))
                self._undeclared.add(device)

    def _note_dropped_samples(self, device: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO dropped_samples(device, n) VALUES (?, ?) "
            "ON CONFLICT(device) DO UPDATE SET n = n + excluded.n", (device, n))
        self._undeclared.add(device)

    def _age_out(self) -> None:
        """Drop samples, heartbeats and zero checks older than ``max_age_s`` (once a second)."""
        if self.max_age_s is None:
            return
        now = _now_ms()
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

    def _raise_alarm(self) -> None:
        if not self.alarm:
            self._bump("alarms")
            self._alarm_pending = True
        self.alarm = True

    def _replace_heartbeats(self, device: str) -> bool:
        """Make way for a heartbeat beyond the bound by dropping the device's queued ones."""
        rows = self._db.execute(
            "SELECT id, device, seq, length(payload) FROM outbox WHERE device = ? "
            "AND channel = 'events' AND priority = ? AND substr(payload, 1, ?) = ?",
            (device, LOW, len(_HEARTBEAT_HEAD), _HEARTBEAT_HEAD),
        ).fetchall()
        if rows:
            self._drop_rows(rows, LOW)
        return True

    def take_alarm(self) -> bool:
        """True once each time the alarm is raised (to emit one ``outbox-full`` event)."""
        with self._lock:
            pending, self._alarm_pending = self._alarm_pending, False
            return pending

    # -- declaring drops ------------------------------------------------------------------

    def has_undeclared_drops(self, device: str) -> bool:
        return device in self._undeclared

    def put_drop_report(self, device: str, *, key: bytes | None = None) -> int:
        """Declare the device's dropped events and samples in one ``outbox-dropped`` fault
        event, forgetting them in the same transaction; its seq (0: nothing to declare).

        Up to 256 seq ranges per event; more wait for the next report.
        """
        with self._lock:
            self._begin()
            try:
                seqs = [r[0] for r in self._db.execute(
                    "SELECT DISTINCT seq FROM dropped WHERE device = ? ORDER BY seq", (device,))]
                row = self._db.execute(
                    "SELECT n FROM dropped_samples WHERE device = ?", (device,)).fetchone()
                n_samples = int(row[0]) if row else 0
                ranges = _ranges(seqs)[:_MAX_RANGES]
                if not ranges and not n_samples:
                    self._undeclared.discard(device)
                    self._commit()
                    return 0
                declared = sum(b - a + 1 for a, b in ranges)
                event = wire.FaultEvent(
                    seq=0, ts_ms=_now_ms(), code=DROPPED_CODE,
                    detail=f"outbox bound reached: {declared} events (heartbeats / zero "
                           f"checks) and {n_samples} sample batches dropped, oldest first; "
                           f"sales are never dropped",
                    dropped_seqs=[(a, b) for a, b in ranges] or None,
                    dropped_samples=n_samples or None)
                seq = self._insert_event(device, event, kind="fault", prio=KEEP, key=key)
                for a, b in ranges:
                    self._db.execute("DELETE FROM dropped WHERE device = ? AND seq BETWEEN ? "
                                     "AND ?", (device, a, b))
                self._db.execute("DELETE FROM dropped_samples WHERE device = ?", (device,))
                if len(ranges) < _MAX_RANGES:
                    self._undeclared.discard(device)
                self._bump("drop_reports")
                self._commit()
            except BaseException as err:
                raise self._fail(err) from err
            return seq

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
            self._begin()
            try:
                self._write_state(device, entries)
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
            self._rows -= n
            self._bytes -= nbytes
            if not self._over():
                self.alarm = False

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
            self._rows -= n
            self._bytes -= nbytes
            if not self._over():
                self.alarm = False
            return int(n)

    def depth(self, device: str | None = None, channel: str | None = None) -> int:
        with self._lock:
            if device is None:
                return int(self._rows)
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


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct ints as inclusive ranges: [1, 2, 3, 7] → [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
