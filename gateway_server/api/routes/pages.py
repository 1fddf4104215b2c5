"""Pages: the inspectors' dashboard shell (``/``), the login page (``/login``), the public
trust-code page a consumer reaches by scanning a merchant's QR (``/m/{trust_token}``), and
the static assets (``/static``).

Rules:

* Everything is served by the gateway itself (no CDN): market offices are often offline.
* The dashboard is a single-page app of plain JS modules (``static/js``) that renders with
  ``textContent`` only; the shell HTML carries no data. A Content-Security-Policy allows
  scripts from this origin only, so an injected ``<script>`` or ``onerror=`` never runs.
* The trust page is rendered here, mobile first, zh-CN, no login, readable without
  JavaScript. Every value that came from a user (merchant, market, licence, scale
  fields) goes through ``html.escape``. Its complaint form posts JSON to
  ``/api/v1/public/complaints`` from ``static/js/trust.js``, or, without JavaScript, a
  plain form to ``/m/{token}/complaint``; both are rate limited like the public API.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.types import Scope

from gateway_server.api.auth import now_ms
from gateway_server.api.deps import StoreDep
from gateway_server.api.ratelimit import public_rate_limit
from gateway_server.api.routes import inspection as inspection_routes
from gateway_server.registry import register as reg

STATIC = Path(__file__).resolve().parents[2] / "static"
HOTLINE = "12315"  # 全国12315平台: the national consumer-complaint hotline
DUE_SOON_MS = 30 * 86_400_000  # the page warns a month before a verification runs out
MAX_FORM_BYTES = 16 * 1024

APP_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
           "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
           "frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": APP_CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin"}

router = APIRouter(include_in_schema=False)


class _Static(StaticFiles):
    """Static files that browsers revalidate (ETag) each time: an upgraded gateway's
    modules are picked up at once, with no build step to fingerprint them."""

    def file_response(self, full_path: Any, stat_result: Any, scope: Scope,
                      status_code: int = 200) -> Any:
        resp = super().file_response(full_path, stat_result, scope, status_code)
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp


def install(app: FastAPI) -> None:
    """Add the page routes and the ``/static`` mount to ``app``."""
    app.include_router(router)
    app.mount("/static", _Static(directory=STATIC), name="static")


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type="text/html; charset=utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@router.get("/")
def dashboard() -> FileResponse:
    return _page("index.html")


@router.get("/login")
def login_page() -> FileResponse:
    return _page("login.html")


# -- the trust-code page -------------------------------------------------------------------

STATUS_TEXT = {
    "normal": ("正常经营", "ok"), "yellow": ("黄牌警告", "yellow"), "red": ("红牌", "red"),
    "suspended": ("经营异常 · 诚信码暂停", "red"), "delisted": ("已下架", "grey"),
}
LIST_TEXT = {"red": ("红榜", "honour"), "black": ("黑榜", "black")}
VERIFICATION_TEXT = {"valid": ("检定有效", "ok"), "overdue": ("检定已过期", "red"),
                     "unknown": ("检定信息未登记", "grey")}


def _e(v: Any) -> str:
    return escape("" if v is None else str(v))


def _mass(mg: int | None) -> str:
    return "—" if mg is None else reg.format_mass(int(mg))


def _shell(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    html = ('<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="referrer" content="no-referrer">'
            f"<title>{_e(title)}</title>"
            '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
            '<link rel="stylesheet" href="/static/css/trust.css"></head>'
            f'<body><main class="trust">{body}</main>'
            '<script type="module" src="/static/js/trust.js"></script></body></html>')
    return HTMLResponse(html, status_code=status, headers={
        **SECURITY_HEADERS, "Referrer-Policy": "no-referrer",
        "Cache-Control": "public, max-age=60" if status == 200 else "no-store"})


def _badge(text: str, cls: str) -> str:
    return f'<span class="badge {cls}">{_e(text)}</span>'


def _status_block(v: dict[str, Any]) -> str:
    text, cls = STATUS_TEXT.get(v["status"], (v["status"], "grey"))
    badges = _badge(text, cls)
    if v["list_status"] in LIST_TEXT:
        badges += _badge(*LIST_TEXT[v["list_status"]])
    note = {"yellow": "该商户在计量检查中不合格，已被黄牌警告。",
            "red": "该商户多次计量检查不合格或存在作弊，已被红牌处理。",
            "suspended": "该商户被列入经营异常，诚信码暂停。",
            "delisted": "该商户已下架（营业执照注销或吊销），诚信码失效。"}.get(v["status"], "")
    if v["list_status"] == "red":
        note = (note + " " if note else "") + "检查合格且近期无异常，列入诚信红榜。"
    elif v["list_status"] == "black":
        note = (note + " " if note else "") + "已列入失信黑榜，请谨慎消费。"
    return (f'<section class="status" id="status"><div class="badges">{badges}</div>'
            + (f'<p class="note">{_e(note)}</p>' if note else "") + "</section>")


def _licences(v: dict[str, Any], now: int) -> str:
    rows = []
    if v.get("credit_code_masked"):
        rows.append(f'<li><span class="k">统一社会信用代码</span>'
                    f'<span class="v">{_e(v["credit_code_masked"])}</span></li>')
    for lic in v["licences"]:
        until = lic.get("valid_until_ms")
        when = ""
        if until is not None:
            expired = reg.is_overdue(int(until), now)
            when = (f'<span class="sub{" warn" if expired else ""}">有效期至 '
                    f'{_e(reg.format_date(int(until)))}{"（已过期）" if expired else ""}</span>')
        rows.append(f'<li><span class="k">{_e(lic.get("kind"))}</span>'
                    f'<span class="v">{_e(lic.get("number"))}</span>{when}</li>')
    if v["categories"]:
        rows.append(f'<li><span class="k">经营类别</span>'
                    f'<span class="v">{_e("、".join(v["categories"]))}</span></li>')
    inner = "".join(rows) or '<li class="empty">暂无登记证照</li>'
    return f'<section><h2>证照信息</h2><ul class="kv">{inner}</ul></section>'


def _scales(v: dict[str, Any], now: int) -> str:
    items = []
    for n, s in enumerate(v["scales"], 1):
        text, cls = VERIFICATION_TEXT.get(s["verification"], ("—", "grey"))
        due = s.get("due_on_ms")
        due_text = (f"有效期至 {_e(reg.format_date(int(due)))}" if due is not None
                    else "有效期未登记")
        soon = (s["verification"] == "valid" and due is not None
                and int(due) - now < DUE_SOON_MS)
        warn = ('<p class="warn">⚠ 该秤检定已过期，称量结果可能不准确，可到市场公平秤复秤。</p>'
                if s["overdue"] else
                '<p class="soon">检定即将到期。</p>' if soon else "")
        role = "公平秤" if s["role"] == "fair" else "计价秤"
        spec = " · ".join(x for x in (
            f"最大秤量 {_mass(s.get('max_mg'))}" if s.get("max_mg") else "",
            f"分度值 e = {_mass(s.get('e_mg'))}" if s.get("e_mg") else "",
            f"{_e(s.get('accuracy_class'))} 级" if s.get("accuracy_class") else "") if x)
        items.append(
            # a consumer knows a scale by its kind and model, not by the gateway's device id
            f'<li class="scale"><div class="row"><span class="dev">{role} · '
            f'{_e(s["model"]) if s.get("model") else f"第 {n} 台"}</span>{_badge(text, cls)}</div>'
            f'<div class="sub">{due_text}'
            f'{(" · 证书 " + _e(s["cert_no"])) if s.get("cert_no") else ""}</div>'
            f'<div class="sub">{spec}</div>{warn}</li>')
    inner = "".join(items) or '<li class="empty">暂无登记的计量器具</li>'
    return f'<section><h2>计量器具（电子秤）</h2><ul class="scales">{inner}</ul></section>'


def _complaint_form(token: str) -> str:
    t = _e(token)
    return (
        '<section id="complain"><h2>投诉与举报</h2>'
        '<p>短斤少两、价格不符等问题，可在此留言，也可拨打 '
        f'<a class="tel" href="tel:{HOTLINE}">{HOTLINE}</a> 热线。</p>'
        f'<form id="complaint-form" method="post" action="/m/{quote(token, safe="")}/complaint"'
        f' data-token="{t}">'
        '<label>问题描述 <textarea name="text" required minlength="2" maxlength="2000" rows="4"'
        ' placeholder="例如：买的 1 斤猪肉复秤只有 450 克"></textarea></label>'
        '<label>小票追溯码（可选）<input name="trace_code" maxlength="256"'
        ' autocomplete="off" placeholder="小票上的追溯号"></label>'
        '<label>联系方式（可选）<input name="contact" maxlength="128"'
        ' autocomplete="tel" placeholder="手机号，便于回访"></label>'
        '<button type="submit">提交投诉</button>'
        '<p class="result" id="complaint-result" role="status" aria-live="polite"></p>'
        "</form></section>")


@router.get("/m/{trust_token}", dependencies=[Depends(public_rate_limit)])
def trust_page(trust_token: str, store: StoreDep) -> HTMLResponse:
    now = now_ms()
    try:
        with store.engine.connect() as conn:
            v = reg.trust_view(conn, trust_token, now_ms=now)
    except reg.NotFoundError:
        return _shell("诚信码无效", '<section class="status"><h1>诚信码无效</h1>'
                      '<p>未找到该商户，诚信码可能已更换或注销。如有消费纠纷请拨打 '
                      f'<a class="tel" href="tel:{HOTLINE}">{HOTLINE}</a>。</p></section>',
                      status=404)
    market = _e(v["market_name"])
    stall = f"摊位 {_e(v['stall_no'])} · " if v.get("stall_no") else ""
    body = (
        '<header class="top"><div class="prog">放心消费诚信码</div>'
        f'<h1 id="merchant-name">{_e(v["name"])}</h1>'
        f'<p class="where">{stall}{market}</p></header>'
        f'{_status_block(v)}{_licences(v, now)}{_scales(v, now)}'
        f'<section><h2>交易记录</h2><p>近 30 天经智慧秤记录的交易 <b>{int(v["sales_30d"])}</b> 笔。'
        '</p></section>'
        f"{_complaint_form(trust_token)}"
        f'<footer>数据更新于 {_e(reg.format_date(now))} · 市场监督管理部门 · '
        f'消费投诉热线 <a class="tel" href="tel:{HOTLINE}">{HOTLINE}</a></footer>')
    return _shell(f"{v['name']} · 放心消费诚信码", body)


@router.post("/m/{trust_token}/complaint", dependencies=[Depends(public_rate_limit)])
async def trust_complaint_form(trust_token: str, request: Request,
                               store: StoreDep) -> HTMLResponse:
    """The complaint form without JavaScript (urlencoded); same rules as the JSON API."""
    raw = (await request.body())[:MAX_FORM_BYTES]
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    back = f'<p><a href="/m/{quote(trust_token, safe="")}">返回商户页面</a></p>'
    try:
        body = inspection_routes.ComplaintIn(
            trust_token=trust_token, text=form.get("text", ""),
            trace_code=form.get("trace_code") or None, contact=form.get("contact") or None)
    except ValidationError:
        return _shell("投诉未提交", '<section><h1>投诉未提交</h1><p>请填写至少 2 个字的问题描述。'
                      f"</p>{back}</section>", status=422)
    try:
        inspection_routes.create_complaint(store, body)
    except HTTPException as err:  # 404: unknown trust code
        if err.status_code != 404:
            raise
        return _shell("诚信码无效", f"<section><h1>诚信码无效</h1>{back}</section>", status=404)
    return _shell("投诉已受理", '<section><h1>投诉已受理</h1><p>市场监管部门会尽快处理。也可拨打 '
                  f'<a class="tel" href="tel:{HOTLINE}">{HOTLINE}</a>。</p>{back}</section>')
