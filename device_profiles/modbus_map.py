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

No I/O, no clock, no logging. The code is in :mod:`device_profiles.modbus` (``model``:
the map; ``plan``: the read plan; ``registers``: values both ways); this module is where
callers import it from. It imports nothing of ``schema``, and ``schema`` nothing of it
(import-linter contract "Device profiles without an import circle").
"""

from __future__ import annotations

from device_profiles.modbus.model import (
    MAX_READ,
    ByteOrder,
    Function,
    ModbusMap,
    Register,
    Registers,
    RegType,
    StatusBits,
    WordOrder,
    WriteCommand,
    parse_modbus_map,
)
from device_profiles.modbus.plan import ReadBlock, blocks_from_image, build_read_plan
from device_profiles.modbus.registers import (
    decode_registers,
    decode_value,
    encode_command,
    encode_registers,
    encode_value,
    mg_to_steps,
    steps_to_mg,
)

__all__ = [
    "MAX_READ",
    "ByteOrder",
    "Function",
    "ModbusMap",
    "ReadBlock",
    "RegType",
    "Register",
    "Registers",
    "StatusBits",
    "WordOrder",
    "WriteCommand",
    "blocks_from_image",
    "build_read_plan",
    "decode_registers",
    "decode_value",
    "encode_command",
    "encode_registers",
    "encode_value",
    "mg_to_steps",
    "parse_modbus_map",
    "steps_to_mg",
]
