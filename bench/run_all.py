"""``make bench``: run every benchmark script and check the section each one rewrites.

Each script measures and rewrites one section of one document (``BENCHES`` says which:
script → document → heading). This runner runs them in turn as subprocesses, each in
its own process group with a time limit (a failing or hung one does not stop the
others), then checks that the section is there and was rewritten, prints a summary
and the sections, and exits 1 if any script failed.

    python bench/run_all.py [bench_codecs.py ...]    # no names: all of them

tests/bench/test_run_all.py checks this mapping against bench/ and the documents.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import benchlib


@dataclass(frozen=True)
class Bench:
    script: str  # in bench/
    doc: str  # relative to the project root
    heading: str  # the whole heading line of the section the script rewrites
    args: tuple[str, ...] = ()
    anchor: str = ""  # what the script looks for inside the section, if not the heading
    timeout_s: float = 300.0

    @property
    def path(self) -> Path:
        return benchlib.ROOT / "bench" / self.script

    @property
    def doc_path(self) -> Path:
        return benchlib.ROOT / self.doc

    def section(self) -> str | None:
        if not self.doc_path.exists():
            return None
        return benchlib.read_section(self.doc_path.read_text(encoding="utf-8"), self.heading)


BENCHMARKS_MD = "docs/benchmarks.md"
# in the order of the sections in docs/benchmarks.md; about 4 minutes in all on 2 cores,
# plus ~35 for bench_province.py's two runs
BENCHES: tuple[Bench, ...] = (
    Bench("bench_codecs.py", BENCHMARKS_MD, "## Codec decode throughput"),
    Bench("bench_ingest.py", BENCHMARKS_MD, "## Ingest end to end"),
    Bench("bench_ingest_db.py", BENCHMARKS_MD, "## Ingest on SQLite and PostgreSQL",
          ("--rounds", "2")),
    Bench("bench_push.py", BENCHMARKS_MD, "## Sale to finding through the stream",
          timeout_s=600.0),
    Bench("bench_scaleout.py", BENCHMARKS_MD, "## Scales per worker process",
          timeout_s=900.0),
    Bench("bench_acks.py", BENCHMARKS_MD, "## End-to-end acknowledgement", ("--sales", "200000")),
    Bench("bench_tssink.py", BENCHMARKS_MD, "## Time-series sink"),
    Bench("bench_fleet.py", BENCHMARKS_MD, "## Fleet simulation", ("--hours", "2")),
    Bench("bench_edge.py", BENCHMARKS_MD, "## Edge agent footprint",
          ("--scales", "8", "--seconds", "60"), timeout_s=180.0),
    # the 5,067-scale fleet's whole day at 48x beside real-time samples (issue 17), ~20
    # minutes; then a day at its real pace, for sale → finding, ~14 minutes
    Bench("bench_province.py", BENCHMARKS_MD, "## Province day", timeout_s=1800.0),
    Bench("bench_province.py", BENCHMARKS_MD, "## Province day at its real pace: sale to finding",
          ("--seconds", "600", "--day-hours", "0.16667", "--heading",
           "## Province day at its real pace: sale to finding"), timeout_s=1500.0),
    # seeded, so its figures change only with the detector; it writes between markers
    Bench("eval_residual.py", "docs/detection.md", "### Measured operating characteristics",
          anchor="<!-- residual-eval:start -->"),
    # rebuilds the table from the rows already run: a row is a fleet run of 2–10 minutes,
    # run on demand (python bench/eval_matrix.py --rows ...), never by make bench
    Bench("eval_matrix.py", "docs/detection.md", "## Robustness matrix (honest variation)",
          ("--docs-only",), anchor="<!-- fleet-matrix:start -->"),
)


def run(bench: Bench) -> str:
    """Run one script; its status: ``ok``, ``ok (section unchanged)`` or ``failed ...``."""
    if not bench.path.exists():
        return "failed (script missing)"
    before = bench.section()
    proc = subprocess.Popen([sys.executable, str(bench.path), *bench.args],
                            cwd=benchlib.ROOT, start_new_session=True)
    try:
        rc = proc.wait(bench.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script and the services it started
        proc.wait(30)
        return f"failed (over {bench.timeout_s:.0f} s, stopped)"
    if rc != 0:
        return f"failed (exit {rc})"
    after = bench.section()
    if after is None:
        return f"failed (no {bench.heading!r} in {bench.doc})"
    return "ok" if after != before else "ok (section unchanged)"


def main(argv: list[str] | None = None) -> int:
    only = set(argv if argv is not None else sys.argv[1:])
    unknown = only - {b.script for b in BENCHES}
    if unknown:
        print(f"unknown: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    results: list[tuple[Bench, str, float]] = []
    for bench in BENCHES:
        if only and bench.script not in only:
            continue
        print(f"== {bench.script} {' '.join(bench.args)}".rstrip(), flush=True)
        t0 = time.monotonic()
        status = run(bench)
        results.append((bench, status, time.monotonic() - t0))
    print("\n# Benchmark summary\n")
    for bench, status, secs in results:
        print(f"- {bench.script}: {status} in {secs:.0f} s → {bench.doc}, {bench.heading!r}")
    print(f"- total: {sum(s for _, _, s in results):.0f} s")
    for bench, status, _ in results:
        if status.startswith("ok"):
            print(f"\n{bench.section()}")
    return 0 if all(s.startswith("ok") for _, s, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
