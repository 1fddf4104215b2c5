"""Rate limits behind a reverse proxy, the per-account login lockout and uncached tokens,
through the real app (FastAPI ``TestClient`` with a chosen socket peer). The limiter and
lockout clocks are stopped or moved by hand: no test depends on a wall-clock window."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from support import freeze_rate_limits

from conftest import PASSWORD
from gateway_server.api import auth
from gateway_server.api.app import create_app
from gateway_server.api.ratelimit import LoginLockout
from gateway_server.settings import Settings
from gateway_server.store.database import Store

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # see conftest.py: starlette's httpx2 notice
    from fastapi.testclient import TestClient

PUBLIC = "/api/v1/public/merchants/x"  # rate limited; 404 while allowed
TOKEN = "/api/v1/auth/token"
CLIENT = "198.51.100.9"  # the real client behind the proxy
PROXY = "10.0.0.1"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.from_url(f"sqlite:///{tmp_path}/gw.db")
    s.create_all()
    yield s
    s.engine.dispose()


def app_client(store: Store, peer: str, **settings: object) -> tuple[TestClient, Settings]:
    s = Settings(database_url="sqlite://", public_rate_burst=2, **settings)  # type: ignore[arg-type]
    c = TestClient(create_app(store, None, s), client=(peer, 40000))
    freeze_rate_limits(c.app, s)  # the burst is the allowance, however slow the machine
    return c, s


def codes(c: TestClient, *forwarded: str | list[tuple[str, str]]) -> list[int]:
    out = []
    for f in forwarded:
        headers = f if isinstance(f, list) else {"X-Forwarded-For": f}
        out.append(c.get(PUBLIC, headers=headers).status_code)  # type: ignore[arg-type]
    return out


# -- the client address ------------------------------------------------------------------

def test_spoofed_forwarded_for_from_an_untrusted_client_does_not_escape(store: Store) -> None:
    for legacy in (False, True):  # trust_forwarded_for alone trusts the peer, not the header
        c, _ = app_client(store, "203.0.113.7", trusted_proxies=PROXY,
                          trust_forwarded_for=legacy)
        with c:
            assert codes(c, "1.1.1.1", "2.2.2.2", "3.3.3.3") == [404, 404, 429]
            assert codes(c, f"4.4.4.4, {PROXY}") == [429]  # naming the proxy helps neither


def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_counts(store: Store) -> None:
    c, _ = app_client(store, PROXY, trusted_proxies="10.0.0.0/8, 127.0.0.1")
    with c:
        # whatever the client wrote left of its own address is ignored; trusted hops
        # (a second proxy in 10/8) are skipped from the right
        assert codes(c, f"1.1.1.1, {CLIENT}", f"2.2.2.2, {CLIENT}, 10.0.0.2",
                     f"{CLIENT}:51234", f"[::ffff:1.2.3.4], {CLIENT}") == [404, 404, 429, 429]
        assert codes(c, "198.51.100.10") == [404]  # another client: its own bucket
        # several X-Forwarded-For lines are one list, in order
        assert codes(c, [("X-Forwarded-For", "3.3.3.3"),
                         ("X-Forwarded-For", "198.51.100.11")],
                     [("X-Forwarded-For", "4.4.4.4"),
                      ("X-Forwarded-For", "198.51.100.11")],
                     [("X-Forwarded-For", "198.51.100.11")]) == [404, 404, 429]
        # no header from the proxy: the proxy itself is the client
        assert codes(c, [], [], []) == [404, 404, 429]


def test_the_old_switch_takes_the_proxy_entry_not_the_clients(store: Store) -> None:
    """``trust_forwarded_for`` without ``trusted_proxies``: one proxy, its entry counts."""
    c, _ = app_client(store, PROXY, trust_forwarded_for=True)
    with c:
        assert codes(c, f"1.1.1.1, {CLIENT}", f"2.2.2.2, {CLIENT}",
                     f"3.3.3.3, {CLIENT}") == [404, 404, 429]


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValidationError, match="not an IP address or network"):
        Settings(trusted_proxies="10.0.0.1, nginx")
    assert Settings(trusted_proxies="10.0.0.0/8, ::1").trusted_proxies


# -- the per-account lockout -------------------------------------------------------------

def login(c: TestClient, username: str, password: str):  # type: ignore[no-untyped-def]
    return c.post(TOKEN, json={"username": username, "password": password})


def test_lockout_engages_per_account_and_releases(store: Store) -> None:
    auth.ensure_user(store, "insp", PASSWORD, "inspector")
    auth.ensure_user(store, "other", PASSWORD, "inspector")
    c, s = app_client(store, PROXY, trusted_proxies=PROXY, login_rate_burst=1000,
                      login_lockout_failures=3, login_lockout_s=60)
    t = [0.0]
    with c:
        c.app.state.login_lockout = LoginLockout(3, 60, clock=lambda: t[0])
        # failures from two client addresses count for the one account
        assert login(c, "insp", "wrong-password-1").status_code == 401
        assert c.post(TOKEN, json={"username": "insp", "password": "wrong-password-2"},
                      headers={"X-Forwarded-For": CLIENT}).status_code == 401
        third = login(c, "insp", "wrong-password-3")
        assert third.status_code == 401 and third.headers["retry-after"] == "60"
        assert "锁定" in third.json()["detail"] and "locked" in third.json()["detail"]
        # locked: the right password is refused too, saying why and for how long
        r = login(c, "insp", PASSWORD)
        assert r.status_code == 429 and r.headers["retry-after"] == "60"
        assert "连续 3 次" in r.json()["detail"] and "60 s" in r.json()["detail"]
        assert login(c, "other", PASSWORD).status_code == 200  # other accounts unaffected
        t[0] = 59.5
        r = login(c, "insp", PASSWORD)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        t[0] = 60.0
        assert login(c, "insp", PASSWORD).status_code == 200  # released
        # a success starts the count again
        assert [login(c, "insp", "wrong-password-4").status_code for _ in range(2)] == [401] * 2
        assert login(c, "insp", PASSWORD).status_code == 200
        assert [login(c, "insp", "wrong-password-5").status_code for _ in range(2)] == [401] * 2
        # failures older than one lockout period are forgotten
        t[0] = 200.0
        assert [login(c, "insp", "wrong-password-6").status_code for _ in range(2)] == [401] * 2
        assert login(c, "insp", PASSWORD).status_code == 200
        # unknown names lock the same way: a lock says nothing about who exists
        assert [login(c, "nobody", "wrong-password-7").status_code
                for _ in range(4)] == [401, 401, 401, 429]
    assert s.login_lockout_failures == 3


def test_lockout_defaults_come_from_the_settings(store: Store) -> None:
    auth.ensure_user(store, "insp", PASSWORD, "inspector")
    c, _ = app_client(store, "203.0.113.7", login_rate_burst=1000, login_lockout_failures=2,
                      login_lockout_s=3600)
    with c:
        assert [login(c, "insp", "wrong-password-1").status_code
                for _ in range(2)] == [401, 401]
        r = login(c, "insp", PASSWORD)
        assert r.status_code == 429 and 3500 < int(r.headers["retry-after"]) <= 3600


def test_lockout_memory_is_bounded() -> None:
    lock = LoginLockout(2, 60, clock=lambda: 0.0, max_accounts=10)
    for i in range(100):
        lock.failed(f"user-{i}")
    assert len(lock._state) <= 11
    lock.failed("victim")
    assert lock.failed("victim") == 60.0  # a lock is kept while there is room


# -- tokens are never cached -------------------------------------------------------------

def test_token_responses_are_not_stored(store: Store) -> None:
    auth.ensure_user(store, "insp", PASSWORD, "inspector")
    c, _ = app_client(store, "203.0.113.7")
    with c:
        r = login(c, "insp", PASSWORD)
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"
        form = c.post(TOKEN, data={"username": "insp", "password": PASSWORD})
        assert form.status_code == 200 and form.headers["cache-control"] == "no-store"
        spec = c.get("/openapi.json").json()["paths"][TOKEN]["post"]["responses"]
        assert "Cache-Control" in spec["200"]["headers"]
        assert "Retry-After" in spec["429"]["headers"]
