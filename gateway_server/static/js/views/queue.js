// The inspection queue: only scales whose evidence crosses the threshold (an honest scale
// has such a day with probability ≤ 1/10,000), then those overdue for verification (a
// legal reason); each with its evidence and what it means, the kinds that counted and the
// observations beside them, the test loads to use; open tasks.
import { api, blobUrl } from "../api.js";
import { card, h, link, table } from "../dom.js";
import { date, dateTime, kg, yuan } from "../format.js";
import { L, kindText, lang, severityText } from "../i18n.js";
import { deviceLabels, deviceLink, deviceName } from "../labels.js";
import { massText } from "../messages.js";
import { evidenceText, groundsText, reasonItem, riskModel, thresholdText } from "./risk.js";

/** "1.2 %": a share of two integers, for reading (never for judging). */
export function pctText(part, whole) {
  if (!whole) return "—";
  const per10k = Math.round((10000 * part) / whole);
  return (per10k / 100).toFixed(per10k < 1000 ? 1 : 0).replace(/\.0$/, "") + " %";
}

/** What the evidence quantifies: "短少 50 g / 1 kg（5 %）· 0.30 元 · 估计每天 1.74 元". */
export function shortfallText(sf) {
  if (!sf) return null;
  const parts = [];
  if (sf.short_mg !== null && sf.short_mg !== undefined && sf.sold_mg) {
    parts.push(L(`短少 ${massText(sf.short_mg)} / ${massText(sf.sold_mg)}（${pctText(sf.short_mg, sf.sold_mg)}，${sf.sales} 笔）`,
      `short ${massText(sf.short_mg)} of ${massText(sf.sold_mg)} (${pctText(sf.short_mg, sf.sold_mg)}, ${sf.sales} sale${sf.sales > 1 ? "s" : ""})`));
  }
  if (sf.per_sale_mg) parts.push(L(`每笔多计 ${massText(sf.per_sale_mg)}`, `${massText(sf.per_sale_mg)} per sale`));
  if (sf.fen) parts.push(L(`多收 ${yuan(sf.fen)} 元`, `overcharged ${yuan(sf.fen)} yuan`));
  if (sf.fen_per_day !== null && sf.fen_per_day !== undefined && sf.fen_per_day !== sf.fen) {
    parts.push(L(`估计当天 ${yuan(sf.fen_per_day)} 元（当天 ${sf.day_sales} 笔交易 ${yuan(sf.day_turnover_fen)} 元）`,
      `≈ ${yuan(sf.fen_per_day)} yuan that day (${sf.day_sales} sales, ${yuan(sf.day_turnover_fen)} yuan)`));
  }
  return parts.join(" · ");
}

const SEVERITIES = ["low", "medium", "high", "critical"];
const KINDS = ["impact", "impact-repeated", "zero-offset", "zero-offset-persistent", "tare-omission",
  "untared-tray-goods", "amount-mismatch", "price-decimal-trick", "price-mismatch", "scale-too-coarse",
  "calibration-change", "k-factor-drift", "residual-gain", "residual-additive", "residual-both",
  "residual-excess", "reweigh-short", "untracked-sales", "idle-while-peers-trade", "verification-overdue",
  "offline-trading-hours", "bad-signature", "sequence-gap", "identity-mismatch"];

export async function render(root, _args, ctx) {
  const [tasks, labels, model, markets] = await Promise.all([
    api("/inspection-tasks"), deviceLabels(), riskModel(), api("/markets"),
  ]);
  const filters = { market: "", kind: "", severity: "", status: "" };
  const select = (key, label, options) => h("label", {}, label, h("select", { id: "filter-" + key, onchange: (ev) => {
    filters[key] = ev.target.value;
    redraw();
  } }, h("option", { value: "" }, L("全部", "all")), options.map(([v, t]) => h("option", { value: v }, t))));
  const updated = h("span", { class: "muted small", id: "queue-updated" });
  const filterBar = h("div", { class: "filters", id: "queue-filters" },
    select("market", L("市场", "Market"), markets.map((m) => [m.id, (lang() === "en" && m.name_en) || m.name])),
    select("kind", L("问题类型", "Kind"), KINDS.map((k) => [k, kindText(k)])),
    select("severity", L("级别（不低于）", "Severity (at least)"), SEVERITIES.map((k) => [k, severityText(k)])),
    select("status", L("任务", "Task"), [["untasked", L("未派任务", "no task yet")], ["tasked", L("已派任务", "task open")]]),
    h("button", { type: "button", class: "ghost", id: "queue-csv", onclick: async () => {
      const u = await blobUrl("/inspection-queue.csv", { ...filters, lang: lang() === "en" ? "en" : "zh" });
      const a = h("a", { href: u, download: L("检查队列.csv", "inspection-queue.csv") });
      document.body.appendChild(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(u), 10000);
    } }, L("导出 CSV", "Export CSV")), updated);
  let queue = await api("/inspection-queue", { params: { limit: 100 } });
  const maxRisk = () => Math.max(1, ...queue.map((q) => q.risk));
  const merchantCell = (id, name) => (id !== null && id !== undefined
    ? link(name || (labels && [...labels.values()].find((x) => x.merchantId === id)?.merchant) || L("商户", "merchant"), "merchant", id) : "—");
  root.appendChild(h("h1", {}, L("检查队列（按证据排序）", "Inspection queue (ranked by evidence)")));
  root.append(h("p", { class: "muted" }, L(
    "只有证据达到门槛的计量秤进入队列（证据越强越靠前），其后是检定过期的计量秤（法定理由）。证据 E 表示诚实秤一天内出现同样强的证据的概率为 1 : 10^E。未达门槛的问题作为观察记录显示在计量秤和商户页面。试验载荷按 JJG 539 选在最小秤量、500e、2000e 和最大秤量附近。",
    "Only scales whose evidence crosses the threshold enter the queue (strongest first), then scales overdue for verification (a legal reason). Evidence E means an honest scale has a day this strong with odds 1 : 10^E. What stays below the threshold is an observation, shown on the scale and merchant pages. Test loads follow JJG 539: near Min, 500 e, 2,000 e and Max.")),
    h("p", { class: "muted small", id: "threshold" }, thresholdText(model)), filterBar);
  const msg = h("p", { class: "ok-msg", role: "status" });
  const queueCard = card(null);
  root.appendChild(queueCard);
  const drawQueue = () => { queueCard.replaceChildren(table([
    { label: "#", cls: "num", value: (q) => String(queue.indexOf(q) + 1) },
    { label: L("证据", "Evidence"), cls: "risk", value: (q) => (q.evidence > 0 ? h("span", {},
      h("span", { class: "riskbar" },
        h("span", { class: "track" }, h("span", { class: "fill", "data-w": Math.round((100 * q.risk) / maxRisk()) })),
        h("b", {}, q.evidence.toFixed(1))),
      h("div", { class: "small" }, evidenceText(q.evidence)),
      q.day_ms ? h("div", { class: "muted small" }, date(q.day_ms)) : null) : "—") },
    { label: L("理由", "Grounds"), value: (q) => (q.grounds || []).map(groundsText).join(L("；", "; ")) },
    { label: L("市场 · 摊位", "Market · stall"), value: (q) => h("span", {},
      h("span", { class: "market" }, (lang() === "en" && q.market_name_en) || q.market_name || L("未登记市场", "unregistered market")),
      h("br"), h("b", { class: "stall" }, q.scale_role === "fair" ? L("公平秤", "fair scale")
        : q.stall_no ? L("摊位 ", "stall ") + q.stall_no : L("摊位未登记", "no stall"))) },
    { label: L("商户（当时绑定）", "Merchant (bound then)"), value: (q) => h("span", {}, merchantCell(q.merchant_id, q.merchant_name),
      q.merchant_id !== null && q.merchant_at_ms ? h("div", { class: "muted small" }, L("绑定于 ", "bound at ") + dateTime(q.merchant_at_ms)) : null) },
    { label: L("计量秤", "Scale"), value: (q) => deviceLink(labels, q.device, { stall: q.stall_no, model: q.scale_model, role: q.scale_role }) },
    { label: L("短少与金额", "Shortfall"), cls: "shortfall", value: (q) => shortfallText(q.shortfall) || h("span", { class: "muted" }, L("证据未给出数量", "no quantity in the evidence")) },
    { label: L("问题（计入的加粗，其余为观察）", "Findings (counted in bold, the rest observations)"),
      value: (q) => h("ul", { class: "reasons" }, q.reasons.map((r) => reasonItem(r))) },
    { label: L("试验载荷 (kg)", "Test loads (kg)"), value: (q) => q.test_loads_mg.map((m) => kg(m)).join(" · ") || "—" },
    { label: "", value: (q) => h("span", { class: "actions" },
      h("a", { class: "button", href: "#/inspect/" + encodeURIComponent(q.device) }, L("检查", "Inspect")),
      h("button", { type: "button", class: "ghost", onclick: async (ev) => {
        ev.target.disabled = true;
        const t = await api("/inspection-tasks", { method: "POST", body: { device: q.device } });
        msg.textContent = L(`已创建检查任务 #${t.id}（${deviceName(labels, q.device)}）`, `Task #${t.id} created for ${deviceName(labels, q.device)}`);
        refreshTasks();
        redraw();
      } }, L("派任务", "Create task"))) },
  ], queue, { empty: L("没有需要检查的计量秤", "No scale needs inspection"), id: "queue" }));
    root.querySelectorAll(".riskbar .fill").forEach((el) => { el.style.width = el.dataset.w + "%"; });
    updated.textContent = L("更新于 ", "updated ") + dateTime(Date.now());
  };
  drawQueue();
  let seq = 0;
  async function redraw() {
    const mine = ++seq;
    const got = await api("/inspection-queue", { params: { limit: 100, ...filters } });
    if (mine !== seq) return;  // a newer filter or event won
    queue = got;
    drawQueue();
  }
  root.appendChild(msg);
  const taskBox = card(L("待办检查任务", "Open inspection tasks"));
  root.appendChild(taskBox);
  function drawTasks(list) {
    taskBox.replaceChildren(h("h2", {}, L("待办检查任务", "Open inspection tasks")), table([
      { label: "#", value: (t) => String(t.id) },
      { label: L("创建", "Created"), value: (t) => dateTime(t.created_ms) },
      { label: L("计量秤", "Scale"), value: (t) => deviceLink(labels, t.device) },
      { label: L("商户", "Merchant"), value: (t) => merchantCell(t.merchant_id) },
      { label: L("证据", "Evidence"), cls: "num", value: (t) => (t.risk ? (t.risk / 10).toFixed(1) : "—") },
      { label: L("原因", "Reason"), value: (t) => t.reason },
      { label: "", value: (t) => h("a", { class: "button", href: `#/inspect/${encodeURIComponent(t.device)}/${t.id}` }, L("执行", "Do it")) },
    ], list, { empty: L("暂无任务", "No open tasks"), id: "tasks" }));
  }
  async function refreshTasks() { drawTasks(await api("/inspection-tasks")); }
  drawTasks(tasks);
  // live: a new finding may move a scale into the queue; coalesce bursts into one reload
  let timer = null;
  const onFinding = () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; redraw().catch(() => {}); }, 1000);
  };
  ctx.live.addEventListener("finding", onFinding);
  return () => {
    ctx.live.removeEventListener("finding", onFinding);
    if (timer) clearTimeout(timer);
  };
}
