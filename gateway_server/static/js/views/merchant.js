// Merchant detail: status and cards, red/black list, licences, bound scales, findings,
// complaints, re-weighs, inspections; the trust page and the merchant's QR code.
import { api, blobUrl } from "../api.js";
import { badge, card, h, kv, link, table } from "../dom.js";
import { date, dateTime, kg, yuan } from "../format.js";
import { L, categoryText, categoryWords, channelText, listText, methodText, scaleStateText, statusText, verdictText } from "../i18n.js";
import { deviceLabels, deviceLink } from "../labels.js";
import { merchantRiskCard, riskModel } from "./risk.js";
import { incidentsTable, inspectionsTable } from "./scale.js";
import { casesTable, openCaseFor } from "./case.js";
import { OUTCOMES, caseErrorText, complaintCaseText, outcomeText } from "../casewords.js";
import { parseYuan } from "../format.js";

const STATUS_CLS = { normal: "ok", yellow: "card-yellow", red: "card-red", suspended: "card-red", delisted: "grey" };

export function statusBadges(m) {
  return [badge(statusText(m.status), STATUS_CLS[m.status] || ""),
    m.list_status !== "none" ? badge(listText(m.list_status), m.list_status === "red" ? "list-red" : "list-black") : null];
}

export function reweighTable(items, id = "reweighs", labels = null) {
  return table([
    { label: L("时间", "Time"), value: (r) => dateTime(r.ts_ms) },
    { label: L("追溯码 / 摊位", "Trace code / stall"), value: (r) => r.trace_code
      || (r.stall_no ? L("摊位 ", "stall ") + r.stall_no : r.merchant_token ? L("诚信码", "trust code") : "—") },
    { label: L("售出 (kg)", "Sold (kg)"), cls: "num", value: (r) => kg(r.sold_mg) },
    { label: L("复秤 (kg)", "Re-weighed (kg)"), cls: "num", value: (r) => kg(r.reference_mg) },
    { label: L("短少 (kg)", "Short (kg)"), cls: "num", value: (r) => kg(r.shortfall_mg, { sign: true }) },
    { label: L("限值 (kg)", "Limit (kg)"), cls: "num", value: (r) => kg(r.limit_mg) },
    { label: L("方法", "Method"), value: (r) => (r.method ? methodText(r.method) : "—") },
    { label: L("结论", "Verdict"), value: (r) => badge(verdictText(r.verdict), ["violation", "untracked"].includes(r.verdict) ? "sev-high" : ["ok", "matched"].includes(r.verdict) ? "ok" : "grey") },
    { label: L("销售秤", "Sold on"), value: (r) => deviceLink(labels, r.sale_device) },
  ], items, { empty: L("暂无复秤", "No re-weighs"), id });
}

export async function render(root, [id], ctx) {
  const m = await api("/merchants/" + encodeURIComponent(id));
  const [findings, complaintCases, reweighs, inspections, register, prices, cases] = await Promise.all([
    api("/incidents", { params: { merchant_id: m.id } }), api("/complaint-cases", { params: { merchant_id: m.id } }),
    api("/reweighs", { params: { merchant_id: m.id } }), api("/inspections", { params: { merchant_id: m.id } }),
    api("/registry/scales", { params: { market: m.market_id, limit: 1000 } }), api(`/merchants/${m.id}/prices`, { params: { at_ms: Date.now() } }),
    api("/cases", { params: { merchant_id: m.id } }),
  ]);
  const scales = register.items.filter((s) => s.merchant_id === m.id);
  const [labels, markets, live] = await Promise.all([deviceLabels(), api("/markets"), api("/scales")]);
  const marketName = (markets.find((x) => x.id === m.market_id) || {}).name || L("未登记市场", "unregistered market");
  const stateOf = Object.fromEntries(live.map((x) => [x.device, x.state]));
  root.appendChild(h("div", { class: "title-row" }, h("h1", { id: "merchant-title" }, m.name), statusBadges(m)));
  root.appendChild(h("p", { class: "muted" }, L("市场 ", "Market "), marketName, m.stall_no ? " · " + L("摊位 ", "stall ") + m.stall_no : ""));
  const qrBox = h("div", { class: "qr-box" });
  root.appendChild(h("div", { class: "grid2" },
    card(L("商户信息", "Merchant"), kv([
      [L("状态", "Status"), h("span", {}, statusBadges(m))],
      [L("状态原因", "Reason"), m.status_reason || "—"], [L("变更时间", "Changed"), dateTime(m.status_ms)],
      [L("统一社会信用代码", "Credit code"), m.credit_code || "—"], [L("电话", "Phone"), m.phone || "—"],
      [L("经营类别", "Categories"), m.categories.map(categoryWords).join(L("、", ", ")) || "—"],
      ...m.licences.map((l) => [l.kind, `${l.number}${l.valid_until_ms ? " · " + L("有效期至 ", "valid until ") + date(l.valid_until_ms) : ""}`]),
    ])),
    card(L("放心消费诚信码", "Trust QR code"), qrBox,
      h("p", {}, h("a", { href: "/m/" + encodeURIComponent(m.trust_token), target: "_blank", rel: "noopener", id: "trust-link" }, L("打开消费者页面", "Open the consumer page")), " · ",
        h("button", { type: "button", class: "link", onclick: () => download(`/merchants/${m.id}/qr.svg`, `trust-qr-${m.id}.svg`) }, "SVG"), " · ",
        h("button", { type: "button", class: "link", onclick: () => download(`/merchants/${m.id}/qr.png`, `trust-qr-${m.id}.png`, { scale: 20 }) }, "PNG")))));
  blobUrl(`/merchants/${m.id}/qr.svg`).then((u) => qrBox.appendChild(h("img", { src: u, alt: L("诚信码", "trust QR code"), class: "qr" })));

  root.appendChild(card(L("计量秤", "Scales"), table([
    { label: L("计量秤", "Scale"), value: (s) => deviceLink(labels, s.device) },
    { label: L("出厂编号", "Serial"), value: (s) => s.serial || "—" },
    { label: "Max / e (kg)", value: (s) => (s.max_mg ? `${kg(s.max_mg)} / ${kg(s.e_mg)}` : "—") },
    { label: L("检定有效期至", "Verified until"), value: (s) => h("span", {}, date(s.due_on_ms), s.overdue ? [" ", badge(L("已过期", "overdue"), "sev-high")] : "") },
    { label: L("状态", "State"), value: (s) => scaleStateText(stateOf[s.device] || "unknown") },
  ], scales, { empty: L("未绑定计量秤", "No scale bound"), id: "merchant-scales" })));
  const [risk, model] = await Promise.all([api(`/risk/merchants/${m.id}`), riskModel()]);
  root.appendChild(merchantRiskCard(risk, model, labels));
  if (m.status === "yellow" || m.status === "red") {
    root.appendChild(card(L("警示牌", "Card"), h("p", { id: "card-rule" },
      L(`${statusText(m.status)}（${dateTime(m.status_ms)}）。解除须在规定期限后复检合格，并在复检案件中确认解除。`,
        `${statusText(m.status)} (${dateTime(m.status_ms)}). It is lifted by a passing re-inspection after the waiting period, confirmed on that case.`)),
    scales.length ? h("button", { type: "button", id: "reinspect", onclick: () => openCaseFor(scales[0].device) }, L("复检立案", "Open a re-inspection")) : null));
  }
  root.appendChild(card(L("问题", "Findings"), incidentsTable(findings, "merchant-findings", labels)));
  root.appendChild(complaintsCard(m, complaintCases, scales, ctx));
  root.appendChild(card(L("检查案件", "Inspection cases"), casesTable(cases, labels, "merchant-cases")));
  root.appendChild(card(L("公平秤复秤", "Fair-scale re-weighs"), reweighTable(reweighs, "reweighs", labels)));
  root.appendChild(card(L("检查记录", "Inspections"), inspectionsTable(inspections, "merchant-inspections", labels)));
  root.appendChild(card(L("登记价格（明码标价）", "Registered prices"), table([
    { label: "PLU", value: (p) => p.plu }, { label: L("品名", "Name"), value: (p) => p.name },
    { label: L("类别", "Category"), value: (p) => (p.category ? categoryText(p.category) : "—") },
    { label: L("单价 (元/kg)", "Price (yuan/kg)"), cls: "num", value: (p) => yuan(p.unit_price_fen_per_kg) },
    { label: L("生效", "Valid from"), value: (p) => date(p.valid_from_ms) },
  ], prices, { empty: L("未登记价格", "No registered prices") })));
}

async function download(path, name, params = {}) {
  const u = await blobUrl(path, params);
  const a = h("a", { href: u, download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(u), 10000);
}

/** Complaints with their case (number, clock, answer) and what the bureau does with them:
 * open an inspection case for the merchant's scale (any staff), mediate or close with an
 * outcome (admins: the API refuses others). */
function complaintsCard(m, items, scales, ctx) {
  const admin = ctx && ctx.me && ctx.me.role === "admin";
  const msg = h("p", { class: "error", role: "alert", id: "complaint-error" });
  const panel = h("div", { id: "complaint-panel", class: "confirm-box", hidden: true });
  const act = async (fn) => {
    msg.textContent = "";
    try { await fn(); location.reload(); } catch (e) { msg.textContent = caseErrorText(e); }
  };
  function open(c) {
    const note = h("textarea", { id: "complaint-note", rows: 2, maxlength: 2000 });
    const outcome = h("select", { id: "complaint-outcome" }, OUTCOMES.map((o) => h("option", { value: o }, outcomeText(o))));
    const amount = h("input", { id: "complaint-amount", inputmode: "decimal", placeholder: L("金额（元，可空）", "amount (yuan, optional)") });
    panel.hidden = false;
    panel.replaceChildren(h("p", {}, h("b", {}, L("投诉 ", "Complaint ") + c.number), " · ", c.text),
      h("div", { class: "form-grid" }, h("label", { class: "wide" }, L("处理意见", "Note"), note),
        admin ? h("label", {}, L("办结结果", "Outcome"), outcome) : null, admin ? h("label", {}, L("退款 / 赔偿", "Refund / compensation"), amount) : null),
      h("p", {},
        admin ? h("button", { type: "button", id: "mediate-btn", class: "ghost", onclick: () => act(() =>
          api(`/complaint-cases/${encodeURIComponent(c.number)}/mediate`, { method: "POST", body: { note: note.value } })) }, L("转入调解", "Mediate")) : null, " ",
        admin ? h("button", { type: "button", id: "close-btn", onclick: () => act(() => {
          const fen = amount.value.trim() ? parseYuan(amount.value) : null;
          return api(`/complaint-cases/${encodeURIComponent(c.number)}/close`, { method: "POST", body: { outcome: outcome.value, note: note.value, compensation_fen: fen } });
        }) }, L("办结", "Close")) : h("span", { class: "muted" }, L("调解和办结由管理员处理。", "Admins mediate and close."))));
  }
  return card(L("消费投诉", "Complaints"), table([
    { label: L("编号", "Number"), value: (c) => c.number },
    { label: L("时间", "Time"), value: (c) => dateTime(c.opened_ms) },
    { label: L("渠道", "Channel"), value: (c) => channelText(c.channel) },
    { label: L("内容", "Text"), value: (c) => c.text },
    { label: L("答复期限", "Answer due"), value: (c) => dateTime(c.due_ms) },
    { label: L("商户答复", "Answer"), value: (c) => c.answer || "—" },
    { label: L("状态", "State"), value: (c) => h("span", {}, complaintCaseText(c.state), c.outcome ? " · " + outcomeText(c.outcome) : "",
      c.compensation_fen !== null && c.compensation_fen !== undefined ? ` · ${yuan(c.compensation_fen)} ${L("元", "yuan")}` : "") },
    { label: "", value: (c) => (c.state === "closed" ? "" : h("span", { class: "actions" },
      h("button", { type: "button", class: "ghost small handle-complaint", onclick: () => open(c) }, L("处理", "Handle")),
      scales.length ? h("button", { type: "button", class: "ghost small inspect-complaint", onclick: () =>
        openCaseFor(scales[0].device).catch((e) => { msg.textContent = caseErrorText(e); }) }, L("立案检查", "Inspect")) : null)) },
  ], items, { empty: L("暂无投诉", "No complaints"), id: "complaints" }), panel, msg);
}
