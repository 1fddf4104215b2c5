"""``scale-sim fleet`` and ``scale-sim evaluate``: the commands behind the CLI."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from simulators import evaluate as ev
from simulators.fleet_config import World, build_world, load_fleet_config
from simulators.fleet_io import GatewayClient, LocalStack, run_direct, write_truth


def _client(url: str, args: argparse.Namespace) -> GatewayClient:
    return GatewayClient(url, token=args.token, username=args.username, password=args.password)


def fetch_queue(gateway: GatewayClient, page: int = 1000) -> list[dict[str, Any]]:
    """Every item of the gateway's inspection queue (``GET /api/v1/inspection-queue``)."""
    out: list[dict[str, Any]] = []
    while True:
        r = gateway.http.get("/api/v1/inspection-queue",
                             params={"limit": page, "offset": len(out)})
        r.raise_for_status()
        items = r.json()
        if out and items and items[0] == out[0]:  # a server without paging: one page
            return out
        out += items
        if len(items) < page:
            return out


def evaluate_and_report(gateway: GatewayClient, truth: dict[str, Any], out: Path,
                        docs: str | None, run: dict[str, Any] | None = None) -> str:
    queue = fetch_queue(gateway)
    (out / "queue.json").write_text(json.dumps(queue, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    findings, codes = ev.fetch(gateway, truth)
    (out / "findings.json").write_text(json.dumps(
        {"findings": findings, "merchant_ids": {str(k): v for k, v in codes.items()}},
        ensure_ascii=False) + "\n", encoding="utf-8")
    res = ev.score(truth, findings, codes, queue=queue)
    if run is not None:
        res["run"] = run
    md = ev.save(res, json_path=out / "evaluation.json", md_path=out / "evaluation.md")
    if docs:
        ev.write_docs_section(Path(docs), docs_section(md, run, truth))
    return md


def docs_section(md: str, run: dict[str, Any] | None, truth: dict[str, Any]) -> str:
    """The evaluation as it goes into docs/detection.md (with how it was run)."""
    head = ["## Fleet evaluation (scale-sim fleet → gateway → scale-sim evaluate)", ""]
    if run:
        head += [f"Run {run.get('date', '')}: `{run.get('command', '')}` — wall time "
                 f"{run.get('wall_s', 0) / 60:.1f} min for {run.get('sim_hours', 0):g} simulated "
                 f"hours ({run.get('events', 0):,} events in {run.get('messages', 0):,} MQTT "
                 f"messages; gateway on {run.get('database', 'SQLite')}).", ""]
    return "\n".join(head) + md


def _quiet() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)


def _settle(gateway: GatewayClient, timeout_s: float = 60.0) -> None:
    """Wait until the findings stop changing: the last batch is stored, with its findings,
    in one transaction after the gateway's message counter has reached the total."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = gateway.http.get("/api/v1/findings/summary")  # open findings by kind
        r.raise_for_status()
        seen.append(sum(int(n) for n in r.json().values()))
        if len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]:
            return
        time.sleep(0.5)


def run_on_local_stack(world: World, out: Path, *, command: str, config: str,
                       database_url: str | None = None, docs: str | None = None,
                       progress: bool = False) -> dict[str, Any]:
    """Register and run ``world`` against a private broker and gateway (a fresh SQLite
    database under ``out/stack`` unless ``database_url``), evaluate it, stop the stack;
    writes truth.json, run.json, queue.json, findings.json, evaluation.json/.md in ``out``.
    Returns the run's statistics."""
    out.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(out / "stack").start(database_url=database_url)
    try:
        admin = GatewayClient(stack.gateway_url, username=stack.admin[0],
                              password=stack.admin[1])
        print(f"local stack: MQTT {stack.mqtt_url}, gateway {stack.gateway_url}", flush=True)
        t0 = time.monotonic()
        admin.register(world, out)
        registration_s = time.monotonic() - t0
        print(f"registration took {registration_s:.1f} s", flush=True)
        sim, stats = run_direct(world, stack.mqtt_url, gateway=admin, progress=progress)
        truth = write_truth(sim, out / "truth.json")
        run = stats.as_dict() | {
            "config": config, "date": time.strftime("%Y-%m-%d"), "command": command,
            "registration_s": round(registration_s, 1),
            "database": "PostgreSQL" if (database_url or "").startswith("postgres")
            else "SQLite", "speed": world.cfg.clock.speed, "flush_s": world.cfg.publish.flush_s}
        (out / "run.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
        print(json.dumps(run), flush=True)
        _settle(admin)
        insp = GatewayClient(stack.gateway_url, username=stack.inspector[0],
                             password=stack.inspector[1])
        print(evaluate_and_report(insp, truth, out, docs, run))
        return run
    finally:
        stack.stop()


def run_fleet_command(args: argparse.Namespace) -> int:
    _quiet()
    import signal

    # SIGTERM stops the run like Ctrl-C, so a --local-stack broker and gateway are stopped too
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    cfg = load_fleet_config(args.config)
    if args.speed is not None:
        cfg.clock.speed = args.speed
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world = build_world(cfg)
    if args.local_stack and args.mode == "direct":
        run_on_local_stack(world, out, command=f"scale-sim fleet --config {args.config} "
                           "--local-stack", config=str(args.config),
                           database_url=args.database_url, docs=args.docs,
                           progress=not args.no_progress)
        return 0
    stack = None
    admin: GatewayClient | None
    if args.local_stack:
        stack = LocalStack(out / "stack").start(database_url=args.database_url)
        mqtt_url, gw_url = stack.mqtt_url, stack.gateway_url
        admin = GatewayClient(gw_url, username=stack.admin[0], password=stack.admin[1])
        print(f"local stack: MQTT {mqtt_url}, gateway {gw_url}", flush=True)
    else:
        if not args.mqtt:
            print("scale-sim fleet: give --mqtt (and --gateway) or --local-stack",
                  file=sys.stderr)
            return 2
        mqtt_url, gw_url = args.mqtt, args.gateway
        admin = _client(gw_url, args) if gw_url else None
    try:
        if admin is not None and not args.no_register:
            t0 = time.monotonic()
            if args.mode == "full":
                from simulators.fleet_fullpath import full_path_world

                world = full_path_world(world)
            admin.register(world, out)
            print(f"registration took {time.monotonic() - t0:.1f} s", flush=True)
        if args.mode == "full":
            from simulators.fleet_fullpath import run_full_path

            truth = run_full_path(world, mqtt_url, out)
            (out / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n",
                                            encoding="utf-8")
            return 0
        sim, stats = run_direct(world, mqtt_url, gateway=admin, progress=not args.no_progress)
        truth = write_truth(sim, out / "truth.json")
        run = stats.as_dict() | {
            "config": str(args.config), "date": time.strftime("%Y-%m-%d"),
            "command": f"scale-sim fleet --config {args.config}"
                       + (" --local-stack" if args.local_stack else ""),
            "database": "PostgreSQL" if (args.database_url or "").startswith("postgres")
            else "SQLite", "speed": cfg.clock.speed, "flush_s": cfg.publish.flush_s}
        (out / "run.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
        print(json.dumps(run), flush=True)
        return 0
    finally:
        if stack is not None:
            stack.stop()


def run_evaluate_command(args: argparse.Namespace) -> int:
    _quiet()
    truth = json.loads(Path(args.truth).read_text(encoding="utf-8"))
    queue: list[dict[str, Any]] | None = None
    if args.findings:  # saved by `scale-sim fleet --local-stack` (findings.json)
        saved = json.loads(Path(args.findings).read_text(encoding="utf-8"))
        findings = saved["findings"]
        codes = {int(k): v for k, v in saved["merchant_ids"].items()}
        saved_queue = Path(args.findings).with_name("queue.json")  # saved beside it
        if saved_queue.exists():
            queue = json.loads(saved_queue.read_text(encoding="utf-8"))
    else:
        gateway = _client(args.gateway, args)
        findings, codes = ev.fetch(gateway, truth)
        queue = fetch_queue(gateway)
    res = ev.score(truth, findings, codes, queue=queue)
    md = ev.save(res, json_path=Path(args.json) if args.json else None,
                 md_path=Path(args.markdown) if args.markdown else None)
    if args.docs:
        ev.write_docs_section(Path(args.docs), docs_section(md, None, truth))
    if not args.markdown:
        print(md)
    return 0
