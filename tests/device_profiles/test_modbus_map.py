"""Register maps: read plans, decoding (word orders, sign flag, status bits, float32),
validation errors that name the field, and encode → decode round trips."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from device_profiles.codecs.base import Command, EncodeError, FrameError, WeightFrame
from device_profiles.modbus_map import (
    Function,
    ModbusMap,
    ReadBlock,
    blocks_from_image,
    build_read_plan,
    decode_registers,
    encode_command,
    encode_registers,
    parse_modbus_map,
)
from device_profiles.schema import ProfileError, load_profile, parse_profile

GENERIC = load_profile("modbus-transmitter-generic").modbus
LOWFIRST = load_profile("modbus-indicator-lowfirst").modbus
assert GENERIC is not None and LOWFIRST is not None

H, IN = Function.HOLDING, Function.INPUT


def _map(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "decimals": 3,
        "registers": {"status": {"address": 0}, "gross": {"address": 2, "type": "int32"}},
        "status_bits": {"stable": 0},
    }
    base.update(overrides)
    return base


def _decode(map_: ModbusMap, image: dict[tuple[Function, int], int]) -> tuple[WeightFrame, dict]:
    return decode_registers(map_, blocks_from_image(build_read_plan(map_), image))


# -- read plan ---------------------------------------------------------------------------


def test_plan_of_the_generic_transmitter_merges_near_registers() -> None:
    assert build_read_plan(GENERIC) == [
        ReadBlock(H, 0x08, 1),  # status
        ReadBlock(H, 0x26, 12),  # cal zero .. CFG counter (gaps of 2 merged)
        ReadBlock(H, 0x50, 6),  # gross, net, tare
    ]


def test_plan_gap_and_size_bounds() -> None:
    assert len(build_read_plan(GENERIC, max_gap=0)) == 5  # only adjacent registers merge
    one = build_read_plan(GENERIC, max_gap=124)
    assert one == [ReadBlock(H, 0x08, 0x56 - 0x08)]
    split = build_read_plan(GENERIC, max_gap=124, max_read=20)
    assert all(b.count <= 20 for b in split)
    covered = {(b.function, b.address + i) for b in split for i in range(b.count)}
    for _, reg in GENERIC.named_registers():
        assert {(reg.function, reg.address + i) for i in range(reg.width)} <= covered


def test_plan_never_merges_functions() -> None:
    plan = build_read_plan(LOWFIRST, max_gap=124)
    assert {b.function for b in plan} == {H, IN}
    assert [b for b in plan if b.function is IN] == [ReadBlock(IN, 0, 10)]


def test_plan_bounds_are_checked() -> None:
    with pytest.raises(ProfileError, match="max_read"):
        build_read_plan(GENERIC, max_read=126)


# -- decoding ------------------------------------------------------------------------------


def test_generic_high_word_first_positive_and_negative() -> None:
    # 123456.78 kg would not fit; 1234.56 kg = 123456 steps = 0x0001_E240
    frame, extras = _decode(GENERIC, {(H, 0x08): 0x0002, (H, 0x50): 0x0001, (H, 0x51): 0xE240,
                                      (H, 0x2C): 0x0009, (H, 0x2D): 0x0000, (H, 0x30): 7})
    assert frame.weight_mg == 1_234_560_000 and frame.decimals == 2
    assert frame.stable is True and frame.zero is False and not frame.net
    assert extras["raw_ad"] == 0x0009_0000 and extras["counters"] == {"cal": 7, "cfg": 0}
    # -1.25 kg, two's complement, with the b3 sign bit set as the manual says
    frame, _ = _decode(GENERIC, {(H, 0x08): 0x000A, (H, 0x50): 0xFFFF, (H, 0x51): 0xFF83})
    assert frame.weight_mg == -1_250_000


def test_lowfirst_word_order_and_sign_flag() -> None:
    frame, extras = _decode(LOWFIRST, {(IN, 0): 0b1, (IN, 2): 0xE240, (IN, 3): 0x0001})
    assert frame.weight_mg == 1_234_560_000 and frame.stable is True
    # magnitude 1.25 kg with the separate sign flag (b4)
    frame, _ = _decode(LOWFIRST, {(IN, 0): 0b1_0001, (IN, 2): 125, (IN, 3): 0})
    assert frame.weight_mg == -1_250_000
    assert set(extras["identity"]) == {"serial", "software_id", "model_code"}


def test_identity_strings() -> None:
    image = {(H, 0x110 + i): w for i, w in enumerate(struct.unpack(">4H", b"SN-00042"))}
    _, extras = _decode(LOWFIRST, {(IN, 0): 1, **image})
    assert extras["identity"]["serial"] == "SN-00042"


def test_status_bits_generic() -> None:
    # b0–2 = 3 decimals, b5 unstable, b7 zero
    frame, _ = _decode(GENERIC, {(H, 0x08): 0b1010_0011})
    assert (frame.stable, frame.zero, frame.decimals, frame.overload) == (False, True, 3, False)
    frame, _ = _decode(GENERIC, {(H, 0x08): (1 << 9) | 2})
    assert frame.overload
    frame, _ = _decode(GENERIC, {(H, 0x08): (1 << 6) | 2})
    assert frame.overload and frame.status == "0x0042"


def test_net_mode_from_tare_register() -> None:
    # tare 0.50 kg, gross 2.00 kg, net 1.50 kg
    frame, _ = _decode(GENERIC, {(H, 0x08): 2, (H, 0x51): 200, (H, 0x53): 150, (H, 0x55): 50})
    assert frame.net and frame.weight_mg == 1_500_000 and frame.tare_mg == 500_000


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ({(H, 0x08): 0x0002, (H, 0x50): 0xFFFF, (H, 0x51): 0xFF83}, "sign bit"),  # b3 missing
        ({(H, 0x08): 0x000A, (H, 0x51): 125}, "sign bit"),  # b3 set, value positive
        ({(H, 0x08): 0x0007, (H, 0x51): 1}, "decimals"),  # code 7: not a display
    ],
)
def test_impossible_values_raise_frame_error(image: dict, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        _decode(GENERIC, image)


def test_wrong_block_length_and_word_values() -> None:
    plan = build_read_plan(GENERIC)
    with pytest.raises(FrameError, match="expected"):
        decode_registers(GENERIC, {b: [0] * (b.count + 1) for b in plan})
    with pytest.raises(FrameError, match="16 bits"):
        decode_registers(GENERIC, {b: [0x10000] * b.count for b in plan})


FLOAT = parse_modbus_map(_map(registers={"status": {"address": 0},
                                         "gross": {"address": 2, "type": "float32"}}))


@pytest.mark.parametrize(
    ("value", "mg"),
    [
        (1.235, 1_235_000),
        (1.2345, 1_235_000),  # float32(1.2345) = 1.23450005…: the float's exact value counts
        (1.2355, 1_235_000),  # float32(1.2355) = 1.23549997…
        (0.0625, 62_000),  # an exact tie (62.5 steps): to even
        (0.0635, 64_000),  # float32(0.0635) = 0.06350000202…
        (-0.0015, -2_000),
        (0.0, 0),
        (29.999, 29_999_000),
    ],
)
def test_float32_rounds_exactly_to_the_display_step(value: float, mg: int) -> None:
    hi, lo = struct.unpack(">2H", struct.pack(">f", value))
    frame, _ = _decode(FLOAT, {(H, 0): 1, (H, 2): hi, (H, 3): lo})
    assert frame.weight_mg == mg


def test_float32_nan_is_a_frame_error() -> None:
    hi, lo = struct.unpack(">2H", struct.pack(">f", float("nan")))
    with pytest.raises(FrameError):
        _decode(FLOAT, {(H, 0): 1, (H, 2): hi, (H, 3): lo})


def test_byte_order_little() -> None:
    m = parse_modbus_map(_map(byte_order="little"))
    frame, _ = _decode(m, {(H, 0): 0x0100, (H, 2): 0x0000, (H, 3): 0x3930})  # 0x3039 = 12345
    assert frame.weight_mg == 12_345_000 and frame.stable


# -- bad maps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"decimals": 2, "registers": {}}, "registers.gross"),
        (_map(status_bits={"decimals_mask": 7}), "decimals"),
        (_map(sign="flag", status_bits={"sign": 3}), "registers.gross.type"),
        (_map(registers={"gross": {"address": 2, "type": "int32"},
                         "net": {"address": 3, "type": "int32"}}, status_bits={}),
         "registers.net: overlaps registers.gross"),
        (_map(registers={"gross": {"address": 2}}), "registers.status"),
        (_map(registers={"status": {"address": 0}, "gross": {"address": 2},
                         "cal_span": {"address": 9, "type": "string"}}), "registers.cal_span"),
        (_map(status_bits={"stable": 0, "zero": 0}), "status_bits.zero"),
        (_map(status_bits={"stable": 1, "unstable": 2}), "status_bits"),
        (_map(registers={"status": {"address": 0}, "gross": {"address": 0xFFFF, "type": "int32"}}),
         "registers.gross"),
        (_map(identity={"serial": {"address": 9, "type": "string", "words": 126}}),
         "identity.serial"),
        (_map(unit="lb"), "unit"),
    ],
)
def test_bad_maps_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_modbus_map(data, source="x.toml")
    assert field in str(info.value) and "x.toml" in str(info.value)


def test_parse_profile_accepts_and_checks_modbus_tables() -> None:
    ok = {"id": "m1", "name": "m", "protocol": "modbus", "link": {"kind": "modbus-tcp"},
          "metrology": {"max": "30 kg", "e": "10 g"}, "modbus": _map()}
    assert parse_profile(ok).modbus == parse_modbus_map(_map())
    bad = {**ok, "modbus": _map(registers={"status": {"address": 0}, "gross": {"address": -1}})}
    with pytest.raises(ProfileError, match=r"p\.toml: modbus\.registers\.gross\.address"):
        parse_profile(bad, source="p.toml")


# -- commands --------------------------------------------------------------------------------


def test_commands() -> None:
    assert encode_command(GENERIC, Command("tare")) == (0x54, [0x7FFF, 0xFFFF])
    assert encode_command(GENERIC, Command("zero")) == (0x60, [1])
    assert encode_command(LOWFIRST, Command("preset_tare", "0.50 kg")) == (0x202, [50, 0])
    with pytest.raises(EncodeError, match="no 'print'"):
        encode_command(GENERIC, Command("print"))
    with pytest.raises(EncodeError):
        encode_command(LOWFIRST, Command("preset_tare", "0.505 kg"))  # not a display step


# -- round trip --------------------------------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn, map_: ModbusMap, step_mg: int, limit: int) -> tuple[WeightFrame, dict]:
    regs = map_.registers
    tare = draw(st.integers(0, limit // 4)) * step_mg
    net = tare != 0
    shown = draw(st.integers(-limit // 4, limit // 2)) * step_mg
    if map_.sign == "flag" and net:
        shown = abs(shown)  # one flag: the displayed value's sign; gross must not be negative
    stable = draw(st.booleans())
    zero = draw(st.booleans())
    frame = WeightFrame(weight_mg=shown, stable=stable, net=net, tare_mg=tare,
                        overload=draw(st.booleans()), zero=zero, unit="kg",
                        decimals=map_.decimals if map_.decimals is not None else 2)
    if map_.status_bits.underload is not None:
        frame = replace(frame, underload=draw(st.booleans()))
    extras = {"raw_ad": draw(st.integers(-(2**31), 2**31 - 1)),
              "cal_zero": draw(st.integers(0, 2**24)), "cal_span": draw(st.integers(1, 2**24)),
              "counters": {k: draw(st.integers(0, 65535)) for k, r in
                           (("cal", regs.cal_counter), ("cfg", regs.cfg_counter)) if r is not None},
              "identity": {}}
    for name, reg in map_.identity.items():
        extras["identity"][name] = (
            draw(st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-", min_size=1,
                         max_size=2 * reg.width))
            if reg.type == "string" else draw(st.integers(0, 65535)))
    if map_.registers.raw_ad is None:
        extras["raw_ad"] = None
    for k in ("cal_zero", "cal_span"):
        if getattr(map_.registers, k) is None:
            extras[k] = None
    return frame, extras


def _round_trip(map_: ModbusMap, frame: WeightFrame, extras: dict) -> None:
    image = encode_registers(map_, frame, extras=extras)
    got, got_extras = _decode(map_, image)
    assert replace(got, status=None) == frame
    assert got_extras == extras


@settings(max_examples=200, deadline=None)
@given(frames(GENERIC, 10_000, 3_000))
def test_round_trip_generic(case: tuple[WeightFrame, dict]) -> None:
    _round_trip(GENERIC, *case)


@settings(max_examples=200, deadline=None)
@given(frames(LOWFIRST, 20_000, 3_000))
def test_round_trip_lowfirst(case: tuple[WeightFrame, dict]) -> None:
    _round_trip(LOWFIRST, *case)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**23) + 1, 2**23 - 1), st.booleans())
def test_round_trip_float32_up_to_2_23_steps(steps: int, stable: bool) -> None:
    frame = WeightFrame(weight_mg=steps * 1_000, stable=stable, tare_mg=None, decimals=3)
    got, _ = _decode(FLOAT, encode_registers(FLOAT, frame))
    assert got.weight_mg == frame.weight_mg and got.stable is stable
