"""Registry functions over a Connection, on SQLite and PostgreSQL: bindings over time,
price versions, scales, merchants; and the quantity parsers they share with the API."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conftest import CODE_A, CODE_C, seed
from gateway_server.registry import register as reg
from gateway_server.store.database import Store
from gateway_server.store.tables import bindings, scales

T0 = 1_750_000_000_000
H = 3_600_000


@pytest.fixture
def world(store: Store):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        ids = seed(conn, T0)
        reg.register_scale(conn, "s-1", market_id="m1", now_ms=T0, max_mg=15_000_000,
                           e_mg=5_000, accuracy_class="III")
    return ids


# -- bindings over time ------------------------------------------------------------------

def test_binding_at_before_during_after_and_at_the_instant_of_a_rebinding(store, world):  # type: ignore[no-untyped-def]
    a, b = world["a"], world["b"]
    t1, t2 = T0 + H, T0 + 5 * H
    with store.engine.begin() as conn:
        assert reg.binding_at(conn, "s-1", t1) is None
        assert reg.bind(conn, "s-1", a, at_ms=t1)
        assert reg.bind(conn, "s-1", b, at_ms=t2)  # closes a's binding at t2
    with store.engine.connect() as conn:
        assert reg.binding_at(conn, "s-1", t1 - 1) is None  # before any binding
        assert reg.binding_at(conn, "s-1", t1) == a  # the first instant is included
        assert reg.binding_at(conn, "s-1", t2 - 1) == a  # during
        assert reg.binding_at(conn, "s-1", t2) == b  # the exact instant: the new merchant
        assert reg.binding_at(conn, "s-1", t2 + 10 * H) == b  # after, still open
        hist = reg.binding_history(conn, device="s-1")
    assert [(h["merchant_id"], h["valid_from_ms"], h["valid_to_ms"]) for h in hist] == [
        (a, t1, t2), (b, t2, None)]


def test_rebinding_the_same_merchant_changes_nothing(store, world):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        assert reg.bind(conn, "s-1", world["a"], at_ms=T0 + H)
        assert not reg.bind(conn, "s-1", world["a"], at_ms=T0 + 2 * H)
        assert len(reg.binding_history(conn, device="s-1")) == 1


def test_unbind_then_bind_leaves_a_gap(store, world):  # type: ignore[no-untyped-def]
    a, b = world["a"], world["b"]
    with store.engine.begin() as conn:
        reg.bind(conn, "s-1", a, at_ms=T0 + H)
        assert reg.bind(conn, "s-1", None, at_ms=T0 + 2 * H)
        assert not reg.bind(conn, "s-1", None, at_ms=T0 + 3 * H)
        reg.bind(conn, "s-1", b, at_ms=T0 + 4 * H)
        assert reg.binding_at(conn, "s-1", T0 + 2 * H) is None
        assert reg.binding_at(conn, "s-1", T0 + 3 * H) is None
        assert reg.binding_at(conn, "s-1", T0 + 4 * H) == b


def test_history_is_append_only(store, world):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        reg.bind(conn, "s-1", world["a"], at_ms=T0 + 5 * H)
        with pytest.raises(reg.ConflictError, match="append-only"):
            reg.bind(conn, "s-1", world["b"], at_ms=T0 + 4 * H)


def test_rebinding_twice_at_one_instant_keeps_the_last(store, world):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        c = reg.create_merchant(conn, "m1", name="王五", now_ms=T0)["id"]
        reg.bind(conn, "s-1", world["a"], at_ms=T0)
        reg.bind(conn, "s-1", world["b"], at_ms=T0 + H)
        reg.bind(conn, "s-1", c, at_ms=T0 + H)
        assert reg.binding_at(conn, "s-1", T0 + H) == c
        assert reg.binding_at(conn, "s-1", T0 + H - 1) == world["a"]


def test_binding_across_markets_is_refused(store, world):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        reg.create_market(conn, "m2", name="西门市场", now_ms=T0)
        other = reg.create_merchant(conn, "m2", name="赵六", now_ms=T0)["id"]
        with pytest.raises(reg.ConflictError, match="market m2"):
            reg.bind(conn, "s-1", other, at_ms=T0)
        with pytest.raises(reg.NotFoundError):
            reg.bind(conn, "s-404", world["a"], at_ms=T0)


# -- PLU price versions ------------------------------------------------------------------

def test_price_at_answers_the_version_valid_then(store, world):  # type: ignore[no-untyped-def]
    a = world["a"]
    with store.engine.begin() as conn:
        reg.add_price(conn, a, plu="1001", name="西红柿", unit_price_fen_per_kg=600,
                      valid_from_ms=T0 + H, category="vegetables")
        reg.add_price(conn, a, plu="1001", name="西红柿", unit_price_fen_per_kg=800,
                      valid_from_ms=T0 + 3 * H)
        reg.add_price(conn, a, plu="2002", name="黄瓜", unit_price_fen_per_kg=500,
                      valid_from_ms=T0)
    with store.engine.connect() as conn:
        assert reg.price_at(conn, a, "1001", T0) is None
        assert reg.price_at(conn, a, "1001", T0 + H) == 600
        assert reg.price_at(conn, a, "1001", T0 + 3 * H - 1) == 600
        assert reg.price_at(conn, a, "1001", T0 + 3 * H) == 800
        assert reg.price_at(conn, a, "9999", T0 + 3 * H) is None
        assert reg.price_at(conn, world["b"], "1001", T0 + 3 * H) is None
        now = reg.list_prices(conn, a, at_ms=T0 + 2 * H)
        assert {(p["plu"], p["unit_price_fen_per_kg"]) for p in now} == {("1001", 600),
                                                                        ("2002", 500)}
        assert len(reg.list_prices(conn, a)) == 3


def test_same_price_version_twice_is_a_no_op_a_different_one_a_conflict(store, world):  # type: ignore[no-untyped-def]
    kw = {"plu": "1001", "name": "西红柿", "unit_price_fen_per_kg": 600, "valid_from_ms": T0}
    with store.engine.begin() as conn:
        assert reg.add_price(conn, world["a"], **kw)[1]
        assert not reg.add_price(conn, world["a"], **kw)[1]
        with pytest.raises(reg.ConflictError):
            reg.add_price(conn, world["a"], **{**kw, "unit_price_fen_per_kg": 700})


# -- scales and merchants ----------------------------------------------------------------

def test_register_generates_a_256_bit_key_and_refuses_a_second_registration(store, world):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        row, key = reg.register_scale(conn, "s-2", market_id="m1", now_ms=T0)
        assert len(key) == 64 and row["key_hex"] == key and row["registered"]
        with pytest.raises(reg.ConflictError):
            reg.register_scale(conn, "s-2", market_id="m1", now_ms=T0)
        with pytest.raises(reg.RegistryError, match="bytes"):
            reg.register_scale(conn, "s-3", market_id="m1", now_ms=T0, key_hex="a1b2c3")
        new = reg.rotate_key(conn, "s-2")
        assert new != key and reg.get_scale_row(conn, "s-2")["key_hex"] == new
        out = reg.scale_out(reg.get_scale_row(conn, "s-2"), now_ms=T0, merchant_id=None)
        assert "key_hex" not in out and out["has_key"]


def test_a_quarantined_device_is_taken_over_by_registration(store, world):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:  # what the ingest writes for an unknown device
        conn.execute(scales.insert().values(device="s-9", market="elsewhere", registered=False,
                                            quarantined=True, state="online", created_ms=T0))
        reg.register_scale(conn, "s-9", market_id="m1", now_ms=T0 + 1, serial="SN9")
        row = reg.get_scale_row(conn, "s-9")
    assert row["registered"] and row["market"] == "m1" and row["serial"] == "SN9"
    assert row["state"] == "online" and row["created_ms"] == T0


def test_due_before_filter_and_overdue(store, world):  # type: ignore[no-untyped-def]
    due = reg.parse_date_ms("2025-06-30")
    with store.engine.begin() as conn:
        reg.update_scale(conn, "s-1", {"due_on_ms": due})
        reg.register_scale(conn, "s-2", market_id="m1", now_ms=T0,
                           due_on_ms=reg.parse_date_ms("2026-06-30"))
        reg.register_scale(conn, "s-3", market_id="m1", now_ms=T0)
        rows, total = reg.list_register(conn, due_before_ms=reg.parse_date_ms("2026-01-01"))
    assert [r["device"] for r in rows] == ["s-1"] and total == 1
    # valid through the due date (CST), overdue from the next day's 00:00 CST
    assert not reg.is_overdue(due, due + reg.DAY_MS - 1)
    assert reg.is_overdue(due, due + reg.DAY_MS)
    assert not reg.is_overdue(None, due)


def test_credit_codes_are_validated_and_unique(store, world):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        with pytest.raises(reg.RegistryError, match="credit_code"):
            reg.create_merchant(conn, "m1", name="x", credit_code="91350100M000100Y44",
                                now_ms=T0)
        with pytest.raises(reg.ConflictError, match="credit_code"):
            reg.create_merchant(conn, "m1", name="x", credit_code=CODE_A, now_ms=T0)
        m = reg.update_merchant(conn, world["b"], {"credit_code": CODE_C.lower()}, now_ms=T0)
        assert m["credit_code"] == CODE_C


def test_list_merchants_filters(store, world):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        reg.set_merchant_status(conn, world["b"], status="yellow", list_status=None,
                                reason="复称短秤", now_ms=T0)
        assert reg.list_merchants(conn, market_id="m1")[1] == 2
        assert [m["name"] for m in reg.list_merchants(conn, q="蔬菜")[0]] == ["张三蔬菜"]
        assert [m["name"] for m in reg.list_merchants(conn, q="B-02")[0]] == ["李四水产"]
        assert [m["name"] for m in reg.list_merchants(conn, status="yellow")[0]] == ["李四水产"]
        assert reg.list_merchants(conn, market_id="m9")[1] == 0
        m = reg.get_merchant(conn, world["b"])
    assert m["status"] == "yellow" and m["status_reason"] == "复称短秤" and m["status_ms"] == T0


def test_trust_tokens_are_unguessable_and_rotate(store, world):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        m = reg.get_merchant(conn, world["a"])
        assert len(m["trust_token"]) >= 22  # ≥ 128 bit of secrets.token_urlsafe
        new = reg.rotate_trust_token(conn, world["a"], now_ms=T0)["trust_token"]
        assert new != m["trust_token"]
        with pytest.raises(reg.NotFoundError):
            reg.trust_view(conn, m["trust_token"], now_ms=T0)


def test_bindings_table_rows_are_half_open(store, world):  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        reg.bind(conn, "s-1", world["a"], at_ms=T0)
        reg.bind(conn, "s-1", world["b"], at_ms=T0 + H)
        rows = conn.execute(select(bindings).order_by(bindings.c.id)).all()
    assert rows[0].valid_to_ms == rows[1].valid_from_ms == T0 + H


# -- quantities --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "mg"), [
    ("15 kg", 15_000_000), ("15kg", 15_000_000), ("5 g", 5_000), ("0.1 克", 100),
    ("15 公斤", 15_000_000), ("6.5 千克", 6_500_000), ("2 KG", 2_000_000), ("500 mg", 500),
    ("15000000", 15_000_000), (15_000_000, 15_000_000),
])
def test_parse_mass(text: str | int, mg: int) -> None:
    assert reg.parse_mass_mg(text) == mg


@pytest.mark.parametrize(("text", "why"), [
    ("15.5", "needs a unit"), ("15 斤", "15 斤 = 7.5 kg.*计量法 第三条.*give 7.5 kg"),
    ("0.5 两", "0.5 两 = 25 g"), ("0 kg", "positive"), ("abc", "not a"), ("15 磅", "unknown unit"),
    ("1.0001 g", "whole number"), (True, "integer"), (1.5, "integer"),
])
def test_parse_mass_refuses(text: object, why: str) -> None:
    with pytest.raises(reg.RegistryError, match=why):
        reg.parse_mass_mg(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "fen_per_kg"), [
    ("12.50", 1250), (1250, 1250), ("12.50元/kg", 1250), ("12.5/千克", 1250),
    ("6.25元/斤", 1250), ("¥6.25 元 / 斤", 1250), ("0.01元/斤", 2), ("1.2元/两", 2400),
])
def test_unit_prices_per_jin_convert_exactly_to_the_legal_unit(text: str | int,
                                                               fen_per_kg: int) -> None:
    assert reg.parse_unit_price_fen_per_kg(text) == fen_per_kg


@pytest.mark.parametrize(("text", "why"), [("6.25元/磅", "unknown price unit"),
                                          ("x元/斤", "not an amount"), ("-1元/斤", "negative")])
def test_unit_prices_refuse_what_they_cannot_convert(text: str, why: str) -> None:
    with pytest.raises(reg.RegistryError, match=why):
        reg.parse_unit_price_fen_per_kg(text)


def test_format_mass_is_exact_and_parses_back() -> None:
    for mg, text in [(15_000_000, "15 kg"), (6_500_000, "6.5 kg"), (5_000, "5 g"),
                     (100, "0.1 g"), (2_500, "2.5 g"), (50, "50 mg"), (1_000_500, "1000.5 g")]:
        assert reg.format_mass(mg) == text
        assert reg.parse_mass_mg(text) == mg


@pytest.mark.parametrize(("text", "fen"), [("12.50", 1250), ("12.5", 1250), ("¥3", 300),
                                           ("8元", 800), (1250, 1250), ("0.01", 1)])
def test_parse_fen(text: str | int, fen: int) -> None:
    assert reg.parse_fen(text) == fen


@pytest.mark.parametrize("text", ["12.505", "-1", "abc", 1.5])
def test_parse_fen_refuses(text: object) -> None:
    with pytest.raises(reg.RegistryError):
        reg.parse_fen(text)  # type: ignore[arg-type]


def test_dates_are_china_standard_time_calendar_dates() -> None:
    ms = reg.parse_date_ms("2025-03-01")
    assert ms == 1_740_758_400_000  # 2025-02-28T16:00:00Z = 2025-03-01 00:00 CST
    for text in ("2025/3/1", "2025年3月1日", "20250301", "2025.03.01", " 2025-03-01 "):
        assert reg.parse_date_ms(text) == ms
    assert reg.format_date(ms) == "2025-03-01"
    assert reg.format_date(ms - 1) == "2025-02-28"
    with pytest.raises(reg.RegistryError):
        reg.parse_date_ms("2025-02-30")
