"""Transaction record of a smart traceability scale (protocol id ``trace-record``).

Source: defined by this project (docs/protocols.md, "trace-record"), after domain.md §3:
Chinese traceability-scale vendors use proprietary protocols with no public
specification, so a traceability-scale transaction is a profile-defined record of
weight, unit price, amount, PLU, traceability code and time. One record per line,
fields separated by commas, ASCII only::

    TR,<seq>,<time>,<plu>,<net kg>,<tare kg>,<unit price 元/kg>,<amount 元>,<trace>,<crc>CR LF
    TR,42,2024-05-01T08:30:15,00123,1.250,0.000,12.00,15.00,3301020240501000042,XXXX

=============  =================================================================
``TR``         record tag
seq            transaction counter of the scale, 1–10 digits (gaps reveal lost or
               deleted sales); kept as ``status = "seq=<n>"``
time           device time ``YYYY-MM-DDTHH:MM:SS`` as the scale states it (``ts_text``;
               the codec checks the calendar, never a clock)
plu            1–16 letters or digits
net kg         net weight, ``\\d+\\.\\d{3}`` (≥ 0)
tare kg        tare, ``\\d+\\.\\d{3}``
unit price     yuan per kilogram, ``\\d+\\.\\d{2}`` → ``unit_price_fen_per_kg``
amount         yuan, ``\\d+\\.\\d{2}`` → ``amount_fen`` (as the scale computed it;
               checking it against weight × price is the detectors' job)
trace          traceability code, 0–32 letters, digits or ``-`` (empty allowed)
crc            CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of every byte from the
               ``T`` of ``TR`` up to and including the comma before it, as 4
               upper-case hexadecimal digits
=============  =================================================================

A record is a committed, printed sale: ``print_request=True``, ``stable=True``,
``net=True``.

Resynchronisation and bounds: line framing of :mod:`device_profiles.codecs.lines`
(a record that fails its CRC or a field check is discarded whole; at most 192 bytes
wait for a line end).
"""

from __future__ import annotations

import binascii
import re
from datetime import datetime
from typing import ClassVar

from device_profiles.codecs.base import EncodeError, Parsed, WeightFrame
from device_profiles.codecs.lines import LineCodec
from weighing.errors import UnitError
from weighing.units import MassUnit, amount_fen, decimal_to_mg, mg_to_decimal, yuan_to_fen

_RECORD = re.compile(
    rb"TR,(\d{1,10}),(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d),([0-9A-Za-z]{1,16}),"
    rb"(\d{1,6}\.\d{3}),(\d{1,6}\.\d{3}),(\d{1,7}\.\d{2}),(\d{1,8}\.\d{2}),"
    rb"([0-9A-Za-z\-]{0,32}),"
)
_TS = "%Y-%m-%dT%H:%M:%S"
_NO_TIME = "2000-01-01T00:00:00"


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR."""
    return binascii.crc_hqx(data, 0xFFFF)


class TraceRecordCodec(LineCodec):
    """Sans-I/O codec for ``TR,…`` transaction records."""

    protocol_id: ClassVar[str] = "trace-record"
    max_frame: ClassVar[int] = 192

    def __init__(self, *, max_buffer: int = 4096) -> None:
        super().__init__(max_buffer=max_buffer)
        self._next_seq = 1  # encode: for frames that carry no "seq=<n>" status

    def _decode_line(self, line: bytes) -> Parsed:
        m = _RECORD.match(line)
        if m is None:
            return f"not a trace record: {line[:40]!r}"
        body_end = m.end()
        crc_text = line[body_end:]
        if len(crc_text) != 4 or not all(c in b"0123456789ABCDEF" for c in crc_text):
            return f"trace record: checksum field {crc_text[:8]!r} is not 4 hex digits"
        expected = crc16(line[:body_end])
        if int(crc_text, 16) != expected:
            return f"trace record: CRC {crc_text.decode()} != {expected:04X}"
        seq, ts, plu, net, tare, price, amount, trace = (g.decode() for g in m.groups())
        try:
            datetime.strptime(ts, _TS)
        except ValueError:
            return f"trace record: time {ts!r} is not a calendar time"
        try:
            net_mg = decimal_to_mg(net, MassUnit.KG)
            tare_mg = decimal_to_mg(tare, MassUnit.KG)
            price_fen = yuan_to_fen(price)
            total_fen = yuan_to_fen(amount)
        except UnitError as err:  # unreachable: the pattern fixes the decimals
            return f"trace record: {err}"
        return WeightFrame(
            weight_mg=net_mg, stable=True, net=True, tare_mg=tare_mg, zero=net_mg == 0,
            decimals=3, unit_price_fen_per_kg=price_fen, amount_fen=total_fen, plu=plu,
            trace_code=trace, ts_text=ts, print_request=True, status=f"seq={int(seq)}",
        )

    def encode(self, frame: WeightFrame) -> bytes:
        """One record (the emulator's side).

        Fields a frame lacks get defaults, so an emulator can replay any settled frame:
        ``seq`` counts up, time ``2000-01-01T00:00:00`` (codecs read no clock), PLU
        ``0``, unit price 0, amount = weight × unit price rounded to the fen.
        """
        st = frame.status or ""
        if st.startswith("seq=") and st[4:].isdigit():
            seq = int(st[4:])
        else:
            seq, self._next_seq = self._next_seq, self._next_seq + 1
        if frame.unit != "kg" or frame.weight_mg < 0:
            raise EncodeError("a trace record states a non-negative net weight in kg")
        ts = frame.ts_text or _NO_TIME
        price = frame.unit_price_fen_per_kg or 0
        amount = frame.amount_fen
        if amount is None:
            amount = amount_fen(frame.weight_mg, price)
        if price < 0 or amount < 0:
            raise EncodeError("a trace record needs a non-negative unit price and amount")
        try:
            net = mg_to_decimal(frame.weight_mg, MassUnit.KG, 3)
            tare = mg_to_decimal(frame.tare_mg or 0, MassUnit.KG, 3)
        except UnitError as err:
            raise EncodeError(str(err)) from None
        body = (
            f"TR,{seq},{ts},{frame.plu or '0'},{net},{tare},"
            f"{price // 100}.{price % 100:02d},{amount // 100}.{amount % 100:02d},"
            f"{frame.trace_code or ''},"
        ).encode("ascii", "replace")
        if _RECORD.fullmatch(body) is None:
            raise EncodeError(f"frame does not fit a trace record: {body!r}")
        return body + f"{crc16(body):04X}\r\n".encode()
