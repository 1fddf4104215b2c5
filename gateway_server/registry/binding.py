"""The merchant bound to a scale at a time: the one definition.

A binding is a half-open interval ``[valid_from_ms, valid_to_ms)`` (``valid_to_ms`` NULL:
still bound); :func:`gateway_server.registry.register.bind` keeps them append-only and never
overlapping — binding a scale at ``t`` closes the open binding at ``t`` and opens the new
one at ``t`` — so at most one binding holds a device at any instant, and at the exact
instant of a re-binding the *new* merchant answers.

:func:`bound_at` is that rule as SQL and :func:`holds_at` as Python (for rows already
loaded); every question "who was bound when" in the gateway goes through them, one
device or thousands (:func:`merchants_at_times` answers a whole batch in one query per
500 devices).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, or_, select

from gateway_server.store.bulk import any_of
from gateway_server.store.tables import bindings

_CHUNK = 500  # devices per IN list: far below any database's parameter limit


def bound_at(ts_ms: int | ColumnElement[Any]) -> ColumnElement[bool]:
    """SQL: this ``bindings`` row holds at ``ts_ms`` (a number or a column)."""
    return and_(bindings.c.valid_from_ms <= ts_ms,
                or_(bindings.c.valid_to_ms.is_(None), bindings.c.valid_to_ms > ts_ms))


def holds_at(row: Any, ts_ms: int) -> bool:
    """Python: the loaded binding ``row`` (with ``valid_from_ms`` / ``valid_to_ms``) holds
    at ``ts_ms``; the same rule as :func:`bound_at`."""
    return bool(row.valid_from_ms <= ts_ms
                and (row.valid_to_ms is None or row.valid_to_ms > ts_ms))


def merchant_at(conn: Connection, device: str, ts_ms: int) -> int | None:
    """The merchant bound to ``device`` at ``ts_ms``, or None."""
    q = (select(bindings.c.merchant_id)
         .where(bindings.c.device == device, bound_at(ts_ms))
         .order_by(bindings.c.valid_from_ms.desc(), bindings.c.id.desc()).limit(1))
    m = conn.execute(q).scalar_one_or_none()
    return None if m is None else int(m)


def merchants_at(conn: Connection, devices: Iterable[str], ts_ms: int) -> dict[str, int]:
    """device → merchant bound at ``ts_ms``, for many devices (unbound ones left out)."""
    devs = sorted(set(devices))
    out: dict[str, int] = {}
    for i in range(0, len(devs), _CHUNK):
        q = (select(bindings.c.device, bindings.c.merchant_id)
             .where(any_of(conn, bindings.c.device, devs[i:i + _CHUNK]), bound_at(ts_ms))
             .order_by(bindings.c.valid_from_ms))
        out.update({r.device: int(r.merchant_id) for r in conn.execute(q)})
    return out


def bindings_of(conn: Connection, devices: Iterable[str]) -> dict[str, list[Any]]:
    """Every binding of each of ``devices`` (one query per ``_CHUNK`` devices), for
    :func:`merchant_in`; a device never bound has an empty list."""
    devs = sorted(set(devices))
    spans: dict[str, list[Any]] = defaultdict(list)
    for i in range(0, len(devs), _CHUNK):
        for b in conn.execute(select(bindings.c.device, bindings.c.merchant_id,
                                     bindings.c.valid_from_ms, bindings.c.valid_to_ms)
                              .where(any_of(conn, bindings.c.device, devs[i:i + _CHUNK]))):
            spans[b.device].append(b)
    return spans


def merchant_in(spans: dict[str, list[Any]], device: str, ts_ms: int) -> int | None:
    """The merchant bound to ``device`` at ``ts_ms`` among ``spans`` (:func:`bindings_of`)."""
    held = spans.get(device)
    if not held:  # a scale never bound to a merchant
        return None
    return next((int(b.merchant_id) for b in held if holds_at(b, ts_ms)), None)


def merchants_at_times(conn: Connection,
                       wanted: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """(device, ts_ms) → merchant bound then, for many pairs: each device's bindings are
    read once (unbound pairs left out)."""
    pairs = set(wanted)
    spans = bindings_of(conn, {d for d, _ in pairs})
    out: dict[tuple[str, int], int] = {}
    for device, ts in pairs:
        m = merchant_in(spans, device, ts)
        if m is not None:
            out[(device, ts)] = m
    return out


def devices_query(merchant_id: int, ts_ms: int) -> Select[tuple[str]]:
    """SQL: the devices bound to ``merchant_id`` at ``ts_ms`` (for ``IN`` or a join)."""
    return select(bindings.c.device).where(bindings.c.merchant_id == merchant_id,
                                           bound_at(ts_ms))


def devices_at(conn: Connection, merchant_id: int, ts_ms: int) -> list[str]:
    """The devices bound to ``merchant_id`` at ``ts_ms``, sorted."""
    return sorted({str(d) for d in conn.execute(devices_query(merchant_id, ts_ms)).scalars()})


def bound_during(start_ms: int, end_ms: int) -> ColumnElement[bool]:
    """SQL: this ``bindings`` row holds at some instant of ``[start_ms, end_ms)``."""
    return and_(bindings.c.valid_from_ms < end_ms,
                or_(bindings.c.valid_to_ms.is_(None), bindings.c.valid_to_ms > start_ms))
