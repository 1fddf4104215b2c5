"""End-to-end acknowledgement on real parts: an agent's rows leave its outbox only once
the gateway has committed them, whatever the broker did with them.

Mosquitto here keeps no session for the gateway before the gateway first connects, so
what the agent publishes before that is acknowledged by the broker (PUBACK) and then
dropped: the old agent deleted those rows on the PUBACK and the sales were lost.
"""

from __future__ import annotations

from pathlib import Path

from ack_helpers import PROFILE, key_hex, register, sale_counts, sqlite_url
from pty_scales import GatedScale
from support import start_mosquitto, wait_until

from device_profiles.codecs import make_codec
from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from gateway_server.ingest.ingestor import Ingestor
from gateway_server.settings import Settings
from simulators.script import random_script
from weighing import wire

MARKET = "m-ack"
DEV = "s-ack-01"


def test_rows_wait_for_the_gateway_and_what_the_broker_dropped_is_sent_again(
        tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path, persistence=False, default_config=True)
    store = register(sqlite_url(tmp_path), MARKET, [DEV])
    profile = load_profile(PROFILE)
    loads = random_script(profile, 4, seed=5, fast=True)
    scale = GatedScale(make_codec(profile.protocol, profile.codec), loads,
                       e_mg=profile.metrology.e_mg, rate_hz=profile.link.output_rate_hz)
    cfg = AgentConfig.model_validate({
        "agent": {"market": MARKET, "outbox": str(tmp_path / "outbox.db"), "heartbeat_s": 3600,
                  "ack_timeout_s": 2},
        "mqtt": {"url": broker.url, "max_delay_ms": 50, "reconnect_max_s": 1},
        "scale": [{"device": DEV, "profile": PROFILE, "port": scale.path, "key": key_hex(DEV),
                   "samples": False}],
    })
    agent = Agent(cfg)
    ingest = None
    try:
        agent.start()
        wait_until(lambda: agent.workers[0].stats.state == "running", 60, what="port open")
        scale.start(gate=len(scale.frames))
        pub = agent.workers[0].publisher
        # every sale is published and PUBACKed by the broker (no one subscribes yet) ...
        wait_until(lambda: sum(1 for r in agent.outbox.peek(DEV, "events", limit=1000)
                               if b'"kind":"sale"' in r.payload) == len(loads)
                   and pub.stats.acked_rows >= len(loads) and not pub.stats.inflight,
                   120, what="all sales PUBACKed by the broker")
        # ... and still in the outbox: the broker's PUBACK frees nothing
        assert agent.outbox.depth(DEV, "events") >= len(loads)
        settings = Settings(database_url=sqlite_url(tmp_path), mqtt_url=broker.url,
                            markets=MARKET, ingest_max_delay_ms=20)
        ingest = Ingestor(settings, store, client_id="gw-ack")
        ingest.start()
        # the gateway confirms what it stores; unconfirmed rows come again after 2 s
        wait_until(lambda: agent.outbox.depth(DEV, "events") == 0, 120,
                   what="the outbox emptied by the gateway's confirmations")
        counts, nets = sale_counts(store)
        status = agent.status()["scales"][DEV]["publisher"]  # type: ignore[index]
    finally:
        agent.stop()
        scale.close()
        if ingest is not None:
            ingest.stop()
        broker.stop()
    print("sales stored", len(counts), "confirmations", status)
    assert sorted(nets[DEV]) == sorted(ld.mass_mg for ld in loads)  # none lost
    assert set(counts.values()) == {1}  # none twice
    assert status["confirmed_seq"] >= max(s for _, s in counts)  # type: ignore[operator]
    assert ingest.acks.stats.stored_sent >= 1


def test_batches_stay_under_the_payload_limit_whatever_batch_size_says(tmp_path: Path) -> None:
    """2,000 sales with ``batch_size = 5000`` once went out as one 543 KB message."""
    from edge_agent.outbox import Outbox
    from edge_agent.publisher import _fit

    ob = Outbox(tmp_path / "o.db")
    for i in range(2000):
        ob.put_event(DEV, wire.SaleEvent(seq=0, ts_ms=1_750_000_000_000 + i, net_mg=i,
                                         settled_mg=i, peak_mg=i, stable_device=True,
                                         stable_software=True, plu="x" * 200),
                     key=b"k" * 16)
    rows = ob.peek(DEV, "events", limit=5000)
    sizes, sent = [], 0
    while rows:
        part = _fit(rows)
        payload = wire.event_batch_payload(DEV, [r.payload for r in part], floor_seq=2**62)
        sizes.append(len(payload))
        wire.decode(wire.topic(MARKET, DEV, wire.Channel.EVENTS), payload)  # accepted
        sent += len(part)
        rows = rows[len(part):]
    assert sent == 2000 and len(sizes) > 1
    assert max(sizes) <= wire.MAX_BATCH_BYTES < wire.MAX_PAYLOAD_BYTES
