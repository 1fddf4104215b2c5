"""Evidence of a market day: rules over one scale's sales and idle-pan reports of a day.

Pure, as :mod:`gateway_server.detect.rules.stream` (whose types they use); the caller reads
the day (:mod:`gateway_server.detect.day_scan`). Numbers refer to domain.md §4 derived rules:

* ``impact-repeated`` (2, evidence of a day): ``impact_confirm_sales`` sales of one market
  day committed above the weight the pan then settled to by more than the legal negative
  deviation of the goods (附表1/2): each is a sale short beyond the tolerance by the scale's
  own readings (:func:`check_impact_day`).
* ``zero-offset-persistent`` (3, evidence of a day): ``zero_confirm_reports`` idle-pan reports
  in a row showing one positive offset (within 1 e) larger than the negative deviation of the
  sales between them, with sales between each: every one of those sales carried the offset
  (:func:`check_zero_day`).

Each gives one finding a day, the same whichever batches the day arrived in.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from gateway_server.detect.rules.legal import LEGAL_CHEATING
from gateway_server.detect.rules.stream import (
    DetectorParams,
    Finding,
    ScaleCtx,
    market_day,
    scale_finding as _f,
)
from weighing import metrology as mt


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
