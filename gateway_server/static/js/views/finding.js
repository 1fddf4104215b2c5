// Finding detail: what was found, its legal basis, and its evidence formatted by unit
// (…_mg as kg, …_fen as yuan, …_ms as a time or a duration); status changes.
import { api } from "../api.js";
import { badge, card, h, kv, link } from "../dom.js";
import { dateTime, duration, fracKg, kg, yuan } from "../format.js";
import { L, categoryText, findingStatusText, kindText, methodText, severityText } from "../i18n.js";

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
};

/** A list of evidence records (re-weighs, worst pairs) as a small table. */
function evidenceTable(rows) {
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const label = (k) => (LABELS[k] ? L(LABELS[k][0], LABELS[k][1]) : k);
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
  if (typeof v === "object") return JSON.stringify(v);
  if (key.endsWith("_fen_per_kg")) return yuan(v) + " " + L("元/kg", "yuan/kg");
  if (key.endsWith("_fen")) return yuan(v) + " " + L("元", "yuan");
  if (key.endsWith("_mg")) return (typeof v === "string" ? fracKg(v) : kg(v, { sign: key === "gain_mg" || key === "shortfall_mg" || key === "mean_mg" })) + " kg";
  if (key === "duration_ms" || key === "window_ms" || key === "in_trading_hours_ms") return duration(v);
  if (key.endsWith("_ms")) return dateTime(v);
  if (key === "category") return categoryText(v);
  if (key === "method") return methodText(v);
  return String(v);
}

export async function render(root, [id]) {
  const f = await api("/findings/" + encodeURIComponent(id));
  const m = f.merchant_id !== null ? await api("/merchants/" + f.merchant_id) : null;
  const status = h("span", { id: "finding-status" }, badge(findingStatusText(f.status), "st-" + f.status));
  root.appendChild(h("div", { class: "title-row" }, h("h1", {}, L("问题 #", "Finding #"), String(f.id)),
    badge(severityText(f.severity), "sev-" + f.severity), status));
  root.appendChild(h("p", { class: "lead" }, f.title));
  root.appendChild(h("div", { class: "grid2" },
    card(L("概况", "Summary"), kv([
      [L("类型", "Kind"), kindText(f.kind) + " (" + f.kind + ")"], [L("发生时间", "When"), dateTime(f.ts_ms)],
      [L("发现时间", "Detected"), dateTime(f.created_ms)], [L("市场", "Market"), f.market],
      [L("计量秤", "Scale"), f.device ? link(f.device, "scale", f.device) : "—"],
      [L("商户", "Merchant"), m ? link(m.name, "merchant", m.id) : "—"],
      [L("法律依据", "Legal basis"), f.legal_basis],
    ])),
    card(L("证据", "Evidence"), h("dl", { class: "kv evidence", id: "evidence" }, Object.entries(f.evidence).map(([k, v]) => [
      h("dt", {}, LABELS[k] ? L(LABELS[k][0], LABELS[k][1]) : k, h("small", {}, " " + k)), h("dd", {}, evidenceValue(k, v))])))));
  const setStatus = async (st) => {
    const r = await api(`/findings/${f.id}/status`, { method: "POST", body: { status: st } });
    status.replaceChildren(badge(findingStatusText(r.status), "st-" + r.status));
  };
  root.appendChild(h("div", { class: "actions bar" },
    f.device ? h("a", { class: "button", href: "#/inspect/" + encodeURIComponent(f.device) }, L("现场检查", "Inspect the scale")) : null,
    h("button", { type: "button", class: "ghost", onclick: () => setStatus("confirmed") }, L("确认", "Confirm")),
    h("button", { type: "button", class: "ghost", onclick: () => setStatus("dismissed") }, L("排除", "Dismiss")),
    h("button", { type: "button", class: "ghost", onclick: () => setStatus("open") }, L("重新打开", "Reopen"))));
}
