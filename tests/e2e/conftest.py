"""The ``xdist_group`` marker registered also when pytest-xdist is not loaded
(``make test-serial`` runs ``-p no:xdist`` under ``--strict-markers``): the RabbitMQ
cluster tests share one module-scoped cluster and are kept on one xdist worker with it."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): run on one pytest-xdist worker")
