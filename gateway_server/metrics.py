"""Prometheus text exposition (format 0.0.4) for ``GET /metrics``, without a client library.

Counters come from the ingest's in-process statistics (this worker) and the time-series
sink; gauges that describe the whole system (open findings by kind, scales by state,
open inspection tasks) come from the database, so any API process can serve them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select

from gateway_server.store import Store
from gateway_server.tables import findings, scales
from gateway_server.tables_workflow import inspection_tasks

PREFIX = "scalegw"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _line(name: str, value: float | int, labels: dict[str, str] | None = None) -> str:
    lab = ""
    if labels:
        lab = "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in sorted(labels.items())) + "}"
    return f"{PREFIX}_{name}{lab} {value}"


def _family(name: str, kind: str, help_: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {PREFIX}_{name} {help_}", f"# TYPE {PREFIX}_{name} {kind}", *samples]


INGEST_COUNTERS = {
    "received": "MQTT messages taken from the broker",
    "stored_sales": "sales stored (new, after deduplication)",
    "stored_events": "other events stored (new)",
    "duplicates": "redelivered events counted as duplicates",
    "dead_letters": "messages or events rejected into dead letters",
    "quarantined": "messages of unregistered devices quarantined",
    "bad_signatures": "events rejected for a missing or invalid HMAC",
    "unsigned": "births, states, sample batches accepted unsigned (unsigned_messages = accept)",
    "sequence_gaps": "sequence gaps detected",
    "samples": "raw readings ingested",
    "batches": "ingest transactions committed",
    "store_retries": "ingest transactions retried after a database error",
}


def _not_judged(evidence: list[dict[str, Any]]) -> list[str]:
    """What the detectors left out (open ``not-judged`` findings, docs/detection.md): scales
    a detector cannot judge at all, and pairs the statistical detector left out."""
    detectors = sorted({str(e.get("detector", "")) for e in evidence} | {"residual"})
    scales_ = [_line("scales_not_judged",
                     sum(1 for e in evidence if e.get("detector") == d and not e.get("judged")),
                     {"detector": d}) for d in detectors]
    left_out = sum(int(e.get("left_out") or 0) for e in evidence
                   if e.get("detector") == "residual")
    return (_family("scales_not_judged", "gauge",
                    "scales a detector could not judge (open not-judged findings)", scales_)
            + _family("residual_pairs_left_out", "gauge",
                      "pairs the statistical detector left out (open not-judged findings)",
                      [_line("residual_pairs_left_out", left_out)]))


def render(store: Store, ingestor: Any | None, sink: Any | None = None) -> str:
    out: list[str] = []
    now = time.time_ns() // 1_000_000
    if ingestor is not None:
        st = ingestor.stats
        for key, help_ in INGEST_COUNTERS.items():
            out += _family(f"ingest_{key}_total", "counter", help_, [
                _line(f"ingest_{key}_total", getattr(st, key))])
        out += _family("ingest_connected", "gauge", "1 when the ingest is connected to MQTT",
                       [_line("ingest_connected", int(bool(st.connected)))])
        lag = (now - st.last_batch_ms) / 1000 if st.last_batch_ms else 0
        out += _family("ingest_last_batch_age_seconds", "gauge",
                       "seconds since the last committed ingest batch",
                       [_line("ingest_last_batch_age_seconds", round(lag, 3))])
        out += _family("ingest_queue_depth", "gauge", "messages received, not yet stored",
                       [_line("ingest_queue_depth", ingestor.queue_depth())])
    with store.engine.connect() as c:
        by_kind = c.execute(select(findings.c.kind, findings.c.severity, func.count())
                            .where(findings.c.status == "open")
                            .group_by(findings.c.kind, findings.c.severity)).all()
        states = c.execute(select(scales.c.state, func.count()).group_by(scales.c.state)).all()
        tasks = c.execute(select(func.count()).select_from(inspection_tasks)
                          .where(inspection_tasks.c.status == "open")).scalar_one()
        not_judged = [json.loads(e) for (e,) in c.execute(
            select(findings.c.evidence).where(findings.c.status == "open",
                                              findings.c.kind == "not-judged"))]
    out += _family("findings_open", "gauge", "open findings by kind and severity", [
        _line("findings_open", n, {"kind": k, "severity": s}) for k, s, n in by_kind])
    out += _family("scales", "gauge", "scales by reported state", [
        _line("scales", n, {"state": s}) for s, n in states])
    out += _family("inspection_tasks_open", "gauge", "open inspection tasks",
                   [_line("inspection_tasks_open", tasks)])
    out += _not_judged(not_judged)
    if sink is not None:
        for k, v in sorted(sink.stats().items()):
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            out += _family(f"tsdb_{k}", "gauge", f"time-series sink: {k}",
                           [_line(f"tsdb_{k}", v)])
    return "\n".join(out) + "\n"
