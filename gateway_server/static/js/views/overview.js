// Overview: markets, scales online/offline, today's sales, open findings by kind, a plot
// of the markets, the latest findings, and a live feed from the event stream.
import { api } from "../api.js";
import { bars, marketMap } from "../charts.js";
import { badge, card, h, link, stat, table } from "../dom.js";
import { dateTime, kg, startOfTodayCst, yuan } from "../format.js";
import { L, kindText, severityText } from "../i18n.js";
import { deviceLabels, deviceLink } from "../labels.js";

export async function render(root, _args, ctx) {
  const since = startOfTodayCst();
  const [markets, scales, today, summary, findings, merchants] = await Promise.all([
    api("/markets"), api("/scales"), api("/weighings", { params: { since_ms: since, limit: 1000 } }),
    api("/findings/summary"), api("/findings", { params: { status: "open", limit: 8 } }),
    api("/merchants", { params: { limit: 1000 } }),
  ]);
  const labels = await deviceLabels();
  const names = Object.fromEntries(merchants.items.map((m) => [m.id, m.name]));
  const online = scales.filter((s) => s.state === "online").length;
  const amount = today.items.reduce((a, s) => a + (s.amount_fen || 0), 0);
  const openTotal = Object.values(summary).reduce((a, b) => a + b, 0);
  root.appendChild(h("h1", {}, L("总览", "Overview")));
  root.appendChild(h("div", { class: "stats" },
    stat(L("市场", "Markets"), markets.length),
    stat(L("在线计量秤", "Scales online"), `${online} / ${scales.length}`,
      { cls: online < scales.length ? "warn" : "ok", sub: L(`离线 ${scales.length - online}`, `${scales.length - online} offline`) }),
    stat(L("今日交易", "Sales today"), today.total,
      { sub: (today.total > today.items.length ? "≥ " : "") + yuan(amount) + " " + L("元", "yuan") }),
    stat(L("待处理问题", "Open findings"), openTotal, { cls: openTotal ? "alert" : "ok" })));

  const kinds = Object.entries(summary).sort((a, b) => b[1] - a[1]);
  const perMarket = {};
  for (const s of scales) {
    const m = (perMarket[s.market] ||= { n: 0, online: 0 });
    m.n += 1;
    if (s.state === "online") m.online += 1;
  }
  const noCoords = markets.filter((m) => m.lat_e6 === null || m.lon_e6 === null);
  const mapItems = markets.map((m) => ({
    ...m, scales: perMarket[m.id]?.n || 0,
    title: `${m.name} · ${L("计量秤", "scales")} ${perMarket[m.id]?.online || 0}/${perMarket[m.id]?.n || 0}`,
  }));
  root.appendChild(h("div", { class: "grid2" },
    card(L("待处理问题（按类型）", "Open findings by kind"),
      kinds.length ? bars(kinds.map(([k, n]) => ({ label: kindText(k), value: n })),
        { label: L("待处理问题", "Open findings") }) : h("p", { class: "muted" }, L("暂无待处理问题", "No open findings"))),
    card(L("市场分布", "Markets"),
      marketMap(mapItems, { label: L("市场分布图", "Map of markets"), onPick: (m) => { location.hash = "#/registry/" + encodeURIComponent(m.id); } }),
      noCoords.length ? h("p", { class: "muted" }, L("无坐标：", "No coordinates: "), noCoords.map((m) => m.name).join("、")) : null)));

  root.appendChild(card(L("最新问题", "Latest findings"), table([
    { label: L("时间", "Time"), value: (f) => dateTime(f.ts_ms) },
    { label: L("类型", "Kind"), value: (f) => link(kindText(f.kind), "finding", f.id) },
    { label: L("级别", "Severity"), value: (f) => badge(severityText(f.severity), "sev-" + f.severity) },
    { label: L("计量秤", "Scale"), value: (f) => deviceLink(labels, f.device) },
    { label: L("商户", "Merchant"), value: (f) => (f.merchant_id !== null ? link(names[f.merchant_id] || "#" + f.merchant_id, "merchant", f.merchant_id) : "—") },
  ], findings, { empty: L("暂无", "None"), id: "latest-findings" })));

  const feed = h("ul", { class: "feed", id: "live-feed" });
  const note = h("p", { class: "muted" }, L("新交易和新问题实时显示。", "New sales and findings appear here as they happen."));
  root.appendChild(card(L("实时动态", "Live"), note, feed));
  const add = (node) => {
    feed.prepend(node);
    while (feed.children.length > 30) feed.lastChild.remove();
  };
  const onSale = (e) => {
    const s = e.detail;
    add(h("li", { class: "sale" }, h("span", { class: "t" }, dateTime(s.ts_ms)), " ",
      deviceLink(labels, s.device), " ", kg(s.net_mg) + " kg",
      s.amount_fen !== null && s.amount_fen !== undefined ? " · " + yuan(s.amount_fen) + " " + L("元", "yuan") : ""));
  };
  const onFinding = (e) => {
    const f = e.detail;
    add(h("li", { class: "finding" }, h("span", { class: "t" }, dateTime(f.ts_ms)), " ",
      badge(severityText(f.severity), "sev-" + f.severity), " ", link(kindText(f.kind), "finding", f.id),
      f.device ? [" · ", deviceLink(labels, f.device)] : ""));
  };
  ctx.live.addEventListener("sale", onSale);
  ctx.live.addEventListener("finding", onFinding);
  return () => {
    ctx.live.removeEventListener("sale", onSale);
    ctx.live.removeEventListener("finding", onFinding);
  };
}
