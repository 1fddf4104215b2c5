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

Rules over more than one event live beside this module and share its types
(:class:`ScaleCtx`, :class:`Finding`, :class:`DetectorParams`, :func:`scale_finding`): the
evidence of a market day, ``impact-repeated`` and ``zero-offset-persistent``, in
:mod:`~gateway_server.detect.rules.day`; the window rule ``idle-while-peers-trade`` (6) in
:mod:`~gateway_server.detect.rules.idle`; ``offline-trading-hours`` in
:mod:`~gateway_server.detect.rules.offline`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway_server.detect.rules.legal import (
    LEGAL_ART3,
    LEGAL_CHEATING,
    LEGAL_PRICE,
    LEGAL_SEAL,
    LEGAL_TARE,
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


def scale_finding(kind: str, sev: str, title: str, basis: str, scale: ScaleCtx, ts: int,
                  key: str, merchant_id: int | None, **evidence: Any) -> Finding:
    """A finding on ``scale`` whose dedup key is ``kind:device:key``."""
    return Finding(kind, sev, title, basis, ts, scale.device, scale.market,
                   f"{kind}:{scale.device}:{key}", merchant_id, evidence)


_f = scale_finding  # the rules below (and in day.py, idle.py) read best with a short name


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
