"""What the benchmark scripts share: the machine line, a private Mosquitto, and sections.

Rules every script in bench/ follows (``make bench`` runs them all, bench/run_all.py):

* A script measures, then rewrites *one* section of one document (its heading and
  everything up to the next heading of the same or a higher level), nothing else; the
  prose around the figures lives in the script, so a rerun changes figures only.
* The first sentence of every section says how it was run: the command, the date (UTC),
  and :func:`machine` (CPU model, cores this process may use, the load average when the
  script started, Python version). Numbers from a shared, loaded machine are noisy; the
  load average says how loaded.
* Every table compares with a ceiling measured in the *same* run (never a number from
  another day or machine), or says why none applies.
* Services (Mosquitto, VictoriaMetrics) are private processes on free loopback ports,
  never the machine's shared broker on 1883.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the packages, when run with a Python that lacks the install
    sys.path.insert(0, str(ROOT))

from gateway_server.ingest.broker import free_port, wait_port  # noqa: E402

__all__ = ["ROOT", "cpu_model", "free_port", "machine", "read_section", "replace_section",
           "start_mosquitto", "today", "wait_port"]

_LOAD_AT_START = os.getloadavg()[0]  # before this script loads the machine itself


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` is empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cores() -> int:
    """CPUs this process may run on (what ``nproc`` prints)."""
    return len(os.sched_getaffinity(0))


def machine() -> str:
    """``AMD EPYC, 2 cores (load average 0.4 at start), Python 3.11.7 on x86_64``."""
    return (f"{cpu_model()}, {cores()} cores (load average {_LOAD_AT_START:.1f} at start), "
            f"Python {platform.python_version()} on {platform.machine()}")


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def start_mosquitto(tmp: Path, extra_conf: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """A private Mosquitto on a free loopback port (config in ``tmp``); (process, port)."""
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    + extra_conf)
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
    except TimeoutError:
        proc.kill()
        raise
    return proc, port


def _level(heading: str) -> int:
    m = re.match(r"(#+) ", heading)
    if not m:
        raise ValueError(f"not a Markdown heading: {heading!r}")
    return len(m.group(1))


def _span(text: str, heading: str) -> tuple[int, int] | None:
    """Start and end of ``heading``'s section in ``text``: from its line to the next
    heading of the same or a higher level (or the end)."""
    m = re.search(rf"^{re.escape(heading)}[ \t]*$", text, re.M)
    if not m:
        return None
    nxt = re.compile(rf"^#{{1,{_level(heading)}}} ", re.M).search(text, m.end())
    return m.start(), (nxt.start() if nxt else len(text))


def read_section(text: str, heading: str) -> str | None:
    """The section under exactly ``heading`` (a whole line) in ``text``, or None."""
    span = _span(text, heading)
    return text[span[0]:span[1]].rstrip() if span else None


def replace_section(doc: Path, heading: str, body: str) -> None:
    """Write ``heading`` + ``body`` in place of that section of ``doc`` (appended if absent)."""
    _level(heading)
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    section = f"{heading}\n\n{body.strip()}\n"
    span = _span(text, heading)
    if span is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        rest = text[span[1]:]
        text = text[:span[0]] + section + ("\n" + rest if rest else "")
    doc.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def timed_ingest(ing: Any, publisher: Callable[..., None], port: int, msgs: Any,
                 done: Callable[[], bool], *, what: str, timeout_s: float = 600) -> float:
    """Start ``ing`` (an ``Ingestor``), let ``publisher(port, msgs, go)`` publish from a
    process of its own once ``go`` is set, and return the seconds from ``go`` until
    ``done()``; then join the publisher and stop the ingest."""
    ing.start()
    while not ing.stats.connected:
        time.sleep(0.05)
    time.sleep(0.5)
    go = mp.Event()
    p = mp.Process(target=publisher, args=(port, msgs, go))
    p.start()
    time.sleep(1.0)
    t0 = time.perf_counter()
    go.set()
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not all stored in {timeout_s:.0f} s: "
                             f"{ing.stats.as_dict()}")
        time.sleep(0.01)
    dt = time.perf_counter() - t0
    p.join()
    ing.stop()
    return dt


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` from /proc (a process gone counts nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def metrics_ports(log: Path) -> list[int]:
    """The /metrics ports the workers logging to ``log`` bound (a worker falls forward to
    the next free port when its own is taken, so the log, not the flag, says which)."""
    return sorted({int(x) for x in re.findall(r"metrics http://127\.0\.0\.1:(\d+)/metrics",
                                               log.read_text(errors="replace"))})


def publish(text: str, doc: Path, heading: str, *, write: bool) -> None:
    """Print a section and, unless told not to, write it under ``heading`` of ``doc``."""
    print(text)
    if write:
        replace_section(doc, heading, text)
        print(f"written to {doc} under {heading!r}")
