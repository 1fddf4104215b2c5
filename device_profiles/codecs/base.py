"""What every codec is: bytes in → frames out, commands → bytes; no I/O.

Rules (modelled on h11's sans-I/O design, style.md):

* :meth:`Codec.receive` buffers bytes; :meth:`Codec.next_frame` returns the next
  decoded :class:`WeightFrame`, or ``None`` when more bytes are needed.
* A bad stretch of bytes raises :class:`FrameError` from ``next_frame`` *after* the
  codec has discarded exactly that stretch, so the caller logs it and simply calls
  ``next_frame`` again: the codec resynchronises on the next good frame and no good
  frame beside the bad bytes is lost.
* A device that answers with a status and no weight (busy, in motion, a refused
  command) raises :class:`StatusReplyError`, a :class:`FrameError` whose bytes were
  fine: callers that only catch ``FrameError`` stay correct, callers that care (line
  quality counters, the weighing state machine) can tell the two apart.
* The buffer is bounded (``max_buffer``): a run of bytes longer than any legal frame
  without a frame in it is discarded with a ``FrameError``.
* Codecs never block, log, read a clock or touch a device. Feeding all bytes at once
  gives the same frames and errors as feeding them one byte at a time: ``_parse``
  decides only from bytes that have arrived and never changes a decision when more
  bytes arrive (each codec bounds how far it looks, so the decision is the same
  whatever the chunking).
* ``encode`` is the device side: it turns a frame into the bytes the scale would send,
  so the emulators speak through the very same module (round trips are tested).

Performance: the buffer keeps a read position instead of deleting every consumed
frame; it is compacted once per :meth:`receive`. Codecs memoise the decoding of frame
bytes (:meth:`Codec._remember`): a continuous-output scale repeats the same frame many
times a second, and a frozen :class:`WeightFrame` can be shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

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


class StatusReplyError(FrameError):
    """The device answered with a status and no weight: the bytes were good.

    ``status`` is the protocol's status word as received (``"S I"``, ``"?A"``), and
    ``motion`` is true when the device withheld the weight only because the load is
    moving (a normal state, not a fault).
    """

    def __init__(
        self,
        reason: str,
        *,
        offset: int,
        length: int,
        data: bytes = b"",
        status: str = "",
        motion: bool = False,
    ) -> None:
        super().__init__(reason, offset=offset, length=length, data=data)
        self.status = status
        self.motion = motion


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
class StatusReply:
    """What ``_parse`` returns for a status-only reply (becomes a StatusReplyError)."""

    reason: str
    status: str
    motion: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    """A host → device request (``RequestWeight``, ``Tare``, ``Zero``, ...)."""

    name: str
    arg: str | None = None


REQUEST_WEIGHT = Command("request_weight")
TARE = Command("tare")
ZERO = Command("zero")

#: one decision of ``_parse``: a frame, a reason to discard, a status reply, or
#: ``None`` for bytes consumed silently (a command acknowledgement, blank padding)
Parsed: TypeAlias = WeightFrame | str | StatusReply | None

_MEMO_MAX = 1024  # distinct frame byte strings remembered per codec instance


def skip_to(
    buf: bytearray, pos: int, marker: int | bytes, *, start: int, window: int
) -> int | None:
    """How many bytes from ``pos`` to discard so the next parse starts at ``marker``.

    Looks for ``marker`` in ``buf[pos + start : pos + window]`` only. Returns the
    distance from ``pos`` to the marker; ``window`` if the whole window has arrived
    without one; ``None`` (wait) otherwise. Bounding the search keeps the answer the
    same however the bytes were chunked.
    """
    end = pos + window
    i = buf.find(marker, pos + start, end)
    if i >= 0:
        return i - pos
    if len(buf) >= end:
        return window
    return None


class Codec(ABC):
    """Base class: buffering, bounds, offsets. Subclasses implement ``_parse``."""

    protocol_id: ClassVar[str]
    max_frame: ClassVar[int] = 64  # longest legal frame, bytes
    #: commands the device accepts, if it is request/response
    commands: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, max_buffer: int = 4096) -> None:
        self._buf = bytearray()
        self._pos = 0  # read position: _buf[:_pos] is consumed, compacted in receive()
        self._offset = 0  # stream offset of _buf[0]
        self.max_buffer = max(max_buffer, 2 * self.max_frame)
        self._memo: dict[bytes, WeightFrame | str] = {}

    # -- decode side ------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Append bytes from the device; decoding happens in :meth:`next_frame`."""
        if self._pos:
            del self._buf[: self._pos]
            self._offset += self._pos
            self._pos = 0
        self._buf += data

    def next_frame(self) -> WeightFrame | None:
        """Return the next frame, ``None`` if more bytes are needed; raise on bad bytes."""
        buf = self._buf
        while True:
            pos = self._pos
            result = self._parse(buf, pos)
            if result is None:
                if len(buf) - pos > self.max_buffer:
                    raise self._overflow()
                return None
            n, what = result
            if n <= 0:
                raise AssertionError(f"{type(self).__name__}._parse consumed {n} bytes")
            self._pos = pos + n
            if isinstance(what, WeightFrame):
                return what
            if what is not None:
                raise self._error(what, pos, n)

    def feed(self, data: bytes) -> tuple[list[WeightFrame], list[FrameError]]:
        """Receive ``data`` and drain every complete frame; errors are collected, in order."""
        self.receive(data)
        frames: list[WeightFrame] = []
        errors: list[FrameError] = []
        buf = self._buf
        parse = self._parse
        append = frames.append
        pos = self._pos
        while True:  # next_frame() inlined: this loop is the decode hot path
            result = parse(buf, pos)
            if result is None:
                self._pos = pos
                if len(buf) - pos > self.max_buffer:
                    errors.append(self._overflow())
                    pos = self._pos
                    continue
                return frames, errors
            n, what = result
            if n <= 0:
                raise AssertionError(f"{type(self).__name__}._parse consumed {n} bytes")
            if isinstance(what, WeightFrame):
                append(what)
            elif what is not None:
                errors.append(self._error(what, pos, n))
            pos += n

    def flush(self) -> FrameError | None:
        """Discard a partial frame left at the end of input (e.g. end of stdin)."""
        n = len(self._buf) - self._pos
        if not n:
            return None
        start = self._offset + self._pos
        data = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._offset += self._pos + n
        self._pos = 0
        return FrameError("incomplete frame at end of input", offset=start, length=n, data=data)

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def _error(self, what: str | StatusReply, pos: int, n: int) -> FrameError:
        data = bytes(self._buf[pos : pos + n])
        if isinstance(what, StatusReply):
            return StatusReplyError(
                what.reason, offset=self._offset + pos, length=n, data=data,
                status=what.status, motion=what.motion,
            )
        return FrameError(what, offset=self._offset + pos, length=n, data=data)

    def _overflow(self) -> FrameError:
        # A fixed-size discard (not "all but the tail") so that the discarded spans do
        # not depend on how the bytes were chunked.
        n = self.max_buffer + 1 - self.max_frame
        pos = self._pos
        data = bytes(self._buf[pos : pos + n])
        self._pos = pos + n
        return FrameError(
            f"no frame in {self.max_buffer + 1} bytes; buffer bound reached",
            offset=self._offset + pos, length=n, data=data,
        )

    def _remember(self, key: bytes, value: WeightFrame | str) -> WeightFrame | str:
        """Memoise the decoding of ``key`` (frame bytes); bounded, returns ``value``."""
        memo = self._memo
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[key] = value
        return value

    @abstractmethod
    def _parse(self, buf: bytearray, pos: int) -> tuple[int, Parsed] | None:
        """Look at ``buf`` from ``pos`` on.

        Return ``None`` if more bytes are needed; ``(n, frame)`` for a frame occupying
        the ``n`` bytes from ``pos``; ``(n, reason)`` to discard ``n`` bad bytes
        (n ≥ 1) with a reason; ``(n, StatusReply(...))`` for a status-only reply;
        ``(n, None)`` to consume ``n`` bytes that carry no reading. Never mutate
        ``buf``; never return a different decision once more bytes have arrived.
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
