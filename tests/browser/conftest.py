"""Browser tests: a real gateway in-process (uvicorn in a thread, SQLite in a temp file,
no MQTT) driven by Playwright with Debian's chromium (``gw_browser`` holds the helpers).

Missing chromium or playwright: skipped on a developer machine, failed in CI.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gw_browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, Gateway, Pages, seed

from gateway_server.api import auth
from gateway_server.api.app import create_app
from gateway_server.ingest.broker import free_port
from gateway_server.settings import Settings
from gateway_server.store.database import Store


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "screenshots: writes docs/screenshots/*.png when "
                            "WRITE_SCREENSHOTS=1 (otherwise into a temp dir)")


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI but missing (see .ci/run)")
    pytest.skip(f"{what} missing")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package")
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        _missing("chromium (Debian package)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    import uvicorn

    tmp = tmp_path_factory.mktemp("gw")
    store = Store.from_url(f"sqlite:///{tmp}/gw.db")
    store.create_all()
    auth.ensure_user(store, "admin1", PASSWORD, "admin")
    auth.ensure_user(store, "inspector1", PASSWORD, "inspector")
    port = free_port()
    settings = Settings(database_url="sqlite://", public_rate_per_min=6000,
                        public_rate_burst=1000, login_rate_burst=1000,
                        public_base_url=f"http://127.0.0.1:{port}")
    gw = Gateway(f"http://127.0.0.1:{port}", store)
    seed(gw)
    app = create_app(store, None, settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ws="none", lifespan="off",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    yield gw
    server.should_exit = True
    thread.join(10)
    store.engine.dispose()


@pytest.fixture
def pages() -> Iterator[Pages]:
    p = Pages()
    yield p
    for ctx in p.contexts:  # before the gateway stops: no event stream left open
        ctx.close()


