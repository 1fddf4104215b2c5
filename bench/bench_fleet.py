"""Fleet simulation capacity: events/s generated, and published in direct mode.

Runs the ``city-5000`` fleet (5,067 scales) for a shortened day (``--hours``, default 2)
as fast as possible (clock speed 0), twice:

1. **generate**: the discrete-event simulation alone (build, sign, encode every event);
2. **publish**: the same events published in direct mode (4 paho connections, QoS 1,
   ≤ 50 events per message, 15 simulated minutes of buffering per device) to a private
   Mosquitto on a free loopback port, until the broker has acknowledged every message.
   No gateway: this measures the simulator and the broker, not the ingest (see "Ingest
   end to end" for that).

Writes the table under "## Fleet simulation" in docs/benchmarks.md (that section only).
Run: ``python bench/bench_fleet.py [--hours 2]``.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulators.fleet import Simulation  # noqa: E402
from simulators.fleet_config import build_world, load_fleet_config  # noqa: E402
from simulators.fleet_io import _free_port, _wait_port, run_direct  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Fleet simulation"


def _config(hours: float):  # type: ignore[no-untyped-def]
    cfg = load_fleet_config(ROOT / "simulators" / "fleets" / "city-5000.toml")
    cfg.trading.hours = hours
    cfg.trading.peak_start_h = 0.5
    cfg.trading.peak_hours = min(1.0, hours / 2)
    cfg.clock.speed = 0
    for spec in cfg.scenarios.values():  # onsets inside the short day
        spec.onset_h = (0.2, max(0.3, hours * 0.6))
    return cfg


def measure(hours: float) -> dict[str, float]:
    cfg = _config(hours)
    t0 = time.perf_counter()
    sim = Simulation(build_world(cfg))
    n_out = sum(1 for _ in sim.run())
    gen_s = time.perf_counter() - t0
    out = {"scales": len(sim.scales), "events": sim.events, "outputs": n_out, "gen_s": gen_s}
    with tempfile.TemporaryDirectory() as tmp:
        # only the broker (LocalStack would also start a gateway, excluded here)
        port = _free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_inflight_messages 1000\n")
        proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                                 str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            t0 = time.perf_counter()
            sim2, stats = run_direct(build_world(_config(hours)), f"mqtt://127.0.0.1:{port}",
                                     client_prefix="bench-fleet")
            pub_s = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(10)
    out.update({"pub_s": pub_s, "messages": stats.messages, "pub_events": sim2.events})
    return out


def write_section(r: dict[str, float], hours: float) -> str:
    cpu = platform.processor() or platform.machine()
    section = "\n".join([
        HEADING, "",
        f"`python bench/bench_fleet.py --hours {hours:g}` — {date.today().isoformat()}, "
        f"Python {platform.python_version()} on {cpu}, 2 cores shared with Mosquitto. The "
        f"`city-5000` fleet ({r['scales']:,} scales, all scenarios) over {hours:g} simulated "
        "trading hours at clock speed 0 (as fast as possible). *generate*: the discrete-event "
        "simulation alone (every event built, HMAC-signed and encoded); *publish*: the same "
        "run published in direct mode to a private Mosquitto (4 paho connections, QoS 1, "
        "≤ 50 events a message, 15 simulated minutes of buffering per device) until every "
        "message is acknowledged. No gateway in this run.", "",
        "| stage | events | messages | seconds | events/s | messages/s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| generate | {r['events']:,} | – | {r['gen_s']:.1f} | {r['events'] / r['gen_s']:,.0f} "
        "| – |",
        f"| generate + publish | {r['pub_events']:,} | {r['messages']:,} | {r['pub_s']:.1f} | "
        f"{r['pub_events'] / r['pub_s']:,.0f} | {r['messages'] / r['pub_s']:,.0f} |", "",
        "The simulator is not the bottleneck of a fleet run: the gateway's ingest with its "
        "detectors is (docs/detection.md, fleet evaluation: the 5,000-scale day is paced by "
        "the gateway through `/healthz` backpressure).", ""])
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    start = text.find(HEADING + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + ("" if nxt < 0 else text[nxt:])
    DOC.write_text(text, encoding="utf-8")
    return section


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=2.0, help="simulated trading hours")
    args = p.parse_args()
    r = measure(args.hours)
    print(write_section(r, args.hours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
