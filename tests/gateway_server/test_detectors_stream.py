"""Pure stream rules: each cheat of domain.md §4 gives its finding; honest data gives none."""

from __future__ import annotations

from gateway_server.detectors.stream import (
    RegisteredPrice,
    ScaleCtx,
    check_counter,
    check_idle_scales,
    check_sale,
    check_zero,
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


def test_tray_omission_only_for_tray_goods() -> None:
    meat = RegisteredPrice("301", 2_800, "meat")
    f = check_sale(sale(plu="301", unit_price_fen_per_kg=2_800, amount_fen=3_500), SC,
                   price=meat)
    assert kinds(f) == ["tare-omission"]
    assert check_sale(sale(plu="301", unit_price_fen_per_kg=2_800, amount_fen=3_500,
                           tare_mg=20_000), SC, price=meat) == []


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
    from gateway_server.detectors.stream import poisson_cdf

    assert abs(poisson_cdf(0, 2.0) - 0.1353352832366127) < 1e-12
    assert abs(poisson_cdf(3, 2.0) - 0.8571234604985472) < 1e-12
    assert poisson_cdf(5, 0.0) == 1.0


def test_binomial_tail() -> None:
    from gateway_server.detectors.stream import binomial_cdf

    assert abs(binomial_cdf(0, 20, 0.5) - 0.5**20) < 1e-18
    assert abs(binomial_cdf(20, 20, 0.3) - 1.0) < 1e-12
    assert abs(binomial_cdf(2, 5, 0.5) - 0.5) < 1e-12
