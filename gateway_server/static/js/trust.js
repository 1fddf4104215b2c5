// The trust-code page's complaint form: POST /api/v1/public/complaint-cases (JSON; the
// answer carries the case number the consumer looks up at /public/complaints). Without
// JavaScript the same form posts to /m/{token}/complaint. Messages use textContent only.
const form = document.getElementById("complaint-form");
if (form) {
  const out = document.getElementById("complaint-result");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const body = { trust_token: form.dataset.token, text: String(data.get("text") || "").trim() };
    const trace = String(data.get("trace_code") || "").trim();
    const contact = String(data.get("contact") || "").trim();
    if (trace) body.trace_code = trace;
    if (contact) body.contact = contact;
    out.className = "result";
    if (body.text.length < 2) {
      out.textContent = "请填写至少 2 个字的问题描述。";
      out.classList.add("bad");
      return;
    }
    const btn = form.querySelector("button");
    btn.disabled = true;
    try {
      const r = await fetch("/api/v1/public/complaint-cases", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      if (r.status === 201) {
        const j = await r.json();
        out.textContent = "投诉已受理，投诉编号 ";
        const num = document.createElement("b");
        num.id = "complaint-number";
        num.textContent = j.number;
        const look = document.createElement("a");
        look.href = "/public/complaints?number=" + encodeURIComponent(j.number);
        look.id = "complaint-lookup";
        look.textContent = "查询处理进度";
        out.append(num, "。请保存编号，商户须限时答复。", look);
        out.classList.add("good");
        form.reset();
      } else if (r.status === 429) {
        out.textContent = "提交过于频繁，请稍后再试，或拨打 12315。";
        out.classList.add("bad");
      } else {
        out.textContent = "提交失败（" + r.status + "），请拨打 12315。";
        out.classList.add("bad");
      }
    } catch (err) {
      out.textContent = "网络异常，请稍后再试，或拨打 12315。";
      out.classList.add("bad");
    }
    btn.disabled = false;
  });
}
