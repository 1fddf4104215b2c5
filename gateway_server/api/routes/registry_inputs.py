"""Input types of the register's routes: masses, money and dates given as text or integers
(parsed by :mod:`gateway_server.registry.register`), device ids, credit codes; shared by
``routes/registry.py`` and ``routes/register_scales.py``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

from gateway_server.api.auth import R403
from gateway_server.registry import register as reg, uscc

ADMIN = {**R403}

# -- input types: masses, money, dates given as text or integers ---------------------------

MassIn = Annotated[int, BeforeValidator(reg.parse_mass_mg), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}],
    "description": "integer mg, or text with a unit: \"15 kg\", \"5 g\", \"0.1 克\"",
    "examples": ["15 kg", 15000000]})]
FenIn = Annotated[int, BeforeValidator(reg.parse_fen), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}],
    "description": "integer fen, or decimal yuan as text: \"12.50\"",
    "examples": ["12.50", 1250]})]
UnitPriceIn = Annotated[int, BeforeValidator(reg.parse_unit_price_fen_per_kg), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}],
    "description": "integer fen per kg, or yuan as text per kg or with its unit: \"12.50\", "
                   "\"12.50元/kg\", \"6.25元/斤\" (1 斤 = 500 g, stored as 12.50 元/kg)",
    "examples": ["12.50", "6.25元/斤", 1250]})]
DateIn = Annotated[int, BeforeValidator(reg.parse_date_ms), WithJsonSchema({
    "anyOf": [{"type": "integer"}, {"type": "string", "format": "date"}],
    "description": "UTC ms, or a date YYYY-MM-DD (00:00 China Standard Time)",
    "examples": ["2026-03-01", 1772294400000]})]
DeviceId = Annotated[str, Field(pattern=reg.ID_RE.pattern, examples=["s-0001"])]


def _credit_code(v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise ValueError("credit_code: give the code as a string")
    if v is None or not v.strip():
        return None
    try:
        return uscc.validate(v)
    except uscc.CreditCodeError as err:
        raise ValueError(str(err)) from err


CreditCodeIn = Annotated[str | None, BeforeValidator(_credit_code), Field(
    description="统一社会信用代码, GB 32100-2015 (check character verified)",
    examples=["91350100M000100Y43"])]
