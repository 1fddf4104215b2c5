"""Toledo standard continuous output (device_profiles/codecs/toledo_continuous.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from codec_props import (
    PROPS,
    check_chunking,
    codec_properties,
)
from hypothesis import given, strategies as st

from device_profiles.codecs import WeightFrame
from device_profiles.codecs.toledo_continuous import ToledoContinuousCodec


def make() -> ToledoContinuousCodec:
    return ToledoContinuousCodec(increment=5, decimals=3)


# domain.md §3, Mettler-Toledo continuous (IND245 scale/ContOut.c)
GOLDEN_STABLE = bytes.fromhex("02 3D 30 20 20 20 31 32 35 30 20 20 30 30 30 30 0D 5C")
GOLDEN_MOTION = bytes.fromhex("02 3D 38 20 20 20 31 32 35 30 20 20 30 30 30 30 0D 54")


def test_golden_vectors_decode() -> None:
    frames, errors = make().feed(GOLDEN_STABLE + GOLDEN_MOTION)
    assert errors == []
    assert [(f.weight_mg, f.stable, f.net, f.tare_mg, f.unit) for f in frames] == [
        (1_250_000, True, False, 0, "kg"),
        (1_250_000, False, False, 0, "kg"),
    ]


def test_golden_vectors_encode() -> None:
    codec = make()
    assert codec.encode(WeightFrame(weight_mg=1_250_000, stable=True, tare_mg=0)) == GOLDEN_STABLE
    assert codec.encode(WeightFrame(weight_mg=1_250_000, stable=False, tare_mg=0)) == GOLDEN_MOTION


@st.composite
def frames(draw: st.DrawFn) -> WeightFrame:
    weight = draw(st.integers(-999_999, 999_999)) * 1000
    over = draw(st.booleans())
    return WeightFrame(
        weight_mg=weight,
        stable=draw(st.booleans()),
        net=draw(st.booleans()),
        tare_mg=draw(st.integers(0, 999_999)) * 1000,
        overload=over and weight >= 0,
        underload=over and weight < 0,
        zero=weight == 0,
        decimals=3,
        print_request=draw(st.booleans()),
    )


def _encode(frame: WeightFrame) -> bytes:
    return make().encode(frame)


@PROPS
@given(frame=frames())
def test_round_trip(frame: WeightFrame) -> None:
    codec = make()
    got, errors = codec.feed(codec.encode(frame))
    assert errors == []
    assert len(got) == 1
    assert replace(got[0], status=None) == frame  # status is the raw A/B/C bytes


def _decoded(frame: WeightFrame) -> WeightFrame:
    return make().feed(_encode(frame))[0][0]  # status: the raw A/B/C bytes


_, test_one_byte_at_a_time_equals_all_at_once, test_fuzz_only_frame_errors_then_recovery = (
    codec_properties(make, frames(), expected=_decoded))


def test_long_garbage_after_bad_frame_is_chunking_independent() -> None:
    # The gap fixed in this codec: a bad frame followed by > 36 bytes without an STX was
    # discarded as one span when fed at once but as two when fed byte by byte.
    bad = bytearray(GOLDEN_STABLE)
    bad[17] ^= 0x01
    data = bytes(bad) + b"x" * 50 + GOLDEN_STABLE
    whole = check_chunking(make, data, [])
    assert len(whole[0]) == 1
    assert [s[1] for s in whole[1]] == [36, 32]


def test_checksum_error_reports_the_span() -> None:
    bad = bytearray(GOLDEN_STABLE)
    bad[6] = ord("9")
    frames_, errors = make().feed(bytes(bad) + GOLDEN_STABLE)
    assert len(frames_) == 1
    assert [(e.offset, e.length) for e in errors] == [(0, 18)]
    assert "checksum" in errors[0].reason


@pytest.mark.parametrize("increment", [0, 3, 10])
def test_bad_increment_option(increment: int) -> None:
    from device_profiles.codecs import EncodeError

    with pytest.raises(EncodeError):
        ToledoContinuousCodec(increment=increment)
