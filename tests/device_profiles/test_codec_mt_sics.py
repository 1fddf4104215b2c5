"""MT-SICS request/response (device_profiles/codecs/mt_sics.py)."""

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
    ZERO,
    Command,
    EncodeError,
    StatusReplyError,
    WeightFrame,
)
from device_profiles.codecs.mt_sics import (
    REQUEST_STABLE,
    SERIAL_NUMBER,
    TARE_CLEAR,
    TARE_QUERY,
    MtSicsCodec,
)


def make() -> MtSicsCodec:
    return MtSicsCodec()


# domain.md §3, MT-SICS: `S\r\n` → `S S      1.250 kg\r\n`
GOLDEN_REQUEST = b"S\r\n"
GOLDEN_REPLY = b"S S      1.250 kg\r\n"


def test_golden_vectors() -> None:
    codec = make()
    assert codec.encode_command(REQUEST_STABLE) == GOLDEN_REQUEST
    assert codec.decode_command(GOLDEN_REQUEST) == (3, REQUEST_STABLE)
    (frame,), errors = codec.feed(GOLDEN_REPLY)
    assert errors == []
    assert frame == WeightFrame(
        weight_mg=1_250_000, stable=True, zero=False, unit="kg", decimals=3, status="S S"
    )
    assert codec.encode(frame) == GOLDEN_REPLY


def test_whitespace_not_columns() -> None:
    frames, errors = make().feed(b"S D 0.5 g\r\nS  S\t  -12.00   kg\r\n")
    assert errors == []
    assert [(f.weight_mg, f.stable, f.unit) for f in frames] == [
        (500, False, "g"), (-12_000_000, True, "kg")
    ]


def test_overload_underload_are_frames() -> None:
    frames, errors = make().feed(b"S +\r\nS -\r\n")
    assert errors == []
    assert [(f.weight_mg, f.overload, f.underload, f.stable) for f in frames] == [
        (0, True, False, None), (0, False, True, None)
    ]


@pytest.mark.parametrize(
    ("reply", "status", "word"),
    [
        (b"S I\r\n", "S I", "busy"),
        (b"ES\r\n", "ES", "syntax"),
        (b"ET\r\n", "ET", "transmission"),
        (b"EL\r\n", "EL", "logical"),
        (b"Z I\r\n", "Z I", "busy"),
        (b"Z +\r\n", "Z +", "upper limit"),
        (b"T -\r\n", "T -", "lower limit"),
    ],
)
def test_busy_and_errors_are_status_reply_errors(reply: bytes, status: str, word: str) -> None:
    frames, errors = make().feed(reply + GOLDEN_REPLY)
    assert len(frames) == 1
    (err,) = errors
    assert isinstance(err, StatusReplyError)
    assert err.status == status and word in err.reason and not err.motion
    assert (err.offset, err.length) == (0, len(reply))


def test_acknowledgements_are_consumed_silently() -> None:
    codec = make()
    data = b'Z A\r\nT S      0.100 kg\r\nTAC A\r\nI4 A "0123456789"\r\n' + GOLDEN_REPLY
    frames, errors = codec.feed(data)
    assert errors == [] and len(frames) == 1
    assert codec.last_ack == 'I4 A "0123456789"'


def test_commands() -> None:
    codec = make()
    assert codec.encode_command(REQUEST_WEIGHT) == b"SI\r\n"
    assert codec.encode_command(Command("tare_preset", "0.500 kg")) == b"TA 0.500 kg\r\n"
    check_commands(
        codec,
        [REQUEST_WEIGHT, REQUEST_STABLE, TARE, ZERO, TARE_QUERY, TARE_CLEAR, SERIAL_NUMBER,
         Command("tare_preset", "0.500 kg")],
    )
    assert codec.decode_command(b"S") == (0, None)
    assert codec.decode_command(b"XYZ\r\n") == (5, None)
    with pytest.raises(EncodeError):
        codec.encode_command(Command("print"))


@st.composite
def frames(draw: st.DrawFn) -> WeightFrame:
    kind = draw(st.sampled_from(["S", "D", "+", "-"]))
    if kind in "+-":
        return WeightFrame(
            weight_mg=0, overload=kind == "+", underload=kind == "-", status=f"S {kind}"
        )
    unit, dec = draw(st.sampled_from([("kg", 3), ("g", 2), ("g", 1), ("kg", 2)]))
    per = (1_000_000 if unit == "kg" else 1000) // 10**dec
    weight = draw(st.integers(-99_999, 999_999)) * per
    return WeightFrame(
        weight_mg=weight, stable=kind == "S", zero=weight == 0, unit=unit, decimals=dec,
        status=f"S {kind}",
    )


(
    test_round_trip,
    test_one_byte_at_a_time_equals_all_at_once,
    test_fuzz_only_frame_errors_then_recovery,
) = codec_properties(make, frames())
