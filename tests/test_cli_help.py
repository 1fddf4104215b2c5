"""Every option and argument of the three CLIs (every subcommand) says what it is for."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from edge_agent.cli import build_parser as edge_parser
from gateway_server.cli import build_parser as gateway_parser
from simulators.cli import build_parser as sim_parser

PARSERS = {"gateway-server": gateway_parser, "edge-agent": edge_parser, "scale-sim": sim_parser}


def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    """(command path, action) for every action of ``parser`` and its subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest for a in action._choices_actions if a.help}
            for name, sub in action.choices.items():
                assert name in helped, f"{path} {name}: subcommand without help"
                yield from walk(sub, f"{path} {name}")
        else:
            yield path, action


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_option_has_help(prog: str) -> None:
    actions = list(walk(PARSERS[prog](), prog))
    assert len(actions) > 10
    missing = [f"{path} {'/'.join(a.option_strings) or a.dest}" for path, a in actions
               if not a.help or a.help == argparse.SUPPRESS]
    assert not missing, "options without help: " + ", ".join(missing)


def test_the_walk_reaches_the_subcommands() -> None:
    commands = {path for path, _ in walk(sim_parser(), "scale-sim")}
    assert {"scale-sim modbus", "scale-sim evaluate", "scale-sim serial"} <= commands
    assert {path for path, _ in walk(gateway_parser(), "gateway-server")} >= {
        "gateway-server export-mosquitto", "gateway-server import"}
