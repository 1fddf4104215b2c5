"""Robustness matrix: the detection rules against each honest behaviour alone and all together.

Each row is one fleet run against a fresh gateway (``scale-sim fleet --local-stack``: a
private Mosquitto and ``gateway-server serve`` on a new SQLite database), scored against
the fleet's truth:

* ``none``: the base fleet's cheats, faults and benign scenarios, no honest behaviour;
* one row per behaviour of the ``[honest]`` section (``simulators.fleet_honest``), on
  alone at its share in the base fleet;
* ``all``: every behaviour at once, always at the base fleet's full size (city-5000:
  5,067 scales).

Single rows (and ``none``) run on ``--single-markets`` markets (default 20 of 50: about
2,000 scales, the cheat counts scaled with the markets) unless ``--full``. Per row: the
honest merchants flagged by any finding and those in the inspection queue (the gateway's
``/api/v1/inspection-queue`` items with ``in_queue``), each per rule, also counted among the
honest merchants that have the behaviour; the cheats found per kind with their time to
detect. Seeds: the row fleets take ``--seed`` (default 5099, never used for tuning); a seed
in the base fleet's ``tuning_seeds`` is refused (its results are in-sample).

Resumable: results go to ``var/matrix/seed-<seed>/<row>/`` and a row with its
``row.json`` is done; ``--rows`` picks rows (default: those not done), ``--force`` reruns.
The table in docs/detection.md (between ``<!-- fleet-matrix:start -->`` and
``<!-- fleet-matrix:end -->``) is rebuilt from every finished row of the seed after each
row, and by ``--docs-only`` alone. One row at a time: a row is one fleet run.

    python bench/eval_matrix.py --list
    python bench/eval_matrix.py --rows none,no-tray,bagged
    python bench/eval_matrix.py --rows all
    python bench/eval_matrix.py --docs-only
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import benchlib

from simulators.fleet_commands import run_on_local_stack
from simulators.fleet_config import CHEATS, FAULTS, FleetConfig, build_world, load_fleet_config
from simulators.fleet_honest import HonestSection

BASE = benchlib.ROOT / "simulators" / "fleets" / "city-5000.toml"
DOC = benchlib.ROOT / "docs" / "detection.md"
OUT = benchlib.ROOT / "var" / "matrix"
SEED = 5099
START, END = "<!-- fleet-matrix:start -->", "<!-- fleet-matrix:end -->"
HEADING = "## Robustness matrix (honest variation)"
FULL_ROWS = ("all",)


def rows() -> list[str]:
    return ["none", *HonestSection.names(), "all"]


def row_config(base: FleetConfig, row: str, *, seed: int, markets: int | None) -> FleetConfig:
    """The base fleet with only ``row``'s honest behaviours, on ``markets`` markets."""
    cfg = base.model_copy(deep=True)
    cfg.fleet.seed = seed
    cfg.fleet.name = f"{base.fleet.name}-{row}"
    cfg.honest = (base.honest if row == "all" else
                  base.honest.only() if row == "none" else base.honest.only(row))
    if markets is not None and markets < base.fleet.markets:
        factor = markets / base.fleet.markets
        cfg.fleet.markets = markets
        for spec in cfg.scenarios.values():
            spec.count = max(1, round(spec.count * factor)) if spec.count else 0
    return cfg


# -- scoring ------------------------------------------------------------------------------


def _owners(truth: dict[str, Any]) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = defaultdict(list)
    for code, m in truth["merchants"].items():
        for d in m["devices"]:
            owners[d].append(code)
    return owners


def _exposed(truth: dict[str, Any], row: str) -> set[str]:
    """Honest merchants that have the row's behaviour (all of them for ``all``)."""
    honest = {c for c, m in truth["merchants"].items() if m["honest"]}
    if row == "none":
        return set()
    if row in ("all", "reweigh-with-bag"):
        return honest
    fair_markets = {s["market"] for s in truth["scales"].values()
                    if "fair-scale" in s.get("honest", {})}

    def has(code: str) -> bool:
        m = truth["merchants"][code]
        mv = m.get("honest_variations", {})
        return (row in mv or mv.get("tray") == row
                or (row == "fair-scale" and m["market"] in fair_markets)
                or any(row in truth["scales"][d].get("honest", {}) for d in m["devices"]))

    return {code for code in honest if has(code)}


def _by_merchant(truth: dict[str, Any], items: list[dict[str, Any]], codes: dict[int, str],
                 kinds_of: Any) -> dict[str, Counter[str]]:
    """merchant code → kinds, for items naming a scale (its registered owner, as
    ``simulators.evaluate.score_queue`` counts) or else a merchant."""
    scales = truth["scales"]
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for it in items:
        dev, merchant_id = it.get("device"), it.get("merchant_id")
        if dev in scales:
            code = scales[dev].get("merchant")
        else:
            code = codes.get(merchant_id) if isinstance(merchant_id, int) else None
        if code:
            out[code].update(kinds_of(it))
    return out


def _queued_kinds(item: dict[str, Any]) -> list[str]:
    reasons = item.get("reasons") or []
    counted = [r["kind"] for r in reasons if r.get("counted")]
    return counted or [r["kind"] for r in reasons if r.get("weight", 1)] or ["(none)"]


def summarise(row: str, out: Path, *, code: str = "") -> dict[str, Any]:
    """A finished run's row of the matrix (from the files the run wrote)."""
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    saved = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    evaluation = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    codes = {int(k): v for k, v in saved["merchant_ids"].items()}
    findings = [f for f in saved["findings"] if f.get("status") != "dismissed"]
    honest = {c for c, m in truth["merchants"].items() if m["honest"]}
    exposed = _exposed(truth, row)
    # flagged: as simulators.evaluate counts it (a finding on any of the merchant's scales)
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in findings:
        devs = [f["device"]] if f.get("device") in truth["scales"] else (
            truth["merchants"].get(codes.get(f.get("merchant_id"), ""), {}).get("devices", []))
        for d in devs:
            by_device[d].append(f)
    flagged = {c: Counter(f["kind"] for d in truth["merchants"][c]["devices"]
                          for f in by_device.get(d, ())) for c in honest}
    flagged = {c: k for c, k in flagged.items() if k}
    queue_path = out / "queue.json"
    queue = json.loads(queue_path.read_text(encoding="utf-8")) if queue_path.exists() else None
    queued: dict[str, Counter[str]] | None = None
    if queue is not None and all("in_queue" in it for it in queue):
        items = [it for it in queue if it["in_queue"]]
        queued = {c: k for c, k in _by_merchant(truth, items, codes, _queued_kinds).items()
                  if c in honest}

    def tally(who: dict[str, Counter[str]]) -> dict[str, Any]:
        kinds = Counter(k for c in who.values() for k in c)
        return {"n": len(who), "share": len(who) / len(honest) if honest else None,
                "exposed": sum(1 for c in who if c in exposed), "by_kind": dict(kinds)}

    in_queue = None if queue is None or queued is None else {
        it["device"] for it in queue if it["in_queue"]}
    cheats = {}
    for kind, r in evaluation["types"].items():
        if r["cases"]:
            cheats[kind] = {"cases": r["cases"], "found": r["detected"],
                            "ttd_median_s": r["ttd_median_s"], "ttd_p90_s": r["ttd_p90_s"]}
            if r.get("in_queue") is not None:  # simulators.evaluate: the case's scale queued
                cheats[kind]["queued"] = r["in_queue"]
            elif in_queue is not None:
                cheats[kind]["queued"] = sum(
                    1 for c in evaluation["cases"] if c["kind"] == kind and c["effective"]
                    and c["device"] in in_queue)
    fl = truth["fleet"]
    return {"row": row, "seed": fl["seed"], "markets": fl["markets"], "scales": fl["scales"],
            "merchants": fl["merchants"], "events": fl["events"], "honest": len(honest),
            "exposed": len(exposed), "flagged": tally(flagged),
            "queued": None if queued is None else tally(queued), "cheats": cheats,
            "wall_s": round(run["wall_s"] + run.get("registration_s", 0)),
            "date": run.get("date"), "code": code}


def _code_version() -> str:
    """The commit the gateway ran, and whether its rules had uncommitted changes."""
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=benchlib.ROOT, capture_output=True,
                              text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "gateway_server", "weighing")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted rule changes" if dirty else "")


# -- the table ----------------------------------------------------------------------------


def _pct(n: int, d: int) -> str:
    return f"{n:,} ({100 * n / d:.1f} %)" if d else "–"


def _kinds(by_kind: dict[str, int], top: int = 4) -> str:
    ks = sorted(by_kind.items(), key=lambda kv: (-kv[1], kv[0]))
    more = f", +{len(ks) - top} more" if len(ks) > top else ""
    return ", ".join(f"{k} {n}" for k, n in ks[:top]) + more if ks else "–"


def _short(code: str | None) -> str:
    if not code:
        return "?"
    return code.split()[0] + ("+" if "uncommitted" in code else "")


def to_markdown(results: list[dict[str, Any]], seed: int) -> str:
    order = {r: i for i, r in enumerate(rows())}
    results = sorted(results, key=lambda r: order.get(r["row"], 99))
    dates = sorted({str(r.get("date")) for r in results})
    lines = [
        f"Seed {seed} (not a tuning seed); one fresh gateway per row; "
        f"{len(results)} of {len(rows())} rows run ({', '.join(dates)}). Honest merchants: "
        "no cheat or fault on any of their scales. *With it*: of the honest merchants that "
        "have the row's behaviour. Queued: in the gateway's inspection queue at the end of "
        "the day; flagged: any finding (observations included). Code: the commit the row's "
        "gateway ran (+: with uncommitted rule changes of the shared working tree).",
        "",
        "| row | scales | honest | queued | queued, with it | by rule (queued) | "
        "flagged | flagged, with it | by rule (flagged) | wall | code |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|---:|---|",
    ]
    for r in results:
        q, f = r["queued"], r["flagged"]
        lines.append(
            f"| {r['row']} | {r['scales']:,} | {r['honest']:,} | "
            f"{_pct(q['n'], r['honest']) if q else 'n/a'} | "
            f"{(str(q['exposed']) + ' of ' + format(r['exposed'], ',')) if q else 'n/a'} | "
            f"{_kinds(q['by_kind']) if q else 'n/a'} | {_pct(f['n'], r['honest'])} | "
            f"{f['exposed']} of {r['exposed']:,} | {_kinds(f['by_kind'])} | "
            f"{r['wall_s'] / 60:.1f} min | {_short(r.get('code'))} |")
    kinds = [k for k in CHEATS + FAULTS if any(k in r["cheats"] for r in results)]
    lines += ["", "Cheats: found by any finding / cases (of them in the queue at the end of "
              "the day), median time to the first finding in simulated minutes.", "",
              "| row | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for r in results:
        cells = []
        for k in kinds:
            c = r["cheats"].get(k)
            if c is None:
                cells.append("–")
                continue
            ttd = "" if c["ttd_median_s"] is None else f", {c['ttd_median_s'] / 60:.0f}"
            queued = f" ({c['queued']})" if "queued" in c else ""
            cells.append(f"{c['found']}/{c['cases']}{queued}{ttd}")
        lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_docs(doc: Path, body: str) -> None:
    text = doc.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{doc}: no {START} … {END} markers (under {HEADING!r})")
    a, b = text.index(START), text.index(END) + len(END)
    doc.write_text(text[:a] + f"{START}\n{body.rstrip()}\n{END}" + text[b:], encoding="utf-8")


def finished(seed_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(seed_dir.glob("*/row.json"))]


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(BASE), help="base fleet (default city-5000)")
    p.add_argument("--seed", type=int, default=SEED, help=f"row fleets' seed (default {SEED})")
    p.add_argument("--rows", help="comma-separated rows (default: every row not done yet)")
    p.add_argument("--single-markets", type=int, default=20,
                   help="markets of the single-behaviour rows and `none` (default 20)")
    p.add_argument("--full", action="store_true", help="every row at the base fleet's size")
    p.add_argument("--out", default=str(OUT), help="results directory (default var/matrix)")
    p.add_argument("--force", action="store_true", help="rerun rows that are done")
    p.add_argument("--docs", default=str(DOC), help="document with the matrix markers")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite the document")
    p.add_argument("--docs-only", action="store_true", help="only rebuild the table")
    p.add_argument("--list", action="store_true", help="list the rows and which are done")
    p.add_argument("--resummarise", action="store_true",
                   help="recompute the finished rows' row.json from their run files")
    args = p.parse_args(argv)
    base = load_fleet_config(args.config)
    if args.seed in base.fleet.tuning_seeds:
        print(f"seed {args.seed} is a tuning seed of {args.config}: its results are "
              "in-sample; pick another", file=sys.stderr)
        return 2
    seed_dir = Path(args.out) / f"seed-{args.seed}"
    done = {r["row"] for r in finished(seed_dir)}
    if args.resummarise:
        for r in finished(seed_dir):
            out = seed_dir / r["row"]
            (out / "row.json").write_text(json.dumps(
                summarise(r["row"], out, code=r.get("code", "")), indent=1) + "\n",
                encoding="utf-8")
        args.docs_only = True
    if args.list:
        for name in rows():
            print(f"{name:20} {'done' if name in done else '-'}")
        return 0
    wanted = args.rows.split(",") if args.rows else [r for r in rows() if r not in done]
    unknown = set(wanted) - set(rows())
    if unknown:
        print(f"unknown rows {sorted(unknown)}; rows: {', '.join(rows())}", file=sys.stderr)
        return 2
    if not args.docs_only and wanted:
        # SIGTERM (run_all's time limit) stops a row like Ctrl-C: its broker and gateway too
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        for row in wanted:
            if row in done and not args.force:
                print(f"== {row}: done (--force reruns it)", flush=True)
                continue
            markets = None if args.full or row in FULL_ROWS else args.single_markets
            cfg = row_config(base, row, seed=args.seed, markets=markets)
            out = seed_dir / row
            out.mkdir(parents=True, exist_ok=True)
            (out / "row.json").unlink(missing_ok=True)
            (out / "config.json").write_text(cfg.model_dump_json(indent=1, by_alias=True) + "\n",
                                             encoding="utf-8")
            print(f"== {row}: {cfg.fleet.markets} markets, seed {args.seed}, honest "
                  f"{cfg.honest.enabled() or 'none'}", flush=True)
            code = _code_version()
            run_on_local_stack(build_world(cfg), out, config=str(out / "config.json"),
                               command=f"python bench/eval_matrix.py --rows {row} "
                                       f"--seed {args.seed}")
            summary = summarise(row, out, code=code)
            (out / "row.json").write_text(json.dumps(summary, indent=1) + "\n",
                                          encoding="utf-8")
            if not args.no_docs:
                write_docs(Path(args.docs), to_markdown(finished(seed_dir), args.seed))
    results = finished(seed_dir)
    md = to_markdown(results, args.seed)
    print(md)
    if results and not args.no_docs:
        write_docs(Path(args.docs), md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
