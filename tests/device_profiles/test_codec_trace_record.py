"""Traceability-scale transaction records (device_profiles/codecs/trace_record.py).

The format is defined by this project: docs/protocols.md, "trace-record".
"""

from __future__ import annotations

from codec_props import codec_properties
from hypothesis import strategies as st

from device_profiles.codecs import WeightFrame
from device_profiles.codecs.trace_record import TraceRecordCodec, crc16
from weighing.units import amount_fen


def make() -> TraceRecordCodec:
    return TraceRecordCodec()


# docs/protocols.md, trace-record worked example
GOLDEN = (
    b"TR,42,2024-05-01T08:30:15,00123,1.250,0.000,12.00,15.00,3301020240501000042,086D\r\n"
)
GOLDEN_FRAME = WeightFrame(
    weight_mg=1_250_000, stable=True, net=True, tare_mg=0, zero=False, decimals=3,
    unit_price_fen_per_kg=1200, amount_fen=1500, plu="00123",
    trace_code="3301020240501000042", ts_text="2024-05-01T08:30:15", print_request=True,
    status="seq=42",
)


def test_golden_vector() -> None:
    assert crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value
    frames, errors = make().feed(GOLDEN)
    assert errors == [] and frames == [GOLDEN_FRAME]
    assert make().encode(GOLDEN_FRAME) == GOLDEN


def test_corruption_is_detected() -> None:
    for i in range(len(GOLDEN) - 6):  # every single-character change in the body
        bad = bytearray(GOLDEN)
        bad[i] = ord("7") if bad[i] != ord("7") else ord("8")
        frames, errors = make().feed(bytes(bad))
        assert frames == [] and len(errors) == 1, bad


def test_bad_calendar_time() -> None:
    body = b"TR,1,2024-02-30T08:30:15,1,1.000,0.000,1.00,1.00,,"
    line = body + f"{crc16(body):04X}\r\n".encode()
    _, errors = make().feed(line)
    assert "calendar" in errors[0].reason


def test_encode_defaults_for_an_emulator() -> None:
    codec = make()
    data = codec.encode(WeightFrame(weight_mg=500_000, unit_price_fen_per_kg=1999))
    (frame,), _ = make().feed(data)
    assert frame.status == "seq=1" and frame.amount_fen == amount_fen(500_000, 1999) == 1000
    assert frame.plu == "0" and frame.ts_text == "2000-01-01T00:00:00"


_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@st.composite
def frames(draw: st.DrawFn) -> WeightFrame:
    net = draw(st.integers(0, 999_999)) * 1000
    price = draw(st.integers(0, 99_999_99))
    y, mo, d = draw(st.integers(2000, 2099)), draw(st.integers(1, 12)), draw(st.integers(1, 28))
    h, mi, s = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    ts = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    return WeightFrame(
        weight_mg=net, stable=True, net=True, tare_mg=draw(st.integers(0, 99_999)) * 1000,
        zero=net == 0, decimals=3, unit_price_fen_per_kg=price,
        amount_fen=amount_fen(net, price), plu=draw(st.text(_ALNUM, min_size=1, max_size=16)),
        trace_code=draw(st.text(_ALNUM + "-", max_size=32)), ts_text=ts, print_request=True,
        status=f"seq={draw(st.integers(0, 9_999_999_999))}",
    )


(
    test_round_trip,
    test_one_byte_at_a_time_equals_all_at_once,
    test_fuzz_only_frame_errors_then_recovery,
) = codec_properties(make, frames())
