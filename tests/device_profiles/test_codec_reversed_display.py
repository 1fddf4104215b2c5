"""'=' + reversed display characters (device_profiles/codecs/reversed_display.py)."""

from __future__ import annotations

from codec_props import (
    FUZZ,
    PROPS,
    check_chunking,
    check_fuzz,
    check_round_trip,
    cuts_st,
    streams,
)
from hypothesis import given
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


def _encode(frame: WeightFrame) -> bytes:
    return make().encode(frame)


@PROPS
@given(frame=frames())
def test_round_trip(frame: WeightFrame) -> None:
    check_round_trip(make, frame, tail=b"=")


@PROPS
@given(data=streams(frames(), _encode), cuts=cuts_st)
def test_one_byte_at_a_time_equals_all_at_once(data: bytes, cuts: list[int]) -> None:
    check_chunking(make, data, cuts)


@FUZZ
@given(junk=st.binary(max_size=300), cuts=cuts_st, frame=frames())
def test_fuzz_only_frame_errors_then_recovery(
    junk: bytes, cuts: list[int], frame: WeightFrame
) -> None:
    check_fuzz(make, junk, cuts, _encode(frame), frame, tail=b"=")
