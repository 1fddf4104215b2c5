"""Yaohua XK3190-A9 continuous output (device_profiles/codecs/yaohua_a9.py)."""

from __future__ import annotations

from codec_props import codec_properties
from hypothesis import strategies as st

from device_profiles.codecs import WeightFrame
from device_profiles.codecs.yaohua_a9 import YaohuaA9Codec, xor_check


def make() -> YaohuaA9Codec:
    return YaohuaA9Codec()


# domain.md §3, Yaohua XK3190-A9 (captured frames, checksums recomputed)
GOLDEN_1560 = bytes.fromhex("02 2B 30 30 31 35 36 30 30 31 39 03")
GOLDEN_ZERO = bytes.fromhex("02 2B 30 30 30 30 30 30 30 31 42 03")


def test_golden_vectors() -> None:
    frames, errors = make().feed(GOLDEN_1560 + GOLDEN_ZERO)
    assert errors == []
    assert [(f.weight_mg, f.decimals, f.zero, f.stable) for f in frames] == [
        (1_560_000_000, 0, False, None),
        (0, 0, True, None),
    ]
    codec = make()
    assert codec.encode(frames[0]) == GOLDEN_1560
    assert codec.encode(frames[1]) == GOLDEN_ZERO


def test_xor_and_decimals() -> None:
    assert xor_check(b"+0015600") == b"19"
    body = b"-0012503"
    frame = bytes([2]) + body + xor_check(body) + bytes([3])
    (got,), _ = make().feed(frame)
    assert got.weight_mg == -1_250_000 and got.decimals == 3


def test_lower_case_check_accepted_bad_check_rejected() -> None:
    body = b"+0012503"
    lower = bytes([2]) + body + xor_check(body).lower() + bytes([3])
    bad = bytes([2]) + body + b"00" + bytes([3])
    frames, errors = make().feed(lower + bad + GOLDEN_ZERO)
    assert len(frames) == 2 and frames[0].weight_mg == 1_250_000
    assert [(e.offset, e.length) for e in errors] == [(12, 12)]
    assert "XOR" in errors[0].reason


@st.composite
def frames(draw: st.DrawFn) -> WeightFrame:
    dec = draw(st.integers(0, 4))
    value = draw(st.integers(-999_999, 999_999))
    weight = value * 10 ** (6 - dec)
    return WeightFrame(weight_mg=weight, zero=weight == 0, unit="kg", decimals=dec)


(
    test_round_trip,
    test_one_byte_at_a_time_equals_all_at_once,
    test_fuzz_only_frame_errors_then_recovery,
) = codec_properties(make, frames())
