"""The printable 现场检查笔录 of a case: one HTML page (A4, no script; every value escaped
with ``html.escape``; photos and the signature inline as ``data:`` URLs) and its PDF,
printed by headless Chromium (``--print-to-pdf``, Debian's ``chromium``).

Masses are formatted from integer mg by integer arithmetic; MPE fractions exactly.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from html import escape
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.casework import cases as casework
from gateway_server.detect.rules import legal
from gateway_server.store.tables import markets, merchants, scales
from gateway_server.store.tables_workflow import case_photos, inspection_cases

CST = timedelta(hours=8)
PDF_TIMEOUT_S = 60

# one stylesheet: linked by the HTML view (same origin), inlined where Chromium prints the PDF
STYLE_PATH = Path(__file__).resolve().parents[1] / "static" / "css" / "record.css"
# no script, no network but this origin's stylesheet: inline images only
PRINT_CSP = ("default-src 'none'; style-src 'self'; img-src data:; "
             "base-uri 'none'; form-action 'none'; frame-ancestors 'self'")


class PdfError(RuntimeError):
    """The PDF renderer is missing or failed."""


def kg_text(mg: int) -> str:
    """mg → kg with at least 3 decimals, exact."""
    neg, a = mg < 0, abs(mg)
    frac = f"{a % 1_000_000:06d}".rstrip("0").ljust(3, "0")
    return f"{'−' if neg else ''}{a // 1_000_000}.{frac}"


def frac_kg_text(text: str) -> str:
    """An exact MPE in mg ("5000", "5/2") → kg text (exact for halves and quarters)."""
    f = Fraction(text)
    if f.denominator == 1:
        return kg_text(int(f))
    for k in (10, 100, 1000):
        if (f * k).denominator == 1:
            units = int(f * k)
            digits = 6 + len(str(k)) - 1
            s = f"{abs(units) % 10 ** digits:0{digits}d}".rstrip("0").ljust(3, "0")
            return f"{abs(units) // 10 ** digits}.{s}"
    return kg_text(round(f)) + "≈"


def when(ms: int | None) -> str:
    if ms is None:
        return "—"
    t = datetime.fromtimestamp(ms / 1000, tz=UTC) + CST
    return t.strftime("%Y年%m月%d日 %H:%M")


def _e(v: Any) -> str:
    return escape("—" if v is None or v == "" else str(v), quote=True)


def record_html(conn: Connection, case_id: int, *, stylesheet_url: str | None = None) -> str:
    """The 现场检查笔录 as one HTML document: the stylesheet linked by ``stylesheet_url``
    (the browser view), else inlined (the page printed to PDF)."""
    c = casework.get_case(conn, case_id)
    row = conn.execute(select(inspection_cases.c.signature_png).where(
        inspection_cases.c.id == case_id)).one()
    sc = conn.execute(select(scales).where(scales.c.device == c["device"])).first()
    mk = conn.execute(select(markets).where(markets.c.id == c["market"])).first()
    m = conn.execute(select(merchants).where(merchants.c.id == c["merchant_id"])).first() \
        if c["merchant_id"] is not None else None
    res = c["result"]
    parts = ["<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
             f"<title>现场检查笔录 {_e(c['number'])}</title>",
             f"<link rel='stylesheet' href='{_e(stylesheet_url)}'>" if stylesheet_url else
             f"<style>{STYLE_PATH.read_text(encoding='utf-8')}</style>", "</head><body>",
             "<h1>现场检查笔录</h1>",
             f"<div class='no'>编号：{_e(c['number'])}</div><table>",
             f"<tr><th>被检查人</th><td>{_e(m.name if m else None)}</td>"
             f"<th>统一社会信用代码</th><td>{_e(m.credit_code if m else None)}</td></tr>",
             f"<tr><th>市场</th><td>{_e(mk.name if mk else c['market'])}</td>"
             f"<th>摊位号</th><td>{_e(m.stall_no if m else None)}</td></tr>",
             f"<tr><th>检查时间</th><td>{_e(when(c['recorded_ms'] or c['opened_ms']))}</td>"
             f"<th>检查地点</th><td>{_e(c['place'])}</td></tr>",
             f"<tr><th>检查人员</th><td>{_e(res['inspector'] if res else c['opened_by'])}</td>"
             f"<th>标准砝码证书编号</th><td>{_e(c['weights_cert_no'])}</td></tr></table>",
             "<h2>被检计量器具</h2><table>"]
    if sc is not None:
        parts += [f"<tr><th>型号</th><td>{_e(sc.model)}</td><th>出厂编号</th>"
                  f"<td>{_e(sc.serial)}</td></tr>",
                  f"<tr><th>最大秤量 / 分度值</th>"
                  f"<td>{_e(kg_text(sc.max_mg) if sc.max_mg else None)} kg / "
                  f"{_e(kg_text(sc.e_mg) if sc.e_mg else None)} kg</td>"
                  f"<th>准确度等级</th><td>{_e(sc.accuracy_class)}</td></tr>",
                  f"<tr><th>检定证书编号</th><td>{_e(sc.cert_no)}</td><th>设备编号</th>"
                  f"<td>{_e(sc.device)}</td></tr>"]
    parts.append("</table><h2>称量检查（使用中检查最大允许误差，JJG 539）</h2>")
    if res is not None:
        parts.append("<table class='loads'><tr><th>序号</th><th class='num'>载荷 (kg)</th>"
                     "<th class='num'>示值 (kg)</th><th class='num'>误差 (kg)</th>"
                     "<th class='num'>最大允许误差 (kg)</th><th>判定</th></tr>")
        for i, x in enumerate(res["loads"], 1):
            err = x["error_mg"]
            parts.append(
                f"<tr class='{'' if x['ok'] else 'fail'}'><td>{i}</td>"
                f"<td class='num'>{kg_text(x['load_mg'])}</td>"
                f"<td class='num'>{kg_text(x['indication_mg'])}</td>"
                f"<td class='num'>{'+' if err > 0 else ''}{kg_text(err)}</td>"
                f"<td class='num'>±{frac_kg_text(x['mpe_mg'])}</td>"
                f"<td>{'合格' if x['ok'] else '超差'}</td></tr>")
        passed = res["verdict"] == "pass"
        g = legal.VERDICT_GROUNDS["inspection-pass" if passed else "inspection-fail"]
        parts.append(f"</table><p class='verdict'>检查结论：<b>{'合格' if passed else '不合格'}"
                     f"</b>{'；查实作弊' if res['fraud'] == 'yes' else ''}</p>"
                     f"<p>依据：{_e(g.zh)}</p>")
        if res["fraud"] == "yes":
            parts.append(f"<p>作弊认定依据：{_e(legal.VERDICT_GROUNDS['fraud'].zh)}</p>")
    else:
        parts.append("<p>尚未记录。</p>")
    parts.append(f"<h2>备注</h2><p>{_e(c['notes'])}</p>")
    photos = list(conn.execute(select(case_photos).where(case_photos.c.case_id == case_id)
                               .order_by(case_photos.c.id)))
    if photos:
        parts.append("<h2>现场照片</h2><div class='photos'>")
        for p in photos:
            b64 = base64.b64encode(bytes(p.content)).decode()
            parts.append(f"<figure><img src='data:{_e(p.mime)};base64,{b64}' alt='照片 {p.id}'>"
                         f"<figcaption>{_e(p.caption)} · SHA-256 {_e(p.sha256)}</figcaption>"
                         "</figure>")
        parts.append("</div>")
    sig = ""
    if row.signature_png is not None:
        sig = (f"<img src='data:image/png;base64,"
               f"{base64.b64encode(bytes(row.signature_png)).decode()}' alt='签名'>")
    parts.append(f"<div class='sign'><div>检查人员签名：{sig}<p>{_e(c['signer_name'])} · "
                 f"{_e(when(c['signed_ms']))}</p><p class='hash'>签名 SHA-256 "
                 f"{_e(c['signature_sha256'])}</p></div>"
                 "<div>被检查人签名：<div class='line'></div><p>日期：</p></div></div>")
    parts.append("</body></html>")
    return "".join(parts)


def render_pdf(html: str, *, chromium: str) -> bytes:
    """Print ``html`` to PDF with headless Chromium; :class:`PdfError` if it cannot."""
    if not Path(chromium).exists():
        raise PdfError(f"no PDF renderer at {chromium}")
    with tempfile.TemporaryDirectory(prefix="case-pdf-") as tmp:
        src, out = Path(tmp) / "record.html", Path(tmp) / "record.pdf"
        src.write_text(html, encoding="utf-8")
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--no-pdf-header-footer",
               f"--user-data-dir={tmp}/profile", f"--print-to-pdf={out}", src.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=PDF_TIMEOUT_S, check=False,
                                  env=os.environ | {"HOME": tmp})
        except (OSError, subprocess.TimeoutExpired) as err:
            raise PdfError(f"the PDF renderer failed: {err}") from err
        if not out.exists() or out.stat().st_size == 0:
            raise PdfError(f"the PDF renderer failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace')[-500:]}")
        return out.read_bytes()
