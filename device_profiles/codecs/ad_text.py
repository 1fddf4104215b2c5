"""A&D-style text output of many Chinese indicators (protocol id ``ad-text``).

Source: domain.md §3 [M] (the A&D indicator data format, widely copied). One reading
per line::

    HH , KK , weight unit CR LF
    ST , GS , +0001.250 kg \\r\\n     stable gross 1.250 kg

* ``HH``: ``ST`` stable, ``US`` unstable, ``OL`` out of range (overload with ``+``,
  underload with ``-``; the digits of an ``OL`` line are filler, so the frame has
  ``weight_mg=0``).
* ``KK``: ``GS`` gross, ``NT`` net.
* weight: sign (``+``/``-``, or a space for plus), digits with the display's point,
  leading zeros; spaces may pad the unit (``" g"``). Units: ``kg``, ``g``, ``lb``.

Resynchronisation and bounds: line framing of :mod:`device_profiles.codecs.lines`
(a bad line is discarded whole; at most 32 bytes wait for a line end).
"""

from __future__ import annotations

import re
from typing import ClassVar

from device_profiles.codecs.base import EncodeError, Parsed, WeightFrame
from device_profiles.codecs.lines import LineCodec
from weighing.errors import UnitError
from weighing.units import MassUnit, decimal_to_mg, mg_to_decimal, parse_unit

_LINE = re.compile(rb"(ST|US|OL),(GS|NT),([+\- ]?)(\d+(?:\.(\d*))?) *([a-zA-Z]{1,2})")


class AdTextCodec(LineCodec):
    """Sans-I/O codec for ``ST,GS,+0001.250kg`` lines."""

    protocol_id: ClassVar[str] = "ad-text"
    max_frame: ClassVar[int] = 32

    def __init__(
        self, *, decimals: int = 3, width: int = 8, unit: str = "kg", max_buffer: int = 4096
    ) -> None:
        super().__init__(max_buffer=max_buffer)
        if not 0 <= decimals <= 6 or not decimals + 1 <= width <= 12:
            raise EncodeError(f"bad decimals/width {decimals}/{width}")
        try:
            self.unit = parse_unit(unit)
        except UnitError as err:
            raise EncodeError(str(err)) from None
        if self.unit is MassUnit.LB:
            raise EncodeError("ad-text: the emulator encodes metric units only")
        self.decimals = decimals  # for encode, when a frame does not state decimals
        self.width = width  # digits and point, without the sign

    def _decode_line(self, line: bytes) -> Parsed:
        m = _LINE.fullmatch(line)
        if m is None:
            return f"not an A&D line: {line[:32]!r}"
        head, kind, sign, number, frac, unit_b = m.groups()
        try:
            unit = parse_unit(unit_b.decode()).value
            weight_mg = decimal_to_mg(number.decode(), unit)
        except UnitError as err:
            return f"A&D line {line!r}: {err}"
        negative = sign == b"-"
        if head == b"OL":
            return WeightFrame(
                weight_mg=0, net=kind == b"NT", overload=not negative, underload=negative,
                unit=unit, status="OL",
            )
        if negative:
            weight_mg = -weight_mg
        return WeightFrame(
            weight_mg=weight_mg, stable=head == b"ST", net=kind == b"NT",
            zero=weight_mg == 0, unit=unit, decimals=len(frac) if frac is not None else 0,
            status=head.decode(),
        )

    def encode(self, frame: WeightFrame) -> bytes:
        kind = "NT" if frame.net else "GS"
        unit = self.unit.value
        if frame.unit != unit:
            raise EncodeError(f"this codec speaks {unit}, not {frame.unit}")
        dec = self.decimals if frame.decimals is None else frame.decimals
        if frame.overload or frame.underload:
            filler = "9" * (self.width - dec - 1) + ("." + "9" * dec if dec else "9")
            return f"OL,{kind},{'-' if frame.underload else '+'}{filler}{unit}\r\n".encode()
        try:
            text = mg_to_decimal(abs(frame.weight_mg), self.unit, dec)
        except UnitError as err:
            raise EncodeError(str(err)) from None
        if len(text) > self.width:
            raise EncodeError(f"{text} does not fit {self.width} characters")
        head = "US" if frame.stable is False else "ST"
        sign = "-" if frame.weight_mg < 0 else "+"
        return f"{head},{kind},{sign}{text.rjust(self.width, '0')}{unit}\r\n".encode()
