// The risk-ranked inspection queue: risk, reasons, the test loads to use; open tasks.
import { api } from "../api.js";
import { badge, card, h, link, table } from "../dom.js";
import { date, dateTime, kg } from "../format.js";
import { L, kindText, severityText } from "../i18n.js";

export async function render(root) {
  const [queue, tasks, merchants] = await Promise.all([
    api("/inspection-queue", { params: { limit: 100 } }), api("/inspection-tasks"),
    api("/merchants", { params: { limit: 1000 } }),
  ]);
  const names = Object.fromEntries(merchants.items.map((m) => [m.id, m.name]));
  const maxRisk = Math.max(1, ...queue.map((q) => q.risk));
  const merchantCell = (id) => (id !== null && id !== undefined ? link(names[id] || "#" + id, "merchant", id) : "—");
  root.appendChild(h("h1", {}, L("检查队列（按风险排序）", "Inspection queue (ranked by risk)")));
  root.appendChild(h("p", { class: "muted" }, L(
    "风险分来自待处理问题（按严重程度加权、随时间衰减）与检定过期；试验载荷按 JJG 539 选在最小秤量、500e、2000e 和最大秤量附近。",
    "Risk adds up open findings (weighted by severity, decaying with age) and overdue verification; test loads follow JJG 539: near Min, 500 e, 2,000 e and Max.")));
  const msg = h("p", { class: "ok-msg", role: "status" });
  root.appendChild(card(null, table([
    { label: "#", cls: "num", value: (q) => String(queue.indexOf(q) + 1) },
    { label: L("风险", "Risk"), cls: "risk", value: (q) => h("span", { class: "riskbar" },
      h("span", { class: "track" }, h("span", { class: "fill", "data-w": Math.round((100 * q.risk) / maxRisk) })),
      h("b", {}, String(q.risk))) },
    { label: L("计量秤", "Scale"), value: (q) => link(q.device, "scale", q.device) },
    { label: L("商户", "Merchant"), value: (q) => merchantCell(q.merchant_id) },
    { label: L("原因", "Reasons"), value: (q) => h("ul", { class: "reasons" }, q.reasons.map((r) => h("li", {},
      badge(severityText(r.severity), "sev-" + r.severity), " ",
      r.finding_ids.length ? link(kindText(r.kind), "finding", r.finding_ids[0]) : kindText(r.kind),
      r.count > 1 ? " ×" + r.count : "", r.due_on_ms ? " (" + date(r.due_on_ms) + ")" : ""))) },
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
      { label: L("风险", "Risk"), cls: "num", value: (t) => String(t.risk) },
      { label: L("原因", "Reason"), value: (t) => t.reason },
      { label: "", value: (t) => h("a", { class: "button", href: `#/inspect/${encodeURIComponent(t.device)}/${t.id}` }, L("执行", "Do it")) },
    ], list, { empty: L("暂无任务", "No open tasks"), id: "tasks" }));
  }
  async function refreshTasks() { drawTasks(await api("/inspection-tasks")); }
  drawTasks(tasks);
}
