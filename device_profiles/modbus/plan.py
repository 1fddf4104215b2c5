"""The read plan: a register map compiled once into a few block reads (pure).

Registers of the same function closer than ``max_gap`` are merged into one read of at
most ``max_read`` (≤ 125) registers, as Telegraf's modbus input plans its requests; set
``max_gap = 0`` for devices that reject reads of undocumented registers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from device_profiles.errors import ProfileError
from device_profiles.modbus.model import MAX_READ, Function, ModbusMap


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


def blocks_from_image(
    plan: Sequence[ReadBlock], image: Mapping[tuple[Function, int], int]
) -> dict[ReadBlock, list[int]]:
    """What reading ``plan`` from a device holding ``image`` returns (gaps read as 0)."""
    return {b: [image.get((b.function, b.address + i), 0) for i in range(b.count)] for b in plan}

