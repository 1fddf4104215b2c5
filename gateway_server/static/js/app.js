// The inspectors' dashboard: a hash-routed single-page app, one module per view.
import { api, session, stream, toLogin } from "./api.js";
import { L, lang, setLang } from "./i18n.js";
import { h, errorBox } from "./dom.js";
import * as overview from "./views/overview.js";
import * as queue from "./views/queue.js";
import * as scale from "./views/scale.js";
import * as merchant from "./views/merchant.js";
import * as finding from "./views/finding.js";
import * as inspect from "./views/inspect.js";
import * as tolerance from "./views/tolerance.js";
import * as registry from "./views/registry.js";
import * as applications from "./views/applications.js";
import * as lifecycle from "./views/lifecycle.js";

const VIEWS = { overview, queue, scale, merchant, finding, inspect, tolerance, registry, applications, lifecycle };
const NAV = [
  ["overview", () => L("总览", "Overview")],
  ["queue", () => L("检查队列", "Inspection queue")],
  ["tolerance", () => L("允差计算", "Tolerances")],
  ["registry", () => L("登记管理", "Registry")],
  ["applications", () => L("入驻审核", "Applications")],
  ["lifecycle", () => L("诚信码管理", "Trust programme")],
];

/** Live events from /api/v1/stream: "sale" and "finding" (detail = the row). */
export const live = new EventTarget();
const ctx = { live, me: null, liveUp: false };
let current = { id: 0, cleanup: null };

function parseHash() {
  const parts = (location.hash || "#/overview").replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const name = parts[0] || "overview";
  return { name, args: parts.slice(1) };
}

function renderChrome() {
  document.documentElement.lang = lang() === "en" ? "en" : "zh-CN";
  document.title = L("智慧计量秤监管平台", "Smart-scale supervision");
  document.getElementById("brand-text").textContent = L("智慧计量秤监管平台", "Smart-scale supervision");
  const { name } = parseHash();
  const nav = document.getElementById("nav");
  nav.replaceChildren(...NAV.map(([id, label]) =>
    h("a", { href: "#/" + id, class: id === name ? "active" : null }, label())));
  document.getElementById("lang").textContent = lang() === "en" ? "中文" : "EN";
  document.getElementById("logout").textContent = L("退出", "Log out");
  const me = ctx.me;
  document.getElementById("who").textContent = me
    ? me.username + " · " + (me.role === "admin" ? L("管理员", "admin") : L("检查员", "inspector")) : "";
  const liveEl = document.getElementById("live");
  liveEl.className = "live " + (ctx.liveUp ? "on" : "off");
  liveEl.textContent = ctx.liveUp ? L("实时", "Live") : L("离线", "Offline");
}

async function route() {
  if (current.cleanup) {
    try { current.cleanup(); } catch (err) { console.warn(err); }
  }
  const id = current.id + 1;
  current = { id, cleanup: null };
  renderChrome();
  const { name, args } = parseHash();
  const view = VIEWS[name] || overview;
  const root = document.getElementById("view");
  const el = h("div", { class: "view view-" + name });
  root.replaceChildren(el);
  try {
    const cleanup = await view.render(el, args, ctx);
    if (current.id === id) current.cleanup = cleanup || null;
    else if (cleanup) cleanup();
  } catch (err) {
    if (err && err.status === 401) return;
    el.appendChild(errorBox(err));
  }
}

async function start() {
  if (!session().token) return toLogin();
  try {
    ctx.me = await api("/auth/me");
    if (ctx.me.role === "merchant") return location.replace("/merchant");  // its own pages
  } catch (err) {
    if (err.status !== 401) document.getElementById("view").replaceChildren(errorBox(err));
    return;
  }
  document.getElementById("lang").addEventListener("click", () => {
    setLang(lang() === "en" ? "zh" : "en");
    route();
  });
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("/auth/logout", { method: "POST" }); } catch (err) { /* logged out anyway */ }
    sessionStorage.clear();
    location.replace("/login");
  });
  window.addEventListener("hashchange", route);
  stream("/stream", (event, data) => live.dispatchEvent(new CustomEvent(event, { detail: data })),
    (up) => { ctx.liveUp = up; renderChrome(); });
  await route();
}

start();
