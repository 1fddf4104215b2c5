"""One device's way into the outbox: events in order, held in memory while it cannot write.

Rules (architecture.md "A full disk is a fault, not an end"):

* :meth:`EventSink.put` appends the event (with the state rows that go in the same
  transaction, such as the state machine's checkpoint) to the *held* list and writes the
  held list in order; normally it is written at once and the list is empty again.
* A write the outbox cannot make (``OutboxWriteError``: disk full, read-only file
  system) keeps the event and those after it held, in order, and is reported once per
  outage (logged, ``last_error``); the worker keeps reading. :meth:`EventSink.retry` tries
  again at most once a second. More than ``max_held`` events held, or a damaged outbox
  file (``OutboxCorruptError``), cannot be gone on with: ``on_fatal`` is called and the
  error raised.
* Once the held list is written out, one ``outbox-write`` fault reports the outage: since
  when, how long, the error, and the sample batches dropped meanwhile (samples are never
  held: :meth:`EventSink.put_samples` counts them lost while events are held).
* After every event written: an ``outbox-dropped`` report if the outbox dropped rows
  under its retention bound (``Outbox.put_drop_report``), and one ``outbox-full`` fault
  when the outbox raises its alarm.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge_agent.outbox import Outbox, OutboxCorruptError, OutboxWriteError
from edge_agent.reader import WorkerStats, now_ms
from weighing import wire

log = logging.getLogger(__name__)

MAX_HELD = 50_000  # events held in memory while the outbox cannot write, per scale
_RETRY_MS = 1000

State = dict[str, bytes | None]


class EventSink:
    """Writes one device's events to the outbox, holding them while it cannot (rules)."""

    def __init__(
        self, outbox: Outbox, *, device: str, key: bytes | None, stats: WorkerStats,
        notify: Callable[[], None], on_fatal: Callable[[str], None],
        max_held: int = MAX_HELD,
    ) -> None:
        self.outbox = outbox
        self.device = device
        self.key = key
        self.stats = stats
        self.notify = notify  # wakes the device's publisher
        self.on_fatal = on_fatal
        self.max_held = max_held
        #: events not written yet, in order, with the state rows that go with each
        self.held: list[tuple[wire.Event, State | None]] = []
        self.failing_since_ms = 0  # while the outbox cannot write: since when
        self.faults = 0  # outages
        self.samples_lost = 0  # sample batches dropped during this outage
        self._error = ""
        self._retried_ms = 0

    def put(self, event: wire.Event, *, state: State | None = None) -> None:
        """Store an event; while the outbox cannot write, hold it (in order) instead."""
        self.held.append((event, state))
        self.write_held()
        self.notify()

    def retry(self, t_ms: int) -> None:
        """Once a turn: write what is held if a second has passed (the disk may have room)."""
        if self.held and t_ms - self._retried_ms >= _RETRY_MS:
            self._retried_ms = t_ms
            self.write_held()

    def put_samples(self, build: Callable[[], wire.SampleBatch]) -> None:
        """Store the sample batch ``build()`` makes, unless events are held (then it is lost,
        counted). ``build`` is called only when the batch is written (its seq is used)."""
        if self.held:
            self.write_held()  # space may be back: events first
        if self.held:
            self.samples_lost += 1  # samples are not held: counted, reported on resumption
            return
        try:
            self.outbox.put_samples(self.device, build())
        except OutboxWriteError as err:
            self.samples_lost += 1
            self._failed(err)
            return
        self.notify()

    def write_held(self) -> None:
        """Write the held events in order; on a write failure keep the rest, report once."""
        dev, key = self.device, self.key
        while self.held:
            event, state = self.held[0]
            try:
                seq = self.outbox.put_event(dev, event, key=key, state=state)
                if self.outbox.has_undeclared_drops(dev):
                    self.outbox.put_drop_report(dev, key=key)
            except OutboxWriteError as err:
                self._failed(err)
                return
            except OutboxCorruptError as err:
                self.on_fatal(f"{type(err).__name__}: {err}")
                raise
            self.held.pop(0)
            if seq > 0:
                self.stats.events += 1
            if self.failing_since_ms and not self.held:
                self._resumed()
            if self.outbox.take_alarm():
                self._full()

    def _full(self) -> None:
        c = self.outbox.counters()
        log.error("%s: outbox full (%d rows, bound %d): samples stop until the gateway "
                  "confirms", self.device, c["queued"], self.outbox.max_rows)
        self.held.append((wire.FaultEvent(
            seq=0, ts_ms=now_ms(), code="outbox-full",
            detail=f"{c['queued']} rows queued, bound {self.outbox.max_rows}; only "
                   f"never-dropped events remain; samples refused, "
                   f"{c.get('dropped', 0)} rows dropped so far"), None))

    def _failed(self, err: OutboxWriteError) -> None:
        if not self.failing_since_ms:
            self.failing_since_ms = now_ms()
            self._error = str(err)[:500]
            self.faults += 1
            self.stats.last_error = f"OutboxWriteError: {err}"
            log.error("%s: %s; reading on and holding events in memory (at most %d) until "
                      "the outbox takes writes again", self.device, err, self.max_held)
        if len(self.held) > self.max_held:
            self.on_fatal(f"outbox unwritable since {self.failing_since_ms} ms and "
                          f"{len(self.held)} events held in memory: {err}")
            raise err

    def _resumed(self) -> None:
        t = now_ms()
        since, self.failing_since_ms = self.failing_since_ms, 0
        lost, self.samples_lost = self.samples_lost, 0
        log.warning("%s: the outbox takes writes again after %.1f s", self.device,
                    (t - since) / 1000)
        self.held.append((wire.FaultEvent(
            seq=0, ts_ms=since, code="outbox-write", duration_ms=t - since,
            detail=f"{self._error}; events were held in memory and written "
                   f"in order once space returned, {lost} sample batches dropped"), None))

    def status(self) -> dict[str, object]:
        return {
            "failing_since_ms": self.failing_since_ms or None,
            "held_events": len(self.held), "faults": self.faults,
            "samples_lost": self.samples_lost,
        }
