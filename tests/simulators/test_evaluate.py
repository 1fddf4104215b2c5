"""evaluate.score on a hand-made truth and finding set: every metric checked by hand."""

from __future__ import annotations

from simulators.evaluate import GRACE_MS, score, to_markdown, write_docs_section

T0 = 1_930_255_200_000
MIN = 60_000


def _truth() -> dict:
    def scale(merchant: str, scenarios: list, reweighs: list | None = None) -> dict:
        return {"market": "m1", "merchant": merchant, "model": "trace-15kg-5g", "role": "trade",
                "clock_skew_ms": 0, "sales": 50, "events": 100, "scenarios": scenarios,
                "reweighs": reweighs or []}

    sc = lambda kind, onset, size=0.1: {"kind": kind, "onset_ms": onset, "size": size,  # noqa: E731
                                         "effective": True, "cheated_sales": 5}
    scales = {
        # impact found 2 min after onset
        "s-imp1": scale("M1", [sc("impact", T0 + 60 * MIN)]),
        # impact found 10 min after onset (misses the 5-minute target)
        "s-imp2": scale("M2", [sc("impact", T0 + 60 * MIN)]),
        # preset base never found
        "s-pre": scale("M3", [sc("preset-base", T0 + 30 * MIN, 0.05)]),
        # remote gain 20 %: found by the 3rd re-weigh after onset (one re-weigh before onset)
        "s-gain": scale("M4", [sc("remote-gain", T0 + 60 * MIN, 0.2)], reweighs=[
            [T0 + 50 * MIN, "t0", "fair", 1], [T0 + 70 * MIN, "t1", "fair", 2],
            [T0 + 80 * MIN, "t2", "fair", 3], [T0 + 90 * MIN, "t3", "fair", 4],
            [T0 + 95 * MIN, "t4", "fair", 5]]),
        # chip gain 10 %, not found, only 2 re-weighs after onset: censored
        "s-chip": scale("M5", [sc("chip-gain", T0 + 60 * MIN)], reweighs=[
            [T0 + 70 * MIN, "u1", "fair", 6], [T0 + 75 * MIN, "u2", "fair", 7]]),
        # honest scales; one gets a false impact flag, one a dismissed sequence gap
        "s-h1": scale("H1", []),
        "s-h2": scale("H2", []),
        "s-h3": scale("H3", [{"kind": "outage", "onset_ms": T0, "size": 20, "effective": True}]),
        "s-h4": scale("H4", []),
        "fair": {"market": "m1", "merchant": None, "model": "toledo-15kg-5g", "role": "fair",
                 "clock_skew_ms": 0, "sales": 0, "events": 7, "scenarios": [], "reweighs": []},
    }
    merchants = {code: {"name": code, "market": "m1", "stall": "meat", "stall_no": "A-1",
                        "devices": [d for d, s in scales.items() if s["merchant"] == code],
                        "prices": {}, "honest": code.startswith("H")}
                 for code in ("M1", "M2", "M3", "M4", "M5", "H1", "H2", "H3", "H4")}
    return {"version": 1, "fleet": {"name": "hand", "seed": 1, "start_ms": T0, "days": 1,
                                    "trading_hours": 4, "markets": 1, "merchants": 9,
                                    "scales": 10, "events": 1000},
            "markets": {"m1": {"fair": "fair"}}, "merchants": merchants, "scales": scales}


def _f(kind: str, device: str | None, ts: int, *, status: str = "open",
       merchant_id: int | None = None) -> dict:
    return {"kind": kind, "device": device, "ts_ms": ts, "status": status,
            "merchant_id": merchant_id, "evidence": {}}


FINDINGS = [
    _f("impact", "s-imp1", T0 + 62 * MIN),
    _f("impact", "s-imp1", T0 + 70 * MIN),
    _f("impact", "s-imp2", T0 + 70 * MIN),
    _f("impact", "s-imp2", T0 + 55 * MIN),  # before the onset (beyond the grace): not a hit
    _f("reweigh-short", "s-gain", T0 + 50 * MIN),  # before the onset
    _f("reweigh-short", "s-gain", T0 + 80 * MIN),  # 2nd re-weigh after onset: found here
    _f("residual-gain", None, T0 + 95 * MIN, merchant_id=44),  # merchant-level, via id map
    _f("impact", "s-h1", T0 + 100 * MIN),  # false flag
    _f("sequence-gap", "s-h2", T0 + 100 * MIN, status="dismissed"),  # filled later: ignored
    _f("zero-offset", "fair", T0 + 10 * MIN),
]


def test_recall_ttd_and_reweighs_to_detect() -> None:
    res = score(_truth(), FINDINGS, {44: "M4"})
    imp = res["types"]["impact"]
    assert (imp["cases"], imp["detected"], imp["recall"]) == (2, 2, 1.0)
    assert imp["recall_5min"] == 0.5
    assert imp["ttd_median_s"] == 360.0  # 2 and 10 minutes
    assert imp["ttd_max_s"] == 600.0
    assert imp["precision"] == 2 / 3  # s-imp1, s-imp2 true; s-h1 false
    assert (imp["tp_scales"], imp["fp_scales"]) == (2, 1)
    pre = res["types"]["preset-base"]
    assert (pre["cases"], pre["detected"], pre["recall"]) == (1, 0, 0.0)
    gain = res["types"]["remote-gain"]
    assert gain["detected"] == 1 and gain["ttd_median_s"] == 20 * 60
    assert gain["within_10_reweighs"] == 1 and gain["recall_10_reweighs"] == 1.0
    case = next(c for c in res["cases"] if c["device"] == "s-gain")
    assert case["reweighs_to_detect"] == 2 and case["reweighs_after"] == 4
    chip = res["types"]["chip-gain"]
    assert chip["detected"] == 0 and chip["censored"] == 1 and chip["recall_10_reweighs"] is None


def test_false_flags_per_honest_merchant() -> None:
    res = score(_truth(), FINDINGS, {44: "M4"})
    ff = res["false_flags"]
    assert ff["honest_merchants"] == 4  # H3 has only a benign outage: still honest
    assert ff["flagged"] == 1 and ff["findings"] == 1  # the dismissed gap does not count
    assert ff["flagged_share"] == 0.25
    assert abs(ff["per_merchant_month"] - 1 / (4 / 30)) < 1e-9
    assert abs(ff["month_share_estimate"] - (1 - 0.75 ** 30)) < 1e-12
    assert res["fair_scale_findings"] == 1
    assert res["kinds"]["impact"] == {"flagged": 3, "tp": 2, "fp": 1, "cross": 0, "findings": 5}


def test_grace_and_markdown(tmp_path) -> None:  # type: ignore[no-untyped-def]
    truth = _truth()
    just = [_f("impact", "s-imp1", T0 + 60 * MIN - GRACE_MS)]  # at the edge of the grace
    assert score(truth, just)["types"]["impact"]["detected"] == 1
    md = to_markdown(score(truth, FINDINGS, {44: "M4"}))
    assert "| impact ◆ | 2 | 2 | 100.0 % | 50.0 % |" in md
    doc = tmp_path / "detection.md"
    doc.write_text("# Detection\n\nother section\n", encoding="utf-8")
    write_docs_section(doc, "first")
    write_docs_section(doc, "second")
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Detection\n\nother section\n\n<!-- fleet-eval:start -->\nsecond\n")
    assert text.count("fleet-eval:start") == 1 and "first" not in text


def _item(device: str | None, *kinds: str, grounds: tuple[str, ...] = ("evidence",),
          merchant_id: int | None = None) -> dict:
    return {"device": device, "merchant_id": merchant_id, "in_queue": True,
            "grounds": list(grounds), "evidence": 5.0,
            "reasons": [{"kind": k, "counted": True} for k in kinds]
            + [{"kind": "impact", "counted": False}]}


QUEUE = [
    _item("s-imp1", "impact"),  # a cheat in the queue
    _item("s-h2", "amount-mismatch"),  # an honest merchant: a false alarm
    _item("s-h4", "verification-overdue", grounds=("verification-overdue",)),  # legal reason
    _item("s-x", "price-decimal-trick", merchant_id=44),  # a scale not in the truth: M4
]


def test_honest_merchants_in_the_queue_are_the_false_alarms() -> None:
    res = score(_truth(), FINDINGS, {44: "M4"}, queue=QUEUE)
    q = res["queue"]
    assert (q["honest_merchants"], q["in_queue"], q["share"]) == (4, 2, 0.5)
    assert q["by_grounds"] == {"evidence": 1, "verification-overdue": 1}
    assert q["by_kind"] == {"amount-mismatch": 1}  # what counted, not the observations
    assert q["merchants"] == {"H2": ["amount-mismatch"], "H4": ["verification-overdue"]}
    assert abs(q["month_share_estimate"] - (1 - 0.5 ** 30)) < 1e-12
    assert q["devices"] == ["s-h2", "s-h4", "s-imp1"] and q["items"] == 4
    assert res["types"]["impact"]["in_queue"] == 1  # s-imp1 of the two impact cases
    assert res["types"]["remote-gain"]["in_queue"] == 0  # its merchant, not its scale
    # the observation figure is unchanged: H1's impact is an observation, not in the queue
    assert res["false_flags"]["flagged"] == 1
    md = to_markdown(res)
    assert ("**False alarms — honest merchants in the inspection queue** at the end of the "
            "run: 2 of 4 (50.0 %)") in md
    assert "**Honest merchants with any observation**" in md and "1 of 4 (25.0 %" in md
    assert "| impact ◆ | 2 | 2 | 100.0 % | 50.0 % |" in md and "| 1/2 |" in md


def test_without_the_queue_the_false_alarms_are_not_measured() -> None:
    res = score(_truth(), FINDINGS, {44: "M4"})
    assert res["queue"] is None and res["types"]["impact"]["in_queue"] is None
    md = to_markdown(res)
    assert "inspection queue**: not measured" in md and "| impact ◆ |" in md


def test_a_preset_base_is_timed_from_when_it_became_visible() -> None:
    """The first idle-pan report after the onset is when a preset base can first be seen
    (``visible_ms``); the time from the onset is kept apart."""
    truth = _truth()
    truth["scales"]["s-pre"]["scenarios"][0]["visible_ms"] = T0 + 38 * MIN
    found = [*FINDINGS, _f("zero-offset", "s-pre", T0 + 40 * MIN)]
    res = score(truth, found)
    case = next(c for c in res["cases"] if c["device"] == "s-pre")
    assert case["visible_ms"] == T0 + 38 * MIN
    assert case["ttd_s"] == 2 * 60 and case["ttd_onset_s"] == 10 * 60
    assert res["types"]["preset-base"]["recall_5min"] == 1.0
    del truth["scales"]["s-pre"]["scenarios"][0]["visible_ms"]  # no visibility: the onset
    case = next(c for c in score(truth, found)["cases"] if c["device"] == "s-pre")
    assert case["ttd_s"] == case["ttd_onset_s"] == 10 * 60 and "visible_ms" not in case
