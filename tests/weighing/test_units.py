from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from weighing.errors import UnitError
from weighing.units import (
    LAWFUL_AMOUNT_ROUNDINGS,
    AmountRounding,
    MassUnit,
    amount_fen,
    datetime_to_ms,
    decimal_to_mg,
    displayed_weights_mg,
    lawful_amounts_fen,
    max_lawful_amount_fen,
    mg_to_decimal,
    ms_to_datetime,
    rounded_amount_fen,
    scaled_to_mg,
    yuan_to_fen,
)


@pytest.mark.parametrize(
    ("text", "unit", "mg"),
    [("1.250", "kg", 1_250_000), ("-0001.250", "kg", -1_250_000), ("+12.5", "g", 12_500),
     ("0.000", "kg", 0), ("600.00", "g", 600_000), ("0.01", "g", 10), ("15", "kg", 15_000_000),
     ("1", "lb", 453_592)],
)
def test_decimal_to_mg_is_exact(text: str, unit: str, mg: int) -> None:
    assert decimal_to_mg(text, unit) == mg


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "1,25", "--1", "1e3", "٣"])
def test_decimal_to_mg_rejects_non_decimals(text: str) -> None:
    with pytest.raises(UnitError):
        decimal_to_mg(text, "kg")


def test_sub_milligram_is_an_error_not_a_rounding() -> None:
    with pytest.raises(UnitError, match="whole number of milligrams"):
        decimal_to_mg("0.0001", "g")


def test_toledo_trailing_zero_codes() -> None:
    assert scaled_to_mg(15, -2, MassUnit.KG) == 1_500_000_000


@given(st.integers(-(10**9), 10**9))
def test_mg_decimal_round_trip(mg: int) -> None:
    assert decimal_to_mg(mg_to_decimal(mg, MassUnit.KG, 6), "kg") == mg


def test_money() -> None:
    assert yuan_to_fen("15.00") == 1500
    assert yuan_to_fen("0.1") == 10
    with pytest.raises(UnitError):
        yuan_to_fen("1.005")
    # 1.250 kg x 12.00 yuan/kg = 15.00 yuan (Dialog 04 example, domain.md §3)
    assert amount_fen(1_250_000, 1200) == 1500
    # rounding half up to the fen: 0.155 kg x 10.10 yuan/kg = 1.5655 -> 1.57
    assert amount_fen(155_000, 1010) == 157


R = AmountRounding


@pytest.mark.parametrize(("net_mg", "price", "want"), [
    # 0.155 kg x 10.10 = 1.5655 yuan
    (155_000, 1010, {R.FEN_HALF_UP: 157, R.FEN_HALF_EVEN: 157, R.FEN_DOWN: 156,
                     R.JIAO_HALF_UP: 160, R.JIAO_DOWN: 150}),
    # 0.5 kg x 0.25 = 0.125 yuan: an exact half fen, 12 is even
    (500_000, 25, {R.FEN_HALF_UP: 13, R.FEN_HALF_EVEN: 12, R.FEN_DOWN: 12,
                   R.JIAO_HALF_UP: 10, R.JIAO_DOWN: 10}),
    # 1.5 kg x 0.09 = 0.135 yuan: an exact half fen, 13 is odd
    (1_500_000, 9, {R.FEN_HALF_UP: 14, R.FEN_HALF_EVEN: 14, R.FEN_DOWN: 13,
                    R.JIAO_HALF_UP: 10, R.JIAO_DOWN: 10}),
    # 1.25 kg x 12.36 = 15.45 yuan: half a jiao rounds up to 15.50
    (1_250_000, 1236, {R.FEN_HALF_UP: 1545, R.FEN_HALF_EVEN: 1545, R.FEN_DOWN: 1545,
                       R.JIAO_HALF_UP: 1550, R.JIAO_DOWN: 1540}),
])
def test_lawful_roundings(net_mg: int, price: int, want: dict[AmountRounding, int]) -> None:
    assert {r: rounded_amount_fen(net_mg, price, r) for r in LAWFUL_AMOUNT_ROUNDINGS} == want
    assert lawful_amounts_fen(net_mg, price) == want
    assert max_lawful_amount_fen(net_mg, price) == max(want.values())


def test_the_priced_weight_may_be_the_displayed_one() -> None:
    # an agent reporting 1 g resolution on a 5 g scale: the scale priced 1.250 or 1.255 kg
    assert displayed_weights_mg(1_252_000, 5_000) == (1_252_000, 1_250_000)
    assert displayed_weights_mg(1_253_000, 5_000) == (1_253_000, 1_255_000)
    assert displayed_weights_mg(1_252_500, 5_000) == (1_252_500, 1_250_000, 1_255_000)
    assert displayed_weights_mg(1_250_000, 5_000) == (1_250_000,)
    # 1.255 kg x 100.00 = 125.50 yuan; priced on the reported 1.253 kg it is 125.30
    assert max_lawful_amount_fen(1_253_000, 10_000, e_mg=5_000) == 12_550
    assert max_lawful_amount_fen(1_253_000, 10_000) == 12_530


@given(st.integers(0, 30_000_000), st.integers(0, 100_000))
def test_roundings_bracket_the_exact_price(net_mg: int, price: int) -> None:
    exact = net_mg * price / 1_000_000
    got = lawful_amounts_fen(net_mg, price)
    assert got[R.FEN_HALF_UP] == amount_fen(net_mg, price)
    assert got[R.FEN_DOWN] <= got[R.FEN_HALF_EVEN] <= got[R.FEN_HALF_UP]
    assert got[R.JIAO_DOWN] <= got[R.FEN_DOWN] and got[R.JIAO_DOWN] % 10 == 0
    assert abs(got[R.FEN_HALF_UP] - exact) <= 0.5 + 1e-9
    assert abs(got[R.JIAO_HALF_UP] - exact) <= 5 + 1e-9
    assert max(got.values()) <= exact + 5 + 1e-9  # never more than half a jiao above


@given(st.integers(0, 4_102_444_800_000))
def test_time_round_trip(ms: int) -> None:
    assert datetime_to_ms(ms_to_datetime(ms)) == ms
