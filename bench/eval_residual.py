"""Operating characteristics of the re-weigh residual detector
(gateway_server.detect.rules.residual).

Simulated merchants, numpy vectorised, seeded. Assumptions (also in docs/detection.md):

* Goods: true mass log-uniform on 0.2–5 kg, independent from pair to pair.
* Selling scales: class III 15 kg / e = 5 g and 30 kg / e = 10 g. Fair scale (公平秤):
  class III 30 kg / e = 5 g, judged at its in-service MPE. Every reading is rounded to its e.
* Re-weighs: each merchant has a rate of 1–5 re-weighs per day (uniform), for 30 days, so a
  month is 30–150 pairs; delays are measured on 150 pairs.
* Non-metrological noise ("noise σ"): the goods' mass seen by the fair scale differs from the
  mass sold by N(0, σ) with σ = ``noise_sd_e`` · e of the selling scale (the model's σ).
* Honest variants put the scale errors where the law allows the worst (see docs); cheats sit
  on an unbiased selling scale with noise σ.

Prints the Markdown table and writes it into docs/detection.md between the markers
``<!-- residual-eval:start -->`` and ``<!-- residual-eval:end -->``.
Run: ``python bench/eval_residual.py [--quick]``.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import SupportsFloat

import numpy as np

from gateway_server.detect.rules import residual as R
from weighing import metrology as mt

DOC = Path(__file__).resolve().parent.parent / "docs" / "detection.md"
START, END = "<!-- residual-eval:start -->", "<!-- residual-eval:end -->"
SEED = 20_240_601
HORIZON = 150  # pairs simulated per merchant (5 re-weighs/day × 30 days)
DAYS = 30
FAIR_E_MG, FAIR_MAX_MG = 5_000, 30_000_000
SCALES = {"15 kg / 5 g": (15_000_000, 5_000), "30 kg / 10 g": (30_000_000, 10_000)}
LO_MG, HI_MG = 200_000, 5_000_000
N_HONEST, N_CHEAT = 20_000, 2_000
PARAMS = R.DEFAULT_PARAMS
DRY = R.ResidualParams(allowance_rel=0.003)  # goods that dry: 0.3 % one-sided allowance
NO_CUSUM = R.ResidualParams(cusum_share=0.0)
CLS = mt.AccuracyClass.III

Array = np.ndarray


def mpe(load_mg: Array, e_mg: int) -> Array:
    """In-service MPE (mg, float) of a class III scale, from the exact table."""
    load = np.clip(np.rint(load_mg).astype(np.int64), 0, None)
    e = np.full(load.shape, e_mg, np.int64)
    return R.mpe2_mg_array(load, e, CLS, mt.Stage.IN_SERVICE) / 2.0


def span_limit(max_mg: int, e_mg: int) -> float:
    """Largest pure span error β (error = β·m) inside the in-service MPE at every load ≤ Max."""
    edges = [u * e_mg for u, _ in mt.MPE_BANDS_E[CLS] if u is not None and u * e_mg < max_mg]
    edges.append(max_mg)
    return min(
        float(mt.mpe_mg(x, e_mg=e_mg, accuracy_class=CLS, stage=mt.Stage.IN_SERVICE)) / x
        for x in edges
    )


def read(x: Array, e_mg: int) -> Array:
    return (np.rint(x / e_mg) * e_mg).astype(np.int64)


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # honest | gain | additive | both
    make: Callable[[np.random.Generator, Array, int, int], tuple[Array, Array]]
    params: R.ResidualParams = PARAMS


def _noise(rng: np.random.Generator, m: Array, e_s: int, k: float = 1.0) -> Array:
    return m + rng.normal(0.0, k * PARAMS.noise_sd_e * e_s, m.shape)


def honest_plain(rng: np.random.Generator, m: Array, e_s: int, max_s: int) -> tuple[Array, Array]:
    return read(m, e_s), read(m, FAIR_E_MG)


def honest_noise(rng: np.random.Generator, m: Array, e_s: int, max_s: int) -> tuple[Array, Array]:
    return read(m, e_s), read(_noise(rng, m, e_s), FAIR_E_MG)


def honest_edge(k: float = 1.0, dry: float = 0.0) -> Callable[..., tuple[Array, Array]]:
    def make(rng: np.random.Generator, m: Array, e_s: int, max_s: int) -> tuple[Array, Array]:
        mr = _noise(rng, m, e_s, k) * (1.0 - dry)
        return read(m + mpe(m, e_s), e_s), read(mr - mpe(mr, FAIR_E_MG), FAIR_E_MG)
    return make


def honest_span(rng: np.random.Generator, m: Array, e_s: int, max_s: int) -> tuple[Array, Array]:
    bs, br = span_limit(max_s, e_s), span_limit(FAIR_MAX_MG, FAIR_E_MG)
    mr = _noise(rng, m, e_s)
    return read(m * (1 + bs), e_s), read(mr * (1 - br), FAIR_E_MG)


def honest_worst(rng: np.random.Generator, m: Array, e_s: int, max_s: int) -> tuple[Array, Array]:
    """Every reading at the legal extreme: +MPE + 0.5 e (selling), −MPE − 0.5 e (fair)."""
    mi = np.rint(m)
    mr = np.rint(_noise(rng, mi, e_s))
    s = mi + mpe(mi, e_s) + e_s / 2
    r = mr - mpe(mr, FAIR_E_MG) - FAIR_E_MG / 2
    return np.rint(s).astype(np.int64), np.rint(r).astype(np.int64)


def cheat(
    gain: float = 0.0, add_mg: float = 0.0, on_off: bool = False
) -> Callable[..., tuple[Array, Array]]:
    def make(rng: np.random.Generator, m: Array, e_s: int, max_s: int) -> tuple[Array, Array]:
        on = np.ones(m.shape, bool)
        if on_off:  # Markov switch: P(switch) = 0.1 per pair, on half of the time
            flips = rng.random(m.shape) < 0.1
            start = rng.random((m.shape[0], 1)) < 0.5
            on = (np.cumsum(flips, axis=1) + start) % 2 == 1
        shown = np.where(on, m * (1 + gain) + add_mg, m)
        return read(shown, e_s), read(_noise(rng, m, e_s), FAIR_E_MG)
    return make


HONEST = [
    Scenario("honest: unbiased, rounding only", "honest", honest_plain),
    Scenario("honest: unbiased + noise σ", "honest", honest_noise),
    Scenario("honest: bias at MPE edge (selling +, fair −) + noise σ", "honest", honest_edge()),
    Scenario("honest: span error at legal limit (selling +, fair −) + noise σ", "honest",
             honest_span),
    Scenario("honest: every reading at MPE + 0.5 e (null's edge) + noise σ", "honest",
             honest_worst),
    Scenario("outside model: edge bias + noise 2σ", "honest", honest_edge(k=2.0)),
    Scenario("outside model: edge bias + noise σ + goods dry 0.3 %", "honest",
             honest_edge(dry=0.003)),
    Scenario("same, with allowance_rel = 0.3 %", "honest", honest_edge(dry=0.003), DRY),
]
CHEATS = [
    Scenario("gain +2 %", "gain", cheat(gain=0.02)),
    Scenario("gain +5 %", "gain", cheat(gain=0.05)),
    Scenario("gain +10 %", "gain", cheat(gain=0.10)),
    Scenario("gain +10 %, remote on/off (half the time)", "gain", cheat(gain=0.10, on_off=True)),
    Scenario("same, without the CUSUM (cusum_share = 0)", "gain",
             cheat(gain=0.10, on_off=True), NO_CUSUM),
    Scenario("additive +50 g", "additive", cheat(add_mg=50_000)),
    Scenario("additive +100 g", "additive", cheat(add_mg=100_000)),
    Scenario("both: +5 % and +50 g", "both", cheat(gain=0.05, add_mg=50_000)),
    Scenario("gain +2 %, with allowance_rel = 0.3 %", "gain", cheat(gain=0.02), DRY),
]


def clopper_pearson_upper(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided upper bound p with P(X ≤ k; n, p) = 1 − conf, by bisection (no scipy)."""
    if k >= n:
        return 1.0

    def cdf(p: float) -> float:
        if p <= 0:
            return 1.0
        lp, lq = math.log(p), math.log1p(-p)
        return sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                            + i * lp + (n - i) * lq) for i in range(k + 1))

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - conf else (lo, mid)
    return hi


def run(sc: Scenario, scale: str, n_merch: int, rng: np.random.Generator) -> dict[str, object]:
    max_s, e_s = SCALES[scale]
    m = np.exp(rng.uniform(math.log(LO_MG), math.log(HI_MG), (n_merch, HORIZON)))
    settled, reference = sc.make(rng, m, e_s, max_s)
    month = DAYS * rng.integers(1, 6, n_merch)  # 1–5 re-weighs a day for 30 days
    group = np.repeat(np.arange(n_merch), HORIZON)
    env = R.envelope_mg_array(reference.ravel(), e_mg=e_s, accuracy_class=CLS,
                              reference_e_mg=FAIR_E_MG)
    args = (settled.ravel(), reference.ravel(), np.full(group.size, e_s), env)
    full = R.assess_many(group, *args, sc.params, n_groups=n_merch)
    at = full.flagged_at
    in_month = (at > 0) & (at <= month)
    out: dict[str, object] = {"scenario": sc.name, "scale": scale, "n": n_merch,
                              "flag_month": in_month.mean()}
    if sc.kind == "honest":
        out["flags"] = int(in_month.sum())
        out["ffr_upper"] = clopper_pearson_upper(int(in_month.sum()), n_merch)
        out["flag_150"] = (at > 0).mean()
        return out
    delay = np.where(at > 0, at, np.inf)
    out |= {"median": np.quantile(delay, 0.5, method="inverted_cdf"),
            "p90": np.quantile(delay, 0.9, method="inverted_cdf"),
            **{f"within_{k}": (delay <= k).mean() for k in (10, 20, 50)}}
    pos = np.tile(np.arange(HORIZON), n_merch)

    def typed_at(cut: Array) -> float:
        keep = pos < cut[group]
        settled_k, reference_k, e_k, env_k = (x[keep] for x in args)
        sub = R.assess_many(group[keep], settled_k, reference_k, e_k, env_k, sc.params,
                            n_groups=n_merch)
        ok = np.array(sub.verdicts())[in_month] == sc.kind
        return float(ok.mean()) if ok.size else float("nan")

    out["type_first"] = typed_at(np.where(in_month, at, 0))
    out["type_month"] = typed_at(np.where(in_month, month, 0))
    return out


def _number(x: object) -> float:
    if not isinstance(x, SupportsFloat):
        raise TypeError(f"{x!r} is not a number")
    return float(x)


def pct(x: object, digits: int = 1) -> str:
    return f"{100 * _number(x):.{digits}f} %"


def fmt_delay(x: object) -> str:
    v = _number(x)
    return f"> {HORIZON}" if math.isinf(v) else f"{v:.0f}"


def tables(rows: list[dict[str, object]]) -> str:
    honest = [r for r in rows if "ffr_upper" in r]
    cheats = [r for r in rows if "ffr_upper" not in r]
    lines = [
        "**False flags on honest merchants** (target ≤ 0.5 % per merchant per month; "
        "95 % upper bound by Clopper–Pearson):",
        "",
        "| honest variant | selling scale | merchants | flagged in the month | 95 % upper | "
        "flagged within 150 pairs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['scenario']} | {r['scale']} | {r['n']:,} | {r['flags']} "
              f"({pct(r['flag_month'], 2)}) | {pct(r['ffr_upper'], 2)} | "
              f"{pct(r['flag_150'], 2)} |" for r in honest]
    lines += [
        "",
        "**Cheats** (delay = re-weigh pairs until the first flag; type = verdict equals the "
        "injected type, among merchants flagged within their month, at the first flag and at "
        "the end of the month):",
        "",
        "| cheat | selling scale | merchants | median delay | 90th pct | ≤ 10 | ≤ 20 | ≤ 50 | "
        "in month | type at flag | type at month end |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['scenario']} | {r['scale']} | {r['n']:,} | {fmt_delay(r['median'])} | "
              f"{fmt_delay(r['p90'])} | {pct(r['within_10'])} | {pct(r['within_20'])} | "
              f"{pct(r['within_50'])} | {pct(r['flag_month'])} | {pct(r['type_first'])} | "
              f"{pct(r['type_month'])} |" for r in cheats]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    if START not in doc or END not in doc:
        raise SystemExit(f"markers {START} / {END} not found in {DOC}")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{text}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    quick = "--quick" in sys.argv
    n_h, n_c = (2_000, 500) if quick else (N_HONEST, N_CHEAT)
    rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    rows = [run(sc, scale, n_h, rng) for sc in HONEST for scale in SCALES]
    rows += [run(sc, scale, n_c, rng) for sc in CHEATS for scale in SCALES]
    elapsed = time.perf_counter() - t0
    p = PARAMS
    header = (
        f"`python bench/eval_residual.py` — seed {SEED}, {elapsed:.0f} s on {platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}. Parameters: α = {p.alpha} "
        f"(mixture share {1 - p.cusum_share:.2f}, CUSUM share {p.cusum_share:.2f} over "
        f"{p.cusum_horizon_pairs} pairs), σ = {p.noise_sd_e} e, cap {p.excess_cap_sd} σ, "
        f"ρ = {p.mixture_rho}, min {p.min_pairs} pairs. Goods log-uniform {LO_MG // 1000}–"
        f"{HI_MG // 1000} g; fair scale class III 30 kg / 5 g (in-service MPE); month = 30 days "
        f"× 1–5 re-weighs a day; delays on {HORIZON} pairs."
    )
    text = header + "\n\n" + tables(rows)
    print(text)
    if not quick:
        write_doc(text)


if __name__ == "__main__":
    main()
