// Small charts drawn as inline SVG (no library: the gateway serves everything itself).
// Labels are set with textContent; numbers are only used for drawing.

const NS = "http://www.w3.org/2000/svg";

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svgRoot(w, h, label) {
  return s("svg", { viewBox: `0 0 ${w} ${h}`, class: "chart", role: "img", "aria-label": label,
    preserveAspectRatio: "xMidYMid meet" }, s("title", {}, label));
}

function niceTicks(min, max, count = 5) {
  if (!(max > min)) return [min];
  const raw = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/**
 * An x/y plot with an optional symmetric envelope ±env(x) (a step function given as
 * [{x, y}] points, y ≥ 0), a zero line, and points [{x, y, cls, title}].
 * fmtX / fmtY format tick labels.
 */
export function envelopePlot({ points, envelope: envelopeIn = [], label, xLabel, yLabel, fmtX = String, fmtY = String,
  xMax = null, w = 640, h = 300 }) {
  const m = { l: 64, r: 16, t: 14, b: 44 };
  const svg = svgRoot(w, h, label);
  let envelope = envelopeIn;
  const xs = points.map((p) => p.x).concat(envelope.map((p) => p.x));
  const x1 = xMax ?? Math.max(1, ...xs);
  // the envelope within [0, x1] only: a zoomed plot scales to the band it shows
  envelope = envelope.filter((p) => p.x <= x1);
  const ys = points.map((p) => Math.abs(p.y)).concat(envelope.map((p) => p.y));
  const yM = Math.max(1, ...ys) * 1.15;
  const X = (v) => m.l + (v / x1) * (w - m.l - m.r);
  const Y = (v) => m.t + ((yM - v) / (2 * yM)) * (h - m.t - m.b);
  const grid = s("g", { class: "grid" });
  for (const t of niceTicks(-yM, yM)) {
    grid.appendChild(s("line", { x1: m.l, x2: w - m.r, y1: Y(t), y2: Y(t) }));
    grid.appendChild(s("text", { x: m.l - 6, y: Y(t) + 4, "text-anchor": "end" }, fmtY(t)));
  }
  for (const t of niceTicks(0, x1)) {
    grid.appendChild(s("line", { x1: X(t), x2: X(t), y1: m.t, y2: h - m.b }));
    grid.appendChild(s("text", { x: X(t), y: h - m.b + 16, "text-anchor": "middle" }, fmtX(t)));
  }
  svg.appendChild(grid);
  if (envelope.length) {
    // a step function: MPE(x) holds from each sampled x to the next
    const env = [...envelope].sort((a, b) => a.x - b.x);
    const upper = [];
    env.forEach((p, i) => {
      if (i) upper.push([p.x, env[i - 1].y]);
      upper.push([p.x, p.y]);
    });
    upper.push([x1, env[env.length - 1].y]);
    const pt = ([x, y]) => `${X(x)},${Y(y)}`;
    const lower = upper.map(([x, y]) => [x, -y]);
    svg.appendChild(s("polygon", { class: "envelope", points: upper.concat([...lower].reverse()).map(pt).join(" ") }));
    svg.appendChild(s("polyline", { class: "envelope-edge", points: upper.map(pt).join(" ") }));
    svg.appendChild(s("polyline", { class: "envelope-edge", points: lower.map(pt).join(" ") }));
  }
  svg.appendChild(s("line", { class: "zero", x1: m.l, x2: w - m.r, y1: Y(0), y2: Y(0) }));
  for (const p of points) {
    const shape = p.square
      ? s("rect", { x: X(p.x) - 5, y: Y(p.y) - 5, width: 10, height: 10, class: "pt " + (p.cls || "") })
      : s("circle", { cx: X(p.x), cy: Y(p.y), r: 5, class: "pt " + (p.cls || "") });
    shape.appendChild(s("title", {}, p.title || ""));
    svg.appendChild(shape);
  }
  svg.appendChild(s("text", { class: "axis", x: (m.l + w - m.r) / 2, y: h - 6, "text-anchor": "middle" }, xLabel));
  svg.appendChild(s("text", { class: "axis", x: 12, y: (m.t + h - m.b) / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${(m.t + h - m.b) / 2})` }, yLabel));
  return svg;
}

/** A time series of points [{t, y, title, cls}] with ±limit lines. */
export function timePlot({ points, limit = null, label, yLabel, fmtY = String, fmtT = String, w = 640, h = 240 }) {
  const m = { l: 64, r: 16, t: 14, b: 40 };
  const svg = svgRoot(w, h, label);
  const ts = points.map((p) => p.t);
  let t0 = Math.min(...ts), t1 = Math.max(...ts);
  if (!(t1 > t0)) { t0 -= 3600000; t1 += 3600000; }
  const yM = Math.max(1, limit || 0, ...points.map((p) => Math.abs(p.y))) * 1.2;
  const X = (v) => m.l + ((v - t0) / (t1 - t0)) * (w - m.l - m.r);
  const Y = (v) => m.t + ((yM - v) / (2 * yM)) * (h - m.t - m.b);
  const grid = s("g", { class: "grid" });
  for (const t of niceTicks(-yM, yM, 4)) {
    grid.appendChild(s("line", { x1: m.l, x2: w - m.r, y1: Y(t), y2: Y(t) }));
    grid.appendChild(s("text", { x: m.l - 6, y: Y(t) + 4, "text-anchor": "end" }, fmtY(t)));
  }
  grid.appendChild(s("text", { x: m.l, y: h - m.b + 16, "text-anchor": "start" }, fmtT(t0)));
  grid.appendChild(s("text", { x: w - m.r, y: h - m.b + 16, "text-anchor": "end" }, fmtT(t1)));
  svg.appendChild(grid);
  if (limit) {
    svg.appendChild(s("rect", { class: "envelope", x: m.l, width: w - m.l - m.r, y: Y(limit), height: Y(-limit) - Y(limit) }));
  }
  svg.appendChild(s("line", { class: "zero", x1: m.l, x2: w - m.r, y1: Y(0), y2: Y(0) }));
  const sorted = [...points].sort((a, b) => a.t - b.t);
  if (sorted.length > 1) {
    svg.appendChild(s("polyline", { class: "series", points: sorted.map((p) => `${X(p.t)},${Y(p.y)}`).join(" ") }));
  }
  for (const p of sorted) {
    svg.appendChild(s("circle", { cx: X(p.t), cy: Y(p.y), r: 4.5, class: "pt " + (p.cls || "") }, s("title", {}, p.title || "")));
  }
  svg.appendChild(s("text", { class: "axis", x: 12, y: (m.t + h - m.b) / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${(m.t + h - m.b) / 2})` }, yLabel));
  return svg;
}

/** Horizontal bars [{label, value, href?, cls?}]. */
export function bars(items, { label, w = 480 } = {}) {
  const rowH = 28;
  const h = Math.max(rowH, items.length * rowH) + 8;
  const svg = svgRoot(w, h, label);
  const max = Math.max(1, ...items.map((i) => i.value));
  const lw = 190;
  items.forEach((it, i) => {
    const y = 4 + i * rowH;
    const bw = ((w - lw - 50) * it.value) / max;
    const g = s("g", { class: "bar " + (it.cls || "") });
    g.appendChild(s("text", { x: lw - 8, y: y + 18, "text-anchor": "end" }, it.label));
    g.appendChild(s("rect", { x: lw, y: y + 4, width: Math.max(2, bw), height: rowH - 10, rx: 3 }));
    g.appendChild(s("text", { class: "val", x: lw + Math.max(2, bw) + 6, y: y + 18 }, String(it.value)));
    if (it.href) {
      const a = s("a", { href: it.href });
      a.appendChild(g);
      svg.appendChild(a);
    } else svg.appendChild(g);
  });
  return svg;
}

/**
 * Markets on a plane from WGS-84 lat/lon × 10^6 (equirectangular, x scaled by cos(lat)):
 * good enough for one city's markets; no tiles, works offline.
 */
export function marketMap(markets, { label, w = 560, h = 320, onPick = null } = {}) {
  const svg = svgRoot(w, h, label);
  const pts = markets.filter((m) => m.lat_e6 !== null && m.lon_e6 !== null);
  svg.appendChild(s("rect", { class: "map-bg", x: 0, y: 0, width: w, height: h, rx: 8 }));
  if (!pts.length) return svg;
  const lat = pts.map((m) => m.lat_e6 / 1e6), lon = pts.map((m) => m.lon_e6 / 1e6);
  const k = Math.cos(((Math.min(...lat) + Math.max(...lat)) / 2) * Math.PI / 180);
  const xs = lon.map((v) => v * k);
  let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...lat), y1 = Math.max(...lat);
  const span = Math.max(x1 - x0, y1 - y0, 0.01);
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  x0 = cx - span / 2; x1 = cx + span / 2; y0 = cy - span / 2; y1 = cy + span / 2;
  const pad = 48;
  const sc = Math.min((w - 2 * pad) / (x1 - x0), (h - 2 * pad) / (y1 - y0));
  const X = (v) => w / 2 + (v - cx) * sc;
  const Y = (v) => h / 2 - (v - cy) * sc;
  // a 1 km scale bar (1° latitude ≈ 111.32 km)
  const kmPx = sc / 111.32;
  if (kmPx > 10 && kmPx < w / 2) {
    svg.appendChild(s("line", { class: "scalebar", x1: 16, x2: 16 + kmPx, y1: h - 16, y2: h - 16 }));
    svg.appendChild(s("text", { class: "map-label", x: 16, y: h - 22 }, "1 km"));
  }
  pts.forEach((m) => {
    const g = s("g", { class: "market-dot " + (m.cls || ""), tabindex: 0, "data-market": m.id });
    const x = X((m.lon_e6 / 1e6) * k), y = Y(m.lat_e6 / 1e6);
    g.appendChild(s("circle", { cx: x, cy: y, r: 8 + Math.min(12, Math.sqrt(m.scales || 0) * 2) },
      s("title", {}, m.title || m.name)));
    g.appendChild(s("text", { class: "map-label", x: x + 14, y: y + 4 }, m.name));
    if (onPick) g.addEventListener("click", () => onPick(m));
    svg.appendChild(g);
  });
  return svg;
}

/**
 * Sales over time: bars of the number of sales per bucket (left axis) and, per bucket, the
 * lightest-to-heaviest sale as a vertical line with the mean weight as a dot (right axis).
 * buckets: [{t, count, minY, maxY, meanY, title}] (already sorted; y in mg).
 */
export function salesChart(buckets, { label, bucketMs, fmtT = String, fmtY = String, countLabel, weightLabel, w = 960, h = 260 }) {
  const m = { l: 52, r: 64, t: 14, b: 40 };
  const svg = svgRoot(w, h, label);
  if (!buckets.length) return svg;
  const t0 = buckets[0].t, t1 = buckets[buckets.length - 1].t + bucketMs;
  const cMax = Math.max(1, ...buckets.map((b) => b.count)) * 1.15;
  const yMax = Math.max(1, ...buckets.map((b) => b.maxY)) * 1.1;
  const X = (t) => m.l + ((t - t0) / (t1 - t0)) * (w - m.l - m.r);
  const Yc = (v) => h - m.b - (v / cMax) * (h - m.t - m.b);
  const Yw = (v) => h - m.b - (v / yMax) * (h - m.t - m.b);
  const grid = s("g", { class: "grid" });
  for (const t of niceTicks(0, cMax, 4)) {
    grid.appendChild(s("line", { x1: m.l, x2: w - m.r, y1: Yc(t), y2: Yc(t) }));
    grid.appendChild(s("text", { x: m.l - 6, y: Yc(t) + 4, "text-anchor": "end" }, String(t)));
  }
  for (const t of niceTicks(0, yMax, 4)) {
    grid.appendChild(s("text", { x: w - m.r + 6, y: Yw(t) + 4, "text-anchor": "start", class: "right" }, fmtY(t)));
  }
  grid.appendChild(s("text", { x: m.l, y: h - m.b + 16, "text-anchor": "start" }, fmtT(t0)));
  grid.appendChild(s("text", { x: w - m.r, y: h - m.b + 16, "text-anchor": "end" }, fmtT(t1)));
  svg.appendChild(grid);
  const bw = Math.max(2, (w - m.l - m.r) * (bucketMs / (t1 - t0)) - 2);
  for (const b of buckets) {
    const x = X(b.t) + 1;
    svg.appendChild(s("rect", { class: "bar-count", x, y: Yc(b.count), width: bw, height: h - m.b - Yc(b.count) },
      s("title", {}, b.title || "")));
    const cx = x + bw / 2;
    svg.appendChild(s("line", { class: "weight-range", x1: cx, x2: cx, y1: Yw(b.minY), y2: Yw(b.maxY) }));
    svg.appendChild(s("circle", { class: "weight-mean", cx, cy: Yw(b.meanY), r: 3.5 }, s("title", {}, b.title || "")));
  }
  svg.appendChild(s("text", { class: "axis", x: 12, y: (m.t + h - m.b) / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${(m.t + h - m.b) / 2})` }, countLabel));
  svg.appendChild(s("text", { class: "axis", x: w - 10, y: (m.t + h - m.b) / 2, "text-anchor": "middle",
    transform: `rotate(90 ${w - 10} ${(m.t + h - m.b) / 2})` }, weightLabel));
  return svg;
}

/**
 * A market's stalls as a grid (no map tiles): one cell per registered scale in stall-number
 * order, `perRow` to a row, coloured by risk class; drawn at its natural size (never scaled
 * up). items: [{stall, key, cls, title, href, sub}].
 */
export function stallGrid(items, { label, cell = 72, gap = 8, perRow = 8 }) {
  const cellH = Math.round(cell * 0.72);
  const cols = Math.max(1, Math.min(perRow, items.length));
  const rows = Math.max(1, Math.ceil(items.length / perRow));
  const w = gap + cols * (cell + gap), hgt = gap + rows * (cellH + gap);
  const svg = svgRoot(w, hgt, label);
  svg.classList.add("stall-grid");
  svg.setAttribute("width", String(w));
  const short = (t) => (t.length > 7 ? t.slice(0, 6) + "…" : t);
  items.forEach((it, i) => {
    const x = gap + (i % perRow) * (cell + gap), y = gap + Math.floor(i / perRow) * (cellH + gap);
    const g = s("g", { class: "stall " + (it.cls || ""), "data-stall": it.stall || "" });
    g.appendChild(s("rect", { x, y, width: cell, height: cellH, rx: 6 }, s("title", {}, it.title || "")));
    g.appendChild(s("text", { class: "stall-no", x: x + cell / 2, y: y + cellH * 0.45, "text-anchor": "middle" }, short(it.key)));
    if (it.sub) g.appendChild(s("text", { class: "stall-sub", x: x + cell / 2, y: y + cellH * 0.78, "text-anchor": "middle" }, short(it.sub)));
    if (it.href) {
      const a = s("a", { href: it.href });
      a.appendChild(g);
      svg.appendChild(a);
    } else svg.appendChild(g);
  });
  return svg;
}

/** The smallest 1, 2 or 5 × 10^k at or above v (v > 0). */
export function niceCeil(v) {
  if (!(v > 0)) return 1;
  const mag = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((k) => k * mag).find((x) => x >= v);
}
