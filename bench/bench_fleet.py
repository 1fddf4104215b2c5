"""Fleet simulation capacity: events/s generated, and published in direct mode.

Runs the ``city-5000`` fleet (5,067 scales) for a shortened day (``--hours``, default 2)
as fast as possible (clock speed 0), twice:

1. **generate**: the discrete-event simulation alone (build, sign, encode every event);
2. **publish**: the same events published in direct mode (4 paho connections, QoS 1,
   ≤ 50 events per message, 15 simulated minutes of buffering per device) to a private
   Mosquitto on a free loopback port, until the broker has acknowledged every message.
   No gateway: this measures the simulator and the broker, not the ingest (see "Ingest
   end to end" for that).

The generate run is the same-run ceiling of the publish run: publishing builds the same
events in the same process, so it cannot go faster.

Writes the table under "## Fleet simulation" in docs/benchmarks.md (that section only).
Run: ``python bench/bench_fleet.py [--hours 2] [--no-write]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

from simulators.fleet import Simulation
from simulators.fleet_config import FleetConfig, build_world, load_fleet_config
from simulators.fleet_io import run_direct

DOC = benchlib.ROOT / "docs" / "benchmarks.md"
HEADING = "## Fleet simulation"
FLEET = benchlib.ROOT / "simulators" / "fleets" / "city-5000.toml"


def _config(hours: float) -> FleetConfig:
    cfg = load_fleet_config(FLEET)
    cfg.trading.hours = hours
    cfg.trading.peak_start_h = 0.5
    cfg.trading.peak_hours = min(1.0, hours / 2)
    cfg.clock.speed = 0
    for spec in cfg.scenarios.values():  # onsets inside the short day
        spec.onset_h = (0.2, max(0.3, hours * 0.6))
    return cfg


def measure(hours: float) -> dict[str, Any]:
    cfg = _config(hours)
    t0 = time.perf_counter()
    sim = Simulation(build_world(cfg))
    n_out = sum(1 for _ in sim.run())
    gen_s = time.perf_counter() - t0
    out: dict[str, Any] = {"scales": len(sim.scales), "events": sim.events, "outputs": n_out,
                           "gen_s": gen_s, "publish": cfg.publish}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        # only the broker (LocalStack would also start a gateway, excluded here)
        proc, port = benchlib.start_mosquitto(Path(tmp), "max_inflight_messages 1000\n")
        try:
            t0 = time.perf_counter()
            sim2, stats = run_direct(build_world(_config(hours)), f"mqtt://127.0.0.1:{port}",
                                     client_prefix="bench-fleet")
            pub_s = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(10)
    out.update({"pub_s": pub_s, "messages": stats.messages, "pub_events": sim2.events})
    return out


def section(r: dict[str, Any], hours: float) -> str:
    pc = r["publish"]
    gen_rate, pub_rate = r["events"] / r["gen_s"], r["pub_events"] / r["pub_s"]
    return "\n".join([
        f"`python bench/bench_fleet.py --hours {hours:g}` — {benchlib.today()}, "
        f"{benchlib.machine()}; the cores are shared with Mosquitto. The `city-5000` fleet "
        f"({r['scales']:,} scales, all scenarios) over {hours:g} simulated trading hours at "
        "clock speed 0 (as fast as possible). *generate*: the discrete-event simulation alone "
        "(every event built, HMAC-signed and encoded); *publish*: the same run published in "
        f"direct mode to a private Mosquitto ({pc.connections} paho connections, QoS {pc.qos}, "
        f"≤ {pc.batch_max} events a message, {pc.flush_s / 60:g} simulated minutes of "
        "buffering per device) until every message is acknowledged. No gateway in this run. "
        "*Ceiling*: the generate row of the same run (publishing builds the same events in "
        "the same process, so it cannot be faster); *of ceiling* is events/s over its events/s.",
        "",
        "| stage | events | messages | seconds | events/s | messages/s | of ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| generate (ceiling) | {r['events']:,} | – | {r['gen_s']:.1f} | {gen_rate:,.0f} | – "
        "| 100% |",
        f"| generate + publish | {r['pub_events']:,} | {r['messages']:,} | {r['pub_s']:.1f} | "
        f"{pub_rate:,.0f} | {r['messages'] / r['pub_s']:,.0f} | {pub_rate / gen_rate:.0%} |",
        "",
        "The simulator is not the bottleneck of a fleet run: the gateway's ingest with its "
        "detectors is (docs/detection.md, fleet evaluation: the 5,000-scale day is paced by "
        "the gateway through `/healthz` backpressure).",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=2.0, help="simulated trading hours")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    r = measure(args.hours)
    benchlib.publish(section(r, args.hours), DOC, HEADING, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
