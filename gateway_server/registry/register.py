"""The register (登记造册): markets, merchants, scales, bindings over time, PLU prices.

One module (about 500 lines) on purpose: every write here checks against the others (a
scale's market, a binding's merchant and scale, a price's merchant) in the caller's
transaction, and callers use it as one API (``reg.bind``, ``reg.parse_mass_mg``). Its input
conversions are ``registry.quantities`` and its errors ``registry.errors``, re-exported here.

Functions over a SQLAlchemy ``Connection`` (the caller owns the transaction); time is
always a parameter (``now_ms`` / ``at_ms``), never read from a clock here.

Rules:

* Mass is integer mg, money integer fen, time integer UTC ms. Input may be given as
  strings with units (``"15 kg"``, ``"5 g"``, ``"0.1 克"``) or integers in mg; money as
  decimal yuan strings (``"12.50"``) or integers in fen — converted exactly with
  ``weighing.units``; a value that is not exact raises :class:`RegistryError`.
* Calendar dates of the register (检定日期, 有效期至) are dates in China Standard Time
  (UTC+8, no daylight saving): stored as the UTC ms of 00:00 CST of that date. A
  verification certificate is valid *through* its due date, so a scale is overdue from
  00:00 CST of the following day (:func:`is_overdue`).
* Bindings are half-open intervals ``[valid_from_ms, valid_to_ms)`` and append-only:
  binding a scale at ``t`` closes the open binding at ``t`` and opens the new one at
  ``t``, so at the exact instant of a re-binding the *new* merchant answers. A binding
  earlier than the scale's latest binding change is refused (history is not rewritten).
* PLU prices are versions: ``price_at`` answers with the version of greatest
  ``valid_from_ms <= ts_ms``.
* The per-device HMAC key is generated (256 bit) when none is given; it is returned by
  :func:`register_scale` and :func:`rotate_key` only, and never by the list/get helpers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from gateway_server.registry import uscc
from gateway_server.registry.binding import devices_query, merchant_at, merchants_at

# the register's errors and input conversions, re-exported: callers use ``reg.parse_mass_mg``
from gateway_server.registry.errors import (
    ConflictError as ConflictError,
    NotFoundError as NotFoundError,
    RegistryError as RegistryError,
)
from gateway_server.registry.quantities import (
    CST as CST,
    DAY_MS as DAY_MS,
    ID_RE as ID_RE,
    KEY_BYTES as KEY_BYTES,
    KEY_MIN_BYTES as KEY_MIN_BYTES,
    MAX_QUANTITY_TEXT as MAX_QUANTITY_TEXT,
    RECENT_SALES_MS as RECENT_SALES_MS,
    TRUST_TOKEN_BYTES as TRUST_TOKEN_BYTES,
    check_id as check_id,
    format_date as format_date,
    format_mass as format_mass,
    is_overdue as is_overdue,
    new_key_hex as new_key_hex,
    new_trust_token as new_trust_token,
    parse_categories as parse_categories,
    parse_class as parse_class,
    parse_date_ms as parse_date_ms,
    parse_fen as parse_fen,
    parse_key_hex as parse_key_hex,
    parse_mass_mg as parse_mass_mg,
    parse_role as parse_role,
    parse_unit_price_fen_per_kg as parse_unit_price_fen_per_kg,
)
from gateway_server.registry.trading_hours import parse_trading_hours
from gateway_server.store.tables import (
    bindings,
    markets,
    merchants,
    plu_prices,
    sales,
    scales,
)
from weighing.wire import Role


class MerchantStatus(StrEnum):
    NORMAL = "normal"
    YELLOW = "yellow"  # yellow card warning (集贸市场计量监督管理办法: red/yellow cards)
    RED = "red"  # red card
    SUSPENDED = "suspended"  # 经营异常: trust code suspended
    DELISTED = "delisted"  # licence cancelled / revoked


class ListStatus(StrEnum):
    NONE = "none"
    RED = "red"  # 红榜
    BLACK = "black"  # 黑榜


# -- markets -------------------------------------------------------------------------------

MARKET_FIELDS = ("name", "name_en", "district", "address", "operator", "lat_e6", "lon_e6",
                 "trading_hours")


def _market_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    v = _only(fields, MARKET_FIELDS)
    if v.get("trading_hours"):
        try:
            parse_trading_hours(v["trading_hours"])
        except ValueError as err:
            raise RegistryError(f"trading_hours: {err}", field="trading_hours") from err
        v["trading_hours"] = v["trading_hours"].strip()
    elif "trading_hours" in v:
        v["trading_hours"] = None
    return v


def create_market(conn: Connection, market_id: str, *, now_ms: int,
                  **fields: Any) -> dict[str, Any]:
    check_id(market_id, "id")
    if conn.execute(select(markets.c.id).where(markets.c.id == market_id)).first():
        raise ConflictError(f"market {market_id} exists", field="id")
    conn.execute(markets.insert().values(id=market_id, created_ms=now_ms,
                                         **_market_values(fields)))
    return get_market(conn, market_id)


def get_market(conn: Connection, market_id: str) -> dict[str, Any]:
    row = conn.execute(select(markets).where(markets.c.id == market_id)).first()
    if row is None:
        raise NotFoundError(f"no market {market_id}")
    return dict(row._mapping)


def list_markets(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(select(markets).order_by(markets.c.id))]


def update_market(conn: Connection, market_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    get_market(conn, market_id)
    values = _market_values(changes)
    if "name" in values and not values["name"]:
        raise RegistryError("name: must not be empty", field="name")
    if values:
        conn.execute(markets.update().where(markets.c.id == market_id).values(**values))
    return get_market(conn, market_id)


# -- merchants -----------------------------------------------------------------------------

MERCHANT_FIELDS = ("name", "credit_code", "stall_no", "categories", "licences", "phone")


def _merchant_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    v = _only(fields, MERCHANT_FIELDS)
    if v.get("credit_code"):
        try:
            v["credit_code"] = uscc.validate(v["credit_code"])
        except uscc.CreditCodeError as err:
            raise RegistryError(f"credit_code: {err}", field="credit_code") from err
    elif "credit_code" in v:
        v["credit_code"] = None
    if "categories" in v:
        v["categories"] = ",".join(parse_categories(v["categories"] or []))
    if "licences" in v:
        v["licences_json"] = json.dumps(list(v.pop("licences") or []), ensure_ascii=False)
    return v


def _check_credit_code_free(conn: Connection, code: str | None, merchant_id: int | None) -> None:
    if not code:
        return
    q = select(merchants.c.id, merchants.c.market_id).where(merchants.c.credit_code == code)
    other = conn.execute(q).first()
    if other is not None and other.id != merchant_id:
        raise ConflictError(f"credit_code {code} is merchant {other.id} in market "
                            f"{other.market_id}", field="credit_code")


def create_merchant(conn: Connection, market_id: str, *, now_ms: int,
                    **fields: Any) -> dict[str, Any]:
    get_market(conn, market_id)
    values = _merchant_values(fields)
    if not values.get("name"):
        raise RegistryError("name: required", field="name")
    _check_credit_code_free(conn, values.get("credit_code"), None)
    res = conn.execute(merchants.insert().values(
        market_id=market_id, trust_token=new_trust_token(), created_ms=now_ms, updated_ms=now_ms,
        status=MerchantStatus.NORMAL.value, list_status=ListStatus.NONE.value,
        **{"categories": "", "licences_json": "[]", **values}))
    return get_merchant(conn, inserted_id(res))


def _merchant_out(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    d["categories"] = [c for c in (d.get("categories") or "").split(",") if c]
    d["licences"] = json.loads(d.pop("licences_json") or "[]")
    return d


def get_merchant(conn: Connection, merchant_id: int) -> dict[str, Any]:
    row = conn.execute(select(merchants).where(merchants.c.id == merchant_id)).first()
    if row is None:
        raise NotFoundError(f"no merchant {merchant_id}")
    return _merchant_out(row)


def list_merchants(conn: Connection, *, market_id: str | None = None, status: str | None = None,
                   q: str | None = None, limit: int = 100, offset: int = 0,
                   ) -> tuple[list[dict[str, Any]], int]:
    """Merchants filtered by market, status and a text ``q`` (name, stall, credit code)."""
    conds = []
    if market_id:
        conds.append(merchants.c.market_id == market_id)
    if status:
        conds.append(merchants.c.status == status)
    if q:
        like = f"%{q.strip()}%"
        conds.append(or_(merchants.c.name.like(like), merchants.c.stall_no.like(like),
                         merchants.c.credit_code.like(like.upper())))
    total = conn.execute(select(func.count()).select_from(merchants).where(*conds)).scalar_one()
    rows = conn.execute(select(merchants).where(*conds).order_by(merchants.c.id)
                        .limit(limit).offset(offset))
    return [_merchant_out(r) for r in rows], int(total)


def update_merchant(conn: Connection, merchant_id: int, changes: Mapping[str, Any], *,
                    now_ms: int) -> dict[str, Any]:
    get_merchant(conn, merchant_id)
    values = _merchant_values(changes)
    if "name" in values and not values["name"]:
        raise RegistryError("name: must not be empty", field="name")
    _check_credit_code_free(conn, values.get("credit_code"), merchant_id)
    if values:
        conn.execute(merchants.update().where(merchants.c.id == merchant_id)
                     .values(updated_ms=now_ms, **values))
    return get_merchant(conn, merchant_id)


def set_merchant_status(conn: Connection, merchant_id: int, *, status: str | None,
                        list_status: str | None, reason: str, now_ms: int) -> dict[str, Any]:
    get_merchant(conn, merchant_id)
    values: dict[str, Any] = {"status_reason": reason, "status_ms": now_ms, "updated_ms": now_ms}
    if status is not None:
        values["status"] = MerchantStatus(status).value
    if list_status is not None:
        values["list_status"] = ListStatus(list_status).value
    conn.execute(merchants.update().where(merchants.c.id == merchant_id).values(**values))
    return get_merchant(conn, merchant_id)


def rotate_trust_token(conn: Connection, merchant_id: int, *, now_ms: int) -> dict[str, Any]:
    """A new trust QR token (the old QR stops working: e.g. a copied or misused code)."""
    get_merchant(conn, merchant_id)
    conn.execute(merchants.update().where(merchants.c.id == merchant_id)
                 .values(trust_token=new_trust_token(), updated_ms=now_ms))
    return get_merchant(conn, merchant_id)


# -- scales --------------------------------------------------------------------------------

SCALE_FIELDS = ("role", "profile", "model", "serial", "max_mg", "e_mg", "accuracy_class",
                "cert_no", "verified_on_ms", "due_on_ms")


def _scale_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    v = _only(fields, SCALE_FIELDS)
    if "role" in v and v["role"] is None:
        del v["role"]  # NOT NULL: absent means "keep"
    for k in ("role", "accuracy_class"):
        if isinstance(v.get(k), StrEnum):
            v[k] = v[k].value
    return v


def get_scale_row(conn: Connection, device: str) -> dict[str, Any]:
    """The whole row, key included (for the ingest and the register export)."""
    row = conn.execute(select(scales).where(scales.c.device == device)).first()
    if row is None:
        raise NotFoundError(f"no scale {device}")
    return dict(row._mapping)


def scale_out(row: Mapping[str, Any], *, now_ms: int, merchant_id: int | None) -> dict[str, Any]:
    """A scale for the API: the key is replaced by ``has_key``; ``overdue`` is computed."""
    d = {k: v for k, v in row.items() if k not in ("key_hex", "birth_json")}
    d["has_key"] = bool(row.get("key_hex"))
    d["overdue"] = is_overdue(row.get("due_on_ms"), now_ms)
    d["merchant_id"] = merchant_id
    return d


def register_scale(conn: Connection, device: str, *, market_id: str, now_ms: int,
                   key_hex: str | None = None, **fields: Any) -> tuple[dict[str, Any], str]:
    """Enter a scale in the register; return (row, key). A device seen on the wire but
    not registered (quarantined) is taken over; a registered one is a conflict."""
    check_id(device, "device")
    get_market(conn, market_id)
    key = parse_key_hex(key_hex) if key_hex else new_key_hex()
    values = {"role": Role.TRADE.value, **_scale_values(fields), "key_hex": key,
              "registered": True, "market": market_id}
    existing = conn.execute(select(scales.c.registered).where(scales.c.device == device)).first()
    if existing is not None and existing.registered:
        raise ConflictError(f"scale {device} is already registered", field="device")
    if existing is None:
        conn.execute(scales.insert().values(device=device, created_ms=now_ms, **values))
    else:
        conn.execute(scales.update().where(scales.c.device == device).values(**values))
    return get_scale_row(conn, device), key


def update_scale(conn: Connection, device: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    row = get_scale_row(conn, device)
    if not row["registered"]:
        raise NotFoundError(f"scale {device} is not in the register")
    values = _scale_values(changes)
    if values:
        conn.execute(scales.update().where(scales.c.device == device).values(**values))
    return get_scale_row(conn, device)


def rotate_key(conn: Connection, device: str, key_hex: str | None = None) -> str:
    """Set a new HMAC key (generated unless given) and return it."""
    update_scale(conn, device, {})
    key = parse_key_hex(key_hex) if key_hex else new_key_hex()
    conn.execute(scales.update().where(scales.c.device == device).values(key_hex=key))
    return key


def list_register(conn: Connection, *, market_id: str | None = None, role: str | None = None,
                  due_before_ms: int | None = None, registered: bool | None = True,
                  limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Scales of the register (rows include the key: pass them through :func:`scale_out`)."""
    conds = []
    if market_id:
        conds.append(scales.c.market == market_id)
    if role:
        conds.append(scales.c.role == role)
    if due_before_ms is not None:
        conds.append(and_(scales.c.due_on_ms.is_not(None), scales.c.due_on_ms < due_before_ms))
    if registered is not None:
        conds.append(scales.c.registered == registered)
    total = conn.execute(select(func.count()).select_from(scales).where(*conds)).scalar_one()
    rows = conn.execute(select(scales).where(*conds).order_by(scales.c.market, scales.c.device)
                        .limit(limit).offset(offset))
    return [dict(r._mapping) for r in rows], int(total)


# -- bindings ------------------------------------------------------------------------------

def binding_at(conn: Connection, device: str, ts_ms: int) -> int | None:
    """The merchant bound to ``device`` at ``ts_ms`` (half-open intervals), or None."""
    return merchant_at(conn, device, ts_ms)


def current_bindings(conn: Connection, devices: Iterable[str], now_ms: int) -> dict[str, int]:
    """device → merchant bound at ``now_ms``, for many devices."""
    return merchants_at(conn, devices, now_ms)


def bind(conn: Connection, device: str, merchant_id: int | None, *, at_ms: int) -> bool:
    """Bind ``device`` to ``merchant_id`` (None: unbind) from ``at_ms``; False if unchanged."""
    scale = get_scale_row(conn, device)
    if merchant_id is not None:
        merchant = get_merchant(conn, merchant_id)
        if merchant["market_id"] != scale["market"]:
            raise ConflictError(f"merchant {merchant_id} is in market {merchant['market_id']}, "
                                f"scale {device} in {scale['market']}", field="merchant_id")
    last = conn.execute(select(bindings).where(bindings.c.device == device)
                        .order_by(bindings.c.valid_from_ms.desc(), bindings.c.id.desc())
                        .limit(1)).first()
    if last is not None:
        latest_change = last.valid_to_ms if last.valid_to_ms is not None else last.valid_from_ms
        is_open = last.valid_to_ms is None
        if (is_open and last.merchant_id == merchant_id) or (not is_open and merchant_id is None):
            return False
        if at_ms < latest_change:
            raise ConflictError(f"scale {device}: binding at {at_ms} is before its latest "
                                f"binding change at {latest_change}; history is append-only",
                                field="at_ms")
        if is_open:
            conn.execute(bindings.update().where(bindings.c.id == last.id)
                         .values(valid_to_ms=at_ms))
    elif merchant_id is None:
        return False
    if merchant_id is not None:
        conn.execute(bindings.insert().values(device=device, merchant_id=merchant_id,
                                              valid_from_ms=at_ms, valid_to_ms=None))
    return True


def binding_history(conn: Connection, *, device: str | None = None,
                    merchant_id: int | None = None) -> list[dict[str, Any]]:
    conds = []
    if device is not None:
        conds.append(bindings.c.device == device)
    if merchant_id is not None:
        conds.append(bindings.c.merchant_id == merchant_id)
    q = select(bindings).where(*conds).order_by(bindings.c.valid_from_ms, bindings.c.id)
    return [dict(r._mapping) for r in conn.execute(q)]


# -- PLU prices ----------------------------------------------------------------------------

def add_price(conn: Connection, merchant_id: int, *, plu: str, name: str,
              unit_price_fen_per_kg: int, valid_from_ms: int,
              category: str | None = None) -> tuple[dict[str, Any], bool]:
    """Register a price version; (row, created). Re-sending an identical version is a no-op."""
    get_merchant(conn, merchant_id)
    values = {"merchant_id": merchant_id, "plu": plu, "name": name, "category": category,
              "unit_price_fen_per_kg": unit_price_fen_per_kg, "valid_from_ms": valid_from_ms}
    same = conn.execute(select(plu_prices).where(
        plu_prices.c.merchant_id == merchant_id, plu_prices.c.plu == plu,
        plu_prices.c.valid_from_ms == valid_from_ms)).first()
    if same is not None:
        old = dict(same._mapping)
        if all(old[k] == v for k, v in values.items()):
            return old, False
        raise ConflictError(f"PLU {plu} already has a version from {valid_from_ms}",
                            field="valid_from_ms")
    res = conn.execute(plu_prices.insert().values(**values))
    return {"id": inserted_id(res), **values}, True


def price_version_at(conn: Connection, merchant_id: int, plu: str,
                     ts_ms: int) -> dict[str, Any] | None:
    q = (select(plu_prices)
         .where(plu_prices.c.merchant_id == merchant_id, plu_prices.c.plu == plu,
                plu_prices.c.valid_from_ms <= ts_ms)
         .order_by(plu_prices.c.valid_from_ms.desc()).limit(1))
    row = conn.execute(q).first()
    return dict(row._mapping) if row else None


def price_at(conn: Connection, merchant_id: int, plu: str, ts_ms: int) -> int | None:
    """The registered unit price (fen/kg) of ``plu`` at ``ts_ms``, or None."""
    v = price_version_at(conn, merchant_id, plu, ts_ms)
    return None if v is None else int(v["unit_price_fen_per_kg"])


def list_prices(conn: Connection, merchant_id: int, *, plu: str | None = None,
                at_ms: int | None = None) -> list[dict[str, Any]]:
    """All versions, or with ``at_ms`` only the version valid then of each PLU."""
    get_merchant(conn, merchant_id)
    conds = [plu_prices.c.merchant_id == merchant_id]
    if plu is not None:
        conds.append(plu_prices.c.plu == plu)
    if at_ms is not None:
        conds.append(plu_prices.c.valid_from_ms <= at_ms)
    rows = [dict(r._mapping) for r in conn.execute(
        select(plu_prices).where(*conds).order_by(plu_prices.c.plu, plu_prices.c.valid_from_ms))]
    if at_ms is None:
        return rows
    return list({r["plu"]: r for r in rows}.values())


# -- the public trust page -----------------------------------------------------------------

def trust_view(conn: Connection, token: str, *, now_ms: int) -> dict[str, Any]:
    """What a consumer may see after scanning a merchant's QR; no keys, phone or full code."""
    row = conn.execute(select(merchants).where(merchants.c.trust_token == token)).first()
    if row is None:
        raise NotFoundError("unknown trust code")
    m = _merchant_out(row)
    market = get_market(conn, m["market_id"])
    bound = devices_query(m["id"], now_ms)
    scale_rows = conn.execute(select(scales).where(scales.c.device.in_(bound))
                              .order_by(scales.c.device)).all()
    n_sales = conn.execute(select(func.count()).select_from(sales).where(
        sales.c.merchant_id == m["id"], sales.c.ts_ms >= now_ms - RECENT_SALES_MS,
        sales.c.ts_ms <= now_ms)).scalar_one()
    return {
        "name": m["name"], "stall_no": m["stall_no"], "market_id": market["id"],
        "market_name": market["name"], "market_name_en": market["name_en"],
        "credit_code_masked": uscc.mask(m["credit_code"]),
        "licences": [{k: lic.get(k) for k in ("kind", "number", "valid_until_ms")}
                     for lic in m["licences"]],
        "categories": m["categories"], "status": m["status"], "list_status": m["list_status"],
        "scales": [{
            "device": s.device, "model": s.model, "role": s.role, "max_mg": s.max_mg,
            "e_mg": s.e_mg, "accuracy_class": s.accuracy_class, "cert_no": s.cert_no,
            "verified_on_ms": s.verified_on_ms, "due_on_ms": s.due_on_ms,
            "overdue": is_overdue(s.due_on_ms, now_ms),
            "verification": ("unknown" if s.due_on_ms is None
                             else "overdue" if is_overdue(s.due_on_ms, now_ms) else "valid"),
        } for s in scale_rows],
        "sales_30d": int(n_sales), "as_of_ms": now_ms,
    }


def inserted_id(res: Any) -> int:
    """The primary key of a one-row INSERT."""
    pk = res.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def _only(fields: Mapping[str, Any], allowed: Iterable[str]) -> dict[str, Any]:
    return {k: fields[k] for k in allowed if k in fields}
