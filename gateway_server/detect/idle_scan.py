"""The second, untracked scale in the store: a market's closed window of sales counts per
trade scale, judged by :func:`gateway_server.detect.rules.idle.check_idle_scales`. Called
by the ingest pipeline when a market's window closes (through
:mod:`gateway_server.detect.orchestrator`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from gateway_server.detect.queries import finding_row
from gateway_server.detect.rules.idle import check_idle_scales
from gateway_server.detect.rules.stream import DetectorParams, ScaleCtx
from gateway_server.registry.binding import bound_during
from gateway_server.store.tables import bindings, events, rollups, sales, scales


def idle_scale_findings(conn: Connection, market: str, *, window_end_ms: int,
                        params: DetectorParams = DetectorParams()) -> list[dict[str, Any]]:
    """The second-untracked-scale rule over one closed window of one market (event time);
    see :func:`rules.idle.check_idle_scales`."""
    start = window_end_ms - params.idle_window_ms
    base = start - params.idle_baseline_ms
    devices = {r.device: r for r in conn.execute(
        select(scales.c.device, scales.c.market, scales.c.e_mg, scales.c.max_mg,
               scales.c.accuracy_class, scales.c.role)
        .where(scales.c.market == market, scales.c.registered.is_(True),
               scales.c.role == "trade"))}
    if len(devices) < 3:
        return []
    # only scales that showed they were on (any event or raw reading in the window): a
    # scale with no data at all is offline or late, not idle while its stall trades
    active = {r.device for r in conn.execute(select(events.c.device).where(
        events.c.market == market, events.c.ts_ms >= start, events.c.ts_ms < window_end_ms)
        .distinct())}
    active |= {r.device for r in conn.execute(select(rollups.c.device).where(
        rollups.c.market == market, rollups.c.minute_ms >= start,
        rollups.c.minute_ms < window_end_ms).distinct())}

    def counts(t0: int, t1: int) -> dict[str, int]:
        return {d: int(n) for d, n in conn.execute(
            select(sales.c.device, func.count()).where(
                sales.c.market == market, sales.c.ts_ms >= t0, sales.c.ts_ms < t1)
            .group_by(sales.c.device)) if d in devices}

    now_all, before = counts(start, window_end_ms), counts(base, start)
    active |= set(now_all)
    now = {d: now_all.get(d, 0) for d in devices if d in active}
    merchants_of = {b.device: int(b.merchant_id) for b in conn.execute(
        select(bindings.c.device, bindings.c.merchant_id).where(
            bindings.c.device.in_(list(devices)), bound_during(start, window_end_ms)))}
    ctx = {d: ScaleCtx(d, market, int(r.e_mg or 1), int(r.max_mg or 1),
                       r.accuracy_class or "III", r.role) for d, r in devices.items()}
    found = check_idle_scales(now, before, ctx, window_end_ms=window_end_ms, params=params,
                              merchants=merchants_of)
    return [finding_row(f, window_end_ms) for f in found]
