"""Mettler-Toledo Standard Interface Command Set, MT-SICS (protocol id ``mt-sics``).

Source: domain.md §3 [H] (MT-SICS reference manual, level 0/1 commands). Request /
response: the host sends a command line, the balance answers with one line. Every
line ends with CR LF; replies are split on whitespace, never on fixed columns.

Host commands (``encode_command``)::

    request_weight          SI    immediate weight (stable or not): the polling request
    request_weight "stable" S     stable weight (the balance waits for stability)
    zero                    Z
    tare                    T
    tare_preset "<w> <u>"   TA <w> <u>
    tare_query              TA
    tare_clear              TAC
    serial_number           I4

Replies (``S``/``SI`` both answer with identifier ``S``)::

    S S <weight> <unit>   stable weight             → WeightFrame(stable=True)
    S D <weight> <unit>   dynamic (in motion)       → WeightFrame(stable=False)
    S +   /   S -         overload / underload      → WeightFrame(weight_mg=0,
                                                       overload/underload=True)
    S I                   busy, no weight           → StatusReplyError
    Z I / Z + / Z -, T I / T + / T -, … L, ES, ET, EL
                          command refused / error   → StatusReplyError
    Z A, T S <w> <u>, TA A <w> <u>, TAC A, I4 A "<sn>"
                          acknowledgement           → consumed, no frame;
                                                      kept in ``last_ack``

Decision: overload and underload are states of the load, so they are frames (with
``weight_mg=0``: the reply carries no weight, and ``stable=None``). Busy replies and
errors are refusals by the device: a :class:`StatusReplyError` (a ``FrameError`` whose
bytes were good) with a reason, counted by the caller. Acknowledgements carry no
reading and are consumed silently; the last one is kept for diagnostics. An ``S D``
reply is a normal frame in motion.

Resynchronisation and bounds: line framing of :mod:`device_profiles.codecs.lines`
(a bad line is discarded whole; at most 64 bytes wait for a line end).
"""

from __future__ import annotations

from typing import ClassVar

from device_profiles.codecs.base import (
    REQUEST_WEIGHT,
    TARE,
    ZERO,
    Command,
    EncodeError,
    Parsed,
    StatusReply,
    WeightFrame,
)
from device_profiles.codecs.lines import LineCodec, ascii_text
from weighing.errors import UnitError
from weighing.units import MassUnit, decimal_to_mg, mg_to_decimal, parse_unit

REQUEST_STABLE = Command("request_weight", "stable")
TARE_CLEAR = Command("tare_clear")
TARE_QUERY = Command("tare_query")
SERIAL_NUMBER = Command("serial_number")

_FIXED = {
    REQUEST_WEIGHT: "SI",
    REQUEST_STABLE: "S",
    ZERO: "Z",
    TARE: "T",
    TARE_QUERY: "TA",
    TARE_CLEAR: "TAC",
    SERIAL_NUMBER: "I4",
}
_BY_TEXT = {v: k for k, v in _FIXED.items()}

_ERRORS = {
    "ES": "syntax error: the balance did not recognise the command",
    "ET": "transmission error: the balance received a faulty command",
    "EL": "logical error: the command cannot be executed",
}
_REFUSALS = {
    "I": "busy, command not executable now",
    "L": "logical error (parameter not allowed)",
    "+": "upper limit exceeded",
    "-": "lower limit exceeded",
}
_ACKS = {("Z", "A"), ("T", "S"), ("TA", "A"), ("TAC", "A"), ("I4", "A")}


class MtSicsCodec(LineCodec):
    """Sans-I/O codec for MT-SICS replies (host side) and commands (device side)."""

    protocol_id: ClassVar[str] = "mt-sics"
    max_frame: ClassVar[int] = 64
    commands: ClassVar[frozenset[str]] = frozenset(
        {c.name for c in _FIXED} | {"tare_preset"}
    )

    def __init__(self, *, decimals: int = 3, unit: str = "kg", max_buffer: int = 4096) -> None:
        super().__init__(max_buffer=max_buffer)
        if not 0 <= decimals <= 6:
            raise EncodeError(f"decimals must be 0..6, not {decimals}")
        try:
            self.unit = parse_unit(unit)
        except UnitError as err:
            raise EncodeError(str(err)) from None
        self.decimals = decimals  # for encode, when a frame does not state decimals
        self.last_ack: str | None = None

    def _decode_line(self, line: bytes) -> Parsed:
        text = ascii_text(line)
        if text is None:
            return f"not an MT-SICS reply: {line[:32]!r}"
        parts = text.split()
        if not parts:
            return "empty MT-SICS reply"
        ident = parts[0]
        if ident in _ERRORS:
            return StatusReply(f"MT-SICS {ident}: {_ERRORS[ident]}", ident)
        if len(parts) < 2:
            return f"MT-SICS reply without status: {text!r}"
        status = parts[1]
        if ident == "S":
            if status in ("S", "D"):
                return self._weight(parts, stable=status == "S")
            if status in ("+", "-"):
                return WeightFrame(
                    weight_mg=0, overload=status == "+", underload=status == "-",
                    status=f"S {status}",
                )
        if (ident, status) in _ACKS:
            self.last_ack = " ".join(parts)
            return None
        if status in _REFUSALS and ident in ("S", "Z", "T", "TA", "TAC", "I4", "SI"):
            return StatusReply(
                f"MT-SICS {ident} {status}: {_REFUSALS[status]}", f"{ident} {status}"
            )
        return f"unknown MT-SICS reply {text[:32]!r}"

    @staticmethod
    def _weight(parts: list[str], *, stable: bool) -> WeightFrame | str:
        if len(parts) != 4:
            return f"MT-SICS weight reply needs 4 fields, got {len(parts)}"
        value, unit = parts[2], parts[3]
        try:
            weight_mg = decimal_to_mg(value, unit)
            unit_name = parse_unit(unit).value
        except UnitError as err:
            return f"MT-SICS weight {value} {unit}: {err}"
        _, _, frac = value.partition(".")
        return WeightFrame(
            weight_mg=weight_mg, stable=stable, zero=weight_mg == 0, unit=unit_name,
            decimals=len(frac), status="S S" if stable else "S D",
        )

    def encode(self, frame: WeightFrame) -> bytes:
        if frame.overload:
            return b"S +\r\n"
        if frame.underload:
            return b"S -\r\n"
        dec = self.decimals if frame.decimals is None else frame.decimals
        try:
            unit = parse_unit(frame.unit)
            if unit is MassUnit.LB:
                raise UnitError("pounds are not encoded")
            value = mg_to_decimal(frame.weight_mg, unit, dec)
        except UnitError as err:
            raise EncodeError(str(err)) from None
        flag = "D" if frame.stable is False else "S"
        return f"S {flag} {value:>10} {unit.value}\r\n".encode()

    def encode_command(self, command: Command) -> bytes:
        if command.name == "tare_preset":
            if not command.arg or "\r" in command.arg or "\n" in command.arg:
                raise EncodeError("tare_preset needs a weight and unit, e.g. '0.500 kg'")
            return f"TA {command.arg}\r\n".encode()
        text = _FIXED.get(command)
        if text is None:
            raise EncodeError(f"mt-sics has no command {command}")
        return f"{text}\r\n".encode()

    def decode_command(self, data: bytes) -> tuple[int, Command | None]:
        i = data.find(b"\n", 0, self.max_frame)
        if i < 0:
            return (0, None) if len(data) < self.max_frame else (len(data), None)
        text = data[:i].decode("ascii", "replace").strip()
        head, _, arg = text.partition(" ")
        if head == "TA" and arg.strip():
            return (i + 1, Command("tare_preset", " ".join(arg.split())))
        return (i + 1, _BY_TEXT.get(text))
