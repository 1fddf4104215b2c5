"""K-factor drift (gateway_server.detect.rules.kfactor): pure, and through the ingest pipeline
with a labelled stream of a weighing transmitter that reports raw AD counts."""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import insert, select

from gateway_server.detect.rules.kfactor import KSample, check_k_drift, tolerance_rel
from gateway_server.detect.rules.stream import ScaleCtx
from gateway_server.ingest.pipeline import decode_message, store_batch
from gateway_server.store.database import Store
from gateway_server.store.tables import findings, markets, sales, scales
from gateway_server.store.tables_workflow import repairs
from weighing import wire

SCALE = ScaleCtx("t-1", "m1", 5_000, 15_000_000)
ZERO_AD = 100_000
COUNTS_PER_MG = 0.1  # a 1,500,000-count span for Max = 15 kg


def test_tolerance_is_the_in_service_mpe_plus_one_e_over_the_load() -> None:
    # 1 kg = 200 e: in-service MPE 1 e = 5 g, + e = 10 g → 1 %; 5 kg = 1000 e: 2 e + e → 0.3 %
    assert tolerance_rel(1_000_000, SCALE) == pytest.approx(0.01)
    assert tolerance_rel(5_000_000, SCALE) == pytest.approx(0.003)


def test_tolerance_of_a_class_ii_transmitter_uses_the_class_ii_table() -> None:
    # 3 kg / 0.1 g, class II (n = 30,000; OIML R76-1 Table 6): 2 kg = 20,000 e is still in the
    # ±1 e band (±2 e in service = 0.2 g), + e → 0.3 g / 2 kg. Read as class III it would be
    # beyond that table and get its last band (±3 e): 0.4 g.
    ii = ScaleCtx("t-2", "m1", 100, 3_000_000, accuracy_class="II")
    assert tolerance_rel(2_000_000, ii) == pytest.approx(0.00015)


def sample(seq: int, true_mg: int, gain: float = 0.0) -> KSample:
    shown = round(true_mg * (1 + gain) / 5_000) * 5_000
    return KSample(seq * 1000, seq, round(true_mg * COUNTS_PER_MG), shown)


def test_a_display_gain_moves_k_and_honest_rounding_does_not() -> None:
    rng = random.Random(5)
    loads = [rng.randint(300_000, 8_000_000) for _ in range(40)]
    ref = [sample(i, m) for i, m in enumerate(loads[:10])]
    honest = [sample(10 + i, m) for i, m in enumerate(loads[10:])]
    assert check_k_drift(ref, honest, SCALE, reset_ms=0) is None
    cheat = [sample(50 + i, m, gain=0.05) for i, m in enumerate(loads[10:13])]
    f = check_k_drift(ref, [*honest, *cheat], SCALE, reset_ms=0, merchant_id=3)
    assert f is not None and (f.kind, f.severity, f.merchant_id) == ("k-factor-drift", "high", 3)
    assert all(g == pytest.approx(0.05, abs=0.004) for g in f.evidence["display_gain"])
    assert f.ts_ms == cheat[0].ts_ms and f.dedup_key == "k-factor-drift:t-1:0"
    # two cheated sales are not yet enough; too few reference sales say nothing
    assert check_k_drift(ref, [*honest, *cheat[:2]], SCALE, reset_ms=0) is None
    assert check_k_drift(ref[:9], cheat, SCALE, reset_ms=0) is None
    # a gain within the MPE at these loads (0.2 % at ≥ 5 kg) is the law's business, not K's
    small = [sample(60 + i, 6_000_000 + i * 500_000, gain=0.002) for i in range(3)]
    assert check_k_drift(ref, small, SCALE, reset_ms=0) is None


# -- through the pipeline --------------------------------------------------------------------

T0 = 1_790_000_000_000


@pytest.fixture
def transmitter(store: Store) -> None:
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="m1", name="一号市场", created_ms=0))
        c.execute(insert(scales).values(device="t-1", market="m1", registered=True,
                                        role="trade", max_mg=15_000_000, e_mg=5_000,
                                        accuracy_class="III", state="online"))


class Stream:
    """A transmitter's events: zero check (raw AD of the empty pan), then a sale."""

    def __init__(self) -> None:
        self.seq, self.t = 0, T0

    def weigh(self, true_mg: int, gain: float = 0.0, tray_mg: int = 0) -> list[wire.Event]:
        """Goods of ``true_mg`` (on a tared tray of ``tray_mg``): the load cell sees both."""
        self.seq, self.t = self.seq + 2, self.t + 60_000
        gross = round((true_mg + tray_mg) * (1 + gain) / 5_000) * 5_000
        tare = round(tray_mg * (1 + gain) / 5_000) * 5_000
        return [wire.ZeroCheckEvent(seq=self.seq - 1, ts_ms=self.t - 10_000, mean_mg=0,
                                    spread_mg=0, n=20, duration_ms=5_000, raw_ad=ZERO_AD),
                wire.SaleEvent(seq=self.seq, ts_ms=self.t, net_mg=gross - tare,
                               settled_mg=gross - tare, peak_mg=gross - tare, tare_mg=tare,
                               stable_device=True, stable_software=True,
                               raw_ad=ZERO_AD + round((true_mg + tray_mg) * COUNTS_PER_MG))]


def send(store: Store, evs: list[wire.Event]) -> None:
    inc = decode_message("scales/v1/m1/t-1/events",
                         wire.encode(wire.EventBatch(device="t-1", events=evs)), T0)
    with store.engine.begin() as c:
        store_batch(c, [inc], now_ms=T0)


def drift_findings(store: Store) -> list[dict]:  # type: ignore[type-arg]
    with store.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(
            select(findings).where(findings.c.kind == "k-factor-drift"))]


def test_display_gain_found_from_raw_ad_and_reset_by_a_repair(store: Store,
                                                              transmitter: None) -> None:
    s, rng = Stream(), random.Random(9)
    for _ in range(20):  # honest: reference and more
        send(store, s.weigh(rng.randint(300_000, 8_000_000)))
    for _ in range(5):  # honest, on a tared 400 g tray: K is taken on the gross weight
        send(store, s.weigh(rng.randint(300_000, 2_000_000), tray_mg=400_000))
    assert drift_findings(store) == []
    with store.engine.connect() as c:
        stored = c.execute(select(sales.c.raw_ad, sales.c.ad_zero).limit(1)).one()
    assert stored.ad_zero == ZERO_AD and stored.raw_ad > ZERO_AD
    for _ in range(3):  # the indicator now shows 4 % more than the load cell says
        send(store, s.weigh(rng.randint(1_000_000, 8_000_000), gain=0.04))
    (f,) = drift_findings(store)
    ev = json.loads(f["evidence"])
    assert f["device"] == "t-1" and len(ev["display_gain"]) == 3
    assert all(0.03 < g < 0.05 for g in ev["display_gain"])
    # a registered repair (re-verification) starts a new reference from the scale as left
    with store.engine.begin() as c:
        c.execute(insert(repairs).values(device="t-1", kind="verification", ts_ms=s.t + 1,
                                         note="re-verified"))
    for _ in range(15):
        send(store, s.weigh(rng.randint(1_000_000, 8_000_000), gain=0.04))
    assert len(drift_findings(store)) == 1
