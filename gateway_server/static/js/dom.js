// DOM helpers. Text is only ever set with textContent / text nodes: values from the API
// (merchant names, notes, evidence) can never become markup.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  append(el, children);
  return el;
}

function applyProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An in-app link: #/route/arg (each argument URI-encoded). */
export function link(text, ...route) {
  return h("a", { href: "#/" + route.map((p) => encodeURIComponent(String(p))).join("/") }, text);
}

export function badge(text, cls = "") {
  return h("span", { class: "badge " + cls }, text);
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...children);
}

/** A table: columns [{label, cls, value(row) → Node|string}], rows; wrapped to scroll. */
export function table(columns, rows, { empty = "—", id = null, rowClass = null } = {}) {
  const thead = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.cls }, c.label))));
  const tbody = h("tbody");
  for (const r of rows) {
    tbody.appendChild(h("tr", { class: rowClass ? rowClass(r) : null },
      columns.map((c) => h("td", { class: c.cls, "data-label": c.label }, c.value(r)))));
  }
  if (!rows.length) {
    tbody.appendChild(h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty)));
  }
  return h("div", { class: "table-wrap" }, h("table", { id }, thead, tbody));
}

/** A definition list from [label, value] pairs. */
export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function stat(label, value, { cls = "", sub = null } = {}) {
  return h("div", { class: "stat " + cls }, h("div", { class: "stat-value" }, value),
    h("div", { class: "stat-label" }, label), sub ? h("div", { class: "stat-sub" }, sub) : null);
}

export function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, String(err && err.message ? err.message : err));
}

export function clear(el) {
  el.replaceChildren();
  return el;
}
