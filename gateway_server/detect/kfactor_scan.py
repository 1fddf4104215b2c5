"""K-factor drift in the store: raw AD counts of sales against the empty pan's.

The rule is pure (:mod:`gateway_server.detect.rules.kfactor`); this module stores each new
sale's empty-pan count (``sales.ad_zero``) and reads, per scale, the reference and recent
samples of its evidence period (called by :func:`gateway_server.detect.orchestrator.detect`).

Reads are per batch, not per sale or scale: the zero checks before all the batch's sales in
one statement (plus one for scales whose last day held no zero check with a raw AD), the
evidence resets in one, and every scale's reference and recent samples in one ``UNION ALL``
of index-bounded parts (each part is what the per-scale query was, so no scale's history is
scanned). Statements are chunked where SQLite's limits (expression depth, 500 compound
members) would be reached.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Select, and_, literal, or_, select, union_all

from gateway_server.detect.queries import reset_ms_many, scale_contexts
from gateway_server.detect.rules import kfactor as kf
from gateway_server.detect.rules.stream import DAY_MS, Finding
from gateway_server.store.bulk import update_by_key
from gateway_server.store.tables import events, sales

ZERO_LOOKBACK = 20  # a sale's AD0: the first raw AD among the latest this many zero checks
NEAR_MS = DAY_MS  # zero checks read at first: this far before a scale's earliest new sale
REF_SAMPLES, RECENT_SAMPLES = 100, 50  # the rule's reference and recent windows
_CHUNK = 200  # devices per statement: ≤ 400 compound members, OR-depth well under 1000


def kfactor_findings(conn: Connection, new_sales: list[dict[str, Any]]) -> list[Finding]:
    """K = (AD − AD0) / W per sale that carries a raw AD count (``rules.kfactor``):
    AD0 from the device's latest zero check with a raw AD before the sale (among its latest
    ``ZERO_LOOKBACK``), stored with the sale (``sales.ad_zero``); then the drift rule per
    device."""
    with_ad = [s for s in new_sales if s.get("raw_ad") is not None]
    if not with_ad:
        return []
    ad0 = _ad_zeros(conn, with_ad)
    update_by_key(conn, sales, "id", {s["id"]: {"ad_zero": ad0[i]}
                                      for i, s in enumerate(with_ad) if i in ad0})
    ctx = scale_contexts(conn, {s["device"] for s in with_ad})
    devices = sorted(ctx)
    resets = reset_ms_many(conn, devices)
    samples = _samples(conn, resets)
    out: list[Finding] = []
    for device in devices:
        sc, reset = ctx[device], resets[device]
        ref_rows, recent_rows = samples.get(device, ([], []))
        ref, recent = _k_samples(ref_rows, sc.e_mg), _k_samples(recent_rows, sc.e_mg)
        merchant = recent_rows[-1].merchant_id if recent_rows else None
        f = kf.check_k_drift(ref, recent, sc, reset_ms=reset, merchant_id=merchant)
        if f is not None:
            out.append(f)
    return out


def _ad_zeros(conn: Connection, with_ad: list[dict[str, Any]]) -> dict[int, Any]:
    """AD0 per index of ``with_ad`` (absent: none of the latest zero checks carries one).

    First read: each device's zero checks from ``NEAR_MS`` before its earliest new sale to
    its latest. A sale with ``ZERO_LOOKBACK`` of them before it, or one with a raw AD among
    fewer, is decided by that read; the rest (few zero checks of late, none with a raw AD)
    get the older ones of their device in a second read."""
    by_dev: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(with_ad):
        by_dev[s["device"]].append(i)
    lo = {d: min(int(with_ad[i]["ts_ms"]) for i in ix) - NEAR_MS for d, ix in by_dev.items()}
    hi = {d: max(int(with_ad[i]["ts_ms"]) for i in ix) for d, ix in by_dev.items()}
    zeros: dict[str, list[tuple[int, int, Any]]] = defaultdict(list)  # newest first
    devs = sorted(by_dev)
    for k in range(0, len(devs), _CHUNK):
        q = (select(events.c.device, events.c.ts_ms, events.c.seq, events.c.payload)
             .where(events.c.kind == "zero", or_(*(
                 and_(events.c.device == d, events.c.ts_ms >= lo[d], events.c.ts_ms <= hi[d])
                 for d in devs[k:k + _CHUNK]))))
        for r in conn.execute(q):
            zeros[r.device].append((int(r.ts_ms), int(r.seq), json.loads(r.payload).get("raw_ad")))
    for z in zeros.values():
        z.sort(reverse=True)
    out: dict[int, Any] = {}
    short = _decide(with_ad, by_dev, zeros, out)
    if short:  # the older zero checks of those devices, ZERO_LOOKBACK at most each
        older = _older_zeros(conn, {d: lo[d] for d in short})
        for d in short:
            zeros[d] += older.get(d, [])
        _decide(with_ad, {d: short[d] for d in short}, zeros, out)
    return out


def _decide(with_ad: list[dict[str, Any]], by_dev: dict[str, list[int]],
            zeros: dict[str, list[tuple[int, int, Any]]],
            out: dict[int, Any]) -> dict[str, list[int]]:
    """Fill ``out`` for the sales the zero checks read so far decide; return the others."""
    short: dict[str, list[int]] = defaultdict(list)
    for d, ix in by_dev.items():
        for i in ix:
            ts = int(with_ad[i]["ts_ms"])
            before = [ad for t, _, ad in zeros.get(d, []) if t <= ts][:ZERO_LOOKBACK]
            found = next((ad for ad in before if ad is not None), None)
            if found is not None:
                out[i] = found
            elif len(before) < ZERO_LOOKBACK:
                short[d].append(i)
    return dict(short)


def _older_zeros(conn: Connection, before: dict[str, int]) -> dict[str, list[tuple[int, int, Any]]]:
    """The latest ``ZERO_LOOKBACK`` zero checks of each device before its time, newest first."""
    got: dict[str, list[tuple[int, int, Any]]] = defaultdict(list)
    devs = sorted(before)
    for k in range(0, len(devs), _CHUNK):
        parts = [_bounded(select(events.c.device, events.c.ts_ms, events.c.seq, events.c.payload)
                          .where(events.c.device == d, events.c.kind == "zero",
                                 events.c.ts_ms < before[d])
                          .order_by(events.c.ts_ms.desc(), events.c.seq.desc())
                          .limit(ZERO_LOOKBACK)) for d in devs[k:k + _CHUNK]]
        for r in conn.execute(union_all(*parts)):
            got[r.device].append((int(r.ts_ms), int(r.seq), json.loads(r.payload).get("raw_ad")))
    for z in got.values():
        z.sort(reverse=True)
    return got


def _bounded(q: Select[Any]) -> Select[Any]:
    """``q`` (with ORDER BY / LIMIT) as a member of a ``UNION ALL`` (SQLite needs it wrapped)."""
    return select(*q.subquery().c)


def _samples(conn: Connection, resets: dict[str, int]) -> dict[str, tuple[list[Any], list[Any]]]:
    """Per device: its first ``REF_SAMPLES`` and last ``RECENT_SAMPLES`` sales with raw AD
    and AD0 since its reset, each oldest first."""
    got: dict[str, tuple[list[Any], list[Any]]] = {d: ([], []) for d in resets}
    cols = (sales.c.device, sales.c.ts_ms, sales.c.seq, sales.c.raw_ad, sales.c.ad_zero,
            sales.c.settled_mg, sales.c.tare_mg, sales.c.merchant_id)
    devs = sorted(resets)
    for k in range(0, len(devs), _CHUNK):
        parts = []
        for d in devs[k:k + _CHUNK]:
            where = (sales.c.device == d, sales.c.raw_ad.is_not(None),
                     sales.c.ad_zero.is_not(None), sales.c.ts_ms > resets[d])
            parts.append(_bounded(select(literal(0).label("part"), *cols).where(*where)
                                  .order_by(sales.c.ts_ms, sales.c.seq).limit(REF_SAMPLES)))
            parts.append(_bounded(select(literal(1).label("part"), *cols).where(*where)
                                  .order_by(sales.c.ts_ms.desc(), sales.c.seq.desc())
                                  .limit(RECENT_SAMPLES)))
        for r in conn.execute(union_all(*parts)):
            got[r.device][int(r.part)].append(r)
    for ref, recent in got.values():
        ref.sort(key=lambda r: (int(r.ts_ms), int(r.seq)))
        recent.sort(key=lambda r: (int(r.ts_ms), int(r.seq)))
    return got


def _k_samples(rows: Iterable[Any], e_mg: int) -> list[kf.KSample]:
    # the load cell carries the tare too: W is the gross weight shown
    got = [kf.KSample(int(r.ts_ms), int(r.seq), int(r.raw_ad) - int(r.ad_zero),
                      int(r.settled_mg) + int(r.tare_mg or 0)) for r in rows]
    return [k for k in got if kf.qualifies(k.span_ad, k.settled_mg, e_mg)]
