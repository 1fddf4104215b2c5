"""耀华 Yaohua XK3190-A9 continuous output (protocol id ``yaohua-a9``).

Source: domain.md §3 (captured frames, checksums recomputed) [H].

Frame, 12 bytes::

    STX  S  D D D D D D  P  X X  ETX
    02   +  0 0 1 5 6 0  0  1 9  03      (1560 kg)

* ``S``: sign, ``+`` or ``-``.
* ``D``: six ASCII digits of the displayed weight, no decimal point, high digit first.
* ``P``: decimal count ``0``–``4`` (digits right of the displayed point).
* ``X X``: XOR of bytes 1..8 (sign through decimal count), high nibble then low nibble,
  each as an upper-case hexadecimal ASCII character (lower case is accepted).
* The frame carries no stability, net or overload flag: ``stable`` is ``None``.
  Unit: kilograms by default (codec option ``unit``).

Resynchronisation: bytes before an STX are one garbage stretch, discarded once the STX
arrives; a frame that fails a check (ETX, sign, digits, decimal count, XOR) is discarded
up to the next STX after its first byte. Each search looks at most 24 bytes ahead
(two frames): without an STX there, those 24 bytes go as one error. Decisions depend
only on bytes that have arrived and never change, so one byte at a time equals all at
once. Buffer: at most 24 bytes wait for a decision.
"""

from __future__ import annotations

from typing import ClassVar

from device_profiles.codecs.base import Codec, EncodeError, Parsed, WeightFrame, skip_to
from weighing.errors import UnitError
from weighing.units import parse_unit, scaled_to_mg

STX, ETX = 0x02, 0x03
FRAME_LEN = 12
_WINDOW = 2 * FRAME_LEN
_HEX = b"0123456789ABCDEF"
_NIBBLE = {c: i for i, c in enumerate(_HEX)} | {c: i for i, c in enumerate(b"abcdef", 10)}


def xor_check(body: bytes) -> bytes:
    """The two check characters for bytes 1..8 of a frame (sign through decimal count)."""
    x = 0
    for b in body:
        x ^= b
    return bytes((_HEX[x >> 4], _HEX[x & 0x0F]))


class YaohuaA9Codec(Codec):
    """Sans-I/O codec for the XK3190-A9 continuous output."""

    protocol_id: ClassVar[str] = "yaohua-a9"
    max_frame: ClassVar[int] = FRAME_LEN

    def __init__(self, *, decimals: int = 0, unit: str = "kg", max_buffer: int = 4096) -> None:
        super().__init__(max_buffer=max_buffer)
        if not 0 <= decimals <= 4:
            raise EncodeError(f"decimals must be 0..4, not {decimals}")
        try:
            self.unit = parse_unit(unit)
        except UnitError as err:
            raise EncodeError(str(err)) from None
        self.decimals = decimals  # used by encode when a frame does not state decimals

    def _parse(self, buf: bytearray, pos: int) -> tuple[int, Parsed] | None:
        if pos >= len(buf):
            return None
        if buf[pos] != STX:
            n = skip_to(buf, pos, STX, start=0, window=_WINDOW)
            return None if n is None else (n, f"{n} bytes of garbage before STX")
        end = pos + FRAME_LEN
        if len(buf) < end:
            return None
        frame = bytes(buf[pos:end])
        known = self._memo.get(frame)
        if known is None:
            known = self._remember(frame, self._decode(frame))
        if isinstance(known, WeightFrame):
            return FRAME_LEN, known
        n = skip_to(buf, pos, STX, start=1, window=_WINDOW)
        return None if n is None else (n, known)

    def _decode(self, frame: bytes) -> WeightFrame | str:
        if frame[11] != ETX:
            return "no ETX at byte 11"
        sign = frame[1]
        if sign not in b"+-":
            return f"sign byte {sign:#04x} is not '+' or '-'"
        digits = frame[2:8]
        if not (digits.isdigit() and digits.isascii()):
            return "weight field is not six digits"
        dec = frame[8] - 0x30
        if not 0 <= dec <= 4:
            return f"decimal count byte {frame[8]:#04x} is not '0'..'4'"
        hi, lo = _NIBBLE.get(frame[9]), _NIBBLE.get(frame[10])
        x = 0
        for b in frame[1:9]:
            x ^= b
        if hi is None or lo is None or (hi << 4 | lo) != x:
            return f"XOR check {frame[9:11]!r} != {xor_check(frame[1:9])!r}"
        value = int(digits)
        try:
            weight_mg = scaled_to_mg(-value if sign == 0x2D else value, dec, self.unit)
        except UnitError as err:
            return str(err)
        return WeightFrame(
            weight_mg=weight_mg, zero=weight_mg == 0, unit=self.unit.value, decimals=dec
        )

    def encode(self, frame: WeightFrame) -> bytes:
        dec = self.decimals if frame.decimals is None else frame.decimals
        if not 0 <= dec <= 4:
            raise EncodeError(f"A9 shows 0..4 decimals, not {dec}")
        if frame.unit != self.unit.value:
            raise EncodeError(f"this codec speaks {self.unit.value}, not {frame.unit}")
        per = scaled_to_mg(1, dec, self.unit)
        value, rem = divmod(abs(frame.weight_mg), per)
        if rem or value > 999_999:
            raise EncodeError(f"{frame.weight_mg} mg does not fit six digits at {dec} decimals")
        body = f"{'-' if frame.weight_mg < 0 else '+'}{value:06d}{dec}".encode()
        return bytes([STX]) + body + xor_check(body) + bytes([ETX])
