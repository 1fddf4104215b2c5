"""One device's worker: its reader and listeners, its outbox writes, its publisher.

A :class:`ScaleWorker` puts together, for one device (``edge_agent.agent`` makes one per
device of every line):

* a :class:`~edge_agent.reader.FrameReader` over the device's frame source (its own
  serial port, or its queue on a Modbus line's bus) with the listeners of
  ``edge_agent.listeners`` in this order: counters, gaps, raw AD, weighing state
  machine, samples, and on a fair-scale station the station;
* an :class:`~edge_agent.eventsink.EventSink`: every event goes through it into the
  outbox, in order, held in memory while the outbox cannot write;
* a :class:`~edge_agent.publisher.Publisher`, woken by every write;
* heartbeats every ``heartbeat_s``, and the device's commands (``stored`` and ``resend``
  handled at once on paho's thread, the others handed to the agent).

The worker runs in its own thread under :func:`~edge_agent.supervision.supervise`
(isolated: one scale's driver failure never stops another): any exception is reported
(``transport-lost`` for a failing source, ``worker-restart`` for anything else; once per
outage, not per retry) and the worker restarts after a jittered exponential backoff. A
damaged outbox file (``OutboxCorruptError``) or more held events than the bound cannot be
gone on with: the worker calls ``on_fatal`` and the agent exits non-zero.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from device_profiles.schema import LinkKind, Profile, load_profile
from edge_agent import __version__
from edge_agent.commands import CommandGate
from edge_agent.config import AgentConfig, ScaleConfig
from edge_agent.eventsink import EventSink, State
from edge_agent.lines import make_source
from edge_agent.listeners import (
    CounterWatcher,
    GapWatcher,
    RawAdListener,
    SampleCollector,
    StateMachineListener,
    StationListener,
)
from edge_agent.modbus import ModbusFrameSource
from edge_agent.outbox import Outbox, OutboxCorruptError
from edge_agent.publisher import Publisher
from edge_agent.reader import FrameReader, Listener, WorkerStats, now_ms
from edge_agent.statemachine import Params, WeighingStateMachine
from edge_agent.supervision import Backoff, supervise
from edge_agent.transport import FrameSource, ScannerPort, SerialFrameSource, TransportError
from weighing import wire
from weighing.signing import sign_message

log = logging.getLogger(__name__)


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


class ScaleWorker:
    """Reads one scale and turns its frames into outbox rows, under supervision."""

    def __init__(
        self, cfg: ScaleConfig, *, market: str, outbox: Outbox, agent: AgentConfig,
        source: FrameSource | None = None, gate: CommandGate | None = None,
        on_command: Callable[[ScaleWorker, wire.Command], None] | None = None,
        clock: Any = None, on_fatal: Callable[[str], None] | None = None,
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
        self.boot_id = uuid.uuid4().hex[:16]
        self.gate = gate or CommandGate()
        self._on_command = on_command  # (worker, command) -> None, from the agent
        self._clock = clock  # the agent's ClockSync (offset reporting)
        self._on_fatal = on_fatal  # (reason) -> None: the agent cannot go on
        self.publisher = Publisher(
            agent.mqtt, market=market, device=cfg.device, outbox=outbox, birth=self.birth(),
            on_command=self._command,
            e2e=cfg.key is not None and agent.agent.confirm == "gateway",
            ack_timeout_s=agent.agent.ack_timeout_s, key=cfg.key_bytes,
        )
        self.sink = EventSink(outbox, device=cfg.device, key=cfg.key_bytes, stats=self.stats,
                              notify=self.publisher.notify, on_fatal=self._fatal)
        self.rawad = RawAdListener()
        # fair-scale station: scans pair with the weighings that follow them
        self.station = (StationListener(ScannerPort(cfg.scanner), self.sink,
                                        pair_window_ms=int(cfg.pair_window_s * 1000),
                                        stats=self.stats)
                        if cfg.scanner else None)
        annotators = [self.rawad.annotate] + ([self.station.commit] if self.station else [])
        self.machine = StateMachineListener(self.sm, self.sink, annotators=annotators)
        self.samples = SampleCollector(self.sink, enabled=cfg.samples,
                                       interval_ms=agent.agent.samples_interval_s * 1000)
        self.gaps = GapWatcher(self.sink, no_data_s=cfg.no_data_s, stats=self.stats)
        # in this order: a no-data fault precedes the frames' events and may raise the
        # outbox alarm before samples are taken; counter changes are stored, and the
        # last frame's time saved, before the poll's samples are flushed
        listeners: list[Listener] = [CounterWatcher(self.sink), self.gaps, self.rawad,
                                     self.machine, self.samples]
        if self.station is not None:
            listeners.append(self.station)
        self.reader = FrameReader(
            self.source, listeners, device=cfg.device, params=self.sm.params,
            stats=self.stats, output_rate_hz=self.profile.link.output_rate_hz,
            error_hint=self._error_hint())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_heartbeat_ms = now_ms()
        self._outage_reported = False
        self.machine.restore()
        self.gaps.restore()

    def birth(self) -> wire.Birth:
        m = self.profile.metrology
        return sign_message(self.cfg.key_bytes, self.cfg.device, wire.Birth(
            device=self.cfg.device, market=self.market, role=self.cfg.role,
            profile=self.profile.id, protocol=self.profile.protocol, max_mg=m.max_mg,
            e_mg=m.e_mg, accuracy_class=wire.AccuracyClass(m.accuracy_class),
            serial=self.cfg.serial, capabilities=list(self.profile.capabilities),
            agent_version=__version__, boot_id=self.boot_id, ts_ms=now_ms(),
        ))

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

    def _error_hint(self) -> str:
        if self.profile.link.kind is LinkKind.SERIAL:
            return (f"if this goes on, check the profile and serial settings: stop the agent "
                    f"and run `edge-agent probe {self.cfg.port}`")
        return "if this goes on, check the profile's register map and the unit id"

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
            self.samples.flush(force=True)
            self.machine.save_checkpoint(force=True)
        except Exception as err:  # a damaged or full outbox must not stop the shutdown
            log.error("%s: cannot save state at stop: %s", self.cfg.device, err)
        if self.station is not None:
            self.station.scanner.close()
        self.publisher.stop()
        self.stats.state = "stopped"

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- supervision ------------------------------------------------------------------

    def _supervise(self) -> None:
        # a device on a shared line is polled by its bus, which backs off a silent slave
        # by itself: restarting the worker costs the line nothing, so it retries soon and
        # takes the frames up as they come (a long worker backoff would leave them queued
        # and then feed them late, in a burst)
        bus_fed = isinstance(self.source, ModbusFrameSource) and self.source.bus is not None
        supervise(self._open_and_run, stop=self._stop,
                  backoff=Backoff(0.5, 1.0 if bus_fed else 30.0),
                  on_failure=self._failed, fatal=(OutboxCorruptError,),
                  on_fatal=lambda err: self._fatal(f"{type(err).__name__}: {err}"))
        self.stats.state = "stopped"

    def _open_and_run(self, backoff: Backoff) -> None:
        try:
            self.stats.state = "opening"
            self.source.open()
            self.stats.state = "running"
            backoff.reset()
            self.reader.restart(self.source, pace_s=self._pace_s())
            self._run()
        finally:
            self.source.close()

    def _failed(self, err: Exception, delay_s: float) -> None:
        self.stats.restarts += 1
        self.stats.last_error = f"{type(err).__name__}: {err}"
        self.stats.state = "backoff"
        transport = isinstance(err, TransportError)
        log.log(logging.WARNING if transport else logging.ERROR,
                "%s: worker failed (%s); restart in %.1f s",
                self.cfg.device, self.stats.last_error, delay_s, exc_info=not transport)
        if not self._outage_reported:  # once per outage, not once per retry
            self._outage_reported = True
            self.put(wire.FaultEvent(
                seq=0, ts_ms=now_ms(),
                code="transport-lost" if transport else "worker-restart",
                detail=self.stats.last_error[:1000]))

    def _fatal(self, reason: str) -> None:
        self.stats.state = "fatal"
        self.stats.last_error = reason
        log.critical("%s: cannot go on: %s", self.cfg.device, reason)
        if self._on_fatal is not None:
            self._on_fatal(f"{self.cfg.device}: {reason}")

    def _run(self) -> None:
        while not self._stop.is_set():
            poll = self.reader.turn(self._stop)
            if poll is None:
                break
            if poll.frames:
                self._outage_reported = False
            self._heartbeat(poll.t_read_ms)
            self.sink.retry(poll.t_read_ms)

    # -- events -----------------------------------------------------------------------

    def put(self, event: wire.Event, *, state: State | None = None) -> None:
        """Store an event (in order; held in memory while the outbox cannot write)."""
        self.sink.put(event, state=state)

    def _heartbeat(self, t: int) -> None:
        if t - self._last_heartbeat_ms < self.agent_cfg.agent.heartbeat_s * 1000:
            return
        self._last_heartbeat_ms = t
        self.heartbeat()

    def heartbeat(self) -> None:
        """Queue a heartbeat now (health counters, clock offset)."""
        c = self.outbox.counters()
        offset = self._clock.offset_ms if self._clock is not None else None
        self.put(wire.HeartbeatEvent(
            seq=0, ts_ms=now_ms(), queued=c.get("queued", 0), sent=c.get("sent", 0),
            dropped=c.get("dropped", 0), reconnects=self.publisher.stats.reconnects,
            frame_errors=self.stats.frame_errors, uptime_s=self.publisher.stats.uptime_s,
            clock_offset_ms=offset, commands_rejected=self.gate.rejected(self.cfg.device),
        ))

    # what tests that drive a worker by hand (without its thread) reach for
    @property
    def _samples(self) -> tuple[list[int], list[int], list[int]]:
        return self.samples.samples

    @_samples.setter
    def _samples(self, value: tuple[list[int], list[int], list[int]]) -> None:
        self.samples.samples = value

    def _flush_samples(self, *, force: bool = False) -> None:
        self.samples.flush(force=force)

    @property
    def _held(self) -> list[tuple[wire.Event, State | None]]:
        return self.sink.held

    @property
    def write_faults(self) -> int:
        return self.sink.faults

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

    # -- status -----------------------------------------------------------------------

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
            "station": self.station.status() if self.station is not None else None,
            "line": self._line_status(),
            "outbox_write": self.sink.status(),
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
