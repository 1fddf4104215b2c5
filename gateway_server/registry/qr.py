"""Trust QR codes (放心消费诚信码): the URL a code carries, PNG / SVG rendering, the A4 sheet.

Rules:

* A code carries ``{public_base_url}/m/{trust_token}`` and nothing else: no merchant id,
  no name. Rotating the token (``POST /merchants/{id}/trust-token``) retires the code.
* Error correction level Q (25 % of the symbol recoverable): printed cards hang at wet,
  greasy stalls. segno may raise the level further when the version has room.
* Rendering is pure (``segno``, no I/O): bytes or text in, bytes or text out.
* The sheet is HTML with print CSS, one card per merchant; every user-entered value
  (market and merchant names, stall numbers) goes through ``html.escape``. The page
  carries no script and no inline style, so a strict Content-Security-Policy forbids
  both.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import quote

import segno

ERROR_LEVEL = "q"
PNG_SCALE_DEFAULT = 10  # px per module: a version-4 code is 33 + 8 modules → 410 px
PNG_SCALE_MAX = 40
QUIET_ZONE = 4  # modules of border, ISO/IEC 18004 minimum


def trust_url(public_base_url: str, trust_token: str) -> str:
    """The address a merchant's code encodes: ``{base}/m/{token}`` (token percent-encoded)."""
    return f"{public_base_url.rstrip('/')}/m/{quote(trust_token, safe='')}"


def make(url: str) -> segno.QRCode:
    return segno.make_qr(url, error=ERROR_LEVEL)


def png(url: str, *, scale: int = PNG_SCALE_DEFAULT) -> bytes:
    buf = io.BytesIO()
    make(url).save(buf, kind="png", scale=scale, border=QUIET_ZONE)
    return buf.getvalue()


def svg(url: str, *, scale: int = 8) -> str:
    """A standalone SVG document (with XML declaration), for download and printing."""
    buf = io.BytesIO()
    make(url).save(buf, kind="svg", scale=scale, border=QUIET_ZONE, xmldecl=True,
                   svgns=True, title=None)
    return buf.getvalue().decode("utf-8")


def svg_inline(url: str) -> str:
    """An ``<svg>`` element sized by CSS (viewBox only), for embedding in HTML."""
    return str(make(url).svg_inline(scale=1, border=QUIET_ZONE, omitsize=True,
                                    svgclass="qr", lineclass=None))


# -- the printable sheet (one A4 page holds 6 cards: 2 × 3; CSS in static/css/sheet.css) -

def _card(m: Mapping[str, Any], market_name: str, public_base_url: str) -> str:
    stall = m.get("stall_no")
    stall_text = f"摊位 {escape(str(stall))} · " if stall else ""
    return (
        '<section class="card">'
        '<div class="title">放心消费诚信码</div>'
        f'{svg_inline(trust_url(public_base_url, str(m["trust_token"])))}'
        f'<div class="name">{escape(str(m["name"]))}</div>'
        f'<div class="meta">{stall_text}{escape(market_name)}</div>'
        '<div class="hint">微信或相机扫码 · 查看证照、计量器具检定与投诉渠道 · 投诉热线 12315</div>'
        "</section>"
    )


def sheet_html(market: Mapping[str, Any], merchants: Iterable[Mapping[str, Any]], *,
               public_base_url: str, stylesheet_url: str) -> str:
    """The printable A4 sheet of a market's trust codes (HTML, no script).

    ``stylesheet_url`` is absolute (``static/css/sheet.css``): the dashboard opens the
    sheet from a ``blob:`` URL, against which a relative address would not resolve.
    """
    name = str(market.get("name") or market.get("id"))
    cards = "".join(_card(m, name, public_base_url) for m in merchants)
    body = f'<div class="grid">{cards}</div>' if cards else \
        '<p class="empty">本市场尚无商户 No merchants in this market.</p>'
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>放心消费诚信码 · {escape(name)}</title>"
        f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{escape(stylesheet_url)}">'
        "</head><body>"
        f'<header class="sheet"><h1>放心消费诚信码 · {escape(name)}</h1>'
        f'<p>{escape(str(market.get("id")))} · 每张卡片张贴于对应摊位 · '
        '<span class="screen-only">打印：Ctrl+P（A4，每页 6 张）Print with Ctrl+P (A4, 6 per page)'
        "</span></p></header>"
        f"{body}</body></html>"
    )
