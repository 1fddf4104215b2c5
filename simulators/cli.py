"""``scale-sim``: emulated scales, fair-scale stations, fleets, and the demo."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from device_profiles.schema import list_profiles, load_profile
from simulators.emulator import Faults, SerialEmulator
from simulators.script import random_script
from weighing.errors import GatewayError


def _run_until_stopped(emu: Any, *, exit_when_done: bool) -> int:
    """Play an emulator until SIGTERM / Ctrl-C (or its script ends, if asked)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emu.start()
    try:
        while not stop.wait(0.2):
            if emu.done.is_set() and exit_when_done:
                break
    finally:
        emu.stop()
    return 0


def cmd_serial(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    loads = random_script(profile, args.loads, seed=args.seed)
    faults = Faults(bad_checksum=args.bad_checksum, garbage=args.garbage, split=args.split,
                    drop_bytes=args.drop_bytes, noise_e=args.noise_e)
    emu = SerialEmulator(profile, loads, faults=faults, seed=args.seed, loop=args.loop)
    if args.script_out:
        with open(args.script_out, "w", encoding="utf-8") as fh:
            json.dump({"profile": profile.id, "loads_mg": [ld.mass_mg for ld in loads]}, fh)
    print(emu.path, flush=True)
    return _run_until_stopped(emu, exit_when_done=args.exit_when_done)


def cmd_station(args: argparse.Namespace) -> int:
    from simulators.station import StationEmulator, StationScriptError, load_script, reweigh

    if args.script:
        script = load_script(args.script)
    elif args.code and len(args.code) == len(args.weight_g):
        script = [reweigh(c, w, args.gap_s, where=f"--code/--weight-g {i + 1}")
                  for i, (c, w) in enumerate(zip(args.code, args.weight_g, strict=True))]
    else:
        raise StationScriptError("give --script FILE, or --code and --weight-g as many times "
                                 "each")
    emu = StationEmulator(load_profile(args.profile), script, lead_ms=int(args.lead_s * 1000),
                          hold_ms=int(args.hold_s * 1000))
    # TOML lines for the agent's [[scale]] (with role = "fair")
    print(f'port = "{emu.path}"\nscanner = "{emu.scanner_path}"', flush=True)
    return _run_until_stopped(emu, exit_when_done=args.exit_when_done)


def cmd_profiles(args: argparse.Namespace) -> int:
    for pid in list_profiles():
        p = load_profile(pid)
        print(f"{pid:32} {p.protocol:20} {p.name}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from simulators.demo import run_demo

    return run_demo(port=args.port, scales=args.scales)


def cmd_fleet(args: argparse.Namespace) -> int:
    from simulators.fleet_commands import run_fleet_command

    return run_fleet_command(args)


def cmd_modbus(args: argparse.Namespace) -> int:
    from simulators.modbus_server import run_modbus_emulator

    tcp = None
    if args.rtu is None:
        host, _, port = (args.tcp or "127.0.0.1:5020").rpartition(":")
        tcp = (host, int(port))
    ids = [int(x) for x in args.slaves.split(",") if x]
    silent = [int(x) for x in args.silent.split(",") if x]
    return run_modbus_emulator(args.profile, tcp=tcp, rtu=args.rtu, slaves=ids + silent,
                               silent=silent, duration_s=args.duration_s, noise_e=args.noise_e,
                               drift_e_per_min=args.drift_e_per_min)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import httpx

    from simulators.evaluate import FINDINGS_KEYS, TRUTH_KEYS, EvaluateError, read_json
    from simulators.fleet_commands import run_evaluate_command

    if bool(args.gateway) == bool(args.findings):
        raise EvaluateError("give the gateway to fetch the findings from (--gateway URL) or a "
                            "saved findings file (--findings FILE), one of the two")
    read_json(args.truth, what="truth", keys=TRUTH_KEYS)
    if args.findings:
        read_json(args.findings, what="findings", keys=FINDINGS_KEYS)
    try:
        return run_evaluate_command(args)
    except httpx.HTTPStatusError as err:
        what = ("log in with --username/--password or --token"
                if err.response.status_code == 401 else err.response.text[:200])
        raise EvaluateError(f"gateway {args.gateway} answered {err.response.status_code} to "
                            f"{err.request.url.path}: {what}") from err
    except httpx.HTTPError as err:
        raise EvaluateError(f"gateway {args.gateway}: {err}") from err


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scale-sim", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serial", help="emulate a serial scale on a pty (prints its path)")
    s.add_argument("--profile", required=True,
                   help="device profile id (scale-sim profiles) or a .toml profile file")
    s.add_argument("--loads", type=int, default=20, help="loads placed and lifted (default 20)")
    s.add_argument("--seed", type=int, default=1, help="random seed of the loads and faults")
    s.add_argument("--loop", action="store_true", help="repeat the script forever")
    s.add_argument("--exit-when-done", action="store_true",
                   help="stop after the last load (default: keep the pty open, empty pan)")
    s.add_argument("--script-out", help="write the placed loads (mg) to this JSON file")
    for name in ("bad-checksum", "garbage", "split", "drop-bytes"):
        s.add_argument(f"--{name}", type=float, default=0.0,
                       help=f"probability per frame of a fault: {name.replace('-', ' ')}")
    s.add_argument("--noise-e", type=float, default=0.0,
                   help="reading noise, in scale intervals e (default 0)")
    s.set_defaults(func=cmd_serial)
    st = sub.add_parser("station", help="emulate a fair-scale station: a scale pty and a "
                        "code-scanner pty (prints both), playing scanned re-weighs")
    st.add_argument("--profile", default="toledo-15kg-5g",
                    help="the station scale's profile (default toledo-15kg-5g)")
    st.add_argument("--script", help="TOML ([[reweigh]] code, weight_g, gap_s) or CSV "
                    "(code,weight_g,gap_s) file")
    st.add_argument("--code", action="append", default=[],
                    help="a scanned code (repeat, one per --weight-g; '' for no scan)")
    st.add_argument("--weight-g", action="append", default=[], help="goods placed, grams")
    st.add_argument("--gap-s", type=float, default=3.0,
                    help="empty pan before each re-weigh (the code is scanned in it)")
    st.add_argument("--hold-s", type=float, default=1.5, help="goods settled on the pan")
    st.add_argument("--lead-s", type=float, default=5.0,
                    help="empty pan before the first re-weigh: time to start the agent "
                    "(scans sent before it opens the scanner are lost)")
    st.add_argument("--exit-when-done", action="store_true",
                    help="stop after the last re-weigh")
    st.set_defaults(func=cmd_station)
    mb = sub.add_parser("modbus", help="emulate Modbus TCP/RTU weighing transmitters")
    mb.add_argument("--profile", default="modbus-transmitter-generic",
                    help="a Modbus profile (default modbus-transmitter-generic)")
    mb.add_argument("--tcp", help="serve Modbus TCP on HOST:PORT (default 127.0.0.1:5020)")
    mb.add_argument("--rtu", help="serve Modbus RTU on this serial device instead, e.g. one "
                    "end of a socat pty pair")
    mb.add_argument("--slaves", default="1", help="comma-separated unit ids (default 1)")
    mb.add_argument("--silent", default="", help="comma-separated unit ids that never answer")
    mb.add_argument("--noise-e", type=int, default=0,
                    help="reading noise, in scale intervals e (default 0)")
    mb.add_argument("--drift-e-per-min", type=float, default=0.0,
                    help="zero drift, scale intervals e per minute (default 0)")
    mb.add_argument("--duration-s", type=float, help="stop after this long (default: run "
                    "until interrupted)")
    mb.set_defaults(func=cmd_modbus)
    pl = sub.add_parser("profiles", help="list the shipped device profiles")
    pl.set_defaults(func=cmd_profiles)
    d = sub.add_parser("demo", help="broker + gateway + emulated scales + agents, one process")
    d.add_argument("--port", type=int, default=0, help="HTTP port (0: a free one)")
    d.add_argument("--scales", type=int, default=3,
                   help="emulated scales read by the real edge agent (default 3)")
    d.set_defaults(func=cmd_demo)
    f = sub.add_parser("fleet", help="simulate a fleet of scales (markets × merchants × "
                       "scales, injected cheats) against a gateway; writes the ground truth")
    f.add_argument("--config", required=True, help="fleet TOML (see simulators/fleets/)")
    f.add_argument("--out", default="var/fleet", help="directory for truth.json, register "
                   "CSVs, run.json (default var/fleet)")
    f.add_argument("--mode", choices=["direct", "full"], default="direct",
                   help="direct: emulated agents on a few MQTT connections; full: real edge "
                   "agents reading emulated scales over ptys")
    f.add_argument("--mqtt", help="broker URL (mqtt://host:port)")
    f.add_argument("--gateway", help="gateway URL: register the fleet there and pace to it")
    f.add_argument("--token", help="admin bearer token (or --username/--password)")
    f.add_argument("--username", help="admin account on the gateway (with --password)")
    f.add_argument("--password", help="that account's password")
    f.add_argument("--no-register", action="store_true", help="the fleet is registered already")
    f.add_argument("--local-stack", action="store_true", help="start a private Mosquitto and "
                   "gateway-server (SQLite under --out), register, run, evaluate, stop")
    f.add_argument("--database-url", help="with --local-stack: e.g. postgresql+psycopg://...")
    f.add_argument("--speed", type=float, help="override clock.speed (simulated s per wall s)")
    f.add_argument("--docs", help="with --local-stack: write the evaluation into this Markdown "
                   "file between the fleet-eval markers")
    f.add_argument("--no-progress", action="store_true", help="no progress lines")
    f.set_defaults(func=cmd_fleet)
    ev = sub.add_parser("evaluate", help="score the gateway's findings against a fleet truth")
    ev.add_argument("--truth", required=True, help="truth.json written by scale-sim fleet")
    ev.add_argument("--gateway", help="gateway URL to fetch the findings from (or --findings)")
    ev.add_argument("--findings", help="findings.json saved by a --local-stack fleet run")
    ev.add_argument("--token", help="bearer token for --gateway (or --username/--password)")
    ev.add_argument("--username", help="account on the gateway (with --password)")
    ev.add_argument("--password", help="that account's password")
    ev.add_argument("--json", help="write the metrics as JSON here")
    ev.add_argument("--markdown", help="write the report as Markdown here (default: stdout)")
    ev.add_argument("--docs", help="also write the report between the fleet-eval markers of "
                    "this Markdown file")
    ev.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    from gateway_server.cli import configure_logging

    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.func(args))
    except GatewayError as err:
        print(f"scale-sim: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
