"""Every number of domain.md §2, its band edges, and properties of the legal tables."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, strategies as st

from weighing.errors import GatewayError
from weighing.metrology import (
    FRAUD_COMPENSATION_MIN_FEN,
    MAX_SHORT_WEIGHT_FINE_FEN,
    VERIFICATION_PERIOD_MAX_MONTHS,
    AccuracyClass,
    GoodsCategory,
    Instrument,
    MetrologyError,
    MultiKind,
    ReweighMethod,
    ReweighVerdict,
    ScaleClassError,
    Stage,
    ZeroTrackingLimits,
    band_edges_mg,
    changeover_error,
    check_scale,
    fraud_compensation_fen,
    initial_zero_setting_range_ok,
    judge_reweigh,
    min_capacity_e,
    mpe_for_ranges,
    mpe_mg,
    prepackage_tolerable_error_mg,
    repeatability_ok,
    retail_negative_deviation_mg,
    reweigh_limit_mg,
    reweigh_threshold_mg,
    rounding_uncertainty_mg,
    scale_suits_goods,
    tare_accuracy_mg,
    zero_setting_accuracy_mg,
    zero_tracking_permits,
)

G = 1_000
KG = 1_000_000
I_ = AccuracyClass.I
II = AccuracyClass.II
III = AccuracyClass.III
IIII = AccuracyClass.IIII
INIT = Stage.INITIAL_VERIFICATION
SUBS = Stage.SUBSEQUENT_VERIFICATION
SERV = Stage.IN_SERVICE
C = GoodsCategory

# --- §2.1 accuracy classes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_mg", "e_mg", "cls", "n", "min_mg"),
    [
        (10 * G, 100, III, 100, 2 * G),  # e = 0.1 g, n = 100: lower corner of row 1
        (20 * KG, 2 * G, III, 10_000, 40 * G),  # e = 2 g, n = 10,000: upper corner
        (2_500 * G, 5 * G, III, 500, 100 * G),  # e = 5 g, n = 500: row 2 lower corner
        (50 * KG, 5 * G, III, 10_000, 100 * G),
        (15 * KG, 5 * G, III, 3_000, 100 * G),  # the worked examples
        (30 * KG, 10 * G, III, 3_000, 200 * G),
        (6 * KG, 2 * G, III, 3_000, 40 * G),
        (500 * G, 5 * G, IIII, 100, 50 * G),  # IIII: n 100–1,000, Min 10 e
        (5 * KG, 5 * G, IIII, 1_000, 50 * G),
        # OIML R76-1 Table 3, classes I and II (domain.md §2.2)
        (15 * KG, 1 * G, II, 15_000, 50 * G),  # the usual fair scale: II, not III; Min 50 e
        (500 * G, 100, II, 5_000, 5 * G),  # e = 0.1 g, n = 5,000: row 2 lower corner
        (10 * KG, 100, II, 100_000, 5 * G),  # n = 100,000: upper corner
        (100, 1, II, 100, 20),  # e = 1 mg, n = 100: row 1 lower corner, Min 20 e
        (5 * KG, 50, II, 100_000, 1 * G),  # e = 50 mg, n = 100,000
        (220 * G, 1, I_, 220_000, 100),  # analytical balance 220 g / 1 mg, Min 100 e
        (50 * G, 1, I_, 50_000, 100),  # n = 50,000: the smallest class I n
        (10 * KG, 1, I_, 10_000_000, 100),  # class I has no largest n
    ],
)
def test_valid_scales(max_mg: int, e_mg: int, cls: AccuracyClass, n: int, min_mg: int) -> None:
    spec = check_scale(max_mg, e_mg, cls)
    assert (spec.n, spec.min_capacity_mg) == (n, min_mg)


@pytest.mark.parametrize(
    ("max_mg", "e_mg", "cls", "fragment"),
    [
        (9_900, 100, III, "n = Max/e = 99"),  # n < 100
        (20 * KG + 2 * G, 2 * G, III, "n = Max/e = 10001"),
        (2_495 * G, 5 * G, III, "n = Max/e = 499"),  # e ≥ 5 g needs n ≥ 500
        (50 * KG + 5 * G, 5 * G, III, "n = Max/e = 10001"),
        (10 * G, 99, III, "e = 99 mg is outside"),  # e < 0.1 g
        (10 * KG, 2_500, III, "e = 2500 mg is outside"),  # 2 g < e < 5 g
        (495 * G, 5 * G, IIII, "n = Max/e = 99"),
        (5 * KG + 5 * G, 5 * G, IIII, "n = Max/e = 1001"),
        (15 * KG, 5 * G, IIII, "n = Max/e = 3000"),
        (1 * KG, 2 * G, IIII, "e = 2000 mg is outside"),  # IIII needs e ≥ 5 g
        (15 * KG + 1, 5 * G, III, "not a whole number of e"),
        (15 * KG, 5 * G, II, "n = Max/e = 3000 outside 5000–100000"),  # II needs n ≥ 5,000
        (150 * KG + 1 * G, 1 * G, II, "n = Max/e = 150001"),
        (99, 1, II, "n = Max/e = 99"),
        (49_999, 1, I_, "n = Max/e = 49999 outside 50000–"),
        (1 * KG, 75, II, "e = 75 mg is outside"),  # 50 mg < e < 100 mg: no row
    ],
)
def test_invalid_scales(max_mg: int, e_mg: int, cls: AccuracyClass, fragment: str) -> None:
    with pytest.raises(ScaleClassError) as info:
        check_scale(max_mg, e_mg, cls)
    assert any(fragment in r for r in info.value.reasons)
    assert isinstance(info.value, GatewayError) and isinstance(info.value, ValueError)


def test_unknown_class_raises() -> None:
    with pytest.raises(MetrologyError, match="not supported"):
        mpe_mg(1 * G, e_mg=1, accuracy_class="X", stage=INIT)  # type: ignore[arg-type]
    with pytest.raises(MetrologyError, match="not supported"):
        check_scale(1 * KG, 1, "X")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("e_mg", "cls", "min_e"),
    [(1, I_, 100), (10, II, 20), (50, II, 20), (100, II, 50), (1 * G, II, 50),
     (100, III, 20), (5 * G, III, 20), (5 * G, IIII, 10)],
)
def test_min_capacity_by_row(e_mg: int, cls: AccuracyClass, min_e: int) -> None:
    assert min_capacity_e(e_mg, cls) == min_e


def test_min_capacity_outside_every_row_raises() -> None:
    with pytest.raises(MetrologyError, match="outside every class III row"):
        min_capacity_e(2_500, III)


# --- §2.2 MPE -------------------------------------------------------------------------------


HALF, ONE, ONE_HALF = Fraction(1, 2), Fraction(1), Fraction(3, 2)


@pytest.mark.parametrize(
    ("cls", "load_e", "mpe_e", "next_mpe_e"),
    [  # next_mpe_e: the MPE one milligram above; None: the end of the table
        (III, 0, HALF, HALF),
        (III, 500, HALF, ONE),  # boundary belongs to the lower band
        (III, 2_000, ONE, ONE_HALF),
        (III, 10_000, ONE_HALF, None),
        (IIII, 0, HALF, HALF),
        (IIII, 50, HALF, ONE),
        (IIII, 200, ONE, ONE_HALF),
        (IIII, 1_000, ONE_HALF, None),
        # OIML R76-1 Table 6 (domain.md §2.2): the same steps, wider bands
        (II, 0, HALF, HALF),
        (II, 5_000, HALF, ONE),
        (II, 20_000, ONE, ONE_HALF),
        (II, 100_000, ONE_HALF, None),
        (I_, 0, HALF, HALF),
        (I_, 50_000, HALF, ONE),
        (I_, 200_000, ONE, ONE_HALF),
        (I_, 10**9, ONE_HALF, ONE_HALF),  # class I has no end
    ],
)
def test_mpe_bands_and_edges(
    cls: AccuracyClass, load_e: int, mpe_e: Fraction, next_mpe_e: Fraction | None
) -> None:
    e = 5 * G
    assert mpe_mg(load_e * e, e_mg=e, accuracy_class=cls, stage=INIT) == mpe_e * e
    assert mpe_mg(load_e * e, e_mg=e, accuracy_class=cls, stage=SUBS) == mpe_e * e
    assert mpe_mg(load_e * e, e_mg=e, accuracy_class=cls, stage=SERV) == 2 * mpe_e * e
    if next_mpe_e is None:
        with pytest.raises(MetrologyError, match="exceeds"):
            mpe_mg(load_e * e + 1, e_mg=e, accuracy_class=cls, stage=INIT)
    else:
        assert mpe_mg(load_e * e + 1, e_mg=e, accuracy_class=cls, stage=INIT) == next_mpe_e * e


def test_mpe_is_exact_for_small_e() -> None:
    assert mpe_mg(0, e_mg=1, accuracy_class=III, stage=INIT) == Fraction(1, 2)
    assert mpe_mg(1, e_mg=10, accuracy_class=III, stage=INIT) == 5
    assert zero_setting_accuracy_mg(10) == Fraction(5, 2)
    assert isinstance(mpe_mg(0, e_mg=10, accuracy_class=III, stage=INIT), Fraction)


def test_mpe_rejects_misuse() -> None:
    with pytest.raises(MetrologyError):
        mpe_mg(-1, e_mg=5 * G, accuracy_class=III, stage=INIT)
    with pytest.raises(MetrologyError):
        mpe_mg(0, e_mg=0, accuracy_class=III, stage=INIT)


@pytest.mark.parametrize(
    ("load_mg", "expected_mg"),
    [  # 15 kg / e = 5 g, in service: ±5 g to 2.5 kg, ±10 g to 10 kg, ±15 g to 15 kg
        (0, 5 * G),
        (2_500 * G, 5 * G),
        (2_500 * G + 1, 10 * G),
        (10 * KG, 10 * G),
        (10 * KG + 1, 15 * G),
        (15 * KG, 15 * G),
    ],
)
def test_worked_example_15kg_5g(load_mg: int, expected_mg: int) -> None:
    assert mpe_mg(load_mg, e_mg=5 * G, accuracy_class=III, stage=SERV) == expected_mg


@pytest.mark.parametrize(
    ("load_mg", "expected_mg"),
    [  # 30 kg / 10 g: ±10 / 20 / 30 g over 0–5 / 5–20 / 20–30 kg
        (0, 10 * G),
        (5 * KG, 10 * G),
        (5 * KG + 1, 20 * G),
        (20 * KG, 20 * G),
        (20 * KG + 1, 30 * G),
        (30 * KG, 30 * G),
    ],
)
def test_worked_example_30kg_10g(load_mg: int, expected_mg: int) -> None:
    assert mpe_mg(load_mg, e_mg=10 * G, accuracy_class=III, stage=SERV) == expected_mg


@pytest.mark.parametrize(
    ("load_mg", "expected_mg"),
    [  # fair scale 15 kg / 1 g, class II (n = 15,000), in service: ±1 g to 5 kg, then ±2 g
        (0, 1 * G),
        (5 * KG, 1 * G),
        (5 * KG + 1, 2 * G),
        (15 * KG, 2 * G),
    ],
)
def test_worked_example_class_ii_fair_scale(load_mg: int, expected_mg: int) -> None:
    check_scale(15 * KG, 1 * G, II)
    assert mpe_mg(load_mg, e_mg=1 * G, accuracy_class=II, stage=SERV) == expected_mg
    # read as class III the same scale would be outside its class, and ±2 g from 500 g on
    with pytest.raises(ScaleClassError):
        check_scale(15 * KG, 1 * G, III)


def test_band_edges() -> None:
    assert band_edges_mg(5 * G, III) == (2_500 * G, 10 * KG, 50 * KG)
    assert band_edges_mg(1 * G, II) == (5 * KG, 20 * KG, 100 * KG)
    assert band_edges_mg(5 * G, IIII) == (250 * G, 1 * KG, 5 * KG)
    assert band_edges_mg(1, I_) == (50 * G, 200 * G)  # no end


DUAL = [(6 * KG, 2 * G), (15 * KG, 5 * G)]


@pytest.mark.parametrize("multi", [MultiKind.INTERVAL, MultiKind.RANGE, "interval", "range"])
@pytest.mark.parametrize(
    ("load_mg", "expected_mg"),
    [  # dual 6/15 kg, e = 2/5 g: ±2/4/6 g to 1/4/6 kg, then ±10 g to 10 kg, ±15 g to 15 kg
        (0, 2 * G),
        (1 * KG, 2 * G),
        (1 * KG + 1, 4 * G),
        (4 * KG, 4 * G),
        (4 * KG + 1, 6 * G),
        (6 * KG, 6 * G),
        (6 * KG + 1, 10 * G),
        (10 * KG, 10 * G),
        (10 * KG + 1, 15 * G),
        (15 * KG, 15 * G),
    ],
)
def test_worked_example_dual_range(load_mg: int, expected_mg: int, multi: str) -> None:
    got = mpe_for_ranges(load_mg, ranges=DUAL, accuracy_class=III, stage=SERV, multi=multi)
    assert got == expected_mg


def test_multiple_range_stays_in_larger_range_until_zero() -> None:
    got = mpe_for_ranges(
        1 * KG, ranges=DUAL, accuracy_class=III, stage=SERV, multi="range", range_index=1
    )
    assert got == 5 * G  # 1 kg = 200 e of 5 g → ±1 e in service
    with pytest.raises(MetrologyError):
        mpe_for_ranges(8 * KG, ranges=DUAL, accuracy_class=III, stage=SERV, range_index=0)


@pytest.mark.parametrize(
    ("ranges", "load_mg", "multi"),
    [
        ([], 0, "interval"),
        ([(15 * KG, 5 * G), (6 * KG, 2 * G)], 0, "interval"),  # not increasing
        ([(6 * KG, 5 * G), (15 * KG, 2 * G)], 0, "interval"),  # e not increasing
        (DUAL, 15 * KG + 1, "interval"),  # above Max
        (DUAL, -1, "range"),
        (DUAL, 0, "bogus"),
    ],
)
def test_mpe_for_ranges_misuse(ranges: list[tuple[int, int]], load_mg: int, multi: str) -> None:
    with pytest.raises(MetrologyError):
        mpe_for_ranges(load_mg, ranges=ranges, accuracy_class=III, stage=SERV, multi=multi)


def test_zero_tare_and_zero_setting_range() -> None:
    assert zero_setting_accuracy_mg(5 * G) == 1_250  # ±0.25 e
    assert tare_accuracy_mg(5 * G) == 1_250
    assert initial_zero_setting_range_ok(-1 * KG, 2 * KG, max_mg=15 * KG)  # 3 kg = 20 %
    assert not initial_zero_setting_range_ok(-1 * KG, 2 * KG + 1, max_mg=15 * KG)
    with pytest.raises(MetrologyError):
        initial_zero_setting_range_ok(1, 0, max_mg=15 * KG)


def test_zero_tracking() -> None:
    e = 5 * G  # band 0.5 e = 2.5 g; rate 0.5 e/s = 2.5 g/s
    assert zero_tracking_permits(2_500, 2_500, 1_000, e_mg=e)
    assert not zero_tracking_permits(2_501, 0, 1_000, e_mg=e)
    assert not zero_tracking_permits(0, 2_501, 1_000, e_mg=e)
    assert zero_tracking_permits(0, 1_250, 500, e_mg=e)
    loose = ZeroTrackingLimits(band_e=Fraction(1), rate_e_per_s=Fraction(1))
    assert zero_tracking_permits(5_000, 5_000, 1_000, e_mg=e, limits=loose)
    with pytest.raises(MetrologyError):
        zero_tracking_permits(0, 0, 0, e_mg=e)


def test_repeatability() -> None:
    assert repeatability_ok(
        [10 * KG, 10 * KG + 5 * G], stage=INIT, load_mg=10 * KG, e_mg=5 * G, accuracy_class=III
    )  # |MPE| = 5 g
    assert not repeatability_ok(
        [10 * KG, 10 * KG + 5 * G + 1], stage=INIT, load_mg=10 * KG, e_mg=5 * G, accuracy_class=III
    )
    assert repeatability_ok(
        [10 * KG, 10 * KG + 10 * G], stage=SERV, load_mg=10 * KG, e_mg=5 * G, accuracy_class=III
    )
    with pytest.raises(MetrologyError):
        repeatability_ok([], stage=INIT, load_mg=10 * KG, e_mg=5 * G, accuracy_class=III)


def test_changeover_point_method() -> None:
    # m = 10 kg, e = 5 g, I = 10.005 kg, Δm = 3 g → P = 10.005 + 0.0025 − 0.003 = 10.0045 kg
    r = changeover_error(10_005 * G, load_mg=10 * KG, added_mg=3 * G, e_mg=5 * G)
    assert r.indication_before_rounding_mg == 10_004_500
    assert r.error_mg == 4_500
    assert r.corrected_error_mg == 4_500
    r0 = changeover_error(
        10_005 * G, load_mg=10 * KG, added_mg=3 * G, e_mg=5 * G, zero_error_mg=Fraction(1_001, 2)
    )
    assert r0.corrected_error_mg == Fraction(7_999, 2)
    odd = changeover_error(1_000, load_mg=1_000, added_mg=0, e_mg=1)
    assert odd.error_mg == Fraction(1, 2)
    assert rounding_uncertainty_mg(5 * G) == 2_500  # ±0.5 e
    with pytest.raises(MetrologyError):
        changeover_error(0, load_mg=0, added_mg=-1, e_mg=5 * G)


def test_verification_period() -> None:
    assert VERIFICATION_PERIOD_MAX_MONTHS == 12


# --- §2.3 retail -----------------------------------------------------------------------------

TABLE_A = [(1 * KG, 20 * G), (2 * KG, 40 * G), (4 * KG, 80 * G), (25 * KG, 100 * G)]
TABLE_B = [(2_500 * G, 5 * G), (10 * KG, 10 * G), (15 * KG, 15 * G)]
TABLE_C = [(1 * KG, 2 * G), (4 * KG, 4 * G), (6 * KG, 6 * G)]
TABLE_D = [(500 * G, 1 * G), (2 * KG, 2 * G), (5 * KG, 3 * G)]
GROUPS = [
    ([C.GRAIN, C.VEGETABLES, C.FRUIT], [0, 1, 600], TABLE_A),
    (
        [C.MEAT, C.EGGS, C.POULTRY, C.AQUATIC_PRODUCTS, C.PASTRY, C.CANDY, C.CONDIMENTS],
        [601, 3_000],
        TABLE_B,
    ),
    ([C.DRIED_VEGETABLES, C.DELICACIES], [3_001, 10_000], TABLE_C),
    ([], [10_001, 1_000_000], TABLE_D),
]
EDGE_CASES = [
    (kind, key, weight, expected)
    for categories, prices, table in GROUPS
    for kind, keys in (("category", categories), ("price", prices))
    for key in keys
    for i, (upper, dev) in enumerate(table)
    for weight, expected in (
        (upper, dev),  # the edge belongs to this band
        (upper + 1, table[i + 1][1] if i + 1 < len(table) else None),  # beyond → next / none
        (0 if i == 0 else table[i - 1][0] + 1, dev),  # the first mg of this band
    )
]


@pytest.mark.parametrize(("kind", "key", "weight_mg", "expected_mg"), EDGE_CASES)
def test_retail_band_edges(kind: str, key: object, weight_mg: int, expected_mg: int | None) -> None:
    if kind == "category":
        assert isinstance(key, GoodsCategory)
        got = retail_negative_deviation_mg(weight_mg, category=key)
    else:
        assert isinstance(key, int)
        got = retail_negative_deviation_mg(weight_mg, unit_price_fen_per_kg=key)
    assert got == expected_mg


@pytest.mark.parametrize(
    ("category", "weight_mg", "expected_mg"),
    [
        (C.GOLD, 100 * G, 10),  # 附表2: ≤ 100 g per piece, 0.01 g
        (C.GOLD, 1, 10),
        (C.GOLD, 100 * G + 1, None),
        (C.SILVER, 100 * G, 100),  # 0.1 g
        (C.SILVER, 100 * G + 1, None),
        (C.LIVE_POULTRY, 1 * KG, None),  # 活禽、活鱼、水发物 excluded
        (C.LIVE_FISH, 1 * KG, None),
        (C.WATER_SOAKED, 1 * KG, None),
    ],
)
def test_retail_table2_and_exclusions(
    category: GoodsCategory, weight_mg: int, expected_mg: int | None
) -> None:
    assert retail_negative_deviation_mg(weight_mg, category=category) == expected_mg


def test_category_wins_over_price() -> None:
    # vegetables at 150 元/kg are still 附表1 row 1; live fish at 2 元/kg still has no rule
    assert (
        retail_negative_deviation_mg(1 * KG, category=C.VEGETABLES, unit_price_fen_per_kg=15_000)
        == 20 * G
    )
    assert retail_negative_deviation_mg(1 * KG, unit_price_fen_per_kg=15_000) == 2 * G
    assert (
        retail_negative_deviation_mg(1 * KG, category=C.LIVE_FISH, unit_price_fen_per_kg=200)
        is None
    )
    assert retail_negative_deviation_mg(10 * G, category=C.GOLD, unit_price_fen_per_kg=15_000) == 10


def test_retail_misuse() -> None:
    with pytest.raises(MetrologyError):
        retail_negative_deviation_mg(1 * KG)
    with pytest.raises(MetrologyError):
        retail_negative_deviation_mg(-1, category=C.FRUIT)
    with pytest.raises(MetrologyError):
        retail_negative_deviation_mg(1, unit_price_fen_per_kg=-1)


def test_reweigh_limits() -> None:
    assert reweigh_limit_mg(2 * KG, method=ReweighMethod.ORIGINAL_SCALE, category=C.MEAT) == 5 * G
    assert (
        reweigh_limit_mg(2 * KG, method=ReweighMethod.MORE_ACCURATE_SCALE, category=C.MEAT) == 5 * G
    )
    assert (
        reweigh_limit_mg(2 * KG, method=ReweighMethod.EQUAL_ACCURACY_SCALE, category=C.MEAT)
        == 10 * G
    )
    assert reweigh_limit_mg(20 * KG, method=ReweighMethod.ORIGINAL_SCALE, category=C.MEAT) is None


@pytest.mark.parametrize(
    ("reweighed_mg", "method", "shortfall", "limit", "verdict"),
    [
        (1_995 * G, ReweighMethod.ORIGINAL_SCALE, 5 * G, 5 * G, ReweighVerdict.OK),
        (1_995 * G - 1, ReweighMethod.ORIGINAL_SCALE, 5 * G + 1, 5 * G, ReweighVerdict.VIOLATION),
        (1_990 * G, ReweighMethod.EQUAL_ACCURACY_SCALE, 10 * G, 10 * G, ReweighVerdict.OK),
        (
            1_990 * G - 1,
            ReweighMethod.EQUAL_ACCURACY_SCALE,
            10_001,
            10 * G,
            ReweighVerdict.VIOLATION,
        ),
        (2_100 * G, ReweighMethod.MORE_ACCURATE_SCALE, -100 * G, 5 * G, ReweighVerdict.OK),
    ],
)
def test_judge_reweigh(
    reweighed_mg: int, method: ReweighMethod, shortfall: int, limit: int, verdict: ReweighVerdict
) -> None:
    j = judge_reweigh(2 * KG, reweighed_mg, method=method, unit_price_fen_per_kg=2_800)
    assert (j.shortfall_mg, j.limit_mg, j.verdict) == (shortfall, limit, verdict)


def test_judge_reweigh_no_rule() -> None:
    j = judge_reweigh(
        2 * KG, 1 * KG, method=ReweighMethod.EQUAL_ACCURACY_SCALE, category=C.LIVE_POULTRY
    )
    assert (j.shortfall_mg, j.limit_mg, j.verdict) == (1 * KG, None, ReweighVerdict.NO_RULE)


# --- a single re-weigh: the law's limit plus what the instruments may err by ----------------

S5 = Instrument(5 * G, III)  # 15 kg / 5 g selling scale, in service
FAIR_1G_III = Instrument(1 * G, III)  # 6 kg / 1 g fair scale (tests/gateway_server fixture)
FAIR_1G_II = Instrument(1 * G, II)  # 15 kg / 1 g class II fair scale
FAIR_5G = Instrument(5 * G, III)  # 30 kg / 5 g fair scale: equal accuracy
MORE, EQUAL = ReweighMethod.MORE_ACCURATE_SCALE, ReweighMethod.EQUAL_ACCURACY_SCALE


def test_issue_14_honest_fish_scale_six_grams_short_is_no_violation() -> None:
    # 1.25 kg of fish (附表1 row 2: 5 g) on an honest 5 g scale, 6 g short on a 1 g fair
    # scale: Art. 6 alone says violation (5 g); the 5 g display rounds by 2.5 g and the fair
    # scale may err by its in-service MPE (2 g at 1.25 kg, class III) plus 0.5 g.
    plain = judge_reweigh(1_250 * G, 1_244 * G, method=MORE, category=C.AQUATIC_PRODUCTS)
    assert plain.verdict is ReweighVerdict.VIOLATION
    j = judge_reweigh(1_250 * G, 1_244 * G, method=MORE, category=C.AQUATIC_PRODUCTS,
                      selling=S5, reference=FAIR_1G_III)
    assert (j.shortfall_mg, j.limit_mg, j.threshold_mg) == (6 * G, 5 * G, 10 * G)
    assert j.verdict is ReweighVerdict.OK
    # a class II fair scale errs by 1 g there: 5 + 2.5 + 1 + 0.5
    assert reweigh_threshold_mg(1_250 * G, 1_244 * G, method=MORE, selling=S5,
                                reference=FAIR_1G_II, category=C.AQUATIC_PRODUCTS) == 9 * G


@pytest.mark.parametrize("reference", [FAIR_1G_III, FAIR_1G_II, FAIR_5G])
def test_a_five_percent_gain_on_a_kilogram_of_meat_is_still_a_violation(
    reference: Instrument
) -> None:
    method = MORE if reference.e_mg < S5.e_mg else EQUAL
    j = judge_reweigh(1_050 * G, 1 * KG, method=method, category=C.MEAT, selling=S5,
                      reference=reference)
    assert j.verdict is ReweighVerdict.VIOLATION and j.threshold_mg is not None
    assert j.threshold_mg <= 15 * G < j.shortfall_mg == 50 * G


@pytest.mark.parametrize(
    ("sold_mg", "reweighed_mg", "method", "reference", "threshold"),
    [
        # equal accuracy: Art. 6's 2 × 5 g covers both MPEs (5 g each); + 2 × 2.5 g rounding
        (1 * KG, 985 * G, EQUAL, FAIR_5G, Fraction(15 * G)),
        # the fair scale coarser than the law's second deviation: its own MPE (10 g) counts
        (1 * KG, 985 * G, EQUAL, Instrument(10 * G, III), Fraction(5 * G + 2_500 + 10 * G + 5 * G)),
        # standard weights (an inspector's): no reference error, the selling display only
        (1 * KG, 985 * G, MORE, None, Fraction(7_500)),
        # vegetables, 20 g: the fair scale's error (2 g + 0.5 g) on top of 20 g + 2.5 g
        (1 * KG, 980 * G, MORE, FAIR_1G_III, Fraction(25 * G)),
        # a reading beyond the fair scale's table (10,000 e): its last band (±3 e), no error
        (11 * KG, 10_990 * G, MORE, FAIR_1G_III, Fraction(15 * G + 2_500 + 3 * G + 500)),
        # a class I balance, e = 1 mg (199,004 e: ±2 e in service): half-mg rounding is exact
        (200 * G, 199 * G, MORE, Instrument(1, I_), 5 * G + 2_500 + 2 + Fraction(1, 2)),
    ],
)
def test_reweigh_thresholds(sold_mg: int, reweighed_mg: int, method: ReweighMethod,
                            reference: Instrument | None, threshold: Fraction) -> None:
    category = C.VEGETABLES if reweighed_mg == 980 * G else C.MEAT
    got = reweigh_threshold_mg(sold_mg, reweighed_mg, method=method, selling=S5,
                               reference=reference, category=category)
    assert got == threshold
    ok = judge_reweigh(sold_mg, sold_mg - math.floor(threshold), method=method,
                       category=category, selling=S5, reference=reference)
    assert ok.verdict is ReweighVerdict.OK
    bad = judge_reweigh(sold_mg, sold_mg - math.floor(threshold) - 1, method=method,
                        category=category, selling=S5, reference=reference)
    assert bad.verdict is ReweighVerdict.VIOLATION


def test_reweigh_threshold_no_rule_and_misuse() -> None:
    assert reweigh_threshold_mg(1 * KG, 1 * KG, method=EQUAL, selling=S5, reference=FAIR_5G,
                                category=C.LIVE_FISH) is None
    j = judge_reweigh(1 * KG, 900 * G, method=EQUAL, category=C.LIVE_FISH, selling=S5,
                      reference=FAIR_5G)
    assert (j.verdict, j.limit_mg, j.threshold_mg) == (ReweighVerdict.NO_RULE, None, None)
    with pytest.raises(MetrologyError):
        reweigh_threshold_mg(1 * KG, 1 * KG, method=EQUAL, selling=Instrument(0, III),
                             reference=FAIR_5G, category=C.MEAT)


def test_art3_domain_example() -> None:
    # a 15 kg / 5 g scale (±5 g in service) may not sell goods above 100 元/kg
    for price in (10_001, 50_000):
        assert not scale_suits_goods(5 * G, 15 * KG, III, unit_price_fen_per_kg=price)
    # its in-service MPE equals 附表1 row 2 step for step, so 6–30 元/kg goods suit it …
    assert scale_suits_goods(5 * G, 15 * KG, III, unit_price_fen_per_kg=3_000)
    assert scale_suits_goods(5 * G, 15 * KG, III, category=C.MEAT)
    # … and 30–100 元/kg goods do not (2 g allowed at 1 kg against ±5 g)
    assert not scale_suits_goods(5 * G, 15 * KG, III, unit_price_fen_per_kg=3_001)
    assert not scale_suits_goods(5 * G, 15 * KG, III, unit_price_fen_per_kg=10_000)
    assert scale_suits_goods(5 * G, 15 * KG, III, unit_price_fen_per_kg=600)
    assert scale_suits_goods(5 * G, 15 * KG, III, category=C.LIVE_FISH)  # no rule
    assert not scale_suits_goods(5 * G, 15 * KG, III, category=C.GOLD)


@pytest.mark.parametrize(
    ("max_mg", "e_mg", "dearest_suitable_fen_per_kg"),
    [  # each 附表1 row is the in-service MPE of a common scale, step for step
        (30 * KG, 10 * G, 600),  # ±10/20/30 g is within row 1 (20/40/80/100 g) only
        (15 * KG, 5 * G, 3_000),  # ±5/10/15 g to 2.5/10/15 kg = row 2
        (6 * KG, 2 * G, 10_000),  # ±2/4/6 g to 1/4/6 kg = row 3
        (3 * KG, 1 * G, None),  # ±1/2/3 g to 0.5/2/3 kg = row 4: suits everything
    ],
)
def test_art3_price_threshold(
    max_mg: int, e_mg: int, dearest_suitable_fen_per_kg: int | None
) -> None:
    for price in (0, 600, 601, 3_000, 3_001, 10_000, 10_001, 100_000):
        suits = scale_suits_goods(e_mg, max_mg, III, unit_price_fen_per_kg=price)
        expected = dearest_suitable_fen_per_kg is None or price <= dearest_suitable_fen_per_kg
        assert suits == expected


def test_art3_at_a_weight() -> None:
    assert not scale_suits_goods(
        5 * G, 15 * KG, III, weight_mg=1 * KG, unit_price_fen_per_kg=5_000
    )  # 5 g > 2 g
    assert scale_suits_goods(
        2 * G, 6 * KG, III, weight_mg=1 * KG, unit_price_fen_per_kg=5_000
    )  # 2 g ≤ 2 g
    assert scale_suits_goods(
        2 * G, 6 * KG, III, weight_mg=1 * KG + 1, unit_price_fen_per_kg=5_000
    )  # 4 g ≤ 4 g
    # the 6 kg / 2 g scale's in-service MPE matches 附表1 row 3 step for step
    assert scale_suits_goods(2 * G, 6 * KG, III, unit_price_fen_per_kg=5_000)
    assert not scale_suits_goods(2 * G, 6 * KG, III, unit_price_fen_per_kg=10_001)
    assert scale_suits_goods(
        5 * G, 15 * KG, III, weight_mg=12 * KG, unit_price_fen_per_kg=5_000
    )  # beyond table
    with pytest.raises(MetrologyError):
        scale_suits_goods(5 * G, 15 * KG, III, weight_mg=15 * KG + 1, unit_price_fen_per_kg=5_000)
    with pytest.raises(ScaleClassError):
        scale_suits_goods(5 * G, 15 * KG, IIII, unit_price_fen_per_kg=5_000)


# --- §2.4 pre-packages, consequences ----------------------------------------------------------


@pytest.mark.parametrize(
    ("qn_mg", "t_mg"),
    [
        (1, Fraction(9, 100)),
        (50 * G, 4_500),  # 9 %
        (50 * G + 1, 4_500),  # 4.5 g
        (100 * G, 4_500),
        (100 * G + 1, Fraction(45, 1000) * (100 * G + 1)),  # 4.5 %
        (200 * G, 9 * G),
        (250 * G, 9 * G),  # 9 g
        (300 * G, 9 * G),
        (400 * G, 12 * G),  # 3 %
        (500 * G, 15 * G),
        (750 * G, 15 * G),  # 15 g
        (1 * KG, 15 * G),
        (2 * KG, 30 * G),  # 1.5 %
        (10 * KG, 150 * G),
        (12 * KG, 150 * G),  # 150 g
        (15 * KG, 150 * G),
        (20 * KG, 200 * G),  # 1 %
        (50 * KG, 500 * G),
        (50 * KG + 1, None),  # beyond the table
    ],
)
def test_prepackage_t(qn_mg: int, t_mg: Fraction | int | None) -> None:
    assert prepackage_tolerable_error_mg(qn_mg) == t_mg


def test_prepackage_misuse() -> None:
    with pytest.raises(MetrologyError):
        prepackage_tolerable_error_mg(0)


def test_consequences() -> None:
    assert MAX_SHORT_WEIGHT_FINE_FEN == 30_000 * 100
    assert FRAUD_COMPENSATION_MIN_FEN == 500 * 100
    assert fraud_compensation_fen(0) == 50_000
    assert fraud_compensation_fen(16_666) == 50_000
    assert fraud_compensation_fen(16_667) == 50_001
    assert fraud_compensation_fen(100_000) == 300_000
    with pytest.raises(MetrologyError):
        fraud_compensation_fen(-1)


# --- properties ----------------------------------------------------------------------------

E_VALUES = st.sampled_from([100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000])
CLASSES = st.sampled_from([I_, II, III, IIII])
CATEGORIES_WITH_RULE = st.sampled_from(
    [c for c in GoodsCategory if c not in (C.LIVE_POULTRY, C.LIVE_FISH, C.WATER_SOAKED)]
)


def _top_e(cls: AccuracyClass) -> int:
    # class I has no end: a range well beyond its last band edge (200,000 e)
    return {I_: 1_000_000, II: 100_000, III: 10_000, IIII: 1_000}[cls]


@given(e=E_VALUES, cls=CLASSES, a=st.integers(0, 10**6), b=st.integers(0, 10**6))
def test_mpe_monotone_in_load(e: int, cls: AccuracyClass, a: int, b: int) -> None:
    top = _top_e(cls) * e
    lo, hi = sorted((a * top // 10**6, b * top // 10**6))
    for stage in Stage:
        assert mpe_mg(lo, e_mg=e, accuracy_class=cls, stage=stage) <= mpe_mg(
            hi, e_mg=e, accuracy_class=cls, stage=stage
        )


@given(e=st.integers(1, 10**6), cls=CLASSES, frac=st.integers(0, 10**6))
def test_in_service_is_twice_verification(e: int, cls: AccuracyClass, frac: int) -> None:
    load = frac * _top_e(cls) * e // 10**6
    initial = mpe_mg(load, e_mg=e, accuracy_class=cls, stage=INIT)
    assert mpe_mg(load, e_mg=e, accuracy_class=cls, stage=SUBS) == initial
    assert mpe_mg(load, e_mg=e, accuracy_class=cls, stage=SERV) == 2 * initial
    assert 4 * zero_setting_accuracy_mg(e) == e


@given(e=E_VALUES, cls=CLASSES, frac=st.integers(0, 10**6))
def test_single_range_equals_plain_mpe(e: int, cls: AccuracyClass, frac: int) -> None:
    top = _top_e(cls) * e
    load = frac * top // 10**6
    for multi in MultiKind:
        got = mpe_for_ranges(load, ranges=[(top, e)], accuracy_class=cls, stage=SERV, multi=multi)
        assert got == mpe_mg(load, e_mg=e, accuracy_class=cls, stage=SERV)


@given(category=CATEGORIES_WITH_RULE, a=st.integers(0, 30 * KG), b=st.integers(0, 30 * KG))
def test_deviation_monotone_in_weight(category: GoodsCategory, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    d_lo = retail_negative_deviation_mg(lo, category=category)
    d_hi = retail_negative_deviation_mg(hi, category=category)
    if d_hi is not None:  # once beyond the table, always beyond
        assert d_lo is not None and d_lo <= d_hi


@given(weight=st.integers(0, 30 * KG), p=st.integers(0, 20_000), q=st.integers(0, 20_000))
def test_deviation_not_larger_for_dearer_goods(weight: int, p: int, q: int) -> None:
    cheap, dear = sorted((p, q))
    d_cheap = retail_negative_deviation_mg(weight, unit_price_fen_per_kg=cheap)
    d_dear = retail_negative_deviation_mg(weight, unit_price_fen_per_kg=dear)
    if d_cheap is not None and d_dear is not None:
        assert d_dear <= d_cheap


@given(weight=st.integers(0, 30 * KG), price=st.integers(0, 20_000))
def test_equal_accuracy_reweigh_is_twice(weight: int, price: int) -> None:
    one = reweigh_limit_mg(weight, method=ReweighMethod.ORIGINAL_SCALE, unit_price_fen_per_kg=price)
    two = reweigh_limit_mg(
        weight, method=ReweighMethod.EQUAL_ACCURACY_SCALE, unit_price_fen_per_kg=price
    )
    assert two == (None if one is None else 2 * one)


SCALES = st.sampled_from([(15 * KG, 5 * G), (30 * KG, 10 * G), (6 * KG, 2 * G), (3 * KG, 1 * G)])


@given(scale=SCALES, price=st.integers(0, 20_000), frac=st.integers(0, 10**6))
def test_suitability_over_range_holds_at_every_weight(
    scale: tuple[int, int], price: int, frac: int
) -> None:
    max_mg, e = scale
    min_mg = 20 * e
    weight = min_mg + frac * (max_mg - min_mg) // 10**6
    if scale_suits_goods(e, max_mg, III, unit_price_fen_per_kg=price):
        assert scale_suits_goods(e, max_mg, III, weight_mg=weight, unit_price_fen_per_kg=price)


@given(qn=st.integers(1, 50 * KG - 1))
def test_prepackage_t_monotone(qn: int) -> None:
    t, t_next = prepackage_tolerable_error_mg(qn), prepackage_tolerable_error_mg(qn + 1)
    assert t is not None and t_next is not None and t <= t_next


@given(price=st.integers(0, 10**9))
def test_fraud_compensation(price: int) -> None:
    got = fraud_compensation_fen(price)
    assert got >= 3 * price and got >= 50_000 and got in (3 * price, 50_000)


HONEST_SELLING = st.sampled_from([(15 * KG, 5 * G), (30 * KG, 10 * G), (6 * KG, 2 * G),
                                  (3 * KG, 1 * G)])
FAIRS = st.sampled_from([FAIR_1G_III, FAIR_1G_II, FAIR_5G, Instrument(10 * G, III),
                         Instrument(2 * G, III)])


@given(selling=HONEST_SELLING, fair=FAIRS, price=st.integers(0, 20_000),
       frac=st.integers(0, 10**6), err_s=st.integers(-10**3, 10**3),
       err_r=st.integers(-10**3, 10**3))
def test_honest_scales_suited_to_the_goods_never_give_a_violation(
    selling: tuple[int, int], fair: Instrument, price: int, frac: int, err_s: int, err_r: int
) -> None:
    """Any true mass, any error within each scale's in-service MPE, both readings rounded
    to their e: a scale that suits the goods at the sold weight (Art. 3) is never found
    short, on a more accurate or an equal fair scale (the method as the gateway picks it)."""
    max_mg, e = selling
    m = 20 * e + frac * (max_mg - 20 * e) // 10**6
    mpe_s = mpe_mg(m, e_mg=e, accuracy_class=III, stage=SERV)
    mpe_r = mpe_mg(m, e_mg=fair.e_mg, accuracy_class=fair.accuracy_class, stage=SERV)
    sold = round((m + mpe_s * err_s / 1_000) / e) * e
    reweighed = round((m + mpe_r * err_r / 1_000) / fair.e_mg) * fair.e_mg
    if not 0 <= sold <= max_mg or not scale_suits_goods(
            e, max_mg, III, unit_price_fen_per_kg=price, weight_mg=sold):
        return
    method = MORE if fair.e_mg < e else EQUAL
    j = judge_reweigh(sold, reweighed, method=method, unit_price_fen_per_kg=price,
                      selling=Instrument(e, III), reference=fair)
    assert j.verdict is not ReweighVerdict.VIOLATION
    # and the rule is never stricter than the law's limit
    assert j.limit_mg is None or (j.threshold_mg is not None and j.threshold_mg >= j.limit_mg)
