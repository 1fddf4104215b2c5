"""Pages of the trust programme (issue 19), zh-CN, phone first, no CDN:

* ``/apply`` — the public application form (``static/apply.html`` + ``js/application.js``);
* ``/merchant`` — a merchant account's own pages (``static/merchant.html`` +
  ``js/merchant_app.js``), after logging in at ``/login``;
* ``/public/red-list``, ``/public/black-list`` — the lists, server-rendered and readable
  without JavaScript, with reason, date and expiry;
* ``/public/complaints`` — look a complaint up by its number (``?number=``), and the
  monthly complaint figures per market.

Every value that came from a user goes through ``html.escape``; the pages carry the same
Content-Security-Policy as the dashboard (scripts from this origin only, none inline).
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse, HTMLResponse

from gateway_server.api.auth import now_ms
from gateway_server.api.deps import SettingsDep, StoreDep
from gateway_server.api.ratelimit import public_rate_limit
from gateway_server.api.routes.pages import SECURITY_HEADERS, STATIC
from gateway_server.casework import complaints as cases
from gateway_server.registry import register as reg
from gateway_server.trust import lists as trust_lists

router = APIRouter(include_in_schema=False)
HOTLINE = "12315"

CASE_STATE_TEXT = {
    "awaiting": ("等待商户答复", "grey"), "answered": ("商户已答复", "ok"),
    "overdue": ("商户逾期未答复", "red"), "mediating": ("市场监管部门调解中", "yellow"),
    "closed": ("已办结", "ok"),
}
OUTCOME_TEXT = {"refund": "退款", "compensation": "赔偿（消保法第五十五条）",
                "settled": "调解达成协议", "rejected": "投诉不成立"}
LIST_TITLE = {"red": ("诚信红榜", "honour", "检查合格、诚信经营的商户。"),
              "black": ("失信黑榜", "black", "存在计量作弊、严重失信等行为的商户，请谨慎消费。")}


def install(app: FastAPI) -> None:
    app.include_router(router)


def _e(v: Any) -> str:
    return escape("" if v is None else str(v))


def _date(ms: int | None) -> str:
    return "—" if ms is None else reg.format_date(int(ms))


def _time(ms: int | None) -> str:
    if ms is None:
        return "—"
    from datetime import datetime

    return datetime.fromtimestamp(int(ms) / 1000, reg.CST).strftime("%Y-%m-%d %H:%M")


def _shell(title: str, body: str, *, status: int = 200, script: str | None = None,
           cache: str = "no-store") -> HTMLResponse:
    js = f'<script type="module" src="/static/js/{script}"></script>' if script else ""
    html = ('<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="referrer" content="no-referrer">'
            f"<title>{_e(title)}</title>"
            '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
            '<link rel="stylesheet" href="/static/css/trust.css"></head>'
            f'<body><main class="trust">{body}</main>{js}</body></html>')
    return HTMLResponse(html, status_code=status, headers={
        **SECURITY_HEADERS, "Referrer-Policy": "no-referrer", "Cache-Control": cache})


def _nav() -> str:
    return ('<footer><a href="/public/red-list">诚信红榜</a> · <a href="/public/black-list">'
            '失信黑榜</a> · <a href="/public/complaints">投诉查询</a> · '
            '<a href="/apply">商户入驻申请</a><br>消费投诉热线 '
            f'<a class="tel" href="tel:{HOTLINE}">{HOTLINE}</a></footer>')


def _file(name: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type="text/html; charset=utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@router.get("/apply")
def apply_page() -> FileResponse:
    return _file("apply.html")


@router.get("/merchant")
def merchant_page() -> FileResponse:
    return _file("merchant.html")


def _list_page(name: str, store: StoreDep) -> HTMLResponse:
    title, cls, intro = LIST_TITLE[name]
    with store.engine.begin() as conn:  # expired entries end before the list is read
        rows = trust_lists.public_list(conn, name, now_ms=now_ms())
    items = []
    for r in rows:
        link = (f' · <a href="/m/{quote(r["trust_token"], safe="")}">商户诚信码页面</a>'
                if r.get("trust_token") else "")
        until = f" · 有效期至 {_e(_date(r['until_ms']))}" if r.get("until_ms") else ""
        stall = f"摊位 {_e(r['stall_no'])} · " if r.get("stall_no") else ""
        items.append(
            f'<li class="scale"><div class="row"><span class="dev">{_e(r["name"])}</span>'
            f'<span class="badge {cls}">{_e(title)}</span></div>'
            f'<div class="sub">{stall}{_e(r["market_name"])}</div>'
            f'<div class="sub">原因：{_e(r["reason"]) or "—"}</div>'
            f'<div class="sub">列入日期 {_e(_date(r["since_ms"]))}{until}{link}</div></li>')
    inner = "".join(items) or '<li class="empty">暂无商户</li>'
    body = (f'<header class="top"><div class="prog">放心消费 · 红黑榜</div><h1>{_e(title)}</h1>'
            f'<p class="where">{_e(intro)}</p></header>'
            f'<section><ul class="scales" id="list">{inner}</ul></section>{_nav()}')
    return _shell(f"{title} · 放心消费", body, cache="public, max-age=60")


@router.get("/public/red-list", dependencies=[Depends(public_rate_limit)])
def red_list_page(store: StoreDep) -> HTMLResponse:
    return _list_page("red", store)


@router.get("/public/black-list", dependencies=[Depends(public_rate_limit)])
def black_list_page(store: StoreDep) -> HTMLResponse:
    return _list_page("black", store)


def _case_block(v: dict[str, Any]) -> str:
    text, cls = CASE_STATE_TEXT.get(v["state"], ("—", "grey"))
    stall = f"（摊位 {v['stall_no']}）" if v.get("stall_no") else ""
    rows = [("投诉编号", v["number"]), ("商户", f"{v['merchant_name']}{stall}"),
            ("市场", v["market_name"]), ("受理时间", _time(v["opened_ms"])),
            ("答复期限", _time(v["due_ms"]))]
    if v.get("answered_ms"):
        late = "（逾期）" if v.get("late") else ""
        rows.append(("答复时间", _time(v["answered_ms"]) + late))
    if v.get("outcome"):
        rows.append(("处理结果", OUTCOME_TEXT.get(v["outcome"], "—")))
    if v.get("compensation_fen") is not None:
        fen = int(v["compensation_fen"])
        rows.append(("金额", f"{fen // 100}.{fen % 100:02d} 元"))
    if v.get("outcome_note"):
        rows.append(("说明", v["outcome_note"]))
    kv = "".join(f'<li><span class="k">{_e(k)}</span><span class="v">{_e(val)}</span></li>'
                 for k, val in rows)
    answer = (f'<h2>商户答复</h2><p class="note" id="answer">{_e(v["answer"])}</p>'
              if v.get("answer") else '<p class="note">商户尚未答复。</p>')
    return (f'<section class="status" id="case"><div class="badges">'
            f'<span class="badge {cls}" id="case-state">{_e(text)}</span></div>'
            f'<ul class="kv">{kv}</ul>{answer}</section>')


def _figures(conn: Any) -> str:
    figs = cases.monthly_figures(conn, now_ms=now_ms(), months=6)
    if not figs:
        return '<section><h2>投诉统计</h2><p class="empty">近 6 个月暂无投诉。</p></section>'
    items = "".join(
        f'<li><span class="k">{_e(f["month"])} · {_e(f["market_name"])}</span>'
        f'<span class="v">受理 {f["received"]} · 按时答复 {f["answered_in_time"]} · '
        f'逾期答复 {f["answered_late"]} · 逾期未答复 {f["overdue_unanswered"]} · '
        f'办结 {f["closed"]}</span></li>' for f in figs)
    return ('<section><h2>投诉统计（按月、按市场）</h2>'
            f'<ul class="kv" id="figures">{items}</ul></section>')


@router.get("/public/complaints", dependencies=[Depends(public_rate_limit)])
def complaints_page(store: StoreDep, settings: SettingsDep, number: str = "") -> HTMLResponse:
    number = number.strip()[:24]
    form = ('<section><h2>投诉查询</h2><form method="get" action="/public/complaints">'
            f'<label>投诉编号<input name="number" id="number" value="{_e(number)}" '
            'maxlength="24" autocomplete="off" placeholder="例如 TS7K2M9Q4XRB" required></label>'
            '<button type="submit">查询</button></form></section>')
    result, status = "", 200
    with store.engine.begin() as conn:
        cases.tick(conn, now_ms=now_ms(), answer_s=settings.complaint_answer_hours * 3600)
        if number:
            try:
                result = _case_block(cases.public_view(conn, number))
            except reg.NotFoundError:
                status = 404
                result = ('<section class="status" id="case"><p class="warn" '
                          'id="case-missing">未找到该投诉编号，请核对后再试。'
                          '投诉编号在提交投诉后显示。</p></section>')
        figures = _figures(conn)
    body = ('<header class="top"><div class="prog">放心消费</div><h1>投诉查询</h1>'
            '<p class="where">输入投诉编号，查看处理进度与商户答复'
            '（不显示投诉内容和联系方式）。</p>'
            f'</header>{form}{result}{figures}{_nav()}')
    return _shell("投诉查询 · 放心消费", body, status=status)
