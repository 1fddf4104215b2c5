// The JSON API with the bearer token kept in sessionStorage (gone when the tab closes).
// A 401 anywhere sends the user back to the login page.

import { apiErrorText } from "./messages.js";

const TOKEN = "gw.token";

export function session() {
  return {
    token: sessionStorage.getItem(TOKEN),
    user: sessionStorage.getItem("gw.user"),
    role: sessionStorage.getItem("gw.role"),
  };
}

export function saveSession(tok, user, role) {
  sessionStorage.setItem(TOKEN, tok);
  sessionStorage.setItem("gw.user", user);
  sessionStorage.setItem("gw.role", role);
}

export function toLogin() {
  sessionStorage.removeItem(TOKEN);
  const next = location.hash && location.hash !== "#/" ? "?next=" + encodeURIComponent(location.hash) : "";
  location.replace("/login" + next);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(ApiError.text(status, detail));
    this.status = status;
    this.detail = detail;
  }

  /** In words for a person (messages.js): no status code, field path or raw mg. */
  static text(status, detail) {
    return apiErrorText(status, detail);
  }
}

function authHeaders(extra = {}) {
  const tok = sessionStorage.getItem(TOKEN);
  return tok ? { Authorization: "Bearer " + tok, ...extra } : { ...extra };
}

/** Build "/api/v1/path?x=1" from a path and params (null params are left out). */
export function url(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return "/api/v1" + path + (s ? "?" + s : "");
}

/** Fetch with the token; JSON in and out. `raw` sends a Blob/string body as is. */
export async function api(path, { method = "GET", params = {}, body, raw, contentType } = {}) {
  const headers = authHeaders();
  let payload;
  if (raw !== undefined) {
    payload = raw;
    if (contentType) headers["Content-Type"] = contentType;
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const r = await fetch(url(path, params), { method, headers, body: payload });
  if (r.status === 401) {
    toLogin();
    throw new ApiError(401, "not authenticated");
  }
  const isJson = (r.headers.get("content-type") || "").includes("json");
  const data = isJson ? await r.json() : await r.text();
  if (!r.ok) throw new ApiError(r.status, isJson && data && "detail" in data ? data.detail : data);
  return data;
}

/** An authenticated download or image: an object URL the caller revokes when done. */
export async function blobUrl(path, params = {}) {
  const r = await fetch(url(path, params), { headers: authHeaders() });
  if (r.status === 401) {
    toLogin();
    throw new ApiError(401, "not authenticated");
  }
  if (!r.ok) throw new ApiError(r.status, await r.text());
  return URL.createObjectURL(await r.blob());
}

/**
 * Server-sent events with the Authorization header. EventSource cannot send headers and
 * /api/v1/stream takes the bearer token from the header only, so the stream is read with
 * fetch() and a ReadableStream reader. Reconnects after the server's `retry:` delay.
 * Returns a stop() function.
 */
export function stream(path, onEvent, onState = () => {}) {
  const ctrl = new AbortController();
  let retryMs = 3000;
  let stopped = false;

  async function once() {
    const r = await fetch(url(path), { headers: authHeaders({ Accept: "text/event-stream" }), signal: ctrl.signal });
    if (r.status === 401) {
      toLogin();
      stopped = true;
      return;
    }
    if (!r.ok || !r.body) throw new Error("stream " + r.status);
    onState(true);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (field === "event") event = val;
          else if (field === "data") data.push(val);
          else if (field === "retry" && /^\d+$/.test(val)) retryMs = Number(val);
        }
        if (data.length) {
          try {
            onEvent(event, JSON.parse(data.join("\n")));
          } catch (err) {
            console.warn("bad SSE data", err);
          }
        }
      }
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await once();
      } catch (err) {
        if (ctrl.signal.aborted) break;
      }
      onState(false);
      if (stopped || ctrl.signal.aborted) break;
      await new Promise((res) => setTimeout(res, retryMs));
    }
  })();

  return () => {
    stopped = true;
    ctrl.abort();
  };
}
