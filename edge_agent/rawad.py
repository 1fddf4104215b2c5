"""Raw AD counts for sales and zero checks: what the gateway's K-factor monitor needs.

Pure (time is a parameter, no I/O). A device that reports its raw AD count (Modbus
transmitters: ``extras["raw_ad"]``) lets the gateway compute the scale's measurement
coefficient ``K = (AD − AD0) / W`` from a sale's AD, the preceding zero check's AD0 and
the sale's weight W, and flag K drifting from its commissioning value: a cheat that
changes the displayed weight after the AD converter (a "chip" or remote gain, a span
re-calibration) moves K, while an honest scale keeps it (domain.md §4).

Rules:

* :class:`RawAdTrack` remembers ``(t_ms, weight_mg, raw_ad, stable)`` of recent frames,
  bounded both by age (``max_age_ms``, pruned on every feed) and by count
  (``max_frames``): a load or idle period longer than that is judged on its last part.
* A ``SaleEvent``'s ``raw_ad`` is the median AD of the frames of its load
  (``[ts_ms − duration_ms, ts_ms]``) whose reading equals ``settled_mg``. The state
  machine settles on the frame's ``weight_mg`` as the device shows it (net of any tare),
  so that is what is matched; the AD itself counts the whole load, tare included.
* A ``ZeroCheckEvent``'s ``raw_ad`` is the median AD of the frames of its idle period
  whose reading lies within the period's readings (``|w − mean_mg| ≤ spread_mg``): on a
  clean zero (spread 0, mean 0) exactly the frames that read 0; a drifting or offset zero
  still finds its empty-pan frames.
* Frames the device flags as moving (``stable is False``) are left out, as the state
  machine leaves them out of settled weights and zero statistics.
* The median of ints is the lower median: an int, exact, one of the counts seen.
* No matching frame, or an event that already carries ``raw_ad``: the event unchanged.
  Other events pass unchanged.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import msgspec

from weighing import wire

#: 10 minutes of frames at up to 20 frames/s
DEFAULT_MAX_AGE_MS = 600_000
DEFAULT_MAX_FRAMES = 12_000


class _Reading(NamedTuple):
    t_ms: int
    weight_mg: int
    raw_ad: int
    stable: bool | None


class RawAdTrack:
    """Recent frames' raw AD counts; :meth:`annotate` fills ``raw_ad`` of an event."""

    def __init__(self, *, max_age_ms: int = DEFAULT_MAX_AGE_MS,
                 max_frames: int = DEFAULT_MAX_FRAMES) -> None:
        if max_age_ms <= 0 or max_frames <= 0:
            raise ValueError("max_age_ms and max_frames must be positive")
        self.max_age_ms = max_age_ms
        self._frames: deque[_Reading] = deque(maxlen=max_frames)

    def __len__(self) -> int:
        return len(self._frames)

    def feed(self, t_ms: int, weight_mg: int, raw_ad: int, *, stable: bool | None = None,
             ) -> None:
        """Record one frame (times non-decreasing, as the agent stamps them)."""
        frames = self._frames
        frames.append(_Reading(t_ms, weight_mg, raw_ad, stable))
        oldest = t_ms - self.max_age_ms
        while frames[0].t_ms < oldest:
            frames.popleft()

    def annotate(self, event: wire.Event) -> wire.Event:
        """``event`` with its ``raw_ad`` filled in where the tracked frames give one."""
        if isinstance(event, wire.SaleEvent) and event.raw_ad is None:
            settled = event.settled_mg
            ad = self._median(event.ts_ms - event.duration_ms, event.ts_ms,
                              lambda w: w == settled)
        elif isinstance(event, wire.ZeroCheckEvent) and event.raw_ad is None:
            mean, spread = event.mean_mg, event.spread_mg
            ad = self._median(event.ts_ms - event.duration_ms, event.ts_ms,
                              lambda w: abs(w - mean) <= spread)
        else:
            return event
        return event if ad is None else msgspec.structs.replace(event, raw_ad=ad)

    def _median(self, lo_ms: int, hi_ms: int, weight_ok: Callable[[int], bool]) -> int | None:
        ads = []
        for r in reversed(self._frames):  # newest first: stop at the window's start
            if r.t_ms < lo_ms:
                break
            if r.t_ms <= hi_ms and r.stable is not False and weight_ok(r.weight_mg):
                ads.append(r.raw_ad)
        return statistics.median_low(ads) if ads else None

