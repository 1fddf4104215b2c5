"""Yaohua XK3190-A12 / A12E text lines (device_profiles/codecs/yaohua_a12.py)."""

from __future__ import annotations

from codec_props import (
    check_commands,
    codec_properties,
)
from hypothesis import strategies as st

from device_profiles.codecs import REQUEST_WEIGHT, TARE, ZERO, WeightFrame
from device_profiles.codecs.yaohua_a12 import YaohuaA12Codec


def make() -> YaohuaA12Codec:
    return YaohuaA12Codec()


# domain.md §3, Yaohua XK3190-A12 / A12E: `wn0001.25kg\r\n`
GOLDEN = b"wn0001.25kg\r\n"


def test_golden_vector() -> None:
    (frame,), errors = make().feed(GOLDEN)
    assert errors == []
    assert frame == WeightFrame(
        weight_mg=1_250_000, net=True, zero=False, unit="kg", decimals=2, status="net"
    )
    assert make().encode(frame) == GOLDEN


def test_kinds_signs_units() -> None:
    frames, errors = make().feed(b"ww-001.25kg\r\nwt0000.50kg\r\nww1250g\r\nww+0.5t\r\n")
    assert errors == []
    assert [(f.weight_mg, f.status, f.tare_mg, f.unit) for f in frames] == [
        (-1_250_000, "gross", None, "kg"),
        (500_000, "tare", 500_000, "kg"),
        (1_250_000, "gross", None, "g"),
        (500_000_000, "gross", None, "kg"),
    ]


def test_bad_line_is_discarded_whole() -> None:
    frames, errors = make().feed(b"wx0001.25kg\r\n" + GOLDEN)
    assert len(frames) == 1
    assert [(e.offset, e.length) for e in errors] == [(0, 13)]


def test_commands() -> None:
    codec = make()
    assert codec.encode_command(REQUEST_WEIGHT) == b"R"
    check_commands(codec, [REQUEST_WEIGHT, TARE, ZERO])
    assert codec.decode_command(b"\r") == (1, None)


@st.composite
def frames(draw: st.DrawFn) -> WeightFrame:
    kind = draw(st.sampled_from(["gross", "net", "tare"]))
    weight = draw(st.integers(-99_999, 999_999)) * 10_000  # 2 decimals in kg
    if kind == "tare":
        weight = abs(weight)
    return WeightFrame(
        weight_mg=weight, net=kind == "net", tare_mg=weight if kind == "tare" else None,
        zero=weight == 0, unit="kg", decimals=2, status=kind,
    )


(
    test_round_trip,
    test_one_byte_at_a_time_equals_all_at_once,
    test_fuzz_only_frame_errors_then_recovery,
) = codec_properties(make, frames())
