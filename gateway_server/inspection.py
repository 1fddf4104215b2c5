"""The inspection workflow: risk → queue → task → result → card / list status.

* **Risk** per scale (and per merchant, the sum over its scales): every open finding
  weighs by severity, halved every ``RISK_HALF_LIFE_MS`` since it happened; an overdue
  verification adds ``OVERDUE_WEIGHT``. The queue ranks scales by risk, each with its
  reasons and the test loads to use.
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
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.tables import findings, merchants, scales
from gateway_server.tables_workflow import (
    inspection_results,
    inspection_tasks,
    status_history,
)
from weighing import metrology as mt
from weighing.metrology import fraud_compensation_fen

SEVERITY_WEIGHT = {"info": 0, "low": 1, "medium": 3, "high": 8, "critical": 20}
RISK_HALF_LIFE_MS = 7 * 86_400_000
OVERDUE_WEIGHT = 10
RED_LIST_CLEAN_MS = 90 * 86_400_000
# findings a passed metrological test refutes (the others — prices, signatures — it cannot)
MEASUREMENT_KINDS = frozenset({"zero-offset", "reweigh-short", "residual-gain",
                               "residual-additive", "residual-both", "residual-excess",
                               "calibration-change"})


def inspection_loads_mg(*, e_mg: int, max_mg: int, accuracy_class: str = "III") -> list[int]:
    """Near Min, 500 e, 2,000 e and Max, as far as they lie within the range."""
    cls = mt.AccuracyClass(accuracy_class)
    min_e = mt.MIN_CAPACITY_E.get(cls, 20)
    loads = {min_e * e_mg, 500 * e_mg, 2_000 * e_mg, max_mg}
    return sorted(x for x in loads if 0 < x <= max_mg)


@dataclass(frozen=True)
class ScaleRisk:
    device: str
    market: str
    merchant_id: int | None
    risk: int  # a score, not a legal quantity (rounded)
    reasons: list[dict[str, Any]]
    test_loads_mg: list[int]


def risk_ranking(conn: Connection, *, now_ms: int, market: str | None = None,
                 limit: int = 100) -> list[ScaleRisk]:
    q = select(findings).where(findings.c.status == "open")
    if market:
        q = q.where(findings.c.market == market)
    by_device: dict[str, list[Any]] = defaultdict(list)
    for f in conn.execute(q):
        if f.device:
            by_device[f.device].append(f)
    sq = select(scales).where(scales.c.registered.is_(True))
    if market:
        sq = sq.where(scales.c.market == market)
    scale_rows = {s.device: s for s in conn.execute(sq)}
    for d in by_device:
        if d not in scale_rows:
            row = conn.execute(select(scales).where(scales.c.device == d)).first()
            if row is not None:
                scale_rows[d] = row
    out = []
    for device, s in scale_rows.items():
        score = 0.0
        reasons: dict[str, dict[str, Any]] = {}
        merchant_id = None
        for f in by_device.get(device, []):
            age = max(0, now_ms - int(f.ts_ms))
            w = SEVERITY_WEIGHT.get(f.severity, 1) * 0.5 ** (age / RISK_HALF_LIFE_MS)
            score += w
            r = reasons.setdefault(f.kind, {"kind": f.kind, "title": f.title, "count": 0,
                                            "severity": f.severity, "finding_ids": []})
            r["count"] += 1
            r["finding_ids"].append(int(f.id))
            merchant_id = f.merchant_id if f.merchant_id is not None else merchant_id
        if s.due_on_ms is not None and s.due_on_ms < now_ms:
            score += OVERDUE_WEIGHT
            reasons["verification-overdue"] = {
                "kind": "verification-overdue", "title": "检定过期 Verification overdue",
                "count": 1, "severity": "medium", "finding_ids": [], "due_on_ms": s.due_on_ms}
        if score <= 0:
            continue
        loads = inspection_loads_mg(e_mg=int(s.e_mg), max_mg=int(s.max_mg),
                              accuracy_class=s.accuracy_class or "III") if s.e_mg and s.max_mg \
            else []
        out.append(ScaleRisk(device, s.market, merchant_id, round(score),
                             sorted(reasons.values(), key=lambda r: -SEVERITY_WEIGHT.get(
                                 r["severity"], 0)), loads))
    out.sort(key=lambda r: (-r.risk, r.device))
    return out[:limit]


def create_task(conn: Connection, *, device: str, now_ms: int, reason: str = "",
                created_by: int | None = None) -> dict[str, Any]:
    s = conn.execute(select(scales).where(scales.c.device == device)).first()
    if s is None:
        raise LookupError(f"no scale {device}")
    ranking = {r.device: r for r in risk_ranking(conn, now_ms=now_ms, market=s.market,
                                                 limit=10_000)}
    r = ranking.get(device)
    fids = [i for reason_ in (r.reasons if r else []) for i in reason_["finding_ids"]]
    loads = r.test_loads_mg if r else (inspection_loads_mg(
        e_mg=int(s.e_mg), max_mg=int(s.max_mg), accuracy_class=s.accuracy_class or "III")
        if s.e_mg and s.max_mg else [])
    text = reason or "; ".join(f"{x['title']} ×{x['count']}" for x in (r.reasons if r else []))
    row = {"device": device, "market": s.market, "merchant_id": r.merchant_id if r else None,
           "created_ms": now_ms, "created_by": created_by, "risk": r.risk if r else 0,
           "reason": text or "例行检查 routine inspection", "finding_ids": json.dumps(fids),
           "test_loads_mg": json.dumps(loads), "status": "open"}
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
                  fraud: bool = False, notes: str = "") -> dict[str, Any]:
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
    if merchant_id is not None:
        status = apply_verdict(conn, merchant_id, passed=passed, fraud=fraud, now_ms=now_ms,
                               reason=f"检查 inspection #{rid} of {device}: "
                                      f"{'合格 pass' if passed else '不合格 fail'}"
                                      f"{' 作弊 fraud' if fraud else ''}")
    return row | {"id": int(rid), "checks": [c.__dict__ for c in checks],
                  "merchant_status": status}


def _merchant_of(conn: Connection, device: str, ts_ms: int) -> int | None:
    from gateway_server.tables import bindings

    b = conn.execute(select(bindings.c.merchant_id).where(
        bindings.c.device == device, bindings.c.valid_from_ms <= ts_ms,
        (bindings.c.valid_to_ms.is_(None)) | (bindings.c.valid_to_ms > ts_ms))).first()
    return int(b.merchant_id) if b else None


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


def compensation_for(amount_fen: int | None) -> int | None:
    """消保法 Art. 55 figure for a sale of ``amount_fen`` where fraud is established."""
    return None if amount_fen is None else fraud_compensation_fen(amount_fen)
