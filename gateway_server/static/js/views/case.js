// The case file (#/inspect/case/{id}): the on-site record with each load's verdict against
// the in-service MPE, photos (PNG / JPEG, shown with their SHA-256), the inspector's typed
// name and drawn signature, the printable 现场检查笔录 (HTML and PDF), the decision (a
// card, a list entry, lifting a card) behind an explicit confirmation, and the audit log.
import { api, blobUrl } from "../api.js";
import { badge, card, h, kv, link, table } from "../dom.js";
import { dateTime, fracKg, kg } from "../format.js";
import { L, listText, statusText, verdictText } from "../i18n.js";
import { actionText, auditText, caseErrorText, caseStateText, consequenceText } from "../casewords.js";
import { deviceLabels, deviceName } from "../labels.js";

const STATE_CLS = { open: "grey", recorded: "sev-medium", signed: "sev-high", decided: "ok" };

export function casesTable(items, labels, id = "cases") {
  return table([
    { label: L("案号", "Case"), value: (c) => link(c.number, "inspect", "case", c.id) },
    { label: L("立案", "Opened"), value: (c) => dateTime(c.opened_ms) },
    { label: L("计量秤", "Scale"), value: (c) => deviceName(labels, c.device) },
    { label: L("结论", "Verdict"), value: (c) => (c.verdict ? verdictText(c.verdict) + (c.fraud === "yes" ? L("（作弊）", " (fraud)") : "") : "—") },
    { label: L("状态", "State"), value: (c) => badge(caseStateText(c.state), STATE_CLS[c.state] || "") },
    { label: L("处理", "Decision"), value: (c) => (c.decision ? actionText(c.decision) : "—") },
  ], items, { empty: L("暂无案件", "No cases"), id });
}

/** Open a case for a scale (a task is made for it) and go to it. */
export async function openCaseFor(device, taskId = null) {
  const c = await api("/cases", { method: "POST", body: taskId ? { task_id: Number(taskId) } : { device } });
  location.hash = "#/inspect/case/" + c.id;
  return c;
}

function signaturePad() {
  const canvas = h("canvas", { width: 480, height: 160, class: "signature-pad", id: "signature-pad",
    "aria-label": L("手写签名区", "signature pad") });
  const g = canvas.getContext("2d");
  g.lineWidth = 2.5; g.lineCap = "round"; g.strokeStyle = "#111";
  let drawing = false, drawn = false;
  const at = (ev) => {
    const r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * (canvas.width / r.width), (ev.clientY - r.top) * (canvas.height / r.height)];
  };
  canvas.addEventListener("pointerdown", (ev) => { drawing = true; g.beginPath(); g.moveTo(...at(ev)); canvas.setPointerCapture(ev.pointerId); });
  canvas.addEventListener("pointermove", (ev) => { if (drawing) { g.lineTo(...at(ev)); g.stroke(); drawn = true; } });
  const end = () => { drawing = false; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  return { canvas, drawn: () => drawn, clear: () => { g.clearRect(0, 0, canvas.width, canvas.height); drawn = false; } };
}

export async function render(root, id) {
  const [c, labels] = await Promise.all([api("/cases/" + encodeURIComponent(id)), deviceLabels()]);
  const [m, sc] = await Promise.all([
    c.merchant_id !== null ? api("/merchants/" + c.merchant_id) : null,
    api("/registry/scales/" + encodeURIComponent(c.device))]);
  const reload = () => { root.replaceChildren(); return render(root, id); };
  const err = h("p", { class: "error", role: "alert", id: "case-error" });
  const fail = (e) => { err.textContent = caseErrorText(e); };

  root.append(h("div", { class: "title-row" },
    h("h1", { id: "case-title" }, L("现场检查笔录 ", "On-site record "), c.number),
    badge(caseStateText(c.state), STATE_CLS[c.state] || ""), h("span", { class: "spacer" }),
    h("button", { type: "button", class: "ghost", id: "print-html", onclick: async () => {
      try { window.open(await blobUrl(`/cases/${c.id}/record.html`), "_blank", "noopener"); } catch (e) { fail(e); }
    } }, L("打印笔录", "Print")),
    h("button", { type: "button", class: "ghost", id: "pdf", onclick: async () => {
      try {
        const a = h("a", { href: await blobUrl(`/cases/${c.id}/record.pdf`), download: c.number + ".pdf" });
        document.body.appendChild(a); a.click(); a.remove();
      } catch (e) { fail(e); }
    } }, L("下载 PDF", "Download PDF"))));
  root.append(err);
  root.append(h("div", { class: "grid2" },
    card(L("被检查人与计量器具", "Merchant and instrument"), kv([
      [L("商户", "Merchant"), m ? h("span", { id: "merchant-status-row" }, link(m.name, "merchant", m.id), " · ",
        h("span", { id: "merchant-status" }, statusText(m.status), m.list_status !== "none" ? " · " + listText(m.list_status) : "")) : L("未绑定商户", "no merchant bound")],
      [L("计量秤", "Scale"), link(deviceName(labels, c.device), "scale", c.device)],
      [L("型号 / 出厂编号", "Model / serial"), `${sc.model || "—"} / ${sc.serial || "—"}`],
      ["Max / e (kg)", sc.max_mg ? `${kg(sc.max_mg)} / ${kg(sc.e_mg)} · ${sc.accuracy_class || "III"}` : "—"],
      [L("检定证书", "Verification certificate"), sc.cert_no || "—"],
      [L("立案", "Opened"), `${dateTime(c.opened_ms)} · ${c.opened_by}`],
    ])),
    card(L("现场记录", "On-site record"), kv([
      [L("检查时间", "Time"), dateTime(c.recorded_ms)], [L("检查地点", "Place"), c.place || "—"],
      [L("标准砝码证书编号", "Standard weights' certificate"), h("span", { id: "weights-cert" }, c.weights_cert_no || "—")],
      [L("备注", "Notes"), c.notes || "—"],
      [L("签名", "Signed by"), c.signed_ms ? `${c.signer_name} · ${dateTime(c.signed_ms)}` : L("未签名", "not signed")],
    ]))));

  const res = c.result;
  if (res) {
    const pass = res.verdict === "pass";
    root.append(card(L("检查结论（使用中检查最大允许误差）", "Verdict (in-service MPE)"),
      h("p", { class: "verdict " + (pass ? "pass" : "fail"), id: "verdict" }, verdictText(res.verdict),
        res.fraud === "yes" ? " · " + L("作弊", "fraud") : ""),
      table([
        { label: L("载荷 (kg)", "Load (kg)"), cls: "num", value: (x) => kg(x.load_mg) },
        { label: L("示值 (kg)", "Indication (kg)"), cls: "num", value: (x) => kg(x.indication_mg) },
        { label: L("误差 (kg)", "Error (kg)"), cls: "num", value: (x) => kg(x.error_mg, { sign: true }) },
        { label: "MPE (kg)", cls: "num", value: (x) => "±" + fracKg(x.mpe_mg) },
        { label: L("判定", "Verdict"), value: (x) => badge(x.ok ? L("合格", "ok") : L("超差", "out of MPE"), x.ok ? "ok" : "sev-high") },
      ], res.loads, { id: "checks" })));
  } else {
    root.append(card(L("检查结论", "Verdict"), h("p", { class: "muted" }, L("尚未记录：请在检查表中填写载荷与示值。", "Not recorded yet: fill in the loads on the inspection form.")),
      h("a", { class: "button", id: "fill-record", href: `#/inspect/${encodeURIComponent(c.device)}/case-${c.id}` }, L("去填写", "Fill it in"))));
  }

  // photos: upload while the record is not signed
  const editable = c.state === "open" || c.state === "recorded";
  const photos = h("div", { class: "photos", id: "photos" });
  for (const p of c.photos) {
    const img = h("img", { alt: p.caption || L("现场照片", "photo"), class: "photo" });
    blobUrl(`/case-photos/${p.id}`).then((u) => { img.src = u; }).catch(() => {});
    photos.append(h("figure", {}, img, h("figcaption", {}, p.caption || "", h("span", { class: "hash small muted" }, " SHA-256 " + p.sha256.slice(0, 16) + "…"))));
  }
  const file = h("input", { type: "file", accept: "image/png,image/jpeg", id: "photo-file" });
  const caption = h("input", { id: "photo-caption", maxlength: 200, placeholder: L("说明（如：铅封、显示屏）", "caption (e.g. seal, display)") });
  root.append(card(L("现场照片", "Photos"), photos, c.photos.length ? null : h("p", { class: "muted" }, L("暂无照片", "No photos")),
    editable ? h("form", { class: "inline-form", id: "photo-form", onsubmit: async (ev) => {
      ev.preventDefault();
      const f = file.files[0];
      err.textContent = "";
      if (!f) return;
      try {
        await api(`/cases/${c.id}/photos`, { method: "POST", raw: f, contentType: f.type || "application/octet-stream", params: { caption: caption.value } });
        await reload();
      } catch (e) { fail(e); }
    } }, file, caption, h("button", { type: "submit" }, L("上传照片", "Upload"))) : null));

  // signature
  if (c.state === "recorded") {
    const pad = signaturePad();
    const name = h("input", { id: "signer-name", maxlength: 64, value: "" });
    root.append(card(L("检查人员签名", "Inspector's signature"),
      h("p", { class: "muted" }, L("签名后笔录和照片不能再修改。", "Once signed, the record and its photos cannot change.")),
      h("label", {}, L("姓名", "Name"), " ", name), pad.canvas,
      h("p", {}, h("button", { type: "button", class: "ghost", onclick: pad.clear }, L("重写", "Clear")), " ",
        h("button", { type: "button", id: "sign-btn", onclick: async () => {
          err.textContent = "";
          if (!pad.drawn()) { err.textContent = caseErrorText({ detail: { code: "bad-signature" } }); return; }
          try {
            await api(`/cases/${c.id}/sign`, { method: "POST", body: { name: name.value, signature: pad.canvas.toDataURL("image/png") } });
            await reload();
          } catch (e) { fail(e); }
        } }, L("签名确认", "Sign")))));
  } else if (c.signed_ms) {
    const img = h("img", { class: "signature", alt: L("签名", "signature"), id: "signature-img" });
    blobUrl(`/cases/${c.id}/signature.png`).then((u) => { img.src = u; }).catch(() => {});
    root.append(card(L("检查人员签名", "Inspector's signature"), img,
      h("p", { class: "small muted" }, `${c.signer_name} · ${dateTime(c.signed_ms)} · SHA-256 ${c.signature_sha256.slice(0, 16)}…`)));
  }

  // the decision, behind a confirmation
  if (c.state === "signed" && c.options) decisionCard(root, c, m, fail, reload);
  if (c.state === "decided") {
    root.append(card(L("处理决定", "Decision"), h("p", { id: "decision" }, h("b", {}, actionText(c.decision)), " · ", c.decision_reason || "",
      h("span", { class: "muted" }, ` · ${c.decided_by} · ${dateTime(c.decided_ms)}`))));
  }

  root.append(card(L("操作记录（只增不改）", "Audit log (append-only)"), table([
    { label: L("时间", "Time"), value: (a) => dateTime(a.ts_ms) },
    { label: L("操作", "Step"), value: (a) => auditText(a.action) },
    { label: L("操作人", "By"), value: (a) => a.actor },
    { label: L("内容", "Detail"), value: (a) => auditDetail(a) },
  ], c.audit, { id: "audit" })));
}

function auditDetail(a) {
  const d = a.detail || {};
  switch (a.action) {
    case "case.record": return `${verdictText(d.verdict)}${d.fraud ? L("（作弊）", " (fraud)") : ""} · ${L("砝码证书 ", "weights cert. ")}${d.weights_cert_no}`;
    case "case.photo": return "SHA-256 " + String(d.sha256).slice(0, 16) + "…";
    case "case.sign": return `${d.signer} · SHA-256 ${String(d.signature_sha256).slice(0, 16)}…`;
    case "case.decision": case "card.lift": return `${actionText(d.action)}：${d.reason}` + (d.before && d.after
      ? ` · ${statusText(d.before.status)} → ${statusText(d.after.status)}` : "");
    default: return "";
  }
}

function decisionCard(root, c, m, fail, reload) {
  const o = c.options;
  const box = card(L("处理（须确认）", "Decision (to confirm)"));
  box.id = "decision-card";
  if (o.lift_after_ms && !o.actions.includes("lift")) {
    box.append(h("p", { class: "muted", id: "lift-rule" }, L(`警示牌须在 ${dateTime(o.lift_after_ms)} 之后经复检合格方可解除。`,
      `The card may be lifted by a passing re-inspection after ${dateTime(o.lift_after_ms)}.`)));
  }
  const choice = h("select", { id: "action" }, o.actions.map((a) => h("option", { value: a, selected: a === o.proposed },
    actionText(a) + (a === o.proposed ? L("（建议）", " (proposed)") : ""))));
  const reason = h("textarea", { id: "decision-reason", rows: 2, maxlength: 500 });
  const confirmBox = h("div", { class: "confirm-box", id: "confirm-box", hidden: true });
  box.append(h("div", { class: "form-grid" }, h("label", {}, L("处理", "Action"), choice), h("label", { class: "wide" }, L("理由", "Reason"), reason)),
    h("button", { type: "button", id: "decide-btn", onclick: () => {
      const a = choice.value;
      const ok = h("input", { type: "checkbox", id: "confirm-check" });
      confirmBox.hidden = false;
      confirmBox.replaceChildren(
        h("p", {}, h("b", {}, L("请确认：", "Please confirm: "), actionText(a)), m ? L(` · 商户 ${m.name}`, ` · merchant ${m.name}`) : ""),
        h("p", { id: "consequence" }, consequenceText(a)),
        a !== "none" ? h("p", { class: "small muted" }, L("依据：集贸市场计量监督管理办法（2024 修订）集市主办者红黄牌警示制度", "Ground: market metrology rules 2024, the market operator's red / yellow cards")) : null,
        h("label", { class: "check" }, ok, L("我已核对笔录和上述后果", "I have checked the record and the consequences above")),
        h("p", {}, h("button", { type: "button", class: "ghost", onclick: () => { confirmBox.hidden = true; } }, L("取消", "Cancel")), " ",
          h("button", { type: "button", id: "confirm-btn", class: "danger", onclick: async () => {
            fail({ message: "" });
            if (!ok.checked) { fail({ detail: { code: "not-confirmed" } }); return; }  // the API refuses it too
            try {
              await api(`/cases/${c.id}/decision`, { method: "POST", body: { action: a, reason: reason.value, confirm: ok.checked } });
              await reload();
            } catch (e) { fail(e); }
          } }, L("确认处理", "Confirm"))));
    } }, L("处理…", "Decide…")), confirmBox);
  root.append(box);
}
