"""Toledo Dialog 04 price-computing scale interface (protocol id ``dialog04``).

Source: domain.md §3 [H] for the framing; the meaning of the status field and the
``09`` status record are [M] (not in domain.md; from the Dialog 02/04/06 family of
POS scale interfaces). Link: 4800 baud, 7 data bits, odd parity, 1 stop bit.
Request/response: the host sends ``EOT ENQ`` (``04 05``); the scale answers::

    STX "02" ESC s ESC wwwww ESC pppppp ESC tttttt ETX
    02  30 32 1B 33 1B 30 31 32 35 30 1B 30 30 31 32 30 30 1B 30 30 31 35 30 30 03
          "02"    "3"   "01250"          "001200"             "001500"
                        1.250 kg         12.00 元/kg           15.00 元

* ``s``: one status digit, kept in ``status`` (``"3"`` in the golden vector).
* ``wwwww``: weight, 5 digits with ``decimals`` implied decimals (codec option,
  default 3: kilograms to the gram).
* ``pppppp``: unit price in fen per kilogram; ``tttttt``: total price in fen. The
  amount is reported as the scale computed it (checking it is the detectors' job).
* A price-computing scale transmits only a settled, legal weight: ``stable=True``.
* Status record ``STX "09" ESC nn ETX`` (no weight; [M]) → :class:`StatusReplyError`
  with the code in ``status``.

The host may also set the unit price: ``Command("set_unit_price", "<fen per kg>")``
→ ``EOT STX "01" ESC pppppp ETX``.

Resynchronisation: bytes before an STX are one garbage stretch (discarded once the STX
arrives); a record that does not decode is discarded up to its ETX, or, without an ETX
within 32 bytes, up to the next STX. Searches look at most 32 bytes ahead, so any
chunking gives the same result. Buffer: at most 32 bytes wait for a decision.
"""

from __future__ import annotations

from typing import ClassVar

from device_profiles.codecs.base import (
    REQUEST_WEIGHT,
    Codec,
    Command,
    EncodeError,
    Parsed,
    StatusReply,
    WeightFrame,
    skip_to,
)
from weighing.errors import UnitError
from weighing.units import MassUnit, scaled_to_mg

STX, ETX, EOT, ENQ, ESC = 0x02, 0x03, 0x04, 0x05, 0x1B
_WINDOW = 32
_REQUEST = bytes([EOT, ENQ])
_SET_PRICE_HEAD = bytes([EOT, STX]) + b"01\x1b"


def _digits(field: bytes, n: int) -> int | None:
    if len(field) != n or not (field.isdigit() and field.isascii()):
        return None
    return int(field)


class Dialog04Codec(Codec):
    """Sans-I/O codec for Dialog 04 weight records (and the host's requests)."""

    protocol_id: ClassVar[str] = "dialog04"
    max_frame: ClassVar[int] = _WINDOW
    commands: ClassVar[frozenset[str]] = frozenset({"request_weight", "set_unit_price"})

    def __init__(self, *, decimals: int = 3, max_buffer: int = 4096) -> None:
        super().__init__(max_buffer=max_buffer)
        if not 0 <= decimals <= 5:
            raise EncodeError(f"decimals must be 0..5, not {decimals}")
        self.decimals = decimals

    def _parse(self, buf: bytearray, pos: int) -> tuple[int, Parsed] | None:
        if pos >= len(buf):
            return None
        if buf[pos] != STX:
            n = skip_to(buf, pos, STX, start=0, window=_WINDOW)
            return None if n is None else (n, f"{n} bytes of garbage before STX")
        i = buf.find(ETX, pos + 1, pos + _WINDOW)
        if i < 0 or buf.find(STX, pos + 1, i) >= 0:
            n = skip_to(buf, pos, STX, start=1, window=_WINDOW)
            return None if n is None else (n, "record without ETX")
        body = bytes(buf[pos + 1 : i])
        known = self._memo.get(body)
        if known is not None:
            return i + 1 - pos, known
        result = self._record(body)
        if not isinstance(result, StatusReply):
            self._remember(body, result)
        return i + 1 - pos, result

    def _record(self, body: bytes) -> WeightFrame | StatusReply | str:
        fields = body.split(b"\x1b")
        if fields[0] == b"09" and len(fields) == 2 and _digits(fields[1], 2) is not None:
            code = fields[1].decode()
            return StatusReply(f"Dialog status record 09, code {code}", f"09 {code}")
        if fields[0] != b"02":
            return f"unknown Dialog record {fields[0][:8]!r}"
        if len(fields) != 5:
            return f"Dialog record 02 needs 5 fields, got {len(fields)}"
        status, weight, price, total = (
            fields[1], _digits(fields[2], 5), _digits(fields[3], 6), _digits(fields[4], 6)
        )
        if not (len(status) == 1 and status.isdigit() and status.isascii()):
            return f"Dialog status {status!r} is not one digit"
        if weight is None or price is None or total is None:
            return "Dialog weight / price / total is not 5 / 6 / 6 digits"
        try:
            weight_mg = scaled_to_mg(weight, self.decimals, MassUnit.KG)
        except UnitError as err:
            raise AssertionError(str(err)) from err  # kg with ≤ 5 decimals is exact
        return WeightFrame(
            weight_mg=weight_mg, stable=True, zero=weight_mg == 0, unit="kg",
            decimals=self.decimals, unit_price_fen_per_kg=price, amount_fen=total,
            status=status.decode(),
        )

    def encode(self, frame: WeightFrame) -> bytes:
        if frame.unit != "kg":
            raise EncodeError("Dialog 04 states kilograms")
        per = scaled_to_mg(1, self.decimals, MassUnit.KG)
        weight, rem = divmod(frame.weight_mg, per)
        price = frame.unit_price_fen_per_kg or 0
        total = frame.amount_fen or 0
        if rem or not 0 <= weight <= 99_999:
            raise EncodeError(f"{frame.weight_mg} mg does not fit 5 digits")
        if not (0 <= price <= 999_999 and 0 <= total <= 999_999):
            raise EncodeError("unit price / total do not fit 6 digits")
        status = frame.status if frame.status and frame.status.isdigit() else "3"
        text = f"02\x1b{status[:1]}\x1b{weight:05d}\x1b{price:06d}\x1b{total:06d}"
        return bytes([STX]) + text.encode() + bytes([ETX])

    def encode_command(self, command: Command) -> bytes:
        if command == REQUEST_WEIGHT:
            return _REQUEST
        if command.name == "set_unit_price" and command.arg and command.arg.isdigit():
            fen = int(command.arg)
            if fen <= 999_999:
                return _SET_PRICE_HEAD + f"{fen:06d}".encode() + bytes([ETX])
        raise EncodeError(f"dialog04 has no command {command}")

    def decode_command(self, data: bytes) -> tuple[int, Command | None]:
        if len(data) < 2:
            return (0, None) if not data or data[0] == EOT else (1, None)
        if data[0] != EOT:
            return (1, None)
        if data[1] == ENQ:
            return (2, REQUEST_WEIGHT)
        if data[1] != STX:
            return (1, None)
        i = data.find(ETX, 2, _WINDOW)
        if i < 0:
            return (0, None) if len(data) < _WINDOW else (1, None)
        body = data[:i]
        if body.startswith(_SET_PRICE_HEAD) and _digits(body[len(_SET_PRICE_HEAD):], 6) is not None:
            return (i + 1, Command("set_unit_price", str(int(body[len(_SET_PRICE_HEAD):]))))
        return (i + 1, None)
