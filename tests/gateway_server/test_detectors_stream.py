"""Pure stream rules: each cheat of domain.md §4 gives its finding; honest data gives none."""

from __future__ import annotations

import random

from hypothesis import given, strategies as st

from gateway_server.detect.rules.idle import check_idle_scales
from gateway_server.detect.rules.stream import (
    RegisteredPrice,
    ScaleCtx,
    check_counter,
    check_sale,
    check_zero,
    market_day,
    tare_habit,
)
from weighing.units import (
    LAWFUL_AMOUNT_ROUNDINGS,
    AmountRounding,
    amount_fen,
    max_lawful_amount_fen,
    rounded_amount_fen,
)

SC = ScaleCtx("s-1", "m1", e_mg=5_000, max_mg=15_000_000)  # 15 kg / 5 g, class III
T = 1_790_000_000_000


def sale(**kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(seq=7, ts_ms=T, net_mg=1_250_000, settled_mg=1_250_000,
                                   peak_mg=1_300_000, tare_mg=0, stable_device=True,
                                   stable_software=True, unsettled_commit=False,
                                   unit_price_fen_per_kg=None, amount_fen=None, plu=None,
                                   merchant_id=3)
    base.update(kw)
    return base


def kinds(fs: list) -> list[str]:  # type: ignore[type-arg]
    return [f.kind for f in fs]


def test_honest_sale_gives_nothing() -> None:
    price = RegisteredPrice("101", 2_400, "vegetables")
    assert check_sale(sale(plu="101", unit_price_fen_per_kg=2_400, amount_fen=3_000), SC,
                      price=price) == []


def test_impact_cheat_carries_peak_and_settled() -> None:
    (f,) = check_sale(sale(net_mg=198_000, settled_mg=155_000, peak_mg=198_000,
                           unsettled_commit=True, stable_device=False), SC)
    assert f.kind == "impact" and f.severity == "high"
    assert f.evidence["gain_mg"] == 43_000 and f.evidence["peak_mg"] == 198_000
    assert f.merchant_id == 3 and "作弊" in f.legal_basis


def test_price_decimal_trick_and_mismatch_and_amount() -> None:
    price = RegisteredPrice("201", 1_000, "vegetables")  # 10.00 元/kg registered
    f = check_sale(sale(plu="201", unit_price_fen_per_kg=10, amount_fen=13), SC, price=price)
    assert kinds(f) == ["price-decimal-trick"] and f[0].evidence["pattern"] == "x0.01"
    f = check_sale(sale(plu="201", unit_price_fen_per_kg=100, amount_fen=125), SC, price=price)
    assert kinds(f) == ["price-decimal-trick"] and f[0].evidence["pattern"] == "x0.1"
    f = check_sale(sale(plu="201", unit_price_fen_per_kg=1_100, amount_fen=1_375), SC,
                   price=price)
    assert kinds(f) == ["price-mismatch"]
    # 1.25 kg x 10.00 = 12.50 yuan; 13.00 charged
    f = check_sale(sale(plu="201", unit_price_fen_per_kg=1_000, amount_fen=1_300), SC,
                   price=price)
    assert kinds(f) == ["amount-mismatch"] and f[0].evidence["expected_amount_fen"] == 1_250


MEAT = RegisteredPrice("301", 2_800, "meat")
RIBS = RegisteredPrice("302", 4_000, "meat")


def tray_sale(seq: int, tare_mg: int, plu: str = "301", **kw: object) -> dict[str, object]:
    unit = 2_800 if plu == "301" else 4_000
    return sale(seq=seq, ts_ms=T + seq * 60_000, plu=plu, tare_mg=tare_mg,
                unit_price_fen_per_kg=unit, amount_fen=amount_fen(1_250_000, unit)) | kw


def judge(history: list[dict[str, object]], **kw: object) -> list:  # type: ignore[type-arg]
    """check_sale on the last of ``history`` with the habit its earlier sales show."""
    last = history[-1]
    price = MEAT if last["plu"] == "301" else RIBS
    return check_sale(last, SC, price=price, habit=tare_habit(history), **kw)


def test_untared_tray_goods_without_evidence_of_a_tray_is_an_observation() -> None:
    # no history at all (the old rule accused this sale): one info observation a day
    (f,) = check_sale(tray_sale(1, 0), SC, price=MEAT)
    assert f.kind == "untared-tray-goods" and f.severity == "info"
    assert f.dedup_key == f"untared-tray-goods:s-1:{market_day(T + 60_000)}"
    # a stall that never tares (sells without trays): every sale the same day-key
    never = [tray_sale(i, 0) for i in range(1, 40)]
    fs = [judge(never[:i]) for i in range(1, 40)]
    assert {f.kind for x in fs for f in x} == {"untared-tray-goods"}
    assert len({f.dedup_key for x in fs for f in x}) == 1
    # tared: nothing; goods not sold in trays: nothing
    assert check_sale(tray_sale(1, 20_000), SC, price=MEAT) == []
    assert check_sale(tray_sale(1, 0), SC, price=RegisteredPrice("301", 2_800, "vegetables")) \
        == []


def test_tare_omission_needs_the_merchants_own_taring_habit() -> None:
    tared = [tray_sale(i, 25_000 + 5_000 * (i % 3)) for i in range(1, 11)]
    (f,) = judge([*tared, tray_sale(11, 0)])
    assert f.kind == "tare-omission" and f.severity == "medium"
    ev = f.evidence
    assert ev["habit"] == {"basis": "plu", "window": 10, "tared": 10, "typical_tare_mg": 30_000,
                           "breaks": 1}
    assert ev["tray_estimate_mg"] == 30_000 and ev["overcharge_estimate_fen"] == 84  # 30 g
    assert f.dedup_key == f"tare-omission:s-1:{market_day(T + 11 * 60_000)}"
    # three untared sales in a row against the habit: high, its own key
    fs = judge([*tared, tray_sale(11, 0), tray_sale(12, 0), tray_sale(13, 0)])
    assert [(f.kind, f.severity) for f in fs] == [("tare-omission", "medium"),
                                                  ("tare-omission", "high")]
    assert fs[1].dedup_key.endswith(":persistent") and fs[1].evidence["habit"]["breaks"] == 3


def test_a_plu_the_merchant_never_tares_is_not_accused() -> None:
    # pork in trays (tared), ribs sold in a bag (never tared): the ribs say nothing
    mixed = [tray_sale(i, 30_000) if i % 2 else tray_sale(i, 0, plu="302") for i in range(1, 21)]
    assert kinds(judge(mixed)) == ["untared-tray-goods"]
    # a forgotten tare on the pork after ribs: one break, not three
    (f,) = judge([*mixed, tray_sale(21, 0, plu="302"), tray_sale(22, 0)])
    assert f.severity == "medium" and f.evidence["habit"]["breaks"] == 1


def test_a_new_plu_is_judged_by_the_merchants_tray_habit() -> None:
    tared = [tray_sale(i, 30_000) for i in range(1, 6)]
    (f,) = judge([*tared, tray_sale(6, 0, plu="302")])  # first ribs ever, untared
    assert f.kind == "tare-omission" and f.evidence["habit"]["basis"] == "merchant"
    assert kinds(judge([tray_sale(1, 30_000), tray_sale(2, 0)])) == ["untared-tray-goods"]


def test_yesterdays_habit_is_not_todays_evidence() -> None:
    # an unregistered shared scale: yesterday's merchant tared, today's sells without trays
    day = 86_400_000
    yesterday = [tray_sale(i, 30_000) | {"ts_ms": T + i * 60_000 - day} for i in range(1, 11)]
    assert kinds(judge([*yesterday, tray_sale(11, 0)])) == ["untared-tray-goods"]


def test_a_weak_habit_or_an_implausible_weight_is_an_observation() -> None:
    half = [tray_sale(i, 30_000 if i % 2 else 0) for i in range(1, 11)]  # tares half the time
    assert kinds(judge([*half, tray_sale(11, 0)])) == ["untared-tray-goods"]
    tared = [tray_sale(i, 30_000) for i in range(1, 11)]
    # 120 g on the pan: less than 20 e of goods once a 30 g tray is taken off
    assert kinds(judge([*tared, tray_sale(11, 0, net_mg=120_000, settled_mg=120_000,
                                          peak_mg=120_000, amount_fen=34)])) == [
        "untared-tray-goods"]


def test_fleet_tray_cheat_is_found_on_its_first_untared_sale() -> None:
    # simulators/fleet.py "tray-not-tared": every tray sale tared (15-45 g trays), then none
    rng = random.Random(5)
    for _ in range(200):
        before = [tray_sale(i, rng.randint(3, 9) * 5_000, plu=rng.choice(("301", "302")))
                  for i in range(1, rng.randint(4, 30))]
        first = tray_sale(len(before) + 1, 0, plu=rng.choice(("301", "302")))
        assert kinds(judge([*before, first])) == ["tare-omission"]


def test_time_shift_changes_nothing_but_the_day() -> None:
    tared = [tray_sale(i, 30_000) for i in range(1, 11)]
    fs = judge([*tared, tray_sale(11, 0)])
    shifted = [r | {"ts_ms": int(r["ts_ms"]) + 86_400_000} for r in [*tared, tray_sale(11, 0)]]
    gs = judge(shifted)
    assert [(f.kind, f.severity, dict(f.evidence)) for f in fs] == [
        (g.kind, g.severity, dict(g.evidence)) for g in gs]


@given(st.integers(100_000, 15_000_000), st.integers(1, 50_000),
       st.sampled_from(LAWFUL_AMOUNT_ROUNDINGS), st.sampled_from([5_000, 2_000, 10_000]))
def test_any_lawful_rounding_passes_and_an_overcharge_does_not(
        net_mg: int, price: int, rounding: AmountRounding, e_mg: int) -> None:
    sc = ScaleCtx("s-1", "m1", e_mg=e_mg, max_mg=30_000_000)
    net = net_mg // e_mg * e_mg
    s = sale(net_mg=net, settled_mg=net, peak_mg=net, unit_price_fen_per_kg=price)
    lawful = rounded_amount_fen(net, price, rounding)
    assert "amount-mismatch" not in kinds(check_sale(s | {"amount_fen": lawful}, sc))
    # below every rounding: in the consumer's favour
    assert "amount-mismatch" not in kinds(check_sale(s | {"amount_fen": max(0, lawful - 7)}, sc))
    most = max_lawful_amount_fen(net, price, e_mg=e_mg)
    (f,) = [f for f in check_sale(s | {"amount_fen": most + 1}, sc)
            if f.kind == "amount-mismatch"]
    assert f.evidence["overcharge_fen"] == 1 and f.evidence["max_lawful_amount_fen"] == most


def test_amount_rounded_to_the_jiao_or_down_is_lawful() -> None:
    # 1.25 kg x 12.36 = 15.45 yuan: 15.50 (jiao, half up) and 15.40 (jiao, down) are lawful
    s = sale(unit_price_fen_per_kg=1_236)
    for amount in (1_545, 1_550, 1_540, 1_500):
        assert check_sale(s | {"amount_fen": amount}, SC) == []
    (f,) = check_sale(s | {"amount_fen": 1_551}, SC)
    assert f.kind == "amount-mismatch" and f.evidence["max_lawful_amount_fen"] == 1_550


def test_art3_scale_too_coarse_for_dear_goods() -> None:
    # domain.md §2.3 Art. 3: a 15 kg / 5 g scale (±5 g in service) may not sell goods above
    # 100 元/kg (and, weight by weight, not 30-100 元/kg below 1 kg: 2 g allowed)
    f = check_sale(sale(unit_price_fen_per_kg=12_000, amount_fen=15_000), SC)
    assert kinds(f) == ["scale-too-coarse"]
    assert f[0].evidence["negative_deviation_mg"] == 2_000
    fine = ScaleCtx("s-2", "m1", e_mg=1_000, max_mg=3_000_000)  # 3 kg / 1 g
    assert check_sale(sale(unit_price_fen_per_kg=12_000, amount_fen=15_000), fine) == []


def test_zero_offset_beyond_quarter_e() -> None:
    ok = {"ts_ms": T, "seq": 1, "mean_mg": 1_250, "spread_mg": 0, "n": 40, "duration_ms": 5_000}
    assert check_zero(ok, SC) == []  # exactly 0.25 e: within zero-setting accuracy
    bad = ok | {"mean_mg": 1_251}
    (f,) = check_zero(bad, SC)
    assert f.kind == "zero-offset" and f.evidence["limit_mg"] == "1250"
    assert check_zero(bad | {"duration_ms": 500}, SC) == []  # too short to judge


def test_counter_change_needs_a_registered_repair() -> None:
    ev = {"ts_ms": T, "seq": 9, "name": "cal_counter", "old": "41", "new": "42"}
    (f,) = check_counter(ev, SC, repair_times_ms=[])
    assert f.kind == "calibration-change" and f.severity == "critical"
    assert check_counter(ev, SC, repair_times_ms=[T - 3_600_000]) == []
    assert kinds(check_counter(ev, SC, repair_times_ms=[T - 3 * 86_400_000])) == [
        "calibration-change"]


def test_first_counter_report_is_the_baseline() -> None:
    # the agent's first report of a counter (edge_agent: old=None) accuses nobody
    first = {"ts_ms": T, "seq": 9, "name": "cal_counter", "old": None, "new": "42"}
    assert check_counter(first, SC, repair_times_ms=[]) == []
    # an agent that lost its memory reports old=None again: the server's last value decides
    assert check_counter(first, SC, repair_times_ms=[], last_known="42") == []
    (f,) = check_counter(first, SC, repair_times_ms=[], last_known="41")
    assert f.severity == "critical" and f.evidence["server_last_value"] == "41"
    assert check_counter(first, SC, repair_times_ms=[T - 60_000], last_known="41") == []
    # the agent's own old value is a known baseline whatever the server stored
    changed = first | {"old": "41"}
    assert kinds(check_counter(changed, SC, repair_times_ms=[])) == ["calibration-change"]


def test_idle_scale_judged_against_its_own_share() -> None:
    scales = {f"s-{i}": ScaleCtx(f"s-{i}", "m1", 5_000, 15_000_000) for i in range(6)}
    before = {"s-0": 30, "s-1": 28, "s-2": 31, "s-3": 12, "s-4": 30, "s-5": 4}
    # s-4 stops selling (its stall trades on another scale); s-3 always sells little;
    # s-5 has too little history to judge
    now = {"s-0": 29, "s-1": 30, "s-2": 33, "s-3": 10, "s-4": 0, "s-5": 0}
    (f,) = check_idle_scales(now, before, scales, window_end_ms=T)
    assert f.device == "s-4" and f.evidence["sales"] == 0 and f.evidence["expected"] > 12
    assert float(f.evidence["p_value"]) < 1e-6
    # the whole market slowing down (closing time) flags nobody
    quiet = {d: n // 6 for d, n in before.items()}
    assert check_idle_scales(quiet, before, scales, window_end_ms=T) == []


def test_poisson_tail() -> None:
    from gateway_server.detect.rules.idle import poisson_cdf

    assert abs(poisson_cdf(0, 2.0) - 0.1353352832366127) < 1e-12
    assert abs(poisson_cdf(3, 2.0) - 0.8571234604985472) < 1e-12
    assert poisson_cdf(5, 0.0) == 1.0


def test_binomial_tail() -> None:
    from gateway_server.detect.rules.idle import binomial_cdf

    assert abs(binomial_cdf(0, 20, 0.5) - 0.5**20) < 1e-18
    assert abs(binomial_cdf(20, 20, 0.3) - 1.0) < 1e-12
    assert abs(binomial_cdf(2, 5, 0.5) - 0.5) < 1e-12
