// The risk of a scale or merchant in words (docs/detection.md, "The inspection queue").
// Evidence E of a market day = −log10 of the probability that an honest scale has a day
// that strong: "honest odds 1 : 10^E". A scale is in the queue from a day at or below the
// threshold (/risk/model); an overdue verification is a legal reason of its own. What
// stays below is an observation: shown here, never in the queue.
import { api } from "../api.js";
import { badge, card, h, link, table } from "../dom.js";
import { date } from "../format.js";
import { L, groundText, kindLabel, lang, severityText } from "../i18n.js";
import { deviceLink } from "../labels.js";

let modelPromise = null;

/** The evidence table and threshold, fetched once per page load. */
export function riskModel() {
  modelPromise ||= api("/risk/model").catch((err) => { modelPromise = null; throw err; });
  return modelPromise;
}

const SUP = "⁰¹²³⁴⁵⁶⁷⁸⁹";

/** 10^e as "16,000" (two significant digits), or "1.6 × 10⁸" when large. */
export function oddsNumber(e) {
  const v = 10 ** e;
  if (e < 7) return new Intl.NumberFormat(lang() === "en" ? "en" : "zh-CN", { maximumSignificantDigits: 2 }).format(v);
  const exp = Math.floor(e);
  const mant = (10 ** (e - exp)).toFixed(1);
  return `${mant} × 10${String(exp).split("").map((d) => SUP[Number(d)]).join("")}`;
}

/** "evidence 4.2 · honest odds 1 : 16,000" (or "no evidence"). */
export function evidenceText(evidence) {
  if (!evidence) return L("无证据", "no evidence");
  return L(`证据 ${evidence.toFixed(1)} · 诚实秤概率 1 : ${oddsNumber(evidence)}`,
    `evidence ${evidence.toFixed(1)} · honest odds 1 : ${oddsNumber(evidence)}`);
}

export function groundsText(g) {
  return groundText(g);
}

/** One reason of a queue item or risk: its label, how many, and what it weighs. */
export function reasonItem(r, { withLink = true } = {}) {
  const label = kindLabel(r.kind, r.title);
  const weighs = r.weight > 0;
  const what = r.kind === "verification-overdue" ? (r.due_on_ms ? " (" + date(r.due_on_ms) + ")" : "")
    : weighs ? " · " + L(`每天 ${pct(r.p_day)}`, `${pct(r.p_day)} of honest days`)
      : " · " + L("观察，不计入", "observation, does not count");
  return h("li", { class: r.counted ? "counted" : weighs ? "" : "muted" },
    r.kind === "verification-overdue" ? badge(L("法定", "legal"), "sev-medium") : badge(severityText(r.severity), "sev-" + r.severity), " ",
    withLink && r.finding_ids && r.finding_ids.length ? link(label, "finding", r.finding_ids[0]) : label,
    r.count > 1 ? " ×" + r.count : "", h("span", { class: "muted" }, what));
}

function pct(p) {
  if (p === null || p === undefined) return "—";
  if (p >= 0.01) return (100 * p).toFixed(p >= 0.1 ? 0 : 1) + " %";
  return "1/" + oddsNumber(-Math.log10(p));
}

/** The queue's threshold in one sentence. */
export function thresholdText(model) {
  return L(`门槛：诚实秤一天内达到的概率不超过 1/${oddsNumber(-Math.log10(model.alpha_day))}（证据 ≥ ${model.threshold_evidence.toFixed(1)}）；按此模型诚实秤每月进入检查队列的概率约 ${(100 * model.honest_entry_p_month).toFixed(1)} %。一天内同一类问题重复出现只计一次；同一信号来源的几类问题只取最强者。`,
    `Threshold: an honest scale has such a day with probability at most 1/${oddsNumber(-Math.log10(model.alpha_day))} (evidence ≥ ${model.threshold_evidence.toFixed(1)}); by this model an honest scale enters the queue in a month with probability ≈ ${(100 * model.honest_entry_p_month).toFixed(1)} %. Repeats of a kind within a day count once; kinds reading the same signal count as their strongest.`);
}

/** A card: is it in the queue, why, the evidence and every kind with what it weighs. */
export function riskCard(r, model, { id = "risk" } = {}) {
  const status = r.in_queue ? badge(L("在检查队列中", "In the inspection queue"), "sev-high")
    : badge(L("未达检查门槛（仅观察）", "Below the threshold (observations only)"), "grey");
  const rows = r.reasons || [];
  return card(L("风险与证据", "Risk and evidence"),
    h("div", { id },
      h("p", {}, status, " ", h("b", { class: "evidence" }, evidenceText(r.evidence)),
        r.day_ms ? h("span", { class: "muted" }, " · " + L("最强的一天：", "strongest day: ") + date(r.day_ms)) : ""),
      r.grounds && r.grounds.length ? h("p", {}, L("进入队列的理由：", "Queued because: "), r.grounds.map(groundsText).join(L("；", "; "))) : null,
      rows.length ? h("ul", { class: "reasons" }, rows.map((x) => reasonItem(x))) : h("p", { class: "muted" }, L("没有待处理问题", "No open findings")),
      model ? h("p", { class: "muted small" }, thresholdText(model)) : null));
}

/** A merchant's risk: its strongest scale decides; each scale with its evidence. */
export function merchantRiskCard(m, model, labels = null) {
  const status = m.in_queue ? badge(L("在检查队列中", "In the inspection queue"), "sev-high")
    : badge(L("未达检查门槛（仅观察）", "Below the threshold (observations only)"), "grey");
  return card(L("风险与证据", "Risk and evidence"),
    h("p", { id: "merchant-risk" }, status, " ", h("b", { class: "evidence" }, evidenceText(m.evidence)),
      m.device ? [" · ", L("最强：", "strongest: "), deviceLink(labels, m.device)] : ""),
    table([
      { label: L("计量秤", "Scale"), value: (s) => deviceLink(labels, s.device) },
      { label: L("证据", "Evidence"), value: (s) => evidenceText(s.evidence) },
      { label: L("队列", "Queue"), value: (s) => (s.in_queue ? s.grounds.map(groundsText).join(L("；", "; ")) : L("否", "no")) },
      { label: L("问题", "Findings"), value: (s) => h("ul", { class: "reasons" }, s.reasons.map((x) => reasonItem(x))) },
    ], m.scales, { empty: L("未绑定计量秤", "No scale bound"), id: "merchant-risk-scales" }),
    model ? h("p", { class: "muted small" }, thresholdText(model)) : null);
}
