"""The pure rule for re-weighs named by the stall (gateway_server.detect.rules.untraced)."""

from __future__ import annotations

from gateway_server.detect.rules.stream import ScaleCtx
from gateway_server.detect.rules.untraced import (
    Candidate,
    StallReweigh,
    UntracedParams,
    best_match,
    check_untracked,
    tolerance_mg,
)

SELLING = ScaleCtx("s-1", "m1", 5_000, 15_000_000)  # 15 kg / 5 g, class III
FAIR = ScaleCtx("f-1", "m1", 1_000, 6_000_000, role="fair")  # 6 kg / 1 g
P = UntracedParams()


def test_tolerance_is_the_legal_envelope_plus_the_goods_noise() -> None:
    # 1 kg: selling scale at 200 e → in-service MPE 1 e = 5 g, + ½ e = 7.5 g; fair scale at
    # ~1,000 e → 2 e = 2 g, + ½ e = 2.5 g (JJG 539 / R76, in service = 2 × verification);
    # H = 10 g, plus noise_e = 4 e of the selling scale = 20 g
    assert tolerance_mg(1_000_000, selling=SELLING, fair=FAIR) == 30_000
    # 3 kg: selling scale at 600 e → 2 e = 10 g + 2.5 g; fair at 3,000 e → 3 e + 0.5 e
    assert tolerance_mg(3_000_000, selling=SELLING, fair=FAIR) == 12_500 + 3_500 + 20_000
    # a coarser fair scale of unknown class: the selling scale's own e stands in
    assert tolerance_mg(1_000_000, selling=SELLING, fair=None) == 7_500 + 7_500 + 20_000
    assert tolerance_mg(1_000_000, selling=SELLING, fair=FAIR,
                        params=UntracedParams(noise_e=0)) == 10_000


def test_tolerance_with_a_class_ii_fair_scale() -> None:
    # 15 kg / 1 g class II fair scale: ±1 g in service to 5 kg (OIML R76-1 Table 6), + 0.5 g.
    # Before issue 14 its envelope raised and the tolerance fell to the noise allowance alone.
    fair_ii = ScaleCtx("f-2", "m1", 1_000, 15_000_000, accuracy_class="II", role="fair")
    assert tolerance_mg(1_000_000, selling=SELLING, fair=fair_ii) == 7_500 + 1_500 + 20_000


def cand(i: int, ts: int, mg: int, device: str = "s-1") -> Candidate:
    return Candidate(i, device, ts, mg)


def test_the_closest_sale_within_tolerance_explains_the_reweigh() -> None:
    tol = {"s-1": 30_000}
    got = best_match(1_000_000, [cand(1, 0, 1_040_000), cand(2, 10**7, 985_000),
                                 cand(3, 2 * 10**7, 1_020_000)], tol)
    assert got is not None and got.sale_ids == (2,) and got.difference_mg == -15_000
    assert got.tolerance_mg == 30_000
    assert best_match(1_000_000, [cand(1, 0, 1_040_000), cand(2, 10**7, 960_000)], tol) is None
    assert best_match(1_000_000, [], tol) is None


def test_two_sales_close_together_may_be_one_basket() -> None:
    tol = {"s-1": 30_000, "s-2": 30_000}
    basket = [cand(1, 0, 600_000), cand(2, 120_000, 400_000, "s-2")]
    got = best_match(1_000_000, basket, tol)
    assert got is not None and got.sale_ids == (1, 2) and got.tolerance_mg == 60_000
    far_apart = [cand(1, 0, 600_000), cand(2, P.basket_gap_ms + 1, 400_000)]
    assert best_match(1_000_000, far_apart, tol) is None


def rw(i: int, ts: int, untracked: bool) -> StallReweigh:
    return StallReweigh(i, ts, "f-1", 900_000, untracked)


def test_merchant_rule_needs_two_unexplained_reweighs_that_dominate() -> None:
    h = 3_600_000
    one = [rw(1, 0, True), rw(2, h, False)]
    assert check_untracked(one, merchant_id=7, scale=SELLING, recorded_sales={}) is None
    # two unexplained but drowned among explained ones (lost receipts): an honest stall
    # where consumers twice picked the wrong stall number
    drowned = [rw(1, 0, True), rw(2, h, True)] + [rw(i, i * h // 4, False) for i in range(3, 8)]
    assert check_untracked(drowned, merchant_id=7, scale=SELLING, recorded_sales={}) is None
    # two unexplained a day apart are two windows
    apart = [rw(1, 0, True), rw(2, P.window_ms + 1, True)]
    assert check_untracked(apart, merchant_id=7, scale=SELLING, recorded_sales={}) is None
    cheat = [rw(1, 0, True), rw(2, h, False), rw(3, 2 * h, True), rw(4, 3 * h, True)]
    f = check_untracked(cheat, merchant_id=7, scale=SELLING, recorded_sales={"s-1": 3})
    assert f is not None
    assert (f.kind, f.device, f.merchant_id, f.severity) == ("untracked-sales", "s-1", 7, "high")
    assert f.ts_ms == 2 * h  # raised by the second unexplained re-weigh
    assert f.evidence["untracked"] == 3 and f.evidence["stall_named_reweighs"] == 4
    assert f.evidence["recorded_sales"] == {"s-1": 3}
    assert [r["id"] for r in f.evidence["reweighs"]] == [1, 3, 4]
    assert "计量法" in f.legal_basis
    # the same first re-weigh day: the same dedup key however many follow
    more = check_untracked([*cheat, rw(5, 4 * h, True)], merchant_id=7, scale=SELLING,
                           recorded_sales={})
    assert more is not None and more.dedup_key == f.dedup_key
