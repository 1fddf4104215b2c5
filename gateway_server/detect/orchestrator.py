"""Running the detectors inside the ingest transaction: what runs, in which order.

Called by :func:`gateway_server.ingest.pipeline.store_batch` with the rows that were *new* in
the batch (duplicates never reach a detector twice); returns finding rows. The rules are
pure (:mod:`gateway_server.detect.rules`); each family's reads and writes live in a
store-side module below this one, and the queries they share below those
(:mod:`gateway_server.detect.queries`):

1. per sale (:mod:`~gateway_server.detect.stream_scan`): registered price, taring habit;
2. per event, in arrival order: idle-pan and counter reports (``stream_scan``), re-weighs
   named by a trace code (:mod:`~gateway_server.detect.reweigh_scan`: linked and judged,
   or stored ``unlinked``) and re-weighs named by the stall
   (:mod:`~gateway_server.detect.untraced_scan`: stored, matched at once if a sale
   explains them);
3. the evidence of a market day (:mod:`~gateway_server.detect.day_scan`), one finding per
   key;
4. re-weighs waiting for a sale of this batch (``reweigh_scan``), then the stall-named
   re-weighs now due (``untraced_scan``);
5. the statistical re-weigh detector on the selling scales whose pairs changed
   (:mod:`~gateway_server.detect.residual_scan`), and K-factor drift
   (:mod:`~gateway_server.detect.kfactor_scan`).

The order matters where one step writes what a later one reads (a re-weigh linked in 2 is a
pair in 5; a sale named by a trace code in 2 or 4 is no longer free for a stall re-weigh).
The pipeline's other two detectors run outside a batch's new rows and are re-exported here:
:func:`offline_findings` (:mod:`~gateway_server.detect.offline_scan`) and
:func:`idle_scale_findings` (:mod:`~gateway_server.detect.idle_scan`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.detect import (
    day_scan,
    residual_scan,
    reweigh_scan,
    stream_scan,
    untraced_scan as untraced,
)
from gateway_server.detect.idle_scan import idle_scale_findings
from gateway_server.detect.kfactor_scan import kfactor_findings
from gateway_server.detect.offline_scan import offline_findings
from gateway_server.detect.queries import finding_row, reset_ms_many, scale_contexts
from gateway_server.detect.rules.stream import DetectorParams, Finding
from gateway_server.store.bulk import any_of
from gateway_server.store.tables_workflow import reweighs

__all__ = [
    "detect",
    "idle_scale_findings",
    "kfactor_findings",
    "latest_by_market",
    "offline_findings",
    "residual_findings",
]


def detect(conn: Connection, *, new_sales: list[dict[str, Any]],
           new_events: list[dict[str, Any]], now_ms: int,
           params: DetectorParams = DetectorParams()) -> list[dict[str, Any]]:
    """Findings (as rows) for what this batch stored; also stores re-weigh verdicts."""
    ctx = scale_contexts(conn, {r["device"] for r in new_sales} | {r["device"] for r in new_events})
    prices = stream_scan.batch_prices(conn, new_sales)
    found = stream_scan.sale_findings(conn, new_sales, ctx, prices, params)
    counters = stream_scan.CounterMemory.load(conn, new_events)
    links = reweigh_scan.batch_links(conn, new_events, ctx)
    stall = untraced.stall_reweighs(conn, new_events)
    for e in new_events:
        sc = ctx.get(e["device"])
        body = json.loads(e["payload"])
        if e["kind"] in ("zero", "counter") and sc is not None:
            found += stream_scan.event_findings(e, body, sc, counters, params)
        elif e["kind"] == "reweigh" and body.get("trace_code") is not None:
            found += reweigh_scan.reweigh(conn, e, body, links)
            sale = links.sale_for(str(body["trace_code"]))
            if sale is not None:  # named by its receipt: no longer free for a stall re-weigh
                stall.note(int(sale.id))
        elif e["kind"] == "reweigh":
            untraced.store_stall_reweigh(conn, e, body, stall)
    found += day_scan.impact_days(conn, new_sales, ctx, prices, params)
    found += day_scan.zero_days(conn, new_events, ctx, prices, params)
    found = _unique(found)  # per-day observations: one row per key, not one per sale
    found += reweigh_scan.link_waiting(conn, new_sales, ctx)
    found += untraced.settle(conn, new_sales=new_sales,
                             latest_ms=latest_by_market([*new_sales, *new_events]))
    resid_devices = _devices_with_new_pairs(conn, new_events, new_sales)
    found += residual_findings(conn, resid_devices, now_ms=now_ms)
    found += kfactor_findings(conn, new_sales)
    return [finding_row(f, now_ms) for f in found]


def _unique(found: list[Finding]) -> list[Finding]:
    seen: set[str] = set()
    out = []
    for f in found:
        if f.dedup_key not in seen:
            seen.add(f.dedup_key)
            out.append(f)
    return out


def latest_by_market(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Newest event time per market among stored rows (event time drives the window rules)."""
    latest: dict[str, int] = {}
    for r in rows:
        latest[r["market"]] = max(latest.get(r["market"], 0), int(r["ts_ms"]))
    return latest


def _devices_with_new_pairs(conn: Connection, new_events: list[dict[str, Any]],
                            new_sales: list[dict[str, Any]]) -> set[str]:
    """Selling scales whose re-weigh pairs changed in this batch."""
    codes = {json.loads(e["payload"]).get("trace_code") for e in new_events
             if e["kind"] == "reweigh"}
    codes |= {s["trace_code"] for s in new_sales if s.get("trace_code")}
    codes.discard(None)
    if not codes:
        return set()
    return {r.sale_device for r in conn.execute(
        select(reweighs.c.sale_device).where(any_of(conn, reweighs.c.trace_code, codes),
                                             reweighs.c.sale_device.is_not(None)).distinct())}


def residual_findings(conn: Connection, devices: set[str], *, now_ms: int) -> list[Finding]:
    """The statistical re-weigh detector (``rules.residual``) per selling scale, run by
    :mod:`gateway_server.detect.residual_scan`: the loads of the inspection that opened the
    evidence period and every re-weigh linked by trace code since; a bad pair is left out
    alone, and what is left out (or a scale it cannot judge) is a ``not-judged`` finding."""
    return residual_scan.residual_findings(conn, devices, now_ms=now_ms,
                                           resets_of=reset_ms_many)
