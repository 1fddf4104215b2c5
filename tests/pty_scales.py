"""Scales on ptys for tests: fed by hand (``PtyScale``) or playing a load script up to
gates the test opens once what it waits for has happened (``GatedScale``).

Used by the edge agent's tests and the end-to-end tests; the agent opens ``path`` as
it would ``/dev/ttyUSB0``.
"""

from __future__ import annotations

import os
import threading
import time
import tty

from support import wait_until

from device_profiles.codecs import Codec, WeightFrame
from simulators.script import Load, timeline


class PtyScale:
    """A pty fed by hand: the test writes frames with a codec's ``encode`` in real time."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()

    def play(self, frames: list[tuple[int, WeightFrame]]) -> None:
        """Write ``(t_ms, frame)`` pairs at their times, in a thread. A writer that falls
        behind (a loaded machine) shifts the rest of the script rather than bursting to
        catch up: the frames are never closer together than the script puts them."""

        def run() -> None:
            t0 = time.monotonic()
            for t_ms, frame in frames:
                delay = t0 + t_ms / 1000 - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                t0 -= min(delay, 0.0)  # late: the script starts that much later
                try:
                    os.write(self.master, self.codec.encode(frame))
                except BlockingIOError:
                    pass
                except OSError:
                    return
            self.done.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class GatedScale(PtyScale):
    """A continuous-output scale on a pty playing a load script up to a gate.

    At the gate it keeps sending the gate's frame (an empty pan stays empty, goods stay
    on the pan) until the test moves the gate on: the script waits for what the test
    waits for (an agent reading, a sale committed, a broker stopped), however slowly the
    machine runs, instead of the test racing a script that plays in wall-clock time.
    """

    PHASES = ("idle", "placed", "settled", "removal", "end")

    def __init__(self, codec: Codec, loads: list[Load], *, e_mg: int, rate_hz: float,
                 lead_ms: int = 1000) -> None:
        super().__init__(codec)
        lead = Load(0, idle_ms=lead_ms, settle_ms=0, hold_ms=0, remove_ms=0)
        self.frames = [f for _, f in timeline([lead, *loads], e_mg=e_mg, frame_rate_hz=rate_hz)]
        self.loads, self.lead_ms = loads, lead_ms
        self.period_s = 1.0 / rate_hz
        self.pos = 0  # index of the frame being sent
        self.gate = 0

    def at(self, i: int, phase: str, offset_ms: int = 0) -> int:
        """The frame index where load ``i`` reaches ``phase`` (``idle``: its empty pan
        begins; ``placed``, ``settled``, ``removal``: goods put on, settled, lifted;
        ``end``: the pan is empty again), moved by ``offset_ms``."""
        # the frame counts of the phases, as simulators.script.timeline makes them: each
        # phase ends at its start + its duration, with times running on in steps
        step, t, n = self.period_s * 1000, 0.0, 0
        starts: list[int] = []
        durations = [self.lead_ms] + [d for ld in self.loads
                                      for d in (ld.idle_ms, ld.settle_ms, ld.hold_ms, ld.remove_ms)]
        for d in durations:
            starts.append(n)
            end = t + d
            while t < end:
                n += 1
                t += step
        starts.append(n)  # the tail: empty pan
        k = 1 + 4 * i + self.PHASES.index(phase)
        return max(0, min(starts[k] + round(offset_ms / step), len(self.frames) - 1))

    def start(self, gate: int = 0) -> None:
        """Start sending, up to frame ``gate`` (see :meth:`open_to`)."""
        self.open_to(gate)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def open_to(self, gate: int) -> None:
        """Play on up to frame ``gate`` (``len(frames)``: to the end) and hold there."""
        assert gate >= self.pos, "a scale does not play backwards"
        self.gate = min(gate, len(self.frames) - 1)

    def wait_at(self, gate: int, timeout_s: float = 120) -> None:
        """Open the gate to ``gate`` and wait until the scale holds there."""
        self.open_to(gate)
        wait_until(lambda: self.pos == self.gate, timeout_s, 0.02, what=f"the scale at {gate}")

    def drain(self) -> None:
        """Drop what the scale sent while no agent read (as a port opened anew would)."""
        os.set_blocking(self.slave, False)
        try:
            while os.read(self.slave, 4096):
                pass
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(self.slave, True)

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                os.write(self.master, self.codec.encode(self.frames[self.pos]))
            except BlockingIOError:
                pass  # nobody reads: the pty is full, as a real line drops
            except OSError:
                return
            if self.pos < self.gate:
                self.pos += 1
            elif self.pos == len(self.frames) - 1:
                self.done.set()
            # a late writer does not burst: a real scale sends at its rate
            due = max(due + self.period_s, time.monotonic())
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
