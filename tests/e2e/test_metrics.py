"""Both /metrics endpoints scraped on a running system: the gateway's ingest counters and
findings, the edge agent's outbox, drops, reconnects and frame errors."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from support import wait_until

from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.metrics import MetricsServer
from simulators.emulator import Faults, SerialEmulator
from simulators.script import random_script


def value(text: str, name: str, labels: str = "") -> float:
    pat = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else r"(?:\{\})?")
    m = re.search(rf"^{pat} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name}{{{labels}}} not in:\n{text}"
    return float(m.group(1))


def test_gateway_and_edge_metrics(tmp_path: Path, mosquitto, gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(mosquitto.url, extra_env={"GATEWAY_UNKNOWN_DEVICES": "accept"})
    profile = load_profile("toledo-15kg-5g")
    loads = random_script(profile, 2, seed=21, fast=True)
    emu = SerialEmulator(profile, loads, faults=Faults(garbage=0.1), seed=3)
    agent = Agent(AgentConfig.model_validate({
        "agent": {"market": "m-metrics", "outbox": str(tmp_path / "o.db")},
        "mqtt": {"url": mosquitto.url},
        "scale": [{"device": "met-1", "profile": profile.id, "port": emu.path,
                   "key": "ab" * 16}]}))
    agent.start()
    try:
        # the scale talks once the agent has its port open (pyserial flushes it at open)
        wait_until(lambda: agent.workers[0].stats.state == "running", 60, what="port open")
        emu.start()
        with MetricsServer(agent.status) as ms:

            def scraped() -> tuple[str, str] | None:
                """Both scrapes once they count every sale (the counters are updated
                just after what they count is stored or acknowledged)."""
                edge = httpx.get(f"http://127.0.0.1:{ms.port}/metrics", timeout=30).text
                text = httpx.get(gw.url + "/metrics", timeout=30).text
                done = (value(text, "scalegw_ingest_stored_sales_total") >= len(loads)
                        and value(edge, "scaleedge_outbox_sent_total") >= len(loads))
                return (edge, text) if done else None

            edge, text = wait_until(scraped, 120, 0.2, what="every sale stored and counted")
            assert httpx.get(f"http://127.0.0.1:{ms.port}/other").status_code == 404
    finally:
        agent.stop()
        emu.stop()
    assert value(edge, "scaleedge_frames_total", 'device="met-1"') > 20
    assert value(edge, "scaleedge_frame_errors_total", 'device="met-1"') >= 1
    assert value(edge, "scaleedge_connected", 'device="met-1"') == 1
    assert value(edge, "scaleedge_reconnects_total", 'device="met-1"') == 0
    assert value(edge, "scaleedge_outbox_dropped_total") == 0
    assert value(edge, "scaleedge_outbox_sent_total") >= len(loads)
    assert "# TYPE scaleedge_outbox_queued gauge" in edge
    assert value(text, "scalegw_ingest_stored_sales_total") == len(loads)
    assert value(text, "scalegw_ingest_received_total") >= 3
    assert value(text, "scalegw_ingest_dead_letters_total") == 0
    assert value(text, "scalegw_ingest_connected") == 1
    assert value(text, "scalegw_scales", 'state="online"') == 1
    assert "# TYPE scalegw_findings_open gauge" in text
    # the transactions that stored them, timed (births and sales: the events lane)
    assert "# TYPE scalegw_ingest_transaction_seconds histogram" in text
    timed = value(text, "scalegw_ingest_transaction_seconds_count", 'lane="events"')
    assert timed >= 1
    assert value(text, "scalegw_ingest_transaction_seconds_bucket",
                 'lane="events",le="+Inf"') == timed
