"""The fleet evaluation as Markdown and files: tables, the docs section, JSON.

What :func:`simulators.evaluate.score` returns, written out: :func:`to_markdown` (recall,
time to detect, precision, honest merchants in the queue and with any observation),
:func:`save` (JSON and Markdown files) and :func:`write_docs_section` (the text between
the fleet-eval markers of a document). No scoring here; ``simulators.evaluate``
re-exports every public name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: cheat types the stream shows (◆ in the table): the stream detectors' 5-minute target
STREAM_VISIBLE = ("impact", "preset-base", "tray-not-tared", "price-trick", "recalibration")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _min(s: float | None) -> str:
    return "–" if s is None else f"{s / 60:.1f}"


def to_markdown(res: dict[str, Any], *, title: str | None = None) -> str:
    """The evaluation as Markdown tables (recall, time to detect, precision, honest
    merchants in the inspection queue and with any observation)."""
    fl, ff, qu = res["fleet"], res["false_flags"], res.get("queue")
    lines = []
    if title:
        lines += [title, ""]
    lines += [
        f"Fleet `{fl['name']}` (seed {fl['seed']}): {fl['scales']:,} scales, "
        f"{fl['merchants']:,} merchants, {fl['markets']} markets, {fl['days']} simulated "
        f"day(s) of {fl['trading_hours']:g} trading hours, {fl['events']:,} events; "
        f"{res['findings_total']:,} findings fetched from the gateway.",
        "",
        "| cheat type | cases | found | recall | ≤ 5 min | TTD median / p90 / max (min) | "
        "≤ 10 re-weighs (gain ≥ 5 %) | precision (TP/FP scales) | first found by | "
        "in the queue at the end |",
        "|---|---:|---:|---:|---:|---|---|---|---|---:|",
    ]
    for t, r in res["types"].items():
        if not r["cases"] and not r["not_effective"]:
            continue
        rw = "–"
        if "recall_10_reweighs" in r:
            rw = (f"{r['within_10_reweighs']}/{r['gain_ge_5pct'] - r['censored']} = "
                  f"{_pct(r['recall_10_reweighs'])}"
                  + (f" ({r['censored']} censored)" if r["censored"] else ""))
        mark = " ◆" if t in STREAM_VISIBLE else ""
        by = ", ".join(f"{k} {v}" for k, v in sorted(r["by"].items(), key=lambda kv: -kv[1]))
        lines.append(
            f"| {t}{mark} | {r['cases']} | {r['detected']} | {_pct(r['recall'])} | "
            f"{_pct(r['recall_5min'])} | {_min(r['ttd_median_s'])} / {_min(r['ttd_p90_s'])} / "
            f"{_min(r['ttd_max_s'])} | {rw} | {_pct(r['precision'])} "
            f"({r['tp_scales']}/{r['fp_scales']}) | {by or '–'} | "
            + ("–" if r.get("in_queue") is None else f"{r['in_queue']}/{r['cases']}") + " |")
    lines += [
        "",
        "◆ stream-visible (target: recall ≥ 0.98 within 5 simulated minutes of becoming visible: "
        "the first cheated sale, for a preset base the first idle-pan report after its onset).",
        "",
        _queue_line(qu),
        "",
        f"**Honest merchants with any observation** (a finding of any kind on one of their "
        f"scales; not an accusation): {ff['flagged']} of {ff['honest_merchants']:,} "
        f"({_pct(ff['flagged_share'])} in the run), "
        f"{ff['findings']} findings = {ff['per_merchant_month'] or 0:.3f} per honest "
        f"merchant-month; per 30 days {_pct(ff['month_share_estimate'])}."
        + (f" By kind: {', '.join(f'{k} {v}' for k, v in sorted(ff['by_kind'].items()))}."
           if ff["by_kind"] else ""),
        "",
        "| finding kind | scales flagged | TP | FP (honest) | other problem | findings |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, r in res["kinds"].items():
        lines.append(f"| {k} | {r['flagged']} | {r['tp']} | {r['fp']} | {r['cross']} | "
                     f"{r['findings']} |")
    return "\n".join(lines) + "\n"


def _queue_line(qu: dict[str, Any] | None) -> str:
    if qu is None:
        return ("**False alarms — honest merchants in the inspection queue**: not measured "
                "(the queue was not fetched from the gateway).")
    why = ", ".join(f"{k} {v}" for k, v in qu["by_grounds"].items())
    kinds = ", ".join(f"{k} {v}" for k, v in qu["by_kind"].items())
    return (f"**False alarms — honest merchants in the inspection queue** at the end of the "
            f"run: {qu['in_queue']} of {qu['honest_merchants']:,} "
            f"({_pct(qu['share'])}); per 30 days {_pct(qu['month_share_estimate'])} "
            f"(target ≤ 0.5 %)." + (f" Why: {why}." if why else "")
            + (f" Kinds that counted: {kinds}." if kinds else "")
            + f" The queue held {qu['items']:,} scales.")


START, END = "<!-- fleet-eval:start -->", "<!-- fleet-eval:end -->"


def write_docs_section(path: Path, body: str) -> None:
    """Replace the text between the fleet-eval markers (created at the end when absent)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{START}\n{body.rstrip()}\n{END}"
    if START in text and END in text:
        a, b = text.index(START), text.index(END) + len(END)
        text = text[:a] + block + text[b:]
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    path.write_text(text, encoding="utf-8")


def save(res: dict[str, Any], *, json_path: Path | None, md_path: Path | None) -> str:
    md = to_markdown(res)
    if json_path is not None:
        json_path.write_text(json.dumps(res, ensure_ascii=False, indent=1, sort_keys=True) + "\n",
                             encoding="utf-8")
    if md_path is not None:
        md_path.write_text(md, encoding="utf-8")
    return md
