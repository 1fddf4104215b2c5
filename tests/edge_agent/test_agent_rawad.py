"""Raw AD end to end: the Modbus TCP emulator, a real agent worker, a real Mosquitto.

The sale and zero events on the broker carry the AD counts the emulator's load-cell model
gives; after a span re-calibration (a 改标定 cheat) the same goods show another weight
while their AD does not move, so K = (AD − AD0) / W changes by the span ratio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
# idle ≥ the state machine's 2 s zero window; the emulator holds the second idle until
# the test has re-calibrated (HeldEmulator)
SCRIPT = [
    Load(mass_mg=MASS_MG, idle_ms=2_600, settle_ms=300, hold_ms=900, remove_ms=200),
    Load(mass_mg=MASS_MG, idle_ms=2_200, settle_ms=300, hold_ms=900, remove_ms=200),
]


class HeldEmulator(ModbusEmulator):
    """The emulator's script stops at each of ``holds`` (script seconds) until
    :meth:`release`, then goes on from there: the agent reads the first idle whole, and
    the test re-calibrates while the pan is empty, however late the first sale reached
    it (on the real clock the second load would have played meanwhile)."""

    def __init__(self, *args: Any, holds: list[float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holds = list(holds)
        self._base_script_s = self._base_real_s = 0.0

    def _script_s(self) -> float:
        return self._base_script_s + super().now_s() - self._base_real_s

    def now_s(self) -> float:
        return min([self._script_s(), *self._holds[:1]])

    def held(self) -> bool:
        return bool(self._holds) and self._script_s() >= self._holds[0]

    def release(self) -> None:
        self._base_script_s, self._base_real_s = self._holds.pop(0), super().now_s()


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
    first_load_s = sum(x.idle_ms + x.settle_ms + x.hold_ms + x.remove_ms
                       for x in SCRIPT[:1]) / 1000
    emu = HeldEmulator(GENERIC, tcp=("127.0.0.1", port), script=SCRIPT, repeat=False,
                       holds=[0.0, first_load_s + 0.5])  # at the start, in the second idle
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
        wait_until(lambda: worker.stats.frames, 60, what="the agent reading the empty pan")
        emu.release()
        first = wait_until(lambda: col.sales(DEVICE), 120, what="the first sale")
        wait_until(emu.held, 120, what="the empty pan before the second load")
        # 改标定: a 5 % larger span shows the same goods 5 % lighter; the AD is unchanged
        new_span = old_span * 105 // 100
        emu.recalibrate(1, span=new_span)
        emu.release()
        wait_until(lambda: len(col.sales(DEVICE)) >= 2, 120, what="the second sale")
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
    assert {z.seq < s1.seq for z in zeros} == {True, False}
    assert all(z.raw_ad == ad0 for z in zeros)
    # after the re-calibration the same goods (same AD) show the model's new weight
    assert s2.raw_ad == ad
    assert s2.settled_mg == round_to_e((ad - model.cal_zero) * emu.max_mg // new_span, emu.e_mg)
    k1 = (s1.raw_ad - ad0) / s1.settled_mg
    k2 = (s2.raw_ad - ad0) / s2.settled_mg
    # K follows the span, up to the display's rounding to e
    assert k2 / k1 == pytest.approx(new_span / old_span, rel=emu.e_mg / s2.settled_mg)
    assert k1 == pytest.approx(model.factory_span / emu.max_mg)
