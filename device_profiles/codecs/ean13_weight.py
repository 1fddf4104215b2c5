"""Weight-embedded EAN-13 label codes, as a barcode reader sends them (``ean13-weight``).

Source: domain.md §3 [M] (GS1 restricted-circulation numbers, prefix 20–29, as label
scales print them). One code per line, as a reader in keyboard or serial mode sends it
(terminated by CR, LF or CR LF)::

    2 x  P P P P P  V V V V V  C        2100123012503
    prefix  PLU      value     check    PLU 00123, 01250 g = 1.250 kg, check 3

* ``2x``: a restricted-circulation prefix, 20–29 (codec option ``prefixes`` limits it,
  e.g. ``"21,22"``; default any).
* ``PLU``: 5 digits, kept as text in ``plu``.
* ``value``: 5 digits, a weight in grams (codec option ``value = "weight"``, the
  default) or a price in fen (``value = "price"``).
* ``C``: the EAN-13 mod-10 check digit (weights 1, 3, 1, 3, … over the first 12 digits);
  a code that fails it is rejected.

A printed label is a committed transaction: ``print_request=True``, the weight is the
settled net weight (``stable=True``, ``net=True``). The whole code is kept in
``status``. A price label carries no weight: ``weight_mg=0`` with ``stable=None``,
``zero=None`` and the price in ``amount_fen`` (consumers must not read its weight).

Resynchronisation and bounds: line framing of :mod:`device_profiles.codecs.lines`, with
CR also ending a line; CR/LF padding is absorbed; a line that is not a valid
weight-embedded EAN-13 is discarded whole; at most 32 bytes wait for a line end.
"""

from __future__ import annotations

from typing import ClassVar

from device_profiles.codecs.base import EncodeError, Parsed, WeightFrame
from device_profiles.codecs.lines import LineCodec

_WEIGHTS = (1, 3) * 6
_TERMINATORS = {"cr": "\r", "lf": "\n", "crlf": "\r\n"}


def check_digit(first12: str) -> int:
    """The EAN-13 check digit of 12 digits."""
    total = sum(w * (ord(c) - 48) for w, c in zip(_WEIGHTS, first12, strict=True))
    return (10 - total % 10) % 10


class Ean13WeightCodec(LineCodec):
    """Sans-I/O codec for weight- or price-embedded EAN-13 codes, one per line."""

    protocol_id: ClassVar[str] = "ean13-weight"
    max_frame: ClassVar[int] = 32
    cr_ends_line: ClassVar[bool] = True

    def __init__(
        self,
        *,
        value: str = "weight",
        prefixes: str = "",
        prefix: str = "21",
        terminator: str = "crlf",
        max_buffer: int = 4096,
    ) -> None:
        super().__init__(max_buffer=max_buffer)
        if value not in ("weight", "price"):
            raise EncodeError(f"value must be 'weight' or 'price', not {value!r}")
        allowed = tuple(p.strip() for p in prefixes.split(",") if p.strip())
        if any(not (len(p) == 2 and p.isdigit() and p[0] == "2") for p in (*allowed, prefix)):
            raise EncodeError(f"prefixes are 20..29, not {prefixes!r} / {prefix!r}")
        if terminator not in _TERMINATORS:
            raise EncodeError(f"terminator must be cr, lf or crlf, not {terminator!r}")
        self.value = value
        self.prefixes = allowed
        self.prefix = prefix  # for encode
        self.terminator = _TERMINATORS[terminator]

    def _decode_line(self, line: bytes) -> Parsed:
        if len(line) != 13 or not (line.isdigit() and line.isascii()):
            return f"not an EAN-13 code: {line[:32]!r}"
        code = line.decode()
        if code[0] != "2" or (self.prefixes and code[:2] not in self.prefixes):
            return f"EAN-13 {code}: prefix {code[:2]} is not a weight-embedded prefix"
        if check_digit(code[:12]) != ord(code[12]) - 48:
            return f"EAN-13 {code}: check digit should be {check_digit(code[:12])}"
        plu, value = code[2:7], int(code[7:12])
        if self.value == "weight":
            return WeightFrame(
                weight_mg=value * 1000, stable=True, net=True, zero=value == 0,
                decimals=3, plu=plu, print_request=True, status=code,
            )
        return WeightFrame(weight_mg=0, amount_fen=value, plu=plu, print_request=True, status=code)

    def encode(self, frame: WeightFrame) -> bytes:
        plu = frame.plu or "0"
        if not (plu.isdigit() and plu.isascii() and len(plu) <= 5):
            raise EncodeError(f"PLU {plu!r} is not up to 5 digits")
        if self.value == "weight":
            grams, rem = divmod(frame.weight_mg, 1000)
            if frame.unit != "kg" or rem or not 0 <= grams <= 99_999:
                raise EncodeError(f"{frame.weight_mg} mg is not 0..99999 whole grams")
            value = grams
        else:
            value = frame.amount_fen if frame.amount_fen is not None else -1
            if not 0 <= value <= 99_999:
                raise EncodeError(f"amount {frame.amount_fen} fen is not 0..99999")
        st = frame.status or ""
        prefix = st[:2] if len(st) == 13 and st.isdigit() and st[0] == "2" else self.prefix
        first12 = f"{prefix}{int(plu):05d}{value:05d}"
        return f"{first12}{check_digit(first12)}{self.terminator}".encode()
