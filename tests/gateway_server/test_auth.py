"""Accounts and bearer tokens: scrypt hashes, login (JSON and OAuth2 form), 401 on every
non-public route, 403 for inspectors on admin writes, expiry, revocation, the CLI."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from pydantic import ValidationError
from support import freeze_rate_limits

from conftest import PASSWORD, login
from gateway_server import cli
from gateway_server.api import auth
from gateway_server.settings import Settings
from gateway_server.store.database import Store

PUBLIC_API = ("/api/v1/public/", "/api/v1/auth/token")
REGISTRY = ("/api/v1/markets", "/api/v1/merchants", "/api/v1/registry/")  # admin writes


def api_routes(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(method, path) of every route of the app, included routers flattened."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI with lazy included routers

        contexts = list(iter_route_contexts(app.routes))
    except ImportError:  # pragma: no cover - older FastAPI keeps a flat list
        contexts = [r for r in app.routes if isinstance(r, APIRoute)]
    out = []
    for r in contexts:
        for m in sorted(getattr(r, "methods", None) or ()):
            if m != "HEAD":
                out.append((m, r.path))
    return out


def fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


# -- passwords -----------------------------------------------------------------------------

def test_scrypt_hash_stores_its_parameters_and_a_random_salt() -> None:
    h1, h2 = auth.hash_password(PASSWORD), auth.hash_password(PASSWORD)
    assert h1 != h2 and h1.startswith("scrypt$16384$8$1$")
    assert auth.verify_password(PASSWORD, h1) and auth.verify_password(PASSWORD, h2)
    assert not auth.verify_password(PASSWORD + "x", h1)
    assert not auth.verify_password(PASSWORD, "garbage") and not auth.verify_password(PASSWORD, "")


@pytest.mark.parametrize("pw", ["short", "123456789", "changethis", "aaaaaaaaaaaa", "Password"])
def test_weak_passwords_are_refused(store: Store, pw: str) -> None:
    with pytest.raises(auth.AuthError), store.engine.begin() as conn:
        auth.create_user(conn, "u1", pw, "admin", now_ms=0)
    with pytest.raises(ValidationError, match="password"):
        Settings(first_admin_username="admin", first_admin_password=pw)


def test_settings_need_both_admin_name_and_password() -> None:
    with pytest.raises(ValidationError, match="both"):
        Settings(first_admin_username="admin")
    assert Settings(first_admin_username="admin", first_admin_password=PASSWORD)


def test_ensure_user_is_idempotent_and_bootstrap_admin(store: Store) -> None:
    u = auth.ensure_user(store, "demo", PASSWORD, "inspector")
    assert auth.ensure_user(store.engine, "demo", PASSWORD, "inspector") == u
    assert auth.ensure_user(store, "demo", PASSWORD + "!", "admin").role is auth.Role.ADMIN
    with store.engine.connect() as conn:
        assert auth.authenticate(conn, "demo", PASSWORD + "!") is not None
        assert auth.authenticate(conn, "demo", PASSWORD) is None
    s = Settings(first_admin_username="root", first_admin_password=PASSWORD)
    assert auth.bootstrap_admin(store, s).role is auth.Role.ADMIN  # type: ignore[union-attr]
    assert auth.bootstrap_admin(store, Settings()) is None


# -- login ---------------------------------------------------------------------------------

def test_login_json_and_form_and_me(client, store) -> None:  # type: ignore[no-untyped-def]
    auth.ensure_user(store, "insp", PASSWORD, "inspector")
    r = client.post("/api/v1/auth/token", json={"username": "insp", "password": PASSWORD})
    body = r.json()
    assert r.status_code == 200 and body["token_type"] == "bearer" and body["role"] == "inspector"
    assert len(body["access_token"]) >= 43 and body["expires_ms"] > auth.now_ms()
    r = client.post("/api/v1/auth/token", data={"grant_type": "password", "username": "insp",
                                                "password": PASSWORD})
    assert r.status_code == 200
    me = client.get("/api/v1/auth/me", headers={"Authorization": "Bearer " + r.json()[
        "access_token"]}).json()
    assert me["username"] == "insp" and me["role"] == "inspector"


def test_only_the_token_hash_is_stored(client, store) -> None:  # type: ignore[no-untyped-def]
    auth.ensure_user(store, "insp", PASSWORD, "inspector")
    token = login(client, "insp")["Authorization"].split()[1]
    from sqlalchemy import select

    from gateway_server.store.tables import api_tokens
    with store.engine.connect() as conn:
        stored = conn.execute(select(api_tokens.c.token_sha256)).scalars().all()
    assert token not in stored and auth._sha256(token) in stored


@pytest.mark.parametrize("creds", [{"username": "insp", "password": "wrong-password-1"},
                                   {"username": "nobody", "password": PASSWORD}])
def test_bad_credentials_are_401_with_bearer_challenge(client, store, creds) -> None:  # type: ignore[no-untyped-def]
    auth.ensure_user(store, "insp", PASSWORD, "inspector")
    r = client.post("/api/v1/auth/token", json=creds)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_malformed_login_is_422(client) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/api/v1/auth/token", json={"username": "x"}).status_code == 422
    assert client.post("/api/v1/auth/token", content=b"{no json",
                       headers={"Content-Type": "application/json"}).status_code == 422


def test_login_is_rate_limited(client, store, settings) -> None:  # type: ignore[no-untyped-def]
    freeze_rate_limits(client.app, settings)  # the burst is the allowance, however slow
    codes = [client.post("/api/v1/auth/token", json={"username": "x", "password": "y"})
             .status_code for _ in range(12)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]


# -- 401 / 403 -----------------------------------------------------------------------------

def test_every_non_public_api_route_answers_401_without_a_token(client) -> None:  # type: ignore[no-untyped-def]
    routes = [(m, p) for m, p in api_routes(client.app)
              if p.startswith("/api/v1/") and not p.startswith(PUBLIC_API)]
    assert len(routes) >= 25  # registry, auth, events: the sweep really covers them
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            r = client.request(method, fill(path), headers=headers)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers["www-authenticate"] == "Bearer", (method, path)


def test_public_routes_need_no_token(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/healthz", "/openapi.json", "/docs", "/"):
        assert client.get(path).status_code == 200, path
    assert client.get("/api/v1/public/merchants/unknown").status_code == 404


def test_inspectors_get_403_on_every_admin_write(client, inspector) -> None:  # type: ignore[no-untyped-def]
    writes = [(m, p) for m, p in api_routes(client.app)
              if p.startswith(REGISTRY) and m in ("POST", "PATCH", "PUT", "DELETE")]
    assert len(writes) >= 12
    for method, path in writes:
        r = client.request(method, fill(path), headers=inspector)
        assert r.status_code == 403, (method, path, r.status_code, r.text)


def test_inspectors_can_read(client, admin, inspector) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/api/v1/markets", json={"id": "m1", "name": "东门"},
                       headers=admin).status_code == 201
    for path in ("/api/v1/markets", "/api/v1/markets/m1", "/api/v1/merchants",
                 "/api/v1/registry/scales", "/api/v1/scales", "/api/v1/weighings",
                 "/api/v1/dead-letters", "/api/v1/markets/m1/register.csv"):
        assert client.get(path, headers=inspector).status_code == 200, path


def test_expired_token_is_401(client, store) -> None:  # type: ignore[no-untyped-def]
    u = auth.ensure_user(store, "insp", PASSWORD, "inspector")
    with store.engine.begin() as conn:
        old, expires = auth.issue_token(conn, u, now_ms=auth.now_ms() - 120_000, ttl_s=60)
        fresh, _ = auth.issue_token(conn, u, now_ms=auth.now_ms(), ttl_s=60)
    assert expires < auth.now_ms()
    r = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {fresh}"}
                      ).status_code == 200


def test_token_lifetime_follows_settings(store) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from gateway_server.api.app import create_app

    auth.ensure_user(store, "insp", PASSWORD, "inspector")
    with TestClient(create_app(store, None, Settings(token_ttl_s=60))) as c:
        t0 = auth.now_ms()
        body = c.post("/api/v1/auth/token", json={"username": "insp", "password": PASSWORD}).json()
    assert t0 + 60_000 <= body["expires_ms"] <= auth.now_ms() + 60_000


def test_logout_revokes_and_password_change_and_disable_log_out(client, store) -> None:  # type: ignore[no-untyped-def]
    auth.ensure_user(store, "insp", PASSWORD, "inspector")
    h = login(client, "insp")
    assert client.post("/api/v1/auth/logout", headers=h).status_code == 204
    assert client.get("/api/v1/auth/me", headers=h).status_code == 401
    h = login(client, "insp")
    with store.engine.begin() as conn:
        auth.update_user(conn, "insp", disabled=True)
    assert client.get("/api/v1/auth/me", headers=h).status_code == 401
    r = client.post("/api/v1/auth/token", json={"username": "insp", "password": PASSWORD})
    assert r.status_code == 401


def test_openapi_documents_security_and_errors(client) -> None:  # type: ignore[no-untyped-def]
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"][
        "tokenUrl"] == "/api/v1/auth/token"
    token_op = spec["paths"]["/api/v1/auth/token"]["post"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(
        token_op["requestBody"]["content"])
    for path, ops in spec["paths"].items():
        if not path.startswith("/api/v1/") or path.startswith(PUBLIC_API):
            continue
        for method, op in ops.items():
            assert op.get("security"), (method, path)
            assert "401" in op["responses"], (method, path)
            if path.startswith((*REGISTRY, "/api/v1/auth/")):
                assert op.get("summary") and op.get("responses"), (method, path)
            if method in ("post", "patch") and path.startswith(REGISTRY):
                assert "403" in op["responses"], (method, path)
                assert "422" in op["responses"], (method, path)
            if "{" in path and path.startswith(REGISTRY):
                assert "404" in op["responses"], (method, path)
    assert "429" in spec["paths"]["/api/v1/public/merchants/{trust_token}"]["get"]["responses"]


# -- CLI -----------------------------------------------------------------------------------

def test_cli_create_user(store: Store, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import io

    url = store.engine.url.render_as_string(hide_password=False)
    base = ["create-user", "--database-url", url, "--username", "ops", "--role", "admin"]
    assert cli.main([*base, "--password", "short"]) == 2
    assert "too short" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli.main(base) == 0
    assert cli.main([*base, "--password", PASSWORD]) == 2  # exists
    assert cli.main([*base, "--password", PASSWORD, "--if-exists", "skip"]) == 0
    assert cli.main([*base[:-1], "inspector", "--password", PASSWORD + "2",
                     "--if-exists", "update"]) == 0
    with store.engine.connect() as conn:
        u = auth.authenticate(conn, "ops", PASSWORD + "2")
    assert u is not None and u.role is auth.Role.INSPECTOR


def test_a_token_never_begins_with_a_dash() -> None:
    """A bearer token is pasted after command-line options (``scale-sim evaluate --token``),
    where one beginning with "-" is refused as an option. 2,000 tokens: with a leading dash
    allowed (one in 64), all would pass with probability 2e-14."""
    from gateway_server.registry.accounts import TOKEN_BYTES, new_token

    tokens = [new_token() for _ in range(2000)]
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == len(tokens)
    assert all(len(t) == len(tokens[0]) >= TOKEN_BYTES for t in tokens)
