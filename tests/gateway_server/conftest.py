"""Gateway server fixtures: a fresh store per test on SQLite and on PostgreSQL.

PostgreSQL runs on 127.0.0.1:5432 (trust auth, user postgres or root, maintenance
database ``test``). Each test module gets its own database ``gw_test_<random>``,
dropped afterwards; each test starts from empty tables. When PostgreSQL is
unreachable its cases are skipped, except in CI (``CI`` set) where they fail.
"""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

with warnings.catch_warnings():
    # starlette >= 1.x asks for httpx2 and warns once at import when only httpx is
    # installed; httpx is what pyproject.toml pins for the tests (see docs/registry.md)
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from gateway_server.api import auth
from gateway_server.api.app import create_app
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.partitions import KEYED, keys_table
from gateway_server.store.tables import metadata

PG_HOST = os.environ.get("PGHOST_TEST", "127.0.0.1:5432")
PASSWORD = "correct-horse-battery"


def _pg_admin_url() -> str | None:
    import psycopg

    for user in ("postgres", "root"):
        url = f"postgresql://{user}@{PG_HOST}/test"
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error:
            continue
    return None


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    import psycopg

    admin = _pg_admin_url()
    if admin is None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable on {PG_HOST}")
        pytest.skip(f"PostgreSQL unreachable on {PG_HOST}")
    name = f"gw_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    engine_store = Store.from_url(url)
    engine_store.migrate()  # the production schema: sales and events partitioned (0007)
    engine_store.engine.dispose()
    yield url
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store.from_url(f"sqlite:///{tmp_path}/gw.db")
        s.create_all()
    else:
        s = Store.from_url(request.getfixturevalue("pg_url"))
        names = ", ".join([*(f'"{t.name}"' for t in metadata.sorted_tables),
                           *(keys_table(t) for t in KEYED)])
        with s.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    yield s
    s.engine.dispose()


@pytest.fixture
def settings() -> Settings:
    return Settings(database_url="sqlite://", public_rate_per_min=30, public_rate_burst=10)


@pytest.fixture
def client(store: Store, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(store, None, settings)) as c:
        yield c


def login(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def admin(client: TestClient, store: Store) -> dict[str, str]:
    auth.ensure_user(store, "admin1", PASSWORD, "admin")
    return login(client, "admin1")


@pytest.fixture
def inspector(client: TestClient, store: Store) -> dict[str, str]:
    auth.ensure_user(store, "inspector1", PASSWORD, "inspector")
    return login(client, "inspector1")


def make_code(body17: str) -> str:
    """A valid 统一社会信用代码 from its first 17 characters (our own check character)."""
    from gateway_server.registry.uscc import check_char

    return body17 + check_char(body17)


CODE_A = "91350100M000100Y43"  # the example code printed in GB 32100-2015
CODE_B = make_code("92330106MA2B00001")  # 个体工商户 (9 2), Hangzhou region code
CODE_C = make_code("91330106MA2B0000X")


def seed(conn: Any, now_ms: int = 1_750_000_000_000) -> dict[str, Any]:
    """One market with two merchants (ids returned)."""
    from gateway_server.registry import register as reg

    reg.create_market(conn, "m1", name="东门农贸市场", now_ms=now_ms)
    a = reg.create_merchant(conn, "m1", name="张三蔬菜", credit_code=CODE_A, stall_no="A-01",
                            categories=["蔬菜"], phone="13800000000", now_ms=now_ms)
    b = reg.create_merchant(conn, "m1", name="李四水产", credit_code=CODE_B, stall_no="B-02",
                            categories=["水产"], now_ms=now_ms)
    return {"a": a["id"], "b": b["id"], "a_token": a["trust_token"]}
