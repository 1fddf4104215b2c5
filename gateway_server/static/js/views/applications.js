// The bureau's review queue of applications to the trust programme (#/applications, admin):
// each application with its licence images, approve / reject with a reason / ask for changes.
import { api, blobUrl } from "../api.js";
import { card, h, kv, link, table } from "../dom.js";
import { dateTime, date } from "../format.js";
import { L, appStatusText, categoryWords } from "../i18n.js";

const COMMITMENT_WORDS = {
  "honest-weight": ["诚信计量，不短斤缺两", "Honest weight"], "clear-prices": ["明码标价", "Clear prices"],
  "verified-scales": ["使用检定合格的计量器具", "Verified scales"], "traceable-goods": ["商品可追溯", "Traceable goods"],
  "answer-complaints": ["限时答复投诉", "Answer complaints"], "accept-inspection": ["配合检查", "Accept inspections"],
};

async function one(root, id) {
  const a = await api("/applications/" + encodeURIComponent(id));
  root.appendChild(h("h1", {}, L("入驻申请 ", "Application ") + a.number));
  const imgs = h("div", { class: "doc-images" });
  for (const d of a.documents) {
    imgs.append(h("figure", {}, h("img", { src: await blobUrl("/applications/" + id + "/documents/" + d.id), alt: d.kind, class: "licence-img" }),
      h("figcaption", {}, d.kind + " · " + Math.ceil(d.size / 1024) + " KB · SHA-256 " + d.sha256.slice(0, 12) + "…")));
  }
  root.append(card(L("申请信息", "Details"), kv([
    [L("状态", "Status"), h("span", { id: "app-status" }, appStatusText(a.status))],
    [L("商户名称", "Name"), a.name], [L("统一社会信用代码", "Credit code"), a.credit_code],
    [L("摊位号", "Stall"), a.stall_no], [L("经营类别", "Categories"), a.categories.map(categoryWords).join("、") || "—"],
    [L("联系电话", "Phone"), a.phone], [L("登录用户名", "Username"), a.username],
    [L("证照", "Licences"), a.licences.map((x) => x.kind + " " + x.number + (x.valid_until_ms ? " · " + date(x.valid_until_ms) : "")).join("；") || "—"],
    [L("承诺", "Commitments"), a.commitments.map((c) => (COMMITMENT_WORDS[c] || [c, c])[L(0, 1)]).join("、")],
    [L("提交时间", "Submitted"), a.submitted_ms ? dateTime(a.submitted_ms) : "—"],
    [L("审核意见", "Review note"), a.review_note || "—"],
  ])), card(L("执照照片", "Licence images"), imgs));
  if (a.status !== "submitted") return;
  const note = h("textarea", { id: "review-note", rows: 3, maxlength: 1000, placeholder: L("驳回理由或需补充的材料", "Reason or changes asked") });
  const out = h("p", { class: "result", role: "status", id: "review-result" });
  const act = (path, body) => async () => {
    try {
      const r = await api("/applications/" + id + "/" + path, { method: "POST", body });
      out.className = "result good";
      out.textContent = path === "approve"
        ? L("已通过，诚信码已发放：", "Approved; trust code issued: ") + r.trust_url
        : L("已处理", "Done");
      if (path === "approve") out.append(" ", link(L("查看商户", "Open the merchant"), "merchant", r.merchant_id));
    } catch (err) {
      out.className = "result error";
      out.textContent = err.message;
    }
  };
  root.append(card(L("审核", "Review"), h("label", {}, L("意见", "Note"), note),
    h("div", { class: "actions" },
      h("button", { type: "button", id: "approve", onclick: act("approve") }, L("通过并发放诚信码", "Approve and issue the code")),
      h("button", { type: "button", id: "request-changes", class: "ghost", onclick: () => act("request-changes", { note: note.value.trim() })() }, L("要求补充材料", "Ask for changes")),
      h("button", { type: "button", id: "reject", class: "ghost", onclick: () => act("reject", { reason: note.value.trim() })() }, L("驳回", "Reject"))),
    out));
}

export async function render(root, args) {
  if (args[0]) return one(root, args[0]);
  root.appendChild(h("h1", {}, L("入驻申请审核", "Applications")));
  for (const status of ["submitted", "changes_requested"]) {
    const rows = await api("/applications", { params: { status } });
    root.append(card(appStatusText(status), table([
      { label: L("申请编号", "Number"), value: (a) => link(a.number, "applications", a.id) },
      { label: L("商户名称", "Name"), value: (a) => a.name },
      { label: L("摊位号", "Stall"), value: (a) => a.stall_no },
      { label: L("提交时间", "Submitted"), value: (a) => (a.submitted_ms ? dateTime(a.submitted_ms) : "—") },
    ], rows, { empty: L("暂无", "None"), id: "applications-" + status })));
  }
}
