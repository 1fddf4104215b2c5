"""The edge agent's configuration file (TOML), validated at load.

Example (one agent, several scales; see docs/edge-agent.md)::

    [agent]
    market = "m001"
    outbox = "var/edge-outbox.db"
    heartbeat_s = 30

    [mqtt]
    url = "mqtt://127.0.0.1:1883"      # mqtts:// for TLS
    # ca = "ca.pem"  cert = "dev.pem"  key = "dev.key"  username = ""  password = ""

    [[scale]]                           # a scale alone on its port (a line of one device)
    device = "s-0001"
    profile = "toledo-15kg-5g"          # shipped id or a path to a .toml profile
    port = "/dev/ttyUSB0"               # any pyserial URL: /dev/pts/3, loop://, socket://h:p
    key = "hex-encoded per-device HMAC key"
    role = "trade"                      # "fair" (公平秤) may add scanner = "/dev/ttyACM0"

    [[line]]                            # one RS-485 port shared by several Modbus slaves
    id = "rs485-a"
    kind = "modbus-rtu"                 # or "modbus-tcp" (port = "host:port"), "serial"
    port = "/dev/ttyUSB1"
      [[line.device]]
      device = "s-0002"
      profile = "modbus-transmitter-generic"
      slave = 1
      [[line.device]]
      device = "s-0003"
      profile = "modbus-transmitter-generic"
      slave = 2

Relative paths (outbox, ca, cert, key, a profile ``*.toml``) are relative to the file.
Errors name the file and the key (``line.0.device.1.slave: ...``). Profiles are loaded
here, so a device whose profile does not fit its line (an RTU profile at a ``host:port``,
a serial scale on a Modbus line, two devices with one slave id) is refused at load, not
found at run time.

The models of each section and their own checks are in :mod:`edge_agent.config_models`;
here the file is read, checked as a whole (device ids, ports, slave ids, each profile
against its line) and its relative paths resolved. Every model is importable from here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from edge_agent.config_models import (
    AgentConfig,
    AgentSection,
    DeviceConfig,
    LineConfig,
    LineKind,
    MqttConfig,
    ScaleConfig,
    looks_like_host_port,
)
from weighing.errors import GatewayError

__all__ = [
    "AgentConfig",
    "AgentSection",
    "ConfigError",
    "DeviceConfig",
    "LineConfig",
    "LineKind",
    "MqttConfig",
    "ScaleConfig",
    "check_lines",
    "load_config",
    "looks_like_host_port",
]


class ConfigError(GatewayError, ValueError):
    """The agent's configuration is invalid; the message names the file and field."""


def load_config(path: str | Path) -> AgentConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{p}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as err:
        where = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"{p}: {where}") from None
    seen: dict[str, str] = {}
    for where, s in cfg.devices():
        if s.device in seen:
            raise ConfigError(f"{p}: {where}.device: duplicate device id {s.device!r} "
                              f"(also {seen[s.device]})")
        seen[s.device] = where
    cfg = _resolve_paths(cfg, p.parent)
    check_lines(cfg, p)
    return cfg


def check_lines(cfg: AgentConfig, path: Path) -> None:
    """Each device's profile fits its line; no port is opened twice; one slave id each.

    Loads every profile (a missing or invalid one is an error here, naming the key).
    """
    from device_profiles.schema import LinkKind, ProfileError, load_profile

    def profile(where: str, s: DeviceConfig) -> Any:
        try:
            return load_profile(s.profile)
        except (ProfileError, OSError, ValueError) as err:
            raise ConfigError(f"{path}: {where}.profile: {err}") from None

    ports: dict[str, str] = {}

    def claim(where: str, port: str) -> None:
        if port.startswith("loop://"):
            return  # every loop:// is a line of its own
        if port in ports:
            raise ConfigError(
                f"{path}: {where}: port {port!r} is also {ports[port]}'s: one port is "
                f"opened once; devices sharing an RS-485 line go in one [[line]] with a "
                f"[[line.device]] each (docs/edge-agent.md)")
        ports[port] = where

    for i, s in enumerate(cfg.scale):
        prof = profile(f"scale.{i}", s)
        kind = prof.link.kind
        if kind is LinkKind.MODBUS_RTU and looks_like_host_port(s.port):
            raise ConfigError(
                f"{path}: scale.{i}.port: {s.port!r} is a host:port, but profile "
                f"{prof.id!r} is Modbus RTU (a serial device path such as /dev/ttyUSB0); "
                f"for RTU slaves behind a Modbus TCP gateway use a [[line]] with "
                f"kind = \"modbus-tcp\"")
        if kind is LinkKind.MODBUS_TCP and not looks_like_host_port(s.port):
            raise ConfigError(f"{path}: scale.{i}.port: {s.port!r}: profile {prof.id!r} "
                              f"is Modbus TCP, its port is host:port")
        if kind is not LinkKind.MODBUS_TCP:
            claim(f"scale.{i}.port", s.port)
    for i, line in enumerate(cfg.line):
        if line.kind is not LineKind.MODBUS_TCP:
            claim(f"line.{i}.port", line.port)
        slaves: dict[int, str] = {}
        for j, d in enumerate(line.device):
            where = f"line.{i}.device.{j}"
            prof = profile(where, d)
            modbus = prof.link.kind in (LinkKind.MODBUS_RTU, LinkKind.MODBUS_TCP)
            if line.kind is LineKind.SERIAL and modbus:
                raise ConfigError(f"{path}: {where}.profile: {prof.id!r} is a Modbus "
                                  f"device, line {line.id!r} is serial: use kind = "
                                  f"\"{prof.link.kind.value}\"")
            if line.kind is not LineKind.SERIAL and (not modbus or prof.modbus is None):
                raise ConfigError(f"{path}: {where}.profile: {prof.id!r} speaks "
                                  f"{prof.protocol}, not Modbus; line {line.id!r} is "
                                  f"{line.kind.value} (a serial scale gets a kind = "
                                  f"\"serial\" line of its own)")
            if prof.modbus is None:
                continue
            slave = d.slave if d.slave is not None else prof.modbus.slave
            if slave in slaves:
                raise ConfigError(f"{path}: {where}.slave: unit id {slave} is also "
                                  f"{slaves[slave]}'s on line {line.id!r}: every device "
                                  f"on a line needs its own slave id")
            slaves[slave] = f"{where} ({d.device})"


_D = TypeVar("_D", bound="DeviceConfig")


def _resolve_paths(cfg: AgentConfig, base: Path) -> AgentConfig:
    """Relative file paths in the config file are relative to the file itself."""

    def rel(path: Path | None) -> Path | None:
        return None if path is None or path.is_absolute() else base / path

    m = cfg.mqtt
    for name in ("ca", "cert", "key"):
        path = getattr(m, name)
        if path is not None and not (rel(path) or path).exists():
            raise ConfigError(f"{base}: mqtt.{name}: no such file {rel(path) or path}")
    mqtt = m.model_copy(update={k: rel(getattr(m, k)) or getattr(m, k)
                                for k in ("ca", "cert", "key") if getattr(m, k)})
    agent = cfg.agent.model_copy(update={"outbox": rel(cfg.agent.outbox) or cfg.agent.outbox})
    def prof(s: _D) -> _D:
        if s.profile.endswith(".toml") and not Path(s.profile).is_absolute():
            return s.model_copy(update={"profile": str(base / s.profile)})
        return s

    scales = [prof(s) for s in cfg.scale]
    lines = [ln.model_copy(update={"device": [prof(d) for d in ln.device]}) for ln in cfg.line]
    return cfg.model_copy(update={"mqtt": mqtt, "agent": agent, "scale": scales,
                                  "line": lines})
