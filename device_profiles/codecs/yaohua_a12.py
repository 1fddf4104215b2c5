"""耀华 Yaohua XK3190-A12 / A12E text output (protocol id ``yaohua-a12``).

Source: domain.md §3 [H]. One reading per line::

    w  K  [sign] digits[.digits]  unit  CR LF
    w  n  0001.25                 kg    CR LF     net 1.25 kg

* ``K`` is the kind of the displayed value: ``w`` gross, ``n`` net, ``t`` tare.
* The weight is signed fixed point (``-`` or ``+`` optional, leading zeros, the point
  where the display has it); its decimals are the frame's ``decimals``.
* Units: ``kg``, ``g``, ``t`` (tonnes, converted to milligrams exactly), ``lb``.
* The format has no stability or overload flag: ``stable`` is ``None``.
* A tare line (``wt…``) states the stored tare: it becomes a frame with
  ``status="tare"``, ``tare_mg`` = ``weight_mg`` = the tare. Consumers looking for
  loads must skip ``status == "tare"`` frames. Gross and net lines carry
  ``status="gross"`` / ``"net"``.

Host commands (single ASCII characters, no terminator): ``R`` read (request weight),
``T`` tare, ``Z`` zero.

Resynchronisation and bounds: line framing of :mod:`device_profiles.codecs.lines`
(a bad line is discarded whole; at most 32 bytes wait for a line end).
"""

from __future__ import annotations

import re
from typing import ClassVar

from device_profiles.codecs.base import (
    REQUEST_WEIGHT,
    TARE,
    ZERO,
    Command,
    EncodeError,
    Parsed,
    WeightFrame,
)
from device_profiles.codecs.lines import LineCodec
from weighing.errors import UnitError
from weighing.units import MassUnit, decimal_to_mg, mg_to_decimal, parse_unit

_LINE = re.compile(rb"w([wnt])([+-]?)(\d+(?:\.(\d+))?)([a-zA-Z]{1,2})")
_KIND = {b"w": "gross", b"n": "net", b"t": "tare"}
_KIND_CHAR = {v: k.decode() for k, v in _KIND.items()}
_COMMANDS = {REQUEST_WEIGHT: b"R", TARE: b"T", ZERO: b"Z"}
_BY_BYTE = {v[0]: k for k, v in _COMMANDS.items()}


def _to_mg(text: str, unit: str) -> int:
    if unit == "t":
        return decimal_to_mg(text, MassUnit.KG) * 1000
    return decimal_to_mg(text, parse_unit(unit))


class YaohuaA12Codec(LineCodec):
    """Sans-I/O codec for the A12 / A12E ``wn0001.25kg`` lines."""

    protocol_id: ClassVar[str] = "yaohua-a12"
    max_frame: ClassVar[int] = 32
    commands: ClassVar[frozenset[str]] = frozenset(c.name for c in _COMMANDS)

    def __init__(
        self, *, decimals: int = 2, width: int = 7, unit: str = "kg", max_buffer: int = 4096
    ) -> None:
        super().__init__(max_buffer=max_buffer)
        if not 0 <= decimals <= 6 or not decimals + 1 <= width <= 12:
            raise EncodeError(f"bad decimals/width {decimals}/{width}")
        if unit not in ("kg", "g", "t", "lb"):
            raise EncodeError(f"unit must be kg, g, t or lb, not {unit!r}")
        self.decimals = decimals  # for encode, when a frame does not state decimals
        self.width = width  # characters of the weight field, point and sign included
        self.unit = unit

    def _decode_line(self, line: bytes) -> Parsed:
        m = _LINE.fullmatch(line)
        if m is None:
            return f"not an A12 line: {line[:32]!r}"
        kind_b, sign, number, frac, unit_b = m.groups()
        unit = unit_b.decode().lower()
        try:
            weight_mg = _to_mg((sign + number).decode(), unit)
        except UnitError as err:
            return f"A12 line {line!r}: {err}"
        kind = _KIND[kind_b]
        decimals = len(frac) if frac else 0
        if unit == "t":  # shown in tonnes, stated in kilograms
            decimals = max(decimals - 3, 0)
        return WeightFrame(
            weight_mg=weight_mg,
            net=kind == "net",
            tare_mg=weight_mg if kind == "tare" else None,
            zero=weight_mg == 0,
            unit="kg" if unit == "t" else unit,
            decimals=decimals,
            status=kind,
        )

    def encode(self, frame: WeightFrame) -> bytes:
        dec = self.decimals if frame.decimals is None else frame.decimals
        kind = frame.status if frame.status in _KIND_CHAR else ("net" if frame.net else "gross")
        unit = self.unit if self.unit != "t" else "kg"
        if frame.unit != unit or self.unit == "lb":
            raise EncodeError(f"this codec encodes {self.unit}, not {frame.unit}")
        try:
            text = mg_to_decimal(abs(frame.weight_mg), MassUnit(unit), dec)
        except UnitError as err:
            raise EncodeError(str(err)) from None
        sign = "-" if frame.weight_mg < 0 else ""
        field = sign + text.rjust(self.width - len(sign), "0")
        return f"w{_KIND_CHAR[kind]}{field}{unit}\r\n".encode()

    def encode_command(self, command: Command) -> bytes:
        try:
            return _COMMANDS[command]
        except KeyError:
            raise EncodeError(f"yaohua-a12 has no command {command.name!r}") from None

    def decode_command(self, data: bytes) -> tuple[int, Command | None]:
        if not data:
            return (0, None)
        return (1, _BY_BYTE.get(data[0]))
