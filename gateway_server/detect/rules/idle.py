"""The second, untracked scale (domain.md §4 derived rule 6): a window rule over a market.

A trade scale whose sales collapse while its market's do not (:func:`check_idle_scales`),
judged against its own share of the market with a binomial tail (``binomial_cdf``; no
scipy). Pure, as :mod:`gateway_server.detect.rules.stream` (whose types it uses); the caller
counts the window's sales (:mod:`gateway_server.detect.idle_scan`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from gateway_server.detect.rules.legal import LEGAL_TRACE
from gateway_server.detect.rules.stream import (
    DetectorParams,
    Finding,
    ScaleCtx,
    scale_finding as _f,
)


def poisson_cdf(n: int, lam: float) -> float:
    """P(X ≤ n) for X ~ Poisson(lam) (no scipy)."""
    if lam <= 0:
        return 1.0
    term = math.exp(-lam)
    total = term
    for k in range(1, n + 1):
        term *= lam / k
        total += term
    return min(total, 1.0)


def binomial_cdf(n: int, trials: int, q: float) -> float:
    """P(X ≤ n) for X ~ Binomial(trials, q), summed in log space (no scipy)."""
    if q <= 0:
        return 1.0
    if q >= 1:
        return 1.0 if n >= trials else 0.0
    lq, l1q = math.log(q), math.log1p(-q)
    total = 0.0
    for k in range(0, min(n, trials) + 1):
        total += math.exp(math.lgamma(trials + 1) - math.lgamma(k + 1)
                          - math.lgamma(trials - k + 1) + k * lq + (trials - k) * l1q)
    return min(total, 1.0)


def check_idle_scales(now_counts: Mapping[str, int], before_counts: Mapping[str, int],
                      scales: Mapping[str, ScaleCtx], *, window_end_ms: int,
                      params: DetectorParams = DetectorParams(),
                      merchants: Mapping[str, int | None] | None = None) -> list[Finding]:
    """A trade scale whose sales collapse while its market's do not (second, untracked scale).

    Each scale is compared with **its own** share of the market. Under "nothing changed"
    a scale keeps its share, so of its ``n + b`` sales over the judged window and the
    baseline window before it, the judged window holds a Binomial(``n + b``, ``q``) number,
    ``q`` being the share of the *other* scales' sales that fell in the judged window
    (conditioning on ``n + b`` accounts for the noise of the scale's own baseline). The
    tail ``P(X ≤ n)`` below ``idle_alpha`` flags it. The trading-day pattern cancels (it
    moves the whole market), and merchants that always sell little are compared with
    themselves, not with busy peers. Only scales that showed they were on (any event or
    reading in the window) are given.
    """
    market_now = sum(now_counts.values())
    market_before = sum(before_counts.get(d, 0) for d in now_counts)
    out = []
    bucket = window_end_ms // 3_600_000
    for device, n in sorted(now_counts.items()):
        b = before_counts.get(device, 0)
        others_now, others_before = market_now - n, market_before - b
        if b < params.idle_min_history or others_before <= 0 or others_now <= 0:
            continue
        q = others_now / (others_now + others_before)
        expected = (n + b) * q
        if expected < params.idle_min_expected:
            continue
        p = binomial_cdf(n, n + b, q)
        if p >= params.idle_alpha:
            continue
        sc = scales[device]
        out.append(_f("idle-while-peers-trade", "medium",
                      "溯源秤交易骤减而同市场照常 Scale's sales collapsed while its market trades",
                      LEGAL_TRACE, sc, window_end_ms, f"{bucket}",
                      (merchants or {}).get(device), sales=n, expected=round(expected, 1),
                      p_value=f"{p:.2e}", baseline_sales=b, window_ms=params.idle_window_ms,
                      baseline_ms=params.idle_baseline_ms))
    return out
