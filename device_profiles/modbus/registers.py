"""Register values both ways: words ↔ values, a poll ↔ a :class:`WeightFrame` (pure).

:func:`decode_registers` turns the blocks read by a plan into a frame plus extras (raw
AD, calibration registers, counters, identity); :func:`encode_registers` is the device
side (emulators, round-trip tests) and :func:`encode_command` a command's register write.
Mass is exact (see :func:`steps_to_mg`); register values that no device can mean raise
:class:`FrameError`, whose ``offset`` is the register address and ``length`` the register
count. The rules are in :mod:`device_profiles.modbus_map`.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from device_profiles.codecs.base import Command, EncodeError, FrameError, WeightFrame
from device_profiles.modbus.model import (
    REG_FORMATS,
    ByteOrder,
    Function,
    ModbusMap,
    Register,
    RegType,
    WordOrder,
    mask_shift,
)
from device_profiles.modbus.plan import ReadBlock
from weighing.errors import UnitError
from weighing.units import MassUnit, decimal_to_mg, scaled_to_mg

# -- values <-> registers ----------------------------------------------------------------


def _orders(reg: Register, map_: ModbusMap) -> tuple[WordOrder, ByteOrder]:
    return reg.word_order or map_.word_order, reg.byte_order or map_.byte_order


def _swap(word: int) -> int:
    return (word >> 8) | ((word & 0xFF) << 8)


def decode_value(reg: Register, words: Sequence[int], map_: ModbusMap) -> int | float | str:
    """The value of ``reg`` from its ``words`` (as read, in address order)."""
    word_order, byte_order = _orders(reg, map_)
    ws = [_swap(w) for w in words] if byte_order is ByteOrder.LITTLE else list(words)
    if reg.type is RegType.STRING:
        raw = b"".join(w.to_bytes(2, "big") for w in ws).rstrip(b"\x00 ")
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise FrameError(f"string at 0x{reg.address:04X} is not ASCII", offset=reg.address,
                             length=reg.width, data=raw) from None
    if word_order is WordOrder.LOW_FIRST:
        ws.reverse()
    code, _ = REG_FORMATS[reg.type]
    number: int | float = struct.unpack(f">{code}", b"".join(w.to_bytes(2, "big") for w in ws))[0]
    return number


def encode_value(reg: Register, value: int | float | str, map_: ModbusMap) -> list[int]:
    """The words of ``reg`` holding ``value`` (inverse of :func:`decode_value`)."""
    word_order, byte_order = _orders(reg, map_)
    if reg.type is RegType.STRING:
        raw = str(value).encode("ascii", errors="strict")
        if len(raw) > 2 * reg.width:
            raise EncodeError(f"{value!r} is longer than {2 * reg.width} characters")
        raw = raw.ljust(2 * reg.width, b"\x00")
        ws = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    else:
        code, _ = REG_FORMATS[reg.type]
        try:
            raw = struct.pack(f">{code}", value)
        except struct.error as err:
            raise EncodeError(f"{value!r} does not fit {reg.type}: {err}") from None
        ws = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
        if word_order is WordOrder.LOW_FIRST:
            ws.reverse()
    return [_swap(w) for w in ws] if byte_order is ByteOrder.LITTLE else ws


def steps_to_mg(value: int | float, decimals: int, unit: MassUnit, *, address: int = 0) -> int:
    """Exact mass of a reading; a float is first rounded to the nearest display step."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FrameError(f"float weight {value} at 0x{address:04X}", offset=address, length=2)
        value = round(Fraction(value) * Fraction(10) ** decimals)  # exact, ties to even
    try:
        return scaled_to_mg(value, decimals, unit)
    except UnitError as err:
        raise FrameError(str(err), offset=address, length=2) from None


_MG_PER_UNIT = {MassUnit.MG: 1, MassUnit.G: 1_000, MassUnit.KG: 1_000_000}


def mg_to_steps(mass_mg: int, decimals: int, unit: MassUnit) -> int:
    """Display steps for ``mass_mg`` (device side); raises EncodeError when not exact."""
    q, r = divmod(mass_mg * 10**decimals if decimals >= 0 else mass_mg,
                  _MG_PER_UNIT[unit] * (10 ** -decimals if decimals < 0 else 1))
    if r:
        raise EncodeError(f"{mass_mg} mg is not a whole display step (10^-{decimals} {unit})")
    return q


# -- decode: registers -> frame ----------------------------------------------------------


def _lookup(blocks_values: Mapping[ReadBlock, Sequence[int]]) -> dict[tuple[Function, int], int]:
    table: dict[tuple[Function, int], int] = {}
    for block, values in blocks_values.items():
        if len(values) != block.count:
            raise FrameError(f"{block.function} read at 0x{block.address:04X} returned "
                             f"{len(values)} registers, expected {block.count}",
                             offset=block.address, length=block.count)
        for i, v in enumerate(values):
            if not 0 <= v <= 0xFFFF:
                raise FrameError(f"register value {v} is not 16 bits", offset=block.address + i,
                                 length=1)
            table[(block.function, block.address + i)] = v
    return table


def _words(table: Mapping[tuple[Function, int], int], reg: Register) -> list[int]:
    try:
        return [table[(reg.function, reg.address + i)] for i in range(reg.width)]
    except KeyError:
        raise ValueError(f"{reg.function} register 0x{reg.address:04X} is not in the blocks "
                         "read: use build_read_plan") from None


def _bit(status: int, bit: int | None) -> bool | None:
    return None if bit is None else bool(status >> bit & 1)


def decode_registers(
    map_: ModbusMap, blocks_values: Mapping[ReadBlock, Sequence[int]]
) -> tuple[WeightFrame, dict[str, Any]]:
    """Decode one poll: ``{ReadBlock: register values}`` → ``(frame, extras)``.

    ``extras`` holds ``raw_ad``, ``cal_zero``, ``cal_span`` (ints or ``None``), ``counters``
    (``{"cal": n, "cfg": n}`` for the counters the map has) and ``identity``
    (``{name: value}``). The frame's weight is net when the display is in net mode (the
    ``net`` status bit, or else a non-zero tare register), gross otherwise.
    """
    table = _lookup(blocks_values)
    regs, bits = map_.registers, map_.status_bits

    def value(reg: Register | None) -> Any:
        return None if reg is None else decode_value(reg, _words(table, reg), map_)

    status = value(regs.status)
    st = status or 0
    decimals = map_.decimals
    if bits.decimals_mask is not None:
        decimals = (st & bits.decimals_mask) >> mask_shift(bits.decimals_mask)
        if decimals > 6:
            assert regs.status is not None
            raise FrameError(f"status 0x{st:04X}: {decimals} decimals is not a display",
                             offset=regs.status.address, length=regs.status.width)
    assert decimals is not None  # the map validator guarantees one source
    negative = bool(_bit(st, bits.sign))

    def mass(reg: Register | None, *, signed_by_flag: bool) -> int | None:
        if reg is None:
            return None
        v = value(reg)
        if map_.sign == "flag" and signed_by_flag and negative:
            v = -v
        return steps_to_mg(v, decimals, map_.unit, address=reg.address)

    tare_mg = mass(regs.tare, signed_by_flag=False)
    net_mode = _bit(st, bits.net)
    if net_mode is None:
        net_mode = bool(tare_mg)
    gross_mg = mass(regs.gross, signed_by_flag=not net_mode)
    assert gross_mg is not None  # gross is the one required register
    net_mg = mass(regs.net, signed_by_flag=net_mode)
    if net_mode and net_mg is None:
        net_mg = gross_mg - (tare_mg or 0)
    shown = net_mg if net_mode else gross_mg
    assert shown is not None
    twos = map_.sign == "twos-complement"
    if twos and bits.sign is not None and shown and (shown < 0) != negative:
        where = regs.net if net_mode and regs.net else regs.gross
        raise FrameError(f"status 0x{st:04X}: sign bit disagrees with weight {shown} mg",
                         offset=where.address, length=where.width)
    stable = _bit(st, bits.stable)
    if bits.unstable is not None:
        stable = not _bit(st, bits.unstable)
    frame = WeightFrame(
        weight_mg=shown,
        stable=stable,
        net=net_mode,
        tare_mg=tare_mg,
        overload=bool(_bit(st, bits.overload) or _bit(st, bits.overflow)),
        underload=bool(_bit(st, bits.underload)),
        zero=_bit(st, bits.zero),
        unit=str(map_.unit),
        decimals=decimals,
        status=None if status is None else f"0x{status:04X}",
    )
    counters = {k: value(r) for k, r in (("cal", regs.cal_counter), ("cfg", regs.cfg_counter))
                if r is not None}
    extras = {
        "raw_ad": value(regs.raw_ad),
        "cal_zero": value(regs.cal_zero),
        "cal_span": value(regs.cal_span),
        "counters": counters,
        "identity": {name: value(r) for name, r in map_.identity.items()},
    }
    return frame, extras


# -- encode: frame -> registers (device side) --------------------------------------------


def _weight_words(map_: ModbusMap, reg: Register, mass_mg: int, decimals: int) -> list[int]:
    steps = mg_to_steps(mass_mg, decimals, map_.unit)
    if map_.sign == "flag":
        steps = abs(steps)
    if reg.type is RegType.FLOAT32:
        return encode_value(reg, float(Fraction(steps, 10**decimals)), map_)
    return encode_value(reg, steps, map_)


def encode_registers(
    map_: ModbusMap,
    frame: WeightFrame,
    *,
    extras: Mapping[str, Any] | None = None,
    decimals: int | None = None,
) -> dict[tuple[Function, int], int]:
    """Register image ``{(function, address): word}`` a device shows for ``frame``.

    ``decimals`` is needed when the map takes them from the status word and the frame
    does not state them. ``extras`` has the shape :func:`decode_registers` returns.
    """
    regs, bits = map_.registers, map_.status_bits
    d = map_.decimals if map_.decimals is not None else (
        decimals if decimals is not None else frame.decimals)
    if d is None:
        raise EncodeError("decimals: the map takes them from the status word; give decimals")
    tare = frame.tare_mg or 0
    if bits.net is None and frame.net != bool(tare):
        raise EncodeError("without a net status bit, net mode is a non-zero tare")
    if frame.net and regs.net is None and regs.tare is None:
        raise EncodeError("the map has no net or tare register for a net frame")
    gross = frame.weight_mg + tare if frame.net else frame.weight_mg
    image: dict[tuple[Function, int], int] = {}

    def put(reg: Register | None, words: list[int]) -> None:
        if reg is not None:
            for i, w in enumerate(words):
                image[(reg.function, reg.address + i)] = w

    for reg, mass_mg in ((regs.gross, gross), (regs.net, gross - tare), (regs.tare, tare)):
        if reg is not None:
            put(reg, _weight_words(map_, reg, mass_mg, d))
    if regs.status is not None:
        st = 0
        flags = {
            "stable": bool(frame.stable), "unstable": not frame.stable,
            "zero": bool(frame.zero), "overload": frame.overload,
            "overflow": frame.overload and bits.overload is None,
            "underload": frame.underload, "sign": frame.weight_mg < 0, "net": frame.net,
        }
        for name, on in flags.items():
            bit = getattr(bits, name)
            if bit is not None and on:
                st |= 1 << bit
        if bits.decimals_mask is not None:
            code = d << mask_shift(bits.decimals_mask)
            if d < 0 or code & ~bits.decimals_mask:
                raise EncodeError(f"decimals {d} does not fit the status decimals mask")
            st |= code
        put(regs.status, encode_value(regs.status, st, map_))
    ex = extras or {}
    for name in ("raw_ad", "cal_zero", "cal_span"):
        reg = getattr(regs, name)
        if reg is not None and ex.get(name) is not None:
            put(reg, encode_value(reg, ex[name], map_))
    for key, reg in (("cal", regs.cal_counter), ("cfg", regs.cfg_counter)):
        n = ex.get("counters", {}).get(key)
        if reg is not None and n is not None:
            put(reg, encode_value(reg, n, map_))
    for name, reg in map_.identity.items():
        v = ex.get("identity", {}).get(name)
        if v is not None:
            put(reg, encode_value(reg, v, map_))
    return image


_MASS_ARG = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(mg|g|kg)\s*$", re.IGNORECASE)


def encode_command(
    map_: ModbusMap, command: Command, *, decimals: int | None = None
) -> tuple[int, list[int]]:
    """``(address, words)`` to write for ``command`` (a holding-register write).

    A command with an argument (a preset tare, ``Command("tare", "0.500 kg")``) writes the
    argument in display steps instead of the profile's fixed value.
    """
    try:
        spec = map_.commands[command.name]
    except KeyError:
        raise EncodeError(f"the map has no {command.name!r} command; it has "
                          f"{', '.join(sorted(map_.commands)) or 'none'}") from None
    reg = spec.as_register()
    if command.arg is not None:
        m = _MASS_ARG.match(command.arg)
        d = map_.decimals if map_.decimals is not None else decimals
        if not m or d is None:
            raise EncodeError(f"{command.name}: argument {command.arg!r} is not a mass like "
                              "'0.500 kg' (or the decimals are not known yet)")
        try:
            value = mg_to_steps(decimal_to_mg(m.group(1), m.group(2)), d, map_.unit)
        except UnitError as err:
            raise EncodeError(str(err)) from None
    elif spec.value is None:
        raise EncodeError(f"{command.name}: this command needs an argument")
    else:
        value = spec.value
    return spec.address, encode_value(reg, value, map_)
