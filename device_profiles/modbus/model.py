"""The Modbus register map as data: roles, types, word and byte order, validated (pure).

The pydantic models of a profile's ``[modbus]`` table and :func:`parse_modbus_map`; the
rules are in :mod:`device_profiles.modbus_map`, which re-exports every public name. A bad
map raises ``ValueError`` inside validation, which :func:`parse_modbus_map` (and
``schema.parse_profile``) turn into :class:`~device_profiles.errors.ProfileError` naming
the field.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device_profiles.errors import ProfileError
from weighing.units import MassUnit

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


#: struct code and register width of each fixed-width type (strings: ``words`` registers)
REG_FORMATS: dict[RegType, tuple[str, int]] = {
    RegType.INT16: ("h", 1), RegType.UINT16: ("H", 1), RegType.INT32: ("i", 2),
    RegType.UINT32: ("I", 2), RegType.FLOAT32: ("f", 2),
}
_INT_TYPES = {RegType.INT16, RegType.UINT16, RegType.INT32, RegType.UINT32}
_UNSIGNED = {RegType.UINT16, RegType.UINT32}


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
        if self.type is RegType.STRING and self.words:
            return self.words
        return REG_FORMATS[self.type][1]


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
            m = self.decimals_mask >> mask_shift(self.decimals_mask)
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


def mask_shift(mask: int) -> int:
    """Bit number of the lowest set bit of ``mask`` (where a status field starts)."""
    return (mask & -mask).bit_length() - 1


def parse_modbus_map(data: Mapping[str, Any], *, source: str = "<dict>") -> ModbusMap:
    """Validate a register map; errors raise ``ProfileError`` naming ``source`` and field."""
    try:
        return ModbusMap.model_validate(data)
    except ValidationError as err:
        where = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'modbus'}: {e['msg']}" for e in err.errors()
        )
        raise ProfileError(f"{source}: modbus: {where}") from None
