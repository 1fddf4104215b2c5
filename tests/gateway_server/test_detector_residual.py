"""Re-weigh residual detector: legal envelope, false flags, cheats, invariances.

Every random test uses a fixed seed. Where a test asserts a rate, the bound leaves a margin
such that a fresh seed would fail with probability < 1e-6 (Chernoff bound noted per test).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gateway_server.detect.rules import residual as R
from weighing import metrology as mt

E5, E10 = 5_000, 10_000  # 15 kg / 5 g and 30 kg / 10 g selling scales (class III)
FAIR_E = 5_000  # fair scale 30 kg / 5 g
III = mt.AccuracyClass.III
MPE_IN = mt.Stage.IN_SERVICE


def _read(x: np.ndarray, e: int) -> np.ndarray:
    return (np.rint(x / e) * e).astype(np.int64)


def _mpe(load: np.ndarray, e: int) -> np.ndarray:
    ld = np.rint(load).astype(np.int64)
    return R.mpe2_mg_array(ld, np.full(ld.shape, e, np.int64), III, MPE_IN) / 2.0


def _batch(settled: np.ndarray, reference: np.ndarray, e: int = E5,
           params: R.ResidualParams = R.DEFAULT_PARAMS) -> R.BatchAssessment:
    g = np.repeat(np.arange(settled.shape[0]), settled.shape[1])
    env = R.envelope_mg_array(reference.ravel(), e_mg=e, accuracy_class=III,
                              reference_e_mg=FAIR_E)
    return R.assess_many(g, settled.ravel(), reference.ravel(), np.full(g.size, e), env,
                         params, n_groups=settled.shape[0])


def _goods(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return np.exp(rng.uniform(math.log(200_000), math.log(5_000_000), shape))


def _state(settled: np.ndarray, reference: np.ndarray, e: int = E5) -> R.ResidualState:
    return R.extend(R.ResidualState(), settled, reference, e_mg=e, reference_e_mg=FAIR_E,
                    accuracy_class=III)


# --- the legal envelope ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(mt.AccuracyClass))
@pytest.mark.parametrize("stage", list(mt.Stage))
@pytest.mark.parametrize("e", [1, 100, 1_000, 5_000, 10_000])
def test_vectorised_mpe_equals_the_exact_table_at_every_band_edge(cls, stage, e):
    edges = list(mt.band_edges_mg(e, cls))
    loads = sorted({0, 1, *edges, *(x + 1 for x in edges), *(x - 1 for x in edges)})
    end = mt.MPE_BANDS_E[cls][-1][0]
    if end is not None:  # one mg beyond the end of the table raises
        loads.remove(edges[-1] + 1)
        with pytest.raises(R.ResidualInputError):
            R.mpe2_mg_array(np.array([edges[-1] + 1]), np.array([e]), cls, stage)
    else:  # class I: no end
        loads.append(10 * edges[-1])
    got = R.mpe2_mg_array(np.array(loads, np.int64), np.full(len(loads), e, np.int64), cls, stage)
    want = [2 * mt.mpe_mg(x, e_mg=e, accuracy_class=cls, stage=stage) for x in loads]
    assert [Fraction(int(v)) for v in got] == want


def test_class_ii_fair_scale_envelope():
    """Issue 14 cause 3: a 15 kg / 1 g class II fair scale (n = 15,000) has MPE tables."""
    # selling 15 kg / 5 g (III): ±5 g + 2.5 g to 2.5 kg; fair (II, 1 g): ±1 g to 5 kg, +0.5 g
    # (4.99 kg: m⁺ = 4,993.5 g, still ±1 g; 4.997 kg: m⁺ is past 5 kg, ±2 g)
    env = R.envelope_mg_array([1_000_000, 4_990_000, 4_997_000, 6_000_000], e_mg=E5,
                              accuracy_class=III, reference_e_mg=1_000,
                              reference_accuracy_class="II")
    assert env.tolist() == [5_000 + 2_500 + 1_000 + 500, 10_000 + 2_500 + 1_000 + 500,
                            10_000 + 2_500 + 2_000 + 500, 10_000 + 2_500 + 2_000 + 500]
    # the class II scale as the selling scale (precious goods) and a class I reference
    st_ = R.update(R.ResidualState(), 100_010, 100_000, e_mg=10, accuracy_class="II",
                   reference_e_mg=1, reference_accuracy_class="I")
    # m⁺ = 100 g + 3.5 mg: II at 10,000.35 e → ±1 e in service ×2 = 20 mg; I at 100,003.5 e
    # → ±2 mg; plus 5 mg and 0.5 mg of rounding
    assert st_.envelope_mg.tolist() == [20 + 5 + 2 + 0.5]
    assert R.assess(st_).verdict is R.Verdict.INSUFFICIENT


def test_envelope_worked_examples():
    # 15 kg / 5 g selling, 30 kg / 5 g fair, both in service: at 1 kg ±5 g each plus 2 × 2.5 g.
    env = R.envelope_mg_array([1_000_000, 2_400_000, 2_490_000, 5_000_000], e_mg=E5,
                              accuracy_class=III, reference_e_mg=FAIR_E)
    assert env.tolist() == [15_000.0, 15_000.0, 25_000.0, 25_000.0]
    # 2.49 kg: the true mass may be up to 3 e + 0.5 e above the reading, into the 10 g band.
    # Standard weights (e = 0): only the selling scale's MPE + 0.5 e remains.
    exact = R.envelope_mg_array([1_000_000, 10_000_000, 15_000_000], e_mg=E5,
                                accuracy_class=III, reference_e_mg=0)
    assert exact.tolist() == [7_500.0, 12_500.0, 17_500.0]
    # 30 kg / 10 g (±10 / 20 / 30 g), fair 5 g: 5 kg + 17.5 g is in the 20 g band.
    env10 = R.envelope_mg_array([4_000_000, 6_000_000], e_mg=E10, accuracy_class=III,
                                reference_e_mg=FAIR_E)
    assert env10.tolist() == [10_000 + 5_000 + 10_000 + 2_500, 20_000 + 5_000 + 10_000 + 2_500]
    # half-mg envelopes are exact in float64
    odd = R.envelope_mg_array([1_000], e_mg=100, accuracy_class=III, reference_e_mg=0)
    assert odd.tolist() == [float(mt.mpe_mg(1_000, e_mg=100, accuracy_class=III, stage=MPE_IN)
                                  + mt.rounding_uncertainty_mg(100))]


@pytest.mark.parametrize("kwargs", [
    {"settled_mg": -1, "reference_mg": 1_000},
    {"settled_mg": 1_000, "reference_mg": -1},
    {"settled_mg": 60_000_000, "reference_mg": 1_000},  # beyond 10,000 e of a 5 g scale
    {"settled_mg": 1_000, "reference_mg": 60_000_000},
    {"settled_mg": 1_000, "reference_mg": 1_000, "e_mg": 0},
    {"settled_mg": 1_000, "reference_mg": 1_000, "reference_accuracy_class": "V"},
    {"settled_mg": 1_000, "reference_mg": 200_000_000, "reference_e_mg": 1_000,
     "reference_accuracy_class": "II"},  # beyond 100,000 e of a class II 1 g fair scale
    {"settled_mg": 1_000, "reference_mg": 1_000, "accuracy_class": "X"},
    {"settled_mg": 1_000, "reference_mg": 1_000, "e_mg": [5_000, 5_000]},
])
def test_bad_pairs_raise(kwargs):
    args = {"e_mg": E5, "reference_e_mg": FAIR_E, "accuracy_class": III} | kwargs
    with pytest.raises(R.ResidualInputError):
        R.update(R.ResidualState(), args.pop("settled_mg"), args.pop("reference_mg"), **args)


# --- insufficient data -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_few_pairs_are_insufficient_even_for_a_gross_cheat(n):
    st_ = R.ResidualState()
    for _ in range(n):
        st_ = R.update(st_, 1_500_000, 1_000_000, e_mg=E5, reference_e_mg=FAIR_E,
                       accuracy_class=III)
    a = R.assess(st_)
    assert a.verdict is R.Verdict.INSUFFICIENT and a.flagged_at is None and a.n == n


def test_one_violating_reweigh_is_judge_reweighs_job_not_this_detectors():
    # 1 kg of vegetables sold, 950 g at an equal-accuracy fair scale: 50 g > 2 × 20 g.
    j = mt.judge_reweigh(1_000_000, 950_000, method=mt.ReweighMethod.EQUAL_ACCURACY_SCALE,
                         category=mt.GoodsCategory.VEGETABLES)
    assert j.verdict is mt.ReweighVerdict.VIOLATION
    one = R.update(R.ResidualState(), 1_000_000, 950_000, e_mg=E5, reference_e_mg=FAIR_E,
                   accuracy_class=III)
    assert R.assess(one).verdict is R.Verdict.INSUFFICIENT


# --- honest scales: the false-flag rate --------------------------------------------------------


def _honest(kind: str, rng: np.random.Generator, n_merch: int, n_pairs: int, e: int):
    m = _goods(rng, (n_merch, n_pairs))
    noisy = m + rng.normal(0, e, m.shape)  # σ = 1 e, the default noise_sd_e
    if kind == "unbiased":
        return _read(m, e), _read(noisy, FAIR_E)
    if kind == "edge":
        return _read(m + _mpe(m, e), e), _read(noisy - _mpe(noisy, FAIR_E), FAIR_E)
    # "worst": every reading at the legal extreme including rounding
    mi, mr = np.rint(m), np.rint(noisy)
    return (np.rint(mi + _mpe(mi, e) + e / 2).astype(np.int64),
            np.rint(mr - _mpe(mr, FAIR_E) - FAIR_E / 2).astype(np.int64))


@pytest.mark.parametrize("kind", ["unbiased", "edge", "worst"])
@pytest.mark.parametrize("e", [E5, E10])
def test_honest_scales_within_mpe_are_flagged_at_most_at_the_stated_rate(kind, e):
    # α = 0.5 % per merchant (anytime valid). 4,000 merchants × 150 pairs: E[flags] ≤ 20;
    # P(Binomial(4000, 0.005) ≥ 50) < 1e-7 (Chernoff), so the bound 50 fails by chance < 1e-6.
    rng = np.random.default_rng({"unbiased": 1, "edge": 2, "worst": 3}[kind] * 100 + e)
    s, r = _honest(kind, rng, 4_000, 150, e)
    res = _batch(s, r, e)
    assert int((res.flagged_at > 0).sum()) <= 50
    assert set(res.verdicts()) <= {R.Verdict.HONEST, R.Verdict.GAIN, R.Verdict.ADDITIVE,
                                   R.Verdict.BOTH}


def test_pairs_exactly_on_the_envelope_never_flag():
    # An inspector's standard weights on a 15 kg / 5 g scale that reads +MPE at every load:
    # r = MPE exactly (< H = MPE + 0.5 e); 50 rounds of five test loads.
    loads = np.tile([500_000, 2_500_000, 5_000_000, 10_000_000, 15_000_000], 50)
    shown = loads + [int(mt.mpe_mg(int(x), e_mg=E5, accuracy_class=III, stage=MPE_IN))
                     for x in loads]
    st_ = R.extend(R.ResidualState(), shown, loads, e_mg=E5, reference_e_mg=0,
                   accuracy_class=III)
    a = R.assess(st_)
    assert a.verdict is R.Verdict.HONEST and a.flagged_at is None
    # Two e beyond the envelope at every load is found within a few rounds.
    st2 = R.extend(R.ResidualState(), shown + 2 * E5, loads, e_mg=E5, reference_e_mg=0,
                   accuracy_class=III)
    a2 = R.assess(st2)
    assert a2.verdict is not R.Verdict.HONEST and a2.flagged_at is not None
    assert a2.flagged_at <= 20


# --- cheats --------------------------------------------------------------------------------


def _cheat(rng, n_merch, n_pairs, *, gain=0.0, add=0.0, e=E5):
    m = _goods(rng, (n_merch, n_pairs))
    return _read(m * (1 + gain) + add, e), _read(m + rng.normal(0, e, m.shape), FAIR_E)


@pytest.mark.parametrize("e", [E5, E10])
def test_a_ten_percent_gain_cheat_is_found_and_typed_gain(e):
    s, r = _cheat(np.random.default_rng(10 + e), 500, 30, gain=0.10, e=e)
    res = _batch(s, r, e)
    assert (res.flagged_at > 0).all() and int(res.flagged_at.max()) <= 10
    assert np.mean(np.array(res.verdicts()) == R.Verdict.GAIN) >= 0.97  # measured 100 %
    assert abs(float(np.mean(res.b)) - 0.10) < 0.002 and np.all(np.abs(res.b - 0.10) < 0.015)


@pytest.mark.parametrize("e", [E5, E10])
def test_a_hundred_gram_additive_cheat_is_found_and_typed_additive(e):
    s, r = _cheat(np.random.default_rng(20 + e), 500, 30, add=100_000, e=e)
    res = _batch(s, r, e)
    assert (res.flagged_at > 0).all() and int(res.flagged_at.max()) <= 5
    assert np.mean(np.array(res.verdicts()) == R.Verdict.ADDITIVE) >= 0.97  # measured 100 %
    assert abs(float(np.mean(res.a_mg)) - 100_000) < 2_000  # se of the mean ≈ 0.3 g
    assert np.all(np.abs(res.a_mg - 100_000) < 40_000)


def test_gain_and_additive_together_are_typed_both():
    s, r = _cheat(np.random.default_rng(30), 200, 60, gain=0.10, add=100_000)
    res = _batch(s, r)
    assert np.mean(np.array(res.verdicts()) == R.Verdict.BOTH) >= 0.95


def test_single_merchant_api_gives_the_evidence():
    s, r = _cheat(np.random.default_rng(40), 1, 20, gain=0.10)
    st_ = R.ResidualState()
    for si, ri in zip(s[0].tolist(), r[0].tolist(), strict=True):
        st_ = R.update(st_, si, ri, e_mg=E5, reference_e_mg=FAIR_E, accuracy_class=III)
    a = R.assess(st_)
    assert a.verdict is R.Verdict.GAIN and a.n == 20 and a.flagged_at is not None
    assert a.z_b > 2 and a.b - a.bound_b > 2 * a.se_b
    assert len(a.worst) == 5
    excess = [p.excess_sd for p in a.worst]
    assert excess == sorted(excess, reverse=True)
    w = a.worst[0]
    assert w.residual_mg == w.settled_mg - w.reference_mg and w.residual_mg > w.envelope_mg
    assert a.load_range_mg == (int(r.min()), int(r.max()))


# --- invariances ---------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), gain=st.sampled_from([0.0, 0.10]))
def test_reordering_pairs_keeps_the_fit_the_score_and_a_clear_verdict(seed, gain):
    rng = np.random.default_rng(seed)
    s, r = _cheat(rng, 1, 40, gain=gain)
    base = R.assess(_state(s[0], r[0]))
    perm = rng.permutation(40)
    other = R.assess(_state(s[0][perm], r[0][perm]))
    for name in ("a_mg", "b", "z_a", "z_b", "score"):
        assert getattr(other, name) == pytest.approx(getattr(base, name), rel=1e-9, abs=1e-9)
    # The first-crossing index and the CUSUM depend on the order; the verdict of a clear case
    # (honest, or a +10 % cheat after 40 pairs) does not.
    assert other.verdict is base.verdict
    assert base.verdict is (R.Verdict.GAIN if gain else R.Verdict.HONEST)


def test_batch_equals_single_and_neighbours_do_not_matter():
    rng = np.random.default_rng(50)
    s, r = _cheat(rng, 3, 25, add=50_000)
    s[1], r[1] = _honest("edge", rng, 1, 25, E5)
    states = [_state(s[i], r[i]) for i in range(3)]
    batch = R.assess_states(states)
    for i, st_ in enumerate(states):
        one = R.assess(st_)
        assert batch.verdicts()[i] is one.verdict
        assert int(batch.flagged_at[i]) == (one.flagged_at or 0)
        assert float(batch.a_mg[i]) == pytest.approx(one.a_mg)
    # interleaving the merchants' pairs in the flat arrays changes nothing
    g = np.repeat(np.arange(3), 25)
    order = np.argsort(np.tile(np.arange(25), 3), kind="stable")
    env = np.concatenate([st_.envelope_mg for st_ in states])
    inter = R.assess_many(g[order], s.ravel()[order], r.ravel()[order],
                          np.full(75, E5)[order], env[order], n_groups=3)
    assert inter.verdicts() == batch.verdicts()
    assert np.array_equal(inter.flagged_at, batch.flagged_at)


@pytest.mark.parametrize("gain,add", [(0.0, 0.0), (0.05, 0.0), (0.0, 50_000)])
def test_scaling_all_masses_and_e_together_changes_nothing_but_a(gain, add):
    s, r = _cheat(np.random.default_rng(60), 1, 30, gain=gain, add=add)
    base = R.assess(_state(s[0], r[0]))
    k = 10  # e 5 g → 50 g (class III, e ≥ 5 g row); loads ≤ 50 kg = 1,000 e
    big = R.extend(R.ResidualState(), s[0] * k, r[0] * k, e_mg=E5 * k,
                   reference_e_mg=FAIR_E * k, accuracy_class=III)
    scaled = R.assess(big)
    assert np.array_equal(big.envelope_mg, _state(s[0], r[0]).envelope_mg * k)
    assert scaled.verdict is base.verdict and scaled.flagged_at == base.flagged_at
    assert scaled.b == pytest.approx(base.b) and scaled.a_mg == pytest.approx(base.a_mg * k)
    assert scaled.score == pytest.approx(base.score)


def test_update_one_by_one_equals_extend():
    s, r = _cheat(np.random.default_rng(70), 1, 12, gain=0.05)
    one = R.ResidualState()
    for si, ri in zip(s[0].tolist(), r[0].tolist(), strict=True):
        one = R.update(one, si, ri, e_mg=E5, reference_e_mg=FAIR_E, accuracy_class=III)
    many = _state(s[0], r[0])
    for name in ("settled_mg", "reference_mg", "e_mg", "envelope_mg"):
        assert np.array_equal(getattr(one, name), getattr(many, name))
    assert R.assess(one) == R.assess(many)


def test_boundary_is_the_normal_mixture_bound():
    p = R.DEFAULT_PARAMS
    a_main = p.alpha * (1 - p.cusum_share)
    c = R.mixture_boundary(np.array([10.0]), alpha=a_main, rho=p.mixture_rho)[0]
    v = 10 + p.mixture_rho
    # the half-normal mixture martingale at S = c is at least 1/α
    m = math.sqrt(p.mixture_rho / v) * math.exp(c * c / (2 * v))
    assert m == pytest.approx(1 / a_main)
    assert R.cusum_threshold(p) == pytest.approx(math.log(150 / (p.alpha * p.cusum_share)))
