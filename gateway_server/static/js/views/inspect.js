// The inspection form: test loads → indications, the standard weights' certificate, place
// and notes → a case (POST /cases, then /cases/{id}/record); the case page (views/case.js,
// #/inspect/case/{id}) shows each load's verdict against the in-service MPE, takes photos
// and the signature, and asks for a confirmation before any card.
import { api } from "../api.js";
import { h, link } from "../dom.js";
import { fracKg, kg, parseKg } from "../format.js";
import { L, kindLabel } from "../i18n.js";
import { evidenceText, groundsText } from "./risk.js";
import { deviceLabels, deviceName } from "../labels.js";
import * as caseView from "./case.js";
import { caseErrorText } from "../casewords.js";

export async function render(root, [device, taskArg]) {
  if (device === "case") return caseView.render(root, taskArg);
  // #/inspect/{device}/case-{id}: record into a case opened before (a re-inspection)
  const caseId = (/^case-(\d+)$/.exec(taskArg || "") || [])[1] || null;
  const [sc, queue, tasks, labels] = await Promise.all([
    api("/registry/scales/" + encodeURIComponent(device)), api("/inspection-queue", { params: { limit: 1000 } }),
    api("/inspection-tasks"), deviceLabels(),
  ]);
  const q = queue.find((x) => x.device === device);
  const myTasks = tasks.filter((t) => t.device === device);
  const task = myTasks.find((t) => String(t.id) === String(taskArg)) || myTasks[0] || null;
  // the task's loads, else the scale's (JJG 539 points of its range, from the API), in the
  // queue or not: a re-inspection needs them as much as a first one
  const own = q ? null : await api("/risk/scales/" + encodeURIComponent(device)).catch(() => null);
  const loads = (task && task.test_loads_mg.length ? task.test_loads_mg
    : q ? q.test_loads_mg : own ? own.test_loads_mg : []);
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
  const weightsCert = h("input", { id: "weights-cert", maxlength: 64 });
  const place = h("input", { id: "place", maxlength: 500 });
  const err = h("p", { class: "error", role: "alert" });
  const form = h("form", { id: "inspection-form", class: "card" },
    h("h2", {}, L("试验载荷与示值", "Test loads and indications")),
    h("div", { class: "table-wrap" }, h("table", { class: "form-table" },
      h("thead", {}, h("tr", {}, h("th", {}, L("载荷 (kg)", "Load (kg)")), h("th", {}, L("示值 (kg)", "Indication (kg)")),
        h("th", { class: "num" }, "MPE (kg)"), h("th", {}))), rows)),
    h("p", {}, h("button", { type: "button", class: "ghost", onclick: () => addRow(null) }, L("+ 增加载荷", "+ Add load"))),
    h("div", { class: "form-grid" },
      h("label", {}, L("检查任务", "Task"), taskSel),
      h("label", {}, L("标准砝码证书编号", "Standard weights' certificate"), weightsCert),
      h("label", {}, L("检查地点", "Place"), place),
      h("label", { class: "check" }, fraud, L("查实作弊（建议红牌、黑榜，签名后确认）", "Cheating established (proposes red card and black list, confirmed after signing)")),
      h("label", { class: "wide" }, L("备注", "Notes"), notes)),
    err, h("button", { type: "submit", id: "submit-inspection" }, L("记录并生成笔录", "Record and open the case file")));
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
    if (!weightsCert.value.trim()) {
      err.textContent = L("请填写标准砝码证书编号", "Give the standard weights' certificate number");
      return;
    }
    const submit = form.querySelector("#submit-inspection");
    submit.disabled = true;
    try {
      const c = caseId ? { id: caseId }
        : await api("/cases", { method: "POST", body: taskSel.value ? { task_id: Number(taskSel.value) } : { device } });
      await api(`/cases/${c.id}/record`, { method: "POST", body: {
        loads: pairs, weights_cert_no: weightsCert.value, place: place.value, notes: notes.value, fraud: fraud.checked } });
      location.hash = "#/inspect/case/" + c.id;
    } catch (e) {
      submit.disabled = false;
      err.textContent = e && e.detail && e.detail.code ? caseErrorText(e) : String(e.message || e);
    }
  });
  root.appendChild(form);
}
