"""The inspection workflow's records as listed: tasks, inspection results, fair-scale
re-weighs, and the repairs and verifications an administrator registers (they explain
counter changes, ``detect``'s calibration-change rule). Creating tasks and judging
inspections is :mod:`gateway_server.casework.inspection`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.casework.findings import rows
from gateway_server.store.tables import scales
from gateway_server.store.tables_workflow import (
    inspection_results,
    inspection_tasks,
    repairs,
    reweighs,
)

INSPECTIONS_SHOWN = 500


def _json_list(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v


def task_out(r: Mapping[str, Any]) -> dict[str, Any]:
    """A task row with its JSON lists (finding ids, test loads) decoded."""
    d = dict(r)
    d["finding_ids"] = _json_list(d["finding_ids"])
    d["test_loads_mg"] = _json_list(d["test_loads_mg"])
    return d


def list_tasks(conn: Connection, *, status: str | None = "open",
               market: str | None = None) -> list[dict[str, Any]]:
    """Tasks, highest risk first."""
    q = select(inspection_tasks).order_by(inspection_tasks.c.risk.desc(),
                                          inspection_tasks.c.id)
    if status:
        q = q.where(inspection_tasks.c.status == status)
    if market:
        q = q.where(inspection_tasks.c.market == market)
    return [task_out(r) for r in rows(conn.execute(q))]


def list_inspections(conn: Connection, *, device: str | None = None,
                     merchant_id: int | None = None) -> list[dict[str, Any]]:
    """Inspection results, newest first (at most ``INSPECTIONS_SHOWN``), loads decoded."""
    q = select(inspection_results).order_by(inspection_results.c.ts_ms.desc())
    if device:
        q = q.where(inspection_results.c.device == device)
    if merchant_id is not None:
        q = q.where(inspection_results.c.merchant_id == merchant_id)
    out = rows(conn.execute(q.limit(INSPECTIONS_SHOWN)))
    for r in out:
        r["loads"] = json.loads(r["loads"])
    return out


def list_reweighs(conn: Connection, *, merchant_id: int | None = None,
                  device: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Re-weighs, newest first; ``device``: as the sale's scale or as the fair scale."""
    q = select(reweighs).order_by(reweighs.c.ts_ms.desc()).limit(limit)
    if merchant_id is not None:
        q = q.where(reweighs.c.merchant_id == merchant_id)
    if device:
        q = q.where((reweighs.c.sale_device == device) | (reweighs.c.device == device))
    return rows(conn.execute(q))


def register_repair(conn: Connection, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Record a repair or verification of ``fields["device"]``; the row with its id.
    LookupError if the scale is unknown."""
    device = fields["device"]
    if conn.execute(select(scales.c.device).where(scales.c.device == device)).first() is None:
        raise LookupError(f"no scale {device}")
    rid = conn.execute(repairs.insert().values(**fields).returning(repairs.c.id))
    return dict(fields) | {"id": int(rid.scalar_one())}
