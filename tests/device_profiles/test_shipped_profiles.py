"""Every shipped profile loads, names a registered codec and round-trips its Max."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_profiles.codecs import CODECS, WeightFrame, make_codec
from device_profiles.schema import (
    PROFILE_DIR,
    LinkKind,
    ProfileError,
    list_profiles,
    load_profile,
)

SERIAL = [
    p for p in list_profiles() if load_profile(p).link.kind in (LinkKind.SERIAL, LinkKind.TCP)
]


def test_every_protocol_has_a_profile() -> None:
    used = {load_profile(p).protocol for p in SERIAL}
    assert set(CODECS) <= used


@pytest.mark.parametrize("profile_id", SERIAL)
def test_profile_loads_and_its_codec_works(profile_id: str) -> None:
    profile = load_profile(profile_id)
    assert profile.id == profile_id
    assert profile.protocol in CODECS
    codec = make_codec(profile.protocol, dict(profile.codec))
    unit = str(profile.codec.get("unit", "kg"))
    frame = WeightFrame(weight_mg=profile.metrology.max_mg, stable=True, unit=unit)
    data = codec.encode(frame)
    tail = b"=" if profile.protocol == "reversed-display" else b""
    frames, errors = codec.feed(data + tail)
    assert errors == []
    assert [f.weight_mg for f in frames] == [profile.metrology.max_mg]
    if profile.link.mode == "request":
        assert "request_weight" in codec.commands


@pytest.mark.parametrize(
    ("profile_id", "settings"),
    [("toledo-8217-15kg-5g", (9600, 7, "E", 1)), ("dialog04-6-15kg-2-5g", (4800, 7, "O", 1))],
)
def test_request_response_link_settings(
    profile_id: str, settings: tuple[int, int, str, int]
) -> None:
    link = load_profile(profile_id).link
    assert (link.baudrate, link.bytesize, link.parity, link.stopbits) == settings
    assert link.mode == "request"


def test_dual_range_profile() -> None:
    m = load_profile("dialog04-6-15kg-2-5g").metrology
    assert [(r.max_mg, r.e_mg) for r in m.ranges] == [(6_000_000, 2_000), (15_000_000, 5_000)]


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    src = (PROFILE_DIR / "toledo-8217-15kg-5g.toml").read_text(encoding="utf-8")
    assert old in src
    path = tmp_path / "broken-scale.toml"
    path.write_text(src.replace(old, new), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("baudrate = 9600", "baudrate = 12", "link.baudrate"),
        ('e = "5 g"', 'e = "5 grams"', "metrology.e"),
        ('protocol = "toledo-8217"', 'protocol = "toledo-9999"', "protocol"),
        ("bytesize = 7", "bytesize = 9", "link.bytesize"),
    ],
)
def test_broken_profile_names_file_and_field(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message
    assert field in message
