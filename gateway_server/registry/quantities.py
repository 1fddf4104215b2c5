"""What the register accepts as input, converted exactly: masses, money, unit prices,
calendar dates (CST), roles, accuracy classes, categories, keys and ids.

Shared by the API models, the register and the CSV import. Mass is integer mg, money
integer fen, time integer UTC ms (``weighing.units``); a value that is not exact raises
:class:`~gateway_server.registry.errors.RegistryError` naming the field.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta, timezone

from gateway_server.registry.errors import RegistryError
from gateway_server.store.tables import (
    BIGINT_MAX,
)
from weighing.errors import UnitError
from weighing.units import MassUnit, decimal_to_mg, mg_to_decimal, yuan_to_fen
from weighing.wire import AccuracyClass, Role

CST = timezone(timedelta(hours=8), "CST")  # China Standard Time: UTC+8, no DST
DAY_MS = 86_400_000
KEY_BYTES = 32  # generated HMAC keys: 256 bit
KEY_MIN_BYTES = 16  # registered keys shorter than 128 bit are refused
TRUST_TOKEN_BYTES = 18  # secrets.token_urlsafe(18): 24 characters, 144 bit
RECENT_SALES_MS = 30 * DAY_MS  # the public page counts sales of the last 30 days
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")  # = weighing.wire ids (topic-safe)


# -- quantities (shared by the API models and the CSV import) ------------------------------

_MASS_UNITS = {"mg": MassUnit.MG, "毫克": MassUnit.MG, "g": MassUnit.G, "克": MassUnit.G,
               "kg": MassUnit.KG, "千克": MassUnit.KG, "公斤": MassUnit.KG}
#: 市制 units (1 斤 = 500 g, 1 两 = 50 g): refused for a scale's Max and e, whose legal units
#: are on its data plate, with the conversion named; unit prices take them (元/斤)
_MARKET_UNITS_MG = {"斤": 500_000, "市斤": 500_000, "两": 50_000}
MAX_QUANTITY_TEXT = 64  # longer texts are refused before int() (which stops at 4300 digits)
_MASS_RE = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]+)?)\s*([^\s0-9.+-]*)$")


def parse_mass_mg(value: int | str, *, field: str = "mass") -> int:
    """``"15 kg"`` / ``"5g"`` / ``"0.1 克"`` / ``15000000`` (an integer is mg) → mg, > 0."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RegistryError(f"{field}: give a string with a unit or an integer in mg", field=field)
    if isinstance(value, int):
        mg = value
    elif len(value) > MAX_QUANTITY_TEXT:
        raise RegistryError(f"{field}: too long", field=field)
    else:
        m = _MASS_RE.match(value.strip())
        if not m:
            raise RegistryError(f"{field}: not a mass: {value!r} (e.g. \"15 kg\", \"5 g\")",
                                field=field)
        number, unit = m.groups()
        if not unit:
            if "." in number:
                raise RegistryError(f"{field}: {value!r} needs a unit (kg, g, mg)", field=field)
            mg = int(number)
        elif unit in _MARKET_UNITS_MG:
            jin = _MARKET_UNITS_MG[unit]
            try:
                as_mg = decimal_to_mg(number, MassUnit.G) * (jin // 1_000)
            except UnitError as err:
                raise RegistryError(f"{field}: {err}", field=field) from err
            raise RegistryError(
                f"{field}: {value.strip()} = {format_mass(as_mg)}: a scale's data are "
                f"registered in legal units (计量法 第三条), give {format_mass(as_mg)}",
                field=field)
        elif unit.lower() not in _MASS_UNITS:
            raise RegistryError(f"{field}: unknown unit {unit!r} (kg, g, mg, 千克, 克)",
                                field=field)
        else:
            try:
                mg = decimal_to_mg(number, _MASS_UNITS[unit.lower()])
            except UnitError as err:
                raise RegistryError(f"{field}: {err}", field=field) from err
    if mg <= 0:
        raise RegistryError(f"{field}: must be positive", field=field)
    if mg > BIGINT_MAX:
        raise RegistryError(f"{field}: too large", field=field)
    return mg


def format_mass(mg: int) -> str:
    """The shortest exact text: ``15000000`` → ``"15 kg"``, ``5000`` → ``"5 g"``."""
    if mg >= 1_000_000 and mg % 1_000 == 0:
        unit = MassUnit.KG
    elif mg >= 100:
        unit = MassUnit.G
    else:
        return f"{mg} mg"
    text = mg_to_decimal(mg, unit, 3)
    return f"{text.rstrip('0').rstrip('.')} {unit.value}"


def parse_fen(value: int | str, *, field: str = "price") -> int:
    """``"12.50"`` (yuan, also ``"¥12.50"``, ``"12.5元"``) or an integer in fen → fen, ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RegistryError(f"{field}: give decimal yuan as a string or an integer in fen",
                            field=field)
    if isinstance(value, int):
        fen = value
    elif len(value) > MAX_QUANTITY_TEXT:
        raise RegistryError(f"{field}: too long", field=field)
    else:
        text = value.strip().lstrip("¥￥").removesuffix("元").strip()
        try:
            fen = yuan_to_fen(text)
        except UnitError as err:
            raise RegistryError(f"{field}: {err}", field=field) from err
    if fen < 0:
        raise RegistryError(f"{field}: must not be negative", field=field)
    if fen > BIGINT_MAX:
        raise RegistryError(f"{field}: too large", field=field)
    return fen


#: per-mass units a unit price may be given in, and the factor to fen per kg: the register
#: keeps the legal unit (元/kg, 计量法 第三条 法定计量单位); 斤 and 两, still how market price
#: boards are written, are converted exactly on input (1 斤 = 500 g, 1 两 = 50 g)
_PRICE_PER = {"kg": 1, "千克": 1, "公斤": 1, "斤": 2, "市斤": 2, "500g": 2, "两": 20, "50g": 20}
_PRICE_RE = re.compile(r"^(.*?)\s*(?:元)?\s*/\s*([^\s/]+)$")


def parse_unit_price_fen_per_kg(value: int | str, *, field: str = "unit_price") -> int:
    """A unit price → fen per kg, exactly: an integer (fen per kg), ``"12.50"`` (元/kg), or
    with its unit, ``"12.50元/kg"``, ``"6.25元/斤"`` (= 12.50 元/kg), ``"1.2元/两"``."""
    if isinstance(value, str) and "/" in value:
        m = _PRICE_RE.match(value.strip())
        unit = m.group(2).lower() if m else ""
        if m is None or unit not in _PRICE_PER:
            raise RegistryError(f"{field}: unknown price unit in {value!r} (元/kg, 元/斤, 元/两)",
                                field=field)
        return parse_fen(m.group(1), field=field) * _PRICE_PER[unit]
    return parse_fen(value, field=field)


_DATE_RE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
# dates the register takes (and format_date can show): 1900-01-01 to 9999-12-31 CST
DATE_MIN_MS, DATE_MAX_MS = -2_209_017_600_000, 253_402_271_999_999


def parse_date_ms(value: int | str, *, field: str = "date") -> int:
    """``"2025-03-01"`` (also ``2025/3/1``, ``2025年3月1日``, ``20250301``) → ms of 00:00 CST.

    An integer (or a string of more than 8 digits) is taken as UTC milliseconds. Dates
    from 1900 to 9999 only.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RegistryError(f"{field}: give a date YYYY-MM-DD or UTC ms", field=field)
    ms = _date_ms(value, field)
    if not DATE_MIN_MS <= ms <= DATE_MAX_MS:
        raise RegistryError(f"{field}: {value!r} is not a date from 1900 to 9999", field=field)
    return ms


def _date_ms(value: int | str, field: str) -> int:
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.isdecimal() and len(text) > 8:  # isdigit() would take "²", which int() refuses
        return int(text) if len(text) <= 19 else DATE_MAX_MS + 1
    m = _DATE_RE.match(text) or (re.match(r"^(\d{4})(\d{2})(\d{2})$", text))
    if not m:
        raise RegistryError(f"{field}: not a date: {value!r} (YYYY-MM-DD)", field=field)
    try:
        d = date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError as err:
        raise RegistryError(f"{field}: {err}: {value!r}", field=field) from err
    return int(datetime(d.year, d.month, d.day, tzinfo=CST).timestamp()) * 1000


def format_date(ms: int) -> str:
    """UTC ms → the CST calendar date ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(CST).date().isoformat()


def is_overdue(due_on_ms: int | None, now_ms: int) -> bool:
    """True from 00:00 CST of the day after the due date (valid *through* 有效期至)."""
    return due_on_ms is not None and now_ms >= due_on_ms + DAY_MS


_ROLE_ALIASES = {"trade": Role.TRADE, "交易": Role.TRADE, "贸易": Role.TRADE,
                 "计价": Role.TRADE, "经营": Role.TRADE, "fair": Role.FAIR, "公平秤": Role.FAIR,
                 "公平": Role.FAIR}
_CLASS_ALIASES = {"iii": AccuracyClass.III, "3": AccuracyClass.III, "Ⅲ": AccuracyClass.III,
                  "中准确度": AccuracyClass.III, "iiii": AccuracyClass.IIII,
                  "4": AccuracyClass.IIII, "iv": AccuracyClass.IIII, "Ⅳ": AccuracyClass.IIII,
                  "ⅲⅰ": AccuracyClass.IIII, "普通准确度": AccuracyClass.IIII,
                  "i": AccuracyClass.I, "ii": AccuracyClass.II, "Ⅱ": AccuracyClass.II}


def parse_role(value: str) -> Role:
    r = _ROLE_ALIASES.get(value.strip().lower())
    if r is None:
        raise RegistryError(f"role: {value!r} is neither trade (交易) nor fair (公平秤)",
                            field="role")
    return r


def parse_class(value: str) -> AccuracyClass:
    c = _CLASS_ALIASES.get(value.strip().lower()) or _CLASS_ALIASES.get(value.strip())
    if c is None:
        raise RegistryError(f"accuracy_class: {value!r} is not I, II, III or IIII",
                            field="accuracy_class")
    return c


def parse_categories(value: str | Iterable[str]) -> list[str]:
    """Categories from a list or a string separated by , ， 、 ; or ；."""
    items = re.split(r"[,，、;；]", value) if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item and item not in out:
            out.append(item)
    return out


def parse_key_hex(value: str) -> str:
    key = value.strip().lower()
    if not re.fullmatch(r"(?:[0-9a-f]{2})+", key):
        raise RegistryError("key: not an even-length hex string", field="key_hex")
    if not KEY_MIN_BYTES <= len(key) // 2 <= 128:
        raise RegistryError(f"key: {len(key) // 2} bytes; give {KEY_MIN_BYTES} to 128 bytes",
                            field="key_hex")
    return key


def check_id(value: str, field: str) -> str:
    if not ID_RE.match(value):
        raise RegistryError(f"{field}: {value!r} is not an id (A-Z a-z 0-9 _ . -, max 64)",
                            field=field)
    return value


def new_key_hex() -> str:
    return secrets.token_hex(KEY_BYTES)


def new_trust_token() -> str:
    return secrets.token_urlsafe(TRUST_TOKEN_BYTES)
