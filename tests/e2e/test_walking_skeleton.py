"""End to end on real parts: emulator on a pty → edge agent → Mosquitto → gateway → API.

The scale starts talking once the agent has opened its port (pyserial flushes a port it
opens); "nothing more arrives" is known from a barrier through the broker
(``support.gateway_barrier``), not from a quiet time.
"""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pty_scales import GatedScale
from support import gateway_barrier, wait_until

from device_profiles.codecs import make_codec
from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from simulators.emulator import Faults, SerialEmulator
from simulators.script import random_script
from weighing import wire

PROFILE = "toledo-15kg-5g"
# these scales are not in a register: the gateway stores them unverified instead of
# quarantining them (registered devices are covered by tests/gateway_server)
ACCEPT = {"GATEWAY_UNKNOWN_DEVICES": "accept"}


def make_agent(tmp: Path, mqtt_url: str, port: str, *, device: str = "s-0001") -> Agent:
    cfg = AgentConfig.model_validate({
        # unregistered scales: the gateway has no key to confirm with, so rows leave on
        # PUBACK (registered scales: tests/e2e/test_end_to_end_ack.py, test_chaos.py)
        "agent": {"market": "m-test", "outbox": str(tmp / "outbox.db"), "heartbeat_s": 60,
                  "confirm": "broker"},
        "mqtt": {"url": mqtt_url, "max_delay_ms": 50},
        "scale": [{"device": device, "profile": PROFILE, "port": port, "key": "a1b2c3"}],
    })
    return Agent(cfg)


def weighings(gw, device: str = "s-0001") -> list[dict]:  # type: ignore[no-untyped-def]
    return gw.get("/api/v1/weighings", device=device, limit=1000)["items"]


def start_reading(agent: Agent) -> None:
    """Start the agent; return once it has its port open (and flushed)."""
    agent.start()
    wait_until(lambda: agent.workers[0].stats.state == "running", 60, what="the port open")


def test_emulated_loads_arrive_exactly_once_in_mg(tmp_path, mosquitto, gateway_factory):  # type: ignore[no-untyped-def]
    gw = gateway_factory(mosquitto.url, extra_env=ACCEPT)
    profile = load_profile(PROFILE)
    loads = random_script(profile, 4, seed=7, fast=True)
    emu = SerialEmulator(profile, loads)
    agent = make_agent(tmp_path, mosquitto.url, emu.path)
    try:
        start_reading(agent)
        emu.start()
        wait_until(lambda: len(weighings(gw)) >= len(loads), 120, what="all loads stored")
        # nothing more may arrive: all the agent sent has reached the broker, and the
        # gateway has processed all the broker got
        wait_until(lambda: emu.done.is_set() and agent.outbox.depth() == 0, 120,
                   what="the script played and the outbox drained")
        gateway_barrier(gw, mosquitto.port)
        got = weighings(gw)
    finally:
        agent.stop()
        emu.stop()
    assert sorted(w["net_mg"] for w in got) == sorted(ld.mass_mg for ld in loads)
    assert len({(w["device"], w["seq"]) for w in got}) == len(got) == len(loads)
    assert all(w["device"] == "s-0001" and w["market"] == "m-test" for w in got)
    assert all(w["stable_device"] and w["stable_software"] for w in got)
    assert not any(w["signed"] for w in got)  # no register, no key: stored unverified
    assert all(isinstance(w["ts_ms"], int) and w["ts_ms"] > 1_600_000_000_000 for w in got)
    scales = gw.get("/api/v1/scales", market="m-test")
    assert [s["device"] for s in scales] == ["s-0001"]
    assert scales[0]["max_mg"] == 15_000_000 and scales[0]["e_mg"] == 5_000


@pytest.mark.slow
def test_gateway_restart_between_loads_loses_and_duplicates_nothing(  # type: ignore[no-untyped-def]
    tmp_path, mosquitto, gateway_factory
):
    gw = gateway_factory(mosquitto.url, client_id="gw-restart", extra_env=ACCEPT)
    profile = load_profile(PROFILE)
    loads = random_script(profile, 5, seed=11)
    scale = GatedScale(make_codec(profile.protocol, profile.codec), loads,
                       e_mg=profile.metrology.e_mg, rate_hz=profile.link.output_rate_hz)
    agent = make_agent(tmp_path, mosquitto.url, scale.path)
    try:
        start_reading(agent)
        scale.start(gate=scale.at(1, "idle", 300))
        wait_until(lambda: len(weighings(gw)) >= 1, 120, what="first load stored")
        gw.kill()  # SIGKILL: no goodbye, no final acks
        sent_before = agent.workers[0].stats.events
        # the scale sells the other loads while the gateway is down
        scale.wait_at(len(scale.frames))
        wait_until(lambda: agent.workers[0].stats.events >= sent_before + len(loads) - 1, 120,
                   what="the other sales published while the gateway is down")
        wait_until(lambda: agent.outbox.depth() == 0, 120, what="outbox drained to broker")
        gw2 = gateway_factory(mosquitto.url, client_id="gw-restart", port=gw.port,
                              extra_env=ACCEPT)
        try:
            wait_until(lambda: len(weighings(gw2)) >= len(loads), 120, what="all loads stored")
        except AssertionError:
            print(weighings(gw2), gw2.get("/healthz"), agent.status(), [ld.mass_mg for ld in loads])
            print(gw2.log.read_text()[-3000:])
            raise
        gateway_barrier(gw2, mosquitto.port)
        got = weighings(gw2)
    finally:
        agent.stop()
        scale.close()
    assert sorted(w["net_mg"] for w in got) == sorted(ld.mass_mg for ld in loads)
    assert len({w["seq"] for w in got}) == len(got) == len(loads)


def test_malformed_payload_is_dead_lettered_and_good_data_beside_it_kept(  # type: ignore[no-untyped-def]
    mosquitto, gateway_factory
):
    gw = gateway_factory(mosquitto.url, extra_env=ACCEPT)
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bad-pub")
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    good = wire.EventBatch(device="d-1", events=[wire.SaleEvent(
        seq=1, ts_ms=int(time.time() * 1000), net_mg=1_250_000, settled_mg=1_250_000,
        peak_mg=1_300_000, stable_device=True, stable_software=True)])
    msgs = [
        ("scales/v1/m1/d-1/events", b"{not json"),
        ("scales/v1/m1/d-1/events", b'{"v":1,"device":"d-1","events":[{"kind":"sale","seq":2,'
                                    b'"ts_ms":1,"net_mg":1.25,"settled_mg":1,"peak_mg":1,'
                                    b'"stable_device":true,"stable_software":true}]}'),
        ("scales/v1/m1/d-1/events", wire.encode(good)),
        ("scales/v1/m1/d-2/events", wire.encode(good)),  # device differs from the topic
    ]
    for topic, payload in msgs:
        c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()
    wait_until(lambda: gw.get("/healthz")["ingest"]["dead_letters"] >= 3, 60, what="dead letters")
    dead = gw.get("/api/v1/dead-letters")
    reasons = " | ".join(d["reason"] for d in dead)
    assert len(dead) == 3
    assert "malformed" in reasons.lower() or "json" in reasons.lower()
    assert "$.events[0].net_mg" in reasons  # says where
    assert "differs from the topic" in reasons
    got = wait_until(lambda: weighings(gw, "d-1"), 60, what="the good sale")
    gateway_barrier(gw, mosquitto.port)  # what else was going to be stored, is
    got = weighings(gw, "d-1") + weighings(gw, "d-2")
    assert [(w["device"], w["seq"], w["net_mg"]) for w in got] == [("d-1", 1, 1_250_000)]
    assert gw.proc.poll() is None  # still running


def test_malformed_serial_frames_are_counted_and_loads_still_arrive(  # type: ignore[no-untyped-def]
    tmp_path, mosquitto, gateway_factory
):
    gw = gateway_factory(mosquitto.url, extra_env=ACCEPT)
    profile = load_profile(PROFILE)
    loads = random_script(profile, 3, seed=3, fast=True)
    faults = Faults(bad_checksum=0.05, garbage=0.05)
    emu = SerialEmulator(profile, loads, faults=faults, seed=5)
    agent = make_agent(tmp_path, mosquitto.url, emu.path)
    try:
        start_reading(agent)
        emu.start()
        wait_until(lambda: len(weighings(gw)) >= len(loads), 120, what="all loads stored")
        stats = agent.workers[0].stats
    finally:
        agent.stop()
        emu.stop()
    injected = emu.stats.faults.get("bad_checksum", 0) + emu.stats.faults.get("garbage", 0)
    assert injected > 0
    assert stats.frame_errors > 0
    assert any("checksum" in r or "garbage" in r for r in stats.errors_by_reason)
    assert stats.state in ("running", "stopped") and stats.restarts == 0
    assert sorted(w["net_mg"] for w in weighings(gw)) == sorted(ld.mass_mg for ld in loads)
