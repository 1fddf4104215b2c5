"""One Modbus slave as a frame source: its register map's read plan, polled and decoded.

* :class:`ModbusFrameSource` executes the map's read plan (``build_read_plan``) once per
  poll and decodes it (``decode_registers``); ``extras`` keeps raw AD, calibration
  registers, counters and identity of the last poll; ``send`` writes tare/zero commands.
* Standalone it owns its :class:`~edge_agent.modbus_line.ModbusLine` and paces itself. On
  a shared line a :class:`~edge_agent.modbus_bus.ModbusBus` polls it: ``add_slave`` sets
  the source's ``_bus``; under the bus's condition (``_cond``) the bus appends each result
  to the source's ``_queue`` (counting ``dropped`` when it is full) and updates its
  :class:`SlaveState`, and the source's ``poll`` waits on that condition and drains the
  queue. These attributes are the whole hand-over between the two modules.

Callers import these names from :mod:`edge_agent.modbus`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from device_profiles.codecs import Command, FrameError, WeightFrame
from device_profiles.modbus_map import ModbusMap, build_read_plan, decode_registers, encode_command
from device_profiles.schema import LinkKind, Profile
from edge_agent.modbus_line import ModbusLine
from edge_agent.transport import FrameSource, Polled, TransportError

if TYPE_CHECKING:
    from edge_agent.modbus_bus import ModbusBus


class SlaveHealth(StrEnum):
    UNKNOWN = "unknown"  # not polled yet
    OK = "ok"
    BACKING_OFF = "backing_off"


@dataclass(frozen=True, slots=True)
class SlaveState:
    """What the supervisor sees of one slave (times from the bus's clock)."""

    slave: int
    name: str
    health: SlaveHealth
    consecutive_failures: int = 0
    next_try_s: float = 0.0
    last_error: str | None = None
    reads_ok: int = 0
    reads_failed: int = 0
    last_latency_s: float | None = None


class ModbusFrameSource(FrameSource):
    """One Modbus device as a frame source: each poll reads the plan and decodes one frame.

    Standalone (``rtu=`` or ``tcp=``), ``poll`` paces itself to ``poll_interval_s`` and
    raises :class:`TransportError` / :class:`TransportTimeoutError` on link failures. On a
    running :class:`ModbusBus` (``bus.add_slave``) the bus polls and ``poll`` returns what
    it collected for this slave.
    """

    def __init__(
        self,
        map_: ModbusMap,
        *,
        rtu: str | None = None,
        tcp: tuple[str, int] | str | None = None,
        line: ModbusLine | None = None,
        slave: int | None = None,
        timeout_s: float = 0.3,
        poll_interval_s: float = 0.1,
        name: str | None = None,
        **line_settings: Any,
    ) -> None:
        self.map = map_
        self.plan = build_read_plan(map_)
        self.slave = map_.slave if slave is None else slave
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self._own_line = line is None
        self.line = line if line is not None else ModbusLine(rtu=rtu, tcp=tcp, **line_settings)
        self.name = name or f"{self.line.name}#{self.slave}"
        self.extras: dict[str, Any] | None = None  # of the last successful poll
        self.last_frame: WeightFrame | None = None
        self._next_due = 0.0
        self._bus: ModbusBus | None = None
        self._queue: deque[Polled | TransportError] = deque(maxlen=256)
        self.dropped = 0  # bus results dropped because this source's queue was full
        self.state = SlaveState(self.slave, self.name, SlaveHealth.UNKNOWN)

    @classmethod
    def from_profile(cls, profile: Profile, **kwargs: Any) -> ModbusFrameSource:
        """A source for ``profile`` (its map, timeout, poll interval, serial settings)."""
        if profile.modbus is None:
            raise TransportError(f"profile {profile.id} has no [modbus] register map")
        link = profile.link
        kwargs.setdefault("timeout_s", link.timeout_ms / 1000)
        kwargs.setdefault("poll_interval_s", link.poll_interval_ms / 1000)
        if link.kind is LinkKind.MODBUS_RTU and "line" not in kwargs:
            for k in ("baudrate", "bytesize", "parity", "stopbits"):
                kwargs.setdefault(k, getattr(link, k))
        return cls(profile.modbus, **kwargs)

    @property
    def bus(self) -> ModbusBus | None:
        """The bus that polls this slave (a shared line), or None (the source polls)."""
        return self._bus

    def open(self) -> None:
        if self._own_line:
            self.line.open()

    def close(self) -> None:
        if self._own_line:
            self.line.close()

    def read_once(self) -> Polled:
        """Execute the read plan now; decode errors go to ``Polled.errors``."""
        values = {b: self.line.read(self.slave, b, timeout_s=self.timeout_s) for b in self.plan}
        try:
            frame, extras = decode_registers(self.map, values)
        except FrameError as err:
            return Polled(errors=[err], nbytes=2 * sum(b.count for b in self.plan))
        self.extras, self.last_frame = extras, frame
        return Polled(frames=[frame], nbytes=2 * sum(b.count for b in self.plan))

    def poll(self, timeout_s: float) -> Polled:
        if self._bus is not None and self._bus.running:
            return self._drain(timeout_s)
        wait = self._next_due - time.monotonic()
        if wait > timeout_s:
            time.sleep(max(timeout_s, 0.0))
            return Polled()
        if wait > 0:
            time.sleep(wait)
        self._next_due = time.monotonic() + self.poll_interval_s
        return self.read_once()

    def _drain(self, timeout_s: float) -> Polled:
        assert self._bus is not None
        cond = self._bus._cond
        with cond:
            cond.wait_for(lambda: bool(self._queue) or not self._bus.running, timeout_s)  # type: ignore[union-attr]
            items = list(self._queue)
            self._queue.clear()
        out = Polled()
        failure: TransportError | None = None
        for item in items:
            if isinstance(item, TransportError):
                failure = item
            else:
                out.frames += item.frames
                out.errors += item.errors
                out.nbytes += item.nbytes
        if failure is not None and not out.frames:
            raise failure
        return out

    def send(self, command: Command) -> None:
        """Write the map's register for ``command`` (``tare``, ``zero``, ...)."""
        decimals = self.last_frame.decimals if self.last_frame else None
        address, words = encode_command(self.map, command, decimals=decimals)
        self.line.write(self.slave, address, words, timeout_s=self.timeout_s)
