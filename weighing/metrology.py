"""Legal metrology tolerances for trade scales (domain.md §2), exact and table driven.

Rules of this module:

* Every number of domain.md §2 is a named constant or table below, with its legal source
  and the confidence domain.md gives it: [H] high, [M] medium, [L] low.
* Mass is integer milligrams, money integer fen, prices fen per kg. A tolerance that is a
  fraction of e (0.5 e, 0.25 e, 1.5 e) or a percentage is returned as a
  :class:`fractions.Fraction` of milligrams, so it is exact for every e (0.25 e of
  e = 10 mg is 5/2 mg). Fractions compare exactly with ``int``; a float never appears.
* Band boundaries belong to the lower band (load 500 e → ±0.5 e; 1 kg of vegetables →
  20 g), as domain.md §2.2 states for the MPE and its "m ≤ …" columns state for §2.3.
* "No rule applies" (excluded goods, weights beyond a table) is a legal answer and is
  returned as ``None``; misuse (negative mass, an unsupported class, a scale outside
  its class) raises :class:`MetrologyError`.
* Only classes III and IIII have tables (domain.md §2.1/§2.2); I and II raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from itertools import pairwise

from weighing.errors import GatewayError
from weighing.units import MG_PER_G, MG_PER_KG


class MetrologyError(GatewayError, ValueError):
    """A metrology question was asked with arguments outside the legal tables."""


class ScaleClassError(MetrologyError):
    """A scale's Max and e do not fit its accuracy class; ``reasons`` says why."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("; ".join(self.reasons))


class AccuracyClass(StrEnum):
    """OIML R76-1 / JJG 539 classes; only III (中准确度) and IIII (普通准确度) have tables."""

    I = "I"  # noqa: E741 - the legal name of the class
    II = "II"
    III = "III"
    IIII = "IIII"


class Stage(StrEnum):
    """When an error is judged: the in-service MPE is twice the verification MPE."""

    INITIAL_VERIFICATION = "initial_verification"  # 首次检定
    SUBSEQUENT_VERIFICATION = "subsequent_verification"  # 后续检定
    IN_SERVICE = "in_service"  # 使用中检查


class MultiKind(StrEnum):
    """How a scale with several (Max, e) pairs splits its range."""

    INTERVAL = "interval"  # multi-interval (多分度): one range, e steps up with the load
    RANGE = "range"  # multiple range (多范围): separate ranges from zero, switched


# --- §2.1 accuracy classes: JJG 539 数字指示秤 = OIML R76-1 Table 3 [H] -------------------


@dataclass(frozen=True)
class _ClassRow:
    e_min_mg: int
    e_max_mg: int | None  # None: no upper bound on e
    n_min: int
    n_max: int


CLASS_ROWS: dict[AccuracyClass, tuple[_ClassRow, ...]] = {
    # JJG 539 / OIML R76-1 Table 3 [H]
    AccuracyClass.III: (
        _ClassRow(e_min_mg=100, e_max_mg=2_000, n_min=100, n_max=10_000),  # 0.1 g ≤ e ≤ 2 g
        _ClassRow(e_min_mg=5_000, e_max_mg=None, n_min=500, n_max=10_000),  # e ≥ 5 g
    ),
    AccuracyClass.IIII: (
        _ClassRow(e_min_mg=5_000, e_max_mg=None, n_min=100, n_max=1_000),  # e ≥ 5 g
    ),
}
MIN_CAPACITY_E: dict[AccuracyClass, int] = {
    AccuracyClass.III: 20,  # Min = 20 e, JJG 539 / OIML R76-1 Table 3 [H]
    AccuracyClass.IIII: 10,  # Min = 10 e, JJG 539 / OIML R76-1 Table 3 [H]
}

# --- §2.2 maximum permissible errors: JJG 539 / OIML R76-1 MPE table [H] -------------------

MPE_BANDS_E: dict[AccuracyClass, tuple[tuple[int, Fraction], ...]] = {
    # (upper end of the band in e, inclusive; MPE at verification in e) [H]
    AccuracyClass.III: ((500, Fraction(1, 2)), (2_000, Fraction(1)), (10_000, Fraction(3, 2))),
    AccuracyClass.IIII: ((50, Fraction(1, 2)), (200, Fraction(1)), (1_000, Fraction(3, 2))),
}
STAGE_FACTOR: dict[Stage, int] = {
    Stage.INITIAL_VERIFICATION: 1,  # 首次检定 [H]
    Stage.SUBSEQUENT_VERIFICATION: 1,  # 后续检定 [H]
    Stage.IN_SERVICE: 2,  # 使用中检查 = 2 × verification MPE, JJG 539 / OIML R76-1 [H]
}
ZERO_SETTING_ACCURACY_E = Fraction(1, 4)  # ±0.25 e, OIML R76-1 zero-setting accuracy [H]
TARE_ACCURACY_E = Fraction(1, 4)  # ±0.25 e, OIML R76-1 tare accuracy [H]
INITIAL_ZERO_SETTING_RANGE_OF_MAX = Fraction(1, 5)  # ≤ 20 % Max, OIML R76-1 [H]
READING_ROUNDING_E = Fraction(1, 2)  # a plain reading carries ±0.5 e, R76-1 A.4.4.3 [H]
CHANGEOVER_OFFSET_E = Fraction(1, 2)  # the "+ 0.5 e" of P = I + 0.5 e − Δm, R76-1 A.4.4.3 [H]
VERIFICATION_PERIOD_MAX_MONTHS = 12  # 强制检定, 检定周期 ≤ 1 年 (JJG 539) [M]


@dataclass(frozen=True)
class ZeroTrackingLimits:
    """Zero-tracking acts only within ``band_e`` of zero at ≤ ``rate_e_per_s`` [L].

    domain.md gives 0.5 e and 0.5 e/s with low confidence, so both are configurable.
    """

    band_e: Fraction = Fraction(1, 2)  # OIML R76-1 zero-tracking [L]
    rate_e_per_s: Fraction = Fraction(1, 2)  # OIML R76-1 zero-tracking [L]


ZERO_TRACKING_DEFAULT = ZeroTrackingLimits()

# --- §2.3 retail negative deviation: 零售商品称重计量监督管理办法 -------------------------
# 国家质量监督检验检疫总局令第66号 (2004), revised by 市场监管总局令第31号 (2020) [H];
# the top band of each row (25/15/6/5 kg) is [M] in domain.md.

DeviationTable = tuple[tuple[int, int], ...]  # (weight upper end, inclusive, mg; shortfall mg)

FOOD_TABLE_A: DeviationTable = (  # 附表1 row 1: 粮食、蔬菜、水果, or ≤ 6 元/kg
    (1 * MG_PER_KG, 20 * MG_PER_G),
    (2 * MG_PER_KG, 40 * MG_PER_G),
    (4 * MG_PER_KG, 80 * MG_PER_G),
    (25 * MG_PER_KG, 100 * MG_PER_G),  # [M]
)
FOOD_TABLE_B: DeviationTable = (  # 附表1 row 2: 肉蛋禽海(水)产品糕点糖果调味品, 6–30 元/kg
    (2_500 * MG_PER_G, 5 * MG_PER_G),
    (10 * MG_PER_KG, 10 * MG_PER_G),
    (15 * MG_PER_KG, 15 * MG_PER_G),  # [M]
)
FOOD_TABLE_C: DeviationTable = (  # 附表1 row 3: 干菜、山(海)珍品, or 30 < p ≤ 100 元/kg
    (1 * MG_PER_KG, 2 * MG_PER_G),
    (4 * MG_PER_KG, 4 * MG_PER_G),
    (6 * MG_PER_KG, 6 * MG_PER_G),  # [M]
)
FOOD_TABLE_D: DeviationTable = (  # 附表1 row 4: food > 100 元/kg
    (500 * MG_PER_G, 1 * MG_PER_G),
    (2 * MG_PER_KG, 2 * MG_PER_G),
    (5 * MG_PER_KG, 3 * MG_PER_G),  # [M]
)
GOLD_TABLE: DeviationTable = ((100 * MG_PER_G, 10),)  # 附表2: 金饰品 ≤ 100 g/件: 0.01 g [H]
SILVER_TABLE: DeviationTable = ((100 * MG_PER_G, 100),)  # 附表2: 银饰品 ≤ 100 g/件: 0.1 g [H]

PRICE_BANDS_FEN_PER_KG: tuple[tuple[int | None, DeviationTable], ...] = (
    # 附表1 price bands, upper end inclusive, fen/kg [H]
    (600, FOOD_TABLE_A),  # p ≤ 6 元/kg
    (3_000, FOOD_TABLE_B),  # 6 < p ≤ 30 元/kg
    (10_000, FOOD_TABLE_C),  # 30 < p ≤ 100 元/kg
    (None, FOOD_TABLE_D),  # p > 100 元/kg
)


class GoodsCategory(StrEnum):
    """Goods named in 附表1/附表2 of 零售商品称重计量监督管理办法 (and its exclusions)."""

    GRAIN = "grain"  # 粮食
    VEGETABLES = "vegetables"  # 蔬菜
    FRUIT = "fruit"  # 水果
    MEAT = "meat"  # 肉
    EGGS = "eggs"  # 蛋
    POULTRY = "poultry"  # 禽 (dressed; live poultry is excluded)
    AQUATIC_PRODUCTS = "aquatic_products"  # 海(水)产品
    PASTRY = "pastry"  # 糕点
    CANDY = "candy"  # 糖果
    CONDIMENTS = "condiments"  # 调味品
    DRIED_VEGETABLES = "dried_vegetables"  # 干菜
    DELICACIES = "delicacies"  # 山(海)珍品
    GOLD = "gold"  # 金饰品 (附表2)
    SILVER = "silver"  # 银饰品 (附表2)
    LIVE_POULTRY = "live_poultry"  # 活禽: excluded, no rule
    LIVE_FISH = "live_fish"  # 活鱼: excluded, no rule
    WATER_SOAKED = "water_soaked"  # 水发物: excluded, no rule


_G = GoodsCategory
CATEGORY_TABLES: dict[GoodsCategory, DeviationTable | None] = {
    **{c: FOOD_TABLE_A for c in (_G.GRAIN, _G.VEGETABLES, _G.FRUIT)},
    **{
        c: FOOD_TABLE_B
        for c in (_G.MEAT, _G.EGGS, _G.POULTRY, _G.AQUATIC_PRODUCTS, _G.PASTRY, _G.CANDY)
    },
    _G.CONDIMENTS: FOOD_TABLE_B,
    _G.DRIED_VEGETABLES: FOOD_TABLE_C,
    _G.DELICACIES: FOOD_TABLE_C,
    _G.GOLD: GOLD_TABLE,
    _G.SILVER: SILVER_TABLE,
    # 活禽、活鱼、水发物 are excluded from the 办法: no negative-deviation rule [H]
    _G.LIVE_POULTRY: None,
    _G.LIVE_FISH: None,
    _G.WATER_SOAKED: None,
}


class ReweighMethod(StrEnum):
    """The scale a 核称 (re-weigh) is done on, 零售商品称重计量监督管理办法 Art. 6 [M]."""

    ORIGINAL_SCALE = "original_scale"  # 原计量器具
    MORE_ACCURATE_SCALE = "more_accurate_scale"  # 准确度更高的计量器具
    EQUAL_ACCURACY_SCALE = "equal_accuracy_scale"  # 准确度相同的计量器具, e.g. a 公平秤


REWEIGH_FACTOR: dict[ReweighMethod, int] = {
    ReweighMethod.ORIGINAL_SCALE: 1,  # Art. 6: ≤ the negative deviation [M]
    ReweighMethod.MORE_ACCURATE_SCALE: 1,  # Art. 6: ≤ the negative deviation [M]
    ReweighMethod.EQUAL_ACCURACY_SCALE: 2,  # Art. 6: ≤ 2 × the negative deviation [M]
}


class ReweighVerdict(StrEnum):
    """Outcome of a 核称."""

    OK = "ok"
    VIOLATION = "violation"
    NO_RULE = "no_rule"  # excluded goods or a weight beyond the table


# --- §2.4 pre-packages: JJF 1070 定量包装商品 / OIML R87 tolerable negative error T [M/L] ----

PREPACKAGE_T_TABLE: tuple[tuple[int, Fraction | None, int | None], ...] = (
    # (Qn upper end inclusive, mg; T as a fraction of Qn, or None; T in mg, or None) [M/L]
    (50 * MG_PER_G, Fraction(9, 100), None),  # 0–50 g: 9 %
    (100 * MG_PER_G, None, 4_500),  # 50–100 g: 4.5 g
    (200 * MG_PER_G, Fraction(45, 1000), None),  # 100–200 g: 4.5 %
    (300 * MG_PER_G, None, 9 * MG_PER_G),  # 200–300 g: 9 g
    (500 * MG_PER_G, Fraction(3, 100), None),  # 300–500 g: 3 %
    (1 * MG_PER_KG, None, 15 * MG_PER_G),  # 0.5–1 kg: 15 g
    (10 * MG_PER_KG, Fraction(15, 1000), None),  # 1–10 kg: 1.5 %
    (15 * MG_PER_KG, None, 150 * MG_PER_G),  # 10–15 kg: 150 g
    (50 * MG_PER_KG, Fraction(1, 100), None),  # 15–50 kg: 1 %
)

# --- consequences [M] ------------------------------------------------------------------

MAX_SHORT_WEIGHT_FINE_FEN = 3_000_000  # ≤ 30,000 元, 商品量计量违法行为处罚规定 Art. 5 [M]
FRAUD_COMPENSATION_MULTIPLE = 3  # 3 × price, 消费者权益保护法 Art. 55 [M]
FRAUD_COMPENSATION_MIN_FEN = 50_000  # at least 500 元, 消费者权益保护法 Art. 55 [M]


# --- helpers -----------------------------------------------------------------------------


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise MetrologyError(message)


def _class_table(accuracy_class: AccuracyClass) -> tuple[tuple[int, Fraction], ...]:
    try:
        return MPE_BANDS_E[AccuracyClass(accuracy_class)]
    except (KeyError, ValueError):
        raise MetrologyError(
            f"accuracy class {accuracy_class!s} is not supported: domain.md §2 gives tables "
            "for classes III and IIII only"
        ) from None


def _lookup(table: DeviationTable, weight_mg: int) -> int | None:
    for upper_mg, value in table:
        if weight_mg <= upper_mg:
            return value
    return None


# --- §2.1 class validity -------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleSpec:
    """A (Max, e) pair that fits its accuracy class."""

    max_mg: int
    e_mg: int
    accuracy_class: AccuracyClass
    n: int  # number of verification scale intervals, Max / e
    min_capacity_mg: int  # 20 e (III) or 10 e (IIII)


def check_scale(max_mg: int, e_mg: int, accuracy_class: AccuracyClass) -> ScaleSpec:
    """Check Max and e against JJG 539 / OIML R76-1 Table 3; raise :class:`ScaleClassError`.

    Every failed condition is listed in ``reasons``: e outside every row of the class,
    Max not a whole number of e, n = Max/e outside the row's bounds.
    """
    _class_table(accuracy_class)
    _require(max_mg > 0 and e_mg > 0, "Max and e must be positive")
    reasons: list[str] = []
    rows = [
        r
        for r in CLASS_ROWS[accuracy_class]
        if r.e_min_mg <= e_mg and (r.e_max_mg is None or e_mg <= r.e_max_mg)
    ]
    if not rows:
        reasons.append(f"e = {e_mg} mg is outside every class {accuracy_class} row")
    n, rest = divmod(max_mg, e_mg)
    if rest:
        reasons.append(f"Max = {max_mg} mg is not a whole number of e = {e_mg} mg")
    for row in rows:
        if not row.n_min <= n <= row.n_max:
            reasons.append(
                f"n = Max/e = {n} outside {row.n_min}–{row.n_max} for class {accuracy_class}"
            )
    if reasons:
        raise ScaleClassError(reasons)
    return ScaleSpec(max_mg, e_mg, accuracy_class, n, MIN_CAPACITY_E[accuracy_class] * e_mg)


# --- §2.2 MPE --------------------------------------------------------------------------------


def mpe_mg(load_mg: int, *, e_mg: int, accuracy_class: AccuracyClass, stage: Stage) -> Fraction:
    """Maximum permissible error (its absolute value) at ``load_mg``, in exact mg.

    Bands are counted in e and a boundary belongs to the lower band: class III at 500 e
    gives ±0.5 e at verification, 500 e + 1 mg gives ±1 e. In service the MPE doubles.
    Loads beyond the table (10,000 e for III, 1,000 e for IIII) raise.
    """
    bands = _class_table(accuracy_class)
    _require(e_mg > 0, "e must be positive")
    _require(load_mg >= 0, "load must not be negative")
    for upper_e, mpe_e in bands:
        if load_mg <= upper_e * e_mg:
            return mpe_e * e_mg * STAGE_FACTOR[Stage(stage)]
    raise MetrologyError(
        f"load {load_mg} mg exceeds {bands[-1][0]} e, the end of the class {accuracy_class} table"
    )


def _check_ranges(ranges: Sequence[tuple[int, int]]) -> None:
    _require(len(ranges) > 0, "at least one (Max, e) pair is needed")
    for (max_a, e_a), (max_b, e_b) in pairwise(ranges):
        _require(max_a < max_b and e_a < e_b, "Max and e must both increase from range to range")


def mpe_for_ranges(
    load_mg: int,
    *,
    ranges: Sequence[tuple[int, int]],
    accuracy_class: AccuracyClass,
    stage: Stage,
    multi: MultiKind | str = MultiKind.INTERVAL,
    range_index: int | None = None,
) -> Fraction:
    """MPE of a multi-interval or multiple-range scale; ``ranges`` is ``[(max_mg, e_mg), ...]``.

    Multi-interval: the e of the interval containing the load, Max_(i-1) < load ≤ Max_i.
    Multiple range: the smallest range whose Max ≥ load (automatic switching while
    loading from zero); pass ``range_index`` when the scale is known to be in a larger
    range (it switches back only at zero). MPE bands are counted in that e. Both
    readings give the worked example of domain.md §2.2.
    """
    _check_ranges(ranges)
    try:
        kind = MultiKind(multi)
    except ValueError:
        raise MetrologyError(f"multi must be 'interval' or 'range', not {multi!r}") from None
    _require(0 <= load_mg <= ranges[-1][0], f"load {load_mg} mg outside 0–Max")
    index = next(i for i, (max_mg, _) in enumerate(ranges) if load_mg <= max_mg)
    if range_index is not None:
        _require(kind is MultiKind.RANGE, "range_index applies to multiple-range scales only")
        _require(index <= range_index < len(ranges), f"load does not fit range {range_index}")
        index = range_index
    return mpe_mg(load_mg, e_mg=ranges[index][1], accuracy_class=accuracy_class, stage=stage)


def zero_setting_accuracy_mg(e_mg: int) -> Fraction:
    """Zero-setting accuracy, ±0.25 e (OIML R76-1) [H]."""
    return ZERO_SETTING_ACCURACY_E * e_mg


def tare_accuracy_mg(e_mg: int) -> Fraction:
    """Tare-setting accuracy, ±0.25 e (OIML R76-1) [H]."""
    return TARE_ACCURACY_E * e_mg


def initial_zero_setting_range_ok(low_mg: int, high_mg: int, *, max_mg: int) -> bool:
    """The initial zero-setting range ``[low_mg, high_mg]`` spans at most 20 % of Max [H]."""
    _require(low_mg <= high_mg, "empty zero-setting range")
    return high_mg - low_mg <= INITIAL_ZERO_SETTING_RANGE_OF_MAX * max_mg


def zero_tracking_permits(
    offset_mg: int,
    change_mg: int,
    interval_ms: int,
    *,
    e_mg: int,
    limits: ZeroTrackingLimits = ZERO_TRACKING_DEFAULT,
) -> bool:
    """May zero-tracking absorb a drift of ``change_mg`` over ``interval_ms`` at ``offset_mg``?

    Only within ``limits.band_e`` of zero and no faster than ``limits.rate_e_per_s`` [L].
    """
    _require(interval_ms > 0, "interval must be positive")
    within_band = abs(offset_mg) <= limits.band_e * e_mg
    slow_enough = abs(change_mg) * 1000 <= limits.rate_e_per_s * e_mg * interval_ms
    return within_band and slow_enough


def repeatability_ok(
    readings_mg: Sequence[int],
    *,
    load_mg: int,
    e_mg: int,
    accuracy_class: AccuracyClass,
    stage: Stage,
) -> bool:
    """Range (max − min) of repeated weighings of one load ≤ |MPE| at that load [H]."""
    _require(len(readings_mg) > 0, "no readings")
    spread = max(readings_mg) - min(readings_mg)
    return spread <= mpe_mg(load_mg, e_mg=e_mg, accuracy_class=accuracy_class, stage=stage)


@dataclass(frozen=True)
class ChangeoverResult:
    """Changeover-point evaluation, OIML R76-1 A.4.4.3: P, E and Ec in exact mg."""

    indication_before_rounding_mg: Fraction  # P = I + 0.5 e − Δm
    error_mg: Fraction  # E = P − m
    corrected_error_mg: Fraction  # Ec = E − E0


def changeover_error(
    indication_mg: int,
    *,
    load_mg: int,
    added_mg: int,
    e_mg: int,
    zero_error_mg: Fraction | int = 0,
) -> ChangeoverResult:
    """Error by the changeover-point method (OIML R76-1 A.4.4.3) [H].

    ``indication_mg`` is I, ``added_mg`` the small weights Δm added until the indication
    changes over by one e, ``load_mg`` the test load m and ``zero_error_mg`` E0 (the
    error at or near zero, found the same way).
    """
    _require(e_mg > 0 and added_mg >= 0, "e must be positive and Δm not negative")
    p = indication_mg + CHANGEOVER_OFFSET_E * e_mg - added_mg
    error = p - load_mg
    return ChangeoverResult(p, error, error - Fraction(zero_error_mg))


def rounding_uncertainty_mg(e_mg: int) -> Fraction:
    """A plain digital reading (no changeover weights) carries ±0.5 e rounding [H]."""
    return READING_ROUNDING_E * e_mg


# --- §2.3 retail ---------------------------------------------------------------------------


def _deviation_table(
    category: GoodsCategory | None, unit_price_fen_per_kg: int | None
) -> DeviationTable | None:
    if category is not None:
        return CATEGORY_TABLES[GoodsCategory(category)]
    if unit_price_fen_per_kg is None:
        raise MetrologyError("give a goods category or a unit price")
    _require(unit_price_fen_per_kg >= 0, "unit price must not be negative")
    for upper_fen, table in PRICE_BANDS_FEN_PER_KG:
        if upper_fen is None or unit_price_fen_per_kg <= upper_fen:
            return table
    raise AssertionError("unreachable: the last price band is open")  # pragma: no cover


def retail_negative_deviation_mg(
    weight_mg: int,
    *,
    category: GoodsCategory | None = None,
    unit_price_fen_per_kg: int | None = None,
) -> int | None:
    """Allowed shortfall (负偏差) for a retail sale of ``weight_mg``, or ``None`` if no rule.

    A listed category wins over the unit price (附表1 reads "category, or price band";
    附表2 and the exclusions are categories only); without a category the price band
    applies. ``None``: 活禽、活鱼、水发物, or a weight beyond the table.
    """
    _require(weight_mg >= 0, "weight must not be negative")
    table = _deviation_table(category, unit_price_fen_per_kg)
    return None if table is None else _lookup(table, weight_mg)


def reweigh_limit_mg(
    weight_mg: int,
    *,
    method: ReweighMethod,
    category: GoodsCategory | None = None,
    unit_price_fen_per_kg: int | None = None,
) -> int | None:
    """Largest acceptable 核称 shortfall: 1× (original or better scale) or 2× (equal) [M]."""
    deviation = retail_negative_deviation_mg(
        weight_mg, category=category, unit_price_fen_per_kg=unit_price_fen_per_kg
    )
    return None if deviation is None else REWEIGH_FACTOR[ReweighMethod(method)] * deviation


@dataclass(frozen=True)
class ReweighJudgement:
    """A 核称 result. ``shortfall_mg`` = sold − re-weighed; negative means overweight."""

    shortfall_mg: int
    limit_mg: int | None
    verdict: ReweighVerdict


def judge_reweigh(
    sold_mg: int,
    reweighed_mg: int,
    *,
    method: ReweighMethod,
    category: GoodsCategory | None = None,
    unit_price_fen_per_kg: int | None = None,
) -> ReweighJudgement:
    """Judge a 核称 (Art. 6): the band is chosen by the sold (结算) weight."""
    limit = reweigh_limit_mg(
        sold_mg, method=method, category=category, unit_price_fen_per_kg=unit_price_fen_per_kg
    )
    shortfall = sold_mg - reweighed_mg
    if limit is None:
        verdict = ReweighVerdict.NO_RULE
    else:
        verdict = ReweighVerdict.OK if shortfall <= limit else ReweighVerdict.VIOLATION
    return ReweighJudgement(shortfall, limit, verdict)


def scale_suits_goods(
    e_mg: int,
    max_mg: int,
    accuracy_class: AccuracyClass,
    *,
    category: GoodsCategory | None = None,
    unit_price_fen_per_kg: int | None = None,
    weight_mg: int | None = None,
) -> bool:
    """Art. 3: the scale's in-service MPE ≤ the goods' negative deviation.

    With ``weight_mg`` the check is at that weight. Without it, at every weight from
    the scale's minimum capacity up to Max where the goods have a rule (both are step
    functions, so checking the start of each step is exhaustive). Weights without a rule
    impose nothing; goods without any rule always suit.
    """
    spec = check_scale(max_mg, e_mg, accuracy_class)
    table = _deviation_table(category, unit_price_fen_per_kg)
    if table is None:
        return True
    if weight_mg is not None:
        _require(0 <= weight_mg <= max_mg, "weight outside 0–Max")
        points = [weight_mg]
    else:
        top = min(max_mg, table[-1][0])
        steps = [upper_e * e_mg for upper_e, _ in MPE_BANDS_E[accuracy_class]]
        steps += [upper for upper, _ in table]
        points = [spec.min_capacity_mg] + [s + 1 for s in steps if spec.min_capacity_mg <= s]
        points = [p for p in points if p <= top]
    for point in points:
        deviation = _lookup(table, point)
        mpe = mpe_mg(point, e_mg=e_mg, accuracy_class=accuracy_class, stage=Stage.IN_SERVICE)
        if deviation is not None and mpe > deviation:
            return False
    return True


# --- §2.4 pre-packages and consequences ----------------------------------------------------


def prepackage_tolerable_error_mg(nominal_mg: int) -> Fraction | None:
    """Tolerable negative error T for nominal quantity Qn (JJF 1070 / OIML R87) [M/L].

    Exact: percentages are kept as Fractions, no rounding (see docs/metrology.md).
    ``None`` above 50 kg, the end of the table.
    """
    _require(nominal_mg > 0, "nominal quantity must be positive")
    for upper_mg, share, fixed_mg in PREPACKAGE_T_TABLE:
        if nominal_mg <= upper_mg:
            return share * nominal_mg if share is not None else Fraction(fixed_mg or 0)
    return None


def fraud_compensation_fen(price_fen: int) -> int:
    """消保法 Art. 55: compensation 3 × the price, at least 500 元 [M]."""
    _require(price_fen >= 0, "price must not be negative")
    return max(FRAUD_COMPENSATION_MULTIPLE * price_fen, FRAUD_COMPENSATION_MIN_FEN)
