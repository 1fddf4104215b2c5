"""A&D-style text output (device_profiles/codecs/ad_text.py)."""

from __future__ import annotations

from codec_props import codec_properties
from hypothesis import strategies as st

from device_profiles.codecs import WeightFrame
from device_profiles.codecs.ad_text import AdTextCodec


def make() -> AdTextCodec:
    return AdTextCodec()


# domain.md §3, A&D-style text [M]: `ST,GS,+0001.250kg\r\n`
GOLDEN = b"ST,GS,+0001.250kg\r\n"


def test_golden_vector() -> None:
    (frame,), errors = make().feed(GOLDEN)
    assert errors == []
    assert frame == WeightFrame(
        weight_mg=1_250_000, stable=True, zero=False, unit="kg", decimals=3, status="ST"
    )
    assert make().encode(frame) == GOLDEN


def test_headers_and_padding() -> None:
    frames, errors = make().feed(
        b"US,NT,-0000.500kg\r\nOL,GS,+9999.999kg\r\nOL,GS,-9999.999kg\r\nST,GS, 12.5  g\r\n"
    )
    assert errors == []
    assert [(f.weight_mg, f.stable, f.net, f.overload, f.underload, f.unit) for f in frames] == [
        (-500_000, False, True, False, False, "kg"),
        (0, None, False, True, False, "kg"),
        (0, None, False, False, True, "kg"),
        (12_500, True, False, False, False, "g"),
    ]


def test_bad_header_is_an_error() -> None:
    frames, errors = make().feed(b"XX,GS,+0001.250kg\r\n" + GOLDEN)
    assert len(frames) == 1 and [(e.offset, e.length) for e in errors] == [(0, 19)]


@st.composite
def frames(draw: st.DrawFn) -> WeightFrame:
    head = draw(st.sampled_from(["ST", "US", "OL"]))
    net = draw(st.booleans())
    if head == "OL":
        under = draw(st.booleans())
        return WeightFrame(weight_mg=0, net=net, overload=not under, underload=under, status="OL")
    weight = draw(st.integers(-9_999_999, 9_999_999)) * 1000
    return WeightFrame(
        weight_mg=weight, stable=head == "ST", net=net, zero=weight == 0, decimals=3, status=head
    )


(
    test_round_trip,
    test_one_byte_at_a_time_equals_all_at_once,
    test_fuzz_only_frame_errors_then_recovery,
) = codec_properties(make, frames())
