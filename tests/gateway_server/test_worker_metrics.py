"""A worker that can be seen (issue 17): ``gateway-server worker --processes 2`` on a real
Mosquitto, PostgreSQL and VictoriaMetrics; both worker processes share the market leases,
serve ``/metrics`` and write the sales they store to the time-series sink."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from pgutil import fresh_pg_database
from support import free_port, open_session, publish_qos1, start_mosquitto, wait_until
from test_sharding import (
    MARKETS,
    batches,
    leases,
    register,
    spawn,
    stored,
)
from test_tssink import make_vm

from gateway_server.ingest.sharding import client_id_for
from weighing import wire


def scrape(port: int) -> dict[str, float] | None:
    """Every sample of a worker's /metrics, by name and labels; None while it is not up."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except httpx.HTTPError:
        return None
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def dashboard_worker_metrics() -> set[str]:
    """The metric names the Grafana dashboard's per-worker panels query."""
    import json

    board = json.loads((Path(__file__).resolve().parents[2] / "docs" /
                        "grafana-dashboard.json").read_text(encoding="utf-8"))
    names: set[str] = set()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            if "by (worker)" in target["expr"]:
                names |= set(re.findall(r"scalegw_[a-z_]+", target["expr"]))
    # a histogram's samples (``_bucket``...) belong to the family named without the suffix
    return {re.sub(r"_(bucket|sum|count)$", "", n) if "_seconds_" in n else n for n in names}


def total(samples: list[dict[str, float]], name: str) -> float:
    return sum(v for s in samples for k, v in s.items() if re.fullmatch(
        rf"scalegw_{name}(\{{.*\}})?", k))


@pytest.mark.slow
def test_two_worker_processes_share_leases_and_serve_metrics(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    vm = make_vm(tmp_path, "vm")
    vm.start()
    sup: subprocess.Popen[bytes] | None = None
    try:
        with fresh_pg_database() as url:
            store = register(url)
            for m in MARKETS:
                open_session(broker.port, client_id_for(m), wire.subscription(m))
            base = free_port()
            while any(_busy(base + i) for i in (1,)):
                base = free_port()
            env = dict(os.environ, DATABASE_URL=url, MQTT_URL=broker.url,
                       GATEWAY_TSDB_URL=vm.url, GATEWAY_TSDB_FLUSH_MS="100")
            sup = spawn(["worker", "--processes", "2", "--worker-id", "wp", "--lease-s", "3",
                         "--metrics-listen", f"127.0.0.1:{base}"], env, tmp_path / "w.log")

            log = tmp_path / "w.log"

            def ports() -> dict[str, int]:
                """Each process's metrics port, from its latest start line in the log (a
                port another program holds moves the process to the next free one)."""
                text = log.read_text(errors="replace") if log.exists() else ""
                return {m[0]: int(m[1]) for m in re.findall(
                    r"worker (wp-\d) started .*?metrics http://127\.0\.0\.1:(\d+)/", text)}

            def scrapes() -> list[dict[str, float]] | None:
                p = ports()
                if set(p) != {"wp-0", "wp-1"}:
                    return None
                got = [scrape(p["wp-0"]), scrape(p["wp-1"])]
                return None if None in got else got  # type: ignore[return-value]

            # both processes up, every market held, by the two of them together
            wait_until(lambda: (s := scrapes()) is not None
                       and total(s, "worker_leases_held") == len(MARKETS)
                       and set(leases(store).values()) == {"wp-0", "wp-1"}, 120,
                       what="six leases shared by wp-0 and wp-1, seen in /metrics")
            publish_qos1(broker.port, batches(0))
            expected = len(MARKETS) * 2 * 2  # two devices a market, two sales each
            wait_until(lambda: total(scrapes() or [], "ingest_stored_sales_total") == expected,
                       120, what="the stored sales counted in /metrics")
            s = scrapes()
            assert s is not None
            assert total(s, "ingest_dead_letters_total") == 0
            assert total(s, "ingest_queue_depth") == 0
            assert total(s, "ingest_connected") == len(MARKETS)
            # every transaction that stored them was timed, in the events lane
            assert sum(v for one in s for k, v in one.items() if k.startswith(
                "scalegw_ingest_transaction_seconds_count{") and 'lane="events"' in k) >= 1
            # these messages carry no floor_seq (an agent without end-to-end acknowledgement):
            # nothing to confirm, but the backlog is reported
            assert total(s, "ack_devices_behind") == 0
            assert all(any(k.startswith("scalegw_ack_stored_sent_total{") for k in one)
                       for one in s)
            for one in s:  # each process names itself and its markets
                assert any('worker="wp-' in k for k in one)
            # every metric of the dashboard's per-worker panels is a family each worker
            # serves (the lag has samples once sample batches are stored; these are sales)
            wanted = dashboard_worker_metrics()
            assert len(wanted) >= 8, wanted
            for port in ports().values():
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                for name in sorted(wanted):
                    assert f"# TYPE {name} " in text, f"{name} not in /metrics of :{port}"
            # the sales went on to the time-series store, counted by each worker's sink
            wait_until(lambda: total(scrapes() or [], "tsdb_written") >= expected, 60,
                       what="the sales written to VictoriaMetrics")
            # a worker process killed without a goodbye is restarted by the supervisor; under
            # the same worker id it takes its markets back, and nothing is lost meanwhile
            kids = Path(f"/proc/{sup.pid}/task/{sup.pid}/children").read_text().split()
            assert len(kids) == 2
            pids = {int(k) for k in kids}
            first = ports()["wp-0"]
            os.kill(_pid_on(first, pids), signal.SIGKILL)  # process 0
            publish_qos1(broker.port, batches(1))
            wait_until(lambda: stored(store) == 2 * expected, 120,
                       what="every sale stored across the restart")
            wait_until(lambda: (s := scrapes()) is not None
                       and total(s, "worker_leases_held") == len(MARKETS), 120,
                       what="the restarted process serving its leases again")
            new_kids = set(Path(f"/proc/{sup.pid}/task/{sup.pid}/children").read_text().split())
            assert len(new_kids) == 2 and new_kids != {str(p) for p in pids}
            sup.send_signal(signal.SIGTERM)
            assert sup.wait(60) == 0
            wait_until(lambda: all(scrape(p) is None for p in ports().values()), 30,
                       what="both worker processes stopped")
            store.engine.dispose()
    finally:
        if sup is not None and sup.poll() is None:
            sup.kill()
        vm.stop()
        broker.stop()


def _pid_on(port: int, pids: set[int]) -> int:
    """Which of ``pids`` listens on ``port`` (from /proc/net/tcp and the fds)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[3] == "0A":  # LISTEN
            inode = f[9]
    assert inode is not None
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no process of {pids} listens on {port}")


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_worker_processes_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    """SIGKILL of ``worker --processes 2`` (no chance to stop its children): the kernel
    sends each child SIGTERM, so none keeps ingesting, holding leases, on its own."""
    broker = start_mosquitto(tmp_path)
    sup: subprocess.Popen[bytes] | None = None
    kids: list[int] = []
    try:
        with fresh_pg_database() as url:
            register(url).engine.dispose()
            env = dict(os.environ, DATABASE_URL=url, MQTT_URL=broker.url)
            sup = spawn(["worker", "--processes", "2", "--worker-id", "wk", "--lease-s", "3",
                         "--metrics-listen", f"127.0.0.1:{free_port()}"], env,
                        tmp_path / "w.log")
            children = Path(f"/proc/{sup.pid}/task/{sup.pid}/children")
            wait_until(lambda: len(children.read_text().split()) == 2, 60,
                       what="two worker processes started")
            kids = [int(k) for k in children.read_text().split()]
            sup.kill()
            sup.wait(30)
            wait_until(lambda: not any(_alive(k) for k in kids), 60,
                       what="both worker processes gone after their supervisor was killed")
    finally:
        for k in kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
        if sup is not None and sup.poll() is None:
            sup.kill()
        broker.stop()
