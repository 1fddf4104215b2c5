"""Prometheus ``/metrics`` of the edge agent: outbox depth, drops, reconnects, frame errors,
and the fair-scale stations' scan counters.

A tiny HTTP server (stdlib ``http.server``) in a daemon thread, bound to loopback by
default; it renders :meth:`edge_agent.agent.Agent.status` in the text exposition format.
Names match the Grafana dashboard (docs/grafana-dashboard.json): ``scaleedge_*``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "scaleedge"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_STATION = (
    ("scans_total", "scans", "counter", "scans accepted by a fair-scale station"),
    ("scan_errors_total", "scan_errors", "counter",
     "scanned lines rejected (empty, over-long, bad characters, unknown URL)"),
    ("reweighs_total", "reweighs", "counter", "weighings paired with a scan (re-weighs)"),
    ("station_unpaired_total", "unpaired", "counter",
     "weighings on a fair scale without a scan (sent as sales)"),
    ("scans_replaced_total", "replaced", "counter", "pending scans replaced by a newer scan"),
    ("scans_expired_total", "expired", "counter", "scans dropped after the pairing window"),
    ("scanner_failures_total", "scanner_failures", "counter", "code scanner line failures"),
)


def render(status: dict[str, Any]) -> str:
    out: list[str] = []

    def fam(name: str, kind: str, help_: str, rows: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP {PREFIX}_{name} {help_}")
        out.append(f"# TYPE {PREFIX}_{name} {kind}")
        for labels, value in rows:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(labels.items()))
            out.append(f"{PREFIX}_{name}{{{lab}}} {value}" if lab else f"{PREFIX}_{name} {value}")

    ob = status.get("outbox", {})
    fam("outbox_queued", "gauge", "rows waiting for the broker's acknowledgement",
        [({}, ob.get("queued", 0))])
    fam("outbox_sent_total", "counter", "rows acknowledged by the broker",
        [({}, ob.get("sent", 0))])
    fam("outbox_dropped_total", "counter", "rows dropped by the bound (samples first)",
        [({}, ob.get("dropped", 0))])
    fam("outbox_alarm", "gauge", "1 when only sales remain and the outbox is full",
        [({}, int(bool(ob.get("alarm"))))])
    scales = status.get("scales", {})
    fam("frames_total", "counter", "frames decoded",
        [({"device": d}, s.get("frames", 0)) for d, s in scales.items()])
    fam("frame_errors_total", "counter", "stretches of bytes rejected by the codec",
        [({"device": d}, s.get("frame_errors", 0)) for d, s in scales.items()])
    fam("events_total", "counter", "events written to the outbox",
        [({"device": d}, s.get("events", 0)) for d, s in scales.items()])
    fam("restarts_total", "counter", "worker restarts by the supervisor",
        [({"device": d}, s.get("restarts", 0)) for d, s in scales.items()])
    fam("reconnects_total", "counter", "MQTT reconnections",
        [({"device": d}, s.get("publisher", {}).get("reconnects", 0))
         for d, s in scales.items()])
    fam("connected", "gauge", "1 when the device's MQTT connection is up",
        [({"device": d}, int(bool(s.get("publisher", {}).get("connected"))))
         for d, s in scales.items()])
    fam("commands_rejected_total", "counter", "unauthentic or stale commands rejected",
        [({"device": d}, s.get("commands", {}).get("rejected", 0)) for d, s in scales.items()])
    # fair-scale stations only (scales with a code scanner)
    stations = {d: s["station"] for d, s in scales.items() if s.get("station")}
    for name, key, kind, help_ in _STATION:
        fam(name, kind, help_, [({"device": d}, st.get(key, 0)) for d, st in stations.items()])
    fam("scanner_up", "gauge", "1 when the station's code scanner line is open",
        [({"device": d}, int(st.get("scanner") == "open")) for d, st in stations.items()])
    # devices on a shared Modbus line ([[line]]): their slave on the line's bus
    slaves = {d: s["line"] for d, s in scales.items() if s.get("line")}

    def lab(d: str, ln: dict[str, Any]) -> dict[str, str]:
        return {"device": d, "line": str(ln.get("line")), "slave": str(ln.get("slave"))}

    fam("slave_up", "gauge", "1 when the device's last poll on its shared line was answered",
        [(lab(d, ln), int(ln.get("health") == "ok")) for d, ln in slaves.items()])
    fam("slave_reads_failed_total", "counter", "polls of the slave that failed (timeouts, "
        "errors); each is followed by a backoff",
        [(lab(d, ln), ln.get("reads_failed", 0)) for d, ln in slaves.items()])
    return "\n".join(out) + "\n"


class MetricsServer:
    """``with MetricsServer(agent.status, port=9108): ...``; ``port=0`` picks a free one."""

    def __init__(self, status: Callable[[], dict[str, Any]], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        status_fn = status

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = render(status_fn()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # scrapes are not news
                return

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="edge-metrics",
                                        daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
