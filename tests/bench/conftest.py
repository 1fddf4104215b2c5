"""The bench scripts as modules: bench/ holds scripts, not a package, so each is imported
with bench/ on sys.path for the tests of its mapping and table building."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _script(name: str) -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCH))
        yield importlib.import_module(name)


@pytest.fixture(scope="module")
def matrix() -> Iterator[ModuleType]:
    yield from _script("eval_matrix")


@pytest.fixture(scope="module")
def run_all() -> Iterator[ModuleType]:
    yield from _script("run_all")


@pytest.fixture(scope="module")
def loadgen() -> Iterator[ModuleType]:
    yield from _script("loadgen")
