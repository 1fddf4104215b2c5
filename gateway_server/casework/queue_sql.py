"""Which scales can be in the inspection queue, decided in the database.

The queue (:func:`gateway_server.casework.inspection.risk_ranking`) holds the scales with a
market day whose evidence crosses the threshold, and those overdue for verification. Scoring
every scale in Python on each request costs work in proportion to all open findings and
scales; :func:`may_be_queued` scores the days in SQL instead, as a condition of the ranking's
two queries, so Python reads and scores only the scales that can be in the queue.

The score of a day (:meth:`gateway_server.detect.risk.RiskModel.score_days`) is the sum over
families of the strongest weight among the day's counted findings; the table's weights and
families become two ``CASE`` expressions over (kind, severity), in the model's lookup order
(an entry for the severity before the kind's catch-all, ``info`` never counts, residual
verdicts are one kind). A day qualifies when its score reaches ``threshold_score()`` less
:data:`SLACK`; SQL sums floats in another order than Python, so the slack keeps the
selection a superset, and Python's exact scoring decides. Attainable scores lie far more
than the slack apart, so nothing near the threshold slips through.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    case,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
)

from gateway_server.detect import risk
from gateway_server.store.tables import findings, scales
from gateway_server.store.tables_workflow import inspection_results

SLACK = 1e-6
_RESIDUAL_PREFIX = "residual-"


def _kind_is(kind: str) -> ColumnElement[bool]:
    """The finding's kind is ``kind`` once made canonical (``risk.canonical_kind``)."""
    k = findings.c.kind
    prefixed = func.substr(k, 1, len(_RESIDUAL_PREFIX)) == _RESIDUAL_PREFIX
    if kind == "residual":
        return or_(k == kind, prefixed)
    return false() if kind.startswith(_RESIDUAL_PREFIX) else k == kind


def _weight_and_family(model: risk.RiskModel) -> tuple[Any, Any]:
    """CASE expressions: the counted weight (NULL: weighs nothing) and the family's index."""
    families = sorted({k.family for k in model.table})
    entries = {(k.kind, k.severity): k for k in model.table}  # as RiskModel.lookup: last wins
    ordered = [k for k in entries.values() if k.severity is not None] + \
        [k for k in entries.values() if k.severity is None]
    w_whens: list[tuple[Any, Any]] = [(findings.c.severity == "info", null())]
    f_whens: list[tuple[Any, Any]] = []
    for k in ordered:
        cond = _kind_is(k.kind) if k.severity is None else \
            _kind_is(k.kind) & (findings.c.severity == k.severity)
        counted = k.p_day < model.observation_p
        w_whens.append((cond, literal_column(repr(float(k.weight))) if counted else null()))
        f_whens.append((cond, literal_column(str(families.index(k.family)))))
    return case(*w_whens, else_=null()), case(*f_whens, else_=null())


def evidence_devices(*, market: str | None = None,
                     model: risk.RiskModel = risk.DEFAULT_MODEL) -> Select[Any] | None:
    """Scales with a market day since their last inspection whose score (in SQL) reaches
    the queue's threshold, less the slack: a superset of those with evidence in the queue
    (a query to use in ``IN``; None: the model admits no day)."""
    threshold = model.threshold_score()
    if threshold is None:
        return None
    last = (select(inspection_results.c.device,
                   func.max(inspection_results.c.ts_ms).label("last_ms"))
            .group_by(inspection_results.c.device).subquery())
    shifted = findings.c.ts_ms + literal_column(str(risk.MARKET_DAY_OFFSET_MS))
    day = (shifted - shifted % literal_column(str(risk.DAY_MS))).label("day0")
    weight, family = _weight_and_family(model)
    per_finding = (select(findings.c.device, day, family.label("fam"), weight.label("w"))
                   .select_from(findings.outerjoin(last, last.c.device == findings.c.device))
                   .where(findings.c.status == "open", findings.c.device.is_not(None),
                          or_(last.c.last_ms.is_(None), findings.c.ts_ms > last.c.last_ms)))
    if market:
        per_finding = per_finding.where(findings.c.market == market)
    pf = per_finding.subquery()
    per_family = (select(pf.c.device, pf.c.day0, pf.c.fam, func.max(pf.c.w).label("w"))
                  .where(pf.c.w.is_not(None))
                  .group_by(pf.c.device, pf.c.day0, pf.c.fam).subquery())
    return (select(per_family.c.device)
            .group_by(per_family.c.device, per_family.c.day0)
            .having(func.sum(per_family.c.w) >= threshold - SLACK))


def overdue_devices(*, now_ms: int, market: str | None = None) -> Select[Any]:
    """Scales (of the market) whose verification was due before ``now_ms`` (a query)."""
    q = select(scales.c.device).where(scales.c.due_on_ms < now_ms)
    if market:
        q = q.where(scales.c.market == market)
    return q


def may_be_queued(device: Any, *, now_ms: int, market: str | None = None,
                  model: risk.RiskModel = risk.DEFAULT_MODEL) -> ColumnElement[bool]:
    """SQL: ``device`` (a column) is among the scales that can be in the queue: with a day
    near the threshold or overdue. A condition for the queries of one ranking, so the
    ranking stays two statements (the findings aggregate, the scales)."""
    overdue = device.in_(overdue_devices(now_ms=now_ms, market=market))
    evidence = evidence_devices(market=market, model=model)
    return overdue if evidence is None else or_(device.in_(evidence), overdue)
