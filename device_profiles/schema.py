"""Device profile schema: a scale model described as data, validated at load.

A profile (TOML, in ``device_profiles/profiles/``) names the protocol, the link
settings, the metrology (Max, e, class, ranges), codec options, the software
stability window and the emulator's defaults. Masses are written with their unit
(``"15 kg"``, ``"5 g"``) and become integer milligrams; a value that is not a whole
number of milligrams is an error. Loading errors name the file and the field.
"""

from __future__ import annotations

import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from device_profiles.codecs import CODECS
from device_profiles.errors import ProfileError as ProfileError  # callers import it from here
from device_profiles.modbus.model import ModbusMap
from weighing.errors import UnitError
from weighing.units import decimal_to_mg

PROFILE_DIR = Path(__file__).with_name("profiles")


_MASS_RE = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(mg|g|kg)\s*$", re.IGNORECASE)


def _mass(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a mass is written as a string with its unit, e.g. '15 kg'")
    if isinstance(value, int):
        return value  # already milligrams (from Python, not from TOML text)
    if not isinstance(value, str):
        raise ValueError("a mass is written as a string with its unit, e.g. '15 kg'")
    m = _MASS_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a mass like '15 kg', '5 g' or '10 mg'")
    try:
        return decimal_to_mg(m.group(1), m.group(2))
    except UnitError as err:
        raise ValueError(str(err)) from None


MassMg = Annotated[int, BeforeValidator(_mass)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinkKind(StrEnum):
    SERIAL = "serial"
    MODBUS_RTU = "modbus-rtu"
    MODBUS_TCP = "modbus-tcp"
    TCP = "tcp"


class Link(_Strict):
    """How the host reaches the device."""

    kind: LinkKind = LinkKind.SERIAL
    baudrate: int = Field(9600, ge=300, le=921_600)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    mode: Literal["continuous", "request"] = "continuous"
    poll_interval_ms: int = Field(100, ge=10, le=60_000)
    #: nominal frames per second of a continuous output; frames read in one burst are
    #: back-dated at this rate so a stalled reader does not squash the stability window
    output_rate_hz: float = Field(20.0, gt=0, le=1000)
    timeout_ms: int = Field(300, ge=10, le=60_000)


class Range(_Strict):
    """One weighing range (or interval) of a multi-range / multi-interval scale."""

    max_mg: MassMg = Field(alias="max")
    e_mg: MassMg = Field(alias="e")


class Metrology(_Strict):
    """Legal-metrology characteristics of the scale (JJG 539 / OIML R76)."""

    max_mg: MassMg = Field(alias="max")
    e_mg: MassMg = Field(alias="e")
    d_mg: MassMg | None = Field(None, alias="d")
    accuracy_class: Literal["I", "II", "III", "IIII"] = "III"
    ranges: tuple[Range, ...] = ()
    multi: Literal["range", "interval"] = "range"

    @model_validator(mode="after")
    def _check(self) -> Metrology:
        if self.e_mg <= 0 or self.max_mg <= 0:
            raise ValueError("max and e must be positive")
        if self.max_mg % self.e_mg:
            raise ValueError("max must be a whole number of e")
        if self.ranges:
            if self.ranges[-1].max_mg != self.max_mg or self.ranges[-1].e_mg != self.e_mg:
                raise ValueError("the last range must equal the scale's max and e")
            maxes = [r.max_mg for r in self.ranges]
            es = [r.e_mg for r in self.ranges]
            if maxes != sorted(set(maxes)) or es != sorted(set(es)):
                raise ValueError("ranges must grow in both max and e")
        return self


class Stability(_Strict):
    """Software stability window (architecture.md §4): readings within ``band_e`` × e
    of each other for ``window_ms`` count as settled, alongside the device's flag."""

    window_ms: int = Field(400, ge=50, le=10_000)
    band_e: float = Field(1.0, gt=0, le=10)  # a ratio, not a legal quantity
    load_threshold_e: int = Field(10, ge=1, le=1000)  # a load begins above this many e


class Emulator(_Strict):
    frame_rate_hz: float = Field(20.0, gt=0, le=1000)


class Profile(_Strict):
    """A device profile."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
    name: str
    vendor: str = ""
    protocol: str
    kind: Literal["price", "traceability", "indicator", "label", "jewellery", "platform"] = "price"
    description: str = ""
    link: Link = Link()
    metrology: Metrology
    codec: dict[str, int | str | bool] = Field(default_factory=dict)
    stability: Stability = Stability()
    emulator: Emulator = Emulator()
    capabilities: tuple[str, ...] = ()
    modbus: ModbusMap | None = None  # register map; rules in device_profiles.modbus_map

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _where(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc or '(top)'}: {e['msg']}")
    return "; ".join(parts)


def parse_profile(data: dict[str, Any], *, source: str = "<dict>") -> Profile:
    """Validate a profile from a mapping; errors name ``source`` and the field."""
    try:
        profile = Profile.model_validate(data)
    except ValidationError as err:
        raise ProfileError(f"{source}: {_where(err)}") from None
    if profile.protocol not in CODECS and profile.link.kind in (LinkKind.SERIAL, LinkKind.TCP):
        raise ProfileError(
            f"{source}: protocol: unknown protocol {profile.protocol!r}; "
            f"known: {', '.join(sorted(CODECS))}"
        )
    return profile


def load_profile_file(path: Path) -> Profile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ProfileError(f"{path}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"{path}: not valid TOML: {err}") from None
    profile = parse_profile(data, source=str(path))
    if path.parent == PROFILE_DIR and profile.id != path.stem:
        raise ProfileError(f"{path}: id: {profile.id!r} differs from the file name")
    return profile


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by id (``toledo-15kg-5g``) or any profile file by path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return load_profile_file(p)
    shipped = PROFILE_DIR / f"{name_or_path}.toml"
    if not shipped.exists():
        raise ProfileError(
            f"no profile {name_or_path!r}; shipped: {', '.join(list_profiles())}"
        )
    return load_profile_file(shipped)


def list_profiles() -> list[str]:
    """Ids of the shipped profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))
