"""Offline during trading hours: a trade scale that stopped reporting while its market trades.

A running edge agent reports at least every minute (heartbeats, idle-pan zero checks, sales;
docs/edge-agent.md), and its outbox keeps events through a network outage, so their device
times have no gap. Two things therefore mean the scale itself was dark:

* a ``no-data`` fault: the agent ran but the scale sent no frames for ``duration_ms``
  (switched off, cable pulled);
* a gap between two consecutive events of the device (device time) — the agent, and usually
  the scale with it, was off.

Either counts when it overlaps the market's trading hours by at least ``min_ms``. Only a gap
that *starts* inside trading hours counts, and only that day's trading up to the last
``wind_down_ms`` before the close: a stall that opens late, packs up early, or a scale that
is off overnight, is not a scale that went dark while trading.
Trading hours are local time in China Standard Time (UTC+8, no daylight saving),
``"HH:MM-HH:MM"`` per market (``markets.trading_hours``), else
:data:`DEFAULT_TRADING_HOURS`.

Pure: no database, no clock. The format of trading hours is the register's
(``registry.trading_hours``: it is checked where a market is written). A traceability
scale dark while the stall trades is also one sign of a second, untracked scale
(domain.md §4); this rule only reports the fact.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway_server.detect.rules.legal import LEGAL_TECHNICAL
from gateway_server.detect.rules.stream import Finding, ScaleCtx

# the register's format of trading hours, re-exported for the rule's callers
from gateway_server.registry.trading_hours import (
    DEFAULT_TRADING_HOURS as DEFAULT_TRADING_HOURS,
    parse_trading_hours as parse_trading_hours,
)

MINUTE_MS = 60_000
DAY_MS = 86_400_000
CST_OFFSET_MS = 8 * 3_600_000  # China Standard Time: UTC+8, no daylight saving


@dataclass(frozen=True, slots=True)
class OfflineParams:
    min_ms: int = 30 * MINUTE_MS  # dark for at least this long within trading hours [config]
    #: the last hour before the close is when stalls pack up (and where a slow clock puts
    #: the end of the day): a scale going dark there is not counted [config]
    wind_down_ms: int = 60 * MINUTE_MS


DEFAULT_PARAMS = OfflineParams()


def trading_overlap_ms(start_ms: int, end_ms: int, hours: tuple[int, int]) -> int:
    """How much of [start_ms, end_ms) (UTC ms) falls inside the daily trading hours."""
    if end_ms <= start_ms:
        return 0
    open_ms, close_ms = hours[0] * MINUTE_MS, hours[1] * MINUTE_MS
    total = 0
    day = (start_ms + CST_OFFSET_MS) // DAY_MS * DAY_MS - CST_OFFSET_MS  # local midnight
    while day < end_ms:
        total += max(0, min(end_ms, day + close_ms) - max(start_ms, day + open_ms))
        day += DAY_MS
    return total


def in_trading_hours(t_ms: int, hours: tuple[int, int]) -> bool:
    minute = (t_ms + CST_OFFSET_MS) % DAY_MS // MINUTE_MS
    return hours[0] <= minute < hours[1]


def check_offline(scale: ScaleCtx, start_ms: int, end_ms: int, *, cause: str,
                  hours: tuple[int, int], merchant_id: int | None = None,
                  params: OfflineParams = DEFAULT_PARAMS) -> Finding | None:
    """A finding when the dark period [start_ms, end_ms) of a trade scale started within
    trading hours and overlaps them by at least ``params.min_ms``.

    ``cause``: ``no-data`` (the agent saw no frames) or ``silent`` (no events at all).
    """
    close = hours[1] - params.wind_down_ms // MINUTE_MS
    if scale.role != "trade" or close <= hours[0] or not in_trading_hours(
            start_ms, (hours[0], close)):
        return None
    # that day's trading only: the next morning is a late opening, not a scale gone dark
    day = (start_ms + CST_OFFSET_MS) // DAY_MS * DAY_MS - CST_OFFSET_MS
    overlap = trading_overlap_ms(start_ms, min(end_ms, day + close * MINUTE_MS), hours)
    if overlap < params.min_ms:
        return None
    h = f"{hours[0] // 60:02d}:{hours[0] % 60:02d}-{hours[1] // 60:02d}:{hours[1] % 60:02d}"
    return Finding(
        "offline-trading-hours", "low", "交易时段计量秤离线 Scale dark during trading hours",
        LEGAL_TECHNICAL, start_ms, scale.device, scale.market,
        f"offline-trading-hours:{scale.device}:{start_ms}", merchant_id,
        {"cause": cause, "from_ms": start_ms, "to_ms": end_ms, "duration_ms": end_ms - start_ms,
         "in_trading_hours_ms": overlap, "trading_hours": h})
