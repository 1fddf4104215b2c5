"""Weight-embedded EAN-13 label codes (device_profiles/codecs/ean13_weight.py)."""

from __future__ import annotations

import pytest
from codec_props import codec_properties
from hypothesis import strategies as st

from device_profiles.codecs import EncodeError, WeightFrame
from device_profiles.codecs.ean13_weight import Ean13WeightCodec, check_digit


def make() -> Ean13WeightCodec:
    return Ean13WeightCodec()


# domain.md §3, weight-embedded EAN-13 [M]: `2100123012503`
GOLDEN = b"2100123012503"


def test_golden_vector() -> None:
    assert check_digit("210012301250") == 3
    (frame,), errors = make().feed(GOLDEN + b"\r\n")
    assert errors == []
    assert frame == WeightFrame(
        weight_mg=1_250_000, stable=True, net=True, zero=False, decimals=3, plu="00123",
        print_request=True, status="2100123012503",
    )
    assert make().encode(frame) == GOLDEN + b"\r\n"


@pytest.mark.parametrize("end", [b"\r", b"\n", b"\r\n"])
def test_any_reader_terminator(end: bytes) -> None:
    codec = make()
    frames, errors = codec.feed((GOLDEN + end) * 3)
    assert errors == [] and len(frames) == 3
    assert codec.flush() is None


def test_check_digit_and_prefix_rejected() -> None:
    frames, errors = make().feed(b"2100123012504\r\n6901234567892\r\n" + GOLDEN + b"\r")
    assert len(frames) == 1
    assert ["check digit" in errors[0].reason, "prefix" in errors[1].reason] == [True, True]


def test_price_mode_and_prefix_filter() -> None:
    codec = Ean13WeightCodec(value="price", prefixes="21,22")
    (frame,), _ = codec.feed(GOLDEN + b"\n")
    assert (frame.weight_mg, frame.amount_fen, frame.stable, frame.plu) == (0, 1250, None, "00123")
    assert codec.encode(frame) == GOLDEN + b"\r\n"
    _, errors = codec.feed(b"2300123012501\n")
    assert "prefix" in errors[0].reason
    with pytest.raises(EncodeError):
        Ean13WeightCodec(value="volume")


@st.composite
def frames(draw: st.DrawFn) -> WeightFrame:
    grams = draw(st.integers(0, 99_999))
    plu = f"{draw(st.integers(0, 99_999)):05d}"
    prefix = draw(st.sampled_from(["20", "21", "22", "28", "29"]))
    first12 = f"{prefix}{plu}{grams:05d}"
    return WeightFrame(
        weight_mg=grams * 1000, stable=True, net=True, zero=grams == 0, decimals=3, plu=plu,
        print_request=True, status=first12 + str(check_digit(first12)),
    )


(
    test_round_trip,
    test_one_byte_at_a_time_equals_all_at_once,
    test_fuzz_only_frame_errors_then_recovery,
) = codec_properties(make, frames())
