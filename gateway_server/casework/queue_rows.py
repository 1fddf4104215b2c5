"""What an inspector reads in a queue row, and findings grouped into incidents.

* **Where**: the market's name, the scale's model and the merchant and 摊位号 from the
  binding valid at the time of the evidence (the newest finding of the strongest day; for a
  scale queued only as overdue, now). A finding stored without a merchant id (an overdue
  verification, a bad signature) still gets the merchant the scale was bound to.
* **How much**: :func:`shortfall` reads the evidence the detectors stored and states the
  shortfall it shows, in integer mg and fen (exact; formatting is the page's job):
  ``short_mg`` of ``sold_mg`` over ``sales`` evidenced sales, their money ``fen``, and
  ``fen_per_day``, an estimate for the whole market day of that scale: the evidenced
  fraction applied to the day's turnover (impact, re-weighs, residual gain), the offset
  priced at each sale's unit price (a preset base), or the evidenced overcharges summed
  (trays, amounts). Estimates round down (to the fen); ``basis`` names the method.
* **Incidents**: one per (scale, kind): count, first and last time, the newest finding,
  the highest severity and the findings per status, instead of a row per finding.
* **The page**: :func:`queue_page` filters the ranked queue (a kind among its reasons, a
  reason of at least a severity, an open task or none), pages it and adds the above.

Reads only; the risk scoring stays in :mod:`gateway_server.detect.risk` / ``inspection.assess``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select

from gateway_server.casework import inspection as insp
from gateway_server.detect import risk
from gateway_server.registry.binding import merchant_at
from gateway_server.store.tables import (
    BIGINT_MAX,
    bindings,
    findings,
    markets,
    merchants,
    sales,
    scales,
)
from gateway_server.store.tables_workflow import inspection_tasks

#: kinds whose evidence states a quantity, strongest claim first
QUANTIFIED = ("impact-repeated", "zero-offset-persistent", "reweigh-short", "tare-omission",
              "amount-mismatch", "residual-gain", "residual-both", "residual-additive", "impact")


def _day_sales(conn: Connection, device: str, day_ms: int) -> list[Any]:
    return list(conn.execute(select(sales.c.seq, sales.c.id, sales.c.net_mg, sales.c.amount_fen,
                                    sales.c.unit_price_fen_per_kg)
                             .where(sales.c.device == device, sales.c.ts_ms >= day_ms,
                                    sales.c.ts_ms < day_ms + risk.DAY_MS)))


def _fen(mass_mg: int, price_fen_per_kg: int | None) -> int:
    """Money of a mass at a unit price, rounded down to the fen (an estimate, never more)."""
    return 0 if not price_fen_per_kg else mass_mg * int(price_fen_per_kg) // 1_000_000


def shortfall(kind: str, evidences: Sequence[Mapping[str, Any]],
              day: Sequence[Any]) -> dict[str, Any] | None:
    """The shortfall ``evidences`` (findings of ``kind`` of one scale-day) show, with the
    day's sales ``day`` (rows with seq, id, net_mg, amount_fen, unit_price_fen_per_kg)."""
    by_seq = {int(s.seq): s for s in day}
    by_id = {int(s.id): s for s in day}
    turnover = sum(int(s.amount_fen or 0) for s in day)
    out: dict[str, Any] = {"kind": kind, "day_sales": len(day), "day_turnover_fen": turnover}

    def scaled(short: int, sold: int, fen: int, n: int, basis: str) -> dict[str, Any]:
        per_day = turnover * short // sold if sold > 0 else None
        return out | {"short_mg": short, "sold_mg": sold, "sales": n, "fen": fen,
                      "fen_per_day": max(per_day, fen) if per_day is not None else fen,
                      "basis": basis}

    if kind == "impact-repeated":
        rows = [r for ev in evidences for r in ev.get("sales") or []]
        short = sum(int(r["short_mg"]) for r in rows)
        sold = sum(int(r["net_mg"]) for r in rows)
        fen = sum(_fen(int(r["short_mg"]), _price(by_seq.get(int(r["seq"])))) for r in rows)
        return scaled(short, sold, fen, len(rows), "share-of-turnover") if rows else None
    if kind == "impact":
        rows = [ev for ev in evidences if int(ev.get("gain_mg") or 0) > 0]
        short = sum(int(ev["gain_mg"]) for ev in rows)
        sold = sum(int(ev["net_mg"]) for ev in rows)
        fen = sum(_fen(int(ev["gain_mg"]), _price(by_seq.get(int(ev.get("seq") or -1))))
                  for ev in rows)
        return scaled(short, sold, fen, len(rows), "evidenced-sales") | {
            "fen_per_day": fen} if rows else None
    if kind == "reweigh-short":
        rows = [ev for ev in evidences if ev.get("shortfall_mg") is not None]
        short = sum(int(ev["shortfall_mg"]) for ev in rows)
        sold = sum(int(ev["sold_mg"] or 0) for ev in rows)
        fen = sum(_fen(int(ev["shortfall_mg"]), _price(by_id.get(int(ev.get("sale_id") or -1))))
                  for ev in rows)
        return scaled(short, sold, fen, len(rows), "share-of-turnover") if rows else None
    if kind == "zero-offset-persistent":
        means = sorted(int(m) for ev in evidences for m in ev.get("means_mg") or [])
        if not means:
            return None
        offset = means[len(means) // 2]
        sold = sum(int(s.net_mg) for s in day)
        fen = sum(_fen(offset, _price(s)) for s in day)
        return out | {"short_mg": offset * len(day), "sold_mg": sold, "sales": len(day),
                      "per_sale_mg": offset, "fen": fen, "fen_per_day": fen,
                      "basis": "offset-per-sale"}
    if kind == "tare-omission":
        rows = [ev for ev in evidences if ev.get("tray_estimate_mg")]
        if not rows:
            return None
        short = sum(int(ev["tray_estimate_mg"]) for ev in rows)
        sold = sum(int(ev.get("net_mg") or 0) for ev in rows)
        fen = sum(int(ev.get("overcharge_estimate_fen") or 0) for ev in rows)
        return out | {"short_mg": short, "sold_mg": sold, "sales": len(rows), "fen": fen,
                      "fen_per_day": fen, "basis": "evidenced-sales"}
    if kind == "amount-mismatch":
        fen = sum(int(ev.get("overcharge_fen") or 0) for ev in evidences)
        return out | {"short_mg": None, "sold_mg": None, "sales": len(evidences), "fen": fen,
                      "fen_per_day": fen, "basis": "evidenced-sales"} if evidences else None
    if kind.startswith("residual-"):
        ev = evidences[-1] if evidences else {}
        b, a = ev.get("b"), int(ev.get("a_mg") or 0)
        gain_ppm = round(float(b) * 1_000_000) if isinstance(b, (int, float)) and b == b else 0
        sold = sum(int(s.net_mg) for s in day)
        short = sold * gain_ppm // 1_000_000 + a * len(day)
        if short <= 0 or not day:
            return None
        fen = turnover * gain_ppm // 1_000_000 + sum(_fen(a, _price(s)) for s in day)
        return out | {"short_mg": short, "sold_mg": sold, "sales": len(day), "fen": max(fen, 0),
                      "fen_per_day": max(fen, 0), "basis": "fitted-error"}
    return None


def _price(sale: Any) -> int | None:
    return None if sale is None else sale.unit_price_fen_per_kg


def _binding_at(conn: Connection, device: str, ts_ms: int) -> int | None:
    return merchant_at(conn, device, ts_ms)


def row_context(conn: Connection, item: Mapping[str, Any], *, now_ms: int) -> dict[str, Any]:
    """Market, stall, merchant (binding at the time), model and shortfall of a queue item
    (an ``inspection.ScaleRisk`` as a dict)."""
    device = str(item["device"])
    day_ms = None if item.get("day_ms") is None else int(item["day_ms"])
    day_findings: list[Any] = []
    if day_ms is not None:
        day_findings = list(conn.execute(
            select(findings.c.kind, findings.c.ts_ms, findings.c.evidence,
                   findings.c.merchant_id)
            .where(findings.c.device == device, findings.c.status == "open",
                   findings.c.ts_ms >= day_ms, findings.c.ts_ms < day_ms + risk.DAY_MS)
            .order_by(findings.c.ts_ms)))
    at_ms = min(now_ms, max((int(f.ts_ms) for f in day_findings), default=now_ms))
    merchant_id = _binding_at(conn, device, at_ms)
    if merchant_id is None:
        merchant_id = item.get("merchant_id")
    m = conn.execute(select(merchants.c.name, merchants.c.stall_no).where(
        merchants.c.id == merchant_id)).first() if merchant_id is not None else None
    s = conn.execute(select(scales.c.model, scales.c.role, markets.c.name, markets.c.name_en)
                     .select_from(scales.outerjoin(markets, markets.c.id == scales.c.market))
                     .where(scales.c.device == device)).first()
    short = None
    if day_findings:
        counted = {r["kind"] for r in item.get("reasons", []) if r.get("counted")}
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for f in day_findings:
            by_kind.setdefault(f.kind, []).append(json.loads(f.evidence or "{}"))
        kinds = sorted(by_kind, key=lambda k: (k not in counted,
                                               QUANTIFIED.index(k) if k in QUANTIFIED else 99))
        day = _day_sales(conn, device, day_ms) \
            if day_ms is not None and any(k in QUANTIFIED for k in kinds) else []
        short = next((q for k in kinds if k in QUANTIFIED
                      and (q := shortfall(k, by_kind[k], day)) is not None), None)
    return {"merchant_id": merchant_id, "merchant_at_ms": at_ms,
            "merchant_name": m.name if m else None, "stall_no": m.stall_no if m else None,
            "market_name": s.name if s else None, "market_name_en": s.name_en if s else None,
            "scale_model": s.model if s else None, "scale_role": s.role if s else None,
            "shortfall": short}


def queue_item(r: insp.ScaleRisk) -> dict[str, Any]:
    """A ranked scale as a dict (its grounds as a list)."""
    return r.__dict__ | {"grounds": list(r.grounds)}


def queue_page(conn: Connection, *, now_ms: int, market: str | None = None,
               kind: str | None = None, severity: str | None = None, status: str | None = None,
               limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """The queue, filtered (``kind`` among its reasons, a reason of at least ``severity``,
    ``status`` "tasked": an open task for the scale, "untasked": none), then paged; each row
    with its context (:func:`row_context`) and ``task_open``."""
    rank = insp.SEVERITY_RANK
    tasked = {r.device for r in conn.execute(select(inspection_tasks.c.device).where(
        inspection_tasks.c.status == "open"))}
    items = []
    for r in insp.risk_ranking(conn, now_ms=now_ms, market=market, limit=BIGINT_MAX):
        if kind and not any(x["kind"] == kind for x in r.reasons):
            continue
        if severity and not any(rank.get(x["severity"], 0) >= rank[severity]
                                for x in r.reasons):
            continue
        if status and (r.device in tasked) != (status == "tasked"):
            continue
        items.append(r)
    page = [queue_item(r) for r in items[offset:offset + limit]]
    return [x | row_context(conn, x, now_ms=now_ms) | {"task_open": x["device"] in tasked}
            for x in page]


_SEV = case({"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4},
            value=findings.c.severity, else_=0)
_SEV_NAME = {0: "info", 1: "low", 2: "medium", 3: "high", 4: "critical"}


def incidents(conn: Connection, *, device: str | None = None, merchant_id: int | None = None,
              market: str | None = None, status: str | None = None,
              limit: int = 200) -> list[dict[str, Any]]:
    """Findings grouped by (scale, kind), newest incident first: count, first / last time,
    the newest finding's id and title, the highest severity, counts per status, and the
    incident's status (open while any of its findings is open, else confirmed if any was,
    else dismissed)."""
    f = findings.c
    q = (select(f.device, f.kind, func.count().label("n"), func.min(f.ts_ms).label("first_ms"),
                func.max(f.ts_ms).label("last_ms"), func.max(f.id).label("last_id"),
                func.max(_SEV).label("sev"), func.max(f.market).label("market"),
                func.max(f.merchant_id).label("merchant_id"),
                func.sum(case((f.status == "open", 1), else_=0)).label("open"),
                func.sum(case((f.status == "confirmed", 1), else_=0)).label("confirmed"),
                func.sum(case((f.status == "dismissed", 1), else_=0)).label("dismissed"))
         .group_by(f.device, f.kind).order_by(func.max(f.ts_ms).desc()).limit(limit))
    for col, val in ((f.device, device), (f.market, market)):
        if val is not None:
            q = q.where(col == val)
    if merchant_id is not None:
        # also the findings without a merchant id on the scales bound to the merchant
        bound = select(bindings.c.device).where(bindings.c.merchant_id == merchant_id)
        q = q.where(or_(f.merchant_id == merchant_id,
                        and_(f.merchant_id.is_(None), f.device.in_(bound))))
    rows = list(conn.execute(q))
    titles = {int(r.id): r.title for r in conn.execute(
        select(f.id, f.title).where(f.id.in_([int(r.last_id) for r in rows])))} if rows else {}
    out = []
    for r in rows:
        st = "open" if r.open else "confirmed" if r.confirmed else "dismissed"
        if status is not None and st != status:
            continue
        out.append({"device": r.device, "kind": r.kind, "market": r.market,
                    "merchant_id": r.merchant_id, "count": int(r.n),
                    "first_ms": int(r.first_ms), "last_ms": int(r.last_ms),
                    "last_id": int(r.last_id), "title": titles.get(int(r.last_id), ""),
                    "severity": _SEV_NAME[int(r.sev or 0)], "status": st,
                    "open": int(r.open or 0), "confirmed": int(r.confirmed or 0),
                    "dismissed": int(r.dismissed or 0)})
    return out


# -- the queue as CSV ----------------------------------------------------------------------

_KIND_ZH = {  # the queue's kinds in words for the export (the dashboard has i18n.js)
    "impact": "冲击法（未稳定计价）", "impact-repeated": "多次冲击计价（短秤超差）",
    "zero-offset": "零点偏移", "zero-offset-persistent": "空秤持续显示重量（预留底数）",
    "tare-omission": "未去皮", "untared-tray-goods": "托盘类商品未去皮（观察）",
    "amount-mismatch": "金额不符", "price-decimal-trick": "单价小数点作弊",
    "price-mismatch": "单价与登记不符", "scale-too-coarse": "秤准确度不适合",
    "calibration-change": "计量参数变更", "idle-while-peers-trade": "溯源秤闲置",
    "reweigh-short": "复秤短秤", "untracked-sales": "复秤商品无溯源记录",
    "offline-trading-hours": "交易时段离线", "k-factor-drift": "测量系数偏离",
    "bad-signature": "签名无效", "sequence-gap": "数据缺失（序号断档）",
    "identity-mismatch": "设备身份不符", "verification-overdue": "检定过期",
    "residual-gain": "残差：增益偏差", "residual-additive": "残差：固定偏差",
    "residual-both": "残差：增益与固定偏差", "residual-excess": "残差：超出法定误差",
    "not-judged": "未能判断（观察）", "complaint-overdue": "投诉逾期未答复",
}
_GROUNDS = {"evidence": ("证据达到门槛", "evidence above the threshold"),
            "verification-overdue": ("检定过期（法定理由）", "verification overdue (legal reason)")}


def _dec(value: int | None, unit: int, places: int, *, strip: bool = True) -> str:
    """An integer in mg / fen as g / kg / 元 text, exact (no float); money keeps its
    places (``strip=False``)."""
    if value is None:
        return ""
    sign, a = ("-" if value < 0 else ""), abs(value)
    whole, frac = divmod(a, unit)
    text = f"{sign}{whole}.{frac:0{places}d}"
    return text.rstrip("0").rstrip(".") if strip else text


def _title_en(title: str | None) -> str:
    """The English half of a finding title ("冲击法 Impact sale" → "Impact sale")."""
    import re

    m = re.search(r"\s[A-Z][a-z]", title or "")
    return (title or "")[m.start() + 1:].strip() if m else ""


def queue_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], *,
              lang: str = "zh") -> bytes:
    """The queue rows as CSV (UTF-8 with BOM, for Excel): masses in g, money in 元, kinds
    and grounds in words, the scale by stall and model."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([zh if lang == "zh" else en for en, zh in columns])
    en = lang != "zh"
    for i, r in enumerate(rows, 1):
        sf = r.get("shortfall") or {}
        kinds = [(_title_en(x["title"]) or x["kind"] if en
                  else _KIND_ZH.get(x["kind"], x["title"] or x["kind"]))
                 + (f" ×{x['count']}" if x["count"] > 1 else "") for x in r["reasons"]]
        stall = r.get("stall_no") or ""
        scale = ("fair scale" if en else "公平秤") if r.get("scale_role") == "fair" else \
            (f"{'stall' if en else '摊位'} {stall}".strip() if stall else "")
        scale = " · ".join(p for p in (scale, r.get("scale_model") or "") if p)
        values = {
            "rank": str(i), "market": (r.get("market_name_en") if en else None)
            or r.get("market_name") or r["market"], "stall_no": stall,
            "merchant": r.get("merchant_name") or "", "scale": scale,
            "evidence": f"{r['evidence']:.1f}",
            "grounds": "; ".join(_GROUNDS[g][1 if en else 0] for g in r["grounds"]),
            "kinds": "; ".join(kinds),
            "short_g": _dec(sf.get("short_mg"), 1000, 3),
            "sold_g": _dec(sf.get("sold_mg"), 1000, 3),
            "overcharged_yuan": _dec(sf.get("fen"), 100, 2, strip=False) if sf else "",
            "per_day_yuan": _dec(sf.get("fen_per_day"), 100, 2, strip=False),
            "test_loads_kg": " ".join(_dec(x, 1_000_000, 6) for x in r["test_loads_mg"]),
            "device": r["device"]}
        w.writerow([values[k] for k, _ in columns])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")
