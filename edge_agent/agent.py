"""The agent: one reader per line, one supervised worker per device, one outbox, one
publisher per device.

A line (``edge_agent.lines``) is a port and every device on it: on a Modbus ``[[line]]``
one ``ModbusBus`` polls every slave in turn and queues each slave's frames for its
device's worker; an old ``[[scale]]`` is a line of one device whose worker reads its own
source. Each device's worker runs in its own thread (isolated: one scale's driver
failure never stops another). A worker reads its frame source, feeds the weighing state
machine, writes events and sample batches to the outbox and wakes its publisher. Any
exception in a worker is caught by its supervisor loop, reported, and the worker restarts
after a jittered exponential backoff (domain.md §5: an uncaught driver exception must never
silently kill polling). An agent-level supervisor thread checks every publisher's pump
and restarts a dead one; :meth:`Agent.status` reports every task's state.

Besides the state machine's events, a worker emits:

* ``no-data`` faults: no frame for longer than ``no_data_s``, reported when data
  resumes with the gap's duration (also across agent restarts: the time of the last
  frame is kept in the outbox's state table);
* ``CounterChangeEvent``s: counters, identity and calibration registers a Modbus
  source reports in ``extras``, compared with the last values seen (kept across
  restarts; the very first observation is reported with ``old = None``);
* (not an event) ``raw_ad`` filled into the state machine's sale and zero events where
  the source reports its frames' raw AD counts (``edge_agent.rawad``; the gateway's
  K = (AD − AD0) / W monitor);
* one ``outbox-full`` fault when the outbox raises its alarm;
* ``transport-lost`` when a running source fails (once per outage, not per retry);
* ``clock-skew`` when an authentic ``time-sync`` shows the clock off by more than
  ``clock_skew_max_ms``;
* on a fair-scale station (a scale with a ``scanner``): ``ReweighEvent``s instead of the
  sales a scan names (``edge_agent.station``), and ``scanner-lost`` when the scanner's
  line fails (once per outage; the scale keeps being read);
* ``outbox-dropped`` declaring the events and sample batches the outbox dropped under its
  retention bound (``Outbox.put_drop_report``);
* ``outbox-write`` once the outbox takes writes again after a full disk or a read-only
  file system: while it cannot write, the worker keeps reading the scale and holds its
  events in memory, in order (bounded: ``_MAX_HELD`` events), and writes them first when
  space returns; its samples are dropped and counted meanwhile. A damaged outbox file or
  more held events than the bound cannot be gone on with: the agent is marked fatal
  (``Agent.fatal``) and ``edge-agent run`` exits non-zero, so systemd restarts it.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from device_profiles.codecs import FrameError
from device_profiles.schema import LinkKind, Profile, load_profile
from edge_agent import __version__
from edge_agent.commands import CommandGate
from edge_agent.config import AgentConfig, ConfigError, LineConfig, ScaleConfig, load_config
from edge_agent.lines import build_line, make_source
from edge_agent.lograte import WarningGate
from edge_agent.modbus import ModbusBus, ModbusFrameSource
from edge_agent.outbox import Outbox, OutboxCorruptError, OutboxWriteError
from edge_agent.publisher import Publisher
from edge_agent.rawad import RawAdTrack
from edge_agent.statemachine import Params, WeighingStateMachine
from edge_agent.station import ScanError, ScanReader, Station
from edge_agent.transport import (
    FrameSource,
    ScannerPort,
    SerialFrameSource,
    TransportError,
)
from weighing import wire
from weighing.signing import sign_message

log = logging.getLogger(__name__)

_CHECKPOINT = "sm.load"
_EXTRAS = "extras"
_LAST_FRAME = "last_frame_ms"
_SAMPLE_SEQ = "samples.seq_reserved"  # sample batch seqs handed out up to here (on disk)
_SAMPLE_SEQ_BLOCK = 1000
_MAX_HELD = 50_000  # events held in memory while the outbox cannot write, per scale


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_params(profile: Profile, scale: ScaleConfig) -> Params:
    """State machine parameters: the profile's, with the scale's overrides."""
    st, m, link = profile.stability, profile.metrology, profile.link
    window_ms = scale.window_ms or st.window_ms
    continuous = link.kind is LinkKind.SERIAL and link.mode == "continuous"
    rate_hz = link.output_rate_hz if continuous else 1000 / link.poll_interval_ms
    return Params(
        e_mg=m.e_mg,
        window_frames=int(window_ms * rate_hz / 1000),
        window_ms=window_ms,
        band_e=scale.band_e or st.band_e,
        load_threshold_e=scale.load_threshold_e or st.load_threshold_e,
        ranges=tuple((r.max_mg, r.e_mg) for r in m.ranges),
        max_mg=m.max_mg,  # plausibility: Max + 9 e, −Max, the display interval
        d_mg=m.d_mg if m.d_mg and m.d_mg != m.e_mg else None,
    )


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


@dataclass
class WorkerStats:
    state: str = "starting"
    frames: int = 0
    frame_errors: int = 0
    events: int = 0
    restarts: int = 0
    last_error: str = ""
    last_frame_ms: int = 0
    no_data_periods: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    scan_errors: int = 0  # scanned lines that name no purchase (fair-scale station)
    scan_errors_by_reason: dict[str, int] = field(default_factory=dict)


class ScaleWorker:
    """Reads one scale and turns its frames into outbox rows, under supervision."""

    def __init__(
        self, cfg: ScaleConfig, *, market: str, outbox: Outbox, agent: AgentConfig,
        source: FrameSource | None = None, gate: CommandGate | None = None,
        on_command: Any = None, clock: Any = None, on_fatal: Any = None,
        line: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.line = line  # the [[line]] id it is on (None: a [[scale]] alone on its port)
        self.market = market
        self.outbox = outbox
        self.agent_cfg = agent
        self.profile = load_profile(cfg.profile)
        self.source = source or make_source(cfg, self.profile)
        self.sm = WeighingStateMachine(make_params(self.profile, cfg))
        self.stats = WorkerStats()
        # fair-scale station: scans pair with the weighings that follow them
        self.scanner = ScannerPort(cfg.scanner) if cfg.scanner else None
        self.station = Station(pair_window_ms=int(cfg.pair_window_s * 1000))
        self._scans = ScanReader()
        self.boot_id = uuid.uuid4().hex[:16]
        self.gate = gate or CommandGate()
        self._on_command = on_command  # (worker, command) -> None, from the agent
        self._clock = clock  # the agent's ClockSync (offset reporting)
        self._on_fatal = on_fatal  # (reason) -> None: the agent cannot go on
        # while the outbox cannot write (disk full, read-only): events in order, and since when
        self._held: list[tuple[wire.Event, dict[str, bytes | None] | None]] = []
        self._write_fault_since_ms = 0
        self._write_fault_error = ""
        self._samples_lost = 0
        self._retried_ms = 0
        self.write_faults = 0
        self.publisher = Publisher(
            agent.mqtt, market=market, device=cfg.device, outbox=outbox, birth=self.birth(),
            on_command=self._command,
            e2e=cfg.key is not None and agent.agent.confirm == "gateway",
            ack_timeout_s=agent.agent.ack_timeout_s, key=cfg.key_bytes,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: tuple[list[int], list[int], list[int]] = ([], [], [])
        self._sample_seq = self._sample_seq_reserved = 0  # see _sample_batch
        self._last_heartbeat_ms = now_ms()
        self._cp_version = self.sm.checkpoint_version
        self._cp_written_ms = 0
        self._extras_seen: dict[str, str] | None = None
        self._last_frame_saved_ms = 0
        self._outage_reported = False
        self._rawad: RawAdTrack | None = None  # made at the first raw AD the source reports
        self._frame_warnings = WarningGate()  # a wrong profile rejects every frame
        self._restore()

    def birth(self) -> wire.Birth:
        m = self.profile.metrology
        return sign_message(self.cfg.key_bytes, self.cfg.device, wire.Birth(
            device=self.cfg.device, market=self.market, role=self.cfg.role,
            profile=self.profile.id, protocol=self.profile.protocol, max_mg=m.max_mg,
            e_mg=m.e_mg, accuracy_class=wire.AccuracyClass(m.accuracy_class),
            serial=self.cfg.serial, capabilities=list(self.profile.capabilities),
            agent_version=__version__, boot_id=self.boot_id, ts_ms=now_ms(),
        ))

    def _sample_batch(self, ts: list[int], ws: list[int], fs: list[int]) -> wire.SampleBatch:
        """A signed sample batch with the device's next sample seq (issue 15: the gateway
        folds each seq into its rollups once). Seqs are reserved on disk in blocks of
        ``_SAMPLE_SEQ_BLOCK`` (one outbox write per block, not per batch); after a restart
        the next block begins, so a seq is never reused (the skipped rest is a gap)."""
        if self._sample_seq >= self._sample_seq_reserved:
            stored = self.outbox.get_state(self.cfg.device, _SAMPLE_SEQ)
            start = max(int(stored) if stored else 0, self._sample_seq)
            self._sample_seq = max(self._sample_seq, start)
            self._sample_seq_reserved = start + _SAMPLE_SEQ_BLOCK
            self.outbox.set_state(self.cfg.device,
                                  {_SAMPLE_SEQ: str(self._sample_seq_reserved).encode()})
        self._sample_seq += 1
        return sign_message(self.cfg.key_bytes, self.cfg.device, wire.SampleBatch(
            device=self.cfg.device, t_ms=ts, net_mg=ws, flags=fs, seq=self._sample_seq))

    def _restore(self) -> None:
        dev = self.cfg.device
        cp = self.outbox.get_state(dev, _CHECKPOINT)
        if cp is not None:
            if self.sm.restore(cp):
                log.info("%s: resuming an unfinished load from the checkpoint", dev)
            else:
                log.warning("%s: unusable state machine checkpoint ignored", dev)
        last = self.outbox.get_state(dev, _LAST_FRAME)
        if last is not None:
            self.stats.last_frame_ms = int(last)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self.publisher.start()
        self._thread = threading.Thread(
            target=self._supervise, name=f"scale-{self.cfg.device}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        try:
            self._flush_samples(force=True)
            self._save_checkpoint(force=True)
        except Exception as err:  # a damaged or full outbox must not stop the shutdown
            log.error("%s: cannot save state at stop: %s", self.cfg.device, err)
        if self.scanner is not None:
            self.scanner.close()
        self.publisher.stop()
        self.stats.state = "stopped"

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- supervision ------------------------------------------------------------------

    def _supervise(self) -> None:
        backoff = 0.5
        # a device on a shared line is polled by its bus, which backs off a silent slave
        # by itself: restarting the worker costs the line nothing, so it retries soon and
        # takes the frames up as they come (a long worker backoff would leave them queued
        # and then feed them late, in a burst)
        bus_fed = isinstance(self.source, ModbusFrameSource) and self.source.bus is not None
        max_backoff = 1.0 if bus_fed else 30.0
        while not self._stop.is_set():
            try:
                self.stats.state = "opening"
                self.source.open()
                self.stats.state = "running"
                backoff = 0.5
                self._run()
            except OutboxCorruptError as err:
                self._fatal(f"{type(err).__name__}: {err}")
                break
            except Exception as err:  # supervised: report, back off, restart
                self.stats.restarts += 1
                self.stats.last_error = f"{type(err).__name__}: {err}"
                self.stats.state = "backoff"
                transport = isinstance(err, TransportError)
                log.log(logging.WARNING if transport else logging.ERROR,
                        "%s: worker failed (%s); restart in %.1f s",
                        self.cfg.device, self.stats.last_error, backoff, exc_info=not transport)
                if not self._outage_reported:  # once per outage, not once per retry
                    self._outage_reported = True
                    self._put(wire.FaultEvent(
                        seq=0, ts_ms=now_ms(),
                        code="transport-lost" if transport else "worker-restart",
                        detail=self.stats.last_error[:1000]))
            finally:
                self.source.close()
            # jittered exponential backoff: avoid every worker retrying in lockstep
            self._stop.wait(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, max_backoff)
        self.stats.state = "stopped"

    def _pace_s(self) -> float:
        """Least time between two reads of a serial source (Modbus sources pace themselves).

        A continuous scale sends ~20 frames/s; waking once per frame costs more CPU than
        the frames do, so the worker reads every ``read_interval_ms`` and takes the frames
        that arrived meanwhile (they are back-dated at the line's nominal rate). A
        request/response scale is asked once per ``link.poll_interval_ms``.
        """
        link = self.profile.link
        if not isinstance(self.source, SerialFrameSource):
            return 0.0
        if link.mode == "request":
            return link.poll_interval_ms / 1000
        return self.agent_cfg.agent.read_interval_ms / 1000

    def _run(self) -> None:
        period_ms = 1000.0 / self.profile.link.output_rate_hz
        pace_s = self._pace_s()
        next_read = 0.0
        while not self._stop.is_set():
            if pace_s:
                wait = next_read - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
                next_read = time.monotonic() + pace_s
            if self.scanner is not None:
                self._read_scanner()
            polled = self.source.poll(0.25)
            t_read = now_ms()
            for err in polled.errors:
                self._frame_error(err)
            n = len(polled.frames)
            if n:
                self._outage_reported = False
                self._check_gap(t_read - int((n - 1) * period_ms))
            take_samples = self.cfg.samples and not self.outbox.alarm
            # a Modbus poll's ``extras`` belong to its (last) frame; raw AD → sale/zero events
            raw_ad = (getattr(self.source, "extras", None) or {}).get("raw_ad")
            # frames that arrived in one burst (the reader was late) are back-dated at
            # the line's nominal rate, never earlier than the previous frame
            ts, ws, fs = self._samples
            for i, frame in enumerate(polled.frames):
                t = max(t_read - int((n - 1 - i) * period_ms), self.stats.last_frame_ms)
                self.stats.frames += 1
                self.stats.last_frame_ms = t
                # a garbled reading (beyond Max + 9 e, ...) is no sample and no raw AD
                # point; the state machine drops it and reports the fault
                plausible = (frame.overload or frame.underload
                             or self.sm.params.implausible(frame.weight_mg) is None)
                if raw_ad is not None and i == n - 1 and plausible:
                    if self._rawad is None:
                        self._rawad = RawAdTrack()
                    self._rawad.feed(t, frame.weight_mg, raw_ad, stable=frame.stable)
                events = self.sm.feed(t, frame)
                if self._rawad is not None:
                    events = [self._rawad.annotate(e) for e in events]
                if self.scanner is not None:
                    events = [self.station.commit(e) for e in events]
                self._persist(events)
                if take_samples and plausible:
                    ts.append(t)
                    ws.append(frame.weight_mg)
                    fs.append(_flags(frame))
            if n:
                self._check_extras()
                self._save_last_frame(t_read)
            self._flush_samples()
            self._heartbeat(t_read)
            if self._held and t_read - self._retried_ms >= 1000:  # the disk may have room again
                self._retried_ms = t_read
                self._write_held()

    # -- per-frame bookkeeping ------------------------------------------------------------

    def _persist(self, events: list[wire.Event]) -> None:
        """Store the frame's events; the state machine checkpoint goes with the last one."""
        changed = self.sm.checkpoint_version != self._cp_version
        if not events:
            if changed:
                self._save_checkpoint()
            return
        for i, event in enumerate(events):
            last = i == len(events) - 1
            state = {_CHECKPOINT: self.sm.checkpoint()} if last and changed else None
            self._put(event, state=state)
        if changed:
            self._cp_version = self.sm.checkpoint_version
            self._cp_written_ms = now_ms()

    def _save_checkpoint(self, *, force: bool = False) -> None:
        if self.sm.checkpoint_version == self._cp_version or self._held:
            return  # held events carry their own checkpoint: a newer one must not precede
        t = now_ms()
        # a settled reading that flickers within the band would write every frame:
        # write at most once per stability window (what completes a load is written
        # with its event, never late)
        if not force and t - self._cp_written_ms < self.sm.params.window_ms:
            return
        try:
            self.outbox.set_state(self.cfg.device, {_CHECKPOINT: self.sm.checkpoint()})
        except OutboxWriteError:
            return  # a checkpoint is an optimisation; the next one is tried later
        self._cp_version = self.sm.checkpoint_version
        self._cp_written_ms = t

    def _check_gap(self, t_first: int) -> None:
        last = self.stats.last_frame_ms
        gap = t_first - last
        if last and gap > self.cfg.no_data_s * 1000:
            self.stats.no_data_periods += 1
            self._put(wire.FaultEvent(
                seq=0, ts_ms=t_first, code="no-data", duration_ms=gap,
                detail=f"no frames for {gap / 1000:.1f} s (since {last} ms)"))

    def _save_last_frame(self, t: int) -> None:
        if t - self._last_frame_saved_ms >= 5000:
            self._last_frame_saved_ms = t
            try:
                self.outbox.set_state(self.cfg.device, {_LAST_FRAME: str(t).encode()})
            except OutboxWriteError:
                pass  # tried again in 5 s

    def _check_extras(self) -> None:
        extras = getattr(self.source, "extras", None)
        if not extras:
            return
        now = flatten_extras(extras)
        seen = self._extras_seen
        if seen is None:
            raw = self.outbox.get_state(self.cfg.device, _EXTRAS)
            seen = msgspec.json.decode(raw, type=dict[str, str]) if raw else {}
            self._extras_seen = seen
        changes = [(k, seen.get(k), v) for k, v in now.items() if seen.get(k) != v]
        if not changes:
            return
        merged = {**seen, **now}
        t = now_ms()
        for i, (name, old, new) in enumerate(changes):
            state: dict[str, bytes | None] | None = (
                {_EXTRAS: msgspec.json.encode(merged)} if i == len(changes) - 1 else None
            )
            self._put(wire.CounterChangeEvent(seq=0, ts_ms=t, name=name, old=old, new=new),
                      state=state)
            log.info("%s: %s changed: %s -> %s", self.cfg.device, name, old, new)
        self._extras_seen = merged

    def _read_scanner(self) -> None:
        """Scans since the last read: good ones become the station's pending code."""
        assert self.scanner is not None
        try:
            data = self.scanner.read()
        except TransportError as err:
            self._scans = ScanReader()  # a partial line before the outage is lost
            log.warning("%s: code scanner lost (%s); retrying with backoff",
                        self.cfg.device, err)
            self._put(wire.FaultEvent(seq=0, ts_ms=now_ms(), code="scanner-lost",
                                      detail=str(err)[:1000]))
            return
        t = now_ms()
        self.station.expire(t)
        for item in self._scans.feed(data) if data else ():
            if isinstance(item, ScanError):
                self.stats.scan_errors += 1
                by_reason = self.stats.scan_errors_by_reason
                by_reason[item.reason] = by_reason.get(item.reason, 0) + 1
                log.warning("%s: scan rejected: %s", self.cfg.device, item)
            else:
                self.station.scan(t, item)
                log.info("%s: scanned a %s", self.cfg.device, item.kind)

    def _frame_error(self, err: FrameError) -> None:
        self.stats.frame_errors += 1
        reason = err.reason.split(" (")[0]
        self.stats.errors_by_reason[reason] = self.stats.errors_by_reason.get(reason, 0) + 1
        held = self._frame_warnings.allow(time.monotonic())
        if held is None:
            return  # counted above; one log line per interval is enough
        more = f" (and {held} more since the last warning)" if held else ""
        hint = (f"if this goes on, check the profile and serial settings: stop the agent and "
                f"run `edge-agent probe {self.cfg.port}`"
                if self.profile.link.kind is LinkKind.SERIAL else
                "if this goes on, check the profile's register map and the unit id")
        log.warning("%s: rejected %d bytes at offset %d: %s%s; %s", self.cfg.device,
                    err.length, err.offset, err.reason, more, hint)

    def _put(self, event: wire.Event, *, state: dict[str, bytes | None] | None = None) -> None:
        """Store an event; while the outbox cannot write, hold it (in order) instead."""
        self._held.append((event, state))
        self._write_held()
        self.publisher.notify()

    def _write_held(self) -> None:
        """Write the held events in order; on a write failure keep the rest, report once."""
        dev, key = self.cfg.device, self.cfg.key_bytes
        while self._held:
            event, state = self._held[0]
            try:
                seq = self.outbox.put_event(dev, event, key=key, state=state)
                if self.outbox.has_undeclared_drops(dev):
                    self.outbox.put_drop_report(dev, key=key)
            except OutboxWriteError as err:
                self._write_failed(err)
                return
            except OutboxCorruptError as err:
                self._fatal(f"{type(err).__name__}: {err}")
                raise
            self._held.pop(0)
            if seq > 0:
                self.stats.events += 1
            if self._write_fault_since_ms and not self._held:
                self._write_resumed()
            if self.outbox.take_alarm():
                c = self.outbox.counters()
                log.error("%s: outbox full (%d rows, bound %d): samples stop until the gateway "
                          "confirms", dev, c["queued"], self.outbox.max_rows)
                self._held.append((wire.FaultEvent(
                    seq=0, ts_ms=now_ms(), code="outbox-full",
                    detail=f"{c['queued']} rows queued, bound {self.outbox.max_rows}; only "
                           f"never-dropped events remain; samples refused, "
                           f"{c.get('dropped', 0)} rows dropped so far"), None))

    def _write_failed(self, err: OutboxWriteError) -> None:
        if not self._write_fault_since_ms:
            self._write_fault_since_ms = now_ms()
            self._write_fault_error = str(err)[:500]
            self.write_faults += 1
            self.stats.last_error = f"OutboxWriteError: {err}"
            log.error("%s: %s; reading on and holding events in memory (at most %d) until "
                      "the outbox takes writes again", self.cfg.device, err, _MAX_HELD)
        if len(self._held) > _MAX_HELD:
            self._fatal(f"outbox unwritable since {self._write_fault_since_ms} ms and "
                        f"{len(self._held)} events held in memory: {err}")
            raise err

    def _write_resumed(self) -> None:
        t = now_ms()
        since, self._write_fault_since_ms = self._write_fault_since_ms, 0
        lost, self._samples_lost = self._samples_lost, 0
        log.warning("%s: the outbox takes writes again after %.1f s", self.cfg.device,
                    (t - since) / 1000)
        self._held.append((wire.FaultEvent(
            seq=0, ts_ms=since, code="outbox-write", duration_ms=t - since,
            detail=f"{self._write_fault_error}; events were held in memory and written "
                   f"in order once space returned, {lost} sample batches dropped"), None))

    def _fatal(self, reason: str) -> None:
        self.stats.state = "fatal"
        self.stats.last_error = reason
        log.critical("%s: cannot go on: %s", self.cfg.device, reason)
        if self._on_fatal is not None:
            self._on_fatal(f"{self.cfg.device}: {reason}")

    def _flush_samples(self, *, force: bool = False) -> None:
        ts, ws, fs = self._samples
        if not ts:
            return
        interval_ms = self.agent_cfg.agent.samples_interval_s * 1000
        if not force and ts[-1] - ts[0] < interval_ms:
            return
        self._samples = ([], [], [])
        if self._held:
            self._write_held()  # space may be back: events first
        if self._held:
            self._samples_lost += 1  # samples are not held: counted, reported on resumption
            return
        try:
            self.outbox.put_samples(self.cfg.device, self._sample_batch(ts, ws, fs))
        except OutboxWriteError as err:
            self._samples_lost += 1
            self._write_failed(err)
            return
        self.publisher.notify()

    def _heartbeat(self, t: int) -> None:
        if t - self._last_heartbeat_ms < self.agent_cfg.agent.heartbeat_s * 1000:
            return
        self._last_heartbeat_ms = t
        self.heartbeat()

    def heartbeat(self) -> None:
        """Queue a heartbeat now (health counters, clock offset)."""
        c = self.outbox.counters()
        offset = self._clock.offset_ms if self._clock is not None else None
        self._put(wire.HeartbeatEvent(
            seq=0, ts_ms=now_ms(), queued=c.get("queued", 0), sent=c.get("sent", 0),
            dropped=c.get("dropped", 0), reconnects=self.publisher.stats.reconnects,
            frame_errors=self.stats.frame_errors, uptime_s=self.publisher.stats.uptime_s,
            clock_offset_ms=offset, commands_rejected=self.gate.rejected(self.cfg.device),
        ))

    # -- commands (paho's network thread) ----------------------------------------------

    def _command(self, topic: str, payload: bytes) -> None:
        cmd = self.gate.check(self.cfg.device, self.cfg.key_bytes, topic, payload,
                              now_ms=now_ms())
        if cmd is None:
            return
        # the acknowledgement commands are cheap and order-free: handled here, at once
        if cmd.name is wire.CommandName.STORED:
            if cmd.stored_seq is not None and self.publisher.e2e:
                self.publisher.confirmed(cmd.stored_seq)
        elif cmd.name is wire.CommandName.RESEND:
            if cmd.from_seq is not None and cmd.to_seq is not None:
                log.info("%s: the gateway asks for seq %d..%d again", self.cfg.device,
                         cmd.from_seq, cmd.to_seq)
                self.publisher.resend(cmd.from_seq, cmd.to_seq)
        elif self._on_command is not None:
            self._on_command(self, cmd)

    def status(self) -> dict[str, object]:
        s, p = self.stats, self.publisher.stats
        cs = self.gate.stats.get(self.cfg.device)
        return {
            "state": s.state, "alive": self.alive, "frames": s.frames,
            "frame_errors": s.frame_errors, "events": s.events, "restarts": s.restarts,
            "last_error": s.last_error, "last_frame_ms": s.last_frame_ms,
            "no_data_periods": s.no_data_periods, "phase": self.sm.phase.value,
            "publisher": {
                "state": p.state, "connected": p.connected, "connects": p.connects,
                "reconnects": p.reconnects, "connect_failures": p.connect_failures,
                "tls_errors": p.tls_errors, "published_msgs": p.published_msgs,
                "acked_rows": p.acked_rows, "inflight": p.inflight,
                "confirm": "gateway" if self.publisher.e2e else "broker",
                "confirmed_rows": p.confirmed_rows, "confirmed_seq": p.confirmed_seq,
                "ack_timeouts": p.ack_timeouts, "resend_requests": p.resend_requests,
                "pump_state": p.pump_state, "pump_failures": p.pump_failures,
                "pump_restarts": p.pump_restarts, "last_error": p.last_error,
            },
            "commands": {
                "accepted": cs.accepted if cs else 0, "rejected": cs.rejected if cs else 0,
                "last_rejection": cs.last_rejection if cs else "",
            },
            "station": self._station_status(),
            "line": self._line_status(),
            "outbox_write": {
                "failing_since_ms": self._write_fault_since_ms or None,
                "held_events": len(self._held), "faults": self.write_faults,
                "samples_lost": self._samples_lost,
            },
        }

    def _line_status(self) -> dict[str, object] | None:
        """The device's slave on its line's bus: health, failures, reads, last error."""
        src = self.source
        if not isinstance(src, ModbusFrameSource) or src.bus is None:
            return None
        st = src.state
        return {
            "line": self.line, "slave": st.slave, "health": st.health.value,
            "consecutive_failures": st.consecutive_failures, "reads_ok": st.reads_ok,
            "reads_failed": st.reads_failed, "last_error": st.last_error,
            "dropped": src.dropped,
        }

    def _station_status(self) -> dict[str, object] | None:
        if self.scanner is None:
            return None
        st, sc = self.station.stats, self.scanner
        return {
            "scanner": sc.state, "scanner_failures": sc.failures,
            "scanner_last_error": sc.last_error, "scans": st.scans,
            "scan_errors": self.stats.scan_errors,
            "scan_errors_by_reason": dict(self.stats.scan_errors_by_reason),
            "reweighs": st.reweighs, "unpaired": st.unpaired, "replaced": st.replaced,
            "expired": st.expired, "pending": self.station.pending is not None,
        }


def _flags(frame: Any) -> int:
    return ((wire.SampleFlag.STABLE if frame.stable else 0)
            | (wire.SampleFlag.NET if frame.net else 0)
            | (wire.SampleFlag.OVERLOAD if frame.overload else 0)
            | (wire.SampleFlag.UNDERLOAD if frame.underload else 0)
            | (wire.SampleFlag.ZERO if frame.zero else 0))


class ClockSync:
    """The offset (server − agent clock) learnt from authentic ``time-sync`` commands."""

    def __init__(self) -> None:
        self.offset_ms: int | None = None
        self.synced_at_ms: int | None = None


@dataclass
class LineRunner:
    """One line and the workers of its devices: a ``[[line]]`` (with its bus, if Modbus)
    or an old ``[[scale]]`` (a line of one device that reads its own source)."""

    key: str  # "line:<id>" or "scale:<device>"
    cfg: LineConfig | ScaleConfig
    workers: list[ScaleWorker]
    bus: ModbusBus | None = None
    bus_restarts: int = 0

    def start(self) -> None:
        if self.bus is not None:
            self.bus.open()  # a dead line is retried per request, and reported per slave
            self.bus.start()
        for w in self.workers:
            w.start()

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        if self.bus is not None:
            self.bus.close()

    def check(self) -> None:
        """Restart the bus thread if it died (a bug: a slave's failure is caught in it)."""
        if self.bus is not None and not self.bus.running:
            self.bus_restarts += 1
            log.error("%s: the line's poll thread stopped; restarting it", self.key)
            self.bus.start()

    def status(self) -> dict[str, object]:
        cfg = self.cfg
        out: dict[str, object] = {
            "port": cfg.port, "devices": [w.cfg.device for w in self.workers],
        }
        if isinstance(cfg, LineConfig):
            out["kind"] = cfg.kind.value
        if self.bus is not None:
            out["bus"] = "running" if self.bus.running else "stopped"
            out["bus_restarts"] = self.bus_restarts
        return out


class Agent:
    """All scales of one configuration file: one runner per line, one worker per device."""

    def __init__(self, cfg: AgentConfig, *, config_path: str | Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else None
        self.outbox = Outbox(cfg.agent.outbox, max_rows=cfg.agent.outbox_max_rows,
                             max_bytes=cfg.agent.outbox_max_bytes,
                             max_age_s=cfg.agent.outbox_max_age_s)
        #: why the agent cannot go on (a damaged outbox, too much held in memory); the
        #: CLI exits non-zero once it is set, so the service manager restarts the agent
        self.fatal: str | None = None
        self.fatal_event = threading.Event()
        c = self.outbox.counters()
        if c["queued"]:
            log.info("outbox %s: %d rows from a previous run to publish", cfg.agent.outbox,
                     c["queued"])
        self.gate = CommandGate()
        self.clock = ClockSync()
        self.lines = self._runners(cfg)
        self.workers = [w for r in self.lines for w in r.workers]
        self.reloads = 0
        self.last_reload_error = ""
        self._control: queue.Queue[tuple[ScaleWorker, wire.Command] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # guards self.workers against a concurrent reload

    def _worker(self, s: ScaleConfig, *, source: Any = None,
                line: str | None = None) -> ScaleWorker:
        return ScaleWorker(s, market=self.cfg.agent.market, outbox=self.outbox, agent=self.cfg,
                           gate=self.gate, on_command=self._enqueue, clock=self.clock,
                           on_fatal=self._set_fatal, source=source, line=line)

    def _runners(self, cfg: AgentConfig) -> list[LineRunner]:
        """Old ``[[scale]]`` sections first (their order as before), then ``[[line]]``s."""
        runners = [LineRunner(f"scale:{s.device}", s, [self._worker(s)]) for s in cfg.scale]
        runners += [self._line_runner(ln) for ln in cfg.line]
        return runners

    def _line_runner(self, line: LineConfig) -> LineRunner:
        profiles = {d.device: load_profile(d.profile) for d in line.device}
        built = build_line(line, profiles)
        workers = [self._worker(line.scale(j), source=built.sources[d.device], line=line.id)
                   for j, d in enumerate(line.device)]
        return LineRunner(f"line:{line.id}", line, workers, bus=built.bus)

    def _set_fatal(self, reason: str) -> None:
        if self.fatal is None:
            self.fatal = reason
        self.fatal_event.set()

    def start(self) -> None:
        for r in self.lines:
            r.start()
        for target, name in ((self._supervise, "agent-supervisor"),
                             (self._control_loop, "agent-control")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._control.put(None)
        for t in self._threads:
            t.join(5)
        with self._lock:
            for r in self.lines:
                r.stop()
        self.outbox.close()

    # -- supervision --------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                for r in self.lines:
                    r.check()
                for w in self.workers:
                    w.publisher.check()

    # -- commands -----------------------------------------------------------------------

    def _enqueue(self, worker: ScaleWorker, cmd: wire.Command) -> None:
        self._control.put((worker, cmd))

    def _control_loop(self) -> None:
        while True:
            item = self._control.get()
            if item is None or self._stop.is_set():
                return
            worker, cmd = item
            try:
                if cmd.name is wire.CommandName.TIME_SYNC:
                    self.time_sync(worker, cmd)
                elif cmd.name is wire.CommandName.CONFIG_RELOAD:
                    self.reload()
            except Exception:  # a failed command must not end command handling
                log.exception("command %s failed", cmd.name.value)

    def time_sync(self, worker: ScaleWorker, cmd: wire.Command) -> None:
        """Record the clock offset; device times stay the agent's clock (it is reported)."""
        if cmd.server_ms is None:
            log.warning("%s: time-sync without server_ms ignored", worker.cfg.device)
            return
        t = now_ms()
        offset = cmd.server_ms - t
        self.clock.offset_ms, self.clock.synced_at_ms = offset, t
        log.info("clock offset to the server: %+d ms", offset)
        if abs(offset) > self.cfg.agent.clock_skew_max_ms:
            worker._put(wire.FaultEvent(
                seq=0, ts_ms=t, code="clock-skew",
                detail=f"agent clock differs from the server's by {-offset:+d} ms "
                       f"(server − agent = {offset:+d} ms); event times are the agent's"))
        worker.heartbeat()

    def reload(self) -> dict[str, list[str]]:
        """Re-read the config file; restart the workers whose scale section changed.

        ``[mqtt]`` or ``[agent]`` changes (besides ``market`` and ``outbox``, which need a
        restart and are refused) restart every worker. Returns what was done.
        """
        if self.config_path is None:
            raise ConfigError("the agent was not started from a config file")
        try:
            new = load_config(self.config_path)
        except ConfigError as err:
            self.last_reload_error = str(err)
            log.error("config-reload refused: %s", err)
            raise
        old = self.cfg
        if (new.agent.market, new.agent.outbox) != (old.agent.market, old.agent.outbox):
            msg = "agent.market / agent.outbox changes need a restart; reload refused"
            self.last_reload_error = msg
            log.error("config-reload: %s", msg)
            raise ConfigError(msg)
        everything = new.mqtt != old.mqtt or new.agent != old.agent
        done: dict[str, list[str]] = {"added": [], "removed": [], "restarted": [], "kept": []}
        with self._lock:
            self.cfg = new
            before = {w.cfg.device for w in self.workers}
            wanted: dict[str, LineConfig | ScaleConfig] = {f"scale:{s.device}": s
                                                           for s in new.scale}
            wanted.update({f"line:{ln.id}": ln for ln in new.line})
            kept: dict[str, LineRunner] = {}
            for r in self.lines:  # stop first: a port moved to another line must be free
                if not everything and wanted.get(r.key) == r.cfg:
                    for w in r.workers:
                        w.agent_cfg = new
                    kept[r.key] = r
                    done["kept"] += [w.cfg.device for w in r.workers]
                else:
                    r.stop()
            runners = []
            for key, cfg in wanted.items():
                r2 = kept.get(key)
                if r2 is None:
                    r2 = (LineRunner(key, cfg, [self._worker(cfg)]) if isinstance(cfg, ScaleConfig)
                          else self._line_runner(cfg))
                    r2.start()
                    for w in r2.workers:
                        dev = w.cfg.device
                        done["restarted" if dev in before else "added"].append(dev)
                runners.append(r2)
            self.lines = runners
            self.workers = [w for r in runners for w in r.workers]
            now = {w.cfg.device for w in self.workers}
            done["removed"] = sorted(before - now)
        self.reloads += 1
        self.last_reload_error = ""
        log.info("config reloaded: %s", done)
        return done

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """Every task's state: workers, publishers (and pumps), outbox, commands, clock."""
        with self._lock:
            workers, lines = list(self.workers), list(self.lines)
        return {
            "version": __version__,
            "fatal": self.fatal,
            "outbox": {**self.outbox.counters(), "alarm": self.outbox.alarm,
                       "max_rows": self.outbox.max_rows},
            "supervisor": "running" if any(t.is_alive() for t in self._threads) else "stopped",
            "clock_offset_ms": self.clock.offset_ms,
            "reloads": self.reloads,
            "last_reload_error": self.last_reload_error,
            "scales": {w.cfg.device: w.status() for w in workers},
            "lines": {r.cfg.id: r.status() for r in lines if isinstance(r.cfg, LineConfig)},
        }
