"""Units: mass in integer milligrams, money in integer fen, time as UTC milliseconds.

A float never carries a legal quantity. Decimal strings from devices (``"1.250"`` kg)
are converted with exact integer arithmetic; a value that cannot be represented
exactly in the target unit raises :class:`UnitError` instead of being rounded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from weighing.errors import UnitError

MG_PER_G = 1_000
MG_PER_KG = 1_000_000
MG_PER_LB_E2 = 45_359_237  # 1 lb = 453,592.37 mg exactly (international pound, 1959)
FEN_PER_YUAN = 100


class MassUnit(StrEnum):
    """Units a scale may state a weight in."""

    MG = "mg"
    G = "g"
    KG = "kg"
    LB = "lb"  # only for foreign indicators; never legal for trade in China


_MG_PER_UNIT_E5: dict[MassUnit, int] = {
    # milligrams per unit times 10^5, so that pounds stay integral
    MassUnit.MG: 100_000,
    MassUnit.G: 100_000_000,
    MassUnit.KG: 100_000_000_000,
    MassUnit.LB: 45_359_237_000,  # 453,592.37 mg x 10^5
}


def parse_unit(text: str) -> MassUnit:
    """Map a unit as devices print it (``kg``, ``KG``, ``g``, ``lb``) to :class:`MassUnit`."""
    try:
        return MassUnit(text.strip().lower())
    except ValueError:
        raise UnitError(f"unknown mass unit {text!r}") from None


def scaled_to_mg(value: int, decimals: int, unit: MassUnit) -> int:
    """Convert an integer reading with ``decimals`` implied decimals to milligrams.

    ``scaled_to_mg(1250, 3, MassUnit.KG) == 1_250_000``. Negative ``decimals`` mean
    trailing zeros (a Toledo display code of ``XX00`` is ``decimals=-2``).
    Pounds are rounded half away from zero to the milligram (the only inexact unit,
    and never a legal unit for trade here).
    """
    num = value * _MG_PER_UNIT_E5[unit]
    den = 100_000
    if decimals >= 0:
        den *= 10**decimals
    else:
        num *= 10 ** (-decimals)
    q, r = divmod(abs(num), den)
    if r:
        if unit is not MassUnit.LB:
            raise UnitError(f"{value}e-{decimals} {unit} is not a whole number of milligrams")
        if 2 * r >= den:
            q += 1
    return q if num >= 0 else -q


def decimal_to_mg(text: str, unit: MassUnit | str) -> int:
    """Convert a signed decimal string (``"-0001.250"``, ``"+12.5"``) to milligrams, exactly."""
    u = unit if isinstance(unit, MassUnit) else parse_unit(unit)
    s = text.strip()
    if not s:
        raise UnitError("empty weight")
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:].strip()
    whole, dot, frac = s.partition(".")
    digits = whole + frac
    if not digits or not digits.isdigit() or not digits.isascii() or (dot and "." in frac):
        raise UnitError(f"not a decimal weight: {text!r}")
    return sign * scaled_to_mg(int(digits), len(frac), u)


def mg_to_decimal(mass_mg: int, unit: MassUnit = MassUnit.KG, decimals: int = 3) -> str:
    """Format milligrams as a decimal string in ``unit`` with ``decimals`` places, exactly.

    Raises :class:`UnitError` when the mass needs more places than ``decimals``.
    """
    if unit is MassUnit.LB:
        raise UnitError("formatting in pounds is not supported")
    per = _MG_PER_UNIT_E5[unit] // 100_000
    scale = 10**decimals
    num = mass_mg * scale
    q, r = divmod(abs(num), per)
    if r:
        raise UnitError(f"{mass_mg} mg needs more than {decimals} decimals in {unit}")
    sign = "-" if mass_mg < 0 else ""
    if decimals == 0:
        return f"{sign}{q}"
    return f"{sign}{q // scale}.{q % scale:0{decimals}d}"


def yuan_to_fen(text: str) -> int:
    """Convert a decimal yuan amount (``"15.00"``) to integer fen, exactly."""
    s = text.strip()
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-")
    whole, _, frac = s.partition(".")
    if not (whole or frac) or not (whole + frac).isdigit() or len(frac) > 2:
        raise UnitError(f"not an amount in yuan with at most 2 decimals: {text!r}")
    return sign * (int(whole or "0") * FEN_PER_YUAN + int((frac + "00")[:2]))


def amount_fen(net_mg: int, unit_price_fen_per_kg: int) -> int:
    """Price of ``net_mg`` at ``unit_price_fen_per_kg``, rounded half up to the fen.

    This is the price-computing rule of an electronic price scale (计价秤): amount =
    weight × unit price, rounded to the smallest displayed money unit (1 fen).
    """
    num = net_mg * unit_price_fen_per_kg
    q, r = divmod(num, MG_PER_KG)
    return q + (1 if 2 * r >= MG_PER_KG else 0)


class AmountRounding(StrEnum):
    """A way a price-computing scale may round weight × unit price to money.

    Which of these a scale uses is the instrument's (or its owner's) setting; every one
    listed in :data:`LAWFUL_AMOUNT_ROUNDINGS` is lawful:

    * to the nearest fen, half up (``FEN_HALF_UP``): OIML R76-1 4.14.3 price-computing
      instruments — price to pay = weight × unit price, both as indicated, rounded to the
      nearest scale interval of price to pay (here 1 fen) [M: R76-1 read in secondary
      sources, the rule is what :func:`amount_fen` implements];
    * to the nearest 角 (10 fen), half up (``JIAO_HALF_UP``): the same rule on a scale whose
      scale interval of price to pay is 0.1 元 (a setting many Chinese price scales offer)
      [L: vendors' manuals, no primary text found];
    * half to even at the fen (``FEN_HALF_EVEN``, "banker's rounding" of POS software): it
      differs from half up only on an exact half fen, and then in the consumer's favour [L];
    * down to the fen or to the 角 (``FEN_DOWN``, ``JIAO_DOWN``, 抹零): charging less than
      the marked price is lawful — 价格法 第十三条 and 明码标价和禁止价格欺诈规定 (总局令第56号,
      2022) forbid charging *above* the marked price (不得收取未予标明的费用), not below [M].

    A scale that charged more than the largest of these charged more than any lawful
    rounding of the marked price allows (价格法 第十三条, 第十四条 price fraud).
    """

    FEN_HALF_UP = "fen-half-up"
    FEN_HALF_EVEN = "fen-half-even"
    FEN_DOWN = "fen-down"
    JIAO_HALF_UP = "jiao-half-up"
    JIAO_DOWN = "jiao-down"


LAWFUL_AMOUNT_ROUNDINGS: tuple[AmountRounding, ...] = tuple(AmountRounding)

_ROUNDING_STEP_FEN = {AmountRounding.FEN_HALF_UP: 1, AmountRounding.FEN_HALF_EVEN: 1,
                      AmountRounding.FEN_DOWN: 1, AmountRounding.JIAO_HALF_UP: 10,
                      AmountRounding.JIAO_DOWN: 10}


def rounded_amount_fen(net_mg: int, unit_price_fen_per_kg: int,
                       rounding: AmountRounding) -> int:
    """Price of ``net_mg`` at ``unit_price_fen_per_kg`` rounded by ``rounding``, exactly.

    ``FEN_HALF_UP`` equals :func:`amount_fen`. Halves and "down" are taken on the exact
    product (integer arithmetic, no float); "down" is toward minus infinity.
    """
    den = MG_PER_KG * _ROUNDING_STEP_FEN[rounding]
    q, r = divmod(net_mg * unit_price_fen_per_kg, den)
    if rounding in (AmountRounding.FEN_HALF_UP, AmountRounding.JIAO_HALF_UP):
        q += 1 if 2 * r >= den else 0
    elif rounding is AmountRounding.FEN_HALF_EVEN:
        q += 1 if 2 * r > den or (2 * r == den and q % 2) else 0
    return q * _ROUNDING_STEP_FEN[rounding]


def displayed_weights_mg(net_mg: int, e_mg: int | None) -> tuple[int, ...]:
    """The weights a scale may have priced: the reported one and, where it is not a
    multiple of e, the indicated weight it rounds to (nearest e; both neighbours on an
    exact half, since the display's tie rule is not reported)."""
    if not e_mg or e_mg <= 0 or net_mg % e_mg == 0:
        return (net_mg,)
    lo = net_mg // e_mg * e_mg
    r = net_mg - lo
    near = {lo} if 2 * r < e_mg else {lo + e_mg} if 2 * r > e_mg else {lo, lo + e_mg}
    return (net_mg, *sorted(near))


def lawful_amounts_fen(net_mg: int, unit_price_fen_per_kg: int, *,
                       e_mg: int | None = None) -> dict[AmountRounding, int]:
    """The largest amount each lawful rounding gives for this sale (over the weights of
    :func:`displayed_weights_mg`)."""
    ws = displayed_weights_mg(net_mg, e_mg)
    return {r: max(rounded_amount_fen(w, unit_price_fen_per_kg, r) for w in ws)
            for r in LAWFUL_AMOUNT_ROUNDINGS}


def max_lawful_amount_fen(net_mg: int, unit_price_fen_per_kg: int, *,
                          e_mg: int | None = None) -> int:
    """The most a scale may charge for ``net_mg`` at ``unit_price_fen_per_kg`` under any
    lawful rounding (:class:`AmountRounding`); an amount above it overcharges."""
    return max(lawful_amounts_fen(net_mg, unit_price_fen_per_kg, e_mg=e_mg).values())


def ms_to_datetime(ts_ms: int) -> datetime:
    """UTC datetime from milliseconds since the epoch."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


def datetime_to_ms(dt: datetime) -> int:
    """Milliseconds since the epoch from an aware datetime (naive means UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
