"""A market's trading hours as the register keeps them: ``"HH:MM-HH:MM"``, local time in
China Standard Time (UTC+8, no daylight saving), parsed to minutes after local midnight.

Checked where a market is written (``registry.register``) and read by the offline rule
(``detect.rules.offline``); pure, so both can use it without reaching into each other.
"""

from __future__ import annotations

import re

#: a retail market's day when the register gives none [config]
DEFAULT_TRADING_HOURS = "06:00-19:00"
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


def parse_trading_hours(text: str) -> tuple[int, int]:
    """``"06:00-19:00"`` → (open, close) in minutes after local midnight; open < close
    (a market trading over midnight is not supported). Raises ``ValueError`` saying why."""
    m = _HOURS.match(text.strip())
    if m is None:
        raise ValueError(f"trading hours {text!r}: expected HH:MM-HH:MM, e.g. 06:00-19:00")
    start = int(m[1]) * 60 + int(m[2])
    end = int(m[3]) * 60 + int(m[4])
    if end > 24 * 60 or start >= end:
        raise ValueError(f"trading hours {text!r}: the close must be after the opening, "
                         "within the same day")
    return start, end
