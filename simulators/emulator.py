"""Serial scale emulator: a profile's codec speaks a load script into a pty.

The emulator opens a pseudo-terminal, gives out the path of its device end (what an
agent opens, like ``/dev/ttyUSB0``), and plays a script in real time through the
encode side of the profile's codec, so emulated and real scales share one codec.

* Continuous-output protocols: one frame per tick at the profile's frame rate.
* Request/response protocols (``link.mode = "request"``): the emulator parses host
  commands with the codec's ``decode_command`` and answers a weight request with the
  current reading.
* Fault injection (``Faults``): bad checksums, garbage between frames, frames split
  across writes, dropped bytes, noise and zero drift; counted in ``stats``.
"""

from __future__ import annotations

import os
import random
import threading
import time
import tty
from dataclasses import dataclass, field, replace

from device_profiles.codecs import Codec, WeightFrame, make_codec
from device_profiles.schema import Profile
from simulators.script import Load, timeline


@dataclass(frozen=True)
class Faults:
    """Probabilities per frame (0..1) and magnitudes of injected faults."""

    bad_checksum: float = 0.0
    garbage: float = 0.0
    split: float = 0.0
    drop_bytes: float = 0.0
    noise_e: float = 0.0  # uniform noise of ± this many e on readings in motion
    zero_drift_e_per_min: float = 0.0


@dataclass
class EmulatorStats:
    frames: int = 0
    bytes: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    commands: int = 0
    dropped_writes: int = 0

    def count(self, what: str) -> None:
        self.faults[what] = self.faults.get(what, 0) + 1


def close_fds(*fds: int) -> None:
    """Close pty descriptors that may already be closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class SerialEmulator:
    """Plays ``loads`` on a pty; ``path`` is the device end to open."""

    def __init__(
        self,
        profile: Profile,
        loads: list[Load],
        *,
        faults: Faults | None = None,
        seed: int = 1,
        lead_ms: int = 1500,
        loop: bool = False,
        speed: float = 1.0,
    ) -> None:
        self.profile = profile
        self.loads = loads
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.lead_ms = lead_ms
        self.loop = loop
        self.speed = speed
        self.codec: Codec = make_codec(profile.protocol, profile.codec)
        self.stats = EmulatorStats()
        self.done = threading.Event()
        self._stop = threading.Event()
        # Frames state the unit the scale displays: MT-SICS writes the frame's unit with
        # the profile's decimals (a 0.01 g balance cannot encode kg frames); an A12
        # tonne display is still written from kg frames.
        unit = str(profile.codec.get("unit", "kg"))
        self._unit = "kg" if unit == "t" else unit
        self._current = WeightFrame(weight_mg=0, stable=True, tare_mg=0, zero=True,
                                    unit=self._unit)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no line discipline: bytes pass unchanged
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> SerialEmulator:
        self._thread = threading.Thread(target=self._play, name="scale-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        close_fds(self._master, self._slave)

    def __enter__(self) -> SerialEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- playing ----------------------------------------------------------------------

    def _play(self) -> None:
        request_mode = self.profile.link.mode == "request"
        e = self.profile.metrology.e_mg
        rate = self.profile.emulator.frame_rate_hz
        while True:
            t0 = time.monotonic()
            for t_ms, frame in timeline(
                [Load(0, idle_ms=self.lead_ms, settle_ms=0, hold_ms=0, remove_ms=0), *self.loads],
                e_mg=e, frame_rate_hz=rate,
            ):
                if self._stop.is_set():
                    return
                due = t0 + t_ms / 1000 / self.speed
                frame = self._perturb(replace(frame, unit=self._unit), t_ms, e)
                while True:
                    if request_mode:
                        self._answer_requests()
                    delay = due - time.monotonic()
                    if delay <= 0 or self._stop.is_set():
                        break
                    time.sleep(min(delay, 0.005 if request_mode else delay))
                self._current = frame
                if not request_mode:
                    self._send(self.codec.encode(frame))
            if not self.loop:
                break
        self.done.set()
        # keep answering requests / keep the pty open until stopped
        while not self._stop.is_set():
            if request_mode:
                self._answer_requests()
            time.sleep(0.005)

    def _perturb(self, frame: WeightFrame, t_ms: int, e: int) -> WeightFrame:
        f = self.faults
        w = frame.weight_mg
        if f.zero_drift_e_per_min:
            w += int(f.zero_drift_e_per_min * e * t_ms / 60_000) // e * e
        if f.noise_e and frame.stable is False:
            w += self.rng.randint(-int(f.noise_e), int(f.noise_e)) * e
        return frame if w == frame.weight_mg else replace(frame, weight_mg=w, zero=w == 0)

    def _answer_requests(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        buf = data
        while buf:
            used, command = self.codec.decode_command(buf)
            if used == 0:
                break
            buf = buf[used:]
            if command is not None:
                self.stats.commands += 1
                if command.name == "request_weight":
                    self._send(self.codec.encode(self._current))

    def _send(self, data: bytes) -> None:
        f, rng = self.faults, self.rng
        if f.bad_checksum and rng.random() < f.bad_checksum and len(data) > 2:
            data = data[:-2] + bytes([data[-2] ^ 0x01]) + data[-1:]
            self.stats.count("bad_checksum")
        if f.drop_bytes and rng.random() < f.drop_bytes and len(data) > 3:
            i = rng.randrange(1, len(data) - 1)
            data = data[:i] + data[i + 1:]
            self.stats.count("drop_bytes")
        if f.garbage and rng.random() < f.garbage:
            data = bytes(rng.randrange(0x20, 0x7F) for _ in range(rng.randrange(1, 8))) + data
            self.stats.count("garbage")
        parts = [data]
        if f.split and rng.random() < f.split and len(data) > 2:
            i = rng.randrange(1, len(data))
            parts = [data[:i], data[i:]]
            self.stats.count("split")
        for part in parts:
            try:
                os.write(self._master, part)
                self.stats.bytes += len(part)
            except BlockingIOError:
                self.stats.dropped_writes += 1  # nobody reads: a real line loses it too
            except OSError:
                return
            if len(parts) > 1:
                time.sleep(0.002)
        self.stats.frames += 1
