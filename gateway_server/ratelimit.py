"""Token-bucket rate limiting per client IP for the public and login endpoints.

Rules:

* One bucket per (limiter, client IP): ``burst`` tokens, refilled at ``rate_per_min``
  per minute; a request takes one token or is answered 429 with ``Retry-After`` (whole
  seconds until a token is back).
* The clock is injectable (``time.monotonic`` by default) so tests need no sleeping.
* Memory is bounded: past ``max_clients`` buckets, full (idle) buckets are dropped,
  and if that is not enough the table is cleared (fail open rather than grow).
* State is per process: several API processes behind a balancer each allow the rate;
  a shared limit belongs in the reverse proxy.
* The client IP is the socket peer; ``X-Forwarded-For`` is read only when
  ``settings.trust_forwarded_for`` is set (otherwise anyone could pick their bucket).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request, status

from gateway_server.deps import SettingsDep
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


def client_ip(request: Request, settings: Settings) -> str:
    if settings.trust_forwarded_for:
        fwd = request.headers.get("x-forwarded-for")
        if fwd:
            return fwd.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


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
