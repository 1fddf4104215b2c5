// Registry administration: markets, a market's merchants and scales, the register CSV
// (登记造册) import with its row errors, CSV export, and the printable QR sheet.
import { api, blobUrl } from "../api.js";
import { badge, card, h, link, table } from "../dom.js";
import { date, kg } from "../format.js";
import { L, columnText, roleText } from "../i18n.js";
import { message } from "../messages.js";
import { statusBadges } from "./merchant.js";

export async function render(root, [marketArg], ctx) {
  const markets = await api("/markets");
  root.appendChild(h("h1", {}, L("登记管理", "Registry")));
  if (!markets.length) {
    root.appendChild(h("p", { class: "muted" }, L("尚无市场。", "No market yet.")));
    return;
  }
  const market = markets.find((m) => m.id === marketArg) || markets[0];
  const isAdmin = ctx.me && ctx.me.role === "admin";
  root.appendChild(card(L("市场", "Markets"), table([
    { label: L("名称", "Name"), value: (m) => link(m.name, "registry", m.id) },
    { label: L("区", "District"), value: (m) => m.district || "—" },
    { label: L("地址", "Address"), value: (m) => m.address || "—" },
    { label: L("开办者", "Operator"), value: (m) => m.operator || "—" },
    { label: L("坐标", "Coordinates"), value: (m) => (m.lat_e6 !== null && m.lon_e6 !== null ? `${(m.lat_e6 / 1e6).toFixed(6)}, ${(m.lon_e6 / 1e6).toFixed(6)}` : "—") },
  ], markets, { id: "markets", rowClass: (m) => (m.id === market.id ? "selected" : null) })));

  const [merchants, scales] = await Promise.all([
    api("/merchants", { params: { market: market.id, limit: 1000 } }),
    api("/registry/scales", { params: { market: market.id, limit: 1000 } }),
  ]);
  const names = Object.fromEntries(merchants.items.map((m) => [m.id, m.name]));
  root.appendChild(h("h2", { class: "section-title" }, market.name));

  const result = h("div", { id: "import-result" });
  const file = h("input", { type: "file", id: "csv-file", accept: ".csv,text/csv" });
  const importForm = h("form", { id: "csv-import", class: "inline-form" }, file,
    h("button", { type: "submit", disabled: !isAdmin }, L("导入登记表 CSV", "Import register CSV")));
  importForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    result.replaceChildren();
    if (!file.files.length) {
      result.appendChild(h("p", { class: "error" }, L("请选择 CSV 文件", "Choose a CSV file")));
      return;
    }
    try {
      const r = await api(`/markets/${encodeURIComponent(market.id)}/register.csv`, { method: "POST", raw: file.files[0], contentType: "text/csv" });
      result.appendChild(importReport(r));
    } catch (err) {
      result.appendChild(h("p", { class: "error", role: "alert" }, String(err.message || err)));
    }
  });
  root.appendChild(card(L("登记造册（CSV）", "Scale register (CSV)"),
    h("p", { class: "muted" }, L("中文或英文表头；UTF-8 或 GB18030。错误行按行列列出并跳过，其余照常导入；同一文件重复导入不产生变化。",
      "zh-CN or English headers; UTF-8 or GB18030. Bad rows are listed by row and column and skipped; good rows are imported; re-importing the same file changes nothing.")),
    isAdmin ? null : h("p", { class: "muted" }, L("导入需要管理员权限。", "Importing needs the admin role.")),
    importForm,
    h("p", { class: "actions" },
      h("button", { type: "button", class: "ghost", id: "csv-export", onclick: () => download(`/markets/${encodeURIComponent(market.id)}/register.csv`, `register-${market.id}.csv`, { lang: "zh" }) }, L("导出 CSV（中文表头）", "Export CSV (zh headers)")),
      h("button", { type: "button", class: "ghost", onclick: () => download(`/markets/${encodeURIComponent(market.id)}/register.csv`, `register-${market.id}-en.csv`, { lang: "en" }) }, L("导出 CSV（英文表头）", "Export CSV (en headers)")),
      h("button", { type: "button", class: "ghost", id: "qr-sheet", onclick: () => openSheet(market.id) }, L("打印诚信码（A4）", "Print trust codes (A4)"))),
    result));

  root.appendChild(card(L("商户", "Merchants") + ` (${merchants.total})`, table([
    { label: L("名称", "Name"), value: (m) => link(m.name, "merchant", m.id) },
    { label: L("摊位", "Stall"), value: (m) => m.stall_no || "—" },
    { label: L("信用代码", "Credit code"), value: (m) => m.credit_code || "—" },
    { label: L("状态", "Status"), value: (m) => h("span", {}, statusBadges(m)) },
    { label: L("诚信码", "Trust code"), value: (m) => h("a", { href: "/m/" + encodeURIComponent(m.trust_token), target: "_blank", rel: "noopener" }, L("消费者页面", "consumer page")) },
  ], merchants.items, { empty: L("暂无商户", "No merchants"), id: "merchants" })));

  root.appendChild(card(L("计量秤登记", "Registered scales") + ` (${scales.total})`, table([
    { label: L("设备编号", "Device number"), value: (s) => link(s.device, "scale", s.device) },
    { label: L("商户", "Merchant"), value: (s) => (s.merchant_id !== null ? link(names[s.merchant_id] || "#" + s.merchant_id, "merchant", s.merchant_id) : "—") },
    { label: L("用途", "Role"), value: (s) => roleText(s.role) },
    { label: L("型号", "Model"), value: (s) => s.model || "—" },
    { label: "Max / e (kg)", value: (s) => (s.max_mg ? `${kg(s.max_mg)} / ${kg(s.e_mg)}` : "—") },
    { label: L("等级", "Class"), value: (s) => s.accuracy_class || "—" },
    { label: L("证书", "Certificate"), value: (s) => s.cert_no || "—" },
    { label: L("有效期至", "Due"), value: (s) => h("span", {}, date(s.due_on_ms), s.overdue ? [" ", badge(L("过期", "overdue"), "sev-high")] : "") },
    { label: L("密钥", "Key"), value: (s) => (s.has_key ? "✓" : "—") },
  ], scales.items, { empty: L("暂无登记", "Nothing registered"), id: "scales" })));
}

export function importReport(r) {
  const rowTable = (items, id) => table([
    { label: L("行", "Row"), cls: "num", value: (e) => String(e.row) },
    { label: L("列", "Column"), value: (e) => columnText(e.column) },
    { label: L("问题", "Problem"), value: (e) => message(e.message) },
  ], items, { id });
  return h("div", { class: "import-report" },
    h("p", {}, badge(L(`新增 ${r.imported}`, `${r.imported} imported`), "ok"), " ",
      badge(L(`更新 ${r.updated}`, `${r.updated} updated`), ""), " ",
      badge(L(`未变 ${r.unchanged}`, `${r.unchanged} unchanged`), "grey"), " ",
      badge(L(`错误 ${r.errors.length}`, `${r.errors.length} errors`), r.errors.length ? "sev-high" : "ok")),
    r.errors.length ? [h("h3", {}, L("错误（已跳过）", "Errors (rows skipped)")), rowTable(r.errors, "import-errors")] : null,
    r.warnings.length ? [h("h3", {}, L("提示", "Warnings")), rowTable(r.warnings, "import-warnings")] : null);
}

async function download(path, name, params) {
  const u = await blobUrl(path, params);
  const a = h("a", { href: u, download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(u), 10000);
}

async function openSheet(marketId) {
  // the sheet needs the bearer token, which a plain link cannot send: fetch it, open a blob
  const u = await blobUrl(`/markets/${encodeURIComponent(marketId)}/qr-sheet`);
  window.open(u, "_blank", "noopener");
  setTimeout(() => URL.revokeObjectURL(u), 60000);
}
