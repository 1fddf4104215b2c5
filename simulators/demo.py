"""``make demo``: a live market on embedded defaults, in one process.

An embedded amqtt broker (unless ``MQTT_URL`` names one), the gateway (API + ingest on
SQLite under ``var/demo``), emulated scales on ptys and one edge agent reading them.
Prints the dashboard address; Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import threading
import time
from pathlib import Path

from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from gateway_server.api.auth import ensure_user
from gateway_server.cli import build_server
from gateway_server.ingest.broker import EmbeddedBroker, free_port
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from simulators.emulator import SerialEmulator
from simulators.script import random_script

log = logging.getLogger("demo")

DEMO_PROFILES = ["toledo-15kg-5g"]
MARKET = "demo-market-01"


MERCHANTS = [("张记蔬菜", "A-01", "vegetables"), ("李家鲜肉", "A-02", "meat"),
             ("王氏水产", "B-01", "aquatic_products"), ("赵记水果", "B-02", "fruit")]


def _register(store: Store, keys: dict[str, str]) -> None:
    """The demo market's register: merchants, their scales (with keys), the bindings."""
    from gateway_server.registry import register as reg

    now = time.time_ns() // 1_000_000
    with store.engine.begin() as c:
        reg.create_market(c, MARKET, name="示范农贸市场 Demo market", now_ms=now)
        ids = [reg.create_merchant(c, MARKET, name=n, stall_no=st, categories=[cat],
                                   now_ms=now)["id"] for n, st, cat in MERCHANTS]
        for i, (device, key) in enumerate(sorted(keys.items())):
            profile = load_profile(DEMO_PROFILES[i % len(DEMO_PROFILES)])
            m = profile.metrology
            reg.register_scale(c, device, market_id=MARKET, now_ms=now, key_hex=key,
                               max_mg=m.max_mg, e_mg=m.e_mg, accuracy_class=m.accuracy_class,
                               role="trade", profile=profile.id,
                               due_on_ms=now + 200 * 86_400_000)
            reg.bind(c, device, ids[i % len(ids)], at_ms=now - 1)


def _run_fleet(url: str, mqtt_url: str, admin_password: str, var: Path) -> None:
    """The simulated fleet of simulators/fleets/demo.toml, starting now, in direct mode."""
    from datetime import UTC, datetime, timedelta

    from simulators.fleet_config import build_world, load_fleet_config
    from simulators.fleet_io import GatewayClient, run_direct

    try:
        cfg = load_fleet_config(Path(__file__).with_name("fleets") / "demo.toml")
        # the simulated day ends now: it starts `hours` ago and plays at `speed`×, so a
        # simulated event at t is sent at wall time ≥ t (t − start ≤ hours, and the wall
        # clock has moved (t − start) / speed past `start + hours`): never ahead of it
        cfg.fleet.start = datetime.now(tz=UTC) - timedelta(hours=cfg.trading.hours)
        world = build_world(cfg)
        admin = GatewayClient(url, username="admin", password=admin_password)
        (var / "fleet").mkdir(parents=True, exist_ok=True)
        admin.register(world, var / "fleet")
        run_direct(world, mqtt_url, gateway=admin, progress=False, client_prefix="demo-fleet")
        log.info("the simulated trading day is over; the dashboard keeps its findings")
    except Exception:  # the demo goes on with the emulated scales
        log.exception("the simulated fleet stopped")


def run_demo(*, port: int = 0, scales: int = 3, var: Path = Path("var/demo")) -> int:
    for noisy in ("amqtt", "transitions", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    broker = None
    mqtt_url = os.environ.get("MQTT_URL")
    if not mqtt_url:
        broker = EmbeddedBroker().start()
        mqtt_url = broker.url
        log.info("embedded MQTT broker (amqtt) on %s", mqtt_url)

    http_port = port or int(os.environ.get("GATEWAY_HTTP_PORT", 0)) or free_port()
    settings = Settings(database_url=f"sqlite:///{var}/gateway.db", mqtt_url=mqtt_url,
                        http_port=http_port, mqtt_client_id="demo-gateway",
                        public_base_url=f"http://127.0.0.1:{http_port}")
    store, ingestor, server = build_server(settings)
    keys = {f"scale-{i + 1:03d}": os.urandom(16).hex() for i in range(scales)}
    _register(store, keys)
    password = secrets.token_urlsafe(9)
    ensure_user(store, "inspector", password, "inspector")
    ingestor.start()
    server_thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    server_thread.start()

    emulators = []
    scale_cfgs = []
    for i in range(scales):
        profile = load_profile(DEMO_PROFILES[i % len(DEMO_PROFILES)])
        emu = SerialEmulator(profile, random_script(profile, 50, seed=100 + i), loop=True,
                             seed=100 + i).start()
        emulators.append(emu)
        device = f"scale-{i + 1:03d}"
        scale_cfgs.append({"device": device, "profile": profile.id, "port": emu.path,
                           "key": keys[device]})
    agent = Agent(AgentConfig.model_validate({
        "agent": {"market": MARKET, "outbox": str(var / "edge-outbox.db"), "heartbeat_s": 30},
        "mqtt": {"url": mqtt_url},
        "scale": scale_cfgs,
    }))
    agent.start()
    admin_password = secrets.token_urlsafe(12)
    ensure_user(store, "admin", admin_password, "admin")
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{http_port}"
    fleet = threading.Thread(target=_run_fleet, args=(url, mqtt_url, admin_password, var),
                             name="demo-fleet", daemon=True)
    fleet.start()
    print(f"\n  智慧计量秤网关 demo running — dashboard: {url}\n"
          f"  login 登录: inspector / {password}   (检查员 inspector)\n"
          f"  login 登录: admin / {admin_password}   (管理员 admin: register CSV import, "
          f"status changes, 红榜/黑榜)\n"
          f"  API: {url}/api/v1/weighings   OpenAPI: {url}/docs\n"
          f"  {scales} emulated scale(s) on ptys with a real edge agent in market {MARKET};\n"
          f"  a simulated fleet (~50 scales, 2 markets, fair scales, a few cheaters) replays "
          f"the trading day that ends now at 60x (never ahead of the clock); MQTT {mqtt_url}\n"
          f"  Press Ctrl-C to stop.\n", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        print("stopping…", flush=True)
        agent.stop()
        for emu in emulators:
            emu.stop()
        ingestor.stop()
        server.should_exit = True
        server_thread.join(5)
        if broker:
            broker.stop()
    return 0
