"""Prometheus text exposition (format 0.0.4) for ``GET /metrics``, without a client library.

Counters come from the ingest's in-process statistics (this worker) and the time-series
sink; gauges that describe the whole system (open findings by kind, scales by state,
open inspection tasks) come from the database, so any API process can serve them.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import func, select

from gateway_server.store.database import Store
from gateway_server.store.tables import findings, scales
from gateway_server.store.tables_workflow import inspection_tasks

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


class Histogram:
    """A Prometheus histogram of durations in seconds, observed by one thread and read by
    another (the scrape): :meth:`observe` and :meth:`lines` hold a lock, so a scrape never
    sees a count that its buckets do not add up to."""

    #: upper bounds, seconds: from a 1-message transaction (~2 ms) to a backlog's
    #: largest (seconds)
    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * len(self.BUCKETS)  # per bucket, not cumulative
        self._count = 0
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._count += 1
            self._sum += seconds
            i = bisect.bisect_left(self.BUCKETS, seconds)  # the first bound ≥ seconds
            if i < len(self._counts):  # else above every bound: in +Inf only
                self._counts[i] += 1

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        """The ``_bucket`` (cumulative, ``le`` up to ``+Inf``), ``_sum`` and ``_count``
        samples of ``name``."""
        with self._lock:
            counts, count, total = list(self._counts), self._count, self._sum
        out, below = [], 0
        for le, n in zip(self.BUCKETS, counts, strict=True):
            below += n
            out.append(_line(f"{name}_bucket", below, {**labels, "le": f"{le:g}"}))
        out.append(_line(f"{name}_bucket", count, {**labels, "le": "+Inf"}))
        out.append(_line(f"{name}_sum", round(total, 6), labels))
        out.append(_line(f"{name}_count", count, labels))
        return out


def _transactions(writer: Any, labels: dict[str, str]) -> list[str]:
    """``ingest_transaction_seconds{lane}``: how long the writer's transactions take, by
    what they hold (``events``: births, states, events; ``samples``: sample batches)."""
    samples: list[str] = []
    for lane, hist in sorted(getattr(writer, "tx_seconds", {}).items()):
        samples += hist.lines("ingest_transaction_seconds", {**labels, "lane": lane})
    return _family("ingest_transaction_seconds", "histogram",
                   "seconds an ingest transaction took (store, commit), by lane: an event "
                   "waits for the one in progress, then its own", samples)


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
        out += _transactions(getattr(ingestor, "writer", None), {})
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


# -- a sharded worker's own /metrics (issue 17) ------------------------------------------


def _ack_backlog(acks: Any) -> tuple[int, int, int, int]:
    """(stored sent, resend sent, devices whose confirmation is behind, devices with a gap)."""
    if acks is None:
        return 0, 0, 0, 0
    behind = gaps = 0
    for device, st in list(acks.devices.items()):  # a copy: the writer thread adds to it
        behind += st.mark > st.sent_mark
        gaps += acks.gap(device) is not None
    return acks.stats.stored_sent, acks.stats.resend_sent, behind, gaps


def render_worker(worker: Any, sink: Any | None = None) -> str:
    """``GET /metrics`` of a ``gateway-server worker``: its own ingest, nothing from the
    database (the API processes serve the system-wide gauges).

    ``worker`` is a :class:`gateway_server.ingest.sharding.Worker`: counters are its one
    writer's, over every market it owns or owned (they never go back when a market
    moves); gauges are per owned market (its MQTT session).
    """
    now = time.time_ns() // 1_000_000
    owned = dict(worker.owned)  # a copy: the coordinator thread changes it
    writer = worker.writer
    wid = {"worker": worker.worker_id}
    out: list[str] = []
    for key, help_ in INGEST_COUNTERS.items():
        total = getattr(writer.stats, key) if writer is not None else 0
        out += _family(f"ingest_{key}_total", "counter", help_,
                       [_line(f"ingest_{key}_total", total, wid)])
    out += _family("worker_leases_held", "gauge", "market leases this worker holds",
                   [_line("worker_leases_held", len(owned), wid)])
    per_market: dict[str, list[str]] = {"connected": [], "queue": [], "age": [], "lag": []}
    for market, ing in sorted(owned.items()):
        lab = {**wid, "market": market}
        per_market["connected"].append(_line("ingest_connected", int(bool(ing.connected)),
                                             lab))
        per_market["queue"].append(_line("ingest_queue_depth", ing.queue_depth(), lab))
        age = (now - ing.last_batch_ms) / 1000 if ing.last_batch_ms else 0
        per_market["age"].append(_line("ingest_last_batch_age_seconds", round(age, 3), lab))
        if ing.newest_sample_ms:
            per_market["lag"].append(_line(
                "ingest_lag_seconds", round((now - ing.newest_sample_ms) / 1000, 3), lab))
    out += _family("ingest_connected", "gauge", "1 when the market's MQTT session is up",
                   per_market["connected"])
    out += _family("ingest_queue_depth", "gauge",
                   "messages taken from the broker, not yet stored", per_market["queue"])
    out += _family("ingest_last_batch_age_seconds", "gauge",
                   "seconds since the market's last committed batch", per_market["age"])
    out += _family("ingest_lag_seconds", "gauge",
                   "now minus the device time of the newest stored sample (how far the ingest "
                   "is behind the scales, broker queue included)", per_market["lag"])
    if writer is not None:
        out += _transactions(writer, wid)
    stored, resend, behind, gaps = _ack_backlog(writer.acks if writer is not None else None)
    out += _family("ack_stored_sent_total", "counter", "signed 'stored' confirmations sent",
                   [_line("ack_stored_sent_total", stored, wid)])
    out += _family("ack_resend_sent_total", "counter", "resend requests sent for gaps",
                   [_line("ack_resend_sent_total", resend, wid)])
    out += _family("ack_devices_behind", "gauge",
                   "devices with stored events not yet confirmed to them",
                   [_line("ack_devices_behind", behind, wid)])
    out += _family("ack_devices_with_gap", "gauge", "devices with a sequence gap open",
                   [_line("ack_devices_with_gap", gaps, wid)])
    if sink is not None:
        for k, v in sorted(sink.stats().items()):
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            out += _family(f"tsdb_{k}", "gauge", f"time-series sink: {k}",
                           [_line(f"tsdb_{k}", v, wid)])
    return "\n".join(out) + "\n"


class MetricsServer:
    """A small HTTP server for a process without the API: ``GET /metrics``, ``/healthz``.

    ``render`` builds the exposition text on each scrape (in the server's thread).
    ``port`` 0 picks a free port; :attr:`port` is the one bound.
    """

    def __init__(self, host: str, port: int, render: Callable[[], str]) -> None:
        outer_render = render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    try:
                        body, code = outer_render().encode(), 200
                    except Exception as err:  # a scrape never kills the worker
                        body, code = f"metrics failed: {err}\n".encode(), 500
                    ctype = "text/plain; version=0.0.4; charset=utf-8"
                elif path == "/healthz":
                    body, code, ctype = b"ok\n", 200, "text/plain; charset=utf-8"
                else:
                    body, code, ctype = b"not found\n", 404, "text/plain; charset=utf-8"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes are not news

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = host, self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http",
                                        daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
