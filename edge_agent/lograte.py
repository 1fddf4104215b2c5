"""Rate limit for a warning that can repeat with every frame.

A scale on the wrong profile or baud rate rejects every frame: 20 warnings a second,
forever, burying everything else in the log. :class:`WarningGate` lets one warning per
``interval_s`` through and counts the ones it holds back, so the next one that passes can
say how many there were. Every rejection is still counted in the worker's statistics;
only the log lines are thinned. Time is a parameter (a monotonic clock in seconds).
"""

from __future__ import annotations

FRAME_WARNING_INTERVAL_S = 10.0


class WarningGate:
    """One warning per ``interval_s`` at most; the first always passes."""

    def __init__(self, interval_s: float = FRAME_WARNING_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._next_s: float | None = None
        self._held = 0

    def allow(self, now_s: float) -> int | None:
        """``None``: hold this warning back (counted). Otherwise log it: the number of
        warnings held back since the last one that passed."""
        if self._next_s is not None and now_s < self._next_s:
            self._held += 1
            return None
        held, self._held = self._held, 0
        self._next_s = now_s + self.interval_s
        return held
