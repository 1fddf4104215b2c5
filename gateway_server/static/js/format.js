// Legal quantities arrive as integers (mass in mg, money in fen); they are formatted with
// integer arithmetic only, never through a float. Dates are shown in China Standard Time.

import { L } from "./i18n.js";

function pad(n, width) {
  return String(n).padStart(width, "0");
}

/** mg → kg text: at least 3 decimals, more when the value is not a whole gram (exact). */
export function kg(mg, { sign = false } = {}) {
  if (mg === null || mg === undefined || mg === "") return "—";
  const n = Number(mg);
  if (!Number.isSafeInteger(n)) return String(mg);
  const neg = n < 0;
  const a = Math.abs(n);
  let frac = pad(a % 1000000, 6);
  frac = frac.replace(/0+$/, "");
  if (frac.length < 3) frac = frac.padEnd(3, "0");
  const s = Math.trunc(a / 1000000) + "." + frac;
  return (neg ? "−" : sign && n > 0 ? "+" : "") + s;
}

/** mg → kg text with at least the decimals of the scale's e (e = 0.1 g: 4 decimals). */
export function kgE(mg, eMg, opts = {}) {
  const t = kg(mg, opts);
  if (!eMg || t === "—") return t;
  const eText = kg(eMg);
  const want = eText.split(".")[1]?.length || 3;
  const [i, f = ""] = t.split(".");
  return f.length >= want ? t : i + "." + f.padEnd(want, "0");
}

/** An exact mg value given as a fraction string ("5000", "5/2") → kg text. */
export function fracKg(text) {
  if (text === null || text === undefined) return "—";
  const m = /^(-?\d+)(?:\/(\d+))?$/.exec(String(text).trim());
  if (!m) return String(text);
  const num = Number(m[1]);
  const den = m[2] ? Number(m[2]) : 1;
  if (num % den === 0) return kg(num / den);
  // a denominator of 2, 4, 5, 8 … (0.5 e, 0.25 e): scale up to whole nano-kilograms
  for (const k of [10, 100, 1000]) {
    if ((num * k) % den === 0) {
      const units = (num * k) / den; // mg × k
      const neg = units < 0;
      const a = Math.abs(units);
      const digits = 6 + String(k).length - 1;
      const base = 10 ** digits;
      let frac = pad(a % base, digits).replace(/0+$/, "");
      if (frac.length < 3) frac = frac.padEnd(3, "0");
      return (neg ? "−" : "") + Math.trunc(a / base) + "." + frac;
    }
  }
  return kg(Math.round(num / den)) + "≈";
}

/** A fraction string of mg → number of mg (for drawing only, never for judging). */
export function fracNumber(text) {
  const m = /^(-?\d+)(?:\/(\d+))?$/.exec(String(text ?? "").trim());
  return m ? Number(m[1]) / (m[2] ? Number(m[2]) : 1) : NaN;
}

/** fen → 元 with 2 decimals. */
export function yuan(fen) {
  if (fen === null || fen === undefined) return "—";
  const n = Number(fen);
  if (!Number.isSafeInteger(n)) return String(fen);
  const a = Math.abs(n);
  return (n < 0 ? "−" : "") + Math.trunc(a / 100) + "." + pad(a % 100, 2);
}

/** Parse "2.505" (kg) into integer mg without floating point; null when not a mass. */
export function parseKg(text) {
  const m = /^\s*([+-]?)(\d+)(?:[.,](\d{0,6}))?\s*(?:kg|千克|公斤)?\s*$/i.exec(String(text ?? ""));
  if (!m) return null;
  const mg = Number(m[2]) * 1000000 + Number((m[3] || "").padEnd(6, "0") || "0");
  return m[1] === "-" ? -mg : mg;
}

/** Parse "12.50" (元) into integer fen; null when not money. */
export function parseYuan(text) {
  const m = /^\s*(\d+)(?:\.(\d{0,2}))?\s*$/.exec(String(text ?? ""));
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] || "").padEnd(2, "0") || "0");
}

const CST = "Asia/Shanghai";
const dtf = new Intl.DateTimeFormat("sv-SE", {
  timeZone: CST, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
  minute: "2-digit", second: "2-digit", hour12: false,
});
const df = new Intl.DateTimeFormat("sv-SE", {
  timeZone: CST, year: "numeric", month: "2-digit", day: "2-digit",
});

/** UTC ms → "YYYY-MM-DD HH:MM:SS" (CST). */
export function dateTime(ms) {
  return ms === null || ms === undefined ? "—" : dtf.format(new Date(Number(ms)));
}

/** UTC ms → "YYYY-MM-DD" (CST). */
export function date(ms) {
  return ms === null || ms === undefined ? "—" : df.format(new Date(Number(ms)));
}

/** UTC ms of 00:00 CST today. */
export function startOfTodayCst(now = Date.now()) {
  const day = 86400000;
  const offset = 8 * 3600000;
  return Math.floor((now + offset) / day) * day - offset;
}

/** A duration in words of the page's language (秒/分钟/小时/天 or s/min/h/d). */
export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.round(Number(ms) / 1000);
  if (s < 120) return s + L(" 秒", " s");
  if (s < 7200) return Math.round(s / 60) + L(" 分钟", " min");
  if (s < 172800) return Math.round(s / 3600) + L(" 小时", " h");
  return Math.round(s / 86400) + L(" 天", " d");
}
