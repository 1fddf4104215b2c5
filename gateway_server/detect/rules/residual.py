"""Statistical detector: re-weigh residuals per merchant (domain.md §4, derived rule 1).

Each pair is (``settled_mg`` as sold by the merchant's scale, ``reference_mg`` from a fair
scale 公平秤 or an inspector's test weights). The residual is ``r = settled − reference``.
Method (docs/detection.md "Statistical detector: re-weigh residuals"):

* Honest envelope per pair, exact from :mod:`weighing.metrology`:
  ``H = MPE_s(m⁺) + 0.5 e_s + MPE_r(m⁺) + 0.5 e_r`` (in-service MPEs, ±0.5 e rounding of
  both readings), with ``m⁺ = reference + MPE_r,max + 0.5 e_r`` an upper bound of the true
  mass (MPE grows with the load, so this is the worst case). Any honest scale pair, whatever
  its error curve inside the legal envelope, has ``E[r | load] ≤ H``.
* Flag test: ``Z = min((r − H − allowance) / σ, cap)`` where σ is the configured scale of the
  non-metrological noise (goods handling), a composite null ``E[Z] ≤ 0``, and the
  normal-mixture boundary of Robbins (1970) on ``S_n = ΣZ``: under the null
  ``P(∃n: S_n ≥ c(n)) ≤ α/2`` for all n (anytime valid). A CUSUM of ``λZ − λ²/2`` with a
  union bound over a horizon of N pairs spends the other α/2 and catches on/off cheats.
* Type: weighted least squares ``r = a + b·reference``. The most an honest envelope can put
  into the estimates is ``B_a = Σ|c_i|H_i`` and ``B_b = Σ|d_i|H_i`` (``â = Σc_i r_i``,
  ``b̂ = Σd_i r_i``); ``z = (estimate − B) / se``. Gain if ``z_b`` is significant, additive
  if ``z_a`` is, both if both; otherwise the better one-parameter fit decides.

Rules of this module: pure (no I/O, clock, logging); masses are integer mg and the envelope
is computed in exact integer arithmetic (2H is an integer number of mg, so its float64 copy
is exact); statistics are float64. A single pair against the retail deviation is a separate
rule, :func:`weighing.metrology.judge_reweigh`; it is not repeated here.

Why one module (≈500 lines, over the house ~400): it is one test, and its parts are not
separable without splitting an invariant. The envelope's exact integer 2H, the state's
running sums and the batch assessment's sequential boundary and fit are written against
each other (the batch assessment must give what ``assess`` gives, merchant by merchant;
test_detector_residual.py checks it), ``ResidualParams`` feeds all of them, and
docs/detection.md "Statistical detector" describes them as one method in this module's
order (the ``# ---`` sections below). Callers use it as one namespace (``rd.update``,
``rd.assess``, ``rd.envelope_mg_array`` in residual_scan, risk, the bench
and the tests); split, each would import three modules for one test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from weighing import metrology as mt
from weighing.errors import GatewayError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class ResidualInputError(GatewayError, ValueError):
    """A pair cannot be judged: negative mass, e ≤ 0, or a load beyond the MPE table."""


class Verdict(StrEnum):
    """Outcome per merchant (or scale)."""

    INSUFFICIENT = "insufficient"  # fewer than ``min_pairs`` pairs
    HONEST = "honest"  # no evidence beyond the honest envelope
    GAIN = "gain"  # multiplicative: remote gears, cheat chip +10 %, re-calibration
    ADDITIVE = "additive"  # constant: preset base, tray not tared, +0.1 kg keys
    BOTH = "both"


VERDICTS: tuple[Verdict, ...] = tuple(Verdict)
_V = {v: i for i, v in enumerate(VERDICTS)}


@dataclass(frozen=True)
class ResidualParams:
    """Statistical settings. None is a legal quantity; the legal ones come from metrology."""

    alpha: float = 0.005  # false flags per honest merchant per month: issue 7 target [config]
    cusum_share: float = 0.5  # part of alpha spent on the CUSUM; 0 disables it [config]
    cusum_horizon_pairs: int = 150  # CUSUM alpha holds per this many pairs (5/day × 30) [config]
    cusum_lambda: float = 1.0  # CUSUM tuned to a mean excess of ~λ σ per pair [config]
    mixture_rho: float = 1.0  # normal-mixture prior precision; tightest near n ≈ 10 [config]
    noise_sd_e: float = 1.0  # non-metrological noise, sd in e of the selling scale [L]
    noise_sd_rel: float = 0.0  # … plus this share of the load (goods change) [L]
    allowance_rel: float = 0.0  # honest one-sided drift, e.g. drying goods, share of load [L]
    excess_cap_sd: float = 4.0  # one pair adds at most this much evidence (outliers) [config]
    min_pairs: int = 3  # fewer pairs: "insufficient" (a line needs 3 for its residual) [config]
    attribution_z: float = 2.0  # a / b beyond the envelope bound by this many se [config]
    worst_k: int = 5  # worst pairs shown as evidence

    def __post_init__(self) -> None:
        if not (0 < self.alpha < 1 and 0 <= self.cusum_share < 1 and self.min_pairs >= 1):
            raise ValueError("alpha in (0, 1), cusum_share in [0, 1), min_pairs ≥ 1")
        if min(self.noise_sd_e, self.excess_cap_sd, self.mixture_rho, self.cusum_lambda) <= 0:
            raise ValueError("noise, cap, rho and lambda must be positive")


DEFAULT_PARAMS = ResidualParams()

# --- exact envelope ------------------------------------------------------------------------


def mpe2_mg_array(
    load_mg: IntArray, e_mg: IntArray, cls: mt.AccuracyClass, stage: mt.Stage
) -> IntArray:
    """2 × MPE in integer mg, vectorised: equals ``2 * mt.mpe_mg(...)`` exactly (the table,
    ``mt.MPE_BANDS_E`` and ``mt.STAGE_FACTOR``, is in halves of e; the lower band owns its
    edge). All four classes (JJG 539 / OIML R76-1 Table 6; class I has no end). Raises
    :class:`ResidualInputError` beyond the table."""
    bands = mt.MPE_BANDS_E[mt.AccuracyClass(cls)]
    factor = mt.STAGE_FACTOR[stage]
    out = np.zeros(load_mg.shape, dtype=np.int64)
    done = np.zeros(load_mg.shape, dtype=bool)
    for upper_e, mpe_e in bands:
        twice = 2 * mpe_e * factor
        if twice.denominator != 1:  # pragma: no cover - the tables are in halves of e
            raise AssertionError("MPE table not in halves of e")
        here = ~done if upper_e is None else ~done & (load_mg <= upper_e * e_mg)
        out[here] = int(twice) * e_mg[here]
        done |= here
    if not done.all():
        raise ResidualInputError(f"load beyond {bands[-1][0]} e, the end of the class {cls} table")
    return out


def _table_end_mg(cls: mt.AccuracyClass, e_mg: IntArray) -> IntArray | None:
    """The end of the class's MPE table in mg per pair (None: class I, no end)."""
    top_e = mt.MPE_BANDS_E[cls][-1][0]
    return None if top_e is None else top_e * e_mg


def envelope_mg_array(
    reference_mg: npt.ArrayLike,
    *,
    e_mg: npt.ArrayLike,
    accuracy_class: mt.AccuracyClass | str,
    reference_e_mg: npt.ArrayLike,
    reference_accuracy_class: mt.AccuracyClass | str = mt.AccuracyClass.III,
    reference_stage: mt.Stage = mt.Stage.IN_SERVICE,
) -> FloatArray:
    """Honest envelope H per pair in mg (float64, exact: 2H is an integer).

    Classes I–IIII on either side (JJG 539 / OIML R76-1 Table 6 via ``weighing.metrology``).
    ``reference_e_mg == 0`` marks an exact reference (an inspector's standard weights):
    it contributes neither MPE nor rounding.
    """
    try:
        cls_s = mt.AccuracyClass(accuracy_class)
        cls_r = mt.AccuracyClass(reference_accuracy_class)
        ref = np.asarray(reference_mg, dtype=np.int64)
        e_s = np.broadcast_to(np.asarray(e_mg, dtype=np.int64), ref.shape)
        e_r = np.broadcast_to(np.asarray(reference_e_mg, dtype=np.int64), ref.shape)
    except ValueError as err:
        raise ResidualInputError(f"bad pair description: {err}") from err
    if (ref < 0).any() or (e_s <= 0).any() or (e_r < 0).any():
        raise ResidualInputError("masses must not be negative and e must be positive")
    exact = e_r == 0
    e_r_safe = np.where(exact, 1, e_r)
    top_s, top_r = _table_end_mg(cls_s, e_s), _table_end_mg(cls_r, e_r_safe)
    if top_r is not None and (~exact & (ref > top_r)).any():
        raise ResidualInputError(
            f"reference load beyond {mt.MPE_BANDS_E[cls_r][-1][0]} e of the reference scale")
    if top_s is not None and (ref > top_s).any():
        raise ResidualInputError(
            f"load beyond {mt.MPE_BANDS_E[cls_s][-1][0]} e of the selling scale")
    # m⁺: the true mass is at most reference + max in-service MPE + 0.5 e of the reference.
    max_mpe2_r = int(2 * mt.MPE_BANDS_E[cls_r][-1][1] * mt.STAGE_FACTOR[reference_stage])
    m_hi = ref + (max_mpe2_r * e_r + e_r + 1) // 2
    # a load above the table end cannot be on the scale
    m_hi_s = m_hi if top_s is None else np.minimum(m_hi, top_s)
    twice = mpe2_mg_array(m_hi_s, e_s, cls_s, mt.Stage.IN_SERVICE) + e_s  # 2 (MPE_s + 0.5 e_s)
    m_hi_r = m_hi if top_r is None else np.minimum(m_hi, top_r)
    twice += np.where(exact, 0, mpe2_mg_array(m_hi_r, e_r_safe, cls_r, reference_stage) + e_r)
    return twice.astype(np.float64) / 2.0


# --- state ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ResidualState:
    """The pairs of one merchant (or scale), in arrival order. Immutable; grow with update."""

    settled_mg: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    reference_mg: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    e_mg: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    envelope_mg: FloatArray = field(default_factory=lambda: np.zeros(0, np.float64))

    @property
    def n(self) -> int:
        return int(self.settled_mg.shape[0])


def update(
    state: ResidualState,
    settled_mg: int,
    reference_mg: int,
    *,
    e_mg: int,
    reference_e_mg: int | None,
    accuracy_class: mt.AccuracyClass | str,
    reference_accuracy_class: mt.AccuracyClass | str = mt.AccuracyClass.III,
    reference_stage: mt.Stage = mt.Stage.IN_SERVICE,
) -> ResidualState:
    """Return a new state with one more pair. ``reference_e_mg=None``: standard weights."""
    return extend(
        state, [settled_mg], [reference_mg], e_mg=e_mg,
        reference_e_mg=0 if reference_e_mg is None else reference_e_mg,
        accuracy_class=accuracy_class, reference_accuracy_class=reference_accuracy_class,
        reference_stage=reference_stage,
    )


def extend(
    state: ResidualState,
    settled_mg: npt.ArrayLike,
    reference_mg: npt.ArrayLike,
    *,
    e_mg: npt.ArrayLike,
    reference_e_mg: npt.ArrayLike,
    accuracy_class: mt.AccuracyClass | str,
    reference_accuracy_class: mt.AccuracyClass | str = mt.AccuracyClass.III,
    reference_stage: mt.Stage = mt.Stage.IN_SERVICE,
) -> ResidualState:
    """Append many pairs at once (arrays; ``reference_e_mg`` 0 = standard weights)."""
    s = np.atleast_1d(np.asarray(settled_mg, dtype=np.int64))
    r = np.atleast_1d(np.asarray(reference_mg, dtype=np.int64))
    if s.shape != r.shape or (s < 0).any():
        raise ResidualInputError("settled and reference must match and not be negative")
    env = envelope_mg_array(
        r, e_mg=e_mg, accuracy_class=accuracy_class, reference_e_mg=reference_e_mg,
        reference_accuracy_class=reference_accuracy_class, reference_stage=reference_stage,
    )
    cls = mt.AccuracyClass(accuracy_class)  # envelope_mg_array has checked it
    e = np.broadcast_to(np.asarray(e_mg, dtype=np.int64), r.shape)
    top_s = _table_end_mg(cls, e)
    if top_s is not None and (s > top_s).any():
        raise ResidualInputError(
            f"settled weight beyond {mt.MPE_BANDS_E[cls][-1][0]} e of the selling scale")
    return ResidualState(
        np.concatenate([state.settled_mg, s]), np.concatenate([state.reference_mg, r]),
        np.concatenate([state.e_mg, e]), np.concatenate([state.envelope_mg, env]),
    )


# --- batch assessment ----------------------------------------------------------------------


def mixture_boundary(v: FloatArray | float, *, alpha: float, rho: float) -> FloatArray:
    """Robbins' normal-mixture boundary: P(∃n: S_n ≥ c(V_n)) ≤ alpha for a 1-sub-Gaussian
    (per unit of V) supermartingale increment with E ≤ 0 (one-sided use of the two-sided form,
    valid because only λ ≥ 0 is needed; Howard et al. 2021)."""
    vr = np.asarray(v, dtype=np.float64) + rho
    return np.sqrt(2.0 * vr * np.log(np.sqrt(vr / rho) / alpha))


def cusum_threshold(params: ResidualParams) -> float:
    """ln(N / α_c): union bound over N start points of Ville's inequality."""
    return math.log(params.cusum_horizon_pairs / (params.alpha * params.cusum_share))


@dataclass(frozen=True, eq=False)
class BatchAssessment:
    """Per-merchant arrays (index = merchant/group id). ``verdict`` holds indices into
    :data:`VERDICTS`; ``flagged_at`` is the pair count when the flag was first raised, 0 if
    never."""

    n: IntArray
    verdict: IntArray
    flagged_at: IntArray
    score: FloatArray  # S_n = ΣZ
    boundary: FloatArray  # c(n) at the current n
    cusum: FloatArray  # current CUSUM value
    cusum_max: FloatArray
    a_mg: FloatArray
    b: FloatArray
    se_a_mg: FloatArray
    se_b: FloatArray
    bound_a_mg: FloatArray
    bound_b: FloatArray
    z_a: FloatArray
    z_b: FloatArray
    sse_add: FloatArray  # weighted SSE of r = a alone
    sse_gain: FloatArray  # weighted SSE of r = b·w alone
    attributed_by_test: npt.NDArray[np.bool_]  # False: the one-parameter fit comparison decided

    def verdicts(self) -> list[Verdict]:
        return [VERDICTS[i] for i in self.verdict.tolist()]


def assess_many(
    group: npt.ArrayLike,
    settled_mg: npt.ArrayLike,
    reference_mg: npt.ArrayLike,
    e_mg: npt.ArrayLike,
    envelope_mg: npt.ArrayLike,
    params: ResidualParams = DEFAULT_PARAMS,
    *,
    n_groups: int | None = None,
) -> BatchAssessment:
    """Assess many merchants at once (``group`` = merchant index per pair, 0…G−1).

    Pairs of one group are taken in array order; groups may be interleaved. ``envelope_mg``
    comes from :func:`envelope_mg_array` (or a state), so mixed classes are fine.
    """
    g = np.asarray(group, dtype=np.int64)
    arrays = [np.asarray(x) for x in (settled_mg, reference_mg, e_mg, envelope_mg)]
    if any(x.shape != g.shape for x in arrays):
        raise ResidualInputError("group, settled, reference, e and envelope must match")
    order = np.argsort(g, kind="stable")
    g = g[order]
    ngr = int(n_groups if n_groups is not None else (g.max() + 1 if g.size else 0))
    s, ref_i = (x.astype(np.int64)[order] for x in arrays[:2])
    w = ref_i.astype(np.float64)
    e = arrays[2].astype(np.float64)[order]
    h = arrays[3].astype(np.float64)[order] + params.allowance_rel * w
    r = (s - ref_i).astype(np.float64)  # exact integer difference, then float
    sigma = np.hypot(params.noise_sd_e * e, params.noise_sd_rel * w)
    z = np.minimum((r - h) / sigma, params.excess_cap_sd)
    counts = np.bincount(g, minlength=ngr).astype(np.int64)
    seq = _sequential(g, counts, z, params)
    fit = _fit(g, ngr, w, r, h, sigma)
    gain_sig = fit["z_b"] > params.attribution_z
    add_sig = fit["z_a"] > params.attribution_z
    by_fit = np.where(fit["sse_gain"] < fit["sse_add"], _V[Verdict.GAIN], _V[Verdict.ADDITIVE])
    typed = np.select(
        [gain_sig & add_sig, gain_sig, add_sig],
        [_V[Verdict.BOTH], _V[Verdict.GAIN], _V[Verdict.ADDITIVE]], by_fit,
    )
    verdict = np.where(
        counts < params.min_pairs, _V[Verdict.INSUFFICIENT],
        np.where(seq["flagged_at"] > 0, typed, _V[Verdict.HONEST]),
    ).astype(np.int64)
    alpha_main = params.alpha * (1.0 - params.cusum_share)
    return BatchAssessment(
        n=counts, verdict=verdict,
        boundary=mixture_boundary(counts.astype(np.float64), alpha=alpha_main,
                                  rho=params.mixture_rho),
        attributed_by_test=gain_sig | add_sig, **seq, **fit,
    )


def _sequential(
    g: IntArray, counts: IntArray, z: FloatArray, params: ResidualParams
) -> dict[str, Any]:
    """First crossing of the mixture boundary or the CUSUM threshold, per group.

    The groups are laid out as rows of a (G, max n) grid, padded with zeros after their end;
    cumulative sums along the rows are the paths S_n and the CUSUM (P_n − min(0, min P_j)).
    """
    ngr = counts.shape[0]
    width = int(counts.max()) if g.size else 0
    if width == 0:
        zero = np.zeros(ngr)
        return {"flagged_at": np.zeros(ngr, np.int64), "score": zero, "cusum": zero,
                "cusum_max": zero}
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    grid = np.zeros((ngr, width))
    grid[g, np.arange(g.size) - starts[g]] = z
    valid = np.arange(width)[None, :] < counts[:, None]
    k = np.arange(1, width + 1, dtype=np.float64)[None, :]
    alpha_main = params.alpha * (1.0 - params.cusum_share)
    path = np.cumsum(grid, axis=1)
    eligible = valid & (k >= params.min_pairs)
    cross = eligible & (path >= mixture_boundary(k, alpha=alpha_main, rho=params.mixture_rho))
    lam = params.cusum_lambda
    cpath = np.cumsum(np.where(valid, lam * grid - lam * lam / 2.0, 0.0), axis=1)
    cus = cpath - np.minimum(np.minimum.accumulate(cpath, axis=1), 0.0)
    if params.cusum_share > 0:
        cross |= eligible & (cus >= cusum_threshold(params))
    rows, last = np.arange(ngr), np.maximum(counts - 1, 0)
    return {
        "flagged_at": np.where(cross.any(axis=1), cross.argmax(axis=1) + 1, 0).astype(np.int64),
        "score": path[rows, last], "cusum": cus[rows, last],
        "cusum_max": np.where(valid, cus, 0.0).max(axis=1),
    }


def _fit(
    g: IntArray, ngr: int, w: FloatArray, r: FloatArray, h: FloatArray, sigma: FloatArray
) -> dict[str, Any]:
    """WLS r = a + b w per group (weights 1/σ²), envelope bounds and one-parameter fits."""

    def gsum(x: FloatArray) -> FloatArray:
        return np.bincount(g, weights=x, minlength=ngr).astype(np.float64)

    om = 1.0 / sigma**2
    s0 = gsum(om)
    safe0 = np.where(s0 > 0, s0, 1.0)
    wbar = gsum(om * w) / safe0
    dw = w - wbar[g]
    sxx = gsum(om * dw * dw)
    ok = sxx > 1e-9 * np.maximum(gsum(om * w * w), 1.0)  # loads not all equal
    safe_sxx = np.where(ok, sxx, 1.0)
    d = np.where(ok[g], om * dw / safe_sxx[g], 0.0)  # b̂ = Σ d_i r_i
    c = om / safe0[g] - wbar[g] * d  # â = Σ c_i r_i
    b = gsum(d * r)
    a = gsum(c * r)
    n = np.bincount(g, minlength=ngr)
    resid = r - a[g] - b[g] * w
    dof = n - np.where(ok, 2, 1)
    s2 = np.where(dof > 0, gsum(om * resid * resid) / np.maximum(dof, 1), 1.0)
    infl = np.sqrt(np.maximum(s2, 1.0))  # honest non-linearity or on/off widen the se
    se_a = infl * np.sqrt(gsum(c * c * sigma**2))
    se_b = np.where(ok, infl * np.sqrt(gsum(d * d * sigma**2)), np.inf)
    bound_a, bound_b = gsum(np.abs(c) * h), gsum(np.abs(d) * h)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_a = np.where(se_a > 0, (a - bound_a) / se_a, -np.inf)
        z_b = np.where(ok, (b - bound_b) / se_b, -np.inf)
    a0 = gsum(om * r) / safe0
    sww = gsum(om * w * w)
    b0 = gsum(om * w * r) / np.where(sww > 0, sww, 1.0)
    sse_add = gsum(om * (r - a0[g]) ** 2)
    sse_gain = gsum(om * (r - b0[g] * w) ** 2)
    return {
        "a_mg": a, "b": np.where(ok, b, np.nan), "se_a_mg": se_a, "se_b": se_b,
        "bound_a_mg": bound_a, "bound_b": np.where(ok, bound_b, np.nan), "z_a": z_a,
        "z_b": z_b, "sse_add": sse_add, "sse_gain": sse_gain,
    }


def assess_states(
    states: Sequence[ResidualState], params: ResidualParams = DEFAULT_PARAMS
) -> BatchAssessment:
    """:func:`assess_many` over stored states (index i = ``states[i]``)."""
    group = np.repeat(np.arange(len(states), dtype=np.int64), [st.n for st in states])

    def cat(name: str) -> npt.NDArray[Any]:
        return np.concatenate([getattr(st, name) for st in states] or [np.zeros(0)])

    return assess_many(group, cat("settled_mg"), cat("reference_mg"), cat("e_mg"),
                       cat("envelope_mg"), params, n_groups=len(states))


# --- single merchant -----------------------------------------------------------------------


@dataclass(frozen=True)
class PairEvidence:
    """One pair as an inspector sees it (index = arrival order, 0-based)."""

    index: int
    settled_mg: int
    reference_mg: int
    residual_mg: int
    envelope_mg: float  # honest ±H at this load (exact, half-mg)
    excess_sd: float  # (residual − H) / σ, before the cap


@dataclass(frozen=True)
class Assessment:
    """Verdict and the evidence behind it for one merchant (or scale)."""

    verdict: Verdict
    n: int
    flagged_at: int | None  # pairs seen when the flag was first raised
    a_mg: float
    se_a_mg: float
    bound_a_mg: float  # most an honest envelope can put into â
    z_a: float
    b: float  # relative gain (0.10 = +10 %); nan if all loads are equal
    se_b: float
    bound_b: float
    z_b: float
    attributed_by_test: bool
    score: float
    boundary: float
    cusum: float
    cusum_threshold: float
    load_range_mg: tuple[int, int] | None
    worst: tuple[PairEvidence, ...]


def assess(state: ResidualState, params: ResidualParams = DEFAULT_PARAMS) -> Assessment:
    """Assess one merchant: :func:`assess_many` on one group, plus the worst pairs."""
    n = state.n
    batch = assess_many(np.zeros(n, np.int64), state.settled_mg, state.reference_mg,
                        state.e_mg, state.envelope_mg, params, n_groups=1)
    res = state.settled_mg - state.reference_mg
    w = state.reference_mg.astype(np.float64)
    sigma = np.hypot(params.noise_sd_e * state.e_mg, params.noise_sd_rel * w)
    excess = (res - state.envelope_mg - params.allowance_rel * w) / sigma
    top = np.argsort(-excess, kind="stable")[: params.worst_k]
    worst = tuple(
        PairEvidence(int(i), int(state.settled_mg[i]), int(state.reference_mg[i]),
                     int(res[i]), float(state.envelope_mg[i]), float(excess[i]))
        for i in top
    )

    def f(x: Sequence[float] | npt.NDArray[Any]) -> float:
        return float(x[0])

    return Assessment(
        verdict=batch.verdicts()[0], n=n,
        flagged_at=int(batch.flagged_at[0]) or None,
        a_mg=f(batch.a_mg), se_a_mg=f(batch.se_a_mg), bound_a_mg=f(batch.bound_a_mg),
        z_a=f(batch.z_a), b=f(batch.b), se_b=f(batch.se_b), bound_b=f(batch.bound_b),
        z_b=f(batch.z_b), attributed_by_test=bool(batch.attributed_by_test[0]),
        score=f(batch.score), boundary=f(batch.boundary), cusum=f(batch.cusum),
        cusum_threshold=cusum_threshold(params),
        load_range_mg=(int(state.reference_mg.min()), int(state.reference_mg.max())) if n else None,
        worst=worst,
    )
