"""The models of the edge agent's configuration file: each section and its own checks.

What one section can check alone is checked here, by pydantic, at validation: field
ranges, a TLS file with a plaintext URL, a scanner on a trade scale, a host:port on an RTU
line, two devices on a serial line, a device named twice on one line. What needs the whole
file or the device profiles (one port opened once, one slave id each, a profile that fits
its line, paths relative to the file) is :func:`edge_agent.config.load_config`'s, and
``edge_agent.config`` is where callers import these models from.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from weighing.wire import Role, check_id


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttConfig(_Strict):
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    batch_size: int = Field(50, ge=1, le=5000)
    max_delay_ms: int = Field(200, ge=0, le=60_000)
    inflight: int = Field(20, ge=1, le=1000)
    reconnect_max_s: int = Field(30, ge=1, le=3600)

    @model_validator(mode="after")
    def _tls_files(self) -> MqttConfig:
        if not self.tls and (self.ca or self.cert or self.key):
            # a CA or client certificate with a plaintext URL is a mistake that would
            # send data in the clear: refuse it instead of guessing
            raise ValueError("ca / cert / key are set but url is not mqtts:// (TLS)")
        if self.key and not self.cert:
            raise ValueError("key is set without cert")
        if self.password is not None and self.username is None:
            raise ValueError("password is set without username")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlsplit(v)
        if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
            raise ValueError("expected mqtt://host[:port] or mqtts://host[:port]")
        return v

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


class DeviceConfig(_Strict):
    """One device: in a ``[[line]]``'s ``[[line.device]]``, or (with ``port``) a ``[[scale]]``."""

    device: str
    profile: str
    slave: int | None = Field(None, ge=1, le=247)  # Modbus unit id (default: the map's)
    role: Role = Role.TRADE
    key: str | None = None  # hex
    serial: str | None = None
    samples: bool = True
    #: overrides of the profile's software stability window (profile [stability])
    window_ms: int | None = Field(None, ge=50, le=10_000)
    band_e: float | None = Field(None, gt=0, le=10)
    load_threshold_e: int | None = Field(None, ge=1, le=1000)
    #: a gap without frames longer than this is reported (fault ``no-data``) when data resumes
    no_data_s: float = Field(10.0, gt=0, le=86_400)
    #: fair-scale station: the code scanner's pyserial URL (edge_agent.station)
    scanner: str | None = Field(None, min_length=1)
    #: a scan pairs with a weighing committed at most this long after it
    pair_window_s: float = Field(120, gt=0, le=3600)
    #: Modbus: this device's request timeout (default: its profile's ``link.timeout_ms``)
    timeout_ms: int | None = Field(None, ge=10, le=60_000)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        check_id(v, "device")
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None:
            bytes.fromhex(v)
        return v

    @model_validator(mode="after")
    def _scanner(self) -> DeviceConfig:
        if self.scanner is not None and self.role is not Role.FAIR:
            raise ValueError(f"scanner is set but role is {self.role.value!r}: a code "
                             "scanner belongs to a fair-scale station (role = \"fair\")")
        return self

    @property
    def key_bytes(self) -> bytes | None:
        return bytes.fromhex(self.key) if self.key else None


class ScaleConfig(DeviceConfig):
    """A ``[[scale]]``: one device alone on its port (the form before ``[[line]]``)."""

    port: str  # serial: a pyserial URL; modbus-rtu: a device path; modbus-tcp: host:port

    @model_validator(mode="after")
    def _scanner_port(self) -> ScaleConfig:
        if self.scanner is not None and self.scanner == self.port:
            raise ValueError("scanner and port are the same line")
        return self


class LineKind(StrEnum):
    SERIAL = "serial"  # one scale's serial port (its protocols carry no address)
    MODBUS_RTU = "modbus-rtu"  # an RS-485 (or RS-232) port, slaves told apart by unit id
    MODBUS_TCP = "modbus-tcp"  # a Modbus TCP device or a TCP gateway to an RS-485 line


#: "host:port" – what a Modbus TCP address looks like, and an RTU device path must not
_HOST_PORT = re.compile(r"^\[?[A-Za-z0-9_.:-]*[A-Za-z0-9\]]:\d{1,5}$")


def looks_like_host_port(port: str) -> bool:
    return "/" not in port and bool(_HOST_PORT.match(port))


class LineConfig(_Strict):
    """A ``[[line]]``: one port or connection and every device on it (multi-drop RS-485)."""

    id: str
    kind: LineKind
    port: str  # serial: a pyserial URL; modbus-rtu: a device path; modbus-tcp: host:port
    #: serial settings (serial, modbus-rtu); default: the first device's profile's
    baudrate: int | None = Field(None, ge=50, le=4_000_000)
    bytesize: Literal[5, 6, 7, 8] | None = None
    parity: Literal["N", "E", "O", "M", "S"] | None = None
    stopbits: float | None = None  # 1, 1.5 or 2
    #: Modbus: each slave is read at most this often (default: the devices' profiles' least)
    poll_interval_ms: int | None = Field(None, ge=10, le=60_000)
    #: Modbus: a slave that does not answer is retried after a jittered, doubling backoff
    #: up to this long (the others keep their rate: a silent slave costs its timeout once
    #: per backoff period)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    device: list[DeviceConfig] = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        check_id(v, "line id")
        return v

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, v: float | None) -> float | None:
        if v is not None and v not in (1, 1.5, 2):
            raise ValueError("stopbits is 1, 1.5 or 2")
        return v

    @model_validator(mode="after")
    def _shape(self) -> LineConfig:
        if self.kind is LineKind.MODBUS_TCP:
            if not looks_like_host_port(self.port):
                raise ValueError(f"port {self.port!r}: a modbus-tcp line is host:port "
                                 "(e.g. \"192.168.1.20:502\")")
            serial_keys = [k for k in ("baudrate", "bytesize", "parity", "stopbits")
                           if getattr(self, k) is not None]
            if serial_keys:
                raise ValueError(f"{', '.join(serial_keys)}: serial settings on a modbus-tcp "
                                 "line (they belong to the RS-485 side of its gateway)")
        elif looks_like_host_port(self.port):
            hint = ("kind = \"modbus-tcp\"" if self.kind is LineKind.MODBUS_RTU
                    else "port = \"socket://" + self.port + "\"")
            raise ValueError(f"port {self.port!r} is a host:port, but a {self.kind.value} line "
                             f"is a serial device (e.g. /dev/ttyUSB0); for a network "
                             f"address use {hint}")
        if self.kind is LineKind.SERIAL:
            if len(self.device) > 1:
                raise ValueError(f"{len(self.device)} devices on a serial line: serial scale "
                                 "protocols carry no address, one scale per port (share an "
                                 "RS-485 line with kind = \"modbus-rtu\")")
            if self.device[0].slave is not None:
                raise ValueError("device.0.slave: a Modbus unit id on a serial line")
        if self.kind is not LineKind.SERIAL:
            for i, d in enumerate(self.device):
                if d.scanner is not None and d.scanner == self.port:
                    raise ValueError(f"device.{i}.scanner: the scanner is the line's port")
        names = [d.device for d in self.device]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"device.{i}.device: {name!r} twice on this line")
        return self

    def scale(self, index: int) -> ScaleConfig:
        """Device ``index`` as the worker sees it: a scale on the line's port."""
        return ScaleConfig.model_validate({**self.device[index].model_dump(),
                                           "port": self.port})


class AgentSection(_Strict):
    market: str
    outbox: Path = Path("var/edge-outbox.db")
    outbox_max_rows: int = Field(100_000, ge=10)
    #: payload bytes the outbox holds at most (samples, heartbeats and zero checks give way)
    outbox_max_bytes: int | None = Field(None, ge=64 * 1024)
    #: samples, heartbeats and zero checks older than this are dropped (declared, counted)
    outbox_max_age_s: float | None = Field(None, gt=0)
    #: who frees an outbox row: "gateway" (its signed ``stored`` command, end to end; needs
    #: the scale's key, else the broker's PUBACK) or "broker" (PUBACK, the old behaviour)
    confirm: Literal["gateway", "broker"] = "gateway"
    #: unconfirmed events are published again after this long without a confirmation
    ack_timeout_s: float = Field(60.0, gt=0, le=3600)
    heartbeat_s: float = Field(30, gt=0)
    samples_interval_s: float = Field(1.0, gt=0)
    #: least time between two reads of a continuous-output serial scale (CPU vs latency)
    read_interval_ms: int = Field(200, ge=0, le=1000)
    #: a clock offset (from ``time-sync``) beyond this is reported as fault ``clock-skew``
    clock_skew_max_ms: int = Field(2000, ge=0)

    @field_validator("market")
    @classmethod
    def _market(cls, v: str) -> str:
        check_id(v, "market")
        return v


class AgentConfig(_Strict):
    agent: AgentSection
    mqtt: MqttConfig = MqttConfig()
    scale: list[ScaleConfig] = []
    line: list[LineConfig] = []

    @model_validator(mode="after")
    def _some_device(self) -> AgentConfig:
        if not self.scale and not self.line:
            raise ValueError("no device: add a [[scale]] or a [[line]] with [[line.device]]")
        return self

    def devices(self) -> list[tuple[str, ScaleConfig]]:
        """Every device as ``(where, scale)``: ``scale.N`` and ``line.N.device.M``."""
        out = [(f"scale.{i}", s) for i, s in enumerate(self.scale)]
        for i, line in enumerate(self.line):
            out += [(f"line.{i}.device.{j}", line.scale(j)) for j in range(len(line.device))]
        return out
