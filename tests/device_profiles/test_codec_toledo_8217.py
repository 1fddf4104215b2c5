"""Toledo 8217 mode (device_profiles/codecs/toledo_8217.py)."""

from __future__ import annotations

import pytest
from codec_props import (
    check_commands,
    codec_properties,
)
from hypothesis import strategies as st

from device_profiles.codecs import REQUEST_WEIGHT, TARE, ZERO, StatusReplyError, WeightFrame
from device_profiles.codecs.toledo_8217 import TARE_CLEAR, Toledo8217Codec, describe_status


def make() -> Toledo8217Codec:
    return Toledo8217Codec()


# domain.md §3, Toledo 8217 (odoo serial_scale_driver.py): `02 20 20 31 2E 32 35 30 0D`
GOLDEN = bytes.fromhex("02 20 20 31 2E 32 35 30 0D")


def test_golden_vector() -> None:
    codec = make()
    assert codec.encode_command(REQUEST_WEIGHT) == b"W"
    (frame,), errors = codec.feed(GOLDEN)
    assert errors == []
    assert frame == WeightFrame(weight_mg=1_250_000, stable=True, zero=False, decimals=3)
    assert codec.encode(frame) == GOLDEN


def test_net_suffix() -> None:
    (frame,), _ = make().feed(b"\x02  1.250N\r")
    assert frame.net and frame.weight_mg == 1_250_000


@pytest.mark.parametrize(
    ("status", "motion", "words"),
    [(0x41, True, "motion"), (0x48, False, "outside zero capture range"),
     (0x60, False, "net"), (0x59, True, "motion, outside zero capture range, centre of zero")],
)
def test_status_reply_without_range_fault_is_status_reply_error(
    status: int, motion: bool, words: str
) -> None:
    frames, errors = make().feed(bytes([2, 0x3F, status, 0x0D]) + GOLDEN)
    assert len(frames) == 1
    (err,) = errors
    assert isinstance(err, StatusReplyError)
    assert err.motion is motion and words in err.reason and (err.offset, err.length) == (0, 4)
    assert err.status == f"?{chr(status)}"
    assert describe_status(status) == words


def test_over_capacity_and_under_zero_are_frames() -> None:
    frames, errors = make().feed(b"\x02?B\r\x02?E\r")
    assert errors == []
    assert [(f.weight_mg, f.overload, f.underload, f.stable) for f in frames] == [
        (0, True, False, True), (0, False, True, False)
    ]


def test_encode_motion_gives_status_reply() -> None:
    codec = make()
    assert codec.encode(WeightFrame(weight_mg=1_000, stable=False)) == b"\x02?A\r"
    assert codec.encode(WeightFrame(weight_mg=-5_000, stable=True)) == b"\x02?D\r"


def test_commands() -> None:
    check_commands(make(), [REQUEST_WEIGHT, ZERO, TARE, TARE_CLEAR])
    assert make().decode_command(b"x") == (1, None)


@st.composite
def frames(draw: st.DrawFn) -> WeightFrame:
    kind = draw(st.sampled_from(["weight", "weight", "over", "under"]))
    net = draw(st.booleans())
    if kind != "weight":
        moving = draw(st.booleans())
        return WeightFrame(
            weight_mg=0, stable=not moving, net=net, overload=kind == "over",
            underload=kind == "under", zero=False, status=None,
        )
    weight = draw(st.integers(0, 999_999)) * 1000
    return WeightFrame(weight_mg=weight, stable=True, net=net, zero=weight == 0, decimals=3)


def _encode(frame: WeightFrame) -> bytes:
    return make().encode(frame)


def _fill_status(frame: WeightFrame) -> WeightFrame:
    from dataclasses import replace

    if frame.overload or frame.underload:
        return replace(frame, status="?" + chr(_encode(frame)[2]))
    return frame


(
    test_round_trip,
    test_one_byte_at_a_time_equals_all_at_once,
    test_fuzz_only_frame_errors_then_recovery,
) = codec_properties(make, frames(), expected=_fill_status)
