// Scale detail: live weight (latest value from /scales, new sales from the event stream),
// verification, event counters, re-weigh residuals against the in-service MPE envelope
// (points of the envelope from /metrology/mpe: the API is the legal source), zero drift,
// sales, findings and inspections.
import { api } from "../api.js";
import { envelopePlot, niceCeil, salesChart, timePlot } from "../charts.js";
import { casesTable, openCaseFor } from "./case.js";
import { badge, card, h, kv, link, stat, table } from "../dom.js";
import { date, dateTime, fracKg, fracNumber, kg, kgE, yuan } from "../format.js";
import { L, findingStatusText, kindLabel, kindText, roleText, scaleStateText, severityText, verdictText } from "../i18n.js";
import { deviceLabels, deviceLink, deviceName } from "../labels.js";
import { riskCard, riskModel } from "./risk.js";

const ENVELOPE_POINTS = 48;

async function optional(promise) {
  try { return await promise; } catch (err) { if (err.status === 404) return null; throw err; }
}

/**
 * Points of the in-service MPE step function over [0, Max], all from /metrology/mpe: a
 * grid, then each step located to the milligram by bisection (no band edge is assumed).
 */
export async function envelope(maxMg, eMg, cls) {
  const mpeAt = async (load) => fracNumber((await api("/metrology/mpe", {
    params: { load_mg: load, e_mg: eMg, accuracy_class: cls || "III", stage: "in_service" } })).mpe_mg);
  const loads = [...new Set(Array.from({ length: ENVELOPE_POINTS + 1 }, (_, i) => Math.round((maxMg * i) / ENVELOPE_POINTS)))];
  const values = await Promise.all(loads.map(mpeAt));
  const steps = await Promise.all(loads.slice(1).map(async (hiLoad, i) => {
    if (values[i + 1] === values[i]) return null;
    let lo = loads[i], hi = hiLoad; // MPE(lo) differs from MPE(hi): find the first load of the new value
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if ((await mpeAt(mid)) === values[i]) lo = mid; else hi = mid;
    }
    return { x: hi, y: values[i + 1] };
  }));
  return [{ x: 0, y: values[0] }, ...steps.filter(Boolean)];
}

export function salesTable(items, id = "sales", eMg = null) {
  return table([
    { label: L("时间", "Time"), value: (s) => dateTime(s.ts_ms) },
    { label: L("净重 (kg)", "Net (kg)"), cls: "num", value: (s) => kgE(s.net_mg, eMg) },
    { label: L("单价 (元/kg)", "Price (yuan/kg)"), cls: "num", value: (s) => yuan(s.unit_price_fen_per_kg) },
    { label: L("金额 (元)", "Amount (yuan)"), cls: "num", value: (s) => yuan(s.amount_fen) },
    { label: "PLU", value: (s) => s.plu || "—" },
    { label: L("追溯码", "Trace code"), value: (s) => s.trace_code || "—" },
    { label: L("稳定", "Settled"), value: (s) => (s.unsettled_commit ? badge(L("未稳定", "unsettled"), "sev-high")
      : s.stable_device && s.stable_software ? "✓" : "?") },
  ], items, { empty: L("暂无交易", "No sales"), id });
}

export function findingsTable(items, id = "findings", labels = null) {
  return table([
    { label: L("时间", "Time"), value: (f) => dateTime(f.ts_ms) },
    { label: L("类型", "Kind"), value: (f) => link(kindLabel(f.kind, f.title), "finding", f.id) },
    { label: L("级别", "Severity"), value: (f) => badge(severityText(f.severity), "sev-" + f.severity) },
    { label: L("状态", "Status"), value: (f) => badge(findingStatusText(f.status), "st-" + f.status) },
    { label: L("计量秤", "Scale"), value: (f) => deviceLink(labels, f.device) },
  ], items, { empty: L("暂无问题", "No findings"), id });
}

/** Incidents (GET /incidents): one row per scale and kind, not one per finding. */
export function incidentsTable(items, id = "incidents", labels = null) {
  return table([
    { label: L("类型", "Kind"), value: (x) => link(kindLabel(x.kind, x.title), "finding", x.last_id) },
    { label: L("次数", "Count"), cls: "num count", value: (x) => String(x.count) },
    { label: L("首次", "First"), value: (x) => dateTime(x.first_ms) },
    { label: L("最近", "Last"), value: (x) => dateTime(x.last_ms) },
    { label: L("级别", "Severity"), value: (x) => badge(severityText(x.severity), "sev-" + x.severity) },
    { label: L("状态", "Status"), value: (x) => h("span", {}, badge(findingStatusText(x.status), "st-" + x.status),
      x.count > 1 && (x.confirmed || x.dismissed) && x.open ? h("span", { class: "muted small" },
        L(` 待处理 ${x.open}`, ` ${x.open} open`)) : null) },
    { label: L("计量秤", "Scale"), value: (x) => deviceLink(labels, x.device) },
  ], items, { empty: L("暂无问题", "No findings"), id });
}

export function inspectionsTable(items, id = "inspections", labels = null) {
  return table([
    { label: L("时间", "Time"), value: (r) => dateTime(r.ts_ms) },
    { label: L("计量秤", "Scale"), value: (r) => deviceLink(labels, r.device) },
    { label: L("检查员", "Inspector"), value: (r) => r.inspector || "—" },
    { label: L("结论", "Verdict"), value: (r) => badge(verdictText(r.verdict), r.verdict === "pass" ? "ok" : "sev-high") },
    { label: L("作弊", "Fraud"), value: (r) => (r.fraud === "yes" ? badge(L("是", "yes"), "sev-critical") : L("否", "no")) },
    { label: L("载荷 / 示值 (kg)", "Loads / indications (kg)"), value: (r) => (r.loads || []).map((c) =>
      `${kg(c.load_mg)}→${kg(c.indication_mg)}${c.ok ? "" : " ✗"}`).join(" · ") },
    { label: L("备注", "Notes"), value: (r) => r.notes || "" },
  ], items, { empty: L("暂无检查记录", "No inspections"), id });
}

export function reweighPlot(reweighs, checks, env, maxMg) {
  const pts = reweighs.filter((r) => r.sold_mg !== null && r.shortfall_mg !== null).map((r) => ({
    x: r.sold_mg, y: r.shortfall_mg, cls: "rw-" + r.verdict,
    title: `${L("复秤", "Re-weigh")} ${r.trace_code}: ${L("售出", "sold")} ${kg(r.sold_mg)} kg, ${L("复秤", "re-weighed")} ${kg(r.reference_mg)} kg, ${L("短少", "short")} ${kg(r.shortfall_mg, { sign: true })} kg (${verdictText(r.verdict)})`,
  }));
  for (const c of checks) {
    pts.push({ x: c.load_mg, y: c.error_mg, square: true, cls: "chk " + (c.ok ? "chk-ok" : "chk-fail"),
      title: `${L("检查", "Inspection")}: ${L("载荷", "load")} ${kg(c.load_mg)} kg, ${L("误差", "error")} ${kg(c.error_mg, { sign: true })} kg, MPE ±${fracKg(c.mpe_mg)} kg` });
  }
  // zoomed to the data (a 0–Max axis crams everything into its first tenth), never past Max
  const dataMax = Math.max(0, ...pts.map((p) => p.x));
  const xMax = dataMax > 0 ? Math.min(maxMg, niceCeil(dataMax * 1.25)) : maxMg;
  return envelopePlot({
    points: pts, envelope: env, xMax, w: 960, h: 340, label: L("复秤残差与使用中最大允许误差", "Re-weigh residuals and the in-service MPE"),
    xLabel: L("售出重量 / 载荷 (kg)", "Sold weight / load (kg)"), yLabel: L("短少 / 误差 (g)", "Shortfall / error (g)"),
    fmtX: (v) => kg(Math.round(v)).replace(/\.?0+$/, ""), fmtY: (v) => String(Math.round(v / 100) / 10),
  });
}

export async function render(root, [device], ctx) {
  const [all, regScale, sales, findings, reweighs, inspections, incidents, labels, markets] = await Promise.all([
    api("/scales"), optional(api("/registry/scales/" + encodeURIComponent(device))),
    api("/weighings", { params: { device, limit: 50 } }), api("/findings", { params: { device, limit: 500 } }),
    api("/reweighs", { params: { device } }), api("/inspections", { params: { device } }),
    api("/incidents", { params: { device } }), deviceLabels(), api("/markets"),
  ]);
  const sc = all.find((s) => s.device === device) || regScale;
  if (!sc) throw new Error(L("没有此计量秤", "No such scale"));
  const [risk, model] = await Promise.all([
    optional(api("/risk/scales/" + encodeURIComponent(device))), riskModel()]);
  const merchantId = regScale ? regScale.merchant_id : null;
  const merchant = merchantId !== null ? await optional(api("/merchants/" + merchantId)) : null;
  const maxMg = sc.max_mg, eMg = sc.e_mg, cls = sc.accuracy_class || "III";
  const openF = findings.filter((f) => f.status === "open");
  const online = sc.state === "online";

  root.appendChild(h("div", { class: "title-row" },
    h("h1", {}, L("计量秤 ", "Scale "), deviceName(labels, device)), badge(scaleStateText(sc.state || "unknown"), online ? "ok" : "grey"),
    regScale && regScale.overdue ? badge(L("检定过期", "Verification overdue"), "sev-high") : null,
    h("span", { class: "spacer" }),
    h("a", { class: "button", href: "#/inspect/" + encodeURIComponent(device), id: "inspect-btn" }, L("现场检查", "Inspect"))));
  const marketName = (markets.find((m) => m.id === sc.market) || {}).name || L("未登记市场", "unregistered market");
  root.appendChild(h("p", { class: "muted" }, L("市场 ", "Market "), marketName, merchant ? [" · ", L("商户 ", "Merchant "), link(merchant.name, "merchant", merchant.id)] : "",
    maxMg ? ` · ${L("最大秤量", "Max")} ${kg(maxMg)} kg · e = ${kg(eMg)} kg · ${cls} ${L("级", "")}`.trimEnd() : ""));

  const liveVal = h("span", { id: "live-weight" }, sc.live_net_mg !== null && sc.live_net_mg !== undefined ? kgE(sc.live_net_mg, eMg) + " kg" : "—");
  const liveSub = h("span", { id: "live-time" }, sc.live_ts_ms ? dateTime(sc.live_ts_ms) : L("无实时读数", "no live reading"));
  const lastSale = h("span", { id: "last-sale" }, sales.items.length ? kgE(sales.items[0].net_mg, eMg) + " kg" : "—");
  const lastSaleSub = h("span", {}, sales.items.length ? dateTime(sales.items[0].ts_ms) : "");
  const salesTotal = h("span", { id: "sales-total" }, String(sales.total));
  root.appendChild(h("div", { class: "stats" },
    stat(L("实时重量", "Live weight"), liveVal, { sub: liveSub }),
    stat(L("最近交易", "Last sale"), lastSale, { sub: lastSaleSub }),
    stat(L("交易总数", "Sales recorded"), salesTotal),
    stat(L("待处理问题", "Open findings"), openF.length,
      { cls: openF.some((f) => f.severity !== "info") ? "alert" : "ok" }),
    stat(L("检定有效期至", "Verified until"), regScale && regScale.due_on_ms ? date(regScale.due_on_ms) : "—",
      { cls: regScale && regScale.overdue ? "alert" : "", sub: regScale && regScale.overdue ? L("已过期", "overdue") : regScale?.cert_no || "" })));

  if (risk) root.appendChild(riskCard(risk, model));

  const byKind = {};
  for (const f of findings) (byKind[f.kind] ||= { open: 0, all: 0 }).all += 1;
  for (const f of openF) byKind[f.kind].open += 1;
  root.appendChild(h("div", { class: "grid2" },
    card(L("检定与登记", "Verification and register"), regScale ? kv([
      [L("设备编号", "Device number"), device],
      [L("型号", "Model"), regScale.model || "—"], [L("出厂编号", "Serial"), regScale.serial || "—"],
      [L("检定证书", "Certificate"), regScale.cert_no || "—"], [L("检定日期", "Verified on"), date(regScale.verified_on_ms)],
      [L("有效期至", "Due"), h("span", {}, date(regScale.due_on_ms), regScale.overdue ? [" ", badge(L("已过期", "overdue"), "sev-high")] : "")],
      [L("用途", "Role"), roleText(regScale.role)],
      [L("最后上线", "Last seen"), dateTime(sc.last_seen_ms)],
    ]) : h("p", { class: "muted" }, L("未登记的计量秤", "Not in the register"))),
    card(L("事件计数", "Event counters"), kv([
      [L("交易", "Sales"), String(sales.total)], [L("复秤", "Re-weighs"), String(reweighs.length)],
      [L("检查", "Inspections"), String(inspections.length)],
      ...Object.entries(byKind).map(([k, n]) => [kindText(k), `${n.open} ${L("待处理", "open")} / ${n.all}`]),
    ]))));

  const checks = inspections.flatMap((r) => r.loads || []);
  const rwCard = card(L("复秤残差与最大允许误差（使用中）", "Re-weigh residuals vs in-service MPE"));
  root.appendChild(rwCard);
  if (maxMg && eMg) {
    const env = await envelope(maxMg, eMg, cls);
    rwCard.appendChild(reweighPlot(reweighs.filter((r) => r.sale_device === device), checks, env, maxMg));
    rwCard.appendChild(h("p", { class: "legend" },
      h("span", { class: "key env" }), L("±最大允许误差（使用中检查）", "±MPE in service"),
      h("span", { class: "key rw-ok" }), L("复秤合格", "re-weigh ok"), h("span", { class: "key rw-violation" }), L("复秤短秤", "re-weigh short"),
      h("span", { class: "key chk-fail" }), L("检查载荷（方块）", "inspection loads (squares)")));
  } else rwCard.appendChild(h("p", { class: "muted" }, L("未知 Max / e", "Max / e unknown")));
  // what the statistical detector left out, or that it cannot judge this scale (info finding)
  const nj = openF.find((f) => f.kind === "not-judged" && f.evidence && f.evidence.detector === "residual");
  if (nj) {
    rwCard.appendChild(h("p", { class: "muted", id: "not-judged" },
      nj.evidence.judged ? L(`统计检测未计入 ${nj.evidence.left_out} / ${nj.evidence.pairs} 个数据对：`,
        `The statistical detector left out ${nj.evidence.left_out} of ${nj.evidence.pairs} pairs: `)
        : L("统计检测无法判断此秤：", "The statistical detector cannot judge this scale: "),
      "(", link(L("详情", "details"), "finding", nj.id), ")"));
  }

  const zeros = findings.filter((f) => f.kind === "zero-offset" && f.evidence && f.evidence.mean_mg !== undefined);
  const zCard = card(L("零点漂移", "Zero drift"));
  if (zeros.length) {
    const limit = fracNumber(zeros[0].evidence.limit_mg);
    zCard.appendChild(timePlot({
      points: zeros.map((f) => ({ t: f.ts_ms, y: f.evidence.mean_mg, cls: "zero-pt",
        title: `${dateTime(f.ts_ms)}: ${kg(f.evidence.mean_mg, { sign: true })} kg (${f.evidence.offset_e} e)` })),
      limit, w: 960, h: 260, label: L("空秤零点偏移", "Empty-pan zero offset"), yLabel: L("零点 (g)", "zero (g)"),
      fmtY: (v) => String(Math.round(v / 100) / 10), fmtT: (t) => dateTime(t),
    }));
    zCard.appendChild(h("p", { class: "legend" }, h("span", { class: "key env" }),
      L(`置零准确度 ±0.25e = ±${fracKg(zeros[0].evidence.limit_mg)} kg`, `zero-setting accuracy ±0.25 e = ±${fracKg(zeros[0].evidence.limit_mg)} kg`)));
  } else {
    zCard.appendChild(h("p", { class: "muted" }, L("无零点偏移记录（零点检查在允差内）。", "No zero offset recorded (zero checks within tolerance).")));
  }
  root.appendChild(zCard);

  root.appendChild(await salesOverTime(device, sales, eMg));
  const salesCard = card(L("交易记录（最近 50 笔）", "Sales (latest 50)"), salesTable(sales.items, "sales", eMg));
  root.appendChild(salesCard);
  root.appendChild(card(L("问题（按类型归并）", "Findings (one incident per kind)"), incidentsTable(incidents, "incidents", labels)));
  root.appendChild(card(L("检查记录", "Inspections"), inspectionsTable(inspections, "inspections", labels)));
  root.appendChild(card(L("检查案件", "Inspection cases"), casesTable(await api("/cases", { params: { device } }), labels, "scale-cases"),
    h("p", {}, h("button", { type: "button", class: "ghost", id: "open-case", onclick: () => openCaseFor(device) }, L("立案检查", "Open a case")))));

  const onSale = (e) => {
    const s = e.detail;
    if (s.device !== device) return;
    sales.items.unshift(s);
    sales.items.length = Math.min(sales.items.length, 50);
    sales.total += 1;
    lastSale.textContent = kgE(s.net_mg, eMg) + " kg";
    lastSaleSub.textContent = dateTime(s.ts_ms);
    salesTotal.textContent = String(sales.total);
    salesCard.querySelector(".table-wrap").replaceWith(salesTable(sales.items, "sales", eMg));
  };
  ctx.live.addEventListener("sale", onSale);
  const timer = setInterval(async () => {
    try {
      const s = (await api("/scales")).find((x) => x.device === device);
      if (s && s.live_net_mg !== null && s.live_net_mg !== undefined) liveVal.textContent = kgE(s.live_net_mg, eMg) + " kg";
      if (s && s.live_ts_ms) liveSub.textContent = dateTime(s.live_ts_ms);
    } catch (err) { /* next tick */ }
  }, 2000);
  return () => {
    ctx.live.removeEventListener("sale", onSale);
    clearInterval(timer);
  };
}

const HOUR = 3600000;

/** Sales and weights over time (buckets computed by the database: every sale counts). */
async function salesOverTime(device, sales, eMg) {
  const box = card(L("交易与重量（按时段）", "Sales and weights over time"));
  const first = sales.items.length ? Math.min(...sales.items.map((s) => s.ts_ms)) : Date.now() - 24 * HOUR;
  const span = Math.max(HOUR, Date.now() - Math.max(first, Date.now() - 7 * 24 * HOUR));
  const bucketMs = span <= 2 * 24 * HOUR ? (span <= 6 * HOUR ? 15 * 60000 : HOUR) : 6 * HOUR;
  const since = Math.floor((Date.now() - span) / bucketMs) * bucketMs;
  const series = await api("/stats/sales-series", { params: { device, since_ms: since, bucket_ms: bucketMs } });
  if (!series.length) {
    box.appendChild(h("p", { class: "muted" }, L("近期没有交易", "No recent sales")));
    return box;
  }
  box.appendChild(salesChart(series.map((b) => ({
    t: b.t_ms, count: b.count, minY: b.min_mg, maxY: b.max_mg, meanY: b.net_mg / b.count,
    title: `${dateTime(b.t_ms)}: ${b.count} ${L("笔", "sales")} · ${yuan(b.amount_fen)} ${L("元", "yuan")} · ${kgE(b.min_mg, eMg)}–${kgE(b.max_mg, eMg)} kg`,
  })), { label: L("交易笔数与重量", "Sales and weights"), bucketMs, fmtT: dateTime, fmtY: (v) => kg(Math.round(v)).replace(/\.?0+$/, ""),
    countLabel: L("笔数", "sales"), weightLabel: L("重量 (kg)", "weight (kg)") }));
  box.appendChild(h("p", { class: "legend" }, h("span", { class: "key bar-count" }), L("每时段交易笔数", "sales per period"),
    h("span", { class: "key weight-range" }), L("最轻至最重一笔（圆点为平均）", "lightest to heaviest sale (dot: mean)")));
  return box;
}
