"""The one definition of "the merchant bound to a scale at time t", on SQLite and
PostgreSQL: every form (one device, many devices at one time, many (device, time)
pairs, the devices of a merchant, the SQL and Python predicates) gives the same answer
at the edges of the half-open intervals."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from conftest import seed
from gateway_server.registry import binding as mb, register as reg
from gateway_server.store.database import Store
from gateway_server.store.tables import bindings

T0 = 1_750_000_000_000
H = 3_600_000
T1, T2, T3 = T0 + H, T0 + 5 * H, T0 + 9 * H  # s-1: a from T1, b from T2, none from T3


@pytest.fixture
def world(store: Store):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        ids = seed(conn, T0)
        for d in ("s-1", "s-2", "s-3"):
            reg.register_scale(conn, d, market_id="m1", now_ms=T0, max_mg=15_000_000,
                               e_mg=5_000, accuracy_class="III")
        reg.bind(conn, "s-1", ids["a"], at_ms=T1)
        reg.bind(conn, "s-1", ids["b"], at_ms=T2)
        reg.bind(conn, "s-1", None, at_ms=T3)
        reg.bind(conn, "s-2", ids["a"], at_ms=T2)  # s-3 is never bound
    return ids


TIMES = [T1 - 1, T1, T2 - 1, T2, T3 - 1, T3, T3 + H]


def test_every_form_agrees_at_the_edges(store: Store, world) -> None:  # type: ignore[no-untyped-def]
    a, b = world["a"], world["b"]
    expected = {("s-1", T1 - 1): None, ("s-1", T1): a, ("s-1", T2 - 1): a, ("s-1", T2): b,
                ("s-1", T3 - 1): b, ("s-1", T3): None, ("s-1", T3 + H): None}
    expected |= {("s-2", t): (a if t >= T2 else None) for t in TIMES}
    expected |= {("s-3", t): None for t in TIMES}
    with store.engine.connect() as conn:
        one = {k: mb.merchant_at(conn, *k) for k in expected}
        batch = mb.merchants_at_times(conn, expected)
        per_time = {(d, t): mb.merchants_at(conn, ["s-1", "s-2", "s-3"], t).get(d)
                    for d, t in expected}
        rows = list(conn.execute(select(bindings)))
        sql = {(d, t): conn.execute(select(bindings.c.merchant_id).where(
            bindings.c.device == d, mb.bound_at(t))).scalar_one_or_none() for d, t in expected}
        devices = {(m, t): mb.devices_at(conn, m, t) for m in (a, b) for t in TIMES}
    py = {(d, t): next((r.merchant_id for r in rows if r.device == d and mb.holds_at(r, t)),
                       None) for d, t in expected}
    assert one == expected
    assert {k: batch.get(k) for k in expected} == expected
    assert per_time == expected
    assert sql == expected
    assert py == expected
    assert devices == {(m, t): sorted(d for d in ("s-1", "s-2", "s-3")
                                      if expected[(d, t)] == m)
                       for m in (a, b) for t in TIMES}


def test_bound_during_a_window(store: Store, world) -> None:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        def during(start: int, end: int) -> set[tuple[str, int]]:
            return {(r.device, r.merchant_id) for r in conn.execute(
                select(bindings.c.device, bindings.c.merchant_id).where(
                    bindings.c.merchant_id.is_not(None), mb.bound_during(start, end)))}
        a, b = world["a"], world["b"]
        assert during(T0, T1) == set()  # ends at T1: a's binding starts there
        assert during(T0, T1 + 1) == {("s-1", a)}
        assert during(T2 - 1, T2) == {("s-1", a)}
        assert during(T3, T3 + H) == {("s-2", a)}
        assert during(T2, T3) == {("s-1", b), ("s-2", a)}


def test_many_devices_are_read_in_chunks(store: Store, world) -> None:  # type: ignore[no-untyped-def]
    """More devices than one IN list holds: the answer for the real ones is unchanged."""
    wanted = [(f"ghost-{i}", T2) for i in range(1_200)] + [("s-1", T2), ("s-2", T2)]
    with store.engine.connect() as conn:
        got = mb.merchants_at_times(conn, wanted)
        now = mb.merchants_at(conn, [d for d, _ in wanted], T2)
    assert got == {("s-1", T2): world["b"], ("s-2", T2): world["a"]}
    assert now == {"s-1": world["b"], "s-2": world["a"]}


def test_holds_at_on_a_plain_row() -> None:
    open_ = SimpleNamespace(valid_from_ms=10, valid_to_ms=None)
    closed = SimpleNamespace(valid_from_ms=10, valid_to_ms=20)
    assert [mb.holds_at(open_, t) for t in (9, 10, 10**15)] == [False, True, True]
    assert [mb.holds_at(closed, t) for t in (9, 10, 19, 20)] == [False, True, True, False]
