"""Evidence that would stand: how findings combine into "go there" (docs/detection.md,
"The inspection queue").

Pure: no database, no clock. :mod:`gateway_server.casework.inspection` reads the findings and
calls it.

* **Per kind** (:data:`TABLE`): ``p_day``, the probability that an *honest* scale shows at
  least one finding of that kind on a market day (a CST calendar day), with the reasoning.
  Its weight is ``w = −log10 p_day``. A rule that is itself a sequential test states its
  own α (the residual detector: :func:`residual_p_day`).
* **Families**: kinds that read the same signal (the same re-weighs, the same unit price,
  the same seal) are not independent; of one family only the strongest kind of the day
  counts. Repeats of a kind within a day count once: they are not independent either (a
  stall that forgets its tray forgets it all day).
* **Observations**: a kind an honest scale shows on ``OBSERVATION_P`` (2 %) of its days or
  more, a kind with no stated probability, and every ``info`` finding weigh nothing. They
  stay on the scale and merchant pages. (Counting them would make every other combination
  weaker: the calibration below charges each scale for all the ways they pile up.)
* **A day's score** ``S = Σ over families of the largest weight that fired that day`` is
  the naive "−log10 of the product". It is **not** the false-alarm probability: with
  several families an honest scale has many ways to reach a given product. So the score
  is calibrated: :meth:`RiskModel.p_day` is an upper bound of ``P(honest day scores ≥ S)``
  over every combination the table allows (families independent, within a family a union
  bound), computed exactly over the finite set of scores the table can produce.
* **Evidence** ``E = −log10 p_day(S)``: "honest odds 1 : 10^E".
* **The queue** holds a scale from the first market day since its last inspection whose
  ``p_day ≤ ALPHA_DAY`` (1e-4). As ``p_day`` grows as ``S`` falls, an honest scale enters
  on a given day with probability ≤ ``ALPHA_DAY``: ≤ 0.3 % in a 30-day month (union bound
  over the days), ≤ 0.3 % × n for a merchant with n scales. It leaves when an inspection
  answers it (days up to the inspection no longer count) or its findings are settled.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache

from gateway_server.detect.rules import residual as rd

DAY_MS = 86_400_000
MARKET_DAY_OFFSET_MS = 8 * 3_600_000  # a market day is a calendar day in China Standard Time
ALPHA_DAY = 1e-4  # an honest scale enters the queue on a given day with at most this [config]
OBSERVATION_P = 0.02  # kinds at least this common on honest days weigh nothing [config]
_EPS = 1e-9  # scores are sums of logarithms: compare them with this slack


def market_day(ts_ms: int) -> int:
    """Days since the epoch of the CST calendar day of ``ts_ms``."""
    return (ts_ms + MARKET_DAY_OFFSET_MS) // DAY_MS


def market_day_start_ms(day: int) -> int:
    return day * DAY_MS - MARKET_DAY_OFFSET_MS


def residual_p_day(params: rd.ResidualParams = rd.DEFAULT_PARAMS, *,
                   reweighs_per_day: float = 5.0, days_between_resets: float = 365.0) -> float:
    """The residual detector's own α per honest scale and day (docs/detection.md).

    Its CUSUM spends ``alpha · cusum_share`` per ``cusum_horizon_pairs`` pairs (30 days at
    the 5 re-weighs a day it was designed for); its normal mixture spends the rest once
    over the scale's life since its last reset (an inspection or verification, at least
    yearly: 强制检定 ≤ 1 year).
    """
    cusum = params.alpha * params.cusum_share
    mixture = params.alpha - cusum
    return (cusum * reweighs_per_day / params.cusum_horizon_pairs
            + mixture / days_between_resets)


@dataclass(frozen=True, slots=True)
class KindEvidence:
    """What one finding kind (at one severity, or any) says about a scale."""

    kind: str
    p_day: float  # P(an honest scale shows ≥ 1 such finding on a market day); 1: no evidence
    family: str  # kinds of one family share their signal: only the strongest counts
    why: str
    severity: str | None = None  # None: any severity (a severity entry takes precedence)

    @property
    def weight(self) -> float:
        return -math.log10(self.p_day)


_RESIDUAL_WHY = ("the residual detector's sequential test, its own α: 0.5 % per honest "
                 "scale a month, CUSUM half per 150 pairs (5 re-weighs a day), mixture half "
                 "once between yearly resets")
_RESIDUAL_P = residual_p_day()

#: The stated false-alarm probabilities. [L] unless measured: configuration defaults with
#: their reasoning, to be re-measured on each market (docs/detection.md has the table).
TABLE: tuple[KindEvidence, ...] = (
    KindEvidence("calibration-change", 1e-5, "calibration",
                 "a CAL/CFG counter or calibration register moved with no repair registered "
                 "within 24 h before, after the first report set the baseline: an honest "
                 "counter moves at a repair or verification (≈ 2 a year); assumes ≤ 1 in 500 "
                 "of those goes unregistered"),
    KindEvidence("k-factor-drift", 1e-5, "calibration",
                 "3 sales in a row beyond the legal worst case of K on one side: a scale "
                 "within its in-service MPE cannot produce them; honest causes are the "
                 "calibration-change ones (an unregistered repair), so the same family"),
    KindEvidence("price-decimal-trick", 1e-5, "price",
                 "unit price exactly ×0.1 or ×0.01 of the registered price: a key slip of "
                 "that size shows the buyer an amount 10–100 times too low and is corrected "
                 "before the sale is printed"),
    KindEvidence("price-mismatch", 0.2, "price",
                 "prices change during the day and the register follows a day later"),
    KindEvidence("amount-mismatch", 1e-3, "amount",
                 "an amount above every lawful rounding of weight × price (lawful roundings "
                 "and 抹零 raise nothing): firmware or a typed total; weak, needs company"),
    KindEvidence("untracked-sales", 2e-5, "traceability",
                 "≥ 2 unexplained stall-named re-weighs in 24 h: ≈ 2e-5 a day from the "
                 "measured rate of one (consumers naming the wrong stall), if independent"),
    KindEvidence("idle-while-peers-trade", 1e-3, "traceability",
                 "opt-in window rule: 1 of 3,497 honest merchants a day on the fleet it was "
                 "measured on, × 3 for markets it was not"),
    KindEvidence("residual", _RESIDUAL_P, "re-weigh", _RESIDUAL_WHY),
    KindEvidence("reweigh-short", OBSERVATION_P, "re-weigh",
                 "one re-weigh beyond the retail deviation: goods drip and dry, an honest "
                 "scale at its MPE fails the 1× limit of dear goods; the residual test "
                 "judges the series"),
    KindEvidence("tare-omission", 1e-3, "pan",
                 "three untared sales in a row of goods the merchant tares the same day: "
                 "measured 8e-4 of honest scales a day when merchants forget 3 % of trays",
                 severity="high"),
    KindEvidence("tare-omission", 0.13, "pan",
                 "one untared sale of goods the merchant otherwise tares: a forgotten tray; "
                 "measured on 13 % of honest scales a day when merchants forget 1 % of trays"),
    KindEvidence("zero-offset-persistent", 1e-5, "pan",
                 "three idle-pan reports in a row read one offset (within 1 e) above the "
                 "negative deviation of the day's typical sale, with sales between: every sale "
                 "between was short beyond the tolerance by the scale's own zero; honest "
                 "debris that heavy goes unnoticed through three sales ≤ 1 in 10,000 of the "
                 "zero-offset days (5 %), and is sold with the goods all the same"),
    KindEvidence("zero-offset", 0.05, "pan",
                 "a dirty pan, a tray or leftovers on it, a hand resting on it"),
    KindEvidence("impact-repeated", 1e-5, "impact",
                 "three sales of a day committed above the settled weight by more than the "
                 "legal negative deviation, read by the same scale seconds apart (no drip, no "
                 "second scale): a hasty key press lands in an overshoot that large on a few "
                 "in a hundred impact days (10 %), three of them on one day ≤ 1e-5 if "
                 "independent; more is short weight as a practice, whatever the intent"),
    KindEvidence("impact", 0.1, "impact",
                 "a busy merchant presses the key before the pan settles"),
    KindEvidence("identity-mismatch", OBSERVATION_P, "device",
                 "Max or e differ from the register: a typo in the register repeats at "
                 "every boot of an honest scale"),
    KindEvidence("bad-signature", OBSERVATION_P, "device",
                 "a key changed on one side only (re-provisioning)"),
    KindEvidence("sequence-gap", 0.05, "device", "an agent reinstalled or its outbox lost"),
    KindEvidence("offline-trading-hours", 0.1, "device",
                 "power cuts, a day off, a scale switched off at lunch"),
    KindEvidence("scale-too-coarse", 1.0, "compliance",
                 "a scale unsuited to the goods (Art. 3) is a compliance note, no sign of "
                 "cheating"),
)


def canonical_kind(kind: str) -> str:
    """The table's name of a finding kind: the residual detector's verdicts (``residual-gain``,
    ``-additive``, ``-both``, ``-excess``) are outcomes of one test with one α."""
    return "residual" if kind.startswith("residual-") else kind


@dataclass(frozen=True, slots=True)
class KindDay:
    """Open findings of one kind and severity on one scale and market day (a query row)."""

    kind: str
    severity: str
    day: int
    count: int
    last_id: int
    last_ts_ms: int
    title: str = ""


@dataclass(frozen=True, slots=True)
class DayScore:
    day: int
    score: float  # S: the sum over families of the strongest weight
    p_day: float  # calibrated: P(an honest day scores ≥ S)
    counted: tuple[str, ...]  # the kind of each family that counted

    @property
    def evidence(self) -> float:
        return -math.log10(self.p_day) if self.p_day > 0 else math.inf


@dataclass(frozen=True)
class RiskModel:
    table: tuple[KindEvidence, ...] = TABLE
    alpha_day: float = ALPHA_DAY
    observation_p: float = OBSERVATION_P
    _index: Mapping[tuple[str, str | None], KindEvidence] = field(
        init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {(k.kind, k.severity): k for k in self.table})

    def lookup(self, kind: str, severity: str) -> KindEvidence | None:
        """The entry for a finding; None: the kind states no probability (an observation)."""
        kind = canonical_kind(kind)
        return self._index.get((kind, severity)) or self._index.get((kind, None))

    def counts(self, kind: str, severity: str) -> KindEvidence | None:
        """The entry if a finding of this kind and severity weighs anything, else None."""
        if severity == "info":
            return None
        k = self.lookup(kind, severity)
        return k if k is not None and k.p_day < self.observation_p else None

    def p_day(self, score: float) -> float:
        """Upper bound of P(an honest scale's day scores ≥ ``score``); never 0 (beyond the
        strongest score the table can produce: that score's, so evidence stays finite)."""
        if score <= _EPS:
            return 1.0
        scores, tails = _tail(self)
        i = bisect.bisect_left(scores, score - _EPS)
        return tails[min(i, len(tails) - 1)]

    def honest_entry_p_day(self) -> float:
        """P(an honest scale enters the queue on a given day): the bound at the weakest
        score the queue admits (≤ ``alpha_day`` by construction)."""
        _, tails = _tail(self)
        admitted = [t for t in tails if t <= self.alpha_day]
        return max(admitted, default=0.0)

    def threshold_score(self) -> float | None:
        """The weakest score the queue admits (None: none)."""
        scores, tails = _tail(self)
        ok = [s for s, t in zip(scores, tails, strict=True) if t <= self.alpha_day and s > 0]
        return min(ok, default=None)

    def score_days(self, rows: Iterable[KindDay]) -> list[DayScore]:
        """Each market day's score and calibrated probability, oldest first."""
        best: dict[int, dict[str, tuple[float, str]]] = defaultdict(dict)
        for r in rows:
            k = self.counts(r.kind, r.severity)
            if k is None:
                continue
            fam = best[r.day]
            if k.family not in fam or k.weight > fam[k.family][0]:
                fam[k.family] = (k.weight, r.kind)  # the finding's kind (residual-gain, …)
        out = []
        for day in sorted(best):
            fams = best[day]
            score = sum(w for w, _ in fams.values())
            out.append(DayScore(day, score, self.p_day(score),
                                tuple(sorted(kind for _, kind in fams.values()))))
        return out


@cache
def _tail(model: RiskModel) -> tuple[list[float], list[float]]:
    """Attainable scores (ascending) and the bound of P(score ≥ s) at each.

    Per family, the score Z_f is dominated by the distribution with P(Z_f ≥ w) =
    min(1, Σ p of its counted kinds of weight ≥ w); families are independent, and a sum of
    independent variables keeps the dominance, so the exact tail of the sum of the
    dominating variables bounds the honest one.
    """
    fams: dict[str, list[KindEvidence]] = defaultdict(list)
    for k in model.table:
        if k.p_day < model.observation_p:
            fams[k.family].append(k)
    atoms: dict[float, float] = {0.0: 1.0}
    for name in sorted(fams):
        ks = fams[name]
        values: list[tuple[float, float]] = []
        prev = 0.0
        for w in sorted({k.weight for k in ks}, reverse=True):
            s = min(1.0, sum(k.p_day for k in ks if k.weight >= w - _EPS))
            values.append((w, s - prev))
            prev = s
        values.append((0.0, 1.0 - prev))
        nxt: dict[float, float] = defaultdict(float)
        for a, q in atoms.items():
            for w, r in values:
                if r > 0:
                    nxt[round(a + w, 9)] += q * r
        atoms = nxt
    scores = sorted(atoms)
    tails = [0.0] * len(scores)
    acc = 0.0
    for i in range(len(scores) - 1, -1, -1):
        acc += atoms[scores[i]]
        tails[i] = min(1.0, acc)
    return scores, tails


DEFAULT_MODEL = RiskModel()
