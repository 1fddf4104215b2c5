"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

Issue 5, done when "a schemathesis run against the OpenAPI yields no 5xx". Every
operation of ``create_app`` is called in-process (ASGI transport, no network) on a
SQLite store seeded with a market, merchants, registered scales with keys, signed sales
and findings, a dead letter and a quarantined message: once with an admin bearer token,
and the public operations once more without a token. The only check is schemathesis's
``not_a_server_error``: wrong input must be answered 4xx, never 5xx (an exception that
escapes the app fails the same way).

Per operation: the schema's examples, the coverage phase (boundary values, wrong types,
missing parameters, unexpected methods; finite for a given schema) and ``MAX_EXAMPLES``
generated cases (valid and invalid). Deterministic: fixed seed, derandomized
Hypothesis, no example database. The cases share one store, in schema order, so later
operations see what earlier ones wrote (markets, merchants, prices, keys, ...).

The 5xx the fuzzer found are pinned at the end, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from sqlalchemy import select

from conftest import PASSWORD, seed
from gateway_server.api import auth
from gateway_server.api.app import create_app
from gateway_server.ingest.pipeline import decode_message, store_batch
from gateway_server.registry import register as reg
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import findings, markets, merchants, scales
from gateway_server.store.tables_workflow import inspection_tasks
from weighing import wire
from weighing.signing import sign_event

MAX_EXAMPLES = 25
CONFIG = {
    "seed": 20260501,
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True},
               "fuzzing": {"enabled": True}, "stateful": {"enabled": False}},
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
}
PUBLIC_PATHS = ("/api/v1/public/", "/api/v1/auth/token", "/healthz", "/metrics")
STREAM_TIMEOUT_S = 0.2  # the SSE stream never ends by itself: keep what came before then
ADMIN = "fuzz-admin"

# The OpenAPI document does not depend on the data: it is taken, at collection, from an
# app on an in-memory engine that is never connected; the cases go to the seeded app
# (``case.call(app=...)``). schemathesis.pytest.from_fixture would load it from a fixture,
# but its lazy mode breaks on pytest 9.2 (it sets ``Function._nodeid``, gone there).
schema = schemathesis.openapi.from_dict(
    create_app(Store.from_url("sqlite://")).openapi(),
    config=SchemathesisConfig.from_dict(CONFIG))


@dataclass
class FuzzEnv:
    store: Store
    app: Any
    token: str


def _seed(store: Store, now: int) -> None:
    with store.engine.begin() as c:
        ids = seed(c)
        reg.register_scale(c, "s-1", market_id="m1", now_ms=now, max_mg=15_000_000,
                           e_mg=5_000, accuracy_class="III", role="trade")
        reg.bind(c, "s-1", ids["a"], at_ms=now - 60_000)
        reg.register_scale(c, "s-2", market_id="m1", now_ms=now, max_mg=30_000_000,
                           e_mg=10_000, accuracy_class="III", role="trade")
        reg.add_price(c, ids["a"], plu="1001", name="西红柿", category="vegetables",
                      unit_price_fen_per_kg=800, valid_from_ms=now - 3_600_000)
        key = bytes.fromhex(reg.get_scale_row(c, "s-1")["key_hex"])
    evs = [
        sign_event(key, "s-1", wire.SaleEvent(
            seq=1, ts_ms=now - 2000, net_mg=500_000, settled_mg=500_000, peak_mg=500_000,
            stable_device=True, stable_software=True, unit_price_fen_per_kg=800,
            amount_fen=400, plu="1001", trace_code="T-0001")),
        sign_event(key, "s-1", wire.SaleEvent(  # impact cheat signature: a finding
            seq=2, ts_ms=now - 1000, net_mg=198_000, settled_mg=155_000, peak_mg=198_000,
            stable_device=False, stable_software=False, unsettled_commit=True)),
        sign_event(key, "s-1", wire.ZeroCheckEvent(  # 100 g off zero: a finding
            seq=3, ts_ms=now - 500, mean_mg=100_000, spread_mg=0, n=40, duration_ms=8_000)),
    ]
    stranger = wire.EventBatch(device="s-9", events=[wire.ZeroCheckEvent(
        seq=1, ts_ms=now, mean_mg=0, spread_mg=0, n=1, duration_ms=1)])
    batch = [
        decode_message("scales/v1/m1/s-1/events",
                       wire.encode(wire.EventBatch(device="s-1", events=evs)), now),
        decode_message("scales/v1/m1/s-9/events", wire.encode(stranger), now),  # quarantined
        decode_message("scales/v1/m1/s-1/events", b"\xff not msgpack", now),  # dead letter
    ]
    with store.engine.begin() as c:
        res = store_batch(c, batch, now_ms=now)
    assert len(res.new_findings) == 2 and res.quarantined == 1 and len(res.dead) == 1, res


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzEnv]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "gw.db"
    store = Store.from_url(f"sqlite:///{path}")
    store.create_all()
    now = time.time_ns() // 1_000_000
    _seed(store, now)
    user = auth.ensure_user(store, ADMIN, PASSWORD, "admin")
    with store.engine.begin() as c:
        token, _ = auth.issue_token(c, user, now_ms=now, ttl_s=3600)
    # rate limits out of the way: a 429 is not a 5xx, but it would hide the route behind it
    settings = Settings(database_url="sqlite://", public_rate_per_min=1e6,
                        public_rate_burst=1_000_000, login_rate_per_min=1e6,
                        login_rate_burst=1_000_000)
    yield FuzzEnv(store, create_app(store, None, settings), token)
    store.engine.dispose()


def _known(env: FuzzEnv) -> dict[str, list[Any]]:
    """Values that name existing rows now (trust tokens and the register change as we go)."""
    with env.store.engine.connect() as c:
        def first(col: Any) -> list[Any]:
            return list(c.execute(select(col).order_by(col).limit(4)).scalars())

        return {"market_id": first(markets.c.id), "merchant_id": first(merchants.c.id),
                "trust_token": first(merchants.c.trust_token),
                "device": first(scales.c.device), "finding_id": first(findings.c.id),
                "task_id": first(inspection_tasks.c.id), "trace_code": ["T-0001"]}


def _name_known_rows(case: Any, env: FuzzEnv) -> None:
    """About half of the ids in the path and the body are replaced by existing ones, so that
    the handlers run past their 404. Picked by a hash of the generated value: deterministic."""
    known = _known(env)

    def pick(name: str, value: Any) -> Any:
        h = zlib.crc32(repr(value).encode())
        if known.get(name) and h % 2:
            return known[name][(h >> 1) % len(known[name])]
        return value

    for name, value in list((case.path_parameters or {}).items()):
        case.path_parameters[name] = pick(name, value)
    if isinstance(case.body, dict):
        for name in [n for n in case.body if n in known]:
            case.body[name] = pick(name, case.body[name])


def _fresh_token(env: FuzzEnv) -> str:
    """A token of its own for ``POST /auth/logout``, which revokes the token it is given."""
    with env.store.engine.begin() as c:
        user = auth.authenticate(c, ADMIN, PASSWORD)
        assert user is not None
        token, _ = auth.issue_token(c, user, now_ms=auth.now_ms(), ttl_s=3600)
    return token


def _call(case: Any, env: FuzzEnv, token: str | None) -> None:
    _name_known_rows(case, env)
    headers = {}
    if token is not None:
        if case.operation.path == "/api/v1/auth/logout":
            token = _fresh_token(env)
        headers["Authorization"] = f"Bearer {token}"
    kwargs: dict[str, Any] = {}
    if case.operation.path == "/api/v1/stream":
        kwargs["timeout"] = STREAM_TIMEOUT_S
    response = case.call(app=env.app, headers=headers, **kwargs)
    case.validate_response(response, checks=[not_a_server_error], headers=headers)


def _is_public(ctx: Any) -> bool:
    return bool(ctx.operation.path.startswith(PUBLIC_PATHS))


@schema.parametrize()
def test_no_server_error_with_admin_token(case: Any, fuzz_env: FuzzEnv) -> None:
    _call(case, fuzz_env, fuzz_env.token)


@schema.include(_is_public).parametrize()
def test_no_server_error_without_token(case: Any, fuzz_env: FuzzEnv) -> None:
    _call(case, fuzz_env, None)


# -- what the fuzzer found, pinned on SQLite and PostgreSQL -------------------------------

BIG = 2**63  # one past BIGINT


def test_found_inputs_answer_4xx(client: TestClient, store: Store,
                                 admin: dict[str, str]) -> None:
    _seed(store, auth.now_ms())
    h = admin
    for url in (f"/api/v1/weighings?offset={BIG}", f"/api/v1/findings?merchant_id={BIG}",
                f"/api/v1/complaints?merchant_id={BIG}", f"/api/v1/merchants/{BIG}",
                f"/api/v1/merchants/{BIG}/qr.svg", f"/api/v1/findings/{BIG}"):
        assert client.get(url, headers=h).status_code == 422, url
    r = client.post(f"/api/v1/merchants/{BIG}/status", headers=h, json={"reason": "x"})
    assert r.status_code == 422
    r = client.post("/api/v1/merchants", headers=h,
                    json={"market_id": "m1", "name": "x", "credit_code": False})
    assert r.status_code == 422 and "credit_code" in r.text
    r = client.patch("/api/v1/markets/m1", headers=h, json={"name": None})
    assert r.status_code == 422 and "name" in r.text
    for due in (BIG, 2**62, "0001-01-01", "9" * 5000):
        r = client.patch("/api/v1/registry/scales/s-2", headers=h, json={"due_on_ms": due})
        assert r.status_code == 422, (due, r.text)
    r = client.patch("/api/v1/registry/scales/s-2", headers=h, json={"max_mg": "9" * 5000})
    assert r.status_code == 422 and "too long" in r.text
    assert client.get("/api/v1/markets/m1/register.csv", headers=h).status_code == 200
    r = client.post("/api/v1/inspections", headers=h, json={
        "device": "s-1", "loads": [{"load_mg": 50_000_001, "indication_mg": 0}]})
    assert r.status_code == 422 and "class III" in r.text
    # a NUL character: SQLite stores it, PostgreSQL refuses it (422, not 500)
    assert client.get("/api/v1/scales?market=%00", headers=h).status_code in (200, 422)
    r = client.post("/api/v1/markets", headers=h, json={"id": "m2", "name": "a\u0000b"})
    assert r.status_code in (201, 422), r.text
