"""Points/s into a real VictoriaMetrics: TimeSeriesSink versus influxdb-client ``Point``.

Starts ``victoria-metrics`` on a free loopback port (a fresh data directory), then
writes ``--points`` sample points (default 1,000,000: 100 devices, columnar batches of
``--chunk`` readings as ``SampleBatch`` carries them) three ways, each under its own
``market`` label, and checks that every point arrived (PromQL ``count_over_time``):

* ``Point``: one ``influxdb_client.Point`` per reading, synchronous ``write_api``,
  5,000 points per request (what the client's documentation shows);
* ``prebuilt strings``: the same lines built with :func:`sample_lines` and written
  directly by one synchronous ``write_api`` loop, 5,000 per request;
* ``ready bodies`` (the same-run ceiling): the request bodies of the row above built
  before the clock starts, so only the ``write_api`` calls and the store's answers are
  timed: what one synchronous writer can push into this VictoriaMetrics at all;
* ``TimeSeriesSink``: ``write_samples`` per chunk from the calling thread, its writer
  thread posting; *enqueue* is what the ingest writer thread pays, *end to end* runs
  until :meth:`TimeSeriesSink.flush` returns.

Writes the table under "## Time-series sink" in docs/benchmarks.md (that section only).
Run: ``python bench/bench_tssink.py [--points N] [--no-write]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib
import httpx
import influxdb_client
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision

from gateway_server.telemetry.tssink import TimeSeriesSink, sample_lines

DOC = benchlib.ROOT / "docs" / "benchmarks.md"
HEADING = "## Time-series sink"
DEVICES = 100
BATCH = 5000
STEP_MS = 10


def start_vm(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
    port = benchlib.free_port()
    proc = subprocess.Popen([binary, f"-httpListenAddr=127.0.0.1:{port}",
                             f"-storageDataPath={data}", "-retentionPeriod=100y"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("victoria-metrics did not start")


Chunk = tuple[str, list[int], list[int], list[int]]  # device, t_ms, net_mg, flags


def make_chunks(points: int, chunk: int, t0: int) -> list[Chunk]:
    per_device = points // DEVICES
    out: list[Chunk] = []
    for d in range(DEVICES):
        for start in range(0, per_device, chunk):
            idx = range(start, min(start + chunk, per_device))
            out.append((f"scale-{d:03d}", [t0 + i * STEP_MS for i in idx],
                        [(i * 7919 + d) % 30_000_000 for i in idx], [i % 2 for i in idx]))
    return out


def count(url: str, market: str, t_end_ms: int) -> int:
    httpx.get(url + "/internal/force_flush", timeout=30).raise_for_status()
    q = f'sum(count_over_time(weight_net_mg{{market="{market}"}}[1d]))'
    r = httpx.get(url + "/api/v1/query", params={"query": q, "time": t_end_ms / 1000 + 1},
                  timeout=60)
    r.raise_for_status()
    res = r.json()["data"]["result"]
    return int(float(res[0]["value"][1])) if res else 0


#: influxdb_client's Point is unannotated, so every call on it would be an untyped call in
#: typed code: the benchmark builds points through this Any-typed handle instead
_POINT: Any = Point


def run_points(url: str, chunks: list[Chunk], market: str) -> float:
    with InfluxDBClient(url=url, token="-", org="-") as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        t = time.perf_counter()
        buf: list[Point] = []
        for device, t_ms, net, flags in chunks:
            for ts, n, f in zip(t_ms, net, flags, strict=True):
                buf.append(_POINT("weight").tag("market", market).tag("device", device)
                           .field("net_mg", n).field("flags", f).time(ts, WritePrecision.MS))
                if len(buf) == BATCH:
                    api.write(bucket="b", record=buf, write_precision=WritePrecision.MS)
                    buf = []
        if buf:
            api.write(bucket="b", record=buf, write_precision=WritePrecision.MS)
        return time.perf_counter() - t


def run_strings(url: str, chunks: list[Chunk], market: str) -> float:
    with InfluxDBClient(url=url, token="-", org="-") as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        t = time.perf_counter()
        buf: list[str] = []
        for device, t_ms, net, flags in chunks:
            buf += sample_lines(market, device, t_ms, net, flags)
            while len(buf) >= BATCH:
                api.write(bucket="b", record="\n".join(buf[:BATCH]).encode(),
                          write_precision=WritePrecision.MS)
                del buf[:BATCH]
        if buf:
            api.write(bucket="b", record="\n".join(buf).encode(),
                      write_precision=WritePrecision.MS)
        return time.perf_counter() - t


def run_bodies(url: str, chunks: list[Chunk], market: str) -> float:
    lines = [line for device, t_ms, net, flags in chunks
             for line in sample_lines(market, device, t_ms, net, flags)]
    bodies = ["\n".join(lines[i : i + BATCH]).encode() for i in range(0, len(lines), BATCH)]
    del lines
    with InfluxDBClient(url=url, token="-", org="-") as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        t = time.perf_counter()
        for body in bodies:
            api.write(bucket="b", record=body, write_precision=WritePrecision.MS)
        return time.perf_counter() - t


def run_sink(url: str, chunks: list[Chunk], market: str,
             points: int) -> tuple[float, float, dict[str, Any]]:
    sink = TimeSeriesSink(url, batch_size=BATCH, max_queue=points, flush_ms=100)
    t = time.perf_counter()
    for device, t_ms, net, flags in chunks:
        sink.write_samples(market, device, t_ms, net, flags)
    enqueue = time.perf_counter() - t
    if not sink.flush(600):
        raise SystemExit(f"sink did not flush: {sink.stats()}")
    total = time.perf_counter() - t
    sink.close(5)
    return enqueue, total, sink.stats()


Row = tuple[str, float, str, str]  # writer, seconds, share of the ceiling, note


def section(rows: list[Row], points: int, chunk: int, vm_version: str) -> str:
    table = ["| writer | seconds | points/s | of ceiling | note |", "|---|---:|---:|---:|---|"]
    table += [f"| {name} | {secs:.2f} | {points / secs:,.0f} | {share} | {note} |"
              for name, secs, share, note in rows]
    return "\n".join([
        f"`python bench/bench_tssink.py` — {benchlib.today()}, {benchlib.machine()}. "
        f"{points:,} sample points ({DEVICES} devices, columnar chunks of {chunk} readings), "
        f"written to a real VictoriaMetrics {vm_version} on loopback (same machine, fresh data "
        "directory; it shares these cores with Python), every point counted back with PromQL "
        f"`count_over_time`. Requests of {BATCH:,} lines, synchronous `write_api`, "
        f"influxdb-client {influxdb_client.__version__}. *Ceiling*: the *ready bodies* row, "
        "the same requests built before the clock starts, so that only the writes and the "
        "store's answers are timed; *of ceiling* is points/s over the ceiling's, in this run.",
        "",
        *table,
        "",
        "The ingest writer thread pays only the *enqueue* row: formatting line protocol "
        "and appending to the queue; the network and the store's answer are the sink "
        "thread's, so that row is not compared with the ceiling. Building `Point` objects "
        "and letting the client serialise them is the cost of the first row (stack-notes.md "
        "measured ~7 µs a point for the serialisation alone), which is why the sink builds "
        "its own lines. The prebuilt strings row builds the strings in the same thread as "
        "it writes; the sink end to end can come closer to the ceiling than that row because "
        "the caller's thread formats while the sink's thread waits for the store.",
    ])


def vm_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"],
                         capture_output=True, text=True, check=False).stdout.strip()
    return out.split("+")[0] if out else "(version unknown)"


def arrived(url: str, market: str, t_end: int, points: int) -> str:
    got = count(url, market, t_end)
    return "all arrived" if got == points else f"ONLY {got:,} arrived"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=500, help="readings per write_samples call")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    t0 = (time.time_ns() // 1_000_000 // 3_600_000 - 2) * 3_600_000  # two hours ago
    chunks = make_chunks(args.points, args.chunk, t0)
    points = sum(len(c[1]) for c in chunks)
    t_end = t0 + (points // DEVICES) * STEP_MS
    with tempfile.TemporaryDirectory(prefix="bench-tssink-") as tmp:
        proc, url = start_vm(Path(tmp) / "vm")
        try:
            runs: list[tuple[str, str, Callable[[str], float]]] = [
                ("influxdb-client, Point", "bench-point", lambda m: run_points(url, chunks, m)),
                ("influxdb-client, prebuilt strings", "bench-strings",
                 lambda m: run_strings(url, chunks, m)),
                ("influxdb-client, ready bodies (ceiling)", "bench-bodies",
                 lambda m: run_bodies(url, chunks, m)),
            ]
            timed: list[tuple[str, float, str]] = []
            for name, market, fn in runs:
                timed.append((name, fn(market), arrived(url, market, t_end, points)))
                print(timed[-1], flush=True)
            enqueue, total, stats = run_sink(url, chunks, "bench-sink", points)
            note = arrived(url, "bench-sink", t_end, points)
            note += (f"; {stats['batches']} batches, {stats['retries']} retries, "
                     f"{stats['dropped_overflow']} dropped")
        finally:
            proc.terminate()
            proc.wait(30)
    ceiling = timed[-1][1]
    rows: list[Row] = [(name, secs, f"{ceiling / secs:.0%}", note) for name, secs, note in timed]
    rows.append(("TimeSeriesSink, enqueue (caller's thread)", enqueue, "–",
                 f"{enqueue / points * 1e6:.2f} µs/point"))
    rows.append(("TimeSeriesSink, end to end", total, f"{ceiling / total:.0%}", note))
    print(*rows[-2:], sep="\n")
    if not args.no_write:
        benchlib.replace_section(DOC, HEADING, section(rows, points, args.chunk, vm_version()))
        print(f"written to {DOC} under {HEADING!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
