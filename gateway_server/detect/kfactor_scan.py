"""K-factor drift in the store: raw AD counts of sales against the empty pan's.

The rule is pure (:mod:`gateway_server.detect.rules.kfactor`); this module stores each new
sale's empty-pan count (``sales.ad_zero``) and reads, per scale, the reference and recent
samples of its evidence period (called by :func:`gateway_server.detect.orchestrator.detect`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.detect.queries import reset_ms, scale_contexts
from gateway_server.detect.rules import kfactor as kf
from gateway_server.detect.rules.stream import Finding
from gateway_server.store.tables import events, sales


def kfactor_findings(conn: Connection, new_sales: list[dict[str, Any]]) -> list[Finding]:
    """K = (AD − AD0) / W per sale that carries a raw AD count (``rules.kfactor``):
    AD0 from the device's latest zero check with a raw AD before the sale, stored with the
    sale (``sales.ad_zero``); then the drift rule per device."""
    with_ad = [s for s in new_sales if s.get("raw_ad") is not None]
    if not with_ad:
        return []
    for s in with_ad:
        for (payload,) in conn.execute(
                select(events.c.payload).where(events.c.device == s["device"],
                                               events.c.kind == "zero",
                                               events.c.ts_ms <= s["ts_ms"])
                .order_by(events.c.ts_ms.desc()).limit(20)):
            ad0 = json.loads(payload).get("raw_ad")
            if ad0 is not None:
                conn.execute(sales.update().where(sales.c.id == s["id"]).values(ad_zero=ad0))
                break
    ctx = scale_contexts(conn, {s["device"] for s in with_ad})
    out: list[Finding] = []
    for device in sorted(ctx):
        sc, reset = ctx[device], reset_ms(conn, device)
        base = select(sales.c.ts_ms, sales.c.seq, sales.c.raw_ad, sales.c.ad_zero,
                      sales.c.settled_mg, sales.c.tare_mg, sales.c.merchant_id).where(
            sales.c.device == device, sales.c.raw_ad.is_not(None),
            sales.c.ad_zero.is_not(None), sales.c.ts_ms > reset)

        ref = _k_samples(conn.execute(base.order_by(sales.c.ts_ms, sales.c.seq).limit(100)),
                         sc.e_mg)
        rows = list(conn.execute(base.order_by(sales.c.ts_ms.desc(), sales.c.seq.desc())
                                 .limit(50)))
        recent = _k_samples(reversed(rows), sc.e_mg)
        merchant = rows[0].merchant_id if rows else None
        f = kf.check_k_drift(ref, recent, sc, reset_ms=reset, merchant_id=merchant)
        if f is not None:
            out.append(f)
    return out


def _k_samples(rows: Iterable[Any], e_mg: int) -> list[kf.KSample]:
    # the load cell carries the tare too: W is the gross weight shown
    got = [kf.KSample(int(r.ts_ms), int(r.seq), int(r.raw_ad) - int(r.ad_zero),
                      int(r.settled_mg) + int(r.tare_mg or 0)) for r in rows]
    return [k for k in got if kf.qualifies(k.span_ad, k.settled_mg, e_mg)]
