"""Fleet I/O: publish the fleet over MQTT and write the truth.

* :func:`run_direct` — direct mode: the emulated agents of :mod:`simulators.fleet`
  multiplexed on a few paho connections (topics carry the device id, so one connection
  can publish for many devices; the price is that a connection has one last will, so no
  per-device ``offline`` will: the fleet publishes ``state`` itself). Births and states
  retained; events signed per device, batched ≤ ``batch_max`` per message, buffered at
  most ``flush_s`` simulated seconds. An accelerated clock maps simulated to wall time
  (``speed``); when the gateway falls behind by more than ``max_lag_messages`` (from
  ``/healthz``) the clock waits, so the broker's queue stays bounded.
* :func:`run_full_path` (``fleet_fullpath``) — real edge agents reading emulated scales.
* The gateway side (its environment, registering the fleet, :class:`LocalStack`) is
  :mod:`simulators.fleet_gateway`, re-exported here.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.fleet import Simulation
from simulators.fleet_config import World
from simulators.fleet_gateway import (
    FLEET_GATEWAY_ENV as FLEET_GATEWAY_ENV,
    HEADERS as HEADERS,
    GatewayClient as GatewayClient,
    LocalStack as LocalStack,
    price_versions as price_versions,
    register_csv as register_csv,
    scaleless_merchants as scaleless_merchants,
    trading_hours as trading_hours,
)
from weighing import wire


class DirectPublisher:
    """Several paho connections publishing for many devices (QoS 1, bounded in flight)."""

    def __init__(self, url: str, *, connections: int, client_prefix: str,
                 max_inflight: int, qos: int = 1) -> None:
        u = urlsplit(url)
        self.qos = qos
        self.published = 0
        self.acked = 0
        self.max_outstanding = max_inflight * connections * 2
        self._lock = threading.Lock()
        self.clients: list[mqtt.Client] = []
        for i in range(connections):
            c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                            client_id=f"{client_prefix}-{i}", clean_session=True,
                            protocol=mqtt.MQTTv311)
            c.max_inflight_messages_set(max_inflight)
            c.max_queued_messages_set(0)
            c.on_publish = self._on_publish
            c.connect(u.hostname or "127.0.0.1", u.port or 1883, keepalive=60)
            c.loop_start()
            self.clients.append(c)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode | None = None,
                    properties: Properties | None = None) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, conn: int, topic: str, payload: bytes, *, retain: bool = False) -> None:
        while self.published - self.acked > self.max_outstanding:
            time.sleep(0.001)
        self.clients[conn % len(self.clients)].publish(topic, payload, qos=self.qos,
                                                       retain=retain)
        self.published += 1

    def wait_acked(self, timeout_s: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.acked < self.published and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.acked >= self.published

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


@dataclass
class RunStats:
    events: int = 0
    messages: int = 0
    wall_s: float = 0.0
    generate_s: float = 0.0
    waited_for_gateway_s: float = 0.0
    drained_s: float = 0.0
    sim_hours: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["events_per_s"] = round(self.events / self.wall_s) if self.wall_s else 0
        d["messages_per_s"] = round(self.messages / self.wall_s) if self.wall_s else 0
        return d


class _Progress:
    """rich progress over simulated time (a no-op when disabled)."""

    def __init__(self, enabled: bool, start_ms: int, end_ms: int) -> None:
        self.bar: Any = None
        self.start_ms = start_ms
        if enabled:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            self.task = self.bar.add_task("simulated day", total=max(1, end_ms - start_ms),
                                          info="")
            self.bar.start()

    def update(self, t_ms: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=max(0, t_ms - self.start_ms), info=info)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _fmt_sim(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, tz=UTC).astimezone().strftime("%H:%M")


def run_direct(world: World, mqtt_url: str, *, gateway: GatewayClient | None = None,
               progress: bool = False, drain_timeout_s: float = 900.0,
               client_prefix: str | None = None) -> tuple[Simulation, RunStats]:
    """Publish the whole simulated period of ``world``; returns the finished simulation."""
    cfg = world.cfg
    pc = cfg.publish
    sim = Simulation(world)
    pub = DirectPublisher(mqtt_url, connections=pc.connections,
                          client_prefix=client_prefix or f"fleet-{cfg.fleet.name}",
                          max_inflight=pc.max_inflight, qos=pc.qos)
    stats = RunStats()
    baseline = gateway.received() if gateway else 0
    wall0 = time.monotonic()
    conn = {dev: s.index for dev, s in world.scales.items()}
    for spec, payload in sim.births():
        pub.publish(conn[spec.device], wire.topic(spec.market, spec.device, wire.Channel.BIRTH),
                    payload, retain=True)
        pub.publish(conn[spec.device], wire.topic(spec.market, spec.device, wire.Channel.STATE),
                    wire.encode(wire.State(state=wire.DeviceState.ONLINE,
                                           ts_ms=cfg.start_ms - 1_800_000)), retain=True)
    buffers: dict[str, list[bytes]] = {}
    markets = {dev: s.market for dev, s in world.scales.items()}
    end_ms = cfg.start_ms + (cfg.fleet.days - 1) * 86_400_000 + int(cfg.trading.hours * 3_600_000)
    bar = _Progress(progress, cfg.start_ms, end_ms)
    flush_ms = int(pc.flush_s * 1000)
    speed = cfg.clock.speed
    sim_origin, wall_origin = cfg.start_ms, time.monotonic()
    next_flush = cfg.start_ms + flush_ms
    last_t = cfg.start_ms
    last_check = 0.0
    n = 0

    def send(dev: str) -> None:
        evs = buffers.pop(dev, None)
        if evs:
            pub.publish(conn[dev], wire.topic(markets[dev], dev, wire.Channel.EVENTS),
                        wire.event_batch_payload(dev, evs))

    def flush_all() -> None:
        for dev in list(buffers):
            send(dev)

    def backpressure() -> None:
        if gateway is None:
            return
        t0 = time.monotonic()
        while pub.published - (gateway.received() - baseline) > pc.max_lag_messages:
            time.sleep(0.25)
        stats.waited_for_gateway_s += time.monotonic() - t0

    try:
        for out in sim.run():
            t = out.t_ms
            if t - last_t > 1_800_000:  # the night between two days: skip it on the wall clock
                sim_origin += t - last_t
            last_t = t
            while t >= next_flush:
                flush_all()
                next_flush += flush_ms
            if speed > 0:
                delay = wall_origin + (t - sim_origin) / 1000 / speed - time.monotonic()
                if delay > 0.002:
                    time.sleep(delay)
            dev = out.device
            if out.kind == "state":
                send(dev)
                pub.publish(conn[dev], wire.topic(out.market, dev, wire.Channel.STATE),
                            wire.encode(wire.State(state=wire.DeviceState(out.data[0].decode()),
                                                   ts_ms=t)), retain=True)
            else:
                buf = buffers.setdefault(dev, [])
                for body in out.data:
                    buf.append(body)
                    if len(buf) >= pc.batch_max:
                        send(dev)
                        buf = buffers.setdefault(dev, [])
            n += 1
            if n % 2048 == 0:
                now = time.monotonic()
                if now - last_check > 0.5:
                    last_check = now
                    before = stats.waited_for_gateway_s
                    backpressure()
                    wall_origin += stats.waited_for_gateway_s - before
                    bar.update(t, f"{_fmt_sim(t)}  {sim.events:,} events  "
                                  f"{pub.published:,} msgs")
        flush_all()
        stats.generate_s = time.monotonic() - wall0
        pub.wait_acked()
        if gateway is not None:
            t0 = time.monotonic()
            deadline = t0 + drain_timeout_s
            while gateway.received() - baseline < pub.published and time.monotonic() < deadline:
                bar.update(end_ms, f"draining: gateway "
                                   f"{gateway.received() - baseline:,}/{pub.published:,} msgs")
                time.sleep(0.5)
            stats.drained_s = time.monotonic() - t0
    finally:
        bar.stop()
        pub.close()
    stats.wall_s = time.monotonic() - wall0
    stats.events = sim.events
    stats.messages = pub.published
    stats.sim_hours = cfg.fleet.days * cfg.trading.hours
    return sim, stats


def write_truth(sim: Simulation, path: Path) -> dict[str, Any]:
    truth = sim.truth()
    path.write_text(json.dumps(truth, ensure_ascii=False, sort_keys=True, indent=1) + "\n",
                    encoding="utf-8")
    return truth
