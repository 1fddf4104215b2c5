"""Lines: one reader per port, its devices' frames handed to each device's listeners.

The model is python-can's Bus / Notifier: a *line* is one port or connection and every
device on it; one reader owns the line, and each device's frames go to that device's
listeners (in ``edge_agent.agent.ScaleWorker``: the weighing state machine, fair-scale
station pairing, raw-AD tracking, counter watching, the outbox).

* A ``[[line]]`` of kind ``modbus-rtu`` or ``modbus-tcp`` is one :class:`ModbusBus`: its
  thread polls every slave in turn, each with its own request timeout and, after a
  failure, its own jittered doubling backoff, and queues each slave's frames (or its
  failure) for that device's worker. A silent slave costs the line its timeout once per
  backoff period; the others keep their rate. Two Modbus devices on one RS-485 port need
  this: two clients opening the same tty would read each other's answers.
* A ``[[line]]`` of kind ``serial`` carries one scale (serial scale protocols have no
  address): its :class:`SerialFrameSource`, read by its worker, as before.
* An old ``[[scale]]`` is a line of one device with a source of its own (``make_source``),
  exactly as before ``[[line]]`` existed.

Building a line opens nothing: :meth:`ModbusBus.open` / ``start`` do (the agent calls them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from device_profiles.codecs import make_codec
from device_profiles.codecs.base import REQUEST_WEIGHT
from device_profiles.schema import LinkKind, Profile
from edge_agent.config import LineConfig, LineKind, ScaleConfig
from edge_agent.modbus import ModbusBus, ModbusFrameSource
from edge_agent.transport import FrameSource, SerialFrameSource

_SERIAL_KEYS = ("baudrate", "bytesize", "parity", "stopbits")


def serial_settings(profile: Profile, line: LineConfig | None = None) -> dict[str, Any]:
    """The port's settings: the line's where it sets them, else the profile's."""
    link = profile.link
    out = {k: getattr(link, k) for k in _SERIAL_KEYS}
    if line is not None:
        out.update({k: getattr(line, k) for k in _SERIAL_KEYS if getattr(line, k) is not None})
    return out


def make_source(scale: ScaleConfig, profile: Profile, *,
                line: LineConfig | None = None) -> FrameSource:
    """A frame source of its own for one device (a ``[[scale]]``, a serial ``[[line]]``)."""
    link = profile.link
    if link.kind in (LinkKind.MODBUS_RTU, LinkKind.MODBUS_TCP):
        if link.kind is LinkKind.MODBUS_TCP:
            host, _, port = scale.port.rpartition(":")
            return ModbusFrameSource.from_profile(
                profile, tcp=(host or "127.0.0.1", int(port)), slave=scale.slave)
        return ModbusFrameSource.from_profile(profile, rtu=scale.port, slave=scale.slave)
    codec = make_codec(profile.protocol, profile.codec)
    return SerialFrameSource(
        scale.port, codec, **serial_settings(profile, line),
        request=REQUEST_WEIGHT if link.mode == "request" else None,
    )


@dataclass
class BuiltLine:
    """A line's reader (a bus, or none: each device reads its own source) and sources."""

    bus: ModbusBus | None
    sources: dict[str, FrameSource] = field(default_factory=dict)  # by device id


def build_line(line: LineConfig, profiles: dict[str, Profile]) -> BuiltLine:
    """The bus of a Modbus line with one source per slave, or a serial line's source.

    ``profiles``: each device's loaded profile, by device id.
    """
    if line.kind is LineKind.SERIAL:
        scale = line.scale(0)
        return BuiltLine(None, {scale.device: make_source(scale, profiles[scale.device],
                                                          line=line)})
    first = profiles[line.device[0].device]
    poll_ms = line.poll_interval_ms or min(
        profiles[d.device].link.poll_interval_ms for d in line.device)
    kwargs: dict[str, Any] = {}
    if line.kind is LineKind.MODBUS_TCP:
        kwargs["tcp"] = line.port
    else:
        kwargs["rtu"] = line.port
        kwargs.update(serial_settings(first, line))
    bus = ModbusBus(poll_interval_s=poll_ms / 1000, backoff_max_s=line.backoff_max_s, **kwargs)
    built = BuiltLine(bus)
    for d in line.device:
        prof = profiles[d.device]
        assert prof.modbus is not None  # config.check_lines: Modbus lines hold Modbus devices
        timeout_ms = d.timeout_ms or prof.link.timeout_ms
        built.sources[d.device] = bus.add_slave(
            prof.modbus, slave=d.slave, timeout_s=timeout_ms / 1000,
            name=f"{line.id}#{d.slave or prof.modbus.slave} ({d.device})")
    return built
