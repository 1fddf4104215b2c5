"""Edge agent footprint: one ``edge-agent run`` process serving N emulated scales.

    .venv/bin/python bench/bench_edge.py [--scales 8] [--seconds 60] [--no-write]

The emulated scales (toledo-continuous, 20 frames/s each, a looping random script of
loads) run in this process on ptys; the agent runs as a subprocess, publishing to a
private Mosquitto on a free loopback port. After a warm-up, the agent's CPU time
(utime + stime from ``/proc/<pid>/stat``) is sampled over the run and reported as a
percentage of one core; memory is the peak RSS (``VmHWM`` in ``/proc/<pid>/status``).

A footprint has no ceiling; its same-run reference is the floor: an idle interpreter
with the agent's modules imported, started with the agent and measured over the same
window. The result goes under "## Edge agent footprint" in docs/benchmarks.md (that
section only) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

from device_profiles.schema import load_profile
from simulators.emulator import SerialEmulator
from simulators.script import random_script

PROFILE = "toledo-15kg-5g"
DOC = benchlib.ROOT / "docs" / "benchmarks.md"
HEADING = "## Edge agent footprint"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CPU_GOAL_PCT, RSS_GOAL_MB = 3, 80
# the reference: what the agent's imports cost before it does anything
IDLE = "import time, edge_agent.agent, edge_agent.cli, edge_agent.config; time.sleep(86400)"

Footprint = dict[str, float]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)


def status_field(pid: int, key: str) -> int:
    """A number from ``/proc/<pid>/status`` (kB for the memory fields)."""
    m = re.search(rf"^{key}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def footprint(pid: int, ticks: int, wall_s: float) -> Footprint:
    return {"cpu_pct": round(100 * ticks / CLK_TCK / wall_s, 2),
            "rss_peak_mb": round(status_field(pid, "VmHWM") / 1024, 1),
            "rss_mb": round(status_field(pid, "VmRSS") / 1024, 1),
            "threads": status_field(pid, "Threads")}


def agent_config(tmp: Path, port: int, emus: list[SerialEmulator]) -> Path:
    cfg = tmp / "agent.toml"
    lines = ['[agent]', 'market = "bench"', f'outbox = "{tmp}/outbox.db"', "heartbeat_s = 30",
             "", "[mqtt]", f'url = "mqtt://127.0.0.1:{port}"']
    for i, emu in enumerate(emus):
        lines += ["", "[[scale]]", f'device = "bench-{i:02d}"', f'profile = "{PROFILE}"',
                  f'port = "{emu.path}"', 'key = "00112233445566778899aabbccddeeff"']
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def run(scales: int, seconds: float, warmup_s: float) -> dict[str, Footprint]:
    """``{"agent": ..., "idle": ...}``: the agent's footprint and the reference's."""
    profile = load_profile(PROFILE)
    tmp = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    broker, port = benchlib.start_mosquitto(tmp, "max_queued_messages 100000\n")
    emus = [SerialEmulator(profile, random_script(profile, 30, seed=i + 1), loop=True, seed=i)
            for i in range(scales)]
    cfg = agent_config(tmp, port, emus)
    agent_bin = Path(sys.executable).parent / "edge-agent"
    log = (tmp / "agent.log").open("wb")
    agent = subprocess.Popen([str(agent_bin), "run", "--config", str(cfg)], stdout=log,
                             stderr=subprocess.STDOUT)
    idle = subprocess.Popen([sys.executable, "-c", IDLE], cwd=benchlib.ROOT)
    procs = {"agent": agent, "idle": idle}
    try:
        time.sleep(1.0)
        for emu in emus:
            emu.start()
        time.sleep(warmup_s)
        c0, t0 = {k: cpu_ticks(p.pid) for k, p in procs.items()}, time.monotonic()
        frames0 = sum(e.stats.frames for e in emus)
        time.sleep(seconds)
        c1, t1 = {k: cpu_ticks(p.pid) for k, p in procs.items()}, time.monotonic()
        frames1 = sum(e.stats.frames for e in emus)
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"the {name} process died (agent log: {tmp}/agent.log)")
        wall = t1 - t0
        out = {k: footprint(p.pid, c1[k] - c0[k], wall) for k, p in procs.items()}
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(10)
        for emu in emus:
            emu.stop()
        broker.terminate()
        broker.wait(5)
        log.close()
    shutil.rmtree(tmp, ignore_errors=True)  # kept above when a process died: its log is there
    out["agent"] |= {"scales": scales, "seconds": round(wall, 1),
                     "frames_per_s": round((frames1 - frames0) / wall, 1)}
    return out


def section(r: Footprint, idle: Footprint, warmup_s: float) -> str:
    cpu_ok = "met" if r["cpu_pct"] < CPU_GOAL_PCT else "NOT met"
    rss_ok = "met" if r["rss_peak_mb"] < RSS_GOAL_MB else "NOT met"
    n, secs = f"{r['scales']:.0f}", f"{r['seconds']:.0f}"
    intro = (
        f"`python bench/bench_edge.py --scales {n} --seconds {secs}` — {benchlib.today()}, "
        f"{benchlib.machine()}. One `edge-agent run` process serving {n} emulated "
        "toledo-continuous scales (ptys, a looping script of loads) at 20 frames/s each, "
        "publishing events and 1 s sample batches to a private Mosquitto; SQLite outbox with "
        "`synchronous=FULL`. CPU is utime + stime of the process from `/proc/<pid>/stat` over "
        f"the measured {secs} s (after a {warmup_s:g} s warm-up), as a share of one core; "
        "memory is its peak RSS (`VmHWM`). A footprint has no ceiling; the same-run "
        "*reference* is its floor: an idle interpreter with the agent's modules imported "
        "(paho, pydantic, msgspec, pyserial), started with the agent and measured over the "
        f"same window. Goal: under {CPU_GOAL_PCT} % of one core and {RSS_GOAL_MB} MB."
    )
    header = ("| process | scales | frames/s (all scales) | CPU, % of one core | peak RSS (MB) "
              "| RSS at end (MB) | threads | goal |")
    ref = (f"| idle interpreter, agent's modules imported (reference) | 0 | – "
           f"| {idle['cpu_pct']:.2f} | {idle['rss_peak_mb']:.1f} | {idle['rss_mb']:.1f} "
           f"| {idle['threads']:.0f} | – |")
    row = (f"| edge-agent run | {n} | {r['frames_per_s']:.0f} | {r['cpu_pct']:.2f} "
           f"| {r['rss_peak_mb']:.1f} | {r['rss_mb']:.1f} | {r['threads']:.0f} "
           f"| CPU {cpu_ok}, memory {rss_ok} |")
    after = (
        f"Over the reference, the agent adds {r['cpu_pct'] - idle['cpu_pct']:.2f} % of a core "
        f"and {r['rss_peak_mb'] - idle['rss_peak_mb']:.1f} MB of peak RSS; its "
        f"{r['threads']:.0f} threads are a worker, a publisher pump and a paho network thread "
        "per scale, the agent's supervisor and command threads."
    )
    history = (
        "How it got there (earlier measurements, same setup, 20 s runs; not this run): with "
        "the serial source polling `in_waiting` and sleeping 10 ms in a loop, the agent took "
        "**4.0 %** of a core; waiting in `select()` on the port's descriptor (a hung-up line "
        "reads as end of file and becomes a `TransportError`, never a busy loop): **2.45 %**; "
        "reading each continuous scale at most every 100 ms and letting idle publisher pumps "
        "sleep until woken (every outbox write, acknowledgement and connection wakes them): "
        "**2.1 %**; every 200 ms (`read_interval_ms`, the default): **1.6 %**. A CPU-time "
        "profile (cProfile with `time.thread_time`) of the rest shows no hot spot: the SQLite "
        "commits of the 1 s sample batches, the codec and the state machine (~20 µs per frame) "
        "and thread wake-ups share it."
    )
    return "\n".join([intro, "", header, "|---|---:|---:|---:|---:|---:|---:|---|", ref, row,
                      "", after, "", history])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    r = run(args.scales, args.seconds, args.warmup)
    print(r)
    if not args.no_write:
        benchlib.replace_section(DOC, HEADING, section(r["agent"], r["idle"], args.warmup))
        print(f"written to {DOC} under {HEADING!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
