// A scale as a person knows it: by its stall and model ("摊位 A-01 · TM-A15"), or as the
// market's fair scale, never by the gateway's device id (kept in the link's title for
// support staff). One register read per view (deduplicated for a few seconds).
import { api } from "./api.js";
import { h } from "./dom.js";
import { L } from "./i18n.js";

let cached = null;
let cachedAt = 0;

/** device → {stall, model, role, merchant, merchantId, market}. */
export function deviceLabels() {
  if (!cached || Date.now() - cachedAt > 5000) {
    cachedAt = Date.now();
    cached = Promise.all([api("/registry/scales", { params: { limit: 1000 } }),
      api("/merchants", { params: { limit: 1000 } })]).then(([scales, merchants]) => {
      const byId = Object.fromEntries(merchants.items.map((m) => [m.id, m]));
      const out = new Map();
      for (const s of scales.items) {
        const m = s.merchant_id !== null ? byId[s.merchant_id] : null;
        out.set(s.device, { stall: m ? m.stall_no : null, merchant: m ? m.name : null,
          merchantId: m ? m.id : null, model: s.model, role: s.role, market: s.market });
      }
      return out;
    }).catch((err) => { cached = null; throw err; });
  }
  return cached;
}

/** "摊位 A-01 · TM-A15" / "公平秤 · TM-A15" / "未登记的秤". */
export function deviceName(labels, device, { stall = null, model = null, role = null } = {}) {
  const x = (labels && labels.get(device)) || {};
  const st = stall ?? x.stall, md = model ?? x.model, rl = role ?? x.role;
  const parts = [];
  if (rl === "fair") parts.push(L("公平秤", "fair scale"));
  else if (st) parts.push(L("摊位 ", "stall ") + st);
  if (md) parts.push(md);
  if (!parts.length) parts.push(x.role ? L("计价秤", "trade scale") : L("未登记的秤", "unregistered scale"));
  return parts.join(" · ");
}

/** A link to the scale's page named as above. */
export function deviceLink(labels, device, opts = {}) {
  if (!device) return "—";
  return h("a", { href: "#/scale/" + encodeURIComponent(device), title: device, class: "device" },
    deviceName(labels, device, opts));
}
