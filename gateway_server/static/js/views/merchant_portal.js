// A merchant account's own page (/merchant): its status and trust QR, its scales, the
// complaints it must answer (with the deadline), confirmed findings and re-weighs. Every
// request goes to /api/v1/merchant/*, which takes the merchant from the account.
import { api, blobUrl } from "../api.js";
import { L, statusText, listText, caseStateText, outcomeText, kindLabel, registerStatusText, roleText, verdictText } from "../i18n.js";
import { h } from "../dom.js";
import { dateTime, date, kg } from "../format.js";

function kv(rows) {
  return h("ul", { class: "kv" }, rows.map(([k, v]) =>
    h("li", {}, h("span", { class: "k" }, k), h("span", { class: "v" }, v ?? "—"))));
}

function section(title, ...body) {
  return h("section", {}, h("h2", {}, title), ...body);
}

function complaint(c, reload) {
  const badge = h("span", { class: "badge " + (c.state === "overdue" ? "red" : c.state === "answered" || c.state === "closed" ? "ok" : "grey") },
    caseStateText(c.state));
  const rows = [[L("投诉编号", "Number"), c.number], [L("受理时间", "Received"), dateTime(c.opened_ms)],
    [L("答复期限", "Answer by"), dateTime(c.due_ms)], [L("投诉内容", "Complaint"), c.text]];
  if (c.answer) rows.push([L("我的答复", "My answer"), c.answer]);
  if (c.outcome) rows.push([L("处理结果", "Outcome"), outcomeText(c.outcome)]);
  const el = h("div", { class: "case", dataset: { number: c.number } }, h("div", { class: "badges" }, badge), kv(rows));
  if (c.state === "awaiting" || c.state === "overdue") {
    const text = h("textarea", { name: "answer", rows: 3, maxlength: 2000, required: true,
      placeholder: L("向消费者说明处理情况", "Tell the consumer what you did") });
    const out = h("p", { class: "result", role: "status" });
    const form = h("form", { class: "answer-form" }, h("label", {}, L("答复", "Answer"), text),
      h("button", { type: "submit" }, L("提交答复", "Send answer")), out);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("/merchant/complaints/" + encodeURIComponent(c.number) + "/answer",
          { method: "POST", body: { answer: text.value.trim() } });
        await reload();
      } catch (err) {
        out.className = "result bad";
        out.textContent = err.message;
      }
    });
    el.append(form);
  }
  return el;
}

export async function render(root, { reload }) {
  const [me, scales, cases, findings, reweighs] = await Promise.all([
    api("/merchant/me"), api("/merchant/scales"), api("/merchant/complaints"),
    api("/merchant/findings"), api("/merchant/reweighs")]);
  document.getElementById("m-name").textContent = me.name;
  document.getElementById("m-where").textContent =
    (me.stall_no ? L("摊位 ", "Stall ") + me.stall_no + " · " : "") + me.market_name;
  const qr = h("div", { class: "qr" });
  try {
    qr.append(h("img", { src: await blobUrl("/merchant/qr.svg"), alt: L("诚信码", "Trust QR"), id: "trust-qr" }));
  } catch (err) { qr.append(L("诚信码暂不可用", "QR unavailable")); }
  const shop = section(L("我的诚信码", "My trust code"),
    h("div", { class: "badges" }, h("span", { class: "badge " + (me.status === "normal" ? "ok" : "red"), id: "m-status" }, statusText(me.status)),
      me.list_status !== "none" ? h("span", { class: "badge " + (me.list_status === "red" ? "honour" : "black") }, listText(me.list_status)) : null),
    me.status_reason && me.status !== "normal" ? h("p", { class: "note" }, me.status_reason) : null,
    qr, h("p", {}, h("a", { href: me.trust_url, id: "trust-link" }, L("查看消费者看到的页面", "See the consumer page"))),
    kv([[L("统一社会信用代码", "Credit code"), me.credit_code], [L("企业登记状态", "Business register"),
      me.register_status ? registerStatusText(me.register_status) + " · " + date(me.register_date_ms) : "—"],
    [L("待答复投诉", "Complaints to answer"), String(me.open_complaints)]]));
  const sc = section(L("我的电子秤", "My scales"), scales.length ? h("ul", { class: "scales" }, scales.map((s) =>
    h("li", { class: "scale" }, h("div", { class: "row" }, h("span", { class: "dev" }, roleText(s.role) + " · " + (s.model || "—")),
      h("span", { class: "badge " + (s.overdue ? "red" : "ok") }, s.overdue ? L("检定已过期", "Verification overdue") : L("检定有效", "Verified"))),
    h("div", { class: "sub" }, L("有效期至 ", "Due ") + (s.due_on_ms ? date(s.due_on_ms) : "—"))))) : h("p", { class: "empty" }, L("暂无", "None")));
  const cp = section(L("消费者投诉", "Complaints"), cases.length
    ? h("div", { id: "cases" }, cases.map((c) => complaint(c, reload)))
    : h("p", { class: "empty" }, L("暂无投诉", "No complaints")));
  const fd = section(L("已确认的检查发现", "Confirmed findings"), findings.length ? kv(findings.map((f) =>
    [dateTime(f.ts_ms), kindLabel(f.kind, f.title)])) : h("p", { class: "empty" }, L("暂无", "None")));
  const rw = section(L("复秤记录", "Re-weighs"), reweighs.length ? kv(reweighs.map((r) =>
    [dateTime(r.ts_ms), verdictText(r.verdict) + (r.shortfall_mg != null ? " · " + L("短少 ", "short ") + kg(r.shortfall_mg) + " kg" : "")]))
    : h("p", { class: "empty" }, L("暂无", "None")));
  root.replaceChildren(shop, cp, sc, fd, rw);
}
