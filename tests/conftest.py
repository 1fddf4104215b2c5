"""Shared fixtures: real services on free loopback ports, never mocks (see ``support``).

The helpers live in ``tests/support.py`` so that test modules anywhere under tests/ can
import them (``from support import start_mosquitto``) even where a nearer conftest.py
shadows this one; they are re-exported here for ``from conftest import ...``.

Hypothesis runs without its per-example deadline (200 ms by default) and without the
too-slow health check: both are wall-clock assertions that fail on a loaded machine or
under pytest-xdist while the property holds (issue 13). Slow code shows in bench/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from support import (  # noqa: F401 - re-exported
    BIN,
    ROOT,
    GatewayProc,
    Mosquitto,
    free_port,
    require_binary,
    start_gateway,
    start_mosquitto,
    wait_port,
    wait_until,
)

settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    m = start_mosquitto(tmp_path)
    yield m
    m.stop()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[GatewayProc] = []

    def make(mqtt_url: str, **kw):  # type: ignore[no-untyped-def]
        gw = start_gateway(tmp_path, mqtt_url, **kw)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
