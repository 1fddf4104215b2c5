"""Fleet I/O: register the fleet at the gateway, publish it over MQTT, write the truth.

* :func:`register_csv` / :class:`GatewayClient.register` — one register CSV (登记造册)
  per market, imported with ``POST /api/v1/markets/{id}/register.csv`` (markets,
  merchants with 统一社会信用代码, scales with keys), then the PLU price list with
  ``POST /api/v1/merchants/{id}/prices`` (the CSV import has no price columns). Honest
  behaviours add: the afternoon merchants of shared scales (``POST /api/v1/merchants``:
  they own no scale, so the register has no row for them), the price changes as price
  versions valid from their simulated time, and the registered shifts as bindings
  (``POST /api/v1/registry/scales/{device}/bindings``).
* :func:`run_direct` — direct mode: the emulated agents of :mod:`simulators.fleet`
  multiplexed on a few paho connections (topics carry the device id, so one connection
  can publish for many devices; the price is that a connection has one last will, so no
  per-device ``offline`` will: the fleet publishes ``state`` itself). Births and states
  retained; events signed per device, batched ≤ ``batch_max`` per message, buffered at
  most ``flush_s`` simulated seconds. An accelerated clock maps simulated to wall time
  (``speed``); when the gateway falls behind by more than ``max_lag_messages`` (from
  ``/healthz``) the clock waits, so the broker's queue stays bounded.
* :func:`run_full_path` (``fleet_fullpath``) — real edge agents reading emulated scales.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway_server.ingest.broker import free_port, wait_port
from simulators import fleet_honest_world as honest_world, goods as gd
from simulators.fleet import Simulation
from simulators.fleet_config import World
from weighing import wire

#: What a gateway needs to ingest a fleet: the simulated days lie in the future (2031), so
#: its "device clock too far ahead" check is off (give this to any gateway a fleet feeds).
FLEET_GATEWAY_ENV = {"GATEWAY_EVENT_MAX_AHEAD_S": "0"}
HEADERS = ("market", "merchant_name", "credit_code", "stall_no", "categories", "device",
           "model", "serial", "max", "e", "accuracy_class", "role", "profile", "cert_no",
           "verified_on", "due_on", "key")


def _mass(mg: int) -> str:
    return f"{mg // 1_000_000} kg" if mg % 1_000_000 == 0 else f"{mg // 1000} g"


def register_csv(world: World, market: str) -> str:
    """The register of one market as CSV text (English headers, UTF-8)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADERS)
    start = datetime.fromtimestamp(world.cfg.start_ms / 1000, tz=UTC)
    verified = (start - timedelta(days=120)).date().isoformat()
    due = (start + timedelta(days=240)).date().isoformat()
    for dev, s in world.scales.items():
        if s.market != market:
            continue
        m = world.merchants[s.merchant] if s.merchant else None
        cats = _categories(m.prices) if m else ""
        model = s.m
        w.writerow([market, m.name if m else "", m.code if m else "", m.stall_no if m else "",
                    cats, dev, model.profile, s.serial, _mass(model.max_mg), _mass(model.e_mg),
                    model.accuracy_class, s.role, model.profile, f"JD{s.serial}", verified, due,
                    s.key_hex])
    return buf.getvalue()


def _categories(prices: dict[str, int]) -> str:
    return "、".join(sorted({gd.BY_PLU[p].category.value for p in prices}))


def scaleless_merchants(world: World) -> list[str]:
    """Merchants the register CSV cannot carry (no scale of their own: the afternoon
    merchant of a shared scale), in a stable order."""
    owned = {s.merchant for s in world.scales.values()}
    return sorted(c for c in world.merchants if c not in owned)


def price_versions(world: World) -> list[tuple[str, str, int, int | None]]:
    """(credit code, PLU, fen/kg, valid from ms or None: from the registration) of every
    registered price: the day's first price, then each honest price change."""
    out: list[tuple[str, str, int, int | None]] = [
        (code, plu, price, None) for code, m in world.merchants.items()
        for plu, price in m.prices.items()]
    for code in sorted(world.honest.merchants):
        for c in world.honest.merchants[code].get("price-change", ()):
            out.append((code, c["plu"], c["new"], c["registered_ms"]))
    return out


def trading_hours(world: World) -> str:
    """The simulated trading day as the market's hours (``HH:MM-HH:MM``, China Standard
    Time), so the gateway's offline rule knows when the fleet trades."""
    cst = timezone(timedelta(hours=8))
    start = datetime.fromtimestamp(world.cfg.start_ms / 1000, tz=UTC).astimezone(cst)
    open_min = start.hour * 60 + start.minute
    close_min = min(24 * 60, open_min + round(world.cfg.trading.hours * 60))
    return f"{open_min // 60:02d}:{open_min % 60:02d}-{close_min // 60:02d}:{close_min % 60:02d}"


class GatewayClient:
    """The few gateway API calls the fleet and the evaluation need."""

    def __init__(self, url: str, *, token: str | None = None, username: str | None = None,
                 password: str | None = None, timeout_s: float = 60.0) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)
        if token is None and username is not None:
            r = self.http.post("/api/v1/auth/token",
                               json={"username": username, "password": password or ""})
            r.raise_for_status()
            token = r.json()["access_token"]
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.http.close()

    def received(self) -> int:
        """Messages the gateway's ingest has processed (stored or not)."""
        r = self.http.get("/healthz")
        return int(r.json().get("ingest", {}).get("received", 0))

    def pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            r = self.http.get(path, params={**params, "limit": 1000, "offset": offset})
            r.raise_for_status()
            body = r.json()
            items = body["items"] if isinstance(body, dict) else body
            out += items
            if len(items) < 1000:
                return out
            offset += 1000

    def register(self, world: World, out_dir: Path | None = None,
                 log: Callable[[str], None] = print) -> dict[str, int]:
        """Markets, the register CSV of each, then the PLU prices; returns merchant ids."""
        ids: dict[str, int] = {}
        now = int(time.time() * 1000)
        hours = trading_hours(world)
        for market in world.markets:
            r = self.http.post("/api/v1/markets", json={"id": market, "trading_hours": hours,
                                                         "name": f"模拟市场 {market}"})
            if r.status_code not in (201, 409):
                r.raise_for_status()
            text = register_csv(world, market)
            if out_dir is not None:
                (out_dir / f"register-{market}.csv").write_text(text, encoding="utf-8")
            r = self.http.post(f"/api/v1/markets/{market}/register.csv",
                               content=text.encode(), headers={"Content-Type": "text/csv"})
            r.raise_for_status()
            rep = r.json()
            if rep["errors"]:
                raise RuntimeError(f"register import of {market}: {rep['errors'][:5]}")
            for m in self.pages("/api/v1/merchants", market=market):
                if m.get("credit_code"):
                    ids[m["credit_code"]] = int(m["id"])
        for code in scaleless_merchants(world):
            who = world.merchants[code]
            r = self.http.post("/api/v1/merchants", json={
                "market_id": who.market, "name": who.name, "credit_code": code,
                "stall_no": who.stall_no, "categories": _categories(who.prices).split("、")})
            r.raise_for_status()
            ids[code] = int(r.json()["id"])
        versions = price_versions(world)
        jobs = [(ids[code], plu, price, now if at is None else at)
                for code, plu, price, at in versions]

        def post(job: tuple[int, str, int, int]) -> None:
            mid, plu, price, valid_from = job
            g = gd.BY_PLU[plu]
            r = self.http.post(f"/api/v1/merchants/{mid}/prices", json={
                "plu": plu, "name": g.name, "category": g.category.value,
                "unit_price_fen_per_kg": price, "valid_from_ms": valid_from})
            r.raise_for_status()

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, jobs))
        for dev, code, at in honest_world.bindings(world, world.honest):  # registered shifts
            r = self.http.post(f"/api/v1/registry/scales/{dev}/bindings",
                               json={"merchant_id": ids[code], "at_ms": at})
            r.raise_for_status()
        if out_dir is not None:
            with (out_dir / "prices.csv").open("w", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(["credit_code", "plu", "name", "category", "unit_price_fen_per_kg",
                            "valid_from_ms"])
                for code, plu, price, since in versions:
                    g = gd.BY_PLU[plu]
                    w.writerow([code, plu, g.name, g.category.value, price,
                                "" if since is None else since])
        log(f"registered {len(world.markets)} markets, {len(world.scales)} scales, "
            f"{len(ids)} merchants, {len(jobs)} PLU prices")
        return ids


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


# -- a private stack: Mosquitto + gateway-server on free loopback ports ------------------


@dataclass
class LocalStack:
    """A private Mosquitto and a ``gateway-server serve`` subprocess (SQLite by default)."""

    work: Path
    mqtt_url: str = ""
    gateway_url: str = ""
    admin: tuple[str, str] = ("fleet-admin", "")
    inspector: tuple[str, str] = ("fleet-eval", "")
    procs: list[Any] = field(default_factory=list)

    def start(self, *, database_url: str | None = None, mosquitto: str = "mosquitto",
              env_extra: dict[str, str] | None = None, ingest_batch: int = 300) -> LocalStack:
        import os
        import secrets
        import shutil
        import subprocess
        import sys

        self.work.mkdir(parents=True, exist_ok=True)
        binary = shutil.which(mosquitto) or "/usr/sbin/mosquitto"
        mport = free_port()
        conf = self.work / "mosquitto.conf"
        # bounded queues (stack-notes.md): the fleet's backpressure keeps them short
        conf.write_text(f"listener {mport} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\nmax_queued_messages 1000000\n"
                        "max_queued_bytes 1073741824\nmax_inflight_messages 1000\n")
        self.procs.append(subprocess.Popen([binary, "-c", str(conf)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(mport)
        self.mqtt_url = f"mqtt://127.0.0.1:{mport}"
        hport = free_port()
        env = dict(os.environ)
        env.update({"DATABASE_URL": database_url or f"sqlite:///{self.work}/gateway.db",
                    "MQTT_URL": self.mqtt_url, "GATEWAY_HTTP_PORT": str(hport),
                    "GATEWAY_MQTT_CLIENT_ID": "fleet-gateway",
                    # ≤ 300 messages per store transaction: detection._prices ORs every
                    # (merchant, PLU) pair of a batch into one query, and SQLite refuses more
                    # than ~1,000 terms ("Expression tree is too large"), after which the
                    # ingest retries the same batch for ever (a gateway gap, reported)
                    "GATEWAY_INGEST_BATCH": str(ingest_batch),
                    **FLEET_GATEWAY_ENV, **(env_extra or {})})
        bindir = Path(sys.executable).parent
        self.admin = ("fleet-admin", secrets.token_urlsafe(16))
        self.inspector = ("fleet-eval", secrets.token_urlsafe(16))
        for (user, pw), role in ((self.admin, "admin"), (self.inspector, "inspector")):
            subprocess.run([str(bindir / "gateway-server"), "create-user", "--username", user,
                            "--role", role, "--if-exists", "update"], env=env, check=True,
                           input=pw + "\n", text=True, capture_output=True, timeout=120)
        log = (self.work / "gateway.log").open("ab")
        self.procs.append(subprocess.Popen([str(bindir / "gateway-server"), "serve"], env=env,
                                           stdout=log, stderr=subprocess.STDOUT))
        wait_port(hport, 60)
        self.gateway_url = f"http://127.0.0.1:{hport}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.gateway_url + "/healthz", timeout=5).json().get(
                        "mqtt_connected"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except Exception:
                    p.kill()
        self.procs.clear()
