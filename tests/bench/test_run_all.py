"""bench/run_all.py's mapping (script → document → heading) against bench/ and the docs.

Fast: nothing is measured. Guards the two ways ``make bench`` silently goes stale: a
script in bench/ that run_all does not run, and a heading run_all looks for that the
document (or the script) does not have.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def benchlib(run_all: ModuleType) -> ModuleType:
    return importlib.import_module("benchlib")


def test_every_script_is_run(run_all: ModuleType) -> None:
    scripts = {p.name for pattern in ("bench_*.py", "eval_*.py") for p in BENCH.glob(pattern)}
    mapped = [(b.script, b.heading) for b in run_all.BENCHES]
    assert len(mapped) == len(set(mapped)), "a section mapped twice"
    assert scripts == {script for script, _ in mapped}


def test_every_heading_is_in_its_doc_and_its_script(run_all: ModuleType) -> None:
    problems = []
    for bench in run_all.BENCHES:
        section = bench.section()
        marker = bench.anchor or bench.heading
        if section is None:
            problems.append(f"{bench.doc} has no heading line {bench.heading!r}")
        elif marker not in section:
            problems.append(f"{marker!r} is not inside {bench.heading!r} of {bench.doc}")
        if bench.path.exists() and f'"{marker}"' not in bench.path.read_text(encoding="utf-8"):
            problems.append(f"{bench.script} does not write {marker!r}")
    assert not problems


DOC = """# Benchmarks

Intro.

## A

old a

### A.1

old a1

## B

b
"""


def test_read_section_is_exact_and_stops_at_its_level(benchlib: ModuleType) -> None:
    assert benchlib.read_section(DOC, "## A") == "## A\n\nold a\n\n### A.1\n\nold a1"
    assert benchlib.read_section(DOC, "### A.1") == "### A.1\n\nold a1"
    assert benchlib.read_section(DOC, "## B") == "## B\n\nb"
    assert benchlib.read_section(DOC, "## ") is None
    assert benchlib.read_section(DOC, "## Edge") is None  # a prefix is not the heading


def test_replace_section_changes_that_section_only(benchlib: ModuleType,
                                                   tmp_path: Path) -> None:
    doc = tmp_path / "d.md"
    doc.write_text(DOC, encoding="utf-8")
    benchlib.replace_section(doc, "## A", "new a")
    assert doc.read_text(encoding="utf-8") == DOC.replace(
        "old a\n\n### A.1\n\nold a1\n", "new a\n")
    benchlib.replace_section(doc, "## B", "new b")
    benchlib.replace_section(doc, "## B", "new b")  # idempotent, also at the end
    benchlib.replace_section(doc, "## C", "c")  # appended
    assert doc.read_text(encoding="utf-8").endswith("## A\n\nnew a\n\n## B\n\nnew b\n\n"
                                                    "## C\n\nc\n")
