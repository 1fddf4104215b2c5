// Finding detail: what was found, its legal basis, and its evidence formatted by unit
// (…_mg as kg, …_fen as yuan, …_ms as a time or a duration); status changes.
import { api } from "../api.js";
import { badge, card, h, kv, link } from "../dom.js";
import { dateTime, duration, fracKg, kg, yuan } from "../format.js";
import { L, categoryText, findingStatusText, kindLabel, lang, methodText, severityText, titleText, verdictText } from "../i18n.js";
import { deviceLabels, deviceLink } from "../labels.js";

const LABELS = {
  seq: ["事件序号", "event seq"], net_mg: ["净重", "net"], settled_mg: ["稳定后重量", "settled"],
  peak_mg: ["峰值", "peak"], gain_mg: ["多计重量", "gain"], e_mg: ["分度值 e", "e"],
  mean_mg: ["空秤均值", "empty-pan mean"], spread_mg: ["波动", "spread"], limit_mg: ["允差", "limit"],
  offset_e: ["偏移 (e)", "offset (e)"], duration_ms: ["时长", "duration"], window_ms: ["窗口", "window"],
  unit_price_fen_per_kg: ["单价", "unit price"], registered_fen_per_kg: ["登记单价", "registered price"],
  amount_fen: ["金额", "amount"], expected_amount_fen: ["应收金额", "expected amount"],
  sold_mg: ["售出重量", "sold"], reference_mg: ["复秤重量", "re-weighed"], shortfall_mg: ["短少", "shortfall"],
  trace_code: ["追溯码", "trace code"], method: ["复秤方法", "method"], category: ["商品类别", "category"],
  stable_device: ["设备稳定标志", "device stable flag"], stable_software: ["软件判稳", "software stable"],
  plu: ["PLU", "PLU"], pattern: ["模式", "pattern"], mpe_in_service_mg: ["使用中最大允许误差", "MPE in service"],
  negative_deviation_mg: ["允许负偏差", "negative deviation"], sales: ["交易笔数", "sales"],
  market_median: ["市场中位数", "market median"], first_missing: ["首个缺失序号", "first missing"],
  last_missing: ["末个缺失序号", "last missing"], reason: ["原因", "reason"], sale_id: ["交易", "sale"],
  name: ["参数", "parameter"], old: ["原值", "old"], new: ["新值", "new"],
  untracked: ["无对应交易的复秤", "re-weighs no sale explains"],
  stall_named_reweighs: ["按摊位复秤次数", "stall-named re-weighs"], share: ["占比", "share"],
  recorded_sales: ["溯源秤记录交易", "recorded sales per scale"], reweighs: ["复秤记录", "re-weighs"],
  fair_device: ["公平秤", "fair scale"], ts_ms: ["时间", "time"], id: ["编号", "id"],
  cause: ["原因", "cause"], from_ms: ["开始", "from"], to_ms: ["结束", "to"],
  in_trading_hours_ms: ["交易时段内时长", "within trading hours"], trading_hours: ["交易时段", "trading hours"],
  k_ref: ["参考测量系数 K", "reference K"], k_now: ["当前测量系数 K", "current K"],
  display_gain: ["显示增益", "display gain"], tolerance_rel: ["相对允差", "relative tolerance"],
  since_ms: ["起算时间", "since"], seqs: ["事件序号", "event seqs"],
  threshold_mg: ["判定阈值（含两秤误差）", "threshold (both scales' errors)"],
  detector: ["检测器", "detector"], judged: ["已判断", "judged"], pairs: ["数据对", "pairs"],
  used: ["已使用", "used"], left_out: ["未计入", "left out"], reasons: ["原因统计", "reasons"],
  left_out_pairs: ["未计入的数据对", "pairs left out"], count: ["数量", "count"],
  source: ["来源", "source"], ref: ["记录", "record"], reweigh_pairs: ["复秤数据对", "re-weigh pairs"],
  inspection_pairs: ["检查载荷数据对", "inspection-load pairs"],
  reference_assumed: ["公平秤未登记（按同等准确度）", "fair scale not registered (taken as equal)"],
  what: ["数据", "data"], missing: ["缺失条数", "missing"], filled: ["已补回", "filled"],
  tray_estimate_mg: ["托盘估计重量", "tray estimate"], overcharge_estimate_fen: ["估计多收", "overcharge estimate"],
  habit: ["去皮习惯", "taring habit"], basis: ["依据", "basis"], window: ["参考交易数", "sales looked at"],
  tared: ["去皮次数", "tared"], typical_tare_mg: ["常用皮重", "typical tare"], breaks: ["未去皮次数", "untared in a row"],
  short_mg: ["短少", "short"], short_total_mg: ["短少合计", "short in total"],
  means_mg: ["空秤读数", "empty-pan readings"], report_times_ms: ["读数时间", "reading times"],
  sales_between: ["其间交易笔数", "sales between"], deviation_mg: ["商品负偏差", "negative deviation"],
  overcharge_fen: ["多收金额", "overcharge"], max_lawful_amount_fen: ["最高合法金额", "highest lawful amount"],
  lawful_amounts_fen: ["各种合法取整金额", "lawful roundings"], verdict: ["结论", "verdict"],
  n: ["数据对数", "pairs"], flagged_at: ["触发于第几对", "flagged at pair"], a_mg: ["固定偏差", "additive error"],
  bound_a_mg: ["固定偏差界限", "additive bound"], z_a: ["固定偏差统计量", "additive statistic"],
  b: ["比例偏差", "gain error"], bound_b: ["比例偏差界限", "gain bound"], z_b: ["比例偏差统计量", "gain statistic"],
  attributed_by_test: ["由检验归因", "attributed by the test"], worst: ["最大残差", "largest residuals"],
  residual_mg: ["残差", "residual"], envelope_mg: ["允差", "envelope"], registered: ["登记值", "registered"],
  reported: ["设备报告", "reported"], max_mg: ["最大秤量", "Max"], server_last_value: ["服务器上次记录", "last value stored"],
  expected: ["预期交易笔数", "expected sales"], p_value: ["诚实秤出现概率", "probability if honest"],
  baseline_sales: ["基线交易笔数", "baseline sales"], baseline_ms: ["基线时长", "baseline"],
  reference_sales: ["参考交易笔数", "reference sales"], sale_id: ["交易", "sale"], market: ["市场", "market"],
};

// values of closed sets inside the evidence
const COUNTERS = { cal: ["标定计数器", "calibration counter"], cfg: ["配置计数器", "configuration counter"],
  software_id: ["软件标识", "software id"], span: ["量程标定值", "span calibration"], zero: ["零点标定值", "zero calibration"] };
const BASIS = { plu: ["同一商品", "the same goods"], merchant: ["该商户的托盘类商品", "the merchant's tray goods"] };
const CAUSES = { "no-data": ["设备无读数", "no readings from the scale"], silent: ["无任何数据", "no data at all"] };

/** An evidence key in words; a key without a label is marked missing (never shown raw). */
export function fieldLabel(k) {
  if (LABELS[k]) return L(LABELS[k][0], LABELS[k][1]);
  (window.__i18nMissing ||= []).push("field:" + k);
  return "⟨" + k + "⟩";
}

/** A list of evidence records (re-weighs, worst pairs) as a small table. */
function evidenceTable(rows) {
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const label = fieldLabel;
  return h("table", { class: "evidence-table" },
    h("thead", {}, h("tr", {}, keys.map((k) => h("th", {}, label(k))))),
    h("tbody", {}, rows.map((r) => h("tr", {}, keys.map((k) => h("td", {}, evidenceValue(k, r[k])))))));
}

/** One evidence value, formatted by the unit its key names. */
export function evidenceValue(key, v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "boolean") return v ? L("是", "yes") : L("否", "no");
  if (Array.isArray(v) && v.length && v.every((x) => x && typeof x === "object" && !Array.isArray(x))) {
    return evidenceTable(v);
  }
  if (Array.isArray(v) && v.every((x) => x === null || typeof x !== "object")) {
    return v.map((x) => evidenceValue(key, x)).join(", ");
  }
  if (typeof v === "object") {
    return h("dl", { class: "kv nested" }, Object.entries(v).map(([k, x]) => [h("dt", {}, fieldLabel(k)), h("dd", {}, evidenceValue(k, x))]));
  }
  if (key.endsWith("_fen_per_kg")) return yuan(v) + " " + L("元/kg", "yuan/kg");
  if (key.endsWith("_fen")) return yuan(v) + " " + L("元", "yuan");
  if (key.endsWith("_mg")) return (typeof v === "string" ? fracKg(v) : kg(v, { sign: key === "gain_mg" || key === "shortfall_mg" || key === "mean_mg" })) + " kg";
  if (key === "duration_ms" || key === "window_ms" || key === "in_trading_hours_ms") return duration(v);
  if (key.endsWith("_ms")) return dateTime(v);
  if (key === "category") return categoryText(v);
  if (key === "method") return methodText(v);
  if (key === "verdict") return verdictText(v);
  if (key === "name" && COUNTERS[v]) return L(COUNTERS[v][0], COUNTERS[v][1]);
  if (key === "basis" && BASIS[v]) return L(BASIS[v][0], BASIS[v][1]);
  if (key === "cause" && CAUSES[v]) return L(CAUSES[v][0], CAUSES[v][1]);
  if (key === "pattern") return v === "x0.01" ? L("登记价的 1/100", "1/100 of the registered price") : v === "x0.1" ? L("登记价的 1/10", "1/10 of the registered price") : String(v);
  if (key === "b" || key === "bound_b" || key === "tolerance_rel" || key === "display_gain") return String(v);
  return String(v);
}

export async function render(root, [id]) {
  const f = await api("/findings/" + encodeURIComponent(id));
  const [m, labels, markets] = await Promise.all([f.merchant_id !== null ? api("/merchants/" + f.merchant_id) : null,
    deviceLabels(), api("/markets")]);
  const market = markets.find((x) => x.id === f.market);
  const status = h("span", { id: "finding-status" }, badge(findingStatusText(f.status), "st-" + f.status));
  root.appendChild(h("div", { class: "title-row" }, h("h1", {}, L("问题 #", "Finding #"), String(f.id)),
    badge(severityText(f.severity), "sev-" + f.severity), status));
  root.appendChild(h("p", { class: "lead" }, titleText(f.title)));
  root.appendChild(h("div", { class: "grid2" },
    card(L("概况", "Summary"), kv([
      [L("类型", "Kind"), kindLabel(f.kind, f.title)], [L("发生时间", "When"), dateTime(f.ts_ms)],
      [L("发现时间", "Detected"), dateTime(f.created_ms)],
      [L("市场", "Market"), market ? ((lang() === "en" && market.name_en) || market.name) : L("未登记市场", "unregistered market")],
      [L("计量秤", "Scale"), deviceLink(labels, f.device)],
      [L("商户", "Merchant"), m ? link(m.name, "merchant", m.id) : "—"],
      [L("法律依据", "Legal basis"), h("span", { id: "legal-basis", class: f.legal_technical ? "muted" : null },
        lang() === "en" && f.legal_basis_en ? f.legal_basis_en : f.legal_basis)],
    ])),
    card(L("证据", "Evidence"), h("dl", { class: "kv evidence", id: "evidence" }, Object.entries(f.evidence).map(([k, v]) => [
      h("dt", {}, fieldLabel(k)), h("dd", {}, evidenceValue(k, v))])))));
  const bar = h("div", { class: "actions bar" });
  // the actions that make sense in the finding's status: no 重新打开 on an open finding
  const drawActions = (st) => bar.replaceChildren(...[
    f.device ? h("a", { class: "button", href: "#/inspect/" + encodeURIComponent(f.device) }, L("现场检查", "Inspect the scale")) : null,
    st === "open" ? h("button", { type: "button", class: "ghost", onclick: () => setStatus("confirmed") }, L("确认", "Confirm")) : null,
    st === "open" ? h("button", { type: "button", class: "ghost", onclick: () => setStatus("dismissed") }, L("排除", "Dismiss")) : null,
    st !== "open" ? h("button", { type: "button", class: "ghost", onclick: () => setStatus("open") }, L("重新打开", "Reopen")) : null,
  ].filter(Boolean));
  const setStatus = async (st) => {
    const r = await api(`/findings/${f.id}/status`, { method: "POST", body: { status: st } });
    status.replaceChildren(badge(findingStatusText(r.status), "st-" + r.status));
    drawActions(r.status);
  };
  drawActions(f.status);
  root.appendChild(bar);
}
