"""Toledo Dialog 04 price-computing interface (device_profiles/codecs/dialog04.py)."""

from __future__ import annotations

import pytest
from codec_props import (
    check_commands,
    codec_properties,
)
from hypothesis import strategies as st

from device_profiles.codecs import (
    REQUEST_WEIGHT,
    TARE,
    Command,
    EncodeError,
    StatusReplyError,
    WeightFrame,
)
from device_profiles.codecs.dialog04 import Dialog04Codec
from weighing.units import amount_fen


def make() -> Dialog04Codec:
    return Dialog04Codec()


# domain.md §3, Toledo Dialog 04: 1.250 kg × 12.00 = 15.00
GOLDEN = bytes.fromhex(
    "02 30 32 1B 33 1B 30 31 32 35 30 1B 30 30 31 32 30 30 1B 30 30 31 35 30 30 03"
)


def test_golden_vector() -> None:
    codec = make()
    assert codec.encode_command(REQUEST_WEIGHT) == b"\x04\x05"
    (frame,), errors = codec.feed(GOLDEN)
    assert errors == []
    assert frame == WeightFrame(
        weight_mg=1_250_000, stable=True, zero=False, decimals=3,
        unit_price_fen_per_kg=1200, amount_fen=1500, status="3",
    )
    assert frame.amount_fen == amount_fen(frame.weight_mg, 1200)
    assert codec.encode(frame) == GOLDEN


def test_status_record() -> None:
    frames, errors = make().feed(b"\x0209\x1b20\x03" + GOLDEN)
    assert len(frames) == 1
    (err,) = errors
    assert isinstance(err, StatusReplyError) and err.status == "09 20"


def test_bad_field_discarded_to_etx() -> None:
    bad = GOLDEN.replace(b"01250", b"0125x")
    frames, errors = make().feed(bad + GOLDEN)
    assert len(frames) == 1 and [(e.offset, e.length) for e in errors] == [(0, 26)]


def test_commands() -> None:
    codec = make()
    check_commands(codec, [REQUEST_WEIGHT, Command("set_unit_price", "1200")])
    assert codec.encode_command(Command("set_unit_price", "1200")) == b"\x04\x0201\x1b001200\x03"
    with pytest.raises(EncodeError):
        codec.encode_command(TARE)
    assert codec.decode_command(b"\x04") == (0, None)
    assert codec.decode_command(b"x\x04\x05") == (1, None)


@st.composite
def frames(draw: st.DrawFn) -> WeightFrame:
    weight = draw(st.integers(0, 99_999)) * 1000
    price = draw(st.integers(0, 999_999))
    total = draw(st.integers(0, 999_999))
    return WeightFrame(
        weight_mg=weight, stable=True, zero=weight == 0, decimals=3,
        unit_price_fen_per_kg=price, amount_fen=total, status=draw(st.sampled_from("0123")),
    )


(
    test_round_trip,
    test_one_byte_at_a_time_equals_all_at_once,
    test_fuzz_only_frame_errors_then_recovery,
) = codec_properties(make, frames())
