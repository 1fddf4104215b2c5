"""Edge agent footprint: one ``edge-agent run`` process serving N emulated scales.

    .venv/bin/python bench/bench_edge.py [--scales 8] [--seconds 60] [--write]

The emulated scales (toledo-continuous, 20 frames/s each, a looping random script of
loads) run in this process on ptys; the agent runs as a subprocess, publishing to a
private Mosquitto on a free loopback port. After a warm-up, the agent's CPU time
(utime + stime from ``/proc/<pid>/stat``) is sampled over the run and reported as a
percentage of one core; memory is the peak RSS (``VmHWM`` in ``/proc/<pid>/status``).
``--write`` puts the result under "## Edge agent footprint" in docs/benchmarks.md,
replacing only that section.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device_profiles.schema import load_profile  # noqa: E402
from simulators.emulator import SerialEmulator  # noqa: E402
from simulators.script import random_script  # noqa: E402

PROFILE = "toledo-15kg-5g"
HEADING = "## Edge agent footprint"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)


def status_kb(pid: int, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def run(scales: int, seconds: float, warmup_s: float) -> dict[str, float]:
    profile = load_profile(PROFILE)
    tmp = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    broker, port = start_broker(tmp)
    emus = [SerialEmulator(profile, random_script(profile, 30, seed=i + 1), loop=True, seed=i)
            for i in range(scales)]
    cfg = tmp / "agent.toml"
    lines = ['[agent]', 'market = "bench"', f'outbox = "{tmp}/outbox.db"', "heartbeat_s = 30",
             "", "[mqtt]", f'url = "mqtt://127.0.0.1:{port}"']
    for i, emu in enumerate(emus):
        lines += ["", "[[scale]]", f'device = "bench-{i:02d}"', f'profile = "{PROFILE}"',
                  f'port = "{emu.path}"', 'key = "00112233445566778899aabbccddeeff"']
    cfg.write_text("\n".join(lines) + "\n")
    agent_bin = Path(sys.executable).parent / "edge-agent"
    log = (tmp / "agent.log").open("wb")
    agent = subprocess.Popen([str(agent_bin), "run", "--config", str(cfg)], stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)
        for emu in emus:
            emu.start()
        time.sleep(warmup_s)
        c0, t0 = cpu_ticks(agent.pid), time.monotonic()
        frames0 = sum(e.stats.frames for e in emus)
        time.sleep(seconds)
        c1, t1 = cpu_ticks(agent.pid), time.monotonic()
        frames1 = sum(e.stats.frames for e in emus)
        if agent.poll() is not None:
            raise SystemExit(f"the agent died: see {tmp}/agent.log")
        rss_peak = status_kb(agent.pid, "VmHWM")
        rss_now = status_kb(agent.pid, "VmRSS")
        threads = int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{agent.pid}/status")
                                .read_text(), re.M).group(1))  # type: ignore[union-attr]
    finally:
        agent.terminate()
        agent.wait(10)
        for emu in emus:
            emu.stop()
        broker.terminate()
        broker.wait(5)
        log.close()
    wall = t1 - t0
    return {
        "scales": scales, "seconds": round(wall, 1),
        "frames_per_s": round((frames1 - frames0) / wall, 1),
        "cpu_pct": round(100 * (c1 - c0) / CLK_TCK / wall, 2),
        "rss_peak_mb": round(rss_peak / 1024, 1), "rss_mb": round(rss_now / 1024, 1),
        "threads": threads,
    }


def section(r: dict[str, float]) -> str:
    cpu_ok = "met" if r["cpu_pct"] < 3 else "NOT met"
    rss_ok = "met" if r["rss_peak_mb"] < 80 else "NOT met"
    n, secs = f"{r['scales']:.0f}", f"{r['seconds']:.0f}"
    intro = (
        f"`python bench/bench_edge.py --scales {n} --seconds {secs} --write` — one "
        f"`edge-agent run` process serving {n} emulated toledo-continuous scales (ptys, a "
        "looping script of loads) at 20 frames/s each, publishing events and 1 s sample "
        "batches to a local Mosquitto; SQLite outbox with `synchronous=FULL`. CPU is utime + "
        "stime of the agent process from `/proc/<pid>/stat` over the measured "
        f"{secs} s (after a warm-up), as a share of one core; memory is its peak RSS "
        f"(`VmHWM`). Python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} cores. Goal: under 3 % of one core and 80 MB."
    )
    header = ("| scales | frames/s (all scales) | CPU, % of one core | peak RSS (MB) "
              "| RSS at end (MB) | threads | goal |")
    row = (f"| {n} | {r['frames_per_s']:.0f} | {r['cpu_pct']:.2f} | {r['rss_peak_mb']:.1f} "
           f"| {r['rss_mb']:.1f} | {r['threads']:.0f} | CPU {cpu_ok}, memory {rss_ok} |")
    return "\n".join([HEADING, "", intro, "", header, "|---:|---:|---:|---:|---:|---:|---|",
                      row, ""])


def write(r: dict[str, float], before: str = "") -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    new = section(r) + (f"\n{before}\n" if before else "")
    start = text.find(HEADING)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + new
    else:
        nxt = text.find("\n## ", start + len(HEADING))
        text = text[:start] + new + (text[nxt + 1:] if nxt >= 0 else "")
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    ap.add_argument("--before", default="", help="a paragraph on earlier measurements")
    args = ap.parse_args()
    r = run(args.scales, args.seconds, args.warmup)
    print(r)
    if args.write:
        write(r, args.before)


if __name__ == "__main__":
    main()
