""""=" + reversed display characters (protocol id ``reversed-display``).

Source: domain.md §3, display-style output of many Chinese indicators [M]. The
indicator sends ``=`` followed by the characters of its display in reverse order,
over and over, usually without CR LF::

    display  12.340   →   = 0 4 3 . 2 1   (3D 30 34 33 2E 32 31)
    display  -1.250   →   = 0 5 2 . 1 -

The frame states only the displayed number: no unit (codec option ``unit``, default
kg), no stability, net or overload flag (``stable`` is ``None``). The decimals are the
digits after the displayed point. Codec option ``digits`` (default 0 = any) is the
number of digits the display shows; a frame with a different count is rejected, which
is the only corruption check this checksum-less format allows.

Framing and latency: a frame is the ``=`` and the characters up to the next ``=`` (or
CR / LF, where a device sends them). Without CR LF a frame is therefore complete only
when the *next* frame's ``=`` arrives: decoding lags one frame period (50 ms at
20 frames/s), and the last frame of a stream is reported by :meth:`flush` as
incomplete. CR, LF and spaces before an ``=`` are padding and are absorbed.

Resynchronisation: bytes before an ``=`` are one garbage stretch, discarded once the
``=`` arrives; a frame that does not read as a number is discarded whole. Searches
look at most 32 bytes ahead (without an ``=``/terminator there, 32 bytes go as one
error), so decisions are the same for any chunking. Buffer: at most 32 bytes wait.
"""

from __future__ import annotations

import re
from typing import ClassVar

from device_profiles.codecs.base import Codec, EncodeError, FrameError, Parsed, WeightFrame
from weighing.errors import UnitError
from weighing.units import MassUnit, decimal_to_mg, mg_to_decimal, parse_unit

EQ = 0x3D
_WINDOW = 32
_END = re.compile(rb"[=\r\n]")
_PAD = b"\r\n "
_NUMBER = re.compile(r"([+-]?)(\d+)(?:\.(\d*))?")


class ReversedDisplayCodec(Codec):
    """Sans-I/O codec for ``=``-prefixed reversed display output."""

    protocol_id: ClassVar[str] = "reversed-display"
    max_frame: ClassVar[int] = _WINDOW

    def __init__(
        self,
        *,
        digits: int = 0,
        decimals: int = 3,
        unit: str = "kg",
        crlf: bool = False,
        max_buffer: int = 4096,
    ) -> None:
        super().__init__(max_buffer=max_buffer)
        if not 0 <= digits <= 12 or not 0 <= decimals <= 6:
            raise EncodeError(f"bad digits/decimals {digits}/{decimals}")
        try:
            self.unit = parse_unit(unit)
        except UnitError as err:
            raise EncodeError(str(err)) from None
        if self.unit is MassUnit.LB:
            raise EncodeError("reversed-display: pounds are not supported")
        self.digits = digits
        self.decimals = decimals  # for encode, when a frame does not state decimals
        self.crlf = crlf  # encode: end each frame with CR LF

    def _parse(self, buf: bytearray, pos: int) -> tuple[int, Parsed] | None:
        end = len(buf)
        if pos >= end:
            return None
        limit = pos + _WINDOW
        start = pos
        if buf[pos] != EQ:
            stop = min(end, limit)
            while start < stop and buf[start] in _PAD:
                start += 1
            if start < stop and buf[start] != EQ:  # garbage (maybe after padding)
                i = buf.find(EQ, start, limit)
                if i >= 0:
                    return i - pos, f"{i - pos} bytes of garbage before '='"
                if end >= limit:
                    return _WINDOW, f"{_WINDOW} bytes without '='"
                return None
            if start == limit:
                return _WINDOW, f"{_WINDOW} bytes of padding"
            if start == end:
                return None
        m = _END.search(buf, start + 1, limit)
        if m is None:
            if end >= limit:
                return _WINDOW, f"no frame end within {_WINDOW} bytes"
            return None
        stop = m.start()
        body = bytes(buf[start + 1 : stop])
        known = self._memo.get(body)
        if known is None:
            known = self._remember(body, self._decode(body))
        return stop - pos, known

    def _decode(self, body: bytes) -> WeightFrame | str:
        if not body.isascii():
            return f"not display characters: {body!r}"
        text = body.decode("ascii")[::-1].strip(" ")
        m = _NUMBER.fullmatch(text)
        if m is None:
            return f"display {text!r} is not a number"
        sign, whole, frac = m.groups()
        frac = frac or ""
        if self.digits and len(whole) + len(frac) != self.digits:
            return f"display {text!r} has {len(whole) + len(frac)} digits, not {self.digits}"
        try:
            weight_mg = decimal_to_mg(f"{sign}{whole}.{frac}" if frac else sign + whole, self.unit)
        except UnitError as err:
            return f"display {text!r}: {err}"
        return WeightFrame(
            weight_mg=weight_mg, zero=weight_mg == 0, unit=self.unit.value, decimals=len(frac)
        )

    def encode(self, frame: WeightFrame) -> bytes:
        dec = self.decimals if frame.decimals is None else frame.decimals
        if frame.unit != self.unit.value:
            raise EncodeError(f"this codec speaks {self.unit.value}, not {frame.unit}")
        try:
            text = mg_to_decimal(abs(frame.weight_mg), self.unit, dec)
        except UnitError as err:
            raise EncodeError(str(err)) from None
        if self.digits:
            n_digits = len(text) - (1 if dec else 0)
            if n_digits > self.digits:
                raise EncodeError(f"{text} needs more than {self.digits} digits")
            text = "0" * (self.digits - n_digits) + text
        if frame.weight_mg < 0:
            text = "-" + text
        out = ("=" + text[::-1]).encode()
        return out + b"\r\n" if self.crlf else out

    def flush(self) -> FrameError | None:
        """Like :meth:`Codec.flush`; a tail of CR/LF/space padding is no error."""
        tail = self._buf[self._pos :]
        if tail and not tail.strip(_PAD):
            self._offset += len(self._buf)
            self._buf.clear()
            self._pos = 0
            return None
        return super().flush()
