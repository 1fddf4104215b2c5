"""bench/eval_matrix.py without running a fleet: the rows' configs and the seed guard."""

from __future__ import annotations

from types import ModuleType

import pytest

from simulators.fleet_config import build_world, load_fleet_config
from simulators.fleet_honest import HonestSection


def test_rows_are_none_each_behaviour_and_all(matrix: ModuleType) -> None:
    assert matrix.rows() == ["none", *HonestSection.names(), "all"]


def test_row_configs(matrix: ModuleType) -> None:
    base = load_fleet_config(matrix.BASE)
    one = matrix.row_config(base, "no-tray", seed=5099, markets=20)
    assert one.honest.enabled() == ["no-tray"] and one.fleet.markets == 20
    assert one.honest.no_tray == base.honest.no_tray and one.fleet.seed == 5099
    assert one.scenarios["impact"].count == round(base.scenarios["impact"].count * 20 / 50)
    assert matrix.row_config(base, "none", seed=5099, markets=20).honest.enabled() == []
    full = matrix.row_config(base, "all", seed=5099, markets=None)
    assert full.honest == base.honest and full.fleet.markets == base.fleet.markets
    assert base.fleet.markets == 50  # untouched
    # the same cheats on the same scales whatever the row's honest behaviours
    a = build_world(matrix.row_config(base, "none", seed=5099, markets=2))
    b = build_world(matrix.row_config(base, "all", seed=5099, markets=2))
    assert {d: [s.kind for s in v] for d, v in a.scenarios.items()} == {
        d: [s.kind for s in v] for d, v in b.scenarios.items()}


def test_tuning_seed_is_refused(matrix: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert matrix.main(["--seed", "2031", "--list"]) == 2
    assert "tuning seed" in capsys.readouterr().err
