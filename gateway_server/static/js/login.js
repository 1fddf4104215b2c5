// The login page: POST /api/v1/auth/token, keep the bearer token in sessionStorage.
import { saveSession } from "./api.js";
import { L, lang, setLang } from "./i18n.js";

function texts() {
  document.documentElement.lang = lang() === "en" ? "en" : "zh-CN";
  document.title = L("登录 · 智慧计量秤监管平台", "Log in · Smart-scale supervision");
  document.getElementById("login-title").textContent = L("智慧计量秤监管平台", "Smart-scale supervision");
  document.getElementById("login-sub").textContent = L("市场监管 · 计量检查人员登录", "Market supervision · inspector login");
  document.getElementById("l-user").textContent = L("用户名", "Username");
  document.getElementById("l-pass").textContent = L("密码", "Password");
  document.getElementById("login-btn").textContent = L("登录", "Log in");
  document.getElementById("lang").textContent = lang() === "en" ? "中文" : "English";
}

function nextHash() {
  const n = new URLSearchParams(location.search).get("next") || "";
  return /^#\/[\w\-./%]*$/.test(n) ? n : "#/overview";
}

document.getElementById("lang").addEventListener("click", () => {
  setLang(lang() === "en" ? "zh" : "en");
  texts();
});

document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("login-error");
  const btn = document.getElementById("login-btn");
  err.textContent = "";
  btn.disabled = true;
  const username = document.getElementById("username").value.trim();
  try {
    const r = await fetch("/api/v1/auth/token", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password: document.getElementById("password").value }),
    });
    if (r.status === 401) {
      err.textContent = L("用户名或密码错误", "Wrong username or password");
    } else if (r.status === 429) {
      err.textContent = L("尝试过于频繁，请稍后再试", "Too many attempts; try again later");
    } else if (!r.ok) {
      err.textContent = L("登录失败", "Login failed") + " (" + r.status + ")";
    } else {
      const body = await r.json();
      saveSession(body.access_token, username, body.role);
      // a merchant account has its own pages (issue 19); staff go to the dashboard
      location.replace(body.role === "merchant" ? "/merchant" : "/" + nextHash());
      return;
    }
  } catch (e) {
    err.textContent = L("无法连接网关", "Cannot reach the gateway");
  }
  btn.disabled = false;
});

texts();
