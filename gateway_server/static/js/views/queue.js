// The inspection queue: only scales whose evidence crosses the threshold (an honest scale
// has such a day with probability ≤ 1/10,000), then those overdue for verification (a
// legal reason); each with its evidence and what it means, the kinds that counted and the
// observations beside them, the test loads to use; open tasks.
import { api } from "../api.js";
import { card, h, link, table } from "../dom.js";
import { date, dateTime, kg } from "../format.js";
import { L } from "../i18n.js";
import { evidenceText, groundsText, reasonItem, riskModel, thresholdText } from "./risk.js";

export async function render(root) {
  const [queue, tasks, merchants, model] = await Promise.all([
    api("/inspection-queue", { params: { limit: 100 } }), api("/inspection-tasks"),
    api("/merchants", { params: { limit: 1000 } }), riskModel(),
  ]);
  const names = Object.fromEntries(merchants.items.map((m) => [m.id, m.name]));
  const maxRisk = Math.max(1, ...queue.map((q) => q.risk));
  const merchantCell = (id) => (id !== null && id !== undefined ? link(names[id] || "#" + id, "merchant", id) : "—");
  root.appendChild(h("h1", {}, L("检查队列（按证据排序）", "Inspection queue (ranked by evidence)")));
  root.append(h("p", { class: "muted" }, L(
    "只有证据达到门槛的计量秤进入队列（证据越强越靠前），其后是检定过期的计量秤（法定理由）。证据 E 表示诚实秤一天内出现同样强的证据的概率为 1 : 10^E。未达门槛的问题作为观察记录显示在计量秤和商户页面。试验载荷按 JJG 539 选在最小秤量、500e、2000e 和最大秤量附近。",
    "Only scales whose evidence crosses the threshold enter the queue (strongest first), then scales overdue for verification (a legal reason). Evidence E means an honest scale has a day this strong with odds 1 : 10^E. What stays below the threshold is an observation, shown on the scale and merchant pages. Test loads follow JJG 539: near Min, 500 e, 2,000 e and Max.")),
    h("p", { class: "muted small", id: "threshold" }, thresholdText(model)));
  const msg = h("p", { class: "ok-msg", role: "status" });
  root.appendChild(card(null, table([
    { label: "#", cls: "num", value: (q) => String(queue.indexOf(q) + 1) },
    { label: L("证据", "Evidence"), cls: "risk", value: (q) => (q.evidence > 0 ? h("span", {},
      h("span", { class: "riskbar" },
        h("span", { class: "track" }, h("span", { class: "fill", "data-w": Math.round((100 * q.risk) / maxRisk) })),
        h("b", {}, q.evidence.toFixed(1))),
      h("div", { class: "muted small" }, evidenceText(q.evidence).split(" · ")[1]),
      q.day_ms ? h("div", { class: "muted small" }, date(q.day_ms)) : null) : "—") },
    { label: L("理由", "Grounds"), value: (q) => (q.grounds || []).map(groundsText).join(L("；", "; ")) },
    { label: L("计量秤", "Scale"), value: (q) => link(q.device, "scale", q.device) },
    { label: L("商户", "Merchant"), value: (q) => merchantCell(q.merchant_id) },
    { label: L("问题（计入的加粗，其余为观察）", "Findings (counted in bold, the rest observations)"),
      value: (q) => h("ul", { class: "reasons" }, q.reasons.map((r) => reasonItem(r))) },
    { label: L("试验载荷 (kg)", "Test loads (kg)"), value: (q) => q.test_loads_mg.map((m) => kg(m)).join(" · ") || "—" },
    { label: "", value: (q) => h("span", { class: "actions" },
      h("a", { class: "button", href: "#/inspect/" + encodeURIComponent(q.device) }, L("检查", "Inspect")),
      h("button", { type: "button", class: "ghost", onclick: async (ev) => {
        ev.target.disabled = true;
        const t = await api("/inspection-tasks", { method: "POST", body: { device: q.device } });
        msg.textContent = L(`已创建检查任务 #${t.id}（${q.device}）`, `Task #${t.id} created for ${q.device}`);
        refreshTasks();
      } }, L("派任务", "Create task"))) },
  ], queue, { empty: L("没有需要检查的计量秤", "No scale needs inspection"), id: "queue" })));
  root.querySelectorAll(".riskbar .fill").forEach((el) => { el.style.width = el.dataset.w + "%"; });
  root.appendChild(msg);
  const taskBox = card(L("待办检查任务", "Open inspection tasks"));
  root.appendChild(taskBox);
  function drawTasks(list) {
    taskBox.replaceChildren(h("h2", {}, L("待办检查任务", "Open inspection tasks")), table([
      { label: "#", value: (t) => String(t.id) },
      { label: L("创建", "Created"), value: (t) => dateTime(t.created_ms) },
      { label: L("计量秤", "Scale"), value: (t) => link(t.device, "scale", t.device) },
      { label: L("商户", "Merchant"), value: (t) => merchantCell(t.merchant_id) },
      { label: L("证据", "Evidence"), cls: "num", value: (t) => (t.risk ? (t.risk / 10).toFixed(1) : "—") },
      { label: L("原因", "Reason"), value: (t) => t.reason },
      { label: "", value: (t) => h("a", { class: "button", href: `#/inspect/${encodeURIComponent(t.device)}/${t.id}` }, L("执行", "Do it")) },
    ], list, { empty: L("暂无任务", "No open tasks"), id: "tasks" }));
  }
  async function refreshTasks() { drawTasks(await api("/inspection-tasks")); }
  drawTasks(tasks);
}
