"""The ingest writer: one thread that stores what the MQTT sessions of a process receive.

Rules (architecture.md §6, issue 17):

* A process has **one** writer, however many MQTT sessions feed it: ``serve`` has one
  session for all its markets, a sharded ``worker`` one session per owned market
  (``gateway_server.ingest.sharding``), all handing their decoded messages to the same
  queue. A batch mixes the markets and is stored in one transaction, so the cost of a
  transaction (its statements, its commit) is shared by all of them: measured here, 5,000
  sample streams on 2 processes were stored in full over 8 markets and at 42-45 % over 50
  when each market had its own writer (docs/benchmarks.md).
* A message is acknowledged to the broker on **its own session** (a message id means
  something only on the connection that delivered it), and only after the transaction
  holding it has committed. A message of a session that has stopped meanwhile (its market
  moved to another worker) is stored but not acknowledged: the broker redelivers it to the
  new owner, and the (device, seq) uniqueness makes that a counted duplicate.
* A payload that fails validation is kept in ``dead_letters`` with its reason and
  counted; a message the store refuses for its content is isolated by splitting the
  batch and dead-lettered alone; the database being away is waited out. Nothing is lost.
* **Events before samples.** What the detectors judge (events, births, states) is stored
  ahead of the sample batches waiting beside it, in a transaction of its own, and never
  waits for a batch of samples to fill: sale → finding is the wait for the transaction
  in progress plus its own, not for the samples queued before it (issue 17). The
  broker's acknowledgements stay in the order the messages arrived on their connection
  (:class:`AckOrder`, MQTT 3.1.1 §4.6): an event stored early is acknowledged once the
  samples received before it are stored too.
* End-to-end acknowledgement (``gateway_server.ingest.acks``): after a batch commits, each
  keyed device with events in it gets one signed ``stored`` command with the seq up to
  which everything of it is settled here, and a ``resend`` command for a gap; declared
  drops mark the gap findings they explain, in the batch's transaction.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from gateway_server.ingest.acks import AckTracker
from gateway_server.ingest.checks import precheck
from gateway_server.ingest.pipeline import (
    BatchResult,
    Incoming,
    Limits,
    decode_message,
    store_batch,
)
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.telemetry.metrics import Histogram
from weighing import wire

log = logging.getLogger(__name__)

POISON_RETRIES = 3
#: messages waiting for the writer above which the sessions stop reading from the broker
#: (issue 17: unbounded, a worker behind a province day held 2.5 GB of decoded messages);
#: what is not read stays in the broker's session queue, so nothing is lost
HIGH_WATER = 20_000
#: the same for the events lane's sessions (births, states, events: what the detectors
#: judge), counted apart: they are read while the samples wait, up to this many
EVENTS_HIGH_WATER = 5_000

#: SQLSTATE classes (PostgreSQL appendix A) of a refusal of what was asked: 22 data
#: exception, 23 integrity constraint violation, 42 syntax error or access rule violation
#: (an undefined table or column), 54 program limit exceeded (too many arguments or
#: columns, a statement too complex). Every other class (08 connection, 53 insufficient
#: resources, 55 object not in prerequisite state, 57 operator intervention, 40
#: transaction rollback, ...) is the database being away or busy: worth a retry.
_PG_DATA_CLASSES = frozenset({"22", "23", "42", "54"})
#: SQLite primary result codes of the same kind: SQLITE_ERROR (syntax, no such table or
#: column, too many SQL variables, expression tree too large), SQLITE_TOOBIG,
#: SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE. SQLITE_BUSY, SQLITE_LOCKED,
#: SQLITE_CANTOPEN, SQLITE_IOERR, SQLITE_FULL, SQLITE_READONLY... are worth a retry.
_SQLITE_DATA_CODES = frozenset({sqlite3.SQLITE_ERROR, sqlite3.SQLITE_TOOBIG,
                                sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_MISMATCH,
                                sqlite3.SQLITE_RANGE})


def _is_data_error(err: DBAPIError) -> bool:
    """Was ``err`` raised by what we asked (the batch, or the SQL built for it), rather
    than by the database being away? Decided by the driver's error, never its message:
    PostgreSQL's SQLSTATE class, SQLite's primary result code, else the DB-API class."""
    orig = err.orig
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg: None for a client-side error
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        return sqlstate[:2] in _PG_DATA_CLASSES
    code = getattr(orig, "sqlite_errorcode", None) if isinstance(orig, sqlite3.Error) else None
    if code is not None:
        return code & 0xFF in _SQLITE_DATA_CODES  # an extended result code → its primary
    # no code from the server: the driver refused the request itself (a NUL in a
    # PostgreSQL text, a parameter type SQLite cannot bind), or lost the connection
    return isinstance(err, (DataError, IntegrityError, ProgrammingError))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def decode(m: mqtt.MQTTMessage, received_ms: int) -> Incoming:
    """The message as the pipeline takes it; never raises (a topic that is not UTF-8 is
    dead-lettered under its bytes, a payload the contract refuses carries its error)."""
    try:
        topic = m.topic
    except UnicodeDecodeError as err:
        topic = repr(err.object)[:500]
    payload = m.payload if isinstance(m.payload, bytes) else bytes(m.payload)
    return decode_message(topic, payload, received_ms)


@dataclass
class IngestStats:
    received: int = 0
    stored_sales: int = 0
    stored_events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    unsigned: int = 0  # births / states / samples accepted without a signature (migration)
    quarantined: int = 0
    bad_signatures: int = 0
    sequence_gaps: int = 0
    samples: int = 0
    batches: int = 0
    store_retries: int = 0
    unstorable: int = 0
    connected: bool = False
    last_batch_ms: int = 0
    dead_by_reason: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "dead_by_reason"}
        d["dead_by_reason"] = dict(self.dead_by_reason)
        return d


class AckOrder:
    """The QoS 1 messages of one MQTT connection, acknowledged in the order they arrived.

    MQTT 3.1.1 §4.6: a client sends PUBACKs in the order the PUBLISHes were received. The
    writer stores events ahead of older samples, so it reports what it stored
    (:meth:`stored`) and gets back what may be acknowledged now: the stored prefix of the
    arrival order. A new connection starts a new order (:meth:`reset`); a message of an
    older connection is never acknowledged on it (its id meant something only on its own
    connection): the broker redelivers it, a counted duplicate. Thread-safe: the network
    thread calls :meth:`received` and :meth:`reset`, the writer :meth:`stored`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fifo: deque[mqtt.MQTTMessage] = deque()
        self._pending: dict[int, mqtt.MQTTMessage] = {}  # id() → message, of the fifo
        self._done: set[int] = set()

    def reset(self) -> None:
        with self._lock:
            self._fifo.clear()
            self._pending.clear()
            self._done.clear()

    def received(self, m: mqtt.MQTTMessage) -> None:
        if m.qos:
            with self._lock:
                self._fifo.append(m)
                self._pending[id(m)] = m

    def stored(self, msgs: list[mqtt.MQTTMessage]) -> list[mqtt.MQTTMessage]:
        """Note ``msgs`` as stored; return the messages to acknowledge now, in order."""
        out = []
        with self._lock:
            for m in msgs:
                if self._pending.get(id(m)) is m:
                    self._done.add(id(m))
            while self._fifo and id(self._fifo[0]) in self._done:
                m = self._fifo.popleft()
                self._done.discard(id(m))
                del self._pending[id(m)]
                out.append(m)
        return out

    def waiting(self) -> int:
        """Messages received and not yet acknowledged."""
        return len(self._fifo)


class Session(Protocol):
    """What the writer needs of the MQTT session a message came from
    (``gateway_server.ingest.ingestor.Ingestor``)."""

    client: mqtt.Client
    order: AckOrder  # its connection's acknowledgements, in arrival order
    stopped: bool
    done: int  # messages stored (written by the writer thread only)
    last_batch_ms: int  # when a batch holding its messages last committed
    newest_sample_ms: int  # device time of its newest stored sample


Item = tuple[Session, mqtt.MQTTMessage, Incoming]


class IngestWriter:
    """One writer thread; the sessions of a process :meth:`submit` to it."""

    def __init__(self, settings: Settings, store: Store, *, acknowledge: bool = True) -> None:
        self.settings = settings
        self.store = store
        self.stats = IngestStats()
        self.latest: dict[str, tuple[int, int, int]] = {}  # device → newest (t, net, flags)
        self.acks = AckTracker()
        self.acknowledge = acknowledge  # False: no stored/resend commands (bench_acks.py)
        self.sink: Any = None  # a gateway_server.telemetry.tssink.TimeSeriesSink, if configured
        # never blocks a session's network thread; the sessions stop reading while
        # :meth:`backlogged` instead (netloop, ingestor)
        self._q: queue.SimpleQueue[Item] = queue.SimpleQueue()
        # taken from ``_q`` by the writer thread, not stored yet: events first
        self._urgent: deque[Item] = deque()
        self._samples: deque[Item] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._windows: dict[str, int] = {}  # last closed window evaluated, per market
        self._keys: dict[str, bytes | None] = {}  # keys of the batch being stored
        self.max_depth = 0  # the deepest the queue has been (the high-water mark holds)
        #: device → key, as the last transaction read it: the network threads check the
        #: events' signatures with it before the writer takes them (``checks.precheck``)
        self.keys: dict[str, bytes] = {}
        # messages other than sample batches handed over (by the network threads) and
        # stored (by the writer thread): each counter has one writer
        self._events_in = 0
        self._events_out = 0
        #: how long each transaction took (``_store``: its statements and commit, retries
        #: included), by lane: what an event waits for behind the one in progress
        self.tx_seconds = {"events": Histogram(), "samples": Histogram()}

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="ingest-writer",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, session: Session, msg: mqtt.MQTTMessage, inc: Incoming) -> None:
        """Called in a session's network thread; never blocks. The events' signatures are
        checked here when the device's key is known (``checks.precheck``)."""
        inc = precheck(inc, self.keys)
        self._q.put((session, msg, inc))
        if not _is_samples(inc):
            self._events_in += 1
        depth = self._q.qsize()
        if depth > self.max_depth:
            self.max_depth = depth

    def queue_depth(self) -> int:
        return self._q.qsize() + len(self._urgent) + len(self._samples)

    def backlogged(self) -> bool:
        """True while the queue is above :data:`HIGH_WATER`: stop reading the broker."""
        return self.queue_depth() >= HIGH_WATER

    def events_backlogged(self) -> bool:
        """True while more than :data:`EVENTS_HIGH_WATER` messages other than sample
        batches wait: stop reading the events lane too."""
        return self._events_in - self._events_out >= EVENTS_HIGH_WATER

    # -- the thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while (not self._stop.is_set() or not self._q.empty() or self._urgent
               or self._samples):
            items = self._next_batch()
            if items:
                self.process(items)

    def _take(self, item: Item) -> None:
        (self._samples if _is_samples(item[2]) else self._urgent).append(item)

    def _next_batch(self) -> list[Item]:
        """The next transaction's messages: the events waiting (at once, up to
        ``ingest_batch``), else samples (up to ``ingest_samples_batch``, gathered for at
        most ``ingest_max_delay_ms``, cut short by an event).

        Why samples have a smaller bound (issue 17, measured at 5,000 sample streams on 2
        worker processes): an event that arrives waits for the transaction in progress,
        and a samples transaction takes about 0.1 ms a message, no less per message in a
        larger batch (262 messages: 21 ms; 1,244: 135 ms; 2,000: up to 0.5 s); after a
        hiccup the backlog made batches of 2,000, and those were the sales' longest waits.
        """
        max_n = self.settings.ingest_batch
        try:  # everything that has arrived, sorted into events and samples
            while True:
                self._take(self._q.get_nowait())
        except queue.Empty:
            pass
        if not self._urgent and not self._samples:
            try:
                self._take(self._q.get(timeout=0.2))
            except queue.Empty:
                return []
        max_samples = min(max_n, self.settings.ingest_samples_batch)
        if not self._urgent:
            deadline = time.monotonic() + self.settings.ingest_max_delay_ms / 1000
            while len(self._samples) < max_samples and not self._urgent:
                remaining = deadline - time.monotonic()
                try:
                    self._take(self._q.get(timeout=remaining) if remaining > 0
                               else self._q.get_nowait())
                except queue.Empty:
                    break
        source, n = (self._urgent, max_n) if self._urgent else (self._samples, max_samples)
        return [source.popleft() for _ in range(min(n, len(source)))]

    def process(self, items: list[Item]) -> None:
        """Store ``items`` in one transaction, then acknowledge each message on its own
        session and confirm them to their devices."""
        t = now_ms()
        batch = [inc for _, _, inc in items]
        self._keys = {}
        started = time.perf_counter()
        results = self._store(batch, t)
        if results is None:
            return  # stopping: nothing acknowledged, the broker redelivers
        events = sum(not _is_samples(inc) for inc in batch)
        self.tx_seconds["events" if events else "samples"].observe(
            time.perf_counter() - started)
        by_market: dict[str, Session] = {}
        by_session: dict[int, tuple[Session, list[mqtt.MQTTMessage]]] = {}
        for session, m, inc in items:
            by_session.setdefault(id(session), (session, []))[1].append(m)
            session.done += 1
            session.last_batch_ms = t
            if inc.parts is not None:
                by_market[inc.parts.market] = session
        for session, msgs in by_session.values():
            ready = session.order.stored(msgs)  # in arrival order (MQTT 3.1.1 §4.6)
            if not session.stopped:
                for m in ready:
                    session.client.ack(m.mid, m.qos)
        checked: set[int] = set()
        forged: set[int] = set()
        for res in results:
            checked |= res.checked_messages
            forged |= res.forged_events
            for market, _device, sb in res.sample_batches:
                s = by_market.get(market)
                if s is not None and sb.t_ms and sb.t_ms[-1] > s.newest_sample_ms:
                    s.newest_sample_ms = sb.t_ms[-1]
        self._acknowledge(batch, t, checked, forged, by_market)
        for res in results:
            self.keys.update(res.keys)
            self._account(res)
            if self.sink is not None:
                try:  # the time-series store is optional: it never stops the ingest
                    for market, device, sb in res.sample_batches:
                        self.sink.write_samples(market, device, sb.t_ms, sb.net_mg, sb.flags)
                    if res.new_sales:
                        self.sink.write_sales(res.new_sales)
                except Exception:
                    log.exception("time-series sink refused a batch")
        self.stats.received += len(items)
        self._events_out += events

    def _store_once(self, batch: list[Incoming], t: int) -> BatchResult:
        windows = dict(self._windows)
        with self.store.engine.begin() as conn:
            res = store_batch(conn, batch, now_ms=t,
                              unknown_devices=self.settings.unknown_devices,
                              windows=windows if self.settings.idle_scale_rule else None,
                              limits=Limits.from_settings(self.settings))
            devices = {i.parts.device for i in batch if i.parts is not None
                       and i.parts.channel is wire.Channel.EVENTS}
            keys = self.acks.keys(conn, devices, t) if devices and self.acknowledge else {}
            if self.acknowledge:
                self.acks.mark_declared(conn, batch)
        self._windows = windows  # only once committed
        self._keys.update(keys)
        return res

    def _acknowledge(self, batch: list[Incoming], t: int, checked: set[int],
                     forged: set[int], by_market: dict[str, Session]) -> None:
        """After the commit: signed ``stored`` / ``resend`` commands to the devices, each
        published on the session of its market. ``checked`` / ``forged``: the pipeline's
        signature verdicts (``BatchResult``)."""
        if not self.acknowledge:
            return
        try:
            touched = self.acks.observe(batch, self._keys, checked=checked, forged=forged)
            for topic, payload in self.acks.commands(touched, self._keys, t):
                s = by_market.get(_market_of(topic))
                if s is not None and not s.stopped:
                    s.client.publish(topic, payload, qos=1)
        except Exception:  # acknowledgement is an optimisation of the edge: never fatal
            log.exception("cannot send the storage confirmations of a batch")

    def _store(self, batch: list[Incoming], t: int) -> list[BatchResult] | None:
        """Store ``batch``; retry while the database is unreachable; never lose a message.

        A failure that is not the database being away (it persists over
        ``POISON_RETRIES`` tries) is caused by the data: the batch is split in halves and
        each stored on its own, down to the single message, which is then kept as a dead
        letter with the error — so one poisonous message never blocks the ingest and
        never takes good messages down with it.
        """
        failures = 0
        while True:
            try:
                return [self._store_once(batch, t)]
            except (OperationalError, InterfaceError) as err:
                if not _is_data_error(err):
                    self.stats.store_retries += 1
                    log.warning("database unavailable (%s); retrying in 1 s", err)
                    if self._stop.wait(1.0):
                        return None
                    continue
                failures += 1
                error: Exception = err
            except Exception as err:
                failures += 1
                error = err
            self.stats.store_retries += 1
            if failures < POISON_RETRIES:
                log.exception("store failed; retrying the batch")
                if self._stop.wait(0.2):
                    return None
                continue
            if len(batch) == 1:
                inc = batch[0]
                if inc.error is not None and inc.error.startswith("store failed"):
                    # even its dead letter cannot be stored: say so loudly, keep going
                    self.stats.unstorable += 1
                    log.critical("cannot store message on %s even as a dead letter: %s; "
                                 "payload head %r", inc.topic, error, inc.payload[:200])
                    return [BatchResult()]
                poisoned = Incoming(inc.topic, inc.payload, inc.received_ms,
                                    error=f"store failed: {type(error).__name__}: "
                                          f"{str(error)[:500]}")
                log.error("dead-lettering a message the store refuses: %s", poisoned.error)
                return self._store([poisoned], t)
            half = len(batch) // 2
            first = self._store(batch[:half], t)
            if first is None:
                return None
            second = self._store(batch[half:], t)
            return None if second is None else first + second

    def _account(self, res: BatchResult) -> None:
        s = self.stats
        s.batches += 1
        s.last_batch_ms = now_ms()
        s.stored_sales += len(res.new_sales)
        s.stored_events += res.new_events
        s.duplicates += res.duplicates
        s.samples += res.samples
        s.dead_letters += len(res.dead)
        s.quarantined += res.quarantined
        s.bad_signatures += res.bad_signatures
        s.unsigned += res.unsigned
        s.sequence_gaps += res.gaps
        for d in res.dead:
            s.dead_by_reason[d["reason"].split(": ", 1)[-1][:80]] += 1
            log.warning("dead letter on %s: %s", d["topic"], d["reason"])
        self.latest.update(res.latest)


def _is_samples(inc: Incoming) -> bool:
    return inc.parts is not None and inc.parts.channel is wire.Channel.SAMPLES


def _market_of(topic: str) -> str:
    """The market of a command topic ``scales/v1/{market}/{device}/cmd/...``."""
    parts = topic.split("/")
    return parts[2] if len(parts) > 2 else ""


__all__ = ["AckOrder", "IngestStats", "IngestWriter", "Session", "decode", "now_ms"]
