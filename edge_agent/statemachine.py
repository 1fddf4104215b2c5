"""The weighing state machine: from a stream of frames to weighing events.

One module (about 450 lines) on purpose: one class whose states must be read together.
Loading, settling, commit, unsettled commit, zero checks, faults, plausibility and the
checkpoint all act on the same stability window and the same unfinished load, and each
transition is only right given the others; split apart, a rule would be read without the
state it changes.

Pure (time is a parameter, no I/O), one instance per scale (architecture.md §4).

States::

    EMPTY ──load > threshold──▶ LOADING ──software window settled──▶ SETTLED
      ▲                            ▲  │                                  │
      │                            │  └──────── reading moves ◀──────────┘
      └──── pan back below threshold (unloaded): the load's event is emitted ────┘

* A load begins when the reading exceeds ``load_threshold_e`` × e and ends when it
  falls back below it. One event is emitted per commit, at unloading, so that the
  weight the pan finally settled to is known.
* **e** is the scale's e, or on a multi-range / multi-interval scale the e of the
  range the reading is in (``Params.ranges``): the stability band and the "above the
  settled weight by more than 1 e" test use it; the load threshold uses the first
  (finest) range's e, since it sits near zero.
* **Software stability**: every reading of the last ``window_ms`` lies within
  ``band_e`` × e of the others. Where the device signals stability its flag must
  agree; no existing gateway checks stability in software (domain.md §5). The window
  counts as filled when its readings span 90 % of ``window_ms``, or when it holds 90 %
  of the ``window_frames`` the device sends in that time: a reader that was late gets
  a burst of frames whose times are squeezed together, which must not hide a plateau.
* **Commit**: a transaction / print frame (``print_request``) commits the sale at its
  weight; without one, the last settled plateau of the load is the committed weight.
  The print flag is edge-triggered (a flag held for several frames is one commit); a
  second print in the same load counts as a new sale only after the pan moved in
  between (goods added or swapped without emptying the pan): the first is then emitted.
* **Unsettled commit** (impact cheat, domain.md §4): a commit taken while the device
  or the software judged the pan moving, or above the following settled weight by
  more than 1 e.
* **Zero checks**: each idle (empty-pan) period of at least ``zero_window_ms`` yields
  the mean and spread of its device-stable readings (so the server sees a preset base
  or drift); a long idle period reports every ``zero_report_ms``.
* **Overload / underload**: one ``FaultEvent`` per episode; such frames carry no weight.
* **Plausibility** (issue 15): where the parameters know the scale's Max, a reading above
  Max + 9 e (the display blanks there: ``weighing.metrology.indication_limit_mg``, OIML
  R76-1 4.2.3 = JJG 539), below −Max, or not a whole number of the display interval (d,
  else any range's e) is a garbled or forged frame, not a weighing: it is dropped before
  it can reach the stability window, a load's peak or a sale, and reported as one
  ``implausible-reading`` fault per episode (at most one per ``zero_report_ms``; the
  detail counts the frames dropped since the last report). A codec check cannot do this:
  ``ST,GS,+1250250kg`` is a well-formed A&D line, only the scale's Max says it is absurd.
* **Checkpoint**: :meth:`checkpoint` serialises an unfinished load (settled weight,
  peak, commit) so that an agent killed mid-load can :meth:`restore` it and still emit
  the sale: the agent stores it with the event that completes the load, atomically.

Events are returned with ``seq = 0``; the outbox assigns the real sequence number.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

import msgspec

from device_profiles.codecs import WeightFrame
from weighing import wire
from weighing.metrology import indication_limit_mg


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
    zero_report_ms: int = 60_000
    #: ``(max_mg, e_mg)`` of each range, ascending; empty for a single-range scale
    ranges: tuple[tuple[int, int], ...] = ()
    #: readings that fill the window at the device's nominal rate (0: judge by time only)
    window_frames: int = 0
    #: the scale's Max; None: no plausibility check (readings are taken as they come)
    max_mg: int | None = None
    #: display interval d where it differs from e (classes I and II); None: d = e
    d_mg: int | None = None

    def implausible(self, weight_mg: int) -> str | None:
        """Why a reading cannot come from this scale, or None (see the module rules)."""
        if self.max_mg is None:
            return None
        limit = indication_limit_mg(self.max_mg, self.e_mg)
        if weight_mg > limit:
            return (f"reading {weight_mg} mg above Max + 9 e = {limit} mg "
                    "(OIML R76-1 4.2.3: the display blanks there)")
        if weight_mg < -self.max_mg:
            return f"reading {weight_mg} mg below −Max = {-self.max_mg} mg"
        steps = (self.d_mg,) if self.d_mg else (self.e_mg, *(e for _, e in self.ranges))
        if all(weight_mg % s for s in steps):
            return (f"reading {weight_mg} mg is not a whole number of the display interval "
                    f"({' or '.join(f'{s} mg' for s in sorted(set(steps)))})")
        return None

    def e_at(self, weight_mg: int) -> int:
        """The e of the range a reading is in (the last range's beyond Max)."""
        w = abs(weight_mg)
        for max_mg, e_mg in self.ranges:
            if w <= max_mg:
                return e_mg
        return self.e_mg

    def band_at(self, weight_mg: int) -> int:
        return int(self.band_e * self.e_at(weight_mg))

    @property
    def band_mg(self) -> int:
        return int(self.band_e * self.e_mg)

    @property
    def threshold_mg(self) -> int:
        e = self.ranges[0][1] if self.ranges else self.e_mg
        return self.load_threshold_e * e


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
    moved_since_commit: bool = False
    restored: bool = False


class _Checkpoint(msgspec.Struct, frozen=True):
    v: int
    load: _Load


_CHECKPOINT_V = 1


@dataclass
class WeighingStateMachine:
    """Feed ``(t_ms, frame)`` pairs; get the events they complete."""

    params: Params
    phase: Phase = Phase.EMPTY
    _window: deque[tuple[int, int]] = field(default_factory=deque)
    _load: _Load | None = None
    _idle_start_ms: int | None = None
    _idle_sum: int = 0
    _idle_n: int = 0
    _idle_min: int = 0
    _idle_max: int = 0
    _last_print: bool = False
    _overload: bool = False
    _last_record: tuple[object, ...] | None = None
    frames_seen: int = 0
    #: frames dropped as implausible (all time), and why the last frame was, if it was
    frames_rejected: int = 0
    last_rejected: str | None = None
    _rejected_unreported: int = 0
    _rejected_run: bool = False
    _rejected_report_ms: int | None = None
    #: bumped whenever the checkpoint's content changes (the agent persists it then)
    checkpoint_version: int = 0

    def feed(self, t_ms: int, frame: WeightFrame) -> list[wire.Event]:
        """Advance by one frame; return the events it completes (usually none)."""
        self.frames_seen += 1
        p = self.params
        w = frame.weight_mg
        out: list[wire.Event] = []
        if frame.overload or frame.underload:
            self._window.clear()
            if not self._overload:
                self._overload = True
                what = "overload" if frame.overload else "underload"
                out.append(wire.FaultEvent(seq=0, ts_ms=t_ms, code=what,
                                           detail=f"device signalled {what}"))
            return out
        self._overload = False
        self.last_rejected = why = p.implausible(w)
        if why is not None:
            return self._reject(t_ms, why)
        self._rejected_run = False
        if _is_record(frame):
            return self._record(t_ms, frame)
        self._window.append((t_ms, w))
        while self._window and self._window[0][0] < t_ms - p.window_ms:
            self._window.popleft()
        sw_stable = self._software_stable(t_ms)

        if self._load is not None and self._load.restored:
            out.extend(self._resume(t_ms, w))

        if w <= p.threshold_mg:
            if self._load is not None:
                out.extend(self._finish_load(t_ms))
            self.phase = Phase.EMPTY
            self._last_print = False
            out.extend(self._idle(t_ms, w, frame.stable))
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
        if sw_stable and frame.stable is not False:
            self.phase = Phase.SETTLED
            if load.settled_mg != w:
                self.checkpoint_version += 1
            load.settled_mg = w
            load.settled_device_stable = frame.stable
            if load.commit is not None and not frame.print_request:
                if load.settled_after_commit_mg != w:
                    self.checkpoint_version += 1
                load.settled_after_commit_mg = w
        else:
            self.phase = Phase.LOADING
            if load.commit is not None and not frame.print_request:
                load.moved_since_commit = True
        if frame.print_request and not self._last_print:
            if load.commit is not None and load.moved_since_commit:
                out.extend(self._emit_commit(t_ms, load))  # a second sale in one load
                load.commit = None
            if load.commit is None:
                load.commit = frame
                load.commit_stable_software = sw_stable
                load.settled_after_commit_mg = None
                load.moved_since_commit = False
                self.checkpoint_version += 1
        self._last_print = frame.print_request
        return out

    def flush(self, t_ms: int) -> list[wire.Event]:
        """End of stream: emit what a pending load or idle period amounts to."""
        if self._load is not None:
            return self._finish_load(t_ms)
        return self._end_idle(t_ms)

    def _reject(self, t_ms: int, why: str) -> list[wire.Event]:
        """An implausible frame: dropped; one fault per episode, at most one per
        ``zero_report_ms`` (a stream of garbage must not flood the outbox)."""
        self.frames_rejected += 1
        self._rejected_unreported += 1
        first = not self._rejected_run
        self._rejected_run = True
        last = self._rejected_report_ms
        if not first or (last is not None and t_ms - last < self.params.zero_report_ms):
            return []
        n, self._rejected_unreported = self._rejected_unreported, 0
        self._rejected_report_ms = t_ms
        return [wire.FaultEvent(
            seq=0, ts_ms=t_ms, code="implausible-reading",
            detail=f"{why}; frame dropped ({n} dropped since the last report)"[:1024])]

    # -- checkpoint ---------------------------------------------------------------------

    def checkpoint(self) -> bytes | None:
        """The unfinished load, serialised; ``None`` when the pan is empty."""
        if self._load is None:
            return None
        return msgspec.json.encode(_Checkpoint(_CHECKPOINT_V, self._load))

    def restore(self, data: bytes) -> bool:
        """Take up an unfinished load from :meth:`checkpoint`; False if unusable.

        On the next frame: an empty pan finishes the load (its event is emitted), a
        reading near the load's settled weight continues it, any other reading means the
        pan changed while nobody watched: the load is emitted and a new one begins.
        """
        try:
            cp = msgspec.json.decode(data, type=_Checkpoint)
        except msgspec.DecodeError:
            return False
        if cp.v != _CHECKPOINT_V:
            return False
        self._load = cp.load
        self._load.restored = True
        self.phase = Phase.LOADING
        return True

    def _resume(self, t_ms: int, w: int) -> list[wire.Event]:
        load = self._load
        assert load is not None
        load.restored = False
        ref = load.settled_after_commit_mg or load.settled_mg
        if w <= self.params.threshold_mg or ref is None:
            return []  # finished (or continued, if never settled) by the normal path
        if abs(w - ref) <= 2 * self.params.band_at(ref):
            return []
        events = self._finish_load(t_ms)
        self._window.clear()
        self._window.append((t_ms, w))
        return events

    # -- internals --------------------------------------------------------------------

    def _software_stable(self, t_ms: int) -> bool:
        win = self._window
        p = self.params
        if len(win) < 2:
            return False
        if t_ms - win[0][0] >= p.window_ms * 0.9 and self._within_band(win, 0):
            return True
        # by count: the last frames the device sends in a window (times may be squeezed)
        k = max(2, int(p.window_frames * 0.9)) if p.window_frames else 0
        return bool(k) and len(win) >= k and self._within_band(win, len(win) - k)

    def _within_band(self, win: deque[tuple[int, int]], start: int) -> bool:
        lo = hi = win[start][1]
        for i in range(start + 1, len(win)):
            w = win[i][1]
            if w < lo:
                lo = w
            elif w > hi:
                hi = w
        return hi - lo <= self.params.band_at(hi)

    def _finish_load(self, t_ms: int) -> list[wire.Event]:
        load = self._load
        self._load = None
        assert load is not None
        self.checkpoint_version += 1
        if load.commit is not None:
            return self._emit_commit(t_ms, load)
        duration = t_ms - load.start_ms
        if load.settled_mg is None:
            return [
                wire.FaultEvent(
                    seq=0, ts_ms=t_ms, code="unsettled-load",
                    detail=f"load of peak {load.peak_mg} mg never settled in {duration} ms",
                    duration_ms=max(duration, 0),
                )
            ]
        return [
            wire.SaleEvent(
                seq=0, ts_ms=t_ms, net_mg=load.settled_mg, settled_mg=load.settled_mg,
                peak_mg=max(load.peak_mg, load.settled_mg), tare_mg=load.tare_mg,
                stable_device=load.settled_device_stable is not False, stable_software=True,
                duration_ms=max(duration, 0),
            )
        ]

    def _emit_commit(self, t_ms: int, load: _Load) -> list[wire.Event]:
        c = load.commit
        assert c is not None
        settled = load.settled_after_commit_mg
        if settled is None:
            settled = load.settled_mg if load.settled_mg is not None else c.weight_mg
        stable_device = c.stable is not False
        unsettled = (
            not stable_device
            or not load.commit_stable_software
            or c.weight_mg > settled + self.params.e_at(settled)
        )
        return [
            wire.SaleEvent(
                seq=0, ts_ms=t_ms, net_mg=c.weight_mg, settled_mg=settled,
                peak_mg=max(load.peak_mg, c.weight_mg), tare_mg=c.tare_mg or load.tare_mg,
                stable_device=stable_device, stable_software=load.commit_stable_software,
                unsettled_commit=unsettled, duration_ms=max(t_ms - load.start_ms, 0),
                unit_price_fen_per_kg=c.unit_price_fen_per_kg, amount_fen=c.amount_fen,
                plu=c.plu, trace_code=c.trace_code,
            )
        ]

    def _record(self, t_ms: int, frame: WeightFrame) -> list[wire.Event]:
        """A transaction record (trace-record line, printed label) is a sale by itself.

        Traceability and label scales report each committed sale as one record, often with
        nothing in between; the plateau logic does not apply. A record repeated unchanged
        (the device re-sends its last one) is the same sale; an empty record (no weight, no
        amount) is an idle pan.
        """
        w = frame.weight_mg
        if w <= self.params.threshold_mg and not frame.amount_fen:
            self._last_record = None
            return self._idle(t_ms, w, frame.stable)
        key = (frame.trace_code, frame.plu, w, frame.tare_mg, frame.unit_price_fen_per_kg,
               frame.amount_fen, frame.ts_text)
        if key == self._last_record:
            return []
        self._last_record = key
        out = self._end_idle(t_ms)
        stable = frame.stable is not False
        out.append(wire.SaleEvent(
            seq=0, ts_ms=t_ms, net_mg=w, settled_mg=w, peak_mg=w, tare_mg=frame.tare_mg or 0,
            stable_device=stable, stable_software=False, unsettled_commit=not stable,
            unit_price_fen_per_kg=frame.unit_price_fen_per_kg, amount_fen=frame.amount_fen,
            plu=frame.plu, trace_code=frame.trace_code))
        return out

    def _idle(self, t_ms: int, w: int, stable: bool | None) -> list[wire.Event]:
        out: list[wire.Event] = []
        if self._idle_start_ms is not None and t_ms - self._idle_start_ms >= (
            self.params.zero_report_ms
        ):
            out.extend(self._end_idle(t_ms))  # a long idle period reports periodically
        if self._idle_start_ms is None:
            self._idle_start_ms = t_ms
            self._idle_sum = self._idle_n = 0
        if stable is False:
            return out  # a moving empty pan (goods just lifted off) says nothing of zero
        if self._idle_n == 0:
            self._idle_min = self._idle_max = w
        self._idle_sum += w
        self._idle_n += 1
        self._idle_min = min(self._idle_min, w)
        self._idle_max = max(self._idle_max, w)
        return out

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


def _is_record(frame: WeightFrame) -> bool:
    """A committed transaction record rather than a reading: it names the goods or the
    receipt (PLU or traceability code) and is flagged as printed."""
    return frame.print_request and (frame.trace_code is not None or frame.plu is not None)
