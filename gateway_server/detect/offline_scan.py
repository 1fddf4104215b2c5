"""Offline during trading hours in the store: gaps in a scale's event times and ``no-data``
faults, judged against its market's hours (``rules.offline``). Called by the ingest
pipeline once per batch (:func:`gateway_server.ingest.pipeline.store_batch`, through
:mod:`gateway_server.detect.orchestrator`).
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.detect.queries import finding_row, scale_contexts
from gateway_server.detect.rules import offline as off
from gateway_server.registry.binding import merchants_at_times
from gateway_server.store.tables import markets


def offline_findings(conn: Connection, new_ts: dict[str, list[int]],
                     last_ts: dict[str, int | None],
                     new_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trade scales dark during trading hours (``rules.offline``): a gap in a device's
    event times (``last_ts`` is its newest event time before this batch, ``new_ts`` the
    times of its new events), or a ``no-data`` fault, overlapping its market's hours."""
    periods: list[tuple[str, int, int, str]] = []
    for device, ts in new_ts.items():
        prev = last_ts.get(device)
        points = sorted(ts) if prev is None else [prev, *sorted(t for t in ts if t >= prev)]
        periods += [(device, a, b, "silent") for a, b in pairwise(points)
                    if b - a >= off.DEFAULT_PARAMS.min_ms]
    for e in new_events:
        if e["kind"] == "fault":
            body = json.loads(e["payload"])
            dur = body.get("duration_ms")
            if body.get("code") == "no-data" and dur and dur >= off.DEFAULT_PARAMS.min_ms:
                periods.append((e["device"], int(e["ts_ms"]) - int(dur), int(e["ts_ms"]),
                                "no-data"))
    if not periods:
        return []
    ctx = scale_contexts(conn, {d for d, *_ in periods})
    hours = {r.id: r.trading_hours for r in conn.execute(
        select(markets.c.id, markets.c.trading_hours).where(
            markets.c.id.in_({c.market for c in ctx.values()})))}
    merchant_of = merchants_at_times(conn, [(d, a) for d, a, _, _ in periods if d in ctx])
    out = []
    for device, a, b, cause in periods:
        sc = ctx.get(device)
        if sc is None:
            continue
        try:
            h = off.parse_trading_hours(hours.get(sc.market) or off.DEFAULT_TRADING_HOURS)
        except ValueError:  # a bad value stored before validation existed: the default
            h = off.parse_trading_hours(off.DEFAULT_TRADING_HOURS)
        f = off.check_offline(sc, a, b, cause=cause, hours=h,
                              merchant_id=merchant_of.get((device, a)))
        if f is not None:
            out.append(finding_row(f, int(b)))
    return out
