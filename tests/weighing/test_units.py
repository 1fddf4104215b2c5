from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weighing.errors import UnitError
from weighing.units import (
    MassUnit,
    amount_fen,
    datetime_to_ms,
    decimal_to_mg,
    mg_to_decimal,
    ms_to_datetime,
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


@given(st.integers(0, 4_102_444_800_000))
def test_time_round_trip(ms: int) -> None:
    assert datetime_to_ms(ms_to_datetime(ms)) == ms
