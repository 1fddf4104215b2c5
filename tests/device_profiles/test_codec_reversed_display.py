"""'=' + reversed display characters (device_profiles/codecs/reversed_display.py)."""

from __future__ import annotations

from codec_props import codec_properties
from hypothesis import strategies as st

from device_profiles.codecs import WeightFrame
from device_profiles.codecs.reversed_display import ReversedDisplayCodec


def make() -> ReversedDisplayCodec:
    return ReversedDisplayCodec(decimals=3)


# domain.md §3, "=" + reversed digits [M]: shown 12.340 → `=043.21`
GOLDEN = b"=043.21"


def test_golden_vector_completes_on_next_equals() -> None:
    codec = make()
    assert codec.feed(GOLDEN) == ([], [])  # not complete until the next '='
    (frame,), errors = codec.feed(b"=")
    assert errors == []
    assert frame == WeightFrame(weight_mg=12_340_000, zero=False, unit="kg", decimals=3)
    assert make().encode(frame) == GOLDEN


def test_crlf_variant_completes_at_cr_and_padding_is_absorbed() -> None:
    codec = ReversedDisplayCodec(crlf=True)
    data = codec.encode(WeightFrame(weight_mg=-1_250_000, decimals=3))
    assert data == b"=052.1-\r\n"
    frames, errors = codec.feed(data * 2)
    assert errors == [] and [f.weight_mg for f in frames] == [-1_250_000] * 2
    assert codec.flush() is None  # trailing CR LF is padding, not an error


def test_digit_count_option_rejects_corruption() -> None:
    codec = ReversedDisplayCodec(digits=5)
    frames, errors = codec.feed(b"=043.21=04.21=043.21=")
    assert [f.weight_mg for f in frames] == [12_340_000, 12_340_000]
    assert len(errors) == 1 and "4 digits" in errors[0].reason


def test_last_frame_is_flushed_as_incomplete() -> None:
    codec = make()
    codec.feed(GOLDEN)
    err = codec.flush()
    assert err is not None and (err.offset, err.length) == (0, 7)


@st.composite
def frames(draw: st.DrawFn) -> WeightFrame:
    dec = draw(st.integers(0, 4))
    weight = draw(st.integers(-99_999, 999_999)) * 10 ** (6 - dec)
    return WeightFrame(weight_mg=weight, zero=weight == 0, unit="kg", decimals=dec)


(
    test_round_trip,
    test_one_byte_at_a_time_equals_all_at_once,
    test_fuzz_only_frame_errors_then_recovery,
) = codec_properties(make, frames(), tail=b"=")
