"""Mettler-Toledo 8217 mode, the POS scale protocol Odoo speaks (protocol id ``toledo-8217``).

Source: domain.md §3 [H] (odoo ``serial_scale_driver.py``: 9600 baud, 7 data bits, even
parity, 1 stop bit; ``W`` measure, ``Z`` zero, ``T`` tare, ``C`` clear; replies
matched by ``\\x02\\s*([0-9.]+)N?\\r`` and ``\\x02\\s*(\\?.)\\r``). Request/response.

Replies::

    STX  weight  [N]  CR        02 20 20 31 2E 32 35 30 0D   "  1.250" = 1.250 kg
    STX  ?  status    CR        02 3F 41 0D                  status 'A' = motion

* Weight: ASCII digits with the display's decimal point, right-aligned with leading
  spaces; an ``N`` after it marks a net weight (Odoo's pattern; [M]). The scale only
  sends a weight when it is not in motion and in range, so a weight reply is
  ``stable=True``. Unit: codec option ``unit`` (default kg).
* Status byte: b0 motion, b1 over capacity, b2 under zero, b3 outside zero capture
  range, b4 centre of zero, b5 net; b6 is set so the byte prints (``@``..``\\x7f``).

Decision for the status reply (it carries no weight):

* over capacity → ``WeightFrame(weight_mg=0, overload=True)``; under zero →
  ``WeightFrame(weight_mg=0, underload=True)`` (states of the load, like MT-SICS
  ``S +``/``S -``); ``stable`` is ``not motion``, ``net`` b5, ``status`` ``"?<byte>"``.
* anything else (motion, outside zero capture) → :class:`StatusReplyError` with
  ``motion`` set from b0: the device withheld the weight. The bytes were good, so
  callers that count line errors skip ``StatusReplyError``; a weighing state
  machine can treat ``motion=True`` as "load moving, no reading".

Resynchronisation: bytes before an STX are one garbage stretch (discarded once the
STX arrives); a reply that does not decode is discarded up to its CR, or, without a
CR in 16 bytes, up to the next STX. Searches look at most 16 bytes ahead, so any
chunking gives the same result. Buffer: at most 16 bytes wait for a decision.
"""

from __future__ import annotations

import re
from typing import ClassVar

from device_profiles.codecs.base import (
    REQUEST_WEIGHT,
    TARE,
    ZERO,
    Codec,
    Command,
    EncodeError,
    Parsed,
    StatusReply,
    WeightFrame,
    skip_to,
)
from weighing.errors import UnitError
from weighing.units import MassUnit, decimal_to_mg, mg_to_decimal, parse_unit

STX, CR, QUERY = 0x02, 0x0D, 0x3F
_WINDOW = 16
_WEIGHT = re.compile(rb" *(\d*\.?\d+|\d+\.)(N?)")

MOTION, OVER, UNDER, OUTSIDE_ZERO, CENTRE_ZERO, NET = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
PRINTABLE = 0x40
_BIT_NAMES = (
    (MOTION, "motion"),
    (OVER, "over capacity"),
    (UNDER, "under zero"),
    (OUTSIDE_ZERO, "outside zero capture range"),
    (CENTRE_ZERO, "centre of zero"),
    (NET, "net"),
)

TARE_CLEAR = Command("tare_clear")
_COMMANDS = {REQUEST_WEIGHT: b"W", ZERO: b"Z", TARE: b"T", TARE_CLEAR: b"C"}
_BY_BYTE = {v[0]: k for k, v in _COMMANDS.items()}


def describe_status(status: int) -> str:
    """The set bits of a status byte in words (``"motion, net"``), or ``"none"``."""
    return ", ".join(name for bit, name in _BIT_NAMES if status & bit) or "none"


class Toledo8217Codec(Codec):
    """Sans-I/O codec for the 8217 weight / status replies and ``W``/``Z``/``T``/``C``."""

    protocol_id: ClassVar[str] = "toledo-8217"
    max_frame: ClassVar[int] = _WINDOW
    commands: ClassVar[frozenset[str]] = frozenset(c.name for c in _COMMANDS)

    def __init__(
        self, *, decimals: int = 3, width: int = 7, unit: str = "kg", max_buffer: int = 4096
    ) -> None:
        super().__init__(max_buffer=max_buffer)
        if not 0 <= decimals <= 4 or not decimals + 1 <= width <= 12:
            raise EncodeError(f"bad decimals/width {decimals}/{width}")
        try:
            self.unit = parse_unit(unit)
        except UnitError as err:
            raise EncodeError(str(err)) from None
        if self.unit is MassUnit.LB:
            raise EncodeError("toledo-8217: the codec reads metric units only")
        self.decimals = decimals  # for encode, when a frame does not state decimals
        self.width = width  # characters of the weight field

    def _parse(self, buf: bytearray, pos: int) -> tuple[int, Parsed] | None:
        if pos >= len(buf):
            return None
        if buf[pos] != STX:
            n = skip_to(buf, pos, STX, start=0, window=_WINDOW)
            return None if n is None else (n, f"{n} bytes of garbage before STX")
        avail = len(buf) - pos
        if avail < 2:
            return None
        if buf[pos + 1] == QUERY:
            if avail < 4:
                return None
            if buf[pos + 3] == CR:  # fixed length: the status byte may even be CR
                return 4, self._status(buf[pos + 2])
        i = buf.find(CR, pos + 1, pos + _WINDOW)
        if i < 0 or buf.find(STX, pos + 1, i) >= 0:
            n = skip_to(buf, pos, STX, start=1, window=_WINDOW)
            return None if n is None else (n, "reply without CR")
        body = bytes(buf[pos + 1 : i])
        known = self._memo.get(body)
        if known is None:
            known = self._remember(body, self._weight(body))
        return i + 1 - pos, known

    def _status(self, status: int) -> WeightFrame | StatusReply:
        text = f"?{chr(status)}" if 0x20 <= status < 0x7F else f"?\\x{status:02x}"
        if status & (OVER | UNDER):
            return WeightFrame(
                weight_mg=0, stable=not status & MOTION, net=bool(status & NET),
                overload=bool(status & OVER), underload=bool(status & UNDER),
                zero=False, unit=self.unit.value, status=text,
            )
        return StatusReply(
            f"8217 status reply, no weight: {describe_status(status)}", text,
            motion=bool(status & MOTION),
        )

    def _weight(self, body: bytes) -> WeightFrame | str:
        m = _WEIGHT.fullmatch(body)
        if m is None:
            return f"not an 8217 weight: {body!r}"
        number, net = m.group(1).decode(), m.group(2)
        try:
            weight_mg = decimal_to_mg(number, self.unit)
        except UnitError as err:
            return f"8217 weight {number!r}: {err}"
        _, _, frac = number.partition(".")
        return WeightFrame(
            weight_mg=weight_mg, stable=True, net=bool(net), zero=weight_mg == 0,
            unit=self.unit.value, decimals=len(frac),
        )

    def encode(self, frame: WeightFrame) -> bytes:
        """Weight reply, or the status reply for motion / over capacity / under zero."""
        status = PRINTABLE | (NET if frame.net else 0)
        if frame.stable is False:
            status |= MOTION
        if frame.overload:
            status |= OVER
        if frame.underload or frame.weight_mg < 0:
            status |= UNDER
        if status & (MOTION | OVER | UNDER):
            return bytes([STX, QUERY, status, CR])
        if frame.unit != self.unit.value:
            raise EncodeError(f"this codec speaks {self.unit.value}, not {frame.unit}")
        dec = self.decimals if frame.decimals is None else frame.decimals
        try:
            text = mg_to_decimal(frame.weight_mg, self.unit, dec)
        except UnitError as err:
            raise EncodeError(str(err)) from None
        if len(text) > self.width:
            raise EncodeError(f"{text} does not fit {self.width} characters")
        return b"\x02" + text.rjust(self.width).encode() + (b"N" if frame.net else b"") + b"\r"

    def encode_command(self, command: Command) -> bytes:
        try:
            return _COMMANDS[command]
        except KeyError:
            raise EncodeError(f"toledo-8217 has no command {command}") from None

    def decode_command(self, data: bytes) -> tuple[int, Command | None]:
        if not data:
            return (0, None)
        return (1, _BY_BYTE.get(data[0]))
