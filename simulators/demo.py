"""``make demo``: a live market on embedded defaults, in one process.

An embedded amqtt broker (unless ``MQTT_URL`` names one), the gateway (API + ingest on
SQLite under ``var/demo``), emulated scales on ptys and one edge agent reading them.
Prints the dashboard address; Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from gateway_server.broker import EmbeddedBroker, free_port
from gateway_server.cli import build_server
from gateway_server.settings import Settings
from simulators.emulator import SerialEmulator
from simulators.script import random_script

log = logging.getLogger("demo")

DEMO_PROFILES = ["toledo-15kg-5g"]
MARKET = "demo-market-01"


def run_demo(*, port: int = 0, scales: int = 3, var: Path = Path("var/demo")) -> int:
    for noisy in ("amqtt", "transitions"):
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
                        http_port=http_port, mqtt_client_id="demo-gateway")
    _store, ingestor, server = build_server(settings)
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
        scale_cfgs.append({"device": f"scale-{i + 1:03d}", "profile": profile.id,
                           "port": emu.path, "key": os.urandom(16).hex()})
    agent = Agent(AgentConfig.model_validate({
        "agent": {"market": MARKET, "outbox": str(var / "edge-outbox.db"), "heartbeat_s": 30},
        "mqtt": {"url": mqtt_url},
        "scale": scale_cfgs,
    }))
    agent.start()

    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{http_port}"
    print(f"\n  智慧计量秤网关 demo running — dashboard: {url}\n"
          f"  API: {url}/api/v1/weighings   OpenAPI: {url}/docs\n"
          f"  {scales} emulated scale(s) in market {MARKET}; MQTT {mqtt_url}\n"
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
