"""The inspection workflow: risk → queue → task → result → card / list status.

* **Risk** per scale (:mod:`gateway_server.detect.risk`, docs/detection.md "The inspection
  queue"): each finding kind states the probability ``p`` that an honest scale shows it on
  a market day; per day the independent kinds combine, repeats count once, and the
  combination is calibrated into the probability that an honest scale has a day this
  strong. A scale enters the queue on a market day (since its last inspection) whose
  probability is at most ``risk.ALPHA_DAY`` (1e-4: ≈ 0.3 % of honest scales a month);
  what stays below is an observation, shown on the scale and merchant pages. An overdue
  verification (强制检定, ≤ 1 year) is a legal reason of its own: such a scale is in the
  queue whatever its evidence, after the scales with evidence. A merchant's risk is that
  of its strongest scale (a merchant with n scales: ≤ n × 1e-4 a day).
* **Test loads** (JJG 539 / OIML R76 verification practice): near Min (20 e), at the MPE
  band changes 500 e and 2,000 e, and Max — those within the scale's range.
* **Results**: each (load, indication) is judged against the **in-service** MPE
  (``weighing.metrology.mpe_mg``); any error beyond it fails the inspection.
* **Cards and lists** (集贸市场计量监督管理办法 红黄牌, domain.md §1): a failed inspection
  moves the merchant normal → yellow card → red card; established fraud (作弊) is a red
  card and the black list (黑榜) at once; a merchant with a passed inspection and no open
  finding for ``RED_LIST_CLEAN_MS`` goes on the red list (红榜). Every change is recorded
  in ``merchant_status_history`` with its reason, and the trust-code page shows it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Connection, and_, func, literal_column, or_, select

from gateway_server.casework import queue_sql
from gateway_server.detect import risk
from gateway_server.registry.binding import bound_at, devices_at, merchant_at
from gateway_server.store.tables import bindings, findings, merchants, scales
from gateway_server.store.tables_workflow import (
    inspection_results,
    inspection_tasks,
    status_history,
)
from weighing import metrology as mt

RED_LIST_CLEAN_MS = 90 * 86_400_000
# findings a passed metrological test refutes (the others — prices, signatures — it cannot)
MEASUREMENT_KINDS = frozenset({"zero-offset", "reweigh-short", "residual-gain",
                               "residual-additive", "residual-both", "residual-excess",
                               "calibration-change"})
OVERDUE = "verification-overdue"
OVERDUE_TITLE = "检定过期 Verification overdue"


def inspection_loads_mg(*, e_mg: int, max_mg: int, accuracy_class: str = "III") -> list[int]:
    """Near Min, at the class's MPE band changes (III: 500 e and 2,000 e; IIII: 50 e and
    200 e; II: 5,000 e and 20,000 e; I: 50,000 e and 200,000 e, OIML R76-1 Table 6) and
    Max, as far as they lie within the range."""
    cls = mt.AccuracyClass(accuracy_class)
    min_e = _min_capacity_e(e_mg, cls)
    changes = [u * e_mg for u, _ in mt.MPE_BANDS_E[cls][:-1] if u is not None]
    loads = {min_e * e_mg, *changes, max_mg}
    return sorted(x for x in loads if 0 < x <= max_mg)


def _min_capacity_e(e_mg: int, cls: mt.AccuracyClass) -> int:
    """Min in e (R76-1 Table 3; class II's depends on e); 20 e for an e outside the table."""
    try:
        return mt.min_capacity_e(e_mg, cls)
    except mt.MetrologyError:
        return 20


@dataclass(frozen=True)
class ScaleRisk:
    """One scale's evidence: its strongest market day since its last inspection."""

    device: str
    market: str
    merchant_id: int | None
    risk: int  # 10 × evidence, rounded: a sortable figure, not a legal quantity
    reasons: list[dict[str, Any]]
    test_loads_mg: list[int]
    evidence: float = 0.0  # −log10 p_honest_day: "honest odds 1 : 10^evidence"
    p_honest_day: float = 1.0  # P(an honest scale has a market day this strong)
    day_ms: int | None = None  # start (CST) of that market day
    in_queue: bool = False
    grounds: tuple[str, ...] = ()  # why it is in the queue: "evidence", OVERDUE


def _kind_days(conn: Connection, *, market: str | None = None, devices: set[str] | None = None,
               within: Any = None) -> dict[str, list[tuple[Any, risk.KindDay]]]:
    """Open findings per (device, kind, severity, market day) since the device's last
    inspection: one aggregate query (the count, the newest id and time of each group)."""
    last = (select(inspection_results.c.device,
                   func.max(inspection_results.c.ts_ms).label("last_ms"))
            .group_by(inspection_results.c.device).subquery())
    shifted = findings.c.ts_ms + literal_column(str(risk.MARKET_DAY_OFFSET_MS))
    day = (shifted - shifted % literal_column(str(risk.DAY_MS))).label("day0")
    q = (select(findings.c.device, findings.c.kind, findings.c.severity, day,
                func.count().label("n"), func.max(findings.c.id).label("last_id"),
                func.max(findings.c.ts_ms).label("last_ts"),
                func.max(findings.c.title).label("title"),
                func.max(findings.c.merchant_id).label("merchant_id"))
         .select_from(findings.outerjoin(last, last.c.device == findings.c.device))
         .where(findings.c.status == "open", findings.c.device.is_not(None),
                or_(last.c.last_ms.is_(None), findings.c.ts_ms > last.c.last_ms))
         .group_by(findings.c.device, findings.c.kind, findings.c.severity, day))
    if market:
        q = q.where(findings.c.market == market)
    if devices is not None:
        q = q.where(findings.c.device.in_(devices))
    if within is not None:
        q = q.where(within(findings.c.device))
    out: dict[str, list[tuple[Any, risk.KindDay]]] = defaultdict(list)
    for r in conn.execute(q):
        out[r.device].append((r.merchant_id, risk.KindDay(
            r.kind, r.severity, int(r.day0) // risk.DAY_MS, int(r.n), int(r.last_id),
            int(r.last_ts), r.title or "")))
    return out


def _scale_rows(conn: Connection, *, now_ms: int, market: str | None,
                devices: set[str] | None, with_findings: set[str],
                within: Any = None) -> list[Any]:
    """Registered scales (of the market, or ``devices``) and any other scale with findings,
    each with the merchant it is bound to now; ``within``: a condition on the device."""
    b = bindings
    q = select(scales.c.device, scales.c.market, scales.c.e_mg, scales.c.max_mg,
               scales.c.accuracy_class, scales.c.due_on_ms, scales.c.registered,
               b.c.merchant_id).select_from(scales.outerjoin(b, and_(
                   b.c.device == scales.c.device, bound_at(now_ms))))
    if devices is not None:
        q = q.where(scales.c.device.in_(devices))
    else:
        q = q.where(or_(scales.c.registered.is_(True), scales.c.device.in_(with_findings))
                    if with_findings else scales.c.registered.is_(True))
        if market:
            q = q.where(scales.c.market == market)
        if within is not None:
            q = q.where(within(scales.c.device))
    return list(conn.execute(q))


def _reasons(rows: list[risk.KindDay], best: risk.DayScore | None,
             model: risk.RiskModel) -> list[dict[str, Any]]:
    by_kind: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (r.day, r.last_id), reverse=True):
        k = model.lookup(r.kind, r.severity)
        weighs = model.counts(r.kind, r.severity)
        x = by_kind.setdefault(r.kind, {
            "kind": r.kind, "title": r.title, "count": 0, "severity": r.severity,
            "finding_ids": [], "weight": 0.0, "p_day": k.p_day if k else None,
            "family": k.family if k else None, "counted": False})
        x["count"] += r.count
        x["finding_ids"].append(r.last_id)
        if SEVERITY_RANK.get(r.severity, 0) > SEVERITY_RANK.get(x["severity"], 0):
            x["severity"] = r.severity
        if weighs is not None and weighs.weight > x["weight"]:
            x["weight"], x["p_day"] = round(weighs.weight, 2), weighs.p_day
        if best is not None and r.day == best.day and r.kind in best.counted and weighs:
            x["counted"] = True
    return sorted(by_kind.values(), key=lambda x: (not x["counted"], -x["weight"], x["kind"]))


SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def assess(conn: Connection, *, now_ms: int, market: str | None = None,
           devices: set[str] | None = None,
           model: risk.RiskModel = risk.DEFAULT_MODEL) -> list[ScaleRisk]:
    """Every scale's risk (in the queue or not) of a market, of ``devices``, or of all."""
    return _assess(conn, now_ms=now_ms, market=market, devices=devices, model=model)


def _assess(conn: Connection, *, now_ms: int, market: str | None, devices: set[str] | None,
            model: risk.RiskModel, within: Any = None) -> list[ScaleRisk]:
    """:func:`assess`; ``within``: of the market's (or all) scales, those whose device meets
    this condition (a function of the device column)."""
    days = _kind_days(conn, market=market, devices=devices, within=within)
    out = []
    for s in _scale_rows(conn, now_ms=now_ms, market=market, devices=devices,
                         with_findings=set(days), within=within):
        rows = [kd for _, kd in days.get(s.device, [])]
        scored = model.score_days(kd for kd in rows)
        best = max(scored, key=lambda d: (d.evidence, d.day), default=None)
        reasons = _reasons(rows, best, model)
        grounds = []
        if best is not None and best.p_day <= model.alpha_day:
            grounds.append("evidence")
        if s.due_on_ms is not None and s.due_on_ms < now_ms:
            grounds.append(OVERDUE)
            reasons.append({"kind": OVERDUE, "title": OVERDUE_TITLE, "count": 1,
                            "severity": "medium", "finding_ids": [], "due_on_ms": s.due_on_ms,
                            "weight": 0.0, "p_day": None, "family": None, "counted": True})
        merchant = s.merchant_id if s.merchant_id is not None else max(
            (m for m, _ in days.get(s.device, []) if m is not None), default=None)
        loads = inspection_loads_mg(e_mg=int(s.e_mg), max_mg=int(s.max_mg),
                                    accuracy_class=s.accuracy_class or "III") \
            if s.e_mg and s.max_mg else []
        ev = best.evidence if best is not None else 0.0
        out.append(ScaleRisk(
            s.device, s.market, merchant, round(10 * ev), reasons, loads, round(ev, 2),
            best.p_day if best is not None else 1.0,
            risk.market_day_start_ms(best.day) if best is not None else None,
            bool(grounds), tuple(grounds)))
    return out


def _queue_key(r: ScaleRisk) -> tuple[Any, ...]:
    if "evidence" in r.grounds:
        return (0, -r.evidence, -(r.day_ms or 0), r.device)
    due = next((x.get("due_on_ms", 0) for x in r.reasons if x["kind"] == OVERDUE), 0)
    return (1, due, r.device)


def risk_ranking(conn: Connection, *, now_ms: int, market: str | None = None,
                 limit: int = 100, offset: int = 0,
                 model: risk.RiskModel = risk.DEFAULT_MODEL) -> list[ScaleRisk]:
    """The inspection queue: scales whose evidence crosses the threshold (strongest first,
    then the newest), then those whose verification is overdue (longest first).

    Both queries keep only the scales that can be in the queue
    (:func:`gateway_server.casework.queue_sql.may_be_queued`: a day's score in SQL, the
    overdue dates), so only those are read and scored here: the same rows as scoring every
    scale of the market."""
    scored = _assess(conn, now_ms=now_ms, market=market, devices=None, model=model,
                     within=partial(queue_sql.may_be_queued, now_ms=now_ms, market=market,
                                    model=model))
    queue = sorted((r for r in scored if r.in_queue), key=_queue_key)
    return queue[offset:offset + limit]


def scale_risk(conn: Connection, device: str, *, now_ms: int) -> ScaleRisk | None:
    got = assess(conn, now_ms=now_ms, devices={device})
    return got[0] if got else None


def merchant_risk(conn: Connection, merchant_id: int, *, now_ms: int) -> dict[str, Any]:
    """A merchant's scales (bound now) and the strongest of them: the merchant is in the
    queue if one of its scales is. LookupError for an unknown merchant."""
    if conn.execute(select(merchants.c.id).where(merchants.c.id == merchant_id)).first() \
            is None:
        raise LookupError(f"no merchant {merchant_id}")
    devices = set(devices_at(conn, merchant_id, now_ms))
    rs = sorted(assess(conn, now_ms=now_ms, devices=devices), key=_queue_key) \
        if devices else []
    top = max(rs, key=lambda r: (r.evidence, r.in_queue), default=None)
    return {"merchant_id": merchant_id, "in_queue": any(r.in_queue for r in rs),
            "evidence": top.evidence if top else 0.0,
            "p_honest_day": top.p_honest_day if top else 1.0,
            "device": top.device if top else None, "scales": rs}


def create_task(conn: Connection, *, device: str, now_ms: int, reason: str = "",
                created_by: int | None = None) -> dict[str, Any]:
    """A task for ``device`` with its reasons, the open findings it answers and the loads."""
    r = scale_risk(conn, device, now_ms=now_ms)
    if r is None:
        raise LookupError(f"no scale {device}")
    since = conn.execute(select(func.coalesce(func.max(inspection_results.c.ts_ms), -1))
                         .where(inspection_results.c.device == device)).scalar_one()
    fids = [int(i) for i in conn.execute(
        select(findings.c.id).where(findings.c.device == device, findings.c.status == "open",
                                    findings.c.severity != "info", findings.c.ts_ms > since)
        .order_by(findings.c.id)).scalars()]
    shown = [x for x in r.reasons if x["severity"] != "info"]
    text = reason or "; ".join(f"{x['title']} ×{x['count']}" for x in shown)
    row = {"device": device, "market": r.market, "merchant_id": r.merchant_id,
           "created_ms": now_ms, "created_by": created_by, "risk": r.risk,
           "reason": text or "例行检查 routine inspection", "finding_ids": json.dumps(fids),
           "test_loads_mg": json.dumps(r.test_loads_mg), "status": "open"}
    task_id = conn.execute(inspection_tasks.insert().values(**row)
                           .returning(inspection_tasks.c.id)).scalar_one()
    return row | {"id": int(task_id)}


@dataclass(frozen=True)
class LoadCheck:
    load_mg: int
    indication_mg: int
    error_mg: int
    mpe_mg: str  # exact Fraction as text ("10000", "5/2")
    ok: bool


def judge_loads(pairs: list[tuple[int, int]], *, e_mg: int,
                accuracy_class: str = "III") -> list[LoadCheck]:
    """Each (load, indication) against the in-service MPE at that load."""
    out = []
    for load, ind in pairs:
        mpe = mt.mpe_mg(load, e_mg=e_mg, accuracy_class=mt.AccuracyClass(accuracy_class),
                        stage=mt.Stage.IN_SERVICE)
        err = ind - load
        out.append(LoadCheck(load, ind, err, str(mpe), abs(err) <= mpe))
    return out


def record_result(conn: Connection, *, device: str, pairs: list[tuple[int, int]], now_ms: int,
                  inspector: str | None = None, task_id: int | None = None,
                  fraud: bool = False, notes: str = "",
                  apply_status: bool = True) -> dict[str, Any]:
    """Judge and store an inspection. ``apply_status=False`` (a case file,
    ``casework``) leaves the merchant's card to the inspector's confirmed decision."""
    s = conn.execute(select(scales).where(scales.c.device == device)).first()
    if s is None or not s.e_mg:
        raise LookupError(f"no scale {device} with a known e")
    checks = judge_loads(pairs, e_mg=int(s.e_mg), accuracy_class=s.accuracy_class or "III")
    passed = all(c.ok for c in checks) and not fraud
    merchant_id = _merchant_of(conn, device, now_ms)
    row = {"task_id": task_id, "device": device, "market": s.market, "merchant_id": merchant_id,
           "inspector": inspector, "ts_ms": now_ms,
           "loads": json.dumps([c.__dict__ for c in checks]),
           "verdict": "pass" if passed else "fail", "fraud": "yes" if fraud else "no",
           "notes": notes}
    rid = conn.execute(inspection_results.insert().values(**row)
                       .returning(inspection_results.c.id)).scalar_one()
    fids: list[int] = []
    if task_id is not None:
        t = conn.execute(select(inspection_tasks).where(inspection_tasks.c.id == task_id)).first()
        if t is not None:
            fids = json.loads(t.finding_ids)
            conn.execute(inspection_tasks.update().where(inspection_tasks.c.id == task_id)
                         .values(status="done"))
    _settle_findings(conn, device, fids, passed)
    status = None
    if merchant_id is not None and apply_status:
        status = apply_verdict(conn, merchant_id, passed=passed, fraud=fraud, now_ms=now_ms,
                               reason=f"检查 inspection #{rid} of {device}: "
                                      f"{'合格 pass' if passed else '不合格 fail'}"
                                      f"{' 作弊 fraud' if fraud else ''}")
    return row | {"id": int(rid), "checks": [c.__dict__ for c in checks],
                  "merchant_status": status}


def _merchant_of(conn: Connection, device: str, ts_ms: int) -> int | None:
    return merchant_at(conn, device, ts_ms)


def _settle_findings(conn: Connection, device: str, task_fids: list[int], passed: bool) -> None:
    q = select(findings.c.id, findings.c.kind).where(
        findings.c.device == device, findings.c.status == "open")
    for f in conn.execute(q):
        if passed and f.kind in MEASUREMENT_KINDS:
            new = "dismissed"
        elif not passed and (f.id in task_fids or f.kind in MEASUREMENT_KINDS):
            new = "confirmed"
        else:
            continue
        conn.execute(findings.update().where(findings.c.id == f.id).values(status=new))


def apply_verdict(conn: Connection, merchant_id: int, *, passed: bool, fraud: bool,
                  now_ms: int, reason: str) -> dict[str, str]:
    m = conn.execute(select(merchants).where(merchants.c.id == merchant_id)).first()
    if m is None:
        raise LookupError(f"no merchant {merchant_id}")
    status, listed = m.status, m.list_status
    if fraud:
        status, listed = "red", "black"
    elif not passed:
        status = {"normal": "yellow", "yellow": "red"}.get(status, status)
        if status == "red":
            listed = "black"
    else:
        open_findings = conn.execute(select(findings.c.id).where(
            findings.c.merchant_id == merchant_id, findings.c.status == "open",
            findings.c.ts_ms > now_ms - RED_LIST_CLEAN_MS)).first()
        if open_findings is None and status == "normal" and listed == "none":
            listed = "red"
    if (status, listed) != (m.status, m.list_status):
        conn.execute(merchants.update().where(merchants.c.id == merchant_id).values(
            status=status, list_status=listed, updated_ms=now_ms))
        conn.execute(status_history.insert().values(
            merchant_id=merchant_id, ts_ms=now_ms, old_status=m.status, new_status=status,
            old_list=m.list_status, new_list=listed, reason=reason))
    return {"status": status, "list_status": listed}




def model_summary(model: risk.RiskModel = risk.DEFAULT_MODEL) -> dict[str, Any]:
    """The evidence table and the queue threshold, with what an honest scale risks."""
    entry = model.honest_entry_p_day()
    return {"alpha_day": model.alpha_day, "threshold_evidence": -math.log10(model.alpha_day),
            "honest_entry_p_day": entry, "honest_entry_p_month": min(1.0, 30 * entry),
            "observation_p": model.observation_p,
            "kinds": [{"kind": k.kind, "severity": k.severity, "p_day": k.p_day,
                       "weight": round(k.weight, 3), "family": k.family,
                       "counts": k.p_day < model.observation_p, "why": k.why}
                      for k in model.table]}
