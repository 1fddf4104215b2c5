"""Queries the detector modules share: the bottom of the detection package.

:mod:`gateway_server.detect.orchestrator` (the orchestrator) and the store-side scans it
runs (``stream_scan``, ``reweigh_scan``, ``day_scan``, ``kfactor_scan``, ``offline_scan``,
``idle_scan``, ``untraced_scan``, ``residual_scan``) need a scale's characteristics, a
finding as a row, registered prices and the start of a scale's evidence period. They live
here, below all of them, so the orchestrator can import the modules it runs at the top of
its file and none of them imports the orchestrator (or a sibling) back (import-linter's
"Detection without an import circle" contract in pyproject.toml keeps it so). This module
imports no other store-side module of the detection package.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection, func, select, union_all

from gateway_server.detect.rules.stream import Finding, RegisteredPrice, ScaleCtx
from gateway_server.store.bulk import any_of
from gateway_server.store.tables import plu_prices, scales
from gateway_server.store.tables_workflow import inspection_results, repairs


def finding_row(f: Finding, created_ms: int) -> dict[str, Any]:
    """A finding as a row of ``findings`` (status ``open``)."""
    d = asdict(f)
    d["evidence"] = json.dumps(dict(f.evidence), ensure_ascii=False, sort_keys=True, default=str)
    d["created_ms"] = created_ms
    d["status"] = "open"
    return d


def scale_contexts(conn: Connection, devices: Iterable[str]) -> dict[str, ScaleCtx]:
    """What the rules need to know of each scale, for the registered ones with e and Max
    (a scale without them cannot be judged and is left out)."""
    devs = set(devices)
    if not devs:
        return {}
    out = {}
    for r in conn.execute(select(scales.c.device, scales.c.market, scales.c.e_mg,
                                 scales.c.max_mg, scales.c.accuracy_class, scales.c.role)
                          .where(any_of(conn, scales.c.device, devs))):
        if r.e_mg and r.max_mg:
            out[r.device] = ScaleCtx(r.device, r.market, int(r.e_mg), int(r.max_mg),
                                     r.accuracy_class or "III", r.role or "trade")
    return out


def reset_ms(conn: Connection, device: str) -> int:
    """The scale's last inspection or registered repair/verification (0: none): the
    evidence of the statistical detectors starts afresh from there. The loads of an
    inspection *at* this time belong to the new evidence (the state the inspector found;
    ``residual_scan.pairs_since``); a repair after it discards them too."""
    return reset_ms_many(conn, [device])[device]


def reset_ms_many(conn: Connection, devices: Iterable[str]) -> dict[str, int]:
    """:func:`reset_ms` of each of ``devices``, in one statement per 500 devices."""
    devs = sorted(set(devices))
    out = dict.fromkeys(devs, 0)
    for i in range(0, len(devs), 500):
        chunk = devs[i:i + 500]
        q = union_all(
            select(inspection_results.c.device, func.max(inspection_results.c.ts_ms))
            .where(any_of(conn, inspection_results.c.device, chunk))
            .group_by(inspection_results.c.device),
            select(repairs.c.device, func.max(repairs.c.ts_ms))
            .where(any_of(conn, repairs.c.device, chunk)).group_by(repairs.c.device))
        for device, ts in conn.execute(q):
            out[device] = max(out[device], int(ts or 0))
    return out


def prices(conn: Connection, keys: set[tuple[int, str]]) -> dict[tuple[int, str], list[Any]]:
    """Registered price versions for (merchant, PLU) pairs, oldest first: by merchant, in
    chunks (a batch can name thousands of merchants; one OR-expression per pair would exceed
    SQLite's expression depth)."""
    if not keys:
        return {}
    wanted = set(keys)
    merchants_ = sorted({m for m, _ in keys})
    got: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for i in range(0, len(merchants_), 500):
        q = (select(plu_prices).where(any_of(conn, plu_prices.c.merchant_id, merchants_[i:i + 500]))
             .order_by(plu_prices.c.valid_from_ms))
        for r in conn.execute(q):
            if (r.merchant_id, r.plu) in wanted:
                got[(r.merchant_id, r.plu)].append(r)
    return got


def price_at(versions: list[Any], ts: int) -> RegisteredPrice | None:
    """The price version of ``versions`` (oldest first) in force at ``ts``."""
    best = None
    for v in versions:
        if v.valid_from_ms <= ts:
            best = v
    if best is None:
        return None
    return RegisteredPrice(best.plu, int(best.unit_price_fen_per_kg), best.category)
