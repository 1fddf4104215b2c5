"""What a scale worker does with its device's frames: one listener per concern.

Each class here is a :class:`edge_agent.reader.Listener` of one device's
:class:`~edge_agent.reader.FrameReader`; a :class:`ScaleWorker` (``edge_agent.worker``)
puts them in this order: counters, gaps, raw AD, state machine, samples, (with a
scanner) station. Everything they emit goes through the device's
:class:`~edge_agent.eventsink.EventSink`, in order.

* :class:`RawAdListener`: the raw AD counts of the plausible frames that carry one (a
  Modbus poll's last frame), kept in a ``RawAdTrack`` made at the first such frame;
  :meth:`RawAdListener.annotate` fills ``raw_ad`` into sale and zero-check events
  (``edge_agent.rawad``; the gateway's K = (AD − AD0) / W monitor).
* :class:`StateMachineListener`: feeds the weighing state machine, passes its events
  through the annotators (raw AD, then the station) and stores them. The state machine's
  checkpoint (an unfinished settled load) is written with the frame's last event, or on
  its own at most once per stability window, never while events are held (a held event
  carries its own), and restored at start.
* :class:`SampleCollector`: plausible frames as sample batches, one per
  ``samples_interval_s``, numbered by a sample seq reserved on disk in blocks of
  ``SAMPLE_SEQ_BLOCK`` (issue 15: never reused across restarts); none while the outbox
  raises its alarm.
* :class:`CounterWatcher`: counters, identity and calibration registers a Modbus source
  reports in ``extras``, compared with the last values seen (kept across restarts in
  the outbox's state table; the very first observation is reported with ``old = None``):
  one ``CounterChangeEvent`` per change.
* :class:`GapWatcher`: a ``no-data`` fault when frames resume after more than
  ``no_data_s`` without one, with the gap's duration (also across agent restarts: the
  time of the last frame is kept in the outbox's state table, at most every 5 s).
* :class:`StationListener` (a fair-scale station, a scale with a ``scanner``): reads the
  scanner before every poll (so a scan is timed before the frames that follow it); good
  scans become the station's pending code, and :meth:`StationListener.commit` turns the
  sale they pair with into a ``ReweighEvent`` (``edge_agent.station``). A failing
  scanner line is one ``scanner-lost`` fault per outage; the scale keeps being read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from edge_agent.eventsink import EventSink, State
from edge_agent.outbox import OutboxWriteError
from edge_agent.rawad import RawAdTrack
from edge_agent.reader import Listener, Poll, TimedFrame, WorkerStats, now_ms
from edge_agent.statemachine import WeighingStateMachine
from edge_agent.station import ScanError, ScanReader, Station
from edge_agent.transport import ScannerPort, TransportError
from weighing import wire
from weighing.signing import sign_message

log = logging.getLogger(__name__)

CHECKPOINT = "sm.load"  # outbox state keys, per device
EXTRAS = "extras"
LAST_FRAME = "last_frame_ms"
SAMPLE_SEQ = "samples.seq_reserved"  # sample batch seqs handed out up to here (on disk)
SAMPLE_SEQ_BLOCK = 1000
LAST_FRAME_EVERY_MS = 5000


class RawAdListener(Listener):
    """Raw AD counts of recent frames, for sale and zero-check events."""

    def __init__(self) -> None:
        self.track: RawAdTrack | None = None  # made at the first raw AD the source reports

    def on_frame(self, tf: TimedFrame) -> None:
        if tf.raw_ad is not None and tf.plausible:
            if self.track is None:
                self.track = RawAdTrack()
            self.track.feed(tf.t_ms, tf.frame.weight_mg, tf.raw_ad, stable=tf.frame.stable)

    def annotate(self, event: wire.Event) -> wire.Event:
        return event if self.track is None else self.track.annotate(event)


class StateMachineListener(Listener):
    """Feeds the weighing state machine and stores its events with its checkpoint."""

    def __init__(self, sm: WeighingStateMachine, sink: EventSink, *,
                 annotators: Sequence[Callable[[wire.Event], wire.Event]] = ()) -> None:
        self.sm = sm
        self.sink = sink
        self.annotators = list(annotators)
        self._cp_version = sm.checkpoint_version
        self._cp_written_ms = 0

    def restore(self) -> None:
        """Resume an unfinished load from the checkpoint in the outbox, if any."""
        dev = self.sink.device
        cp = self.sink.outbox.get_state(dev, CHECKPOINT)
        if cp is not None:
            if self.sm.restore(cp):
                log.info("%s: resuming an unfinished load from the checkpoint", dev)
            else:
                log.warning("%s: unusable state machine checkpoint ignored", dev)

    def on_frame(self, tf: TimedFrame) -> None:
        events = self.sm.feed(tf.t_ms, tf.frame)
        for annotate in self.annotators:
            events = [annotate(e) for e in events]
        self._persist(events)

    def _persist(self, events: list[wire.Event]) -> None:
        """Store the frame's events; the state machine checkpoint goes with the last one."""
        changed = self.sm.checkpoint_version != self._cp_version
        if not events:
            if changed:
                self.save_checkpoint()
            return
        for i, event in enumerate(events):
            last = i == len(events) - 1
            state = {CHECKPOINT: self.sm.checkpoint()} if last and changed else None
            self.sink.put(event, state=state)
        if changed:
            self._cp_version = self.sm.checkpoint_version
            self._cp_written_ms = now_ms()

    def save_checkpoint(self, *, force: bool = False) -> None:
        if self.sm.checkpoint_version == self._cp_version or self.sink.held:
            return  # held events carry their own checkpoint: a newer one must not precede
        t = now_ms()
        # a settled reading that flickers within the band would write every frame:
        # write at most once per stability window (what completes a load is written
        # with its event, never late)
        if not force and t - self._cp_written_ms < self.sm.params.window_ms:
            return
        try:
            self.sink.outbox.set_state(self.sink.device, {CHECKPOINT: self.sm.checkpoint()})
        except OutboxWriteError:
            return  # a checkpoint is an optimisation; the next one is tried later
        self._cp_version = self.sm.checkpoint_version
        self._cp_written_ms = t


def _flags(tf: TimedFrame) -> int:
    frame = tf.frame
    return ((wire.SampleFlag.STABLE if frame.stable else 0)
            | (wire.SampleFlag.NET if frame.net else 0)
            | (wire.SampleFlag.OVERLOAD if frame.overload else 0)
            | (wire.SampleFlag.UNDERLOAD if frame.underload else 0)
            | (wire.SampleFlag.ZERO if frame.zero else 0))


class SampleCollector(Listener):
    """Plausible frames as signed, numbered sample batches (module rules)."""

    def __init__(self, sink: EventSink, *, enabled: bool, interval_ms: float) -> None:
        self.sink = sink
        self.enabled = enabled
        self.interval_ms = interval_ms
        self.samples: tuple[list[int], list[int], list[int]] = ([], [], [])  # t, mg, flags
        self._take = False
        self._seq = self._seq_reserved = 0  # see _batch

    def on_poll(self, poll: Poll) -> None:
        self._take = self.enabled and not self.sink.outbox.alarm

    def on_frame(self, tf: TimedFrame) -> None:
        if self._take and tf.plausible:
            ts, ws, fs = self.samples
            ts.append(tf.t_ms)
            ws.append(tf.frame.weight_mg)
            fs.append(_flags(tf))

    def on_poll_done(self, poll: Poll) -> None:
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Store the batch once it spans the interval (``force``: whatever there is)."""
        ts, ws, fs = self.samples
        if not ts:
            return
        if not force and ts[-1] - ts[0] < self.interval_ms:
            return
        self.samples = ([], [], [])
        self.sink.put_samples(lambda: self._batch(ts, ws, fs))

    def _batch(self, ts: list[int], ws: list[int], fs: list[int]) -> wire.SampleBatch:
        """A signed sample batch with the device's next sample seq. Seqs are reserved on
        disk in blocks of ``SAMPLE_SEQ_BLOCK`` (one outbox write per block, not per batch);
        after a restart the next block begins, so a seq is never reused (the skipped rest
        is a gap)."""
        outbox, dev = self.sink.outbox, self.sink.device
        if self._seq >= self._seq_reserved:
            stored = outbox.get_state(dev, SAMPLE_SEQ)
            start = max(int(stored) if stored else 0, self._seq)
            self._seq = max(self._seq, start)
            self._seq_reserved = start + SAMPLE_SEQ_BLOCK
            outbox.set_state(dev, {SAMPLE_SEQ: str(self._seq_reserved).encode()})
        self._seq += 1
        return sign_message(self.sink.key, dev, wire.SampleBatch(
            device=dev, t_ms=ts, net_mg=ws, flags=fs, seq=self._seq))


def flatten_extras(extras: dict[str, Any]) -> dict[str, str]:
    """Watched values of a Modbus source's ``extras`` as ``{name: text}``.

    Raw AD changes with every reading and is not watched; calibration registers,
    counters and identity registers are.
    """
    out: dict[str, str] = {}
    for name in ("cal_zero", "cal_span"):
        if extras.get(name) is not None:
            out[name] = str(extras[name])
    for group, prefix in (("counters", "counter."), ("identity", "identity.")):
        for k, v in (extras.get(group) or {}).items():
            if v is not None:
                out[prefix + str(k)] = str(v)
    return out


class CounterWatcher(Listener):
    """``CounterChangeEvent``s for the watched values of a source's ``extras``."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.seen: dict[str, str] | None = None  # read from the outbox at the first extras

    def on_poll_done(self, poll: Poll) -> None:
        if not poll.frames or not poll.extras:
            return
        now = flatten_extras(poll.extras)
        seen = self.seen
        if seen is None:
            raw = self.sink.outbox.get_state(self.sink.device, EXTRAS)
            seen = msgspec.json.decode(raw, type=dict[str, str]) if raw else {}
            self.seen = seen
        changes = [(k, seen.get(k), v) for k, v in now.items() if seen.get(k) != v]
        if not changes:
            return
        merged = {**seen, **now}
        t = now_ms()
        for i, (name, old, new) in enumerate(changes):
            state: State | None = (
                {EXTRAS: msgspec.json.encode(merged)} if i == len(changes) - 1 else None
            )
            self.sink.put(wire.CounterChangeEvent(seq=0, ts_ms=t, name=name, old=old, new=new),
                          state=state)
            log.info("%s: %s changed: %s -> %s", self.sink.device, name, old, new)
        self.seen = merged


class GapWatcher(Listener):
    """``no-data`` faults for gaps between frames longer than ``no_data_s``."""

    def __init__(self, sink: EventSink, *, no_data_s: float, stats: WorkerStats) -> None:
        self.sink = sink
        self.no_data_ms = no_data_s * 1000
        self.stats = stats
        self._saved_ms = 0

    def restore(self) -> None:
        """The time of the last frame before the agent (re)started, from the outbox."""
        last = self.sink.outbox.get_state(self.sink.device, LAST_FRAME)
        if last is not None:
            self.stats.last_frame_ms = int(last)

    def on_poll(self, poll: Poll) -> None:
        if not poll.frames:
            return
        last, t_first = poll.prev_frame_ms, poll.frames[0].t_ms
        gap = t_first - last
        if last and gap > self.no_data_ms:
            self.stats.no_data_periods += 1
            self.sink.put(wire.FaultEvent(
                seq=0, ts_ms=t_first, code="no-data", duration_ms=gap,
                detail=f"no frames for {gap / 1000:.1f} s (since {last} ms)"))

    def on_poll_done(self, poll: Poll) -> None:
        t = poll.t_read_ms
        if poll.frames and t - self._saved_ms >= LAST_FRAME_EVERY_MS:
            self._saved_ms = t
            try:
                self.sink.outbox.set_state(self.sink.device, {LAST_FRAME: str(t).encode()})
            except OutboxWriteError:
                pass  # tried again in 5 s


class StationListener(Listener):
    """A fair-scale station: the scanner's codes paired with the weighings that follow."""

    def __init__(self, scanner: ScannerPort, sink: EventSink, *, pair_window_ms: int,
                 stats: WorkerStats) -> None:
        self.scanner = scanner
        self.station = Station(pair_window_ms=pair_window_ms)
        self.sink = sink
        self.stats = stats
        self._scans = ScanReader()

    def before_poll(self) -> None:
        """Scans since the last read: good ones become the station's pending code."""
        dev = self.sink.device
        try:
            data = self.scanner.read()
        except TransportError as err:
            self._scans = ScanReader()  # a partial line before the outage is lost
            log.warning("%s: code scanner lost (%s); retrying with backoff", dev, err)
            self.sink.put(wire.FaultEvent(seq=0, ts_ms=now_ms(), code="scanner-lost",
                                          detail=str(err)[:1000]))
            return
        t = now_ms()
        self.station.expire(t)
        for item in self._scans.feed(data) if data else ():
            if isinstance(item, ScanError):
                self.stats.scan_errors += 1
                by_reason = self.stats.scan_errors_by_reason
                by_reason[item.reason] = by_reason.get(item.reason, 0) + 1
                log.warning("%s: scan rejected: %s", dev, item)
            else:
                self.station.scan(t, item)
                log.info("%s: scanned a %s", dev, item.kind)

    def commit(self, event: wire.Event) -> wire.Event:
        return self.station.commit(event)

    def status(self) -> dict[str, object]:
        st, sc = self.station.stats, self.scanner
        return {
            "scanner": sc.state, "scanner_failures": sc.failures,
            "scanner_last_error": sc.last_error, "scans": st.scans,
            "scan_errors": self.stats.scan_errors,
            "scan_errors_by_reason": dict(self.stats.scan_errors_by_reason),
            "reweighs": st.reweighs, "unpaired": st.unpaired, "replaced": st.replaced,
            "expired": st.expired, "pending": self.station.pending is not None,
        }
