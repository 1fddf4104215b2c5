"""Ingest benchmark: broker → stored, end to end, against the raw paho-subscriber ceiling.

Starts a private Mosquitto on a free loopback port, registers the devices with keys
(so every event's HMAC is verified, as in production), then, for each workload:

1. **ceiling**: a bare paho subscriber (QoS 1, auto-ack, no decoding) counts the same
   messages — what one Python process can take off the broker at all;
2. **gateway**: the real ``Ingestor`` (paho, manual ack after commit, msgspec decode,
   signature checks, dedup inserts, rollups) on SQLite, timed until every row is stored.

The publisher runs in a separate process with prebuilt payloads, so it does not share
the GIL with the subscriber. Results go to docs/benchmarks.md ("## Ingest end to end",
that section only).

    python bench/bench_ingest.py [--sales 100000] [--samples 1000000] [--db sqlite|postgresql]
                                 [--no-write]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import benchlib
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import insert

from gateway_server.ingest.ingestor import Ingestor
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import markets, scales
from weighing import wire
from weighing.signing import sign_event

DOC = benchlib.ROOT / "docs" / "benchmarks.md"
HEADING = "## Ingest end to end"
DEVICES = 100
KEY = bytes.fromhex("5eed" * 8)
T0 = 1_790_000_000_000


def build_sales(n: int, per_msg: int) -> list[tuple[str, bytes]]:
    out = []
    seq = dict.fromkeys(range(DEVICES), 0)
    i = 0
    while i < n:
        d = (i // per_msg) % DEVICES
        dev = f"b-{d:04d}"
        evs = []
        for _ in range(min(per_msg, n - i)):
            seq[d] += 1
            net = 1_250_000 + seq[d] * 5_000 % 3_000_000
            ev = wire.SaleEvent(seq=seq[d], ts_ms=T0 + seq[d] * 1000, net_mg=net,
                                settled_mg=1_250_000, peak_mg=1_300_000, stable_device=True,
                                stable_software=True, duration_ms=1500)
            evs.append(wire.encode_event(sign_event(KEY, dev, ev)))
            i += 1
        out.append((f"scales/v1/bm/{dev}/events", wire.event_batch_payload(dev, evs)))
    return out


def build_samples(n: int, per_msg: int) -> list[tuple[str, bytes]]:
    out = []
    i = 0
    k = 0
    while i < n:
        d = k % DEVICES
        dev = f"b-{d:04d}"
        m = min(per_msg, n - i)
        t0 = T0 + k * 1000
        sb = wire.SampleBatch(device=dev, t_ms=[t0 + 50 * j for j in range(m)],
                              net_mg=[(j * 5_000) % 2_000_000 for j in range(m)], flags=[1] * m)
        out.append((f"scales/v1/bm/{dev}/samples", wire.encode(sb)))
        i += m
        k += 1
    return out


def publisher(port: int, msgs: list[tuple[str, bytes]], go: MpEvent) -> None:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-pub")
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    go.wait()
    last = None
    for topic, payload in msgs:
        last = c.publish(topic, payload, qos=1)
    if last is not None:
        last.wait_for_publish(300)
    c.loop_stop()
    c.disconnect()


def run_ceiling(port: int, msgs: list[tuple[str, bytes]]) -> float:
    got = 0
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        nonlocal got
        got += 1
        if got == len(msgs):
            done.set()

    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-raw")
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("scales/v1/bm/+/+", qos=1)
    sub.loop_start()
    time.sleep(0.5)
    go = mp.Event()
    p = mp.Process(target=publisher, args=(port, msgs, go))
    p.start()
    time.sleep(1.0)
    t0 = time.perf_counter()
    go.set()
    if not done.wait(600):
        raise SystemExit(f"ceiling: {got} of {len(msgs)} messages in 600 s")
    dt = time.perf_counter() - t0
    p.join()
    sub.loop_stop()
    sub.disconnect()
    return dt


def run_gateway(port: int, msgs: list[tuple[str, bytes]], db_url: str, expect: str,
                n: int) -> tuple[float, dict[str, object]]:
    store = Store.from_url(db_url)
    store.migrate()  # the production schema (on PostgreSQL: partitioned sales and events)
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="bm", name="bench", created_ms=T0))
        c.execute(insert(scales), [
            {"device": f"b-{d:04d}", "market": "bm", "registered": True, "key_hex": KEY.hex(),
             "role": "trade", "state": "unknown", "max_mg": 15_000_000, "e_mg": 5_000}
            for d in range(DEVICES)])
    settings = Settings(database_url=db_url, mqtt_url=f"mqtt://127.0.0.1:{port}",
                        mqtt_client_id=f"bench-gw-{expect}")
    ing = Ingestor(settings, store)

    def done() -> bool:
        s = ing.stats
        return (s.stored_sales if expect == "sales" else s.samples) >= n

    dt = benchlib.timed_ingest(ing, publisher, port, msgs, done, what=f"gateway: {expect}")
    stats = ing.stats.as_dict()
    store.engine.dispose()
    return dt, stats


Row = tuple[str, int, int, int, float, float, float, float]


def section(rows: list[Row], db: str) -> str:
    lines = [
        f"`python bench/bench_ingest.py` — {benchlib.today()}, {benchlib.machine()}. "
        f"Mosquitto on loopback, store {db}, {DEVICES} registered devices with HMAC "
        "keys (every event verified). Publisher in a separate process, QoS 1. 'Ceiling' is a "
        "bare paho subscriber counting the same messages in the same run; 'stored' is the "
        "gateway's ingest (decode, validate, verify, dedup insert, rollups, ack after commit).",
        "",
        "| workload | items | per message | messages | ceiling msg/s | ceiling items/s | "
        "stored items/s | stored / ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, n, per, nm, cm, ci, gi, ratio in rows:
        lines.append(f"| {kind} | {n:,} | {per} | {nm:,} | {cm:,.0f} | {ci:,.0f} | "
                     f"{gi:,.0f} | {ratio:.0%} |")
    lines += ["", "Goals (issue 5): ≥ 200,000 samples/s and ≥ 10,000 sales/s per process."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sales", type=int, default=100_000)
    ap.add_argument("--sales-per-msg", type=int, default=50)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--samples-per-msg", type=int, default=100)
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    broker, port = benchlib.start_mosquitto(
        tmp, "max_queued_messages 1000000\nmax_inflight_messages 0\n")
    rows: list[Row] = []
    try:
        for kind, n, per, build in (("sales", args.sales, args.sales_per_msg, build_sales),
                                    ("samples", args.samples, args.samples_per_msg, build_samples)):
            msgs = build(n, per)
            ceil_s = run_ceiling(port, msgs)
            if args.db == "sqlite":
                url = f"sqlite:///{tmp}/{kind}.db"
            else:
                url = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
            gw_s, stats = run_gateway(port, msgs, url, kind, n)
            row = (kind, n, per, len(msgs), len(msgs) / ceil_s, n / ceil_s, n / gw_s,
                   (n / gw_s) / (n / ceil_s))
            rows.append(row)
            print(f"{kind}: {n} in {len(msgs)} msgs; raw paho ceiling {n / ceil_s:,.0f}/s "
                  f"({len(msgs) / ceil_s:,.0f} msg/s); gateway stored {n / gw_s:,.0f}/s "
                  f"= {row[-1]:.0%} of the ceiling; stats {stats}", flush=True)
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.no_write:
        benchlib.replace_section(DOC, HEADING, section(rows, args.db))
        print(f"written to {DOC} under {HEADING!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
