"""Sale → finding latency through the SSE stream (issue 17), with the ingest under load.

A private Mosquitto; the gateway as it is deployed, in separate processes:

* *serve, SQLite*: one ``gateway-server serve`` (ingest and API in one process: the
  stream is woken by the ingest's commit in-process);
* *worker + api, PostgreSQL*: one ``gateway-server worker`` and one ``gateway-server api``
  on a fresh PostgreSQL database (the stream is woken by ``LISTEN``/``NOTIFY``).

A load process publishes 1 s sample batches for ``--load-scales`` scales (one message per
scale per second, as agents do), while a probe publishes one short-weight sale (committed
while the pan moved: an ``impact`` finding) every ``1/--rate`` s and notes when;
an SSE client (``/api/v1/stream?poll_s=10``: polling alone would take up to 10 s) notes
when each finding arrives. Latency = arrival − publish, all on this machine's clock.
Results go to docs/benchmarks.md, "## Sale to finding through the stream" only.

    python bench/bench_push.py [--findings 200] [--rate 10] [--load-scales 1000] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

import benchlib
import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from gateway_server.api import auth
from gateway_server.ingest.sharding import client_id_for
from gateway_server.store.database import Store
from gateway_server.store.tables import markets, scales
from weighing import wire

DOC = benchlib.ROOT / "docs" / "benchmarks.md"
HEADING = "## Sale to finding through the stream"
BIN = Path(sys.executable).parent
ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MARKET = "pm"
PROBES = 20  # devices the probe sales come from
PASSWORD = "bench-password-1"


def register(url: str, load_scales: int) -> None:
    store = Store.from_url(url)
    store.migrate()
    with store.engine.begin() as c:
        c.execute(markets.insert().values(id=MARKET, name="bench", created_ms=0))
        c.execute(scales.insert(), [
            {"device": d, "market": MARKET, "registered": True, "role": "trade",
             "state": "unknown", "max_mg": 15_000_000, "e_mg": 5_000}
            for d in [f"p-{i:03d}" for i in range(PROBES)]
            + [f"l-{i:05d}" for i in range(load_scales)]])
    auth.ensure_user(store, "bench", PASSWORD, "inspector")
    store.engine.dispose()


def load(port: int, n: int, stop: MpEvent) -> None:
    """One 20-reading sample batch per scale per second, spread over the second."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-load")
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    seq = 0
    while not stop.is_set():
        t0 = time.time()
        seq += 1
        now = int(t0 * 1000)
        for i in range(n):
            dev = f"l-{i:05d}"
            sb = wire.SampleBatch(device=dev, t_ms=[now - 1000 + 50 * j for j in range(20)],
                                  net_mg=[0] * 20, flags=[1] * 20, seq=seq)
            c.publish(f"scales/v1/{MARKET}/{dev}/samples", wire.encode(sb), qos=1)
            if i % 50 == 49:
                time.sleep(max(0.0, t0 + (i + 1) / n - time.time()))
        time.sleep(max(0.0, t0 + 1 - time.time()))
    c.loop_stop()
    c.disconnect()


def token(http: str) -> str:
    r = httpx.post(f"{http}/api/v1/auth/token", json={"username": "bench", "password": PASSWORD})
    r.raise_for_status()
    return str(r.json()["access_token"])


def probe(port: int, http: str, n: int, rate: float) -> list[float]:
    """Publish ``n`` cheating sales; the latency of each one's finding through SSE (ms)."""
    sent: dict[tuple[str, int], float] = {}
    got: dict[tuple[str, int], float] = {}
    ready = threading.Event()
    headers = {"Authorization": f"Bearer {token(http)}"}

    def listen() -> None:
        with httpx.stream("GET", f"{http}/api/v1/stream?market={MARKET}&poll_s=10",
                          headers=headers, timeout=120) as r:
            r.raise_for_status()
            kind = ""
            for line in r.iter_lines():
                ready.set()
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "finding":
                    f = json.loads(line[6:])
                    if f["kind"] == "impact":
                        got.setdefault((f["device"], f["ts_ms"]), time.perf_counter())
                        if len(got) >= n:
                            return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    if not ready.wait(30):
        raise SystemExit("the SSE stream did not open")
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-probe")
    c.connect("127.0.0.1", port)
    c.loop_start()
    base = int(time.time() * 1000)
    for k in range(n):
        dev = f"p-{k % PROBES:03d}"
        seq = k // PROBES + 1
        ts = base + k
        ev = wire.SaleEvent(seq=seq, ts_ms=ts, net_mg=198_000, settled_mg=155_000,
                            peak_mg=198_000, stable_device=False, stable_software=False,
                            unsettled_commit=True)
        payload = wire.encode(wire.EventBatch(device=dev, events=[ev]))
        sent[(dev, ts)] = time.perf_counter()
        c.publish(f"scales/v1/{MARKET}/{dev}/events", payload, qos=1)
        time.sleep(1 / rate)
    t.join(60)
    c.loop_stop()
    c.disconnect()
    if len(got) < n:
        raise SystemExit(f"only {len(got)} of {n} findings arrived through the stream")
    return sorted((got[k] - sent[k]) * 1000 for k in sent)


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([str(BIN / "gateway-server"), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def session(port: int, client_id: str) -> None:
    """The ingest's persistent session, so nothing published before it connects is lost."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=False, protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe(wire.subscription(MARKET), qos=1)
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()


def forget(port: int, client_id: str) -> None:
    """Drop a session, so the next run does not inherit its queue (and its seqs)."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=True)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.disconnect()
    c.loop_stop()


def run(mode: str, tmp: Path, port: int, args: argparse.Namespace, load_scales: int
        ) -> tuple[list[float], str]:
    env = dict(os.environ, MQTT_URL=f"mqtt://127.0.0.1:{port}")
    http_port = benchlib.free_port()
    procs: list[subprocess.Popen[bytes]] = []
    db = None
    try:
        if mode == "serve":
            url = f"sqlite:///{tmp}/push-{load_scales}.db"
            register(url, load_scales)
            session(port, "bench-push-serve")
            procs.append(spawn(["serve", "--database-url", url, "--port", str(http_port),
                                "--client-id", "bench-push-serve"], env, tmp / "serve.log"))
        else:
            db = f"bench_push_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(ADMIN, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{db}"')
            url = ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + \
                f"/{db}"
            register(url, load_scales)
            session(port, client_id_for(MARKET))
            procs.append(spawn(["worker", "--database-url", url, "--metrics-listen", ""], env,
                               tmp / "worker.log"))
            procs.append(spawn(["api", "--database-url", url, "--port", str(http_port)], env,
                               tmp / "api.log"))
        benchlib.wait_port(http_port, 60)
        load_at = f"{os.getloadavg()[0]:.1f}"
        stop = mp.Event()
        loader = mp.Process(target=load, args=(port, load_scales, stop))
        if load_scales:
            loader.start()
            time.sleep(5)  # the load reaches its pace
        try:
            lat = probe(port, f"http://127.0.0.1:{http_port}", args.findings, args.rate)
        finally:
            stop.set()
            if load_scales:
                loader.join(30)
        return lat, load_at
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        forget(port, "bench-push-serve" if mode == "serve" else client_id_for(MARKET))
        if db:
            with psycopg.connect(ADMIN, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


Row = tuple[str, int, int, float, float, float, float, str]


def section(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"`python bench/bench_push.py --findings {args.findings} --rate {args.rate:g} "
        f"--load-scales {args.load_scales}` — {benchlib.today()}, {benchlib.machine()}. "
        "Mosquitto, the gateway's processes, the load and PostgreSQL share these cores. "
        "While *load scales* simulated scales each publish a 1 s sample batch every "
        "second (one message each, offered at that pace; this bench does not check that the "
        "ingest keeps up with it, bench_fleet.py does), a probe publishes "
        f"{args.findings} short-weight sales (one per "
        f"{1000 / args.rate:.0f} ms, each gives an `impact` finding) and an SSE "
        "client of `/api/v1/stream?poll_s=10` notes when each finding arrives; latency is "
        "arrival − publish (QoS 1 publish, the ingest batch's wait of up to 50 ms (default), "
        "detectors, commit, "
        "wake-up, the stream's read). No ceiling applies: the goal is absolute (issue 17: "
        "p99 < 250 ms under a 5,000-scale load).",
        "",
        "| gateway | findings | load scales | p50 ms | p95 ms | p99 ms | max ms | load |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode, n, ls, p50, p95, p99, mx, la in rows:
        lines.append(f"| {mode} | {n} | {ls:,} | {p50:.0f} | {p95:.0f} | {p99:.0f} | "
                     f"{mx:.0f} | {la} |")
    lines += [
        "",
        "Before issue 17 the stream polled the database every `poll_s` (default 1 s) and sent "
        "at most 500 rows a poll: sale → finding p50 559 ms / p99 1,063 ms at `poll_s=1`, "
        "p99 6.7 s under load (measured when the issue was filed, not this run). Now the "
        "storing transaction wakes it on commit (in-process, or PostgreSQL `NOTIFY` to the "
        "API process's `LISTEN`) and it pages until nothing new is left; `poll_s=10` here "
        "shows that no figure comes from polling. The 5,000-scale load of the goal is more "
        "than one ingest process stores on this machine (docs/operations.md, sizing): at "
        "that load the latency is the ingest's backlog, not the stream's.",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--findings", type=int, default=200)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--load-scales", default="1000,2500",
                    help="comma-separated: one run per figure")
    ap.add_argument("--only", choices=["serve", "pg"])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-push-"))
    broker, port = benchlib.start_mosquitto(
        tmp, "max_queued_messages 1000000\nmax_inflight_messages 0\n")
    rows: list[Row] = []
    try:
        runs = [(m, lbl, int(n)) for n in args.load_scales.split(",")
                for m, lbl in (("serve", "serve, SQLite"), ("pg", "worker + api, PostgreSQL"))]
        for mode, label, n_load in runs:
            if args.only and mode != args.only:
                continue
            lat, load_at = run(mode, tmp, port, args, n_load)
            row = (label, len(lat), n_load, pct(lat, 50), pct(lat, 95), pct(lat, 99),
                   lat[-1], load_at)
            rows.append(row)
            print(f"{label}: {len(lat)} findings under {n_load} scales (load "
                  f"{load_at}): p50 {row[3]:.0f} ms, p95 {row[4]:.0f} ms, p99 {row[5]:.0f} ms, "
                  f"max {row[6]:.0f} ms", flush=True)
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.no_write:
        benchlib.replace_section(DOC, HEADING, section(rows, args))
        print(f"written to {DOC} under {HEADING!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
