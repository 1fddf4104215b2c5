"""Stream detectors: per event (or per window) rules for the cheats of domain.md §4.

Pure functions: no database, no clock, no logging. Each takes the event and what the
server knows of the scale (and, where needed, the registered price), and returns
:class:`Finding`s carrying their evidence and legal basis. Every legal threshold comes
from :mod:`weighing.metrology`; every other threshold is a :class:`DetectorParams` field
with a documented default (domain.md §4 "Derived detection rules").

Rules implemented here (numbers refer to domain.md §4 derived rules):

* ``impact`` (2): a sale committed while moving or above the following settled weight by
  more than 1 e (冲击法).
* ``zero-offset`` (3): an idle-pan mean outside ±0.25 e (zero-setting accuracy, OIML R76)
  over at least ``zero_min_window_ms`` (预留底数, hand press, magnet).
* ``tare-omission`` (5/§4 连盘出售): a sale of tray-sold goods with tare 0 **where the
  merchant's own data show a tray**: the same merchant tared that PLU (or, for a PLU with
  little history, its tray goods) on this scale in most recent sales (:func:`tare_habit`).
  Severity medium at the break, high once ``tray_confirm_sales`` untared sales against a
  habit follow one another. Without that evidence a tray-goods sale with tare 0 is the
  observation ``untared-tray-goods`` (info, once per scale and day): the stall may simply
  sell without trays.
* ``price-decimal-trick`` / ``price-mismatch`` / ``amount-mismatch`` (5): unit price off
  the registered price by ×0.01 / ×0.1, off otherwise, or an amount above the largest any
  lawful rounding of weight × price gives (``weighing.units.max_lawful_amount_fen``).
* ``scale-too-coarse`` (5, Art. 3): the scale's in-service MPE exceeds the goods' negative
  deviation at the sold weight.
* ``calibration-change`` (4): a CAL/CFG counter, calibration register or software id
  changed with no registered repair or verification within ``repair_grace_ms`` before.
  A first report (no old value from the agent, none stored by the server) sets the
  baseline; an agent that lost its memory (old = None) is compared with the server's
  last stored value.
* ``impact-repeated`` (2, evidence of a day): ``impact_confirm_sales`` sales of one market
  day committed above the weight the pan then settled to by more than the legal negative
  deviation of the goods (附表1/2): each is a sale short beyond the tolerance by the scale's
  own readings (:func:`check_impact_day`).
* ``zero-offset-persistent`` (3, evidence of a day): ``zero_confirm_reports`` idle-pan reports
  in a row showing one positive offset (within 1 e) larger than the negative deviation of the
  sales between them, with sales between each: every one of those sales carried the offset
  (:func:`check_zero_day`).
* ``idle-while-peers-trade`` (6) and ``offline-trading-hours`` are window rules over a
  market (see :func:`check_idle_scales`).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway_server.detect.rules.legal import (
    LEGAL_ART3,
    LEGAL_CHEATING,
    LEGAL_PRICE,
    LEGAL_SEAL,
    LEGAL_TARE,
    LEGAL_TRACE,
    LEGAL_ZERO,
)
from weighing import metrology as mt
from weighing.units import amount_fen, lawful_amounts_fen

DAY_MS = 86_400_000
CST_OFFSET_MS = 8 * 3_600_000  # findings "per day" are per market day, China Standard Time


def market_day(ts_ms: int) -> int:
    """Days since the epoch of the CST calendar day of ``ts_ms`` (dedup keys per day)."""
    return (ts_ms + CST_OFFSET_MS) // DAY_MS


@dataclass(frozen=True, slots=True)
class ScaleCtx:
    """What the server knows of a scale (from the register, else from its birth)."""

    device: str
    market: str
    e_mg: int
    max_mg: int
    accuracy_class: str = "III"
    role: str = "trade"


@dataclass(frozen=True, slots=True)
class RegisteredPrice:
    plu: str
    unit_price_fen_per_kg: int
    category: str | None = None


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """Non-legal thresholds; defaults documented in docs/detection.md."""

    zero_min_window_ms: int = 2_000  # an idle period shorter than this says little
    tray_categories: frozenset[str] = frozenset({"meat", "poultry", "aquatic_products"})
    tray_min_net_e: int = 20  # only goods of at least Min capacity (20 e)
    tray_habit_sales: int = 10  # window of the merchant's own earlier sales of the PLU
    tray_habit_min: int = 3  # fewer earlier sales than this: no habit can be shown
    tray_habit_share: float = 0.8  # tared in at least this share of the window
    tray_confirm_sales: int = 3  # consecutive untared sales against a habit: high severity
    tray_lookback_sales: int = 50  # a window is sought this far back (a PLU rarer: merchant's)
    repair_grace_ms: int = 24 * 3_600_000  # a repair registered ≤ 1 day before explains it
    idle_window_ms: int = 3 * 3_600_000  # judged window of the idle-scale rule
    idle_baseline_ms: int = 3 * 3_600_000  # the scale's own share, measured just before
    idle_min_history: int = 10  # baseline sales needed to judge a scale at all
    idle_min_expected: float = 8.0  # too few expected sales say nothing
    idle_alpha: float = 1e-6  # Poisson tail: ≈ 0.03 % of honest scales a month (9 tests/day)
    price_tolerance_fen_per_kg: int = 0  # registered price must match exactly
    impact_confirm_sales: int = 3  # sales of a day short beyond the deviation by impact
    zero_confirm_reports: int = 3  # idle reports in a row showing one offset, sales between


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    severity: str  # info | low | medium | high | critical
    title: str
    legal_basis: str
    ts_ms: int
    device: str
    market: str
    dedup_key: str
    merchant_id: int | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)


def _f(kind: str, sev: str, title: str, basis: str, scale: ScaleCtx, ts: int, key: str,
       merchant_id: int | None, **evidence: Any) -> Finding:
    return Finding(kind, sev, title, basis, ts, scale.device, scale.market,
                   f"{kind}:{scale.device}:{key}", merchant_id, evidence)


@dataclass(frozen=True, slots=True)
class TareHabit:
    """What the merchant's own earlier sales say about trays (evidence for ``tare-omission``).

    ``basis`` "plu": the window is the merchant's last sales of the same PLU on this scale
    earlier the same market day; "merchant": the PLU had fewer than ``tray_habit_min`` of
    them, so the window is the merchant's last sales of any tray-sold goods there.
    ``breaks``: consecutive tray sales ending with this one that were untared although
    their PLU had a taring habit (untared sales of a PLU the merchant never tares are
    neutral; a tared sale ends it).
    """

    basis: str  # "plu" | "merchant"
    window: int
    tared: int
    typical_tare_mg: int  # median tare of the tared sales of the window (0: none tared)
    breaks: int

    def holds(self, params: DetectorParams) -> bool:
        return (self.window >= params.tray_habit_min
                and self.tared >= params.tray_habit_share * self.window)


def _window(today: Sequence[Mapping[str, Any]], i: int,
            params: DetectorParams) -> tuple[str, list[Mapping[str, Any]]]:
    """The habit window of sale ``i``: the PLU's last sales before it, or, with fewer than
    ``tray_habit_min`` of them, the merchant's last tray sales (newest first)."""
    plu, m = today[i].get("plu"), params.tray_habit_sales
    same: list[Mapping[str, Any]] = []
    anyplu: list[Mapping[str, Any]] = []
    for j in range(i - 1, max(-1, i - 1 - params.tray_lookback_sales), -1):
        r = today[j]
        if len(anyplu) < m:
            anyplu.append(r)
        if r.get("plu") == plu:
            same.append(r)
            if len(same) == m:
                break
    if len(same) >= params.tray_habit_min:
        return "plu", same
    return "merchant", anyplu


def _tared(r: Mapping[str, Any]) -> bool:
    return int(r.get("tare_mg") or 0) > 0


def _habit_holds(today: Sequence[Mapping[str, Any]], i: int, params: DetectorParams) -> bool:
    _, w = _window(today, i, params)
    n = sum(1 for r in w if _tared(r))
    return len(w) >= params.tray_habit_min and n >= params.tray_habit_share * len(w)


def tray_history_sales(params: DetectorParams = DetectorParams()) -> int:
    """How many of a scale's latest sales before the judged one :func:`tare_habit` can use
    (the break run's ``2 × tray_habit_sales``, each with its look-back)."""
    return params.tray_lookback_sales + 2 * params.tray_habit_sales


def tare_habit(tray_sales: Sequence[Mapping[str, Any]], *,
               params: DetectorParams = DetectorParams()) -> TareHabit:
    """The taring habit behind the last of ``tray_sales``.

    ``tray_sales``: one merchant's sales of tray-sold goods on one scale, oldest first,
    the sale to judge last (keys ``ts_ms``, ``plu``, ``tare_mg``). Only those of its market
    day (CST) count: a habit of yesterday (another shift's merchant on an unregistered
    shared scale, a stall that changed how it packs) is not today's evidence. The run of
    breaks looks back over at most ``2 × tray_habit_sales`` sales. Pure; the caller reads
    the sales.
    """
    k, day = len(tray_sales), market_day(int(tray_sales[-1]["ts_ms"]))
    while k > 0 and market_day(int(tray_sales[k - 1]["ts_ms"])) == day:
        k -= 1
    today = tray_sales[k:]
    i = len(today) - 1
    basis, w = _window(today, i, params)
    tares = sorted(int(r.get("tare_mg") or 0) for r in w if _tared(r))
    breaks = 0
    for j in range(i, max(-1, i - 2 * params.tray_habit_sales), -1):
        if breaks >= params.tray_confirm_sales or _tared(today[j]):
            break
        if _habit_holds(today, j, params):
            breaks += 1
    return TareHabit(basis, len(w), len(tares), tares[len(tares) // 2] if tares else 0,
                     breaks)


def check_sale(sale: Mapping[str, Any], scale: ScaleCtx, *, price: RegisteredPrice | None = None,
               habit: TareHabit | None = None,
               params: DetectorParams = DetectorParams()) -> list[Finding]:
    """Rules on one stored sale row (keys as in the ``sales`` table).

    ``habit``: the merchant's taring habit for this sale (:func:`tare_habit`), if the
    caller read it; without one an untared tray-goods sale is only an observation.
    """
    out: list[Finding] = []
    e = scale.e_mg
    ts, seq, mid = int(sale["ts_ms"]), int(sale["seq"]), sale.get("merchant_id")
    net, settled, peak = int(sale["net_mg"]), int(sale["settled_mg"]), int(sale["peak_mg"])
    if sale.get("unsettled_commit"):
        out.append(_f(
            "impact", "high", "未稳定即计价 (冲击法) Sale taken before the pan settled",
            LEGAL_CHEATING, scale, ts, f"{seq}", mid, seq=seq, net_mg=net, settled_mg=settled,
            peak_mg=peak, gain_mg=net - settled, e_mg=e,
            stable_device=bool(sale.get("stable_device")),
            stable_software=bool(sale.get("stable_software"))))
    category = price.category if price else None
    unit = sale.get("unit_price_fen_per_kg")
    if (category in params.tray_categories and int(sale.get("tare_mg") or 0) == 0
            and net >= params.tray_min_net_e * e):
        out += _tare_rule(sale, scale, category, habit, params)
    amount = sale.get("amount_fen")
    if unit is not None and amount is not None:
        out += _amount_rule(sale, scale, int(unit), int(amount))
    if unit is not None and price is not None:
        reg = price.unit_price_fen_per_kg
        u = int(unit)
        if abs(u - reg) > params.price_tolerance_fen_per_kg:
            trick = next((k for k, factor in (("x0.01", 100), ("x0.1", 10)) if u * factor == reg),
                         None)
            if trick:
                out.append(_f(
                    "price-decimal-trick", "high", "单价小数点作弊 Unit price entered ×0.01/×0.1",
                    LEGAL_PRICE, scale, ts, f"{seq}", mid, seq=seq, plu=price.plu,
                    unit_price_fen_per_kg=u, registered_fen_per_kg=reg, pattern=trick))
            else:
                out.append(_f(
                    "price-mismatch", "medium", "单价与登记价格不符 Unit price differs from the "
                    "registered price", LEGAL_PRICE, scale, ts, f"{seq}", mid, seq=seq,
                    plu=price.plu, unit_price_fen_per_kg=u, registered_fen_per_kg=reg))
    if unit is not None or category is not None:
        cat = (mt.GoodsCategory(category) if category is not None
               and category in mt.GoodsCategory.__members__.values() else None)
        try:
            suits = mt.scale_suits_goods(
                e, scale.max_mg, mt.AccuracyClass(scale.accuracy_class), category=cat,
                unit_price_fen_per_kg=None if cat else (int(unit) if unit is not None else None),
                weight_mg=min(max(net, 0), scale.max_mg))
        except mt.MetrologyError:
            suits = True  # a scale outside its class tables is reported elsewhere
        if not suits:
            dev = mt.retail_negative_deviation_mg(
                min(max(net, 0), scale.max_mg), category=cat,
                unit_price_fen_per_kg=None if cat else (int(unit) if unit is not None else None))
            mpe = mt.mpe_mg(min(max(net, 0), scale.max_mg), e_mg=e,
                            accuracy_class=mt.AccuracyClass(scale.accuracy_class),
                            stage=mt.Stage.IN_SERVICE)
            out.append(_f(
                "scale-too-coarse", "medium", "秤的准确度不适合所售商品 Scale too coarse for "
                "the goods (Art. 3)", LEGAL_ART3, scale, ts, f"{sale.get('plu') or unit}", mid,
                seq=seq, e_mg=e, net_mg=net, unit_price_fen_per_kg=unit, category=category,
                mpe_in_service_mg=str(mpe), negative_deviation_mg=dev))
    return out


def _tare_rule(sale: Mapping[str, Any], scale: ScaleCtx, category: str | None,
               habit: TareHabit | None, params: DetectorParams) -> list[Finding]:
    """Tray goods, tare 0: ``tare-omission`` on the merchant's own evidence of a tray,
    else the day's ``untared-tray-goods`` observation."""
    ts, seq, mid = int(sale["ts_ms"]), int(sale["seq"]), sale.get("merchant_id")
    net, day = int(sale["net_mg"]), market_day(ts)
    plausible = habit is not None and (
        net - habit.typical_tare_mg >= params.tray_min_net_e * scale.e_mg)
    if habit is None or not habit.holds(params) or not habit.breaks or not plausible:
        return [_f("untared-tray-goods", "info", "托盘类商品未去皮 (无托盘证据) Tray goods "
                   "sold with tare 0, no evidence of a tray", LEGAL_TARE, scale, ts, f"{day}",
                   mid, seq=seq, net_mg=net, plu=sale.get("plu"), category=category,
                   habit=None if habit is None else _habit_ev(habit))]
    unit = sale.get("unit_price_fen_per_kg")
    ev = dict(seq=seq, net_mg=net, plu=sale.get("plu"), category=category,
              habit=_habit_ev(habit), tray_estimate_mg=habit.typical_tare_mg,
              overcharge_estimate_fen=None if unit is None
              else amount_fen(habit.typical_tare_mg, int(unit)))
    out = [_f("tare-omission", "medium", "托盘未去皮 (连盘出售) Tray sold with the goods: the "
              "merchant tares this goods' tray otherwise", LEGAL_CHEATING, scale, ts, f"{day}",
              mid, **ev)]
    if habit.breaks >= params.tray_confirm_sales:
        out.append(_f("tare-omission", "high", "持续连盘出售 Trays no longer tared: "
                      f"{habit.breaks} sales in a row against the merchant's habit",
                      LEGAL_CHEATING, scale, ts, f"{day}:persistent", mid, **ev))
    return out


def _habit_ev(h: TareHabit) -> dict[str, Any]:
    return {"basis": h.basis, "window": h.window, "tared": h.tared,
            "typical_tare_mg": h.typical_tare_mg, "breaks": h.breaks}


def _amount_rule(sale: Mapping[str, Any], scale: ScaleCtx, unit: int,
                 amount: int) -> list[Finding]:
    """An amount above what every lawful rounding of weight × price allows overcharges;
    one below is in the consumer's favour (抹零) and no finding."""
    net = int(sale["net_mg"])
    lawful = lawful_amounts_fen(net, unit, e_mg=scale.e_mg)
    most = max(lawful.values())
    if amount <= most:
        return []
    ts, seq = int(sale["ts_ms"]), int(sale["seq"])
    return [_f("amount-mismatch", "high", "金额超过重量×单价 Amount above weight × price under "
               "any lawful rounding", LEGAL_PRICE, scale, ts, f"{seq}", sale.get("merchant_id"),
               seq=seq, net_mg=net, unit_price_fen_per_kg=unit, amount_fen=amount,
               expected_amount_fen=amount_fen(net, unit), max_lawful_amount_fen=most,
               overcharge_fen=amount - most,
               lawful_amounts_fen={str(k): v for k, v in lawful.items()})]


def check_zero(ev: Mapping[str, Any], scale: ScaleCtx, *, merchant_id: int | None = None,
               params: DetectorParams = DetectorParams()) -> list[Finding]:
    """An idle-pan window whose mean lies outside the zero-setting accuracy (±0.25 e)."""
    if int(ev["duration_ms"]) < params.zero_min_window_ms:
        return []
    limit = mt.zero_setting_accuracy_mg(scale.e_mg)
    mean = int(ev["mean_mg"])
    if abs(mean) <= limit:
        return []
    hour = int(ev["ts_ms"]) // 3_600_000
    return [_f("zero-offset", "high" if mean > 0 else "medium",
               "空秤零点偏移 (预留底数) Empty pan does not read zero", LEGAL_ZERO, scale,
               int(ev["ts_ms"]), f"{hour}", merchant_id, mean_mg=mean,
               spread_mg=int(ev["spread_mg"]), limit_mg=str(limit), e_mg=scale.e_mg,
               offset_e=str(round(mean / scale.e_mg, 2)), duration_ms=int(ev["duration_ms"]))]


def deviation_of(net_mg: int, *, category: str | None,
                 unit_price_fen_per_kg: int | None) -> int | None:
    """The legal negative deviation (附表1/2) of a sale of ``net_mg``: by the goods' category
    if it is one the tables list, else by the unit price band; None where no rule applies
    (live fish, water-soaked goods, beyond the table, neither known)."""
    cat = (mt.GoodsCategory(category) if category is not None
           and category in mt.GoodsCategory.__members__.values() else None)
    if cat is None and unit_price_fen_per_kg is None:
        return None
    try:
        return mt.retail_negative_deviation_mg(max(net_mg, 0), category=cat,
                                               unit_price_fen_per_kg=unit_price_fen_per_kg)
    except mt.MetrologyError:
        return None


def check_impact_day(impacts: Sequence[Mapping[str, Any]], scale: ScaleCtx, *,
                     params: DetectorParams = DetectorParams()) -> list[Finding]:
    """Repeated impact sales of one market day: evidence that would stand on its own.

    ``impacts``: the scale's sales of one market day committed while unsettled (keys of the
    ``sales`` table plus ``category``, or the caller's ``deviation_mg``), oldest first. A sale
    counts when it was committed above the weight the pan settled to by more than the legal
    negative deviation of its goods at the committed weight: the consumer paid for ``net_mg``
    and received ``settled_mg``, both read by the same scale seconds apart (no drip, no second
    scale's error between them). One such sale can be a hasty key press during an overshoot;
    ``impact_confirm_sales`` of them in a day is short weight beyond the tolerance as a
    practice, whatever the intent (零售商品称重计量监督管理办法 第五条). One finding a day,
    at the sale that completed the evidence (the same whichever batches the day arrived in).
    """
    short = []
    for r in impacts:
        net, settled = int(r["net_mg"]), int(r["settled_mg"])
        limit = r["deviation_mg"] if "deviation_mg" in r else deviation_of(
            net, category=r.get("category"), unit_price_fen_per_kg=r.get("unit_price_fen_per_kg"))
        if limit is not None and net - settled > limit:
            short.append({"seq": int(r["seq"]), "ts_ms": int(r["ts_ms"]), "net_mg": net,
                          "settled_mg": settled, "short_mg": net - settled,
                          "limit_mg": limit})
    k = params.impact_confirm_sales
    if len(short) < k:
        return []
    first = short[:k]  # the finding is the sale that completed the evidence, whatever batch
    ts = first[-1]["ts_ms"]
    mid = next(r.get("merchant_id") for r in impacts if int(r["seq"]) == first[-1]["seq"])
    return [_f("impact-repeated", "critical",
               f"多次冲击计价且短秤超出负偏差 {k} sales committed above the settled "
               "weight by more than the legal deviation", LEGAL_CHEATING, scale, ts,
               f"{market_day(ts)}", mid, sales=first, count=k,
               short_total_mg=sum(x["short_mg"] for x in first))]


def check_zero_day(zeros: Sequence[Mapping[str, Any]], day_sales: Sequence[Mapping[str, Any]],
                   scale: ScaleCtx, *, merchant_id: int | None = None,
                   params: DetectorParams = DetectorParams()) -> list[Finding]:
    """A positive offset on the empty pan that persists across idle periods with sales
    between them (预留底数 / a preset base).

    ``zeros``: the scale's judged idle-pan reports of one market day (``ts_ms``, ``mean_mg``),
    oldest first; ``day_sales``: its sales of that day (``ts_ms``, ``merchant_id``,
    ``deviation_mg``: the legal negative deviation of each, :func:`deviation_of`, None where
    none applies); the finding names ``merchant_id`` or else the seller of the last sale it
    cites. Reports with no sale between are parts of one idle period. Every report of
    ``zero_confirm_reports`` idle periods in a row must read more than the median deviation of
    the sales between them (and more than the ±0.25 e zero-setting accuracy) above zero and all
    agree within 1 e (one offset, not a hand resting or goods taken off): the merchant saw a
    weight on the empty pan, sold on it and did not zero it, and the sales between carried the
    offset beyond their tolerance. Honest debris of that size on the pan is sold with the goods
    as well. One finding a day, at the first report that completed the evidence (the same
    whichever batches the day arrived in).
    """
    if not zeros:
        return []
    times = sorted(int(r["ts_ms"]) for r in day_sales)
    devs = {int(r["ts_ms"]): r.get("deviation_mg") for r in day_sales}
    sellers = {int(r["ts_ms"]): r.get("merchant_id") for r in day_sales}
    periods: list[list[Mapping[str, Any]]] = [[zeros[0]]]
    gaps: list[list[int]] = []  # the sale times between consecutive periods
    for a, z in itertools.pairwise(zeros):
        lo, hi = int(a["ts_ms"]), int(z["ts_ms"])
        inside = times[bisect.bisect_right(times, lo):bisect.bisect_left(times, hi)]
        if inside:
            periods.append([z])
            gaps.append(inside)
        else:
            periods[-1].append(z)
    k = params.zero_confirm_reports
    accuracy = int(mt.zero_setting_accuracy_mg(scale.e_mg))
    for end in range(k, len(periods) + 1):
        sold = [t for g in gaps[end - k:end - 1] for t in g]
        limits = sorted(d for d in (devs.get(t) for t in sold) if d is not None)
        if not limits:
            continue
        floor = max(limits[len(limits) // 2], accuracy)
        for n in range(1, len(periods[end - 1]) + 1):
            last = [z for p in periods[end - k:end - 1] for z in p] + periods[end - 1][:n]
            means = [int(z["mean_mg"]) for z in last]
            if min(means) > floor and max(means) - min(means) <= scale.e_mg:
                ts = int(last[-1]["ts_ms"])
                return [_f("zero-offset-persistent", "critical",
                           "空秤持续显示重量并照常销售 (预留底数) The empty pan showed the "
                           f"same weight across {k} idle periods with sales between",
                           LEGAL_CHEATING, scale, ts, f"{market_day(ts)}",
                           merchant_id if merchant_id is not None else sellers.get(sold[-1]),
                           means_mg=means, report_times_ms=[int(z["ts_ms"]) for z in last],
                           sales_between=[len(g) for g in gaps[end - k:end - 1]],
                           deviation_mg=limits[len(limits) // 2], e_mg=scale.e_mg)]
    return []


def check_counter(ev: Mapping[str, Any], scale: ScaleCtx, *, repair_times_ms: Sequence[int],
                  last_known: str | None = None, merchant_id: int | None = None,
                  params: DetectorParams = DetectorParams()) -> list[Finding]:
    """A counter / calibration / identity change with no registered repair shortly before.

    The value changed from is the agent's ``old``; where the agent has none (its first
    report, or it lost its memory) it is ``last_known``, the value the server stored last
    for this device and name. Neither known: this report is the baseline, no finding.
    The same value again: nothing changed.
    """
    ts, new = int(ev["ts_ms"]), ev.get("new")
    old = ev.get("old")
    before = old if old is not None else last_known
    if before is None or str(before) == str(new):
        return []
    if any(ts - params.repair_grace_ms <= r <= ts for r in repair_times_ms):
        return []
    return [_f("calibration-change", "critical",
               "计量参数或计数器变更且无维修检定记录 Calibration / counter changed without a "
               "registered repair", LEGAL_SEAL, scale, ts, f"{ev['seq']}", merchant_id,
               name=ev.get("name"), old=old, new=new, seq=int(ev["seq"]),
               server_last_value=last_known)]


def poisson_cdf(n: int, lam: float) -> float:
    """P(X ≤ n) for X ~ Poisson(lam) (no scipy)."""
    if lam <= 0:
        return 1.0
    term = math.exp(-lam)
    total = term
    for k in range(1, n + 1):
        term *= lam / k
        total += term
    return min(total, 1.0)


def binomial_cdf(n: int, trials: int, q: float) -> float:
    """P(X ≤ n) for X ~ Binomial(trials, q), summed in log space (no scipy)."""
    if q <= 0:
        return 1.0
    if q >= 1:
        return 1.0 if n >= trials else 0.0
    lq, l1q = math.log(q), math.log1p(-q)
    total = 0.0
    for k in range(0, min(n, trials) + 1):
        total += math.exp(math.lgamma(trials + 1) - math.lgamma(k + 1)
                          - math.lgamma(trials - k + 1) + k * lq + (trials - k) * l1q)
    return min(total, 1.0)


def check_idle_scales(now_counts: Mapping[str, int], before_counts: Mapping[str, int],
                      scales: Mapping[str, ScaleCtx], *, window_end_ms: int,
                      params: DetectorParams = DetectorParams(),
                      merchants: Mapping[str, int | None] | None = None) -> list[Finding]:
    """A trade scale whose sales collapse while its market's do not (second, untracked scale).

    Each scale is compared with **its own** share of the market. Under "nothing changed"
    a scale keeps its share, so of its ``n + b`` sales over the judged window and the
    baseline window before it, the judged window holds a Binomial(``n + b``, ``q``) number,
    ``q`` being the share of the *other* scales' sales that fell in the judged window
    (conditioning on ``n + b`` accounts for the noise of the scale's own baseline). The
    tail ``P(X ≤ n)`` below ``idle_alpha`` flags it. The trading-day pattern cancels (it
    moves the whole market), and merchants that always sell little are compared with
    themselves, not with busy peers. Only scales that showed they were on (any event or
    reading in the window) are given.
    """
    market_now = sum(now_counts.values())
    market_before = sum(before_counts.get(d, 0) for d in now_counts)
    out = []
    bucket = window_end_ms // 3_600_000
    for device, n in sorted(now_counts.items()):
        b = before_counts.get(device, 0)
        others_now, others_before = market_now - n, market_before - b
        if b < params.idle_min_history or others_before <= 0 or others_now <= 0:
            continue
        q = others_now / (others_now + others_before)
        expected = (n + b) * q
        if expected < params.idle_min_expected:
            continue
        p = binomial_cdf(n, n + b, q)
        if p >= params.idle_alpha:
            continue
        sc = scales[device]
        out.append(_f("idle-while-peers-trade", "medium",
                      "溯源秤交易骤减而同市场照常 Scale's sales collapsed while its market trades",
                      LEGAL_TRACE, sc, window_end_ms, f"{bucket}",
                      (merchants or {}).get(device), sales=n, expected=round(expected, 1),
                      p_value=f"{p:.2e}", baseline_sales=b, window_ms=params.idle_window_ms,
                      baseline_ms=params.idle_baseline_ms))
    return out
