// The merchant's pages (/merchant): log in at /login with a merchant account. A staff
// account is sent to the dashboard.
import { api, session, toLogin } from "./api.js";
import { L, lang, setLang } from "./i18n.js";
import { errorBox } from "./dom.js";
import * as portal from "./views/merchant_portal.js";

async function draw() {
  document.documentElement.lang = lang() === "en" ? "en" : "zh-CN";
  document.title = L("商户后台 · 放心消费诚信码", "Merchant · Trust code");
  document.getElementById("prog").textContent = L("放心消费诚信码 · 商户后台", "Trust code · merchant");
  document.getElementById("lang").textContent = lang() === "en" ? "中文" : "EN";
  document.getElementById("logout").textContent = L("退出", "Log out");
  const root = document.getElementById("view");
  try {
    await portal.render(root, { reload: draw });
  } catch (err) {
    if (err && err.status === 401) return;
    root.replaceChildren(errorBox(err));
  }
}

async function start() {
  if (!session().token) return toLogin();
  const me = await api("/auth/me").catch(() => null);
  if (!me) return;
  if (me.role !== "merchant") return location.replace("/");
  document.getElementById("lang").addEventListener("click", () => { setLang(lang() === "en" ? "zh" : "en"); draw(); });
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("/auth/logout", { method: "POST" }); } catch (err) { /* logged out anyway */ }
    sessionStorage.clear();
    location.replace("/login");
  });
  await draw();
}

start();
