// Messages from the server (API errors, register CSV row errors) in the page's language.
// The server writes them in English with masses in mg; a person reads them here: each known
// message has a zh-CN and an English text, masses become g / kg, field names become the
// column's label. A message no pattern knows is shown as "数据有误" with the server's words
// in the English UI only, never a field name or an API path.
import { kg } from "./format.js";
import { L, columnText, lang } from "./i18n.js";

/** "15000000" mg → "15 kg"; below 1 kg in g ("5 g", "2.5 g"); exact, no float. */
export function massText(mg) {
  const n = Number(mg);
  if (!Number.isSafeInteger(n)) return String(mg);
  if (Math.abs(n) >= 1000000) return kg(n).replace(/\.?0+$/, "") + " kg";
  const g = Math.trunc(Math.abs(n) / 1000), rest = String(Math.abs(n) % 1000).padStart(3, "0").replace(/0+$/, "");
  return (n < 0 ? "−" : "") + g + (rest ? "." + rest : "") + " g";
}

const withMasses = (text) => text.replace(/(-?\d+) mg\b/g, (_, v) => massText(v));
const q = (v) => "“" + v + "”";

// [pattern, zh(m), en(m)]: m is the match (groups already with masses converted)
const PATTERNS = [
  [/^required$/, () => "必填", () => "required"],
  [/^required column missing \((.+) \/ (.+)\)$/, (m) => `缺少必填列（${m[1]}）`, (m) => `required column missing (${m[2]})`],
  [/^row is for market '(.*)', importing into '(.*)'$/, (m) => `该行属于市场 ${m[1]}，当前导入的是 ${m[2]}`, (m) => `the row is for market ${m[1]}, importing into ${m[2]}`],
  [/^'?(.*?)'? is not (?:a device id|an id) \(A-Z a-z 0-9 _ \. -, max 64\)$/, (m) => `${q(m[1])} 不是有效编号（字母、数字、_ . -，最多 64 位）`, (m) => `${q(m[1])} is not a valid number (letters, digits, _ . -, up to 64)`],
  [/^row has (\d+) cells, the header (\d+)$/, (m) => `该行有 ${m[1]} 列，表头有 ${m[2]} 列`, (m) => `the row has ${m[1]} cells, the header ${m[2]}`],
  [/^device (.+) is also on row (\d+)$/, (m) => `设备 ${m[1]} 在第 ${m[2]} 行也出现`, (m) => `device ${m[1]} is also on row ${m[2]}`],
  [/^same merchant as row (\d+) but with different details$/, (m) => `与第 ${m[1]} 行是同一商户，但信息不同`, (m) => `same merchant as row ${m[1]} with different details`],
  [/^this code is merchant \d+ of market (.+)$/, (m) => `此信用代码已属于市场 ${m[1]} 的另一商户`, (m) => `this code belongs to another merchant of market ${m[1]}`],
  [/^(.+) at stall (.+) is merchant .*$/, (m) => `此信用代码已属于摊位 ${m[2]} 的 ${m[1]}`, (m) => `this code belongs to ${m[1]} at stall ${m[2]}`],
  [/^device (.+) is registered in market (.+)$/, (m) => `设备 ${m[1]} 已登记在市场 ${m[2]}`, (m) => `device ${m[1]} is registered in market ${m[2]}`],
  [/^Max\/e do not fit class (\S+) \(JJG 539 \/ OIML R76-1 Table 3\): (.*)$/,
    (m) => `最大秤量与分度值不符合 ${m[1]} 级（JJG 539 / OIML R76-1 表 3）：${m[2].split("; ").map(message).join("；")}`,
    (m) => `Max and e do not fit class ${m[1]} (JJG 539 / OIML R76-1 Table 3): ${m[2].split("; ").map(message).join("; ")}`],
  [/^e = (.+) is outside every class (\S+) row$/, (m) => `分度值 e = ${m[1]} 不在 ${m[2]} 级的任何一档`, (m) => `e = ${m[1]} fits no class ${m[2]} row`],
  [/^Max = (.+) is not a whole number of e = (.+)$/, (m) => `最大秤量 ${m[1]} 不是分度值 e = ${m[2]} 的整数倍`, (m) => `Max = ${m[1]} is not a whole number of e = ${m[2]}`],
  [/^n = Max\/e = (\d+) outside (\d+)–(\S+) for class (\S+)$/, (m) => `分度数 n = ${m[1]}，超出 ${m[4]} 级的 ${m[2]}–${m[3]}`, (m) => `n = Max/e = ${m[1]}, outside ${m[2]}–${m[3]} for class ${m[4]}`],
  [/^give a string with a unit or an integer in mg$/, () => "请填写带单位的重量（如 15 kg、5 g）", () => "give a mass with its unit (e.g. 15 kg, 5 g)"],
  [/^not a mass: '(.*)' \(.*\)$/, (m) => `${q(m[1])} 不是重量（如 15 kg、5 g）`, (m) => `${q(m[1])} is not a mass (e.g. 15 kg, 5 g)`],
  [/^'(.*)' needs a unit \(kg, g, mg\)$/, (m) => `${q(m[1])} 缺少单位（kg、g）`, (m) => `${q(m[1])} needs a unit (kg, g)`],
  [/^(\S+ (?:斤|两|市斤)) = (.+): a scale's data are registered in legal units .*$/, (m) => `${m[1]} = ${m[2]}：秤的计量数据按法定计量单位登记（计量法 第三条），请填写 ${m[2]}`, (m) => `${m[1]} = ${m[2]}: a scale's data are registered in legal units (Metrology Law Art. 3): give ${m[2]}`],
  [/^unknown price unit in '(.*)' .*$/, (m) => `单价单位无法识别：${q(m[1])}（可用 元/kg、元/斤、元/两）`, (m) => `unknown price unit in ${q(m[1])} (yuan/kg, yuan/jin, yuan/liang)`],
  [/^unknown unit '(斤|两|市斤|公两)' .*$/, (m) => `登记表不接受“${m[1]}”：请换算为 kg 或 g（1 斤 = 500 g，1 两 = 50 g）`, (m) => `the register does not take “${m[1]}”: convert to kg or g (1 jin = 500 g, 1 liang = 50 g)`],
  [/^unknown unit '(.*)' .*$/, (m) => `未知单位 ${q(m[1])}（可用 kg、g、千克、克）`, (m) => `unknown unit ${q(m[1])} (kg, g, 千克, 克)`],
  [/^must be positive$/, () => "必须大于 0", () => "must be positive"],
  [/^must not be negative$/, () => "不能为负数", () => "must not be negative"],
  [/^must not be empty$/, () => "不能为空", () => "must not be empty"],
  [/^too large$/, () => "数值过大", () => "too large"],
  [/^too long$/, () => "内容过长", () => "too long"],
  [/^give a date YYYY-MM-DD.*$/, () => "请按 年-月-日 填写日期", () => "give a date as YYYY-MM-DD"],
  [/^'(.*)' is not a date from 1900 to 9999$/, (m) => `${q(m[1])} 不是 1900–9999 年间的日期`, (m) => `${q(m[1])} is not a date from 1900 to 9999`],
  [/^not a date: '(.*)' \(YYYY-MM-DD\)$/, (m) => `${q(m[1])} 不是日期（年-月-日）`, (m) => `${q(m[1])} is not a date (YYYY-MM-DD)`],
  [/^'(.*)' is neither trade \(交易\) nor fair \(公平秤\)$/, (m) => `用途 ${q(m[1])} 无法识别：请填“交易”或“公平秤”`, (m) => `role ${q(m[1])} not recognised: give “trade” or “fair”`],
  [/^(?:month must be in 1\.\.12|day is out of range for month|year \d+ is out of range)(?:: '(.*)')?$/, (m) => `${q(m[1] || "")} 不是有效日期`, (m) => `${q(m[1] || "")} is not a valid date`],
  [/^'(.*)' is not I, II, III or IIII$/, (m) => `${q(m[1])} 不是 I、II、III 或 IIII 级`, (m) => `${q(m[1])} is not class I, II, III or IIII`],
  [/^not an even-length hex string$/, () => "密钥应为偶数位十六进制", () => "the key is not an even-length hex string"],
  [/^(\d+) bytes; give (\d+) to 128 bytes$/, (m) => `密钥 ${m[1]} 字节，应为 ${m[2]}–128 字节`, (m) => `the key has ${m[1]} bytes; give ${m[2]} to 128`],
  [/^a 统一社会信用代码 has 18 characters, got (\d+)$/, (m) => `统一社会信用代码应为 18 位，实为 ${m[1]} 位`, (m) => `a unified social credit code has 18 characters, got ${m[1]}`],
  [/^check character is '(.)', expected '(.)'$/, (m) => `校验码为 ${m[1]}，应为 ${m[2]}`, (m) => `check character is ${m[1]}, expected ${m[2]}`],
  [/^character '(.)' at position (\d+) is not allowed$/, (m) => `第 ${m[2]} 位的字符 ${m[1]} 不允许`, (m) => `character ${m[1]} at position ${m[2]} is not allowed`],
  [/^positions 3-8 \(行政区划码\) must be digits$/, () => "第 3–8 位（行政区划码）必须为数字", () => "positions 3–8 (area code) must be digits"],
  [/^need 17 characters for a check character, got (\d+)$/, (m) => `计算校验码需要 17 位，实为 ${m[1]} 位`, (m) => `need 17 characters for a check character, got ${m[1]}`],
  [/^load (.+) exceeds (\d+) e, the end of the class (\S+) table$/, (m) => `载荷 ${m[1]} 超过 ${m[2]} e（${m[3]} 级表的上限）`, (m) => `load ${m[1]} exceeds ${m[2]} e, the end of the class ${m[3]} table`],
  [/^e must be positive$/, () => "分度值必须大于 0", () => "e must be positive"],
  [/^load must not be negative$/, () => "载荷不能为负", () => "the load must not be negative"],
  [/^give a category or a unit price$/, () => "请选择商品类别或填写单价", () => "choose a category or give a unit price"],
  [/^no (scale|merchant|finding|market) .*$/, (m) => ({ scale: "没有此计量秤", merchant: "没有此商户", finding: "没有此问题", market: "没有此市场" })[m[1]],
    (m) => `no such ${m[1]}`],
  [/^the file is neither UTF-8 nor GB18030 text$/, () => "文件既不是 UTF-8 也不是 GB18030 文本", () => "the file is neither UTF-8 nor GB18030 text"],
  [/^empty file: no header row$/, () => "空文件：没有表头行", () => "empty file: no header row"],
  [/^(\w+): (.+)$/, (m) => `${columnText(m[1])}：${message(m[2])}`, (m) => `${columnText(m[1])}: ${message(m[2])}`],
];

/** One server message in the page's language. */
export function message(text) {
  const t = withMasses(String(text ?? "").trim());
  for (const [re, zh, en] of PATTERNS) {
    const m = re.exec(t);
    if (m) return lang() === "en" ? en(m) : zh(m);
  }
  return L("数据有误", "Invalid data: " + t);
}

const STATUS = {
  400: ["请求有误", "Bad request"], 401: ["需要登录", "Login needed"], 403: ["无权限", "Not allowed"],
  404: ["未找到", "Not found"], 409: ["与现有数据冲突", "Conflicts with existing data"],
  413: ["文件过大", "File too large"], 415: ["格式不支持", "Unsupported format"],
  422: ["输入有误", "Invalid input"], 429: ["请求过于频繁，请稍后再试", "Too many requests, try again later"],
};

/** An API error (status, FastAPI detail) in words: no field path, no raw mg. */
export function apiErrorText(status, detail) {
  const head = STATUS[status] ? L(STATUS[status][0], STATUS[status][1])
    : status >= 500 ? L("服务器错误", "Server error") : L("请求失败", "Request failed");
  if (Array.isArray(detail)) {
    return head + L(`（${detail.length} 处）`, ` (${detail.length} field${detail.length > 1 ? "s" : ""})`);
  }
  if (typeof detail === "string" && detail && !/^<|^\{/.test(detail)) return head + L("：", ": ") + message(detail);
  return head;
}
