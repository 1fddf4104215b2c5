"""Reading one device: its frame source polled in turns, every poll handed to listeners.

In the manner of python-can's ``Bus`` and ``Notifier``: the frame source (a serial port,
or a Modbus slave fed by its line's bus) yields the device's frames; a
:class:`FrameReader` polls it and tells its listeners (:class:`Listener`), each of which
does one thing with them (``edge_agent.listeners``: the weighing state machine, raw AD,
the fair-scale station, counters, gaps, samples).

Rules:

* One :meth:`FrameReader.turn`: wait out the pace (a serial source is read every
  ``read_interval_ms``, a request/response one asked every ``link.poll_interval_ms``;
  Modbus sources pace themselves), call every listener's ``before_poll``, poll the
  source for at most 0.25 s, count (and, rate-limited, log) its frame errors, then hand
  the poll over: ``on_poll`` to every listener, each frame to every listener in turn
  (``on_frame``), and ``on_poll_done`` to every listener, also after a poll that
  brought no frame. Listeners are called in the order given.
* Frame times: frames read in one burst (the reader was late) are back-dated at the
  line's nominal output rate (``link.output_rate_hz``), never earlier than the
  previous frame.
* A frame is *plausible* when the device flags it overloaded or underloaded or the state
  machine's parameters find nothing wrong with its weight (beyond Max + 9 e, ...). An
  implausible frame is still fed to the state machine, which drops it and reports the
  fault, but it is no sample and no raw AD point.
* A Modbus poll's ``extras`` (raw AD, calibration, counters, identity) belong to the
  poll's last frame: that frame carries ``raw_ad``, the poll carries ``extras``.
* Nothing here catches: an exception in the source or a listener ends the turn and the
  worker's supervisor (``edge_agent.supervision``) restarts the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from device_profiles.codecs import FrameError, WeightFrame
from edge_agent.lograte import WarningGate
from edge_agent.statemachine import Params
from edge_agent.transport import FrameSource, Polled

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.25  # the longest a turn waits for the source


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class WorkerStats:
    """One device's counters, as :meth:`ScaleWorker.status` reports them."""

    state: str = "starting"
    frames: int = 0
    frame_errors: int = 0
    events: int = 0
    restarts: int = 0
    last_error: str = ""
    last_frame_ms: int = 0
    no_data_periods: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    scan_errors: int = 0  # scanned lines that name no purchase (fair-scale station)
    scan_errors_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TimedFrame:
    """A frame with the time the reader gives it."""

    t_ms: int
    frame: WeightFrame
    plausible: bool
    raw_ad: int | None = None  # the source's raw AD count, on a poll's last frame only


@dataclass(frozen=True, slots=True)
class Poll:
    """What one turn read: its frames, timed, and the source's ``extras`` (Modbus)."""

    t_read_ms: int
    prev_frame_ms: int  # the time of the last frame before this poll (0: none yet)
    frames: list[TimedFrame]
    extras: dict[str, Any] | None = None


class Listener:
    """Something done with a device's frames; every hook does nothing unless overridden."""

    def before_poll(self) -> None:
        """Once per turn, before the source is polled."""

    def on_poll(self, poll: Poll) -> None:
        """A poll, before its frames are handed out."""

    def on_frame(self, tf: TimedFrame) -> None:
        """One frame, in order."""

    def on_poll_done(self, poll: Poll) -> None:
        """A poll, after its frames (also a poll without frames)."""


class FrameReader:
    """Polls one device's source and hands every poll to its listeners (module rules)."""

    def __init__(
        self, source: FrameSource, listeners: Sequence[Listener], *, device: str,
        params: Params, stats: WorkerStats, output_rate_hz: float, pace_s: float = 0.0,
        error_hint: str = "",
    ) -> None:
        self.source = source
        self.listeners = list(listeners)
        self.device = device
        self.params = params
        self.stats = stats
        self.period_ms = 1000.0 / output_rate_hz
        self.pace_s = pace_s
        self.error_hint = error_hint  # what to check when frames keep being rejected
        self._next_read = 0.0
        self._frame_warnings = WarningGate()  # a wrong profile rejects every frame

    def restart(self, source: FrameSource, *, pace_s: float) -> None:
        """A new run of the worker: the source to read (it may have been replaced) and its
        pace; the first turn reads at once."""
        self.source = source
        self.pace_s = pace_s
        self._next_read = 0.0

    def turn(self, stop: threading.Event) -> Poll | None:
        """Read once and tell the listeners; ``None`` if ``stop`` was set meanwhile."""
        if self.pace_s:
            wait = self._next_read - time.monotonic()
            if wait > 0 and stop.wait(wait):
                return None
            self._next_read = time.monotonic() + self.pace_s
        for listener in self.listeners:
            listener.before_poll()
        polled = self.source.poll(POLL_TIMEOUT_S)
        t_read = now_ms()
        for err in polled.errors:
            self._frame_error(err)
        poll = self._timed(polled, t_read)
        for listener in self.listeners:
            listener.on_poll(poll)
        for tf in poll.frames:
            self.stats.frames += 1
            self.stats.last_frame_ms = tf.t_ms
            for listener in self.listeners:
                listener.on_frame(tf)
        for listener in self.listeners:
            listener.on_poll_done(poll)
        return poll

    def _timed(self, polled: Polled, t_read: int) -> Poll:
        extras: dict[str, Any] | None = getattr(self.source, "extras", None)
        raw_ad = (extras or {}).get("raw_ad")
        n, last = len(polled.frames), self.stats.last_frame_ms
        frames, t_prev = [], last
        for i, frame in enumerate(polled.frames):
            t = max(t_read - int((n - 1 - i) * self.period_ms), t_prev)
            t_prev = t
            plausible = (frame.overload or frame.underload
                         or self.params.implausible(frame.weight_mg) is None)
            frames.append(TimedFrame(t, frame, plausible, raw_ad if i == n - 1 else None))
        return Poll(t_read, last, frames, extras if n else None)

    def _frame_error(self, err: FrameError) -> None:
        self.stats.frame_errors += 1
        reason = err.reason.split(" (")[0]
        self.stats.errors_by_reason[reason] = self.stats.errors_by_reason.get(reason, 0) + 1
        held = self._frame_warnings.allow(time.monotonic())
        if held is None:
            return  # counted above; one log line per interval is enough
        more = f" (and {held} more since the last warning)" if held else ""
        log.warning("%s: rejected %d bytes at offset %d: %s%s; %s", self.device,
                    err.length, err.offset, err.reason, more, self.error_hint)
