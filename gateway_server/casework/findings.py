"""Findings as the inspector's API shows them: listed with filters, counted by kind, read
and set (open → confirmed / dismissed), each with the reviewed legal ground of its kind
(:mod:`gateway_server.detect.rules.legal`) instead of the stored text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, func, select

from gateway_server.detect.rules import legal
from gateway_server.store.tables import findings


def rows(result: Any) -> list[dict[str, Any]]:
    """Result rows as dicts."""
    return [dict(r._mapping) for r in result]


def finding_out(r: Mapping[str, Any]) -> dict[str, Any]:
    """A finding row as shown: evidence decoded, no dedup key, the legal ground of its kind
    (Chinese, English gloss, technical or not)."""
    d = dict(r)
    d["evidence"] = json.loads(d["evidence"] or "{}")
    d.pop("dedup_key", None)
    g = legal.ground_for(d["kind"], d.get("legal_basis") or "")
    d |= {"legal_basis": g.zh, "legal_basis_en": g.en, "legal_technical": g.technical}
    return d


def list_findings(conn: Connection, *, market: str | None = None, device: str | None = None,
                  merchant_id: int | None = None, kind: str | None = None,
                  status: str | None = None, limit: int = 100,
                  offset: int = 0) -> list[dict[str, Any]]:
    """Findings, newest first, filtered by each argument given."""
    q = select(findings)
    for col, val in ((findings.c.market, market), (findings.c.device, device),
                     (findings.c.merchant_id, merchant_id), (findings.c.kind, kind),
                     (findings.c.status, status)):
        if val is not None:
            q = q.where(col == val)
    q = q.order_by(findings.c.ts_ms.desc(), findings.c.id.desc()).limit(limit).offset(offset)
    return [finding_out(r) for r in rows(conn.execute(q))]


def open_by_kind(conn: Connection, *, market: str | None = None) -> dict[str, int]:
    """Open findings counted by kind (of a market, or all)."""
    q = select(findings.c.kind, func.count()).where(findings.c.status == "open")
    if market:
        q = q.where(findings.c.market == market)
    return {k: int(n) for k, n in conn.execute(q.group_by(findings.c.kind))}


def get_finding(conn: Connection, finding_id: int) -> dict[str, Any]:
    """One finding; LookupError if there is none."""
    r = conn.execute(select(findings).where(findings.c.id == finding_id)).first()
    if r is None:
        raise LookupError(f"no finding {finding_id}")
    return finding_out(dict(r._mapping))


def set_status(conn: Connection, finding_id: int, status: str) -> dict[str, Any]:
    """Set a finding's status; the finding as now; LookupError if there is none."""
    n = conn.execute(findings.update().where(findings.c.id == finding_id)
                     .values(status=status)).rowcount
    if not n:
        raise LookupError(f"no finding {finding_id}")
    return get_finding(conn, finding_id)
