"""Modbus register maps: a weighing transmitter's registers described as data (pure).

Rules (architecture.md §3, domain.md §3.1; the plan idea follows Telegraf's modbus input):

* A :class:`ModbusMap` names each register by its *role* (status, gross, net, tare, raw
  AD, calibration zero/span, CAL/CFG counters, identity) with address, function
  (holding/input), type, word order and byte order. Word order and the sign encoding
  vary by vendor, so they are data, never code.
* :func:`build_read_plan` compiles the map once into a few :class:`ReadBlock`\\ s: registers
  of the same function closer than ``max_gap`` are merged into one read of at most
  ``max_read`` (≤ 125) registers. Set ``max_gap = 0`` for devices that reject reads of
  undocumented registers.
* :func:`decode_registers` turns the values read into a :class:`WeightFrame` plus an
  extras dict; :func:`encode_registers` is the device side (emulators, round-trip tests).
* Mass is exact: an integer reading ``n`` with ``d`` decimals in ``unit`` is
  ``n × 10^-d unit`` (:func:`weighing.units.scaled_to_mg`). A **float32** reading is first
  rounded to the nearest display step ``10^-d`` with exact rational arithmetic
  (``Fraction(float)``, ties to even): a float32 carries 24 bits of mantissa, so a value of
  up to 2^23 display steps round-trips exactly; beyond that the float itself is coarser
  than the display step. NaN and infinities are :class:`FrameError`\\ s.
* Errors: a bad map raises ``ValueError`` inside pydantic validation (which
  :func:`parse_modbus_map` and ``schema.parse_profile`` turn into ``ProfileError`` naming
  the field); register values that no device can mean raise :class:`FrameError`, whose
  ``offset`` is the register address and ``length`` the register count.

No I/O, no clock, no logging. ``ProfileError`` is imported lazily: ``schema`` imports
this module at its top.
"""

from __future__ import annotations

import itertools
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device_profiles.codecs.base import Command, EncodeError, FrameError, WeightFrame
from weighing.errors import UnitError
from weighing.units import MassUnit, decimal_to_mg, scaled_to_mg

MAX_READ = 125  # Modbus: at most 125 registers in one read (FC 3/4)


class Function(StrEnum):
    HOLDING = "holding"  # FC 3 read, FC 6/16 write
    INPUT = "input"  # FC 4, read only


class RegType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    STRING = "string"  # ASCII, NUL/space padded; ``words`` registers


class WordOrder(StrEnum):
    HIGH_FIRST = "high-first"
    LOW_FIRST = "low-first"


class ByteOrder(StrEnum):
    BIG = "big"  # standard Modbus: high byte first inside each register
    LITTLE = "little"


_STRUCT = {
    RegType.INT16: ("h", 1), RegType.UINT16: ("H", 1), RegType.INT32: ("i", 2),
    RegType.UINT32: ("I", 2), RegType.FLOAT32: ("f", 2),
}
_INT_TYPES = {RegType.INT16, RegType.UINT16, RegType.INT32, RegType.UINT32}
_UNSIGNED = {RegType.UINT16, RegType.UINT32}
_MG_PER_UNIT = {MassUnit.MG: 1, MassUnit.G: 1_000, MassUnit.KG: 1_000_000}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Register(_Strict):
    """One value: ``address`` of its first register and how its words are laid out."""

    address: int = Field(ge=0, le=0xFFFF)
    function: Function = Function.HOLDING
    type: RegType = RegType.UINT16
    words: int | None = Field(None, ge=1, le=MAX_READ)  # strings only
    word_order: WordOrder | None = None  # default: the map's
    byte_order: ByteOrder | None = None  # default: the map's

    @model_validator(mode="after")
    def _check(self) -> Register:
        if self.type is RegType.STRING and self.words is None:
            raise ValueError("a string register needs 'words' (its register count)")
        if self.type is not RegType.STRING and self.words is not None:
            raise ValueError(f"'words' is only for strings; {self.type} has a fixed width")
        if self.address + self.width - 1 > 0xFFFF:
            raise ValueError("register runs past address 0xFFFF")
        return self

    @property
    def width(self) -> int:
        """Number of 16-bit registers the value occupies."""
        return self.words if self.type is RegType.STRING and self.words else _STRUCT[self.type][1]


class Registers(_Strict):
    """The registers by role; ``gross`` is required, every other role is optional."""

    status: Register | None = None
    gross: Register
    net: Register | None = None
    tare: Register | None = None
    raw_ad: Register | None = None
    cal_zero: Register | None = None  # writable on many devices: a 改标定 cheat vector
    cal_span: Register | None = None  # idem
    cal_counter: Register | None = None  # event counters (OIML G 18 / NCWM Pub. 14)
    cfg_counter: Register | None = None


_FLAG_NAMES = ("stable", "unstable", "zero", "overload", "overflow", "underload", "sign", "net")


class StatusBits(_Strict):
    """Bit numbers (0 = least significant) in the status register; ``None``: not signalled."""

    decimals_mask: int | None = Field(None, ge=1, le=0xFFFF)  # e.g. 0x0007 = b0–2
    stable: int | None = Field(None, ge=0, le=31)
    unstable: int | None = Field(None, ge=0, le=31)  # inverted stability flag
    zero: int | None = Field(None, ge=0, le=31)
    overload: int | None = Field(None, ge=0, le=31)
    overflow: int | None = Field(None, ge=0, le=31)  # reported as overload too
    underload: int | None = Field(None, ge=0, le=31)
    sign: int | None = Field(None, ge=0, le=31)  # set: displayed weight is negative
    net: int | None = Field(None, ge=0, le=31)  # set: display shows net

    @model_validator(mode="after")
    def _check(self) -> StatusBits:
        if self.stable is not None and self.unstable is not None:
            raise ValueError("status_bits: give 'stable' or 'unstable', not both")
        if self.decimals_mask is not None:
            m = self.decimals_mask >> _shift(self.decimals_mask)
            if m & (m + 1):
                raise ValueError("status_bits.decimals_mask: bits must be contiguous")
        used = self.decimals_mask or 0
        for name in _FLAG_NAMES:
            bit = getattr(self, name)
            if bit is None:
                continue
            if used >> bit & 1:
                raise ValueError(f"status_bits.{name}: bit {bit} is already used")
            used |= 1 << bit
        return self

    def any(self) -> bool:
        return self.decimals_mask is not None or any(
            getattr(self, n) is not None for n in _FLAG_NAMES
        )


class WriteCommand(_Strict):
    """A command is one register write: ``value`` (or the command's argument) at ``address``."""

    address: int = Field(ge=0, le=0xFFFF)
    type: RegType = RegType.UINT16
    value: int | None = None  # None: the command needs an argument (e.g. a preset tare)
    word_order: WordOrder | None = None
    byte_order: ByteOrder | None = None

    @model_validator(mode="after")
    def _check(self) -> WriteCommand:
        if self.type not in _INT_TYPES:
            raise ValueError(f"type: a command writes an integer type, not {self.type}")
        return self

    def as_register(self) -> Register:
        return Register(address=self.address, type=self.type, words=None,
                        word_order=self.word_order, byte_order=self.byte_order)


class ModbusMap(_Strict):
    """A device's Modbus register map (the ``[modbus]`` table of a profile)."""

    slave: int = Field(1, ge=1, le=247)
    unit: MassUnit = MassUnit.KG
    decimals: int | None = Field(None, ge=-3, le=6)  # fixed; else from status_bits
    word_order: WordOrder = WordOrder.HIGH_FIRST
    byte_order: ByteOrder = ByteOrder.BIG
    sign: Literal["twos-complement", "flag"] = "twos-complement"
    max_read: int = Field(MAX_READ, ge=1, le=MAX_READ)
    max_gap: int = Field(8, ge=0, le=MAX_READ - 1)
    registers: Registers
    status_bits: StatusBits = Field(default_factory=StatusBits)
    identity: dict[str, Register] = Field(default_factory=dict)
    commands: dict[str, WriteCommand] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ModbusMap:
        regs, bits = self.registers, self.status_bits
        if self.unit is MassUnit.LB:
            raise ValueError("unit: pounds are not a legal unit here")
        if (self.decimals is None) == (bits.decimals_mask is None):
            raise ValueError("decimals: give either 'decimals' or 'status_bits.decimals_mask'")
        if bits.any() and regs.status is None:
            raise ValueError("registers.status: status_bits need a status register")
        if regs.status is not None:
            if regs.status.type not in _UNSIGNED:
                raise ValueError("registers.status.type: must be uint16 or uint32")
            width = 16 * regs.status.width
            for name in (*_FLAG_NAMES, "decimals_mask"):
                v = getattr(bits, name)
                top = v.bit_length() - 1 if name == "decimals_mask" and v else v
                if top is not None and top >= width:
                    raise ValueError(f"status_bits.{name}: beyond the {width}-bit status")
        for name in ("gross", "net", "tare"):
            reg = getattr(regs, name)
            if reg is None:
                continue
            if reg.type is RegType.STRING:
                raise ValueError(f"registers.{name}.type: a weight cannot be a string")
            if self.sign == "flag" and reg.type not in _UNSIGNED:
                raise ValueError(
                    f"registers.{name}.type: sign = 'flag' needs unsigned registers, "
                    f"not {reg.type}")
        if self.sign == "flag" and bits.sign is None:
            raise ValueError("status_bits.sign: sign = 'flag' needs a sign bit")
        for name in ("raw_ad", "cal_zero", "cal_span", "cal_counter", "cfg_counter"):
            reg = getattr(regs, name)
            if reg is not None and reg.type not in _INT_TYPES:
                raise ValueError(f"registers.{name}.type: must be an integer type")
        self._check_layout()
        return self

    def _check_layout(self) -> None:
        spans = sorted(
            (reg.function, reg.address, reg.address + reg.width, label)
            for label, reg in self.named_registers()
        )
        for (f1, _a1, end1, n1), (f2, a2, _end2, n2) in itertools.pairwise(spans):
            if f1 == f2 and a2 < end1:
                raise ValueError(f"{n2}: overlaps {n1} ({f1} register 0x{a2:04X})")
        for _f, a, end, label in spans:
            if end - a > self.max_read:
                raise ValueError(f"{label}: {end - a} registers exceed max_read {self.max_read}")

    def named_registers(self) -> list[tuple[str, Register]]:
        """Every register to read, labelled by its field path."""
        out = [(f"registers.{n}", r) for n, r in self.registers if isinstance(r, Register)]
        out += [(f"identity.{n}", r) for n, r in self.identity.items()]
        return out


def _shift(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def parse_modbus_map(data: Mapping[str, Any], *, source: str = "<dict>") -> ModbusMap:
    """Validate a register map; errors raise ``ProfileError`` naming ``source`` and field."""
    from device_profiles.schema import ProfileError  # lazy: schema imports this module

    try:
        return ModbusMap.model_validate(data)
    except ValidationError as err:
        where = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'modbus'}: {e['msg']}" for e in err.errors()
        )
        raise ProfileError(f"{source}: modbus: {where}") from None


# -- read plan ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class ReadBlock:
    """One read request: ``count`` registers of ``function`` from ``address``."""

    function: Function
    address: int
    count: int


def build_read_plan(
    map_: ModbusMap, *, max_gap: int | None = None, max_read: int | None = None
) -> list[ReadBlock]:
    """Merge the map's registers into as few reads as the gap and size bounds allow."""
    gap = map_.max_gap if max_gap is None else max_gap
    size = map_.max_read if max_read is None else max_read
    if not 0 <= gap < MAX_READ or not 1 <= size <= MAX_READ:
        from device_profiles.schema import ProfileError

        raise ProfileError(f"modbus: max_gap {gap} / max_read {size} out of range")
    spans = sorted((r.function, r.address, r.address + r.width) for _, r in map_.named_registers())
    blocks: list[ReadBlock] = []
    cur: list[Any] | None = None  # [function, start, end]
    for function, start, end in spans:
        if (cur is not None and function == cur[0] and start - cur[2] <= gap
                and max(end, cur[2]) - cur[1] <= size):
            cur[2] = max(end, cur[2])
            continue
        if cur is not None:
            blocks.append(ReadBlock(cur[0], cur[1], cur[2] - cur[1]))
        cur = [function, start, end]
    if cur is not None:
        blocks.append(ReadBlock(cur[0], cur[1], cur[2] - cur[1]))
    return blocks


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
    code, _ = _STRUCT[reg.type]
    return struct.unpack(f">{code}", b"".join(w.to_bytes(2, "big") for w in ws))[0]  # type: ignore[no-any-return]


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
        code, _ = _STRUCT[reg.type]
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
        decimals = (st & bits.decimals_mask) >> _shift(bits.decimals_mask)
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
    net_mg = mass(regs.net, signed_by_flag=net_mode)
    if net_mode and net_mg is None:
        net_mg = gross_mg - (tare_mg or 0)  # type: ignore[operator]
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
            code = d << _shift(bits.decimals_mask)
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


def blocks_from_image(
    plan: Sequence[ReadBlock], image: Mapping[tuple[Function, int], int]
) -> dict[ReadBlock, list[int]]:
    """What reading ``plan`` from a device holding ``image`` returns (gaps read as 0)."""
    return {b: [image.get((b.function, b.address + i), 0) for i in range(b.count)] for b in plan}


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
