"""The agent: one supervised worker per scale, one outbox, one publisher per device.

Each scale runs in its own thread (isolated: one scale's driver failure never stops
another). A worker reads its frame source, feeds the weighing state machine, writes
events and sample batches to the outbox and wakes its publisher. Any exception in a
worker is caught by its supervisor loop, reported, and the worker restarts after a
jittered exponential backoff (domain.md §5: an uncaught driver exception must never
silently kill polling).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from device_profiles.codecs import FrameError, make_codec
from device_profiles.codecs.base import REQUEST_WEIGHT
from device_profiles.schema import LinkKind, Profile, load_profile
from edge_agent import __version__
from edge_agent.config import AgentConfig, ScaleConfig
from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher
from edge_agent.statemachine import Params, WeighingStateMachine
from edge_agent.transport import FrameSource, SerialFrameSource, TransportError
from weighing import wire

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_source(scale: ScaleConfig, profile: Profile) -> FrameSource:
    """The frame source for a scale's link kind."""
    link = profile.link
    if link.kind in (LinkKind.MODBUS_RTU, LinkKind.MODBUS_TCP):
        from edge_agent.modbus import ModbusFrameSource

        if link.kind is LinkKind.MODBUS_TCP:
            host, _, port = scale.port.rpartition(":")
            return ModbusFrameSource.from_profile(
                profile, tcp=(host or "127.0.0.1", int(port)), slave=scale.slave
            )
        return ModbusFrameSource.from_profile(profile, rtu=scale.port, slave=scale.slave)
    codec = make_codec(profile.protocol, profile.codec)
    return SerialFrameSource(
        scale.port,
        codec,
        baudrate=link.baudrate,
        bytesize=link.bytesize,
        parity=link.parity,
        stopbits=link.stopbits,
        request=REQUEST_WEIGHT if link.mode == "request" else None,
    )


@dataclass
class WorkerStats:
    state: str = "starting"
    frames: int = 0
    frame_errors: int = 0
    events: int = 0
    restarts: int = 0
    last_error: str = ""
    last_frame_ms: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)


class ScaleWorker:
    """Reads one scale and turns its frames into outbox rows, under supervision."""

    def __init__(
        self, cfg: ScaleConfig, *, market: str, outbox: Outbox, agent: AgentConfig,
        source: FrameSource | None = None,
    ) -> None:
        self.cfg = cfg
        self.market = market
        self.outbox = outbox
        self.agent_cfg = agent
        self.profile = load_profile(cfg.profile)
        self.source = source or make_source(cfg, self.profile)
        st = self.profile.stability
        self.sm = WeighingStateMachine(
            Params(
                e_mg=self.profile.metrology.e_mg,
                window_ms=st.window_ms,
                band_e=st.band_e,
                load_threshold_e=st.load_threshold_e,
            )
        )
        self.stats = WorkerStats()
        self.boot_id = uuid.uuid4().hex[:16]
        self.publisher = Publisher(
            agent.mqtt, market=market, device=cfg.device, outbox=outbox, birth=self.birth()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: tuple[list[int], list[int], list[int]] = ([], [], [])
        self._last_samples_ms = 0
        self._last_heartbeat_ms = now_ms()

    def birth(self) -> wire.Birth:
        m = self.profile.metrology
        return wire.Birth(
            device=self.cfg.device, market=self.market, role=self.cfg.role,
            profile=self.profile.id, protocol=self.profile.protocol, max_mg=m.max_mg,
            e_mg=m.e_mg, accuracy_class=wire.AccuracyClass(m.accuracy_class),
            serial=self.cfg.serial, capabilities=list(self.profile.capabilities),
            agent_version=__version__, boot_id=self.boot_id, ts_ms=now_ms(),
        )

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
        self._flush_samples(force=True)
        self.publisher.stop()

    # -- supervision ------------------------------------------------------------------

    def _supervise(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self.stats.state = "opening"
                self.source.open()
                self.stats.state = "running"
                backoff = 0.5
                self._run()
            except Exception as err:  # supervised: report, back off, restart
                self.stats.restarts += 1
                self.stats.last_error = f"{type(err).__name__}: {err}"
                self.stats.state = "backoff"
                level = logging.WARNING if isinstance(err, TransportError) else logging.ERROR
                log.log(level, "%s: worker failed (%s); restart in %.1f s",
                        self.cfg.device, self.stats.last_error, backoff,
                        exc_info=not isinstance(err, TransportError))
                self._put(wire.FaultEvent(seq=0, ts_ms=now_ms(), code="worker-restart",
                                          detail=self.stats.last_error[:1000]))
            finally:
                self.source.close()
            # jittered exponential backoff: avoid every worker retrying in lockstep
            self._stop.wait(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 30.0)
        self.stats.state = "stopped"

    def _run(self) -> None:
        while not self._stop.is_set():
            polled = self.source.poll(0.05)
            t_read = now_ms()
            for err in polled.errors:
                self._frame_error(err)
            n = len(polled.frames)
            # frames that arrived in one burst (the reader was late) are back-dated at the
            # line's nominal rate, never earlier than the previous frame
            period_ms = 1000.0 / self.profile.link.output_rate_hz
            t = t_read
            for i, frame in enumerate(polled.frames):
                t = max(t_read - int((n - 1 - i) * period_ms), self.stats.last_frame_ms)
                self.stats.frames += 1
                self.stats.last_frame_ms = t
                for event in self.sm.feed(t, frame):
                    self._put(event)
                if self.cfg.samples:
                    flags = (wire.SampleFlag.STABLE if frame.stable else 0) | (
                        wire.SampleFlag.NET if frame.net else 0) | (
                        wire.SampleFlag.OVERLOAD if frame.overload else 0) | (
                        wire.SampleFlag.ZERO if frame.zero else 0)
                    ts, ws, fs = self._samples
                    ts.append(t)
                    ws.append(frame.weight_mg)
                    fs.append(flags)
            self._flush_samples()
            self._heartbeat(t_read)

    def _frame_error(self, err: FrameError) -> None:
        self.stats.frame_errors += 1
        reason = err.reason.split(" (")[0]
        self.stats.errors_by_reason[reason] = self.stats.errors_by_reason.get(reason, 0) + 1
        log.warning("%s: rejected %d bytes at offset %d: %s",
                    self.cfg.device, err.length, err.offset, err.reason)

    def _put(self, event: wire.Event) -> None:
        seq = self.outbox.put_event(self.cfg.device, event, key=self.cfg.key_bytes)
        if seq > 0:
            self.stats.events += 1
        self.publisher.notify()

    def _flush_samples(self, *, force: bool = False) -> None:
        ts, ws, fs = self._samples
        if not ts:
            return
        interval_ms = self.agent_cfg.agent.samples_interval_s * 1000
        if not force and ts[-1] - ts[0] < interval_ms:
            return
        self.outbox.put_samples(
            self.cfg.device, wire.SampleBatch(device=self.cfg.device, t_ms=ts, net_mg=ws, flags=fs)
        )
        self._samples = ([], [], [])
        self.publisher.notify()

    def _heartbeat(self, t: int) -> None:
        if t - self._last_heartbeat_ms < self.agent_cfg.agent.heartbeat_s * 1000:
            return
        self._last_heartbeat_ms = t
        c = self.outbox.counters()
        self._put(wire.HeartbeatEvent(
            seq=0, ts_ms=t, queued=c.get("queued", 0), sent=c.get("sent", 0),
            dropped=c.get("dropped", 0), reconnects=self.publisher.stats.reconnects,
            frame_errors=self.stats.frame_errors, uptime_s=self.publisher.stats.uptime_s,
        ))


class Agent:
    """All scales of one configuration file."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.outbox = Outbox(cfg.agent.outbox, max_rows=cfg.agent.outbox_max_rows)
        self.workers = [
            ScaleWorker(s, market=cfg.agent.market, outbox=self.outbox, agent=cfg)
            for s in cfg.scale
        ]

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.outbox.close()

    def status(self) -> dict[str, object]:
        return {
            "outbox": self.outbox.counters(),
            "scales": {
                w.cfg.device: {
                    "state": w.stats.state, "frames": w.stats.frames,
                    "frame_errors": w.stats.frame_errors, "events": w.stats.events,
                    "restarts": w.stats.restarts, "connected": w.publisher.stats.connected,
                    "last_error": w.stats.last_error,
                }
                for w in self.workers
            },
        }
