"""What every codec is: bytes in → frames out, commands → bytes; no I/O.

Rules (modelled on h11's sans-I/O design, style.md):

* :meth:`Codec.receive` buffers bytes; :meth:`Codec.next_frame` returns the next
  decoded :class:`WeightFrame`, or ``None`` when more bytes are needed.
* A bad stretch of bytes raises :class:`FrameError` from ``next_frame`` *after* the
  codec has discarded exactly that stretch, so the caller logs it and simply calls
  ``next_frame`` again: the codec resynchronises on the next good frame and no good
  frame beside the bad bytes is lost.
* The buffer is bounded (``max_buffer``): a run of bytes longer than any legal frame
  without a frame in it is discarded with a ``FrameError``.
* Codecs never block, log, read a clock or touch a device. Feeding all bytes at once
  gives the same frames and errors as feeding them one byte at a time.
* ``encode`` is the device side: it turns a frame into the bytes the scale would send,
  so the emulators speak through the very same module (round trips are tested).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from weighing.errors import GatewayError


class FrameError(GatewayError, ValueError):
    """A stretch of device bytes that is not a valid frame (remote error).

    ``offset`` counts bytes from the first byte ever received by this codec, ``length``
    how many bytes were discarded, ``reason`` says why in words.
    """

    def __init__(self, reason: str, *, offset: int, length: int, data: bytes = b"") -> None:
        self.reason = reason
        self.offset = offset
        self.length = length
        self.data = data
        super().__init__(f"bytes {offset}..{offset + length}: {reason}")


class EncodeError(GatewayError, ValueError):
    """A frame or command cannot be expressed in this protocol (local misuse)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightFrame:
    """One decoded reading or transaction, as the device stated it.

    ``weight_mg`` is the weight the frame states (net when ``net`` is true, else gross),
    signed, in milligrams. ``stable`` is ``None`` where the protocol does not signal it.
    Optional fields are filled where the protocol carries them.
    """

    weight_mg: int
    stable: bool | None = None
    net: bool = False
    tare_mg: int | None = None
    overload: bool = False
    underload: bool = False
    zero: bool | None = None
    unit: str = "kg"
    decimals: int | None = None  # displayed decimals, where the frame states them
    unit_price_fen_per_kg: int | None = None
    amount_fen: int | None = None
    plu: str | None = None
    trace_code: str | None = None
    ts_text: str | None = None  # device time as the frame states it (trace records)
    print_request: bool = False  # a transaction/print key: the sale is committed here
    status: str | None = None  # protocol-specific status word, for diagnostics


@dataclass(frozen=True, slots=True)
class Command:
    """A host → device request (``RequestWeight``, ``Tare``, ``Zero``, ...)."""

    name: str
    arg: str | None = None


REQUEST_WEIGHT = Command("request_weight")
TARE = Command("tare")
ZERO = Command("zero")


class Codec(ABC):
    """Base class: buffering, bounds, offsets. Subclasses implement ``_parse``."""

    protocol_id: ClassVar[str]
    max_frame: ClassVar[int] = 64  # longest legal frame, bytes
    #: commands the device accepts, if it is request/response
    commands: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, max_buffer: int = 4096) -> None:
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self.max_buffer = max(max_buffer, 2 * self.max_frame)

    # -- decode side ------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Append bytes from the device; decoding happens in :meth:`next_frame`."""
        self._buf += data

    def next_frame(self) -> WeightFrame | None:
        """Return the next frame, ``None`` if more bytes are needed; raise on bad bytes."""
        result = self._parse(self._buf)
        if result is None:
            if len(self._buf) > self.max_buffer:
                n = len(self._buf) - self.max_frame
                self._discard(n)
                raise FrameError(
                    f"no frame in {n + self.max_frame} bytes; buffer bound reached",
                    offset=self._offset - n, length=n,
                )
            return None
        consumed, frame_or_reason = result
        if consumed <= 0:
            raise AssertionError(f"{type(self).__name__}._parse consumed {consumed} bytes")
        start = self._offset
        data = bytes(self._buf[:consumed])
        self._discard(consumed)
        if isinstance(frame_or_reason, str):
            raise FrameError(frame_or_reason, offset=start, length=consumed, data=data)
        return frame_or_reason

    def feed(self, data: bytes) -> tuple[list[WeightFrame], list[FrameError]]:
        """Receive ``data`` and drain every complete frame; errors are collected, in order."""
        self.receive(data)
        frames: list[WeightFrame] = []
        errors: list[FrameError] = []
        while True:
            try:
                frame = self.next_frame()
            except FrameError as err:
                errors.append(err)
                continue
            if frame is None:
                return frames, errors
            frames.append(frame)

    def flush(self) -> FrameError | None:
        """Discard a partial frame left at the end of input (e.g. end of stdin)."""
        if not self._buf:
            return None
        n = len(self._buf)
        start = self._offset
        data = bytes(self._buf)
        self._discard(n)
        return FrameError("incomplete frame at end of input", offset=start, length=n, data=data)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _discard(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    @abstractmethod
    def _parse(self, buf: bytearray) -> tuple[int, WeightFrame | str] | None:
        """Look at the start of ``buf``.

        Return ``None`` if more bytes are needed; ``(n, frame)`` for a frame occupying
        the first ``n`` bytes; ``(n, reason)`` to discard ``n`` bad bytes (n ≥ 1) with
        a reason. Never mutate ``buf``.
        """

    # -- encode side --------------------------------------------------------------------

    @abstractmethod
    def encode(self, frame: WeightFrame) -> bytes:
        """The bytes the device sends for ``frame`` (the emulator's side)."""

    def encode_command(self, command: Command) -> bytes:
        """The bytes the host sends for ``command``."""
        raise EncodeError(f"{self.protocol_id} takes no commands (got {command.name})")

    def decode_command(self, data: bytes) -> tuple[int, Command | None]:
        """Device side of a request/response protocol: parse one host command.

        Returns ``(consumed, command)``; ``(0, None)`` if more bytes are needed;
        ``(n, None)`` to skip ``n`` unknown bytes.
        """
        return (len(data), None)
