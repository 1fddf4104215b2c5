"""Legal metrology tolerances for trade scales (domain.md §2), exact and table driven.
One module (about 730 lines) on purpose: the legal tables, each with its citation and
confidence, sit next to the functions that apply them, so a number and its use are
checked against the source in one file; the re-weigh verdict combines the MPE (§2.2)
with the retail deviation (§2.3), which a split by section would pull apart.

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
* All four classes have tables: III and IIII from domain.md §2.1/§2.2, I and II from
  OIML R76-1 Table 3 / Table 6 (= JJG 539), as domain.md §2.2 quotes them. A class II fair
  scale (15 kg / 1 g, n = 15,000) is common: never assume III for a scale.
* A 核称 (re-weigh) verdict allows for what the law lets both instruments err by
  (:func:`reweigh_threshold_mg`, docs/metrology.md "Single re-weigh verdict").
"""

from __future__ import annotations

import math
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
    """OIML R76-1 / JJG 539 classes: I 特种, II 高, III 中, IIII 普通准确度."""

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
    n_max: int | None  # None: no upper bound on n (class I)
    min_e: int  # minimum capacity Min, in e


CLASS_ROWS: dict[AccuracyClass, tuple[_ClassRow, ...]] = {
    # OIML R76-1 (2006) Table 3 = JJG 539; domain.md §2.1 (III, IIII) and §2.2 (I, II) [H].
    # Not implemented: R76-1 3.4.4's exception for class I with d < 0.1 mg (n < 50,000).
    AccuracyClass.I: (
        _ClassRow(e_min_mg=1, e_max_mg=None, n_min=50_000, n_max=None, min_e=100),  # e ≥ 1 mg
    ),
    AccuracyClass.II: (
        _ClassRow(e_min_mg=1, e_max_mg=50, n_min=100, n_max=100_000, min_e=20),  # 1–50 mg
        _ClassRow(e_min_mg=100, e_max_mg=None, n_min=5_000, n_max=100_000, min_e=50),  # ≥ 0.1 g
    ),
    AccuracyClass.III: (
        _ClassRow(e_min_mg=100, e_max_mg=2_000, n_min=100, n_max=10_000, min_e=20),  # 0.1–2 g
        _ClassRow(e_min_mg=5_000, e_max_mg=None, n_min=500, n_max=10_000, min_e=20),  # e ≥ 5 g
    ),
    AccuracyClass.IIII: (
        _ClassRow(e_min_mg=5_000, e_max_mg=None, n_min=100, n_max=1_000, min_e=10),  # e ≥ 5 g
    ),
}

MIN_CAPACITY_E: dict[AccuracyClass, int] = {
    # Min in e where the class has one value (R76-1 Table 3) [H]; class II's depends on e
    # (20 e for e ≤ 50 mg, 50 e from 0.1 g): use min_capacity_e(e_mg, cls)
    AccuracyClass.I: 100,
    AccuracyClass.III: 20,
    AccuracyClass.IIII: 10,
}

# --- §2.2 maximum permissible errors: JJG 539 / OIML R76-1 Table 6 [H] ---------------------

MPE_BANDS_E: dict[AccuracyClass, tuple[tuple[int | None, Fraction], ...]] = {
    # (upper end of the band in e, inclusive, None: open; MPE at verification in e) [H]
    # OIML R76-1 Table 6 = JJG 539; domain.md §2.2. Class I has no largest n, so no end.
    AccuracyClass.I: ((50_000, Fraction(1, 2)), (200_000, Fraction(1)), (None, Fraction(3, 2))),
    AccuracyClass.II: ((5_000, Fraction(1, 2)), (20_000, Fraction(1)), (100_000, Fraction(3, 2))),
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
#: no indication above Max + 9 e: the display blanks beyond it (OIML R76-1:2006 4.2.3 "Limits
#: of indication", = JJG 539 数字指示秤 示值范围: 超过 Max + 9e 不应有示值) [M] (issue 15)
INDICATION_LIMIT_E = 9


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


def _class_table(accuracy_class: AccuracyClass) -> tuple[tuple[int | None, Fraction], ...]:
    try:
        return MPE_BANDS_E[AccuracyClass(accuracy_class)]
    except (KeyError, ValueError):
        raise MetrologyError(
            f"accuracy class {accuracy_class!s} is not supported: OIML R76-1 / JJG 539 "
            "know classes I, II, III and IIII"
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
    min_capacity_mg: int  # Min: 100 e (I), 20 e or 50 e (II), 20 e (III), 10 e (IIII)


def _class_row(e_mg: int, accuracy_class: AccuracyClass) -> _ClassRow | None:
    rows = CLASS_ROWS[AccuracyClass(accuracy_class)]
    return next(
        (r for r in rows if r.e_min_mg <= e_mg and (r.e_max_mg is None or e_mg <= r.e_max_mg)),
        None,
    )


def min_capacity_e(e_mg: int, accuracy_class: AccuracyClass) -> int:
    """Minimum capacity Min in e (OIML R76-1 Table 3): it depends on e for class II.

    An e outside every row of the class raises (:func:`check_scale` says why).
    """
    _class_table(accuracy_class)
    row = _class_row(e_mg, accuracy_class)
    if row is None:
        raise MetrologyError(f"e = {e_mg} mg is outside every class {accuracy_class} row")
    return row.min_e


def band_edges_mg(e_mg: int, accuracy_class: AccuracyClass) -> tuple[int, ...]:
    """Where the MPE steps up (the finite band ends of Table 6, in mg; each belongs to the
    lower band), the last one being the end of the table (none for class I)."""
    _require(e_mg > 0, "e must be positive")
    return tuple(u * e_mg for u, _ in _class_table(accuracy_class) if u is not None)


def check_scale(max_mg: int, e_mg: int, accuracy_class: AccuracyClass) -> ScaleSpec:
    """Check Max and e against JJG 539 / OIML R76-1 Table 3; raise :class:`ScaleClassError`.

    Every failed condition is listed in ``reasons``: e outside every row of the class,
    Max not a whole number of e, n = Max/e outside the row's bounds.
    """
    _class_table(accuracy_class)
    _require(max_mg > 0 and e_mg > 0, "Max and e must be positive")
    reasons: list[str] = []
    row = _class_row(e_mg, accuracy_class)
    if row is None:
        reasons.append(f"e = {e_mg} mg is outside every class {accuracy_class} row")
    n, rest = divmod(max_mg, e_mg)
    if rest:
        reasons.append(f"Max = {max_mg} mg is not a whole number of e = {e_mg} mg")
    if row is not None and not (row.n_min <= n and (row.n_max is None or n <= row.n_max)):
        top = "" if row.n_max is None else f"{row.n_max}"
        reasons.append(f"n = Max/e = {n} outside {row.n_min}–{top} for class {accuracy_class}")
    if reasons or row is None:
        raise ScaleClassError(reasons)
    return ScaleSpec(max_mg, e_mg, accuracy_class, n, row.min_e * e_mg)


# --- §2.2 MPE --------------------------------------------------------------------------------


def mpe_mg(load_mg: int, *, e_mg: int, accuracy_class: AccuracyClass, stage: Stage) -> Fraction:
    """Maximum permissible error (its absolute value) at ``load_mg``, in exact mg.

    Bands are counted in e and a boundary belongs to the lower band: class III at 500 e
    gives ±0.5 e at verification, 500 e + 1 mg gives ±1 e. In service the MPE doubles.
    Loads beyond the table (100,000 e for II, 10,000 e for III, 1,000 e for IIII) raise;
    class I has no end (R76-1 sets no largest n for it).
    """
    bands = _class_table(accuracy_class)
    _require(e_mg > 0, "e must be positive")
    _require(load_mg >= 0, "load must not be negative")
    for upper_e, mpe_e in bands:
        if upper_e is None or load_mg <= upper_e * e_mg:
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


def indication_limit_mg(max_mg: int, e_mg: int) -> int:
    """The largest weight a scale of ``max_mg`` / ``e_mg`` may indicate: Max + 9 e.

    Above it the display blanks (:data:`INDICATION_LIMIT_E`, OIML R76-1 4.2.3 = JJG 539), so
    a reading or a sale beyond it is not a weighing the scale can show but a garbled frame
    or forged data. For a multiple-range scale give the largest range's Max and e.
    """
    _require(max_mg > 0 and e_mg > 0, "Max and e must be positive")
    return max_mg + INDICATION_LIMIT_E * e_mg


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
class Instrument:
    """A scale in a 核称: its e and accuracy class, judged at ``stage`` (in service)."""

    e_mg: int
    accuracy_class: AccuracyClass
    stage: Stage = Stage.IN_SERVICE


def _mpe_within_table(load_mg: int, inst: Instrument) -> Fraction:
    """MPE at ``load_mg``; a load beyond the table gets its last band (the largest MPE)."""
    edges = band_edges_mg(inst.e_mg, inst.accuracy_class)
    bands = _class_table(inst.accuracy_class)
    if bands[-1][0] is not None:
        load_mg = min(load_mg, edges[-1])
    return mpe_mg(load_mg, e_mg=inst.e_mg, accuracy_class=inst.accuracy_class, stage=inst.stage)


def true_mass_upper_mg(reading_mg: int, inst: Instrument) -> int:
    """m⁺: the true mass is at most the reading + the largest MPE of the table + ½ e."""
    last_mpe_e = _class_table(inst.accuracy_class)[-1][1] * STAGE_FACTOR[Stage(inst.stage)]
    return reading_mg + math.ceil((last_mpe_e + READING_ROUNDING_E) * inst.e_mg)


def reweigh_threshold_mg(
    sold_mg: int,
    reweighed_mg: int,
    *,
    method: ReweighMethod,
    selling: Instrument,
    reference: Instrument | None,
    category: GoodsCategory | None = None,
    unit_price_fen_per_kg: int | None = None,
) -> Fraction | None:
    """Largest shortfall a 核称 may show without establishing short weight, exact mg.

    ``T = D + ½ e_s + max((k − 1)·D, MPE_r(m⁺)) + ½ e_r`` (docs/metrology.md "Single
    re-weigh verdict"): D the negative deviation of the goods at the sold weight (附表1/2),
    k the Art. 6 factor (1 on the original or a more accurate scale, 2 on an equal one),
    MPE_r the re-weigh scale's in-service MPE at the upper bound of the true mass m⁺, and
    ½ e per displayed reading (R76-1 A.4.4.3). The selling scale's own error is inside D
    (Art. 3: its MPE may not exceed D). ``reference=None``: standard weights (exact).
    ``None``: the goods have no rule.
    """
    deviation = retail_negative_deviation_mg(
        sold_mg, category=category, unit_price_fen_per_kg=unit_price_fen_per_kg
    )
    if deviation is None:
        return None
    _require(selling.e_mg > 0 and reweighed_mg >= 0, "e must be positive, mass not negative")
    extra = Fraction((REWEIGH_FACTOR[ReweighMethod(method)] - 1) * deviation)
    rounding = READING_ROUNDING_E * selling.e_mg
    if reference is not None:
        _require(reference.e_mg > 0, "e must be positive")
        mpe_r = _mpe_within_table(true_mass_upper_mg(reweighed_mg, reference), reference)
        extra = max(extra, mpe_r)
        rounding += READING_ROUNDING_E * reference.e_mg
    return deviation + rounding + extra


@dataclass(frozen=True)
class ReweighJudgement:
    """A 核称 result. ``shortfall_mg`` = sold − re-weighed; negative means overweight.

    ``limit_mg`` is Art. 6's limit (k × the negative deviation); ``threshold_mg`` what the
    shortfall was compared with: the limit, or with the instruments given
    :func:`reweigh_threshold_mg`.
    """

    shortfall_mg: int
    limit_mg: int | None
    verdict: ReweighVerdict
    threshold_mg: Fraction | None = None


def judge_reweigh(
    sold_mg: int,
    reweighed_mg: int,
    *,
    method: ReweighMethod,
    category: GoodsCategory | None = None,
    unit_price_fen_per_kg: int | None = None,
    selling: Instrument | None = None,
    reference: Instrument | None = None,
) -> ReweighJudgement:
    """Judge a 核称 (Art. 6): the band is chosen by the sold (结算) weight.

    Without ``selling`` the shortfall is compared with Art. 6's limit alone. With it (and
    the re-weigh scale as ``reference``; ``None`` = standard weights), with
    :func:`reweigh_threshold_mg`, which allows for both scales' in-service MPE and display
    rounding as the law does: a violation is a shortfall no pair of legal scales explains.
    """
    limit = reweigh_limit_mg(
        sold_mg, method=method, category=category, unit_price_fen_per_kg=unit_price_fen_per_kg
    )
    shortfall = sold_mg - reweighed_mg
    if limit is None:
        return ReweighJudgement(shortfall, None, ReweighVerdict.NO_RULE)
    threshold = Fraction(limit)
    if selling is not None:
        threshold = reweigh_threshold_mg(
            sold_mg, reweighed_mg, method=method, selling=selling, reference=reference,
            category=category, unit_price_fen_per_kg=unit_price_fen_per_kg,
        ) or threshold  # never None here: the same table gave the limit
    verdict = ReweighVerdict.OK if shortfall <= threshold else ReweighVerdict.VIOLATION
    return ReweighJudgement(shortfall, limit, verdict, threshold)


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
        steps = list(band_edges_mg(e_mg, accuracy_class))
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
