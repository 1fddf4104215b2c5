"""Mettler-Toledo standard continuous output (protocol id ``toledo-continuous``).

Source: domain.md §3, taken from Mettler-Toledo IND245 firmware ``scale/ContOut.c``
(frame layout and checksum) with the status-word bits of the Toledo standard
continuous output description.

Frame, 18 bytes::

    STX  A  B  C  W W W W W W  T T T T T T  CR  CHK

* ``A``: 0x20 | increment (build) code << 3 | decimal code. Decimal code 0..7 =
  XX00, XX0, XXXXXX, X.X, X.XX, X.XXX, X.XXXX, X.XXXXX. Increment code 1, 2, 3 =
  ×1, ×2, ×5.
* ``B``: 0x20 | b0 net, b1 negative, b2 over/under range, b3 motion, b4 kg (0 = lb).
* ``C``: 0x20 | b3 print request, b4 expanded display.
* ``W``: displayed weight, 6 ASCII digits without a decimal point, leading blanks.
* ``T``: tare weight, same format.
* ``CHK``: chosen so that (sum of all 18 bytes) & 0x7F == 0.

Resynchronisation: bytes before an STX are discarded as one stretch once the STX
arrives; a frame that fails a check is discarded up to the next STX. Both searches
look at most 36 bytes (two frames) ahead; without an STX in that window the 36 bytes
are discarded as one error. Decisions wait until the bytes that decide them have
arrived, so feeding one byte at a time gives exactly the frames and errors that
feeding everything at once does. Buffer: at most 36 bytes wait for a decision.
"""

from __future__ import annotations

from typing import ClassVar

from device_profiles.codecs.base import Codec, EncodeError, Parsed, WeightFrame, skip_to
from weighing.errors import UnitError
from weighing.units import MassUnit, scaled_to_mg

STX = 0x02
CR = 0x0D
FRAME_LEN = 18
_WINDOW = 2 * FRAME_LEN  # longest garbage stretch discarded as one error

# decimal code (status A bits 0-2) -> implied decimals; 0/1 are trailing zeros
_DECIMALS = {0: -2, 1: -1, 2: 0, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}
_CODE_FOR_DECIMALS = {v: k for k, v in _DECIMALS.items()}
_INCREMENT_CODES = {1: 1, 2: 2, 5: 3}

A_BITS, B_NET, B_NEG, B_RANGE, B_MOTION, B_KG = 0x20, 0x01, 0x02, 0x04, 0x08, 0x10
C_PRINT, C_EXPANDED = 0x08, 0x10


def checksum(body: bytes) -> int:
    """Checksum byte for the first 17 bytes: two's complement of their sum, 7 bits."""
    return (-sum(body)) & 0x7F


def _field(raw: bytes) -> int | None:
    text = raw.decode("ascii", "replace").strip(" ")
    if not text:
        return 0
    if not (text.isdigit() and text.isascii()):
        return None
    return int(text)


class ToledoContinuousCodec(Codec):
    """Sans-I/O codec for the Toledo standard continuous output."""

    protocol_id: ClassVar[str] = "toledo-continuous"
    max_frame: ClassVar[int] = FRAME_LEN

    def __init__(self, *, increment: int = 1, decimals: int = 3, max_buffer: int = 4096) -> None:
        super().__init__(max_buffer=max_buffer)
        if increment not in _INCREMENT_CODES:
            raise EncodeError(f"increment must be 1, 2 or 5, not {increment}")
        if decimals not in _CODE_FOR_DECIMALS:
            raise EncodeError(f"decimals must be -2..5, not {decimals}")
        self.increment = increment
        self.decimals = decimals

    def _parse(self, buf: bytearray, pos: int) -> tuple[int, Parsed] | None:
        if pos >= len(buf):
            return None
        if buf[pos] != STX:
            # the stretch ends where the next STX arrives, looked for within a bounded
            # window so that the discarded span does not depend on chunking
            n = skip_to(buf, pos, STX, start=0, window=_WINDOW)
            return None if n is None else (n, f"{n} bytes of garbage before STX")
        end = pos + FRAME_LEN
        if len(buf) < end:
            return None
        frame = bytes(buf[pos:end])
        known = self._memo.get(frame)
        if known is None:
            reason = self._check(frame)
            known = self._remember(frame, self._decode(frame) if reason is None else reason)
        if isinstance(known, WeightFrame):
            return FRAME_LEN, known
        n = skip_to(buf, pos, STX, start=1, window=2 * FRAME_LEN)
        return None if n is None else (n, known)

    @staticmethod
    def _check(frame: bytes) -> str | None:
        if frame[16] != CR:
            return "no CR at byte 16"
        if sum(frame) & 0x7F:
            return f"checksum mismatch (sum & 0x7F = {sum(frame) & 0x7F:#04x})"
        a, b, c = frame[1], frame[2], frame[3]
        if not (a & A_BITS and b & A_BITS and c & A_BITS) or max(a, b, c) >= 0x80:
            return "status byte without bit 5 set"
        if (a >> 3) & 0x03 == 0:
            return "increment code 0 in status A"
        if _field(frame[4:10]) is None or _field(frame[10:16]) is None:
            return "weight or tare field is not digits"
        return None

    @staticmethod
    def _decode(frame: bytes) -> WeightFrame:
        a, b, c = frame[1], frame[2], frame[3]
        decimals = _DECIMALS[a & 0x07]
        unit = MassUnit.KG if b & B_KG else MassUnit.LB
        weight = _field(frame[4:10]) or 0
        tare = _field(frame[10:16]) or 0
        sign = -1 if b & B_NEG else 1
        try:
            weight_mg = sign * scaled_to_mg(weight, decimals, unit)
            tare_mg = scaled_to_mg(tare, decimals, unit)
        except UnitError as err:  # cannot happen for kg; pounds are rounded
            raise AssertionError(str(err)) from err
        over = bool(b & B_RANGE)
        return WeightFrame(
            weight_mg=weight_mg,
            stable=not b & B_MOTION,
            net=bool(b & B_NET),
            tare_mg=tare_mg,
            overload=over and sign > 0,
            underload=over and sign < 0,
            zero=weight_mg == 0,
            unit=unit.value,
            decimals=max(decimals, 0),
            print_request=bool(c & C_PRINT),
            status=f"{a:02X}{b:02X}{c:02X}",
        )

    def encode(self, frame: WeightFrame) -> bytes:
        decimals = self.decimals if frame.decimals is None else frame.decimals
        if decimals not in _CODE_FOR_DECIMALS:
            raise EncodeError(f"cannot show {decimals} decimals")
        if frame.unit != "kg":
            raise EncodeError("the emulator encodes kilograms only")
        per = 10 ** (6 - decimals) if decimals >= 0 else 10**6 * 10 ** (-decimals)
        w, rem = divmod(abs(frame.weight_mg), per)
        tare_mg = frame.tare_mg or 0
        t, rem2 = divmod(tare_mg, per)
        if rem or rem2:
            raise EncodeError(f"{frame.weight_mg} mg is not a whole display step at {decimals}")
        if w > 999_999 or t > 999_999:
            raise EncodeError("weight does not fit six digits")
        a = A_BITS | _INCREMENT_CODES[self.increment] << 3 | _CODE_FOR_DECIMALS[decimals]
        b = A_BITS | B_KG
        if frame.net:
            b |= B_NET
        if frame.weight_mg < 0:
            b |= B_NEG
        if frame.overload or frame.underload:
            b |= B_RANGE
        if frame.stable is False:
            b |= B_MOTION
        c = A_BITS | (C_PRINT if frame.print_request else 0)
        width = max(decimals, 0) + 1
        body = (
            bytes([STX, a, b, c])
            + f"{w:0{width}d}".rjust(6).encode()
            + f"{t:0{width}d}".rjust(6).encode()
            + bytes([CR])
        )
        return body + bytes([checksum(body)])
