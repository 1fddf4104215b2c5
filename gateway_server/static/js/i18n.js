// Language: zh-CN by default, English as the second language; the choice is kept in
// localStorage. Strings live beside the code that shows them: L("中文", "English").
const KEY = "gw.lang";

export function lang() {
  return localStorage.getItem(KEY) === "en" ? "en" : "zh";
}

export function setLang(value) {
  localStorage.setItem(KEY, value === "en" ? "en" : "zh");
  document.documentElement.lang = value === "en" ? "en" : "zh-CN";
}

export function L(zh, en) {
  return lang() === "en" ? en : zh;
}

// closed sets of the API, shown in both languages
const STATUS = {
  normal: ["正常", "Normal"], yellow: ["黄牌", "Yellow card"], red: ["红牌", "Red card"],
  suspended: ["经营异常", "Suspended"], delisted: ["已下架", "Delisted"],
};
const LIST = { none: ["—", "—"], red: ["红榜", "Red list"], black: ["黑榜", "Black list"] };
const SEVERITY = {
  info: ["提示", "info"], low: ["低", "low"], medium: ["中", "medium"], high: ["高", "high"],
  critical: ["严重", "critical"],
};
const FINDING_STATUS = {
  open: ["待处理", "open"], confirmed: ["已确认", "confirmed"], dismissed: ["已排除", "dismissed"],
};
const KIND = {
  "impact": ["冲击法（未稳定计价）", "Impact (unsettled sale)"],
  "impact-repeated": ["多次冲击计价（短秤超差）", "Repeated impact sales (short beyond tolerance)"],
  "zero-offset": ["零点偏移", "Zero offset"],
  "zero-offset-persistent": ["空秤持续显示重量（预留底数）", "Persistent offset on the empty pan"],
  "tare-omission": ["未去皮", "Tare omitted"],
  "untared-tray-goods": ["托盘类商品未去皮（观察）", "Tray goods untared (observation)"],
  "amount-mismatch": ["金额不符", "Amount mismatch"],
  "price-decimal-trick": ["单价小数点作弊", "Price decimal trick"],
  "price-mismatch": ["单价与登记不符", "Price mismatch"],
  "scale-too-coarse": ["秤准确度不适合", "Scale too coarse"],
  "calibration-change": ["计量参数变更", "Calibration change"],
  "idle-while-peers-trade": ["溯源秤闲置", "Idle scale"],
  "reweigh-short": ["复秤短秤", "Re-weigh short"],
  "untracked-sales": ["复秤商品无溯源记录", "Untracked sales"],
  "offline-trading-hours": ["交易时段离线", "Offline while trading"],
  "k-factor-drift": ["测量系数偏离", "K-factor drift"],
  "bad-signature": ["签名无效", "Bad signature"],
  "sequence-gap": ["数据缺失（序号断档）", "Sequence gap"],
  "identity-mismatch": ["设备身份不符", "Identity mismatch"],
  "verification-overdue": ["检定过期", "Verification overdue"],
  "residual-gain": ["残差：增益偏差", "Residual: gain"],
  "residual-additive": ["残差：固定偏差", "Residual: additive"],
  "residual-both": ["残差：增益与固定偏差", "Residual: gain + additive"],
  "residual-excess": ["残差：超出法定误差", "Residual: beyond the MPE"],
  "not-judged": ["未能判断（观察）", "Not judged (observation)"],
  "complaint-overdue": ["投诉逾期未答复", "Complaint not answered in time"],
};
const VERDICT = {
  ok: ["合格", "ok"], violation: ["短秤超差", "violation"], no_rule: ["无适用规则", "no rule"],
  unlinked: ["未关联交易", "unlinked"], pass: ["合格", "pass"], fail: ["不合格", "fail"],
  pending: ["待核对", "pending"], matched: ["已按重量匹配", "matched by weight"],
  untracked: ["无对应交易", "no recorded sale"], "unknown-merchant": ["商户不明", "unknown stall"],
};
const CATEGORY = {
  grain: ["粮食", "grain"], vegetables: ["蔬菜", "vegetables"], fruit: ["水果", "fruit"],
  meat: ["肉", "meat"], eggs: ["蛋", "eggs"], poultry: ["禽（已宰）", "poultry"],
  aquatic_products: ["水产品", "aquatic products"], pastry: ["糕点", "pastry"],
  candy: ["糖果", "candy"], condiments: ["调味品", "condiments"],
  dried_vegetables: ["干菜", "dried vegetables"], delicacies: ["山（海）珍品", "delicacies"],
  gold: ["金饰品", "gold"], silver: ["银饰品", "silver"], live_poultry: ["活禽", "live poultry"],
  live_fish: ["活鱼", "live fish"], water_soaked: ["水发物", "water-soaked"],
};
const METHOD = {
  original_scale: ["原计量器具", "original scale"],
  more_accurate_scale: ["准确度更高的秤", "more accurate scale"],
  equal_accuracy_scale: ["准确度相同的秤（公平秤）", "equal-accuracy scale (fair scale)"],
  "stall-match": ["按摊位、重量与时间匹配", "by stall, weight and time"],
};

const SCALE_STATE = {
  online: ["在线", "online"], offline: ["离线", "offline"], unknown: ["未知", "unknown"],
  stale: ["无近期数据", "no recent data"],
};
const ROLE = { trade: ["计价秤", "trade scale"], fair: ["公平秤", "fair scale"] };
const CHANNEL = {
  page: ["诚信码页面", "trust-code page"], phone: ["电话", "phone"], "12315": ["12315", "12315"],
  inspector: ["检查员", "inspector"],
};
const COMPLAINT_STATUS = {
  open: ["待处理", "open"], closed: ["已办结", "closed"], resolved: ["已办结", "resolved"],
  dismissed: ["不予受理", "dismissed"],
};
// the trust programme's lifecycle (issue 19)
const CASE_STATE = {
  awaiting: ["等待商户答复", "awaiting the answer"], answered: ["商户已答复", "answered"],
  overdue: ["逾期未答复", "overdue"], mediating: ["调解中", "in mediation"], closed: ["已办结", "closed"],
};
const OUTCOME = {
  refund: ["退款", "refund"], compensation: ["赔偿（消保法第五十五条）", "compensation (Art. 55)"],
  settled: ["调解达成协议", "settled"], rejected: ["投诉不成立", "rejected"],
};
const APP_STATUS = {
  draft: ["草稿", "draft"], submitted: ["待审核", "submitted"],
  changes_requested: ["需补充材料", "changes requested"], approved: ["已通过", "approved"],
  rejected: ["未通过", "rejected"],
};
const REGISTER_STATUS = {
  normal: ["登记正常", "registered"], cancelled: ["已注销", "cancelled"],
  revoked: ["已吊销", "revoked"], abnormal: ["经营异常名录", "abnormal-operations list"],
};
const GROUNDS = {
  evidence: ["证据达到门槛", "evidence above the threshold"],
  "verification-overdue": ["检定过期（法定理由）", "verification overdue (legal reason)"],
};
const STAGE = {
  in_service: ["使用中检查（2 倍）", "In service (2×)"],
  subsequent_verification: ["后续检定", "Subsequent verification"],
  initial_verification: ["首次检定", "Initial verification"],
};
// the register's columns (gateway_server/registry/register_csv.py COLUMNS): zh-CN and English headers
const COLUMN = {
  market: ["市场编号", "market"], merchant_name: ["商户名称", "merchant name"],
  credit_code: ["统一社会信用代码", "credit code"], stall_no: ["摊位号", "stall number"],
  categories: ["经营类别", "categories"], device: ["设备编号", "device number"],
  model: ["型号", "model"], serial: ["出厂编号", "serial number"], max: ["最大秤量", "Max"],
  e: ["分度值", "scale interval e"], accuracy_class: ["准确度等级", "accuracy class"],
  role: ["用途", "role"], profile: ["设备配置", "device profile"],
  cert_no: ["检定证书编号", "certificate number"], verified_on: ["检定日期", "verified on"],
  due_on: ["有效期至", "due on"], key: ["设备密钥", "device key"], name: ["名称", "name"],
};

/**
 * Keys a page asked for and no table had: kept in window.__i18nMissing (the browser test
 * reads it) and shown as "⟨key⟩" so a missing translation is visible, never silent.
 */
function missing(table, key) {
  const list = (window.__i18nMissing ||= []);
  list.push(table + ":" + key);
  return "⟨" + key + "⟩";
}

function pick(table, key, name = "?") {
  if (key === null || key === undefined || key === "") return "—";
  const v = table[key];
  if (!v) return missing(name, key);
  return lang() === "en" ? v[1] : v[0];
}

export const statusText = (k) => pick(STATUS, k, "status");
export const listText = (k) => pick(LIST, k, "list");
export const severityText = (k) => pick(SEVERITY, k, "severity");
export const findingStatusText = (k) => pick(FINDING_STATUS, k, "finding-status");
export const kindText = (k) => pick(KIND, k, "kind");
export const verdictText = (k) => pick(VERDICT, k, "verdict");
export const categoryText = (k) => pick(CATEGORY, k, "category");
export const methodText = (k) => pick(METHOD, k, "method");
export const scaleStateText = (k) => pick(SCALE_STATE, k, "scale-state");
export const roleText = (k) => pick(ROLE, k || "trade", "role");
export const channelText = (k) => pick(CHANNEL, k, "channel");
export const complaintStatusText = (k) => pick(COMPLAINT_STATUS, k, "complaint-status");
export const groundText = (k) => pick(GROUNDS, k, "grounds");
export const stageText = (k) => pick(STAGE, k, "stage");
export const caseStateText = (k) => pick(CASE_STATE, k, "case-state");
export const outcomeText = (k) => pick(OUTCOME, k, "outcome");
export const appStatusText = (k) => pick(APP_STATUS, k, "application-status");
export const registerStatusText = (k) => pick(REGISTER_STATUS, k, "register-status");
// a row error names its column by key or by the header the file used (zh or en)
const HEADER_KEY = Object.fromEntries(Object.entries(COLUMN).flatMap(([k, [zh, en]]) => [[zh, k], [en, k]]));
export const columnText = (k) => pick(COLUMN, COLUMN[k] ? k : HEADER_KEY[k] || k, "column");
export const CATEGORIES = Object.keys(CATEGORY);
/** Every raw value of the closed sets (the browser test looks for them in page text). */
export const RAW_VALUES = [KIND, CATEGORY, METHOD, SCALE_STATE, ROLE, CHANNEL, STATUS,
  SEVERITY, FINDING_STATUS, COMPLAINT_STATUS, STAGE, VERDICT, GROUNDS, CASE_STATE, OUTCOME,
  APP_STATUS, REGISTER_STATUS].flatMap((t) => Object.keys(t));

/** A category as the register stores it: a key of CATEGORY or the merchant's own words. */
export const categoryWords = (k) => (CATEGORY[k] ? categoryText(k) : k);

/** A finding's title ("中文 English") in the page's language: the text before the first
 * English word, or from it on. */
export function titleText(title) {
  if (!title) return "";
  const m = /\s[A-Z][a-z]/.exec(title);
  if (!m) return title;
  return lang() === "en" ? title.slice(m.index + 1).trim() : title.slice(0, m.index).trim();
}

/** A finding kind in words; a kind without a label shows its finding's title, never its
 * raw name (unless there is no title either). */
export const kindLabel = (k, title) => (KIND[k] ? pick(KIND, k) : titleText(title) || kindText(k));
