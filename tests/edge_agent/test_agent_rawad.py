"""Raw AD end to end: the Modbus TCP emulator, a real agent worker, a real Mosquitto.

The sale and zero events on the broker carry the AD counts the emulator's load-cell model
gives; after a span re-calibration (a 改标定 cheat) the same goods show another weight
while their AD does not move, so K = (AD − AD0) / W changes by the span ratio.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from edge_helpers import KEY_HEX, Collector
from support import Mosquitto, wait_until

from device_profiles.schema import load_profile
from edge_agent.agent import ScaleWorker
from edge_agent.config import AgentConfig
from edge_agent.modbus import ModbusFrameSource
from edge_agent.outbox import Outbox
from simulators.modbus_server import FACTORY_ZERO_AD, ModbusEmulator, free_port
from simulators.script import Load, round_to_e
from weighing import wire

PROFILE = "modbus-transmitter-generic"  # 30 kg / 10 g; served over TCP here
GENERIC = load_profile(PROFILE)
MASS_MG = 5_000_000
DEVICE = "s-ad"
# idle ≥ the state machine's 2 s zero window; the second idle leaves time to re-calibrate
SCRIPT = [
    Load(mass_mg=MASS_MG, idle_ms=2_600, settle_ms=300, hold_ms=900, remove_ms=200),
    Load(mass_mg=MASS_MG, idle_ms=2_200, settle_ms=300, hold_ms=900, remove_ms=200),
]


def test_sales_and_zero_checks_carry_the_raw_ad_and_a_span_cheat_moves_k(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    cfg = AgentConfig.model_validate({
        "agent": {"market": "m-test", "outbox": str(tmp_path / "outbox.db"), "heartbeat_s": 60},
        "mqtt": {"url": mosquitto.url, "max_delay_ms": 50, "reconnect_max_s": 1},
        "scale": [{"profile": PROFILE, "key": KEY_HEX, "device": DEVICE, "port": "tcp"}],
    })
    col = Collector(mosquitto.port)
    outbox = Outbox(cfg.agent.outbox)
    port = free_port()
    emu = ModbusEmulator(GENERIC, tcp=("127.0.0.1", port), script=SCRIPT, repeat=False)
    model = emu.models[1]
    old_span = model.cal_span
    # the emulator's load-cell model: AD of the empty pan and of the goods
    ad0 = FACTORY_ZERO_AD
    ad = FACTORY_ZERO_AD + MASS_MG * model.factory_span // emu.max_mg
    source = ModbusFrameSource.from_profile(GENERIC, tcp=("127.0.0.1", port))
    worker = ScaleWorker(cfg.scale[0], market="m-test", outbox=outbox, agent=cfg, source=source)
    emu.start()
    worker.start()
    try:
        first = wait_until(lambda: col.sales(DEVICE), 8, what="the first sale")
        # 改标定: a 5 % larger span shows the same goods 5 % lighter; the AD is unchanged
        new_span = old_span * 105 // 100
        second_load_s = sum(x.idle_ms + x.settle_ms + x.hold_ms + x.remove_ms
                            for x in SCRIPT[:1]) / 1000 + SCRIPT[1].idle_ms / 1000
        assert emu.now_s() < second_load_s - 0.5, "too late to re-calibrate before the load"
        emu.recalibrate(1, span=new_span)
        wait_until(lambda: len(col.sales(DEVICE)) >= 2, 8, what="the second sale")
        sales = col.sales(DEVICE)
        zeros = col.events(DEVICE, wire.ZeroCheckEvent)
    finally:
        worker.stop()
        emu.stop()
        col.close()
        outbox.close()

    s1, s2 = sales[0], sales[1]
    assert s1 == first[0]
    assert (s1.settled_mg, s1.raw_ad) == (MASS_MG, ad)
    # both idle periods (the second one spans the re-calibration: AD0 does not move)
    assert len({z.seq for z in zeros}) == 2 and all(z.raw_ad == ad0 for z in zeros)
    # after the re-calibration the same goods (same AD) show the model's new weight
    assert s2.raw_ad == ad
    assert s2.settled_mg == round_to_e((ad - model.cal_zero) * emu.max_mg // new_span, emu.e_mg)
    k1 = (s1.raw_ad - ad0) / s1.settled_mg
    k2 = (s2.raw_ad - ad0) / s2.settled_mg
    # K follows the span, up to the display's rounding to e
    assert k2 / k1 == pytest.approx(new_span / old_span, rel=emu.e_mg / s2.settled_mg)
    assert k1 == pytest.approx(model.factory_span / emu.max_mg)
