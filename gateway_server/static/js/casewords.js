// Words of the case file (issue 18): case states, decisions, audit steps and the case API's
// error codes, in zh-CN and English. Same rules as i18n.js: a key no table has is shown as
// "⟨key⟩" and recorded in window.__i18nMissing (the browser test reads it).
import { L, lang } from "./i18n.js";
import { date } from "./format.js";

const CASE_STATE = {
  open: ["已立案，待记录", "opened, to record"], recorded: ["已记录，待签名", "recorded, to sign"],
  signed: ["已签名，待处理", "signed, to decide"], decided: ["已处理", "decided"],
};
const ACTION = {
  yellow: ["黄牌警示", "yellow card"], red: ["红牌警示", "red card"],
  black: ["红牌并列入黑榜", "red card and the black list"], "red-list": ["列入红榜", "the red list"],
  lift: ["解除警示牌（降一级）", "lift the card (one step)"], none: ["不予处理", "no sanction"],
};
// what each decision does, shown before the inspector confirms it
const CONSEQUENCE = {
  yellow: ["商户状态改为“黄牌”，消费者扫码页面立即显示黄牌警告。", "The merchant becomes “yellow card”; the consumer page shows the warning at once."],
  red: ["商户状态改为“红牌”，消费者扫码页面立即显示红牌警告。", "The merchant becomes “red card”; the consumer page shows it at once."],
  black: ["商户状态改为“红牌”并列入黑榜（公开名单），消费者扫码页面立即显示。需要管理员权限。", "The merchant gets a red card and goes on the public black list, shown at once. Admins only."],
  "red-list": ["商户列入红榜（公开名单）。需要管理员权限。", "The merchant goes on the public red list. Admins only."],
  lift: ["黄牌解除为正常，红牌降为黄牌；消费者页面随之更新。", "A yellow card becomes normal, a red card yellow; the consumer page follows."],
  none: ["不改变商户状态，只记录处理意见。", "The merchant's status stays; only the decision is recorded."],
};
const AUDIT = {
  "case.open": ["立案", "case opened"], "case.record": ["记录现场检查", "on-site record"],
  "case.photo": ["上传照片", "photo added"], "case.sign": ["检查人员签名", "signed"],
  "case.decision": ["处理决定", "decision"], "card.lift": ["解除警示牌", "card lifted"],
  "list.add": ["列入名单", "put on a list"], "list.end": ["移出名单", "taken off a list"],
};
const ERROR = {
  "no-task": ["没有此检查任务", "No such task"], "no-scale": ["没有此计量秤", "No such scale"],
  "no-case": ["没有此案件", "No such case"], "no-subject": ["请指定任务或计量秤", "Give a task or a scale"],
  "signed": ["笔录已签名，不能再修改", "The record is signed and can no longer change"],
  "recorded": ["本案已有检查记录；请另立新案", "This case has its record; open a new case"],
  "no-weights-cert": ["请填写标准砝码证书编号", "Give the standard weights' certificate number"],
  "not-an-image": ["照片须为 PNG 或 JPEG 图片", "A photo must be a PNG or JPEG image"],
  "type-mismatch": ["文件内容与类型不符", "The file's content does not match its type"],
  "too-large": ["照片过大", "The photo is too large"],
  "duplicate-photo": ["这张照片已在案中", "This photo is already in the case"],
  "too-many-photos": ["照片数量已达上限", "Too many photos"],
  "no-photo": ["没有此照片", "No such photo"], "bad-signature": ["请先手写签名", "Draw the signature first"],
  "no-signer": ["请填写签名人姓名", "Type the signer's name"],
  "not-recorded": ["请先记录检查结果", "Record the inspection first"],
  "not-signed": ["笔录签名后才能处理", "Sign the record before deciding"],
  "decided": ["本案已处理", "This case is decided"],
  "not-confirmed": ["请勾选确认", "Tick the confirmation"],
  "not-an-option": ["本案不能作此处理", "Not an option of this case"],
  "admin-only": ["列入红榜、黑榜需要管理员", "List entries need an admin"],
  "no-reason": ["请填写处理理由（至少 2 个字）", "Give a reason (2 characters or more)"],
  "no-pdf": ["服务器上没有 PDF 生成程序", "No PDF renderer on the server"],
};

function pick(table, key, name) {
  if (key === null || key === undefined || key === "") return "—";
  const v = table[key];
  if (!v) {
    (window.__i18nMissing ||= []).push(name + ":" + key);
    return "⟨" + key + "⟩";
  }
  return lang() === "en" ? v[1] : v[0];
}

export const caseStateText = (k) => pick(CASE_STATE, k, "case-state");
export const actionText = (k) => pick(ACTION, k, "case-action");
export const consequenceText = (k) => pick(CONSEQUENCE, k, "case-consequence");
export const auditText = (k) => (AUDIT[k] ? pick(AUDIT, k, "audit") : L("其他记录", "other entry"));
export const RAW_VALUES = [CASE_STATE, ACTION, ERROR].flatMap((t) => Object.keys(t));

/** A case API error in words (its detail carries a code and figures). */
export function caseErrorText(err) {
  const d = err && err.detail;
  if (d && typeof d === "object" && !Array.isArray(d) && d.code) {
    if (d.code === "lift-too-early") {
      return L(`警示牌须在 ${date(d.lift_after_ms)} 之后（给牌后 ${d.days} 天）经复检合格方可解除`,
        `A card is lifted by a passing re-inspection after ${date(d.lift_after_ms)} (${d.days} days after the card)`);
    }
    return pick(ERROR, d.code, "case-error");
  }
  return String(err && err.message ? err.message : err);
}

// complaint cases (issue 19's API, acted on from the merchant page)
const COMPLAINT_CASE = {
  awaiting: ["等待商户答复", "awaiting the answer"], answered: ["商户已答复", "answered"],
  overdue: ["逾期未答复", "overdue"], mediating: ["调解中", "in mediation"], closed: ["已办结", "closed"],
};
const OUTCOME = {
  refund: ["退款", "refund"], compensation: ["赔偿（消保法第五十五条）", "compensation (Art. 55)"],
  settled: ["调解达成协议", "settled"], rejected: ["投诉不成立", "rejected"],
};
export const complaintCaseText = (k) => pick(COMPLAINT_CASE, k, "complaint-case");
export const outcomeText = (k) => pick(OUTCOME, k, "outcome");
export const OUTCOMES = Object.keys(OUTCOME);
RAW_VALUES.push(...Object.keys(COMPLAINT_CASE), ...Object.keys(OUTCOME));
