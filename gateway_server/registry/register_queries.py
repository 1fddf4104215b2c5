"""The scale register as the API shows it: each scale with the merchant bound to it now
(``overdue`` against now), pages of the register, and the writes that answer with the scale
or the binding history (register and bind, update, rotate the key, bind).

Composes :mod:`gateway_server.registry.register` (which keeps the rules: validation,
conflicts, append-only bindings) so a route makes one call in its transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from gateway_server.registry import register as reg


def scale_view(conn: Connection, row: Mapping[str, Any], *, now_ms: int) -> dict[str, Any]:
    """A register row as shown, with the merchant bound at ``now_ms``."""
    return reg.scale_out(row, now_ms=now_ms,
                         merchant_id=reg.binding_at(conn, row["device"], now_ms))


def scale_page(conn: Connection, *, now_ms: int, market_id: str | None = None,
               role: str | None = None, due_before_ms: int | None = None, limit: int = 100,
               offset: int = 0) -> dict[str, Any]:
    """A page of the register (keys never listed), each scale with its merchant now."""
    rows, total = reg.list_register(conn, market_id=market_id, role=role,
                                    due_before_ms=due_before_ms, limit=limit, offset=offset)
    bound = reg.current_bindings(conn, (r["device"] for r in rows), now_ms)
    items = [reg.scale_out(r, now_ms=now_ms, merchant_id=bound.get(r["device"])) for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


def register_scale(conn: Connection, device: str, *, market_id: str, now_ms: int,
                   key_hex: str | None = None, merchant_id: int | None = None,
                   **fields: Any) -> dict[str, Any]:
    """Register a scale, bound to ``merchant_id`` from now if given; the scale with its key
    (shown this once)."""
    row, key = reg.register_scale(conn, device, market_id=market_id, now_ms=now_ms,
                                  key_hex=key_hex, **fields)
    if merchant_id is not None:
        reg.bind(conn, device, merchant_id, at_ms=now_ms)
    return {**scale_view(conn, row, now_ms=now_ms), "key_hex": key}


def get_scale(conn: Connection, device: str, *, now_ms: int) -> dict[str, Any]:
    return scale_view(conn, reg.get_scale_row(conn, device), now_ms=now_ms)


def update_scale(conn: Connection, device: str, changes: Mapping[str, Any], *,
                 now_ms: int) -> dict[str, Any]:
    return scale_view(conn, reg.update_scale(conn, device, changes), now_ms=now_ms)


def rotate_key(conn: Connection, device: str, key_hex: str | None, *,
               now_ms: int) -> dict[str, Any]:
    """A new HMAC key (``key_hex``, or generated); the scale with it (shown this once)."""
    key = reg.rotate_key(conn, device, key_hex)
    return {**get_scale(conn, device, now_ms=now_ms), "key_hex": key}


def bindings(conn: Connection, device: str) -> list[dict[str, Any]]:
    """The binding history of a registered scale (NotFoundError: no such scale)."""
    reg.get_scale_row(conn, device)
    return reg.binding_history(conn, device=device)


def bind(conn: Connection, device: str, merchant_id: int | None, *,
         at_ms: int) -> list[dict[str, Any]]:
    """Bind (or, with None, unbind) from ``at_ms``; the binding history after."""
    reg.bind(conn, device, merchant_id, at_ms=at_ms)
    return reg.binding_history(conn, device=device)
