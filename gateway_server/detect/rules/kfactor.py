"""K-factor drift: the displayed weight no longer follows the load cell (domain.md §4).

A weighing transmitter that reports its raw AD count lets the server compute the scale's
measurement coefficient per sale, K = (AD − AD0) / W: AD the raw count of the settled load,
AD0 that of the empty pan just before (the preceding zero check), W the gross weight shown
(settled net + tare: the load cell carries the tray too).
K belongs to the load cell and the calibration; it does not change while the scale is
honest. A cheat that alters the displayed weight *after* the converter — a chip or remote
gain in the indicator, a span re-calibration written over Modbus — moves W and not AD, so K
moves by the same ratio (the K_real-vs-K_cal monitor of WO2020206853A1). Published idea,
this project's rule:

* the reference K is the median K of the first ``ref_sales`` qualifying sales after the
  scale's last verification, repair or inspection (the state the inspector left it in);
* a sale qualifies with a load of at least ``min_load_e`` e (K from a light load is coarse);
* honest scatter of K at load W is bounded by what the law lets the display err plus the
  rounding of two displays: |K/K_ref − 1| ≤ (MPE_in_service(W) + e) / W
  (JJG 539 / OIML R76-1 via :mod:`weighing.metrology`);
* ``k-factor-drift`` when the last ``confirm`` qualifying sales all lie beyond that, on the
  same side. ``display_gain`` = K_ref / K − 1 is how much more the scale shows than the
  load cell says.

Pure: no database, no clock. A cheat already present at the reference sales is not seen
(the re-weigh detectors and the inspection cover that case).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway_server.detect.rules.legal import LEGAL_KFACTOR
from gateway_server.detect.rules.stream import Finding, ScaleCtx
from weighing import metrology as mt


@dataclass(frozen=True, slots=True)
class KParams:
    ref_sales: int = 10  # sales that fix the reference K after a reset [config]
    min_load_e: int = 50  # lighter loads give a coarse K [config]
    confirm: int = 3  # consecutive sales beyond tolerance, same side [config]


DEFAULT_PARAMS = KParams()


@dataclass(frozen=True, slots=True)
class KSample:
    """One qualifying sale: AD span (AD − AD0) and the gross weight shown (``settled_mg``
    + tare)."""

    ts_ms: int
    seq: int
    span_ad: int
    settled_mg: int


def qualifies(span_ad: int, settled_mg: int, e_mg: int, params: KParams = DEFAULT_PARAMS) -> bool:
    return span_ad > 0 and settled_mg >= params.min_load_e * e_mg


def _k(s: KSample) -> float:
    return s.span_ad / s.settled_mg  # a ratio of counts to mg: not a legal quantity


def tolerance_rel(settled_mg: int, scale: ScaleCtx) -> float:
    """(MPE in service at W + e) / W: the honest scatter of K at load W."""
    # every class has its table (JJG 539 / OIML R76-1 Table 6); an unknown one: III
    cls = mt.AccuracyClass(scale.accuracy_class if scale.accuracy_class in
                           {c.value for c in mt.AccuracyClass} else "III")
    load = min(settled_mg, scale.max_mg)
    try:
        mpe = mt.mpe_mg(load, e_mg=scale.e_mg, accuracy_class=cls, stage=mt.Stage.IN_SERVICE)
    except mt.MetrologyError:  # beyond the table: the last band
        mpe = mt.MPE_BANDS_E[cls][-1][1] * scale.e_mg * mt.STAGE_FACTOR[mt.Stage.IN_SERVICE]
    return float(mpe + scale.e_mg) / settled_mg


def check_k_drift(reference: Sequence[KSample], recent: Sequence[KSample], scale: ScaleCtx, *,
                  reset_ms: int, merchant_id: int | None = None,
                  params: KParams = DEFAULT_PARAMS) -> Finding | None:
    """``reference``: the first qualifying sales since ``reset_ms`` (at least
    ``params.ref_sales`` needed); ``recent``: the newest qualifying sales, oldest first."""
    if len(reference) < params.ref_sales or len(recent) < params.confirm:
        return None
    ks = sorted(_k(s) for s in reference[:params.ref_sales])
    k_ref = ks[(len(ks) - 1) // 2]
    last = recent[-params.confirm:]
    if any(s.seq <= reference[params.ref_sales - 1].seq for s in last):
        return None  # the confirming sales must come after the reference
    rel = [_k(s) / k_ref - 1 for s in last]
    beyond = [abs(r) > tolerance_rel(s.settled_mg, scale) for r, s in zip(rel, last, strict=True)]
    if not all(beyond) or not (all(r > 0 for r in rel) or all(r < 0 for r in rel)):
        return None
    gains = [k_ref / _k(s) - 1 for s in last]
    first = last[0]
    return Finding(
        "k-factor-drift", "high",
        "测量系数偏离 (显示重量与传感器不符) Measurement coefficient K drifted from its reference",
        LEGAL_KFACTOR, first.ts_ms, scale.device,
        scale.market,
        f"k-factor-drift:{scale.device}:{reset_ms}", merchant_id,
        {"k_ref": round(k_ref, 9), "k_now": [round(_k(s), 9) for s in last],
         "display_gain": [round(g, 5) for g in gains],
         "tolerance_rel": [round(tolerance_rel(s.settled_mg, scale), 5) for s in last],
         "settled_mg": [s.settled_mg for s in last], "seqs": [s.seq for s in last],
         "reference_sales": params.ref_sales, "since_ms": reset_ms})
