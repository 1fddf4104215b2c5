"""Transports: byte I/O with devices, and frame sources that combine I/O with a codec.

The imperative shell around the sans-I/O codecs (architecture.md §3). A transport does
I/O only; it reads in chunks (``in_waiting``), never ``readline()`` (measured here:
50 µs per frame with readline, 0.8 µs with chunked reads). Library errors are
translated at this seam into :class:`TransportError` / :class:`TransportTimeoutError`.

A :class:`FrameSource` is what a scale worker consumes: ``poll(timeout_s)`` returns the
frames decoded since the last call and the :class:`FrameError`s met on the way. The
serial source feeds bytes to a codec; the Modbus source (``edge_agent.modbus``) polls
registers; both look the same to the weighing state machine.
"""

from __future__ import annotations

import os
import select
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import serial

from device_profiles.codecs import Codec, Command, FrameError, WeightFrame
from edge_agent.supervision import Backoff
from weighing.errors import GatewayError


def _close_quietly(port: serial.SerialBase | None) -> None:
    """Close a line that may already be broken (an unplugged adapter raises on close)."""
    if port is not None:
        try:
            port.close()
        except (serial.SerialException, OSError):
            pass


class TransportError(GatewayError, OSError):
    """The link to a device failed (port gone, connection refused, I/O error)."""


class TransportTimeoutError(TransportError, TimeoutError):
    """The device did not answer within its timeout."""


@dataclass
class Polled:
    """What one poll of a frame source produced."""

    frames: list[WeightFrame] = field(default_factory=list)
    errors: list[FrameError] = field(default_factory=list)
    nbytes: int = 0


class FrameSource(ABC):
    """A device as a source of decoded frames."""

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def poll(self, timeout_s: float) -> Polled:
        """Wait up to ``timeout_s`` for input; return what was decoded (maybe nothing)."""

    def send(self, command: Command) -> None:
        """Send a command to the device (tare, zero, request); optional."""
        raise TransportError(f"{type(self).__name__} does not take commands")

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialFrameSource(FrameSource):
    """A serial (or pty, or ``loop://``) port read in chunks and decoded by a codec.

    ``request`` mode writes the codec's request-weight command every poll (for
    request/response protocols such as MT-SICS or Toledo 8217).
    """

    def __init__(
        self,
        url: str,
        codec: Codec,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
        request: Command | None = None,
        chunk: int = 4096,
    ) -> None:
        self.url = url
        self.codec = codec
        self.settings = dict(baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits)
        self.request = request
        self.chunk = chunk
        self._port: serial.SerialBase | None = None

    def open(self) -> None:
        try:
            self._port = serial.serial_for_url(self.url, timeout=0, **self.settings)
        except (serial.SerialException, OSError, ValueError) as err:
            raise TransportError(f"cannot open {self.url}: {err}") from err

    def close(self) -> None:
        _close_quietly(self._port)
        self._port = None

    def _read(self, timeout_s: float) -> bytes:
        port = self._port
        if port is None:
            raise TransportError(f"{self.url} is not open")
        fd = self._fileno(port)
        if fd is not None:
            return self._read_fd(fd, timeout_s)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                n = port.in_waiting
                if n:
                    return bytes(port.read(min(max(n, 1), self.chunk * 16)))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return b""
                # URL handlers without a file descriptor (loop://, socket://): a short
                # sleep keeps CPU low (20 frames/s leaves 50 ms between frames).
                time.sleep(min(0.01, remaining))
        except (serial.SerialException, OSError) as err:
            raise TransportError(f"read from {self.url} failed: {err}") from err

    @staticmethod
    def _fileno(port: serial.SerialBase) -> int | None:
        try:
            fd = port.fileno()
        except (AttributeError, serial.SerialException, OSError):
            return None
        return fd if isinstance(fd, int) and fd >= 0 else None

    def _read_fd(self, fd: int, timeout_s: float) -> bytes:
        """Wait in ``select`` (no polling loop: measured in bench/bench_edge.py) and read.

        A readable descriptor that gives no bytes is a hung-up line (the pty's other end
        closed, a USB adapter unplugged): that is a :class:`TransportError`, never a busy
        loop.
        """
        try:
            ready, _, _ = select.select([fd], [], [], max(timeout_s, 0.0))
            if not ready:
                return b""
            data = os.read(fd, self.chunk * 16)
        except BlockingIOError:
            return b""
        except (OSError, ValueError) as err:
            raise TransportError(f"read from {self.url} failed: {err}") from err
        if not data:
            raise TransportError(f"{self.url}: the line hung up (end of file)")
        return data

    def write(self, data: bytes) -> None:
        port = self._port
        if port is None:
            raise TransportError(f"{self.url} is not open")
        try:
            port.write(data)
        except (serial.SerialException, OSError) as err:
            raise TransportError(f"write to {self.url} failed: {err}") from err

    def send(self, command: Command) -> None:
        self.write(self.codec.encode_command(command))

    def poll(self, timeout_s: float) -> Polled:
        if self.request is not None:
            self.send(self.request)
        data = self._read(timeout_s)
        frames, errors = self.codec.feed(data) if data else ([], [])
        return Polled(frames, errors, len(data))


class ScannerPort:
    """A fair-scale station's code scanner: a serial line read without ever blocking.

    The scanner must never stop the scale: :meth:`read` returns the bytes received so far
    (``b""`` while the line is down) and reopens a failed line after a jittered,
    doubling backoff (0.5 s → 30 s). It raises :class:`TransportError` once per outage,
    when the outage begins; the first good read after a reopen ends it.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.state = "closed"  # open | down | closed
        self.failures = 0
        self.last_error = ""
        self._port: serial.SerialBase | None = None
        self._backoff = Backoff(0.5, 30.0)
        self._retry_at = 0.0
        self._down = False

    def read(self) -> bytes:
        try:
            if self._port is None:
                if time.monotonic() < self._retry_at:
                    return b""
                self._port = serial.serial_for_url(self.url, timeout=0)
            data = bytes(self._port.read(4096))
        except (serial.SerialException, OSError, ValueError) as err:
            self.close()
            self.failures += 1
            self.last_error, self.state = f"{type(err).__name__}: {err}", "down"
            self._retry_at = time.monotonic() + self._backoff.next_s()
            if self._down:
                return b""
            self._down = True
            raise TransportError(f"scanner {self.url}: {err}") from err
        self.state, self._down = "open", False
        self._backoff.reset()
        return data

    def close(self) -> None:
        _close_quietly(self._port)
        self._port = None
        self.state = "closed" if not self._down else "down"
