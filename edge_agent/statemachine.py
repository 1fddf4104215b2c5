"""The weighing state machine: from a stream of frames to weighing events.

Pure (time is a parameter, no I/O), one instance per scale (architecture.md §4).

States::

    EMPTY ──load > threshold──▶ LOADING ──software window settled──▶ SETTLED
      ▲                            ▲  │                                  │
      │                            │  └──────── reading moves ◀──────────┘
      └──── pan back below threshold (unloaded): the load's event is emitted ────┘

* A load begins when the reading exceeds ``load_threshold_e`` × e and ends when it
  falls back below it. One event is emitted per load, at unloading, so that the
  weight the pan finally settled to is known.
* **Software stability**: every reading of the last ``window_ms`` lies within
  ``band_e`` × e of the others. Where the device signals stability its flag must
  agree; no existing gateway checks stability in software (domain.md §5).
* **Commit**: a transaction / print frame (``print_request``) commits the sale at its
  weight; without one, the last settled plateau of the load is the committed weight.
* **Unsettled commit** (impact cheat, domain.md §4): a commit taken while the device
  or the software judged the pan moving, or above the following settled weight by
  more than 1 e.
* **Zero checks**: each idle (empty-pan) period of at least ``zero_window_ms`` yields
  its mean and spread, so the server can see a preset base or drift.

Events are returned with ``seq = 0``; the outbox assigns the real sequence number.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from device_profiles.codecs import WeightFrame
from weighing import wire


class Phase(StrEnum):
    EMPTY = "empty"
    LOADING = "loading"
    SETTLED = "settled"


@dataclass(frozen=True, slots=True)
class Params:
    e_mg: int
    window_ms: int = 400
    band_e: float = 1.0
    load_threshold_e: int = 10
    zero_window_ms: int = 2000

    @property
    def band_mg(self) -> int:
        return int(self.band_e * self.e_mg)

    @property
    def threshold_mg(self) -> int:
        return self.load_threshold_e * self.e_mg


@dataclass
class _Load:
    start_ms: int
    peak_mg: int = 0
    settled_mg: int | None = None
    settled_device_stable: bool | None = None
    tare_mg: int = 0
    commit: WeightFrame | None = None
    commit_stable_software: bool = False
    settled_after_commit_mg: int | None = None


@dataclass
class WeighingStateMachine:
    """Feed ``(t_ms, frame)`` pairs; get the events they complete."""

    params: Params
    phase: Phase = Phase.EMPTY
    _window: deque[tuple[int, int]] = field(default_factory=deque)
    _load: _Load | None = None
    _idle_start_ms: int | None = None
    _idle_sum: int = 0
    _idle_sq: int = 0
    _idle_n: int = 0
    _idle_min: int = 0
    _idle_max: int = 0
    frames_seen: int = 0

    def feed(self, t_ms: int, frame: WeightFrame) -> list[wire.Event]:
        """Advance by one frame; return the events it completes (usually none)."""
        self.frames_seen += 1
        p = self.params
        w = frame.weight_mg
        out: list[wire.Event] = []
        if frame.overload or frame.underload:
            self._window.clear()
            return out
        self._window.append((t_ms, w))
        while self._window and self._window[0][0] < t_ms - p.window_ms:
            self._window.popleft()
        sw_stable = self._software_stable(t_ms)

        if w <= p.threshold_mg:
            if self._load is not None:
                out.extend(self._finish_load(t_ms))
            self.phase = Phase.EMPTY
            self._idle(t_ms, w)
            return out

        # loaded
        if self._load is None:
            out.extend(self._end_idle(t_ms))
            self._load = _Load(start_ms=t_ms)
            self.phase = Phase.LOADING
        load = self._load
        load.peak_mg = max(load.peak_mg, w)
        if frame.tare_mg:
            load.tare_mg = frame.tare_mg
        device_ok = frame.stable is not False
        if sw_stable and device_ok:
            self.phase = Phase.SETTLED
            load.settled_mg = w
            load.settled_device_stable = frame.stable
            if load.commit is not None:
                load.settled_after_commit_mg = w
        else:
            self.phase = Phase.LOADING
        if frame.print_request and load.commit is None:
            load.commit = frame
            load.commit_stable_software = sw_stable
        return out

    def flush(self, t_ms: int) -> list[wire.Event]:
        """End of stream: emit what a pending load or idle period amounts to."""
        if self._load is not None:
            return self._finish_load(t_ms)
        return self._end_idle(t_ms)

    # -- internals --------------------------------------------------------------------

    def _software_stable(self, t_ms: int) -> bool:
        win = self._window
        if len(win) < 2 or t_ms - win[0][0] < self.params.window_ms * 0.9:
            return False
        ws = [w for _, w in win]
        return max(ws) - min(ws) <= self.params.band_mg

    def _finish_load(self, t_ms: int) -> list[wire.Event]:
        load = self._load
        self._load = None
        assert load is not None
        e = self.params.e_mg
        duration = t_ms - load.start_ms
        if load.commit is not None:
            c = load.commit
            settled = load.settled_after_commit_mg
            if settled is None:
                settled = load.settled_mg if load.settled_mg is not None else c.weight_mg
            stable_device = c.stable is not False
            unsettled = (
                not stable_device
                or not load.commit_stable_software
                or c.weight_mg > settled + e
            )
            return [
                wire.SaleEvent(
                    seq=0, ts_ms=t_ms, net_mg=c.weight_mg, settled_mg=settled,
                    peak_mg=load.peak_mg, tare_mg=c.tare_mg or load.tare_mg,
                    stable_device=stable_device, stable_software=load.commit_stable_software,
                    unsettled_commit=unsettled, duration_ms=duration,
                    unit_price_fen_per_kg=c.unit_price_fen_per_kg, amount_fen=c.amount_fen,
                    plu=c.plu, trace_code=c.trace_code,
                )
            ]
        if load.settled_mg is None:
            return [
                wire.FaultEvent(
                    seq=0, ts_ms=t_ms, code="unsettled-load",
                    detail=f"load of peak {load.peak_mg} mg never settled in {duration} ms",
                )
            ]
        return [
            wire.SaleEvent(
                seq=0, ts_ms=t_ms, net_mg=load.settled_mg, settled_mg=load.settled_mg,
                peak_mg=load.peak_mg, tare_mg=load.tare_mg,
                stable_device=load.settled_device_stable is not False, stable_software=True,
                duration_ms=duration,
            )
        ]

    def _idle(self, t_ms: int, w: int) -> None:
        if self._idle_start_ms is None:
            self._idle_start_ms = t_ms
            self._idle_sum = self._idle_sq = self._idle_n = 0
            self._idle_min = self._idle_max = w
        self._idle_sum += w
        self._idle_n += 1
        self._idle_min = min(self._idle_min, w)
        self._idle_max = max(self._idle_max, w)

    def _end_idle(self, t_ms: int) -> list[wire.Event]:
        start, n = self._idle_start_ms, self._idle_n
        self._idle_start_ms = None
        if start is None or n == 0 or t_ms - start < self.params.zero_window_ms:
            return []
        return [
            wire.ZeroCheckEvent(
                seq=0, ts_ms=t_ms, mean_mg=(2 * self._idle_sum + n) // (2 * n),
                spread_mg=self._idle_max - self._idle_min, n=n, duration_ms=t_ms - start,
            )
        ]
