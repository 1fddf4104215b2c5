"""A traceability scale (trace-record lines) through a real pty, the agent and Mosquitto:
one sale per record, with its traceability code, PLU and price — whether or not the scale
sends anything between two sales."""

from __future__ import annotations

from pathlib import Path

from edge_helpers import KEY_HEX, Collector, PtyScale
from support import Mosquitto, wait_until

from device_profiles.codecs import WeightFrame, make_codec
from device_profiles.schema import load_profile
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig

PROFILE = "trace-30kg-10g"


def test_record_only_traceability_scale(tmp_path: Path, mosquitto: Mosquitto) -> None:
    profile = load_profile(PROFILE)
    scale = PtyScale(make_codec(profile.protocol, profile.codec))
    col = Collector(mosquitto.port)
    records = [
        WeightFrame(weight_mg=1_230_000, stable=True, print_request=True, plu="12",
                    trace_code=f"TR{i:04d}", unit_price_fen_per_kg=2_800,
                    amount_fen=(1_230_000 * 2_800 + 500_000) // 1_000_000,
                    ts_text="2026-11-28T08:00:00", tare_mg=0)
        for i in range(3)
    ]
    # three sales one second apart, the second sent twice (a repeated line is one sale)
    frames = [(0, records[0]), (1000, records[1]), (1100, records[1]), (2000, records[2])]
    agent = Agent(AgentConfig.model_validate({
        "agent": {"market": "m-test", "outbox": str(tmp_path / "o.db"), "heartbeat_s": 60},
        "mqtt": {"url": mosquitto.url, "max_delay_ms": 50},
        "scale": [{"device": "trace-1", "profile": PROFILE, "port": scale.path,
                   "key": KEY_HEX}]}))
    agent.start()
    try:
        # pyserial flushes the port as it opens it: a record sent before would be lost
        wait_until(lambda: agent.workers[0].stats.state == "running", 60, what="port open")
        scale.play(frames)
        wait_until(lambda: len(col.sales("trace-1")) >= 3, 120, what="three sales")
        got = col.sales("trace-1")
    finally:
        agent.stop()
        col.close()
        scale.close()
    assert [s.trace_code for s in got] == ["TR0000", "TR0001", "TR0002"]
    assert all(s.net_mg == 1_230_000 and s.plu == "12" and s.unit_price_fen_per_kg == 2_800
               and s.amount_fen == 3_444 for s in got)
