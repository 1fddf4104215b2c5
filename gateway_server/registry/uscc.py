"""统一社会信用代码 (unified social credit code, USCC): format and check digit.

Source: GB 32100-2015 《法人和其他组织统一社会信用代码编码规则》, §4 (structure) and
§5 / Annex B (check character).

Rules (pure: no I/O, no clock):

* 18 characters: 登记管理部门码 (1) · 机构类别码 (1) · 登记管理机关行政区划码 (6 digits) ·
  主体标识码 (组织机构代码, 9) · 校验码 (1).
* Every character is from the 31-character code set ``0-9 A-H J-N P-R T-U W-Y`` (the
  letters I, O, S, V and Z are not used); a character's value is its index in that set.
* Weights W_i = 3^i mod 31 for positions i = 0..16; the check character is the one whose
  value is ``31 - (Σ C_i·W_i mod 31)``, with 31 written as ``0``.

Only the structure above and the check character are verified; the embedded
organisation code (GB 11714) and the region code are not looked up.
"""

from __future__ import annotations

from weighing.errors import GatewayError

CODE_SET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100-2015 表 1: 31 characters
_VALUE = {ch: i for i, ch in enumerate(CODE_SET)}
WEIGHTS = tuple(pow(3, i, 31) for i in range(17))  # 1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28
LENGTH = 18


class CreditCodeError(GatewayError, ValueError):
    """A string is not a valid 统一社会信用代码; the message says what is wrong."""


def check_char(first17: str) -> str:
    """The check character for the first 17 characters of a code (GB 32100-2015 §5)."""
    if len(first17) != LENGTH - 1:
        raise CreditCodeError(f"need 17 characters for a check character, got {len(first17)}")
    total = 0
    for pos, ch in enumerate(first17):
        if ch not in _VALUE:
            raise CreditCodeError(f"character {ch!r} at position {pos + 1} is not allowed")
        total += _VALUE[ch] * WEIGHTS[pos]
    c18 = 31 - total % 31
    return CODE_SET[0 if c18 == 31 else c18]


def normalize(code: str) -> str:
    """Strip blanks and upper-case (codes are printed in capitals; users type lower case)."""
    return "".join(code.split()).upper()


def validate(code: str) -> str:
    """Return the normalised code, or raise :class:`CreditCodeError` saying why it is invalid."""
    c = normalize(code)
    if len(c) != LENGTH:
        raise CreditCodeError(f"a 统一社会信用代码 has 18 characters, got {len(c)}")
    for pos, ch in enumerate(c):
        if ch not in _VALUE:
            raise CreditCodeError(
                f"character {ch!r} at position {pos + 1} is not allowed "
                "(0-9 and A-Y without I, O, S, V, Z)"
            )
    if not c[2:8].isdigit():
        raise CreditCodeError("positions 3-8 (行政区划码) must be digits")
    expected = check_char(c[:17])
    if c[17] != expected:
        raise CreditCodeError(f"check character is {c[17]!r}, expected {expected!r}")
    return c


def is_valid(code: str) -> bool:
    try:
        validate(code)
    except CreditCodeError:
        return False
    return True


def mask(code: str | None) -> str | None:
    """Masked form for public pages: first 6 + ``****`` + last 2 (e.g. ``913501****43``)."""
    if not code:
        return None
    return f"{code[:6]}****{code[-2:]}" if len(code) > 8 else "****"
