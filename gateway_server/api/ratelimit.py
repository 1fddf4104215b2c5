"""Token-bucket rate limiting per client IP for the public and login endpoints, and the
per-account lockout of ``POST /auth/token``.

Rules:

* One bucket per (limiter, client IP): ``burst`` tokens, refilled at ``rate_per_min``
  per minute; a request takes one token or is answered 429 with ``Retry-After`` (whole
  seconds until a token is back).
* The clock is injectable (``time.monotonic`` by default) so tests need no sleeping.
* Memory is bounded: past ``max_clients`` buckets, full (idle) buckets are dropped,
  and if that is not enough the table is cleared (fail open rather than grow).
* State is per process: several API processes behind a balancer each allow the rate
  (and each count an account's failed logins); a shared limit belongs in the reverse
  proxy.

The client IP (:func:`client_ip`): the socket peer, unless the peer is a trusted proxy
(``settings.trusted_proxies``, IPs or networks). Then it is the **right-most hop of
X-Forwarded-For that is not a trusted proxy**: each proxy appends the address it saw,
so everything left of the last trusted proxy's entry was written by the client and can
be anything (a client that sends ``X-Forwarded-For: 1.2.3.4`` must not get a fresh
bucket per request). ``settings.trust_forwarded_for`` without ``trusted_proxies`` is
the old switch: the peer is taken as the one proxy in front, so its entry, the
right-most, is used.

Why here and not (only) uvicorn's ``--forwarded-allow-ips``: uvicorn's
``ProxyHeadersMiddleware`` applies the same right-most rule, and stays on with its
default (it trusts 127.0.0.1, or ``FORWARDED_ALLOW_IPS``), so the two agree. But it
lives in the server's command line, not in the gateway's settings (TOML, environment,
validated), is absent when the app runs under another ASGI server or FastAPI's
``TestClient``, and the rate limiter is the only part that needs the client's address.
One setting read where it is used is the cleaner contract.

Lockout (:class:`LoginLockout`): after ``settings.login_lockout_failures`` failed logins
in a row for one username, that username's logins are refused for
``settings.login_lockout_s`` seconds (429, ``Retry-After``, a message that says why),
with the right password too; a success resets the count, and failures older than one
lockout period are forgotten. It is per username, not per IP, so guessing one account's
password from many addresses is slowed as well. The price, documented: anyone can lock
an account for a while by failing on purpose (the IP limit slows that too).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request, status

from gateway_server.api.deps import SettingsDep
from gateway_server.settings import Settings


class TokenBucketLimiter:
    def __init__(self, rate_per_min: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 100_000) -> None:
        if rate_per_min <= 0 or burst < 1:
            raise ValueError("rate_per_min must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_min / 60.0
        self.burst = burst
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if allowed, else the seconds until one is back."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > self.max_clients:
                    self._evict(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate_per_s

    def _evict(self, now: float) -> None:
        full = [k for k, (t, at) in self._buckets.items()
                if t + (now - at) * self.rate_per_s >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) > self.max_clients:
            self._buckets.clear()


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=16)
def _networks(text: str) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(i.strip(), strict=False)
                 for i in text.split(",") if i.strip())


def _address(hop: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of one X-Forwarded-For entry (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``)."""
    hop = hop.strip()
    if hop.startswith("[") and "]" in hop:
        hop = hop[1:hop.index("]")]
    elif hop.count(":") == 1:
        hop = hop.split(":")[0]
    try:
        return ipaddress.ip_address(hop)
    except ValueError:
        return None


def _trusted(hop: str, networks: tuple[_Network, ...]) -> bool:
    ip = _address(hop)
    return ip is not None and any(ip in n for n in networks)


class LoginLockout:
    """Failed logins per username; a username is locked after ``failures`` in a row."""

    def __init__(self, failures: int, lockout_s: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 max_accounts: int = 100_000) -> None:
        if failures < 1 or lockout_s <= 0:
            raise ValueError("failures must be >= 1 and lockout_s > 0")
        self.failures = failures
        self.lockout_s = lockout_s
        self.clock = clock
        self.max_accounts = max_accounts
        self._state: dict[str, tuple[int, float, float]] = {}  # → (count, locked_until, last)
        self._lock = threading.Lock()

    def retry_after(self, username: str) -> float:
        """Seconds until ``username`` may log in again; 0.0 when it is not locked."""
        now = self.clock()
        with self._lock:
            _, until, _ = self._state.get(username, (0, 0.0, 0.0))
        return max(0.0, until - now)

    def failed(self, username: str) -> float:
        """Count a failed login; the lock's length in seconds if this one locks, else 0.0."""
        now = self.clock()
        with self._lock:
            count, until, last = self._state.get(username, (0, 0.0, now))
            if until > now:
                return until - now
            if now - last > self.lockout_s:
                count = 0  # an old failure is forgotten after one lockout period
            count += 1
            if count >= self.failures:
                self._state[username] = (0, now + self.lockout_s, now)
                return float(self.lockout_s)
            self._state[username] = (count, until, now)
            if len(self._state) > self.max_accounts:
                self._evict(now)
            return 0.0

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._state.pop(username, None)

    def _evict(self, now: float) -> None:
        """Drop what is not locked; if still too many, everything (fail open)."""
        for k in [k for k, (_, until, _) in self._state.items() if until <= now]:
            del self._state[k]
        if len(self._state) > self.max_accounts:
            self._state.clear()


def client_ip(request: Request, settings: Settings) -> str:
    """The address a limit applies to (module docstring: the right-most untrusted hop)."""
    peer = request.client.host if request.client else "unknown"
    networks = _networks(settings.trusted_proxies)
    if not (_trusted(peer, networks) or (settings.trust_forwarded_for and not networks)):
        return peer  # not from a proxy we trust: what it says about others is ignored
    hops = [h.strip() for value in request.headers.getlist("x-forwarded-for")
            for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            ip = _address(hop)
            return str(ip) if ip is not None else hop[:64]  # garbage from the proxy: as is
    return hops[0] if hops else peer  # only proxies: the left-most is the closest to us


def _limiter(request: Request, name: str, rate_per_min: float, burst: int) -> TokenBucketLimiter:
    state: Any = request.app.state
    limiters: dict[str, TokenBucketLimiter] | None = getattr(state, "rate_limiters", None)
    if limiters is None:
        limiters = {}
        state.rate_limiters = limiters
    lim = limiters.get(name)
    if lim is None:
        lim = limiters.setdefault(name, TokenBucketLimiter(rate_per_min, burst))
    return lim


def limit(request: Request, settings: Settings, name: str, rate_per_min: float,
          burst: int) -> None:
    """Take a token from ``name``'s bucket of this client, or raise 429 with Retry-After."""
    wait_s = _limiter(request, name, rate_per_min, burst).take(client_ip(request, settings))
    if wait_s > 0:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many requests",
                            headers={"Retry-After": str(max(1, math.ceil(wait_s)))})


def public_rate_limit(request: Request, s: SettingsDep) -> None:
    """Dependency of the public endpoints (``settings.public_rate_per_min`` / ``_burst``)."""
    limit(request, s, "public", s.public_rate_per_min, s.public_rate_burst)


def login_rate_limit(request: Request, s: SettingsDep) -> None:
    """Dependency of ``POST /auth/token``: slows password guessing per client IP."""
    limit(request, s, "login", s.login_rate_per_min, s.login_rate_burst)


R429: dict[int | str, dict[str, Any]] = {429: {
    "description": "Too many requests from this client; retry after `Retry-After` seconds",
    "headers": {"Retry-After": {"schema": {"type": "integer"}}}}}


def login_lockout(request: Request, settings: Settings) -> LoginLockout:
    """The app's :class:`LoginLockout` (``app.state.login_lockout``; tests put their own)."""
    state: Any = request.app.state
    lockout: LoginLockout | None = getattr(state, "login_lockout", None)
    if lockout is None:
        lockout = LoginLockout(settings.login_lockout_failures, settings.login_lockout_s)
        state.login_lockout = lockout
    return lockout


def locked_error(wait_s: float, failures: int) -> HTTPException:
    """429 for a locked account: what happened, and when to try again."""
    retry = max(1, math.ceil(wait_s))
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"登录失败次数过多（连续 {failures} 次），该账户已暂时锁定，请 {retry} 秒后再试。"
        f" Account locked after {failures} failed logins in a row; try again in {retry} s.",
        headers={"Retry-After": str(retry)})
