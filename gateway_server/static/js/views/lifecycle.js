// The trust programme's bureau tools (#/lifecycle): the business-register status feed (CSV
// with the row errors in words), complaint cases (mediate, close with an outcome), the
// red and black lists.
import { api } from "../api.js";
import { card, h, table } from "../dom.js";
import { dateTime, yuan, parseYuan } from "../format.js";
import { L, caseStateText, outcomeText, listText } from "../i18n.js";

const FEED_MSG = [
  [/no merchant with credit code/, ["登记中没有该统一社会信用代码的商户", "no merchant with this credit code"]],
  [/check character|check digit|checksum/i, ["统一社会信用代码校验位不正确", "wrong check character"]],
  [/18 characters|length|not allowed|character/i, ["统一社会信用代码格式不正确", "credit code malformed"]],
  [/unknown status/, ["无法识别的登记状态", "unknown status"]],
  [/in the future/, ["日期晚于今天", "date in the future"]],
  [/older than the status/, ["早于已导入的状态，已跳过", "older than the status applied; skipped"]],
  [/unknown column/, ["未知列，已忽略", "unknown column, ignored"]],
  [/date|day|month/i, ["日期无法识别", "unreadable date"]],
];
const feedWords = (m) => { const hit = FEED_MSG.find(([re]) => re.test(m)); return hit ? L(...hit[1]) : L("数据有误", "invalid"); };

function feedCard() {
  const text = h("textarea", { id: "feed-csv", rows: 5, placeholder: "统一社会信用代码,登记状态,日期,原因" });
  const out = h("div", { id: "feed-result" });
  const form = h("form", { class: "card" }, h("h2", {}, L("企业登记状态导入", "Business-register status feed")),
    h("p", { class: "muted" }, L("注销、吊销 → 下架；列入经营异常名录 → 暂停；其后正常状态 → 恢复。", "cancelled / revoked → delisted; abnormal list → suspended; a later normal status restores.")),
    text, h("button", { type: "submit", id: "feed-import" }, L("导入", "Import")), out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    try {
      const r = await api("/status-feed", { method: "POST", raw: text.value, contentType: "text/csv" });
      out.append(h("p", { class: "good", id: "feed-summary" }, L(`已更新 ${r.applied} 条，未变 ${r.unchanged} 条，错误 ${r.errors.length} 条`,
        `applied ${r.applied}, unchanged ${r.unchanged}, errors ${r.errors.length}`)),
      table([{ label: L("行", "Row"), value: (e) => String(e.row) }, { label: L("列", "Column"), value: (e) => e.column },
        { label: L("问题", "Problem"), value: (e) => feedWords(e.message) }], [...r.errors, ...r.warnings], { empty: L("没有错误", "No errors"), id: "feed-errors" }));
    } catch (err) { out.append(h("p", { class: "error" }, err.message)); }
  });
  return form;
}

function caseActions(c, reload) {
  if (c.state === "closed") return outcomeText(c.outcome);
  const outcome = h("select", {}, ["refund", "compensation", "settled", "rejected"].map((o) => h("option", { value: o }, outcomeText(o))));
  const amount = h("input", { placeholder: L("金额（元）", "amount (yuan)"), size: 8 });
  const msg = h("span", { class: "error" });
  const close = async () => {
    const fen = amount.value.trim() ? parseYuan(amount.value) : null;
    try {
      await api("/complaint-cases/" + encodeURIComponent(c.number) + "/close", { method: "POST",
        body: { outcome: outcome.value, compensation_fen: fen, note: "" } });
      reload();
    } catch (err) { msg.textContent = err.message; }
  };
  const mediate = async () => {
    try { await api("/complaint-cases/" + encodeURIComponent(c.number) + "/mediate", { method: "POST", body: { note: "" } }); reload(); } catch (err) { msg.textContent = err.message; }
  };
  return h("span", { class: "actions" }, c.state !== "mediating" ? h("button", { type: "button", class: "ghost", onclick: mediate }, L("调解", "Mediate")) : null,
    outcome, amount, h("button", { type: "button", onclick: close }, L("办结", "Close")), msg);
}

export async function render(root) {
  root.appendChild(h("h1", {}, L("诚信码管理", "Trust programme")));
  const body = h("div");
  root.append(feedCard(), body);
  const reload = async () => {
    const [cases, red, black] = await Promise.all([api("/complaint-cases"), api("/lists/red/entries"), api("/lists/black/entries")]);
    body.replaceChildren(card(L("投诉处理（限时答复）", "Complaints with a clock"), table([
      { label: L("编号", "Number"), value: (c) => c.number },
      { label: L("商户", "Merchant"), value: (c) => c.merchant_name + (c.stall_no ? " · " + c.stall_no : "") },
      { label: L("受理", "Received"), value: (c) => dateTime(c.opened_ms) },
      { label: L("期限", "Due"), value: (c) => dateTime(c.due_ms) },
      { label: L("状态", "State"), value: (c) => caseStateText(c.state) + (c.late ? L("（曾逾期）", " (was late)") : "") },
      { label: L("内容", "Complaint"), value: (c) => c.text },
      { label: L("商户答复", "Answer"), value: (c) => c.answer || "—" },
      { label: L("金额", "Amount"), value: (c) => (c.compensation_fen != null ? yuan(c.compensation_fen) + " 元" : "—") },
      { label: L("处理", "Action"), value: (c) => caseActions(c, reload) },
    ], cases, { empty: L("暂无投诉", "No complaints"), id: "cases" })),
    card(listText("red") + " / " + listText("black"), table([
      { label: L("榜单", "List"), value: (e) => listText(e.list) },
      { label: L("商户编号", "Merchant"), value: (e) => String(e.merchant_id) },
      { label: L("原因", "Reason"), value: (e) => e.reason },
      { label: L("列入", "Since"), value: (e) => dateTime(e.since_ms) },
      { label: L("到期", "Until"), value: (e) => (e.until_ms ? dateTime(e.until_ms) : "—") },
    ], [...red, ...black], { empty: L("暂无", "None") })));
  };
  await reload();
}
