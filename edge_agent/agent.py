"""The agent: one runner per line, one supervised worker per device, one outbox.

A line (``edge_agent.lines``) is a port and every device on it: on a Modbus ``[[line]]``
one ``ModbusBus`` polls every slave in turn and queues each slave's frames for its
device's worker; an old ``[[scale]]`` is a line of one device whose worker reads its own
source. Each device has a :class:`~edge_agent.worker.ScaleWorker` in its own thread: a
frame reader and its listeners (``edge_agent.reader``, ``edge_agent.listeners``), an
event sink into the outbox (``edge_agent.eventsink``) and a publisher, restarted after a
jittered backoff when it fails (``edge_agent.supervision``). An agent-level supervisor
thread restarts a dead line poll thread or publisher pump; :meth:`Agent.status` reports
every task's state.

What a worker emits besides the state machine's sales, re-weighs, zero checks and
faults: ``no-data`` faults, counter changes (``CounterChangeEvent``) and ``raw_ad``
filled into sale and zero events (``edge_agent.listeners``); ``outbox-full``,
``outbox-dropped`` and ``outbox-write`` (``edge_agent.eventsink``); ``transport-lost`` /
``worker-restart`` (``edge_agent.worker``); ``scanner-lost`` and re-weighs
(``ReweighEvent``) on a fair-scale station (``edge_agent.listeners``). The agent itself
adds ``clock-skew`` when an authentic ``time-sync`` shows the clock off by more than
``clock_skew_max_ms``, and handles ``config-reload``. A worker that cannot go on (a
damaged outbox file, more held events than the bound) marks the agent fatal
(``Agent.fatal``) and ``edge-agent run`` exits non-zero, so systemd restarts it.

``ScaleWorker``, ``WorkerStats``, ``make_params``, ``flatten_extras`` and ``now_ms`` are
re-exported here, where they were before the worker was split out.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from device_profiles.schema import load_profile
from edge_agent import __version__
from edge_agent.commands import CommandGate
from edge_agent.config import AgentConfig, ConfigError, LineConfig, ScaleConfig, load_config
from edge_agent.lines import build_line
from edge_agent.listeners import flatten_extras
from edge_agent.modbus import ModbusBus
from edge_agent.outbox import Outbox
from edge_agent.reader import WorkerStats, now_ms
from edge_agent.transport import FrameSource
from edge_agent.worker import ScaleWorker, make_params
from weighing import wire

__all__ = [
    "Agent", "ClockSync", "LineRunner", "ScaleWorker", "WorkerStats", "flatten_extras",
    "make_params", "now_ms",
]

log = logging.getLogger(__name__)


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

    def _worker(self, s: ScaleConfig, *, source: FrameSource | None = None,
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
            worker.put(wire.FaultEvent(
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
