"""Re-weighs named by the stall, not by a receipt: was the purchase weighed on a scale we see?

A consumer without a receipt can still use the fair scale (公平秤): the station scans the
stall's trust QR code (放心消费诚信码) and sends a ``ReweighEvent`` with ``merchant_token``
instead of ``trace_code``. An honest stall weighed those goods on its registered scale (the
consumer lost or never took the receipt), so some recorded sale of that merchant shortly
before the re-weigh has the same weight within what two honest scales may disagree by. A
stall selling beside its traceability scale on a second, untracked one (domain.md §4, the
one cheat the scales' own data cannot show reliably) leaves goods that **no recorded sale
explains**. This module is the pure part of that rule (no database, no clock):

* :func:`tolerance_mg` — how far an honest sale and its re-weigh may differ: the envelope H
  of the statistical detector (both scales at their in-service MPE, ½ e rounding each,
  ``detectors.residual.envelope_mg_array``) plus ``noise_e`` e of the selling scale for the
  goods changing between the two weighings;
* :func:`best_match` — the recorded sale (or two sales close together, one basket re-weighed
  at once) closest to the reference within tolerance;
* :func:`check_untracked` — the merchant-level rule: at least ``min_untracked`` re-weighs in
  ``window_ms`` that no sale explains, and they are at least ``min_share`` of the
  merchant's stall-named re-weighs in that window (an honest merchant's stall-named
  re-weighs are lost receipts and match; one a consumer ascribed to the wrong stall does
  not, but it is one among many that match).

Every threshold here is a configuration value [L] (no legal source gives one); the legal
quantities (MPE, rounding) come from :mod:`weighing.metrology` through the residual
envelope. Measured operating characteristics: docs/detection.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from gateway_server.detect.rules import residual as rd
from gateway_server.detect.rules.legal import LEGAL_UNTRACKED
from gateway_server.detect.rules.stream import Finding, ScaleCtx
from weighing import metrology as mt

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

TITLE_UNTRACKED = ("核称商品无对应溯源记录 (疑似另用未登记秤) "
                   "Re-weighed goods no recorded sale explains (second, untracked scale)")


@dataclass(frozen=True, slots=True)
class UntracedParams:
    """Thresholds of the stall-named re-weigh rule (configuration, documented defaults)."""

    #: a purchase is re-weighed within this time after its sale (consumers re-weigh on the
    #: same visit, minutes later; the margin absorbs the selling scale's clock running ahead
    #: of the fair scale's: agents keep within seconds by ``time-sync``)
    before_ms: int = HOUR_MS
    #: the selling scale's clock may lag the fair scale's by this much
    after_ms: int = 40 * 60_000
    #: two sales of the merchant this close together may be one basket re-weighed at once
    basket_gap_ms: int = 5 * 60_000
    #: goods change between sale and re-weigh (drip, handling): this many e of the selling
    #: scale on top of the legal envelope (4 σ of the residual detector's default σ = 1 e)
    noise_e: int = 4
    #: a re-weigh is judged once every scale of the merchant has reported past
    #: ``ts + after_ms``, or at the latest when the market's event time is this far on
    max_wait_ms: int = 6 * HOUR_MS
    min_untracked: int = 2
    min_share: float = 0.5
    window_ms: int = DAY_MS


DEFAULT_PARAMS = UntracedParams()


@dataclass(frozen=True, slots=True)
class Candidate:
    """A recorded sale of the named merchant near the re-weigh."""

    sale_id: int
    device: str
    ts_ms: int
    settled_mg: int


@dataclass(frozen=True, slots=True)
class Match:
    sale_ids: tuple[int, ...]
    sold_mg: int
    difference_mg: int  # sold − reference
    tolerance_mg: int


@dataclass(frozen=True, slots=True)
class StallReweigh:
    """A judged stall-named re-weigh, as the merchant rule sees it."""

    reweigh_id: int
    ts_ms: int
    fair_device: str
    reference_mg: int
    untracked: bool


def tolerance_mg(reference_mg: int, *, selling: ScaleCtx, fair: ScaleCtx | None,
                 params: UntracedParams = DEFAULT_PARAMS) -> int:
    """How far an honest sale of these goods and their re-weigh may differ, in mg.

    A load beyond the selling scale's tables (it could not have sold it) gets the
    envelope at the scale's top band: the match then fails on weight, as it should.
    """
    # every class has its table (JJG 539 / OIML R76-1 Table 6; a 15 kg / 1 g fair scale is
    # class II); an unknown class: III. A fair scale the register does not describe is
    # taken as equal to the selling scale (as the re-weigh verdict does, Art. 6).
    known = {c.value for c in mt.AccuracyClass}
    cls = selling.accuracy_class if selling.accuracy_class in known else "III"
    ref_e = fair.e_mg if fair is not None else selling.e_mg
    ref_cls = fair.accuracy_class if fair is not None and fair.accuracy_class in known else cls
    load = max(0, min(reference_mg, selling.max_mg))
    try:
        h = float(rd.envelope_mg_array(load, e_mg=selling.e_mg, accuracy_class=cls,
                                       reference_e_mg=ref_e, reference_accuracy_class=ref_cls))
    except rd.ResidualInputError:
        h = 0.0  # e.g. a load beyond the fair scale's tables: the noise allowance only
    return int(h) + params.noise_e * selling.e_mg


def best_match(reference_mg: int, candidates: Sequence[Candidate],
               tolerances: Mapping[str, int], *,
               params: UntracedParams = DEFAULT_PARAMS) -> Match | None:
    """The sale, or two sales within ``basket_gap_ms``, closest to ``reference_mg``.

    ``tolerances`` gives the tolerance per selling device (its e and class differ); a
    basket of two sales is allowed the sum of the two tolerances.
    """
    best: Match | None = None
    ordered = sorted(candidates, key=lambda c: (c.ts_ms, c.sale_id))
    options: list[tuple[tuple[int, ...], int, int]] = [
        ((c.sale_id,), c.settled_mg, tolerances[c.device]) for c in ordered]
    for a, b in pairwise(ordered):
        if b.ts_ms - a.ts_ms <= params.basket_gap_ms:
            options.append(((a.sale_id, b.sale_id), a.settled_mg + b.settled_mg,
                             tolerances[a.device] + tolerances[b.device]))
    for ids, sold, tol in options:
        diff = sold - reference_mg
        if abs(diff) <= tol and (best is None or abs(diff) < abs(best.difference_mg)):
            best = Match(ids, sold, diff, tol)
    return best


def check_untracked(judged: Sequence[StallReweigh], *, merchant_id: int, scale: ScaleCtx,
                    recorded_sales: Mapping[str, int],
                    params: UntracedParams = DEFAULT_PARAMS) -> Finding | None:
    """The merchant rule over its judged stall-named re-weighs of the last ``window_ms``
    (ending with the newest): enough untracked ones, and not drowned among matched ones.

    ``scale`` is the merchant's scale the finding is put on (the one with the fewest
    recorded sales: the idle traceability scale); ``recorded_sales`` counts the sales of
    each of the merchant's scales over the same span, for the evidence.
    """
    if not judged:
        return None
    newest = max(r.ts_ms for r in judged)
    recent = [r for r in judged if r.ts_ms > newest - params.window_ms]
    untracked = [r for r in recent if r.untracked]
    if len(untracked) < params.min_untracked:
        return None
    share = len(untracked) / len(recent)
    if share < params.min_share:
        return None
    first = min(untracked, key=lambda r: (r.ts_ms, r.reweigh_id))
    trigger = sorted(untracked, key=lambda r: (r.ts_ms, r.reweigh_id))[params.min_untracked - 1]
    return Finding(
        "untracked-sales", "high", TITLE_UNTRACKED, LEGAL_UNTRACKED, trigger.ts_ms,
        scale.device, scale.market,
        f"untracked-sales:{scale.device}:{first.ts_ms // DAY_MS}", merchant_id,
        {"untracked": len(untracked), "stall_named_reweighs": len(recent),
         "share": round(share, 3), "window_ms": params.window_ms,
         "recorded_sales": dict(sorted(recorded_sales.items())),
         "reweighs": [{"id": r.reweigh_id, "ts_ms": r.ts_ms, "fair_device": r.fair_device,
                       "reference_mg": r.reference_mg} for r in untracked[-10:]]})
