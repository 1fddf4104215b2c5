"""Score the gateway's findings against a fleet's ground truth.

``scale-sim evaluate --truth truth.json --gateway URL`` fetches the findings (and the
merchant ids, to attribute merchant-level findings) from the gateway API and scores:

* **recall** per cheat type: a case (one scale with one injected cheat or fault) is
  found when a finding of a kind that signals that type (:data:`KIND_MAP`) names the
  scale (or its merchant) at or after the onset (less :data:`GRACE_MS`);
* **time to detect**: the first such finding's event time minus the onset, in simulated
  time (both are event times: the gateway judges by ``ts_ms``); for a stream-visible cheat
  the clock starts when it becomes *visible* in the stream (the truth's ``visible_ms``: a
  preset base with the first idle-pan report after its onset; per-sale cheats with the
  first cheated sale, which is their onset), and ``ttd_onset_s`` keeps the time from the
  onset;
* **re-weighs to detect** for gain cheats: the fair-scale re-weighs of the scale's sales
  from the onset up to the detecting finding (a case with fewer than 10 re-weighs after
  its onset that was not found is *censored*: the target cannot be judged on it);
* **precision** per cheat type: of the scales flagged by the kinds that signal the type,
  those with that type injected (TP) against those with nothing injected (FP); scales
  with another injected problem are counted apart (``cross``);
* **false alarms**: honest merchants (no cheat or fault on any of their scales; benign
  outages and clock skew allowed) **in the inspection queue** at the end of the run
  (``GET /api/v1/inspection-queue``: what sends an inspector), with the share per 30
  days (1 − (1 − p_day)^30); and, apart, honest merchants **with any observation** (a
  finding of any kind on one of their scales), findings per merchant-month;
* **in the queue** per cheat type: the cases whose scale is in the queue at the end.

Findings the gateway has dismissed (e.g. a sequence gap later filled) do not count.
The results as Markdown and files are :mod:`simulators.evaluate_report`, re-exported here.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from simulators.evaluate_report import (
    END as END,
    START as START,
    STREAM_VISIBLE as STREAM_VISIBLE,
    save as save,
    to_markdown as to_markdown,
    write_docs_section as write_docs_section,
)
from simulators.fleet_config import CHEATS, FAULTS
from weighing.errors import GatewayError

GRACE_MS = 60_000
GAIN_CHEATS = ("remote-gain", "chip-gain", "recalibration")
STREAM_TARGET_S = 300
REWEIGH_TARGET = 10
_WEIGHT = ("remote-gain", "chip-gain", "chip-additive", "recalibration", "preset-base",
           "tray-not-tared", "impact", "drift")
#: finding kind → the cheat types it is evidence of (docs/detection.md, fleet evaluation)
KIND_MAP: dict[str, frozenset[str]] = {
    "impact": frozenset({"impact"}),
    "impact-repeated": frozenset({"impact"}),
    "zero-offset": frozenset({"preset-base", "drift"}),
    "zero-offset-persistent": frozenset({"preset-base", "drift"}),
    "tare-omission": frozenset({"tray-not-tared"}),
    "price-decimal-trick": frozenset({"price-trick"}),
    "price-mismatch": frozenset({"price-trick"}),
    "amount-mismatch": frozenset({"price-trick"}),
    "calibration-change": frozenset({"recalibration"}),
    "reweigh-short": frozenset(_WEIGHT),
    "residual-gain": frozenset({"remote-gain", "chip-gain", "recalibration", "drift"}),
    "residual-additive": frozenset({"chip-additive", "preset-base", "tray-not-tared"}),
    "residual-both": frozenset(_WEIGHT),
    "idle-while-peers-trade": frozenset({"second-scale"}),
    "untracked-sales": frozenset({"second-scale"}),
    # the display no longer follows the load cell: any cheat that changes the display
    # after the converter (a tray on the pan loads the cell too, so not tray-not-tared)
    "k-factor-drift": frozenset({"remote-gain", "chip-gain", "chip-additive", "recalibration",
                                 "preset-base", "drift"}),
    # integrity and configuration: no cheat type (a flag on an honest merchant is false)
    "sequence-gap": frozenset(), "bad-signature": frozenset(),
    "identity-mismatch": frozenset(), "scale-too-coarse": frozenset(),
    "offline-trading-hours": frozenset(),  # the fleet's outages keep their events (outbox)
}


class EvaluateError(GatewayError):
    """The evaluation cannot run: a missing or unreadable file, or the wrong gateway."""


def read_json(path: str | Path, *, what: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object file with ``keys`` at the top; :class:`EvaluateError` naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluateError(f"{what} file {path} does not exist") from None
    except OSError as err:
        raise EvaluateError(f"{what} file {path}: {err.strerror}") from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise EvaluateError(f"{what} file {path} is not JSON: {err}") from err
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise EvaluateError(f"{what} file {path} has no {', '.join(missing)}: is it a {what} "
                            "file?")
    return dict(data)


TRUTH_KEYS = ("fleet", "markets", "merchants", "scales")
FINDINGS_KEYS = ("findings", "merchant_ids")


def signals(kind: str) -> frozenset[str]:
    if kind in KIND_MAP:
        return KIND_MAP[kind]
    if kind.startswith("residual"):  # a residual verdict not listed: any weight cheat
        return frozenset(_WEIGHT)
    return frozenset()


def _q(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, round(p * (len(v) - 1)))]


def _when(f: dict[str, Any], reweighs: list[list[Any]]) -> int:
    """Event time a finding was warranted at.

    A residual finding's ``ts_ms`` is that of the newest pair when the detector last ran
    (it reruns per ingest batch); its ``flagged_at`` names the pair that crossed the
    boundary, so the time is that re-weigh's (the truth lists the scale's re-weighs).
    """
    at = (f.get("evidence") or {}).get("flagged_at")
    if f["kind"].startswith("residual") and isinstance(at, int) and 0 < at <= len(reweighs):
        return int(reweighs[at - 1][0])
    return int(f["ts_ms"])


def score(truth: dict[str, Any], findings: list[dict[str, Any]],
          merchant_codes: dict[int, str] | None = None,
          queue: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Metrics of ``findings`` (API rows) and the inspection ``queue`` (its API items; None:
    not fetched) against ``truth`` (the fleet's truth file)."""
    scales, merchants = truth["scales"], truth["merchants"]
    codes = merchant_codes or {}
    problem = set(CHEATS + FAULTS)
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    unattributed = 0
    for f in findings:
        if f.get("status") == "dismissed":
            continue
        devs = [f["device"]] if f.get("device") in scales else []
        if not devs and f.get("merchant_id") in codes:
            devs = merchants.get(codes[f["merchant_id"]], {}).get("devices", [])
        if not devs:
            unattributed += 1
        for d in devs:
            by_device[d].append(f)

    def truth_kinds(dev: str) -> set[str]:
        return {s["kind"] for s in scales[dev]["scenarios"] if s["kind"] in problem}

    cases: list[dict[str, Any]] = []
    for dev, s in sorted(scales.items()):
        for sc in s["scenarios"]:
            if sc["kind"] not in problem:
                continue
            onset = int(sc["onset_ms"])
            all_rws = sorted(s.get("reweighs", []))
            hits = [f for f in by_device.get(dev, ()) if sc["kind"] in signals(f["kind"])
                    and _when(f, all_rws) >= onset - GRACE_MS]
            first = min(hits, key=lambda f: _when(f, all_rws)) if hits else None
            rws = [r for r in s.get("reweighs", []) if int(r[0]) >= onset]
            case = {"device": dev, "merchant": s["merchant"], "kind": sc["kind"],
                    "size": sc["size"], "onset_ms": onset, "effective": sc.get("effective", True),
                    "cheated_sales": sc.get("cheated_sales", 0), "reweighs_after": len(rws),
                    "detected": first is not None,
                    "by": sorted({f["kind"] for f in hits})}
            visible = int(sc.get("visible_ms") or onset)
            if visible != onset:
                case["visible_ms"] = visible
            if first is not None:
                found_ms = _when(first, all_rws)
                case["ttd_s"] = max(0.0, (found_ms - visible) / 1000)
                case["ttd_onset_s"] = max(0.0, (found_ms - onset) / 1000)
                case["first_kind"] = first["kind"]
                case["reweighs_to_detect"] = sum(1 for r in rws if int(r[0]) <= found_ms)
            cases.append(case)

    # precision: scales flagged by the kinds that signal a type
    flagged_by_kind: dict[str, set[str]] = defaultdict(set)
    for dev, fs in by_device.items():
        for f in fs:
            flagged_by_kind[f["kind"]].add(dev)
    per_kind = {}
    for kind, kind_devs in sorted(flagged_by_kind.items()):
        sig = signals(kind)
        tp = {d for d in kind_devs if truth_kinds(d) & sig}
        fp = {d for d in kind_devs if not truth_kinds(d)}
        per_kind[kind] = {"flagged": len(kind_devs), "tp": len(tp), "fp": len(fp),
                          "cross": len(kind_devs) - len(tp) - len(fp),
                          "findings": sum(1 for d in kind_devs for f in by_device[d]
                                          if f["kind"] == kind)}

    types: dict[str, Any] = {}
    for t in CHEATS + FAULTS:
        cs = [c for c in cases if c["kind"] == t and c["effective"]]
        flagged = set().union(*(flagged_by_kind[k] for k in flagged_by_kind if t in signals(k)))
        tp = {d for d in flagged if t in truth_kinds(d)}
        fp = {d for d in flagged if not truth_kinds(d)}
        ttd = [c["ttd_s"] for c in cs if c["detected"]]
        row: dict[str, Any] = {
            "cases": len(cs), "not_effective": sum(1 for c in cases
                                                   if c["kind"] == t and not c["effective"]),
            "detected": sum(1 for c in cs if c["detected"]),
            "recall": (sum(1 for c in cs if c["detected"]) / len(cs)) if cs else None,
            "recall_5min": (sum(1 for c in cs if c["detected"] and c["ttd_s"] <= STREAM_TARGET_S)
                            / len(cs)) if cs else None,
            "ttd_median_s": statistics.median(ttd) if ttd else None,
            "ttd_p90_s": _q(ttd, 0.9), "ttd_max_s": max(ttd) if ttd else None,
            "precision": (len(tp) / (len(tp) + len(fp))) if (tp or fp) else None,
            "tp_scales": len(tp), "fp_scales": len(fp), "cross_scales": len(flagged - tp - fp),
            "by": dict(Counter(c.get("first_kind") for c in cs if c["detected"])),
        }
        if t in GAIN_CHEATS:
            big = [c for c in cs if float(c["size"]) >= 0.05]
            within = [c for c in big
                      if c["detected"] and c["reweighs_to_detect"] <= REWEIGH_TARGET]
            censored = [c for c in big
                        if not c["detected"] and c["reweighs_after"] < REWEIGH_TARGET]
            judged = len(big) - len(censored)
            row.update({"gain_ge_5pct": len(big), "within_10_reweighs": len(within),
                        "censored": len(censored),
                        "recall_10_reweighs": (len(within) / judged) if judged else None,
                        "reweighs_to_detect_max": max((c["reweighs_to_detect"] for c in big
                                                       if c["detected"]), default=None)})
        types[t] = row

    queued = score_queue(truth, queue, codes)
    for t, row in types.items():
        row["in_queue"] = None if queued is None else sum(
            1 for c in cases if c["kind"] == t and c["effective"]
            and c["device"] in queued["devices"])

    honest = {c: m for c, m in merchants.items() if m["honest"]}
    flagged_honest: dict[str, Counter[str]] = {}
    for code, m in honest.items():
        kinds = Counter(f["kind"] for d in m["devices"] for f in by_device.get(d, ()))
        if kinds:
            flagged_honest[code] = kinds
    days = int(truth["fleet"].get("days", 1))
    n_h = len(honest)
    p_day = (len(flagged_honest) / n_h / days) if n_h else 0.0
    fair = {mk["fair"] for mk in truth["markets"].values()}
    false_findings = sum(sum(k.values()) for k in flagged_honest.values())
    return {
        "fleet": truth["fleet"],
        "types": types,
        "kinds": per_kind,
        "cases": cases,
        "false_flags": {
            "honest_merchants": n_h, "flagged": len(flagged_honest),
            "flagged_share": (len(flagged_honest) / n_h) if n_h else None,
            "findings": false_findings,
            "per_merchant_month": (false_findings / (n_h * days / 30)) if n_h else None,
            "month_share_estimate": 1 - (1 - p_day) ** 30,
            "by_kind": dict(sum((Counter(k) for k in flagged_honest.values()), Counter())),
            "merchants": {c: dict(k) for c, k in sorted(flagged_honest.items())[:50]},
        },
        "queue": queued,
        "fair_scale_findings": sum(len(by_device.get(d, ())) for d in fair),
        "unattributed_findings": unattributed,
        "findings_total": len(findings),
    }


def score_queue(truth: dict[str, Any], queue: list[dict[str, Any]] | None,
                codes: dict[int, str] | None = None) -> dict[str, Any] | None:
    """Honest merchants in the inspection queue at the end of the run (None: the queue
    was not fetched). An item names a scale (its merchant in the truth), else a merchant
    id (``codes``); the kinds counted are those the gateway says counted (``reasons``)."""
    if queue is None:
        return None
    scales, merchants = truth["scales"], truth["merchants"]
    devices: set[str] = set()
    by_merchant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in queue:
        if it.get("in_queue") is False:  # every item of the queue is in it; be safe
            continue
        dev = it.get("device")
        if dev is not None and dev in scales:
            devices.add(dev)
            if scales[dev].get("merchant"):
                by_merchant[scales[dev]["merchant"]].append(it)
        elif it.get("merchant_id") in (codes or {}):
            by_merchant[(codes or {})[it["merchant_id"]]].append(it)
    honest = [c for c, m in merchants.items() if m["honest"]]
    queued = {c: by_merchant[c] for c in honest if c in by_merchant}
    n_h, days = len(honest), int(truth["fleet"].get("days", 1))
    p_day = (len(queued) / n_h / days) if n_h else 0.0
    grounds: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for items in queued.values():
        grounds.update({g for it in items for g in it.get("grounds") or ["evidence"]})
        kinds.update({r["kind"] for it in items for r in it.get("reasons") or []
                      if r.get("counted") and r["kind"] != "verification-overdue"})
    return {
        "items": len(queue), "devices": sorted(devices),
        "honest_merchants": n_h, "in_queue": len(queued),
        "share": (len(queued) / n_h) if n_h else None,
        "month_share_estimate": 1 - (1 - p_day) ** 30,
        "by_grounds": dict(sorted(grounds.items())), "by_kind": dict(sorted(kinds.items())),
        "merchants": {c: sorted({r["kind"] for it in items for r in it.get("reasons") or []
                                 if r.get("counted")})
                      for c, items in sorted(queued.items())[:50]},
    }


def check_gateway_holds(gateway: Any, truth: dict[str, Any]) -> int:
    """How many of the truth's devices the gateway knows; :class:`EvaluateError` if none.

    A gateway without any of them (another one, or its database reset) has no findings
    about the fleet: scoring it would report every cheat as missed.
    """
    r = gateway.http.get("/api/v1/scales")  # a list, not a page: every scale at once
    r.raise_for_status()
    held = {s["device"] for s in r.json()} & set(truth["scales"])
    if not held:
        markets = ", ".join(sorted(truth["markets"])) or "none"
        raise EvaluateError(
            f"the gateway at {gateway.http.base_url} holds none of the truth's "
            f"{len(truth['scales'])} devices (markets {markets}): it is not the gateway this "
            "fleet ran against, or its database was reset since")
    return len(held)


def fetch(gateway: Any, truth: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Findings and merchant ids (gateway id → credit code) of the truth's markets.

    Refuses (:class:`EvaluateError`) a gateway that holds none of the truth's devices."""
    check_gateway_holds(gateway, truth)
    findings = gateway.pages("/api/v1/findings")
    codes: dict[int, str] = {}
    for market in truth["markets"]:
        for m in gateway.pages("/api/v1/merchants", market=market):
            if m.get("credit_code"):
                codes[int(m["id"])] = m["credit_code"]
    return findings, codes
