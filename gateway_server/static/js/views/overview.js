// Overview: markets, scales online/offline, today's sales (counted and summed by the
// database), open findings by kind, each market's stalls as a grid coloured by risk, the
// latest findings, and a live feed from the event stream.
import { api } from "../api.js";
import { bars, stallGrid } from "../charts.js";
import { badge, card, h, link, stat, table } from "../dom.js";
import { dateTime, kg, startOfTodayCst, yuan } from "../format.js";
import { L, lang, kindText, listText, severityText, statusText } from "../i18n.js";
import { deviceLabels, deviceLink } from "../labels.js";

export async function render(root, _args, ctx) {
  const since = startOfTodayCst();
  const [markets, scales, today, summary, findings, merchants] = await Promise.all([
    api("/markets"), api("/scales"), api("/stats/sales", { params: { since_ms: since } }),
    api("/findings/summary"), api("/findings", { params: { status: "open", limit: 8 } }),
    api("/merchants", { params: { limit: 1000 } }),
  ]);
  const labels = await deviceLabels();
  const names = Object.fromEntries(merchants.items.map((m) => [m.id, m.name]));
  const online = scales.filter((s) => s.state === "online").length;
  const openTotal = Object.values(summary).reduce((a, b) => a + b, 0);
  root.appendChild(h("h1", {}, L("总览", "Overview")));
  root.appendChild(h("div", { class: "stats" },
    stat(L("市场", "Markets"), markets.length),
    stat(L("在线计量秤", "Scales online"), `${online} / ${scales.length}`,
      { cls: online < scales.length ? "warn" : "ok", sub: L(`离线 ${scales.length - online}`, `${scales.length - online} offline`) }),
    stat(L("今日交易", "Sales today"), h("span", { id: "sales-today" }, String(today.count)),
      { sub: h("span", { id: "turnover-today" }, yuan(today.amount_fen) + " " + L("元", "yuan")) }),
    stat(L("待处理问题", "Open findings"), openTotal, { cls: openTotal ? "alert" : "ok" })));

  const kinds = Object.entries(summary).sort((a, b) => b[1] - a[1]);
  root.appendChild(h("div", { class: "grid2" },
    card(L("待处理问题（按类型）", "Open findings by kind"),
      kinds.length ? bars(kinds.map(([k, n]) => ({ label: kindText(k), value: n })),
        { label: L("待处理问题", "Open findings") }) : h("p", { class: "muted" }, L("暂无待处理问题", "No open findings"))),
    await stallCard(markets)));

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
    if (s.ts_ms >= since) {  // the day's totals follow the stream
      today.count += 1;
      today.amount_fen += s.amount_fen || 0;
      root.querySelector("#sales-today").textContent = String(today.count);
      root.querySelector("#turnover-today").textContent = yuan(today.amount_fen) + " " + L("元", "yuan");
    }
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

const RISK_CLS = [["in-queue", () => L("在检查队列", "in the queue")], ["overdue", () => L("检定过期", "verification overdue")],
  ["observed", () => L("有观察记录", "observations")], ["clean", () => L("无问题", "nothing open")], ["offline", () => L("离线", "offline")]];

/** Each market's stalls from the register, coloured by the risk of their scale. */
async function stallCard(markets) {
  const box = card(L("市场摊位（按风险着色）", "Market stalls by risk"));
  box.id = "stall-map";
  if (!markets.length) {
    box.appendChild(h("p", { class: "muted" }, L("尚未登记市场", "No market registered")));
    return box;
  }
  const pick = h("select", { id: "stall-market", "aria-label": L("市场", "Market") },
    markets.map((m) => h("option", { value: m.id }, (lang() === "en" && m.name_en) || m.name)));
  const holder = h("div", { class: "stall-holder" });
  async function draw() {
    const data = await api(`/risk/markets/${encodeURIComponent(pick.value)}/stalls`);
    if (!data.stalls.length) {
      holder.replaceChildren(h("p", { class: "muted" }, L("该市场没有登记的计量秤", "No registered scale in this market")));
      return;
    }
    holder.replaceChildren(stallGrid(data.stalls.map((x) => {
      const cls = x.in_queue ? (x.grounds.includes("evidence") ? "in-queue" : "overdue")
        : x.observations ? "observed" : x.state === "offline" ? "offline" : "clean";
      const name = x.role === "fair" ? L("公平秤", "fair scale") : x.stall_no || L("未登记摊位", "no stall");
      return { stall: x.role === "fair" ? "~" : x.stall_no, key: x.role === "fair" ? L("公平秤", "fair") : x.stall_no || "?",
        sub: x.merchant_status && x.merchant_status !== "normal" ? statusText(x.merchant_status) : x.list_status && x.list_status !== "none" ? listText(x.list_status) : "",
        cls, href: "#/scale/" + encodeURIComponent(x.device),
        title: `${name}${x.merchant_name ? " · " + x.merchant_name : ""} · ${RISK_CLS.find(([k]) => k === cls)[1]()}${x.evidence > 0 ? " · " + L("证据 ", "evidence ") + x.evidence.toFixed(1) : ""}` };
    }), { label: L("摊位风险图", "Stalls by risk") }));
  }
  pick.addEventListener("change", draw);
  box.append(markets.length > 1 ? h("p", {}, pick) : null, holder,
    h("p", { class: "legend" }, RISK_CLS.map(([k, t]) => [h("span", { class: "key stall-" + k }), t()])));
  await draw();
  return box;
}
