// The inspection form: test loads → indications → POST /api/v1/inspections; each load's
// verdict against the in-service MPE comes back from the API and is shown per load.
import { api } from "../api.js";
import { badge, card, h, kv, link, table } from "../dom.js";
import { fracKg, kg, parseKg } from "../format.js";
import { L, kindLabel, listText, statusText, verdictText } from "../i18n.js";
import { evidenceText, groundsText } from "./risk.js";
import { deviceLabels, deviceName } from "../labels.js";

export async function render(root, [device, taskArg]) {
  const [sc, queue, tasks, labels] = await Promise.all([
    api("/registry/scales/" + encodeURIComponent(device)), api("/inspection-queue", { params: { limit: 1000 } }),
    api("/inspection-tasks"), deviceLabels(),
  ]);
  const q = queue.find((x) => x.device === device);
  const myTasks = tasks.filter((t) => t.device === device);
  const task = myTasks.find((t) => String(t.id) === String(taskArg)) || myTasks[0] || null;
  const loads = (task && task.test_loads_mg.length ? task.test_loads_mg : q ? q.test_loads_mg : []);
  root.appendChild(h("h1", {}, L("现场检查 ", "Inspection of "), link(deviceName(labels, device), "scale", device)));
  root.appendChild(h("p", { class: "muted" }, `${L("最大秤量", "Max")} ${kg(sc.max_mg)} kg · e = ${kg(sc.e_mg)} kg · ${sc.accuracy_class || "III"} · `,
    L("按使用中检查的最大允许误差（JJG 539，检定 MPE 的 2 倍）判定。", "Judged against the in-service MPE (JJG 539: twice the verification MPE).")));
  if (q) {
    const counted = q.reasons.filter((r) => r.counted);
    root.appendChild(h("p", { id: "why" }, L("检查原因：", "Why: "),
      (q.grounds || []).map(groundsText).join(L("；", "; ")),
      q.evidence > 0 ? " · " + evidenceText(q.evidence) : "", counted.length ? " · " : "",
      counted.map((r) => kindLabel(r.kind, r.title) + (r.count > 1 ? " ×" + r.count : "")).join(L("；", "; "))));
  }

  const rows = h("tbody");
  function mpeCell(input, out) {
    const mg = parseKg(input.value);
    if (mg === null || mg <= 0) { out.textContent = "—"; return; }
    if (sc.max_mg && mg > sc.max_mg) {
      out.textContent = L(`超过最大秤量 ${kg(sc.max_mg)} kg`, `above Max ${kg(sc.max_mg)} kg`);
      return;
    }
    api("/metrology/mpe", { params: { load_mg: mg, e_mg: sc.e_mg, max_mg: sc.max_mg, accuracy_class: sc.accuracy_class || "III" } })
      .then((r) => { out.textContent = "±" + fracKg(r.mpe_mg); })
      .catch((err) => { out.textContent = String(err.message || err); });
  }
  function addRow(loadMg) {
    const load = h("input", { class: "load", inputmode: "decimal", value: loadMg ? kg(loadMg) : "", "aria-label": L("载荷 kg", "load kg") });
    const ind = h("input", { class: "indication", inputmode: "decimal", "aria-label": L("示值 kg", "indication kg") });
    const mpe = h("td", { class: "num mpe" }, "—");
    load.addEventListener("change", () => mpeCell(load, mpe));
    const tr = h("tr", {}, h("td", {}, load), h("td", {}, ind), mpe,
      h("td", {}, h("button", { type: "button", class: "ghost small", onclick: () => tr.remove() }, "✕")));
    rows.appendChild(tr);
    if (loadMg) mpeCell(load, mpe);
  }
  (loads.length ? loads : [null]).forEach(addRow);

  const taskSel = h("select", { id: "task" }, h("option", { value: "" }, L("（无任务）", "(no task)")),
    myTasks.map((t) => h("option", { value: t.id, selected: task && t.id === task.id }, `#${t.id} · ${t.reason}`)));
  const fraud = h("input", { type: "checkbox", id: "fraud" });
  const notes = h("textarea", { id: "notes", rows: 2, maxlength: 4000 });
  const err = h("p", { class: "error", role: "alert" });
  const result = h("div", { id: "result" });
  const form = h("form", { id: "inspection-form", class: "card" },
    h("h2", {}, L("试验载荷与示值", "Test loads and indications")),
    h("div", { class: "table-wrap" }, h("table", { class: "form-table" },
      h("thead", {}, h("tr", {}, h("th", {}, L("载荷 (kg)", "Load (kg)")), h("th", {}, L("示值 (kg)", "Indication (kg)")),
        h("th", { class: "num" }, "MPE (kg)"), h("th", {}))), rows)),
    h("p", {}, h("button", { type: "button", class: "ghost", onclick: () => addRow(null) }, L("+ 增加载荷", "+ Add load"))),
    h("div", { class: "form-grid" },
      h("label", {}, L("检查任务", "Task"), taskSel),
      h("label", { class: "check" }, fraud, L("查实作弊（红牌、黑榜）", "Cheating established (red card, black list)")),
      h("label", { class: "wide" }, L("备注", "Notes"), notes)),
    err, h("button", { type: "submit", id: "submit-inspection" }, L("提交检查结果", "Record the inspection")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    const pairs = [];
    for (const tr of rows.children) {
      const load = parseKg(tr.querySelector(".load").value);
      const ind = parseKg(tr.querySelector(".indication").value);
      if (load === null || ind === null || load <= 0) {
        err.textContent = L("请以 kg 填写每个载荷和示值（最多 6 位小数）", "Enter each load and indication in kg (up to 6 decimals)");
        return;
      }
      pairs.push({ load_mg: load, indication_mg: ind });
    }
    if (!pairs.length) { err.textContent = L("至少一个载荷", "At least one load"); return; }
    const body = { device, loads: pairs, fraud: fraud.checked, notes: notes.value };
    if (taskSel.value) body.task_id = Number(taskSel.value);
    try {
      const r = await api("/inspections", { method: "POST", body });
      const m = r.merchant_id !== null ? await api("/merchants/" + r.merchant_id) : null;
      showResult(result, r, m);
      form.querySelector("#submit-inspection").disabled = true;
    } catch (e) {
      err.textContent = String(e.message || e);
    }
  });
  root.appendChild(form);
  root.appendChild(result);
}

function showResult(box, r, m) {
  const pass = r.verdict === "pass";
  box.replaceChildren(card(L("检查结论", "Verdict"),
    h("p", { class: "verdict " + (pass ? "pass" : "fail"), id: "verdict" }, verdictText(r.verdict),
      r.fraud === "yes" ? " · " + L("作弊", "fraud") : ""),
    table([
      { label: L("载荷 (kg)", "Load (kg)"), cls: "num", value: (c) => kg(c.load_mg) },
      { label: L("示值 (kg)", "Indication (kg)"), cls: "num", value: (c) => kg(c.indication_mg) },
      { label: L("误差 (kg)", "Error (kg)"), cls: "num", value: (c) => kg(c.error_mg, { sign: true }) },
      { label: "MPE (kg)", cls: "num", value: (c) => "±" + fracKg(c.mpe_mg) },
      { label: L("判定", "Verdict"), value: (c) => badge(c.ok ? L("合格", "ok") : L("超差", "out of MPE"), c.ok ? "ok" : "sev-high") },
    ], r.checks, { id: "checks" }),
    r.merchant_status ? kv([
      [L("商户", "Merchant"), h("span", {}, link(m ? m.name : "#" + r.merchant_id, "merchant", r.merchant_id),
        m ? [" · ", h("a", { href: "/m/" + encodeURIComponent(m.trust_token), target: "_blank", rel: "noopener" }, L("消费者页面", "consumer page"))] : "")],
      [L("商户状态", "Merchant status"), h("span", { id: "merchant-status" }, statusText(r.merchant_status.status),
        r.merchant_status.list_status !== "none" ? " · " + listText(r.merchant_status.list_status) : "")],
    ]) : h("p", { class: "muted" }, L("该秤未绑定商户", "The scale is bound to no merchant"))));
}
