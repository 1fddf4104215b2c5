"""``make bench``: run every benchmark script as a subprocess and collect its section.

Each script writes its own section of docs/benchmarks.md; this runner runs them in
turn (a missing script is reported and skipped, a failing one does not stop the
others), then prints each script's status, time, and the section it wrote.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
# script → the heading of the section it writes in docs/benchmarks.md
SCRIPTS: dict[str, str] = {
    "bench_codecs.py": "## Codec decode throughput",
    "bench_edge.py": "## Edge",
    "bench_ingest.py": "## Ingest end to end",
    "bench_tssink.py": "## Time-series sink",
    "eval_residual.py": "## Statistical",
    "bench_fleet.py": "## Fleet simulation",
}


def section(heading: str) -> str | None:
    """The section of docs/benchmarks.md whose heading starts with ``heading``."""
    if not DOC.exists():
        return None
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"^{re.escape(heading)}.*?(?=^## |\Z)", text, re.M | re.S)
    return m.group(0).rstrip() if m else None


def main(argv: list[str] | None = None) -> int:
    only = set(argv if argv is not None else sys.argv[1:])
    results: list[tuple[str, str, float]] = []
    for script in SCRIPTS:
        if only and script not in only:
            continue
        path = ROOT / "bench" / script
        if not path.exists():
            results.append((script, "missing (skipped)", 0.0))
            continue
        print(f"== {script}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.run([sys.executable, str(path)], cwd=ROOT).returncode
        results.append((script, "ok" if rc == 0 else f"failed (exit {rc})",
                        time.monotonic() - t0))
    print("\n# Benchmark summary\n")
    for script, status, secs in results:
        print(f"- {script}: {status}" + (f" in {secs:.0f} s" if secs else ""))
    for script, status, _ in results:
        if status == "ok":
            body = section(SCRIPTS[script])
            print(f"\n{body}" if body else f"\n({script}: no section found in {DOC.name})")
    return 0 if all(s == "ok" or s.startswith("missing") for _, s, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
