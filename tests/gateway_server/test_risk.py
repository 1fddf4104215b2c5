"""gateway_server.detect.risk: the evidence table, its calibration and the queue threshold."""

from __future__ import annotations

import itertools
import math

import pytest

from gateway_server.detect import risk
from gateway_server.detect.risk import DEFAULT_MODEL, KindDay, KindEvidence, RiskModel
from gateway_server.detect.rules import residual as rd


def day(*kinds: str, severity: str = "high", d: int = 20_000, count: int = 1) -> list[KindDay]:
    return [KindDay(k, severity, d, count, i + 1, 0) for i, k in enumerate(kinds)]


def test_the_bound_holds_for_independent_kinds() -> None:
    """Every counted entry firing independently at its p (one honest world the model
    allows): the exact P(score ≥ s), by enumerating every subset, stays under the bound."""
    m = DEFAULT_MODEL
    entries = [k for k in m.table if k.p_day < m.observation_p]
    exact: dict[float, float] = {}
    for fired in itertools.product((False, True), repeat=len(entries)):
        prob, best = 1.0, {}
        for k, on in zip(entries, fired, strict=True):
            prob *= k.p_day if on else 1 - k.p_day
            if on:
                best[k.family] = max(best.get(k.family, 0.0), k.weight)
        s = round(sum(best.values()), 9)
        exact[s] = exact.get(s, 0.0) + prob
    for s in exact:
        tail = sum(q for t, q in exact.items() if t >= s - 1e-9)
        assert tail <= m.p_day(s) * (1 + 1e-9), (s, tail, m.p_day(s))


def test_a_product_at_the_threshold_is_not_enough() -> None:
    """Three independent kinds at 1 %: two of them multiply to 1e-4, but an honest scale
    shows some two of the three on 3e-4 of its days, so they do not enter."""
    t = tuple(KindEvidence(k, 0.01, k, "test") for k in ("a", "b", "c"))
    m = RiskModel(table=t)
    assert m.p_day(4.0) == pytest.approx(3 * 0.01**2 * 0.99 + 0.01**3, rel=1e-6)
    (s,) = m.score_days(day("a", "b"))
    assert s.score == pytest.approx(4.0) and s.p_day > m.alpha_day
    (s,) = m.score_days(day("a", "b", "c"))
    assert s.p_day == pytest.approx(1e-6) and s.p_day <= m.alpha_day


def test_threshold_and_honest_entry() -> None:
    m = DEFAULT_MODEL
    s_min = m.threshold_score()
    assert s_min is not None and m.p_day(s_min) <= m.alpha_day
    scores, _ = risk._tail(m)
    below = max(s for s in scores if s < s_min - 1e-9)
    assert m.p_day(below) > m.alpha_day  # the weakest admitted score is the threshold
    assert m.honest_entry_p_day() == m.p_day(s_min) <= m.alpha_day == 1e-4
    # conclusive single kinds enter alone, weak and ambiguous ones do not
    for kind in ("calibration-change", "k-factor-drift", "price-decimal-trick",
                 "untracked-sales"):
        (s,) = m.score_days(day(kind))
        assert s.p_day <= m.alpha_day, kind
    for kind in ("amount-mismatch", "tare-omission", "impact", "zero-offset", "reweigh-short",
                 "price-mismatch", "offline-trading-hours", "bad-signature"):
        assert all(s.p_day > m.alpha_day for s in m.score_days(day(kind))), kind


def test_residual_states_its_own_alpha() -> None:
    p = risk.residual_p_day()
    a = rd.DEFAULT_PARAMS.alpha
    assert p == pytest.approx(a / 2 * 5 / 150 + a / 2 / 365)
    assert risk.residual_p_day(rd.ResidualParams(alpha=a / 5)) == pytest.approx(p / 5)
    # its verdicts are one test: gain and additive on one day count once
    assert DEFAULT_MODEL.lookup("residual-gain", "high") is DEFAULT_MODEL.lookup(
        "residual-additive", "high")
    (s,) = DEFAULT_MODEL.score_days(day("residual-gain", "residual-additive"))
    assert s.score == pytest.approx(-math.log10(p))
    assert s.counted == ("residual-gain",)  # the finding's kind, as the pages name it


def test_what_weighs_nothing() -> None:
    m = DEFAULT_MODEL
    assert m.score_days(day("calibration-change", severity="info")) == []
    assert m.score_days(day("a-rule-without-a-stated-p")) == []
    assert m.score_days(day("scale-too-coarse", "impact", "zero-offset", "sequence-gap")) == []
    # a severity entry takes precedence over the kind's
    assert m.lookup("tare-omission", "high").p_day == 1e-3  # type: ignore[union-attr]
    assert m.lookup("tare-omission", "medium").p_day == 0.13  # type: ignore[union-attr]
    assert m.counts("tare-omission", "medium") is None  # a forgotten tray: an observation


def test_families_and_repeats_and_days() -> None:
    m = DEFAULT_MODEL
    (s,) = m.score_days(day("price-decimal-trick", "price-mismatch"))  # one unit price
    assert s.score == pytest.approx(5.0) and s.counted == ("price-decimal-trick",)
    (s,) = m.score_days(day("calibration-change", "k-factor-drift"))  # one seal
    assert s.score == pytest.approx(5.0)
    one = m.score_days(day("amount-mismatch"))
    many = m.score_days(day("amount-mismatch", count=40))
    assert one == many and one[0].score == pytest.approx(3.0)
    two_days = m.score_days(day("amount-mismatch", d=1) + day("tare-omission", d=2))
    assert [x.day for x in two_days] == [1, 2]
    assert all(x.p_day > m.alpha_day for x in two_days)
    (both,) = m.score_days(day("amount-mismatch") + day("tare-omission", severity="high"))
    assert both.score == pytest.approx(6.0) and both.p_day <= m.alpha_day
    assert both.evidence == pytest.approx(-math.log10(both.p_day))


def test_market_days_are_cst_calendar_days() -> None:
    start = risk.market_day_start_ms(20_000)
    assert risk.market_day(start) == 20_000
    assert risk.market_day(start - 1) == 19_999
    assert risk.market_day(start + risk.DAY_MS - 1) == 20_000
    assert start % risk.DAY_MS == risk.DAY_MS - 8 * 3_600_000  # 00:00 CST = 16:00 UTC
