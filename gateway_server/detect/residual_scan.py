"""The statistical re-weigh detector in the store: its pairs, each judged alone, and what
it could not judge.

The test itself is pure (:mod:`gateway_server.detect.rules.residual`); this module runs it
inside the ingest transaction for the selling scales whose pairs changed in a batch
(called by :func:`gateway_server.detect.orchestrator.residual_findings`). docs/detection.md,
"Server integration: pairs, resets and what is left out".

* **Pairs** of a scale since its last reset (``detect_queries.reset_ms``: the latest
  inspection or registered repair/verification): the loads of an inspection *at* the reset
  (indication as settled, test load as reference, standard weights: ``reference_e_mg=None``)
  open the new evidence; then every re-weigh linked by its receipt's trace code after it.
  The inspection's loads are the state the inspector found, so they belong to the new
  evidence; everything before the inspection is discarded. Stall-named re-weighs are
  linked by weight only and never enter.
* **One bad pair is left out alone** (a load beyond the legal tables, a malformed
  inspection load), counted with its reason; the rest are judged.
* **Nothing is skipped silently.** A scale with left-out pairs, or one the detector cannot
  judge at all (no e/Max in the register, every pair left out, fewer usable pairs than the
  test needs because of them), gets one ``not-judged`` finding of severity ``info`` per
  evidence period (it weighs nothing in the queue), kept up to date on each evaluation;
  the scale page shows it and ``/metrics`` counts it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.detect.queries import finding_row, scale_contexts
from gateway_server.detect.rules import residual as rd
from gateway_server.detect.rules.legal import LEGAL_NOT_JUDGED, LEGAL_RESIDUAL
from gateway_server.detect.rules.stream import Finding, ScaleCtx
from gateway_server.store.bulk import any_of
from gateway_server.store.tables import findings, scales
from gateway_server.store.tables_workflow import inspection_results, reweighs

_TITLES = {
    "gain": "称量比例偏差超出法定误差 (疑似遥控/改标定) Multiplicative gain beyond the MPE",
    "additive": "称量固定偏差超出法定误差 (疑似预留底数/加重) Additive offset beyond the MPE",
    "both": "称量比例与固定偏差均超差 Gain and offset beyond the MPE",
    "honest": "核称残差超出法定误差 Re-weigh residuals beyond the MPE",
}
NOT_JUDGED = "not-judged"
_TITLE_SCALE = "统计检测无法判断此秤 Statistical detector cannot judge this scale"
_TITLE_PAIRS = "部分核称未计入统计检测 Pairs left out of the statistical detector"
SHOWN_PAIRS = 10  # left-out pairs listed in the evidence (all are counted)


@dataclass(frozen=True, slots=True)
class Pair:
    """One (settled, reference) pair as the store holds it."""

    ts_ms: int
    source: str  # "inspection" | "reweigh"
    ref: str  # inspection result id / fair scale and seq: where to look
    settled_mg: int | None
    reference_mg: int | None
    reference_e_mg: int | None  # None: standard weights
    reference_class: str
    merchant_id: int | None
    reference_assumed: bool = False  # fair scale not in the register: taken as equal


def pairs_since(conn: Connection, device: str, selling: ScaleCtx | None,
                reset_ms: int) -> list[Pair]:
    """The scale's pairs of the current evidence period, in time order (an inspection's
    loads first at its own time, in the order the inspector took them)."""
    return pairs_of(conn, {device: reset_ms}, {device: selling} if selling else {})[device]


def pairs_of(conn: Connection, resets: dict[str, int],
             selling: dict[str, ScaleCtx]) -> dict[str, list[Pair]]:
    """:func:`pairs_since` of every device of ``resets`` (device → its reset), read in
    three statements whatever the number of devices."""
    out: dict[str, list[tuple[tuple[int, int, int, int], Pair]]] = {d: [] for d in resets}
    if not resets:
        return {}
    oldest = min(resets.values())
    for r in conn.execute(select(inspection_results).where(
            any_of(conn, inspection_results.c.device, resets),
            inspection_results.c.ts_ms >= oldest)):
        if r.ts_ms < resets[r.device]:
            continue
        try:
            loads = json.loads(r.loads)
        except ValueError:
            loads = [None]
        for i, load in enumerate(loads if isinstance(loads, list) else [None]):
            ok = isinstance(load, dict)
            out[r.device].append(((int(r.ts_ms), 0, int(r.id), i), Pair(
                int(r.ts_ms), "inspection", f"inspection #{r.id}",
                _int(load.get("indication_mg")) if ok else None,
                _int(load.get("load_mg")) if ok else None, None, "III", r.merchant_id)))
    rows = [r for r in conn.execute(
        select(reweighs.c.id, reweighs.c.settled_mg, reweighs.c.reference_mg, reweighs.c.device,
               reweighs.c.seq, reweighs.c.ts_ms, reweighs.c.merchant_id, reweighs.c.sale_device)
        .where(any_of(conn, reweighs.c.sale_device, resets), reweighs.c.settled_mg.is_not(None),
               reweighs.c.trace_code.is_not(None),  # stall-named: linked by weight only
               reweighs.c.ts_ms > oldest)) if r.ts_ms > resets[r.sale_device]]
    fair = scale_contexts(conn, {r.device for r in rows})
    for r in rows:
        f, sc = fair.get(r.device), selling.get(r.sale_device)
        # a fair scale the register does not describe: taken as equal to the selling scale
        # (the re-weigh verdict assumes the same, Art. 6 "equal accuracy")
        e_r = f.e_mg if f else (sc.e_mg if sc else None)
        cls_r = f.accuracy_class if f else (sc.accuracy_class if sc else "III")
        out[r.sale_device].append(((int(r.ts_ms), 1, int(r.id), 0), Pair(
            int(r.ts_ms), "reweigh", f"{r.device} #{r.seq}", int(r.settled_mg),
            int(r.reference_mg), e_r, cls_r, r.merchant_id, reference_assumed=f is None)))
    return {d: [p for _, p in sorted(got, key=lambda x: x[0])] for d, got in out.items()}


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


@dataclass(frozen=True, slots=True)
class Judged:
    """The pairs the detector used and those it left out (with the reason)."""

    state: rd.ResidualState
    used: list[Pair]
    left_out: list[tuple[Pair, str]]


def judge_pairs(pairs: Iterable[Pair], selling: ScaleCtx) -> Judged:
    """Add the pairs one by one; a pair the detector cannot take is left out alone."""
    state, used, left_out = rd.ResidualState(), [], []
    for p in pairs:
        if p.settled_mg is None or p.reference_mg is None:
            left_out.append((p, "inspection load without load_mg / indication_mg"))
            continue
        if p.source == "reweigh" and p.reference_e_mg is None:
            left_out.append((p, "fair scale e unknown"))
            continue
        try:
            state = rd.update(state, p.settled_mg, p.reference_mg, e_mg=selling.e_mg,
                              reference_e_mg=p.reference_e_mg,
                              accuracy_class=selling.accuracy_class,
                              reference_accuracy_class=p.reference_class)
        except rd.ResidualInputError as err:
            left_out.append((p, str(err)))
            continue
        used.append(p)
    return Judged(state, used, left_out)


def residual_findings(conn: Connection, devices: set[str], *, now_ms: int,
                      resets_of: Callable[[Connection, Iterable[str]], dict[str, int]],
                      params: rd.ResidualParams = rd.DEFAULT_PARAMS) -> list[Finding]:
    """Residual findings (and ``not-judged`` observations) for ``devices``; what they
    need is read for all of them at once (a batch of a province day names hundreds)."""
    out: list[Finding] = []
    ctx = scale_contexts(conn, devices)
    resets = resets_of(conn, devices)
    pairs_by = pairs_of(conn, resets, ctx)
    noted = {r.dedup_key: r for r in conn.execute(
        select(findings.c.id, findings.c.status, findings.c.dedup_key).where(any_of(
            conn, findings.c.dedup_key, [_not_judged_key(d, resets[d]) for d in devices])))}
    for device in sorted(devices):
        sc, reset, pairs = ctx.get(device), resets[device], pairs_by[device]
        row = noted.get(_not_judged_key(device, reset))
        if sc is None:
            out += _observe(conn, device, None, reset, pairs, None, row, now_ms=now_ms,
                            params=params)
            continue
        judged = judge_pairs(pairs, sc)
        out += _observe(conn, device, sc, reset, pairs, judged, row, now_ms=now_ms,
                        params=params)
        if judged.state.n < params.min_pairs:
            continue
        f = _finding(device, sc, reset, judged, params)
        if f is not None:
            out.append(f)
    return out


def _finding(device: str, sc: ScaleCtx, reset: int, judged: Judged,
             params: rd.ResidualParams) -> Finding | None:
    a = rd.assess(judged.state, params)
    if a.flagged_at is None:
        return None
    kind = a.verdict.value if a.verdict.value in ("gain", "additive", "both") else "honest"
    used = judged.used
    sources = Counter(p.source for p in used)
    ev = {"verdict": a.verdict.value, "n": a.n, "flagged_at": a.flagged_at,
          "a_mg": round(a.a_mg), "bound_a_mg": round(a.bound_a_mg), "z_a": round(a.z_a, 2),
          "b": None if a.b != a.b else round(a.b, 5), "bound_b": round(a.bound_b, 5),
          "z_b": round(a.z_b, 2), "attributed_by_test": a.attributed_by_test,
          "worst": [{"ts_ms": used[w.index].ts_ms, "source": used[w.index].source,
                     "settled_mg": w.settled_mg, "reference_mg": w.reference_mg,
                     "residual_mg": w.residual_mg, "envelope_mg": w.envelope_mg}
                    for w in a.worst],
          "reweigh_pairs": sources["reweigh"], "inspection_pairs": sources["inspection"],
          "left_out": len(judged.left_out),
          "reference_assumed": sum(p.reference_assumed for p in used),
          "since_ms": reset}
    at = used[min(a.flagged_at, len(used)) - 1]  # the pair that raised the flag
    return Finding(
        f"residual-{kind if kind != 'honest' else 'excess'}", "high", _TITLES[kind],
        LEGAL_RESIDUAL, at.ts_ms, device, sc.market, f"residual:{device}:{reset}",
        at.merchant_id, ev)


def _not_judged_key(device: str, reset: int) -> str:
    return f"{NOT_JUDGED}:residual:{device}:{reset}"


def _observe(conn: Connection, device: str, sc: ScaleCtx | None, reset: int,
             pairs: list[Pair], judged: Judged | None, row: Any, *, now_ms: int,
             params: rd.ResidualParams) -> list[Finding]:
    """Keep the scale's ``not-judged`` observation of this evidence period up to date.

    Returns a new finding when there is something to report and none exists yet; an
    existing one is updated in place (its evidence grows with the period), and dismissed
    once nothing is left out any more (the register gained the scale's e, say).
    """
    if not pairs:
        return []  # nothing to judge: nothing left out
    key = _not_judged_key(device, reset)  # ``row``: its finding, if one exists
    left_out = judged.left_out if judged is not None else []
    if sc is not None and not left_out:
        if row is not None and row.status == "open":
            conn.execute(findings.update().where(findings.c.id == row.id)
                         .values(status="dismissed"))
        return []
    used = judged.state.n if judged is not None else 0
    if sc is None:
        reason = "selling scale has no e / Max in the register"
    elif used < params.min_pairs:
        top = Counter(why for _, why in left_out).most_common(1)[0][0]
        reason = (f"{used} usable pair(s), {params.min_pairs} needed; "
                  f"{len(left_out)} left out, mostly: {top}")
    else:
        reason = f"{len(left_out)} of {len(pairs)} pairs left out"
    judged_now = sc is not None and used >= params.min_pairs
    ev = {"detector": "residual", "judged": judged_now, "reason": reason,
          "pairs": len(pairs), "used": used, "left_out": len(left_out),
          "reasons": [{"reason": why, "count": n}
                      for why, n in Counter(why for _, why in left_out).most_common()],
          "left_out_pairs": [{"ts_ms": p.ts_ms, "source": p.source, "ref": p.ref,
                              "settled_mg": p.settled_mg, "reference_mg": p.reference_mg,
                              "reason": why} for p, why in left_out[-SHOWN_PAIRS:]],
          "since_ms": reset}
    last = pairs[-1]
    market = sc.market if sc is not None else _market_of(conn, device)
    f = Finding(NOT_JUDGED, "info", _TITLE_PAIRS if judged_now else _TITLE_SCALE,
                LEGAL_NOT_JUDGED, last.ts_ms, device, market, key, last.merchant_id, ev)
    if row is None:
        return [f]
    values = {k: v for k, v in finding_row(f, now_ms).items()
              if k in ("title", "evidence", "ts_ms", "merchant_id")}
    conn.execute(findings.update().where(findings.c.id == row.id).values(**values))
    return []


def _market_of(conn: Connection, device: str) -> str:
    m = conn.execute(select(scales.c.market).where(scales.c.device == device)).scalar()
    if m is None:
        m = conn.execute(select(reweighs.c.market).where(reweighs.c.sale_device == device)
                         .limit(1)).scalar()
    return str(m or "")
