"""统一社会信用代码 check character (GB 32100-2015): known codes, constructed codes, corruptions."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from gateway_server.registry import uscc

BODY = st.builds(
    lambda a, b, region, org: a + b + region + org,
    st.sampled_from("159ANY"), st.sampled_from(uscc.CODE_SET), st.text("0123456789", min_size=6,
                                                                       max_size=6),
    st.text(uscc.CODE_SET, min_size=9, max_size=9),
)


def test_weights_are_powers_of_three_mod_31() -> None:
    assert uscc.WEIGHTS == (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
    assert len(uscc.CODE_SET) == 31 and not set("IOSVZ") & set(uscc.CODE_SET)


@pytest.mark.parametrize("code", [
    "91350100M000100Y43",  # the example printed in GB 32100-2015
    "000000000000000000",  # Σ = 0 → 31 - 0 = 31, written 0
])
def test_known_valid_codes(code: str) -> None:
    assert uscc.validate(code) == code


def test_check_value_30_is_y_and_31_is_0() -> None:
    # one at position 1 (weight 1): Σ = 1 → 31 - 1 = 30 → "Y"
    assert uscc.check_char("1" + "0" * 16) == "Y"
    assert uscc.check_char("0" * 17) == "0"


def test_normalises_case_and_blanks() -> None:
    assert uscc.validate(" 91350100m000100y43 ") == "91350100M000100Y43"
    assert uscc.validate("913501 00M000 100Y43") == "91350100M000100Y43"


@pytest.mark.parametrize(("code", "why"), [
    ("91350100M000100Y44", "check character is '4', expected '3'"),
    ("91350100M000100Y4", "18 characters, got 17"),
    ("91350100M000100Y433", "18 characters, got 19"),
    ("91350100M000100I43", "'I' at position 16"),
    ("91350100O000100Y43", "'O' at position 9"),
    ("9135010ZM000100Y43", "'Z' at position 8"),
    ("913501A0M000100Y43", "positions 3-8"),
    ("", "got 0"),
])
def test_invalid_codes_say_why(code: str, why: str) -> None:
    with pytest.raises(uscc.CreditCodeError, match=why.replace("(", r"\(")):
        uscc.validate(code)
    assert not uscc.is_valid(code)


@given(BODY)
def test_constructed_codes_validate(body: str) -> None:
    assert uscc.is_valid(body + uscc.check_char(body))


@given(BODY, st.integers(0, 17), st.sampled_from(uscc.CODE_SET))
def test_every_single_substitution_is_detected(body: str, pos: int, ch: str) -> None:
    code = body + uscc.check_char(body)
    if code[pos] == ch or (2 <= pos < 8 and not ch.isdigit()):
        return
    corrupted = code[:pos] + ch + code[pos + 1:]
    assert not uscc.is_valid(corrupted)


@given(BODY, st.integers(0, 15))
def test_every_adjacent_transposition_is_detected(body: str, pos: int) -> None:
    # W(i+1) = 3·W(i): a swap changes Σ by (a - b)·(-2·W(i)) ≢ 0 (mod 31) when a ≠ b
    code = body + uscc.check_char(body)
    if code[pos] == code[pos + 1]:
        return
    swapped = code[:pos] + code[pos + 1] + code[pos] + code[pos + 2:]
    assert not uscc.is_valid(swapped)


def test_mask_keeps_first_six_and_last_two() -> None:
    assert uscc.mask("91350100M000100Y43") == "913501****43"
    assert uscc.mask(None) is None and uscc.mask("") is None
