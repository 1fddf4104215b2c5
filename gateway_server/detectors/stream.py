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
* ``tare-omission`` (5/§4 连盘出售): a sale of tray-sold goods with tare 0.
* ``price-decimal-trick`` / ``price-mismatch`` / ``amount-mismatch`` (5): unit price off
  the registered price by ×0.01 / ×0.1, off otherwise, or amount ≠ rounded weight × price.
* ``scale-too-coarse`` (5, Art. 3): the scale's in-service MPE exceeds the goods' negative
  deviation at the sold weight.
* ``calibration-change`` (4): a CAL/CFG counter, calibration register or software id
  changed with no registered repair or verification within ``repair_grace_ms`` before.
* ``idle-while-peers-trade`` (6) and ``offline-trading-hours`` are window rules over a
  market (see :func:`check_idle_scales`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from weighing import metrology as mt
from weighing.units import amount_fen

LEGAL_CHEATING = "计量法 第九条、零售商品称重计量监督管理办法 第五条 (禁止利用计量器具作弊)"
LEGAL_ZERO = "OIML R76-1 / JJG 539 置零准确度 ±0.25 e"
LEGAL_PRICE = "价格法 第十三条 明码标价; 零售商品称重计量监督管理办法 第四条"
LEGAL_ART3 = "零售商品称重计量监督管理办法 第三条 (计量器具误差应小于商品负偏差)"
LEGAL_SEAL = "JJG 539 / OIML G 18 事件计数器: 计数变化等同破坏封印"
LEGAL_TRACE = "放心消费 智慧溯源秤 使用规定 (市场开办者管理责任, 总局令第94号)"


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
    repair_grace_ms: int = 24 * 3_600_000  # a repair registered ≤ 1 day before explains it
    idle_window_ms: int = 3 * 3_600_000  # judged window of the idle-scale rule
    idle_baseline_ms: int = 3 * 3_600_000  # the scale's own share, measured just before
    idle_min_history: int = 10  # baseline sales needed to judge a scale at all
    idle_min_expected: float = 8.0  # too few expected sales say nothing
    idle_alpha: float = 1e-6  # Poisson tail: ≈ 0.03 % of honest scales a month (9 tests/day)
    price_tolerance_fen_per_kg: int = 0  # registered price must match exactly


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


def check_sale(sale: Mapping[str, Any], scale: ScaleCtx, *, price: RegisteredPrice | None = None,
               params: DetectorParams = DetectorParams()) -> list[Finding]:
    """Rules on one stored sale row (keys as in the ``sales`` table)."""
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
    if (category in params.tray_categories and int(sale.get("tare_mg") or 0) == 0
            and net >= params.tray_min_net_e * e):
        out.append(_f(
            "tare-omission", "medium", "托盘未去皮 (连盘出售) Tray sold with the goods",
            LEGAL_CHEATING, scale, ts, f"{seq}", mid, seq=seq, net_mg=net, plu=sale.get("plu"),
            category=category))
    unit = sale.get("unit_price_fen_per_kg")
    amount = sale.get("amount_fen")
    if unit is not None and amount is not None:
        expected = amount_fen(net, int(unit))
        if int(amount) != expected:
            out.append(_f(
                "amount-mismatch", "high", "金额与重量×单价不符 Amount is not weight × price",
                LEGAL_PRICE, scale, ts, f"{seq}", mid, seq=seq, net_mg=net,
                unit_price_fen_per_kg=int(unit), amount_fen=int(amount),
                expected_amount_fen=expected))
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
        cat = mt.GoodsCategory(category) if category in mt.GoodsCategory.__members__.values() \
            else None
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
                  merchant_id: int | None = None,
                  params: DetectorParams = DetectorParams()) -> list[Finding]:
    """A counter / calibration / identity change with no registered repair shortly before."""
    ts = int(ev["ts_ms"])
    if any(ts - params.repair_grace_ms <= r <= ts for r in repair_times_ms):
        return []
    return [_f("calibration-change", "critical",
               "计量参数或计数器变更且无维修检定记录 Calibration / counter changed without a "
               "registered repair", LEGAL_SEAL, scale, ts, f"{ev['seq']}", merchant_id,
               name=ev.get("name"), old=ev.get("old"), new=ev.get("new"), seq=int(ev["seq"]))]


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
