// The public application form (/apply): POST /api/v1/public/applications, upload the
// licence image (raw body, its own Content-Type), submit. The number and the secret are
// kept in localStorage so the applicant can come back and see the review's answer.
// Text is set with textContent only.
const API = "/api/v1/public";
const KEY = "gw.application";
const $ = (id) => document.getElementById(id);

const STATUS = {
  draft: "草稿（尚未提交）Draft", submitted: "已提交，等待审核 Submitted, under review",
  changes_requested: "需补充材料 Changes requested", approved: "已通过，诚信码已发放 Approved",
  rejected: "未通过 Rejected",
};

// server messages in words (no field path, no status code)
const FIELD = {
  credit_code: "统一社会信用代码", name: "商户名称", stall_no: "摊位号", phone: "联系电话",
  username: "用户名", password: "密码", file: "执照照片", commitments: "经营承诺", market_id: "市场",
};

function words(status, detail) {
  if (status === 429) return "提交过于频繁，请稍后再试。";
  if (status === 409) {
    const d = String(detail || "");
    if (d.includes("credit code")) return "该统一社会信用代码已入驻或已在申请中。";
    if (d.includes("username")) return "该用户名已被使用，请换一个。";
    return "当前状态不能进行此操作。";
  }
  if (Array.isArray(detail) && detail.length) {
    const e = detail[0];
    const field = (e.loc || []).slice(-1)[0];
    const msg = String(e.msg || "");
    if (field === "credit_code") return "统一社会信用代码有误：" + (msg.includes("check") ? "校验位不正确，请核对。" : "应为 18 位，请核对。");
    if (field === "password") return "密码太弱：至少 10 位，不能是常见密码。";
    if (field === "file") return msg.includes("larger") ? "图片太大，请压缩后再传。" : "请上传 PNG 或 JPEG 格式的照片。";
    if (field === "commitments") return "请勾选全部经营承诺。";
    return (FIELD[field] || "填写内容") + "有误，请检查。";
  }
  return "提交失败，请稍后再试或拨打 12315。";
}

async function call(path, opts = {}) {
  const r = await fetch(API + path, opts);
  const isJson = (r.headers.get("content-type") || "").includes("json");
  const data = isJson ? await r.json() : null;
  if (!r.ok) throw Object.assign(new Error(words(r.status, data && data.detail)), { status: r.status });
  return data;
}

function show(app) {
  const box = $("status-box");
  box.hidden = false;
  const kept = JSON.parse(localStorage.getItem(KEY) || "{}");
  const rows = [["申请编号 Number", app.number], ["状态 Status", STATUS[app.status] || "—"]];
  if (kept.secret) rows.push(["查询码（请保存）Secret", kept.secret]);
  if (app.review_note) rows.push(["审核意见 Review note", app.review_note]);
  const ul = document.createElement("ul");
  ul.className = "kv";
  for (const [k, v] of rows) {
    const li = document.createElement("li");
    const a = document.createElement("span");
    a.className = "k";
    a.textContent = k;
    const b = document.createElement("span");
    b.className = "v";
    b.textContent = v;
    li.append(a, b);
    ul.append(li);
  }
  const h2 = document.createElement("h2");
  h2.textContent = "申请进度 Progress";
  box.replaceChildren(h2, ul);
  box.dataset.status = app.status;
  if (app.status === "approved") {
    const p = document.createElement("p");
    p.className = "result good";
    p.textContent = "审核通过。请用申请时的用户名和密码登录商户后台查看诚信码。";
    const a = document.createElement("a");
    a.href = "/login";
    a.textContent = "商户登录 Log in";
    box.append(p, a);
  }
  $("apply").hidden = app.status !== "changes_requested" && app.status !== "draft";
}

async function loadForm() {
  const form = await call("/application-form");
  for (const m of form.markets) {
    const o = document.createElement("option");
    o.value = m.id;
    o.textContent = m.name;
    $("market").append(o);
  }
  for (const c of form.commitments) {
    const label = document.createElement("label");
    label.className = "check";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = "commitment";
    box.value = c.key;
    label.append(box, " " + c.zh + " · " + c.en);
    $("commitments").append(label);
  }
}

async function refresh() {
  const kept = JSON.parse(localStorage.getItem(KEY) || "null");
  if (!kept) return;
  try {
    show(await call("/applications/" + encodeURIComponent(kept.number), {
      headers: { "X-Application-Secret": kept.secret } }));
  } catch (err) { /* an old or foreign number: start afresh */ }
}

$("apply-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("apply-result");
  const btn = $("apply-btn");
  out.className = "result";
  out.textContent = "";
  const f = new FormData($("apply-form"));
  const commitments = f.getAll("commitment").map(String);
  const file = $("image").files[0];
  const body = {
    market_id: String(f.get("market_id") || ""), name: String(f.get("name") || "").trim(),
    credit_code: String(f.get("credit_code") || "").trim(), stall_no: String(f.get("stall_no") || "").trim(),
    phone: String(f.get("phone") || "").trim(), commitments,
    categories: String(f.get("categories") || "").split(/[,，、;；]/).map((s) => s.trim()).filter(Boolean),
    username: String(f.get("username") || "").trim(), password: String(f.get("password") || ""),
  };
  const food = String(f.get("food_licence") || "").trim();
  body.licences = food ? [{ kind: "食品经营许可证", number: food }] : [];
  btn.disabled = true;
  try {
    let kept = JSON.parse(localStorage.getItem(KEY) || "null");
    const edit = kept && $("status-box").dataset.status === "changes_requested";
    if (edit) {
      const { market_id, username, password, ...changes } = body;
      await call("/applications/" + encodeURIComponent(kept.number), {
        method: "PATCH", headers: { "Content-Type": "application/json", "X-Application-Secret": kept.secret },
        body: JSON.stringify(changes) });
    } else {
      const made = await call("/applications", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      kept = { number: made.number, secret: made.secret };
      localStorage.setItem(KEY, JSON.stringify(kept));
    }
    const auth = { "X-Application-Secret": kept.secret };
    if (file) {
      await call("/applications/" + encodeURIComponent(kept.number) + "/documents?kind=" + encodeURIComponent("营业执照"), {
        method: "POST", headers: { ...auth, "Content-Type": file.type || "application/octet-stream" }, body: file });
    }
    const app = await call("/applications/" + encodeURIComponent(kept.number) + "/submit", { method: "POST", headers: auth });
    out.className = "result good";
    out.textContent = "申请已提交，编号 " + app.number + "。请保存编号和查询码。";
    show(app);
  } catch (err) {
    out.className = "result bad";
    out.textContent = err.message;
  }
  btn.disabled = false;
});

loadForm().then(refresh).catch((err) => { $("apply-result").textContent = err.message; });
