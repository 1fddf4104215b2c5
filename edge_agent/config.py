"""The edge agent's configuration file (TOML), validated at load.

Example (one agent, several scales; see docs/edge-agent.md)::

    [agent]
    market = "m001"
    outbox = "var/edge-outbox.db"
    heartbeat_s = 30

    [mqtt]
    url = "mqtt://127.0.0.1:1883"      # mqtts:// for TLS
    # ca = "ca.pem"  cert = "dev.pem"  key = "dev.key"  username = ""  password = ""

Relative paths (outbox, ca, cert, key, a profile ``*.toml``) are relative to the file.
    [[scale]]
    device = "s-0001"
    profile = "toledo-15kg-5g"          # shipped id or a path to a .toml profile
    port = "/dev/ttyUSB0"               # any pyserial URL: /dev/pts/3, loop://, socket://h:p
    key = "hex-encoded per-device HMAC key"
    role = "trade"                      # "fair" (公平秤) may add scanner = "/dev/ttyACM0"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from weighing.errors import GatewayError
from weighing.wire import Role, check_id


class ConfigError(GatewayError, ValueError):
    """The agent's configuration is invalid; the message names the file and field."""


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


class ScaleConfig(_Strict):
    device: str
    profile: str
    port: str  # serial: a pyserial URL; modbus-rtu: a device path; modbus-tcp: host:port
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
    def _scanner(self) -> ScaleConfig:
        if self.scanner is not None and self.role is not Role.FAIR:
            raise ValueError(f"scanner is set but role is {self.role.value!r}: a code "
                             "scanner belongs to a fair-scale station (role = \"fair\")")
        if self.scanner is not None and self.scanner == self.port:
            raise ValueError("scanner and port are the same line")
        return self

    @property
    def key_bytes(self) -> bytes | None:
        return bytes.fromhex(self.key) if self.key else None


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
    scale: list[ScaleConfig] = Field(min_length=1)


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
    devices = [s.device for s in cfg.scale]
    if len(set(devices)) != len(devices):
        raise ConfigError(f"{p}: scale.device: duplicate device ids")
    return _resolve_paths(cfg, p.parent)


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
    scales = [
        s.model_copy(update={"profile": str(base / s.profile)})
        if s.profile.endswith(".toml") and not Path(s.profile).is_absolute() else s
        for s in cfg.scale
    ]
    return cfg.model_copy(update={"mqtt": mqtt, "agent": agent, "scale": scales})
