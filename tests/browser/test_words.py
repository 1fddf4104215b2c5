"""Words and numbers a person reads (issue 18), in chromium, on every page in both languages.

What counts as raw text (the detection, concretely):

* a translation the i18n layer did not have: ``window.__i18nMissing`` (filled by
  ``static/js/i18n.js`` and the evidence labels) must stay empty, and no "⟨key⟩" marker
  may be visible;
* a field name: a snake_case token (``gain_mg``, ``dried_vegetables``) in the visible text;
* an enum value of the API's closed sets (``i18n.RAW_VALUES``: kinds, categories, states,
  channels, …) as a token of its own: any in the zh-CN UI (no lowercase latin word of three
  or more letters is allowed there at all, units aside), the hyphenated and underscored ones
  in the English UI (where "open" or "meat" are the translation);
* an API path (``/api/v1``, ``/metrology/``), a mass in raw mg (``15000000 mg``), the
  gateway's device ids outside the register and the scale's own "设备编号".

Merchant-entered text is the merchant's (the seed's markup merchant): it is removed before
the check.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from gw_browser import BAD_CSV, XSS_NAME, Gateway, Pages, login
from sqlalchemy import func, select

from gateway_server.store.tables import findings

DEVICES = ("s-1", "s-2", "s-3", "s-4", "f-1")
USER_TEXT = (XSS_NAME, 'C-03"><b>x</b>', "<i>干货</i>")
UNITS = {"kg", "mg"}  # mg only as a unit word is caught below with its digits
SNAKE = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
LATIN_WORD = re.compile(r"(?<![A-Za-z0-9_./-])[a-z]{3,}(?![A-Za-z0-9_])")
RAW_MG = re.compile(r"\d{4,}\s?mg\b")
API_PATH = re.compile(r"/api/v1|/metrology/|/registry/|/inspection-queue")


def _views(gw: Gateway, finding_ids: list[int]) -> list[tuple[str, str]]:
    ids = gw.ids
    out = [("#/overview", "#latest-findings tbody tr"), ("#/queue", "#queue tbody tr"),
           ("#/tolerance", "#rd-out .big"), ("#/registry/m1", "#scales tbody tr"),
           ("#/inspect/s-1", "#inspection-form .mpe")]
    out += [(f"#/scale/{d}", "#incidents") for d in ("s-1", "s-2", "f-1")]
    out += [(f"#/merchant/{ids[k]}", "#merchant-findings") for k in ("a", "b", "x")]
    out += [(f"#/finding/{i}", "#evidence") for i in finding_ids]
    out += [(f"#/inspect/case/{i}", "#audit tbody tr") for i in gw.ids.get("cases", [])]
    return out


def _cases(gw: Gateway) -> list[int]:
    """Two cases of s-2 (issue 18's case page): one signed and waiting for its decision,
    one decided with a yellow card."""
    import base64
    import time

    from gateway_server.casework import cases as casework

    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4"
                           "z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")
    out = []
    now = time.time_ns() // 1_000_000
    with gw.store.engine.begin() as c:
        for decided in (False, True):
            cid = casework.open_case(c, actor="inspector1", now_ms=now, device="s-2")["id"]
            casework.record(c, cid, pairs=[(20_000_000, 20_040_000)],
                            weights_cert_no="ZB-1", place="B-02", notes="",
                            fraud=False, actor="inspector1", now_ms=now)
            casework.sign(c, cid, name="王检查", signature_png=png, actor="inspector1",
                          now_ms=now)
            if decided:
                casework.decide(c, cid, action="yellow", reason="超差", confirm=True,
                                actor="inspector1", is_admin=False, now_ms=now, lift_days=30)
            out.append(cid)
    return out


def _visible(page: Any) -> str:
    text = page.evaluate("document.body.innerText")
    for t in USER_TEXT:
        text = text.replace(t, " ")
    return str(text)


def _problems(text: str, lang: str, raw_values: list[str], route: str) -> list[str]:
    text = re.sub(r"“[^”]*”", " ", text)  # a value the user typed, quoted back to them
    found = [f"field name {m}" for m in SNAKE.findall(text)]
    found += [f"marker {m}" for m in re.findall(r"⟨[^⟩]*⟩", text)]
    found += [f"raw mg {m}" for m in RAW_MG.findall(text)]
    found += [f"API path {m}" for m in API_PATH.findall(text)]
    for v in raw_values:
        if (lang == "zh" or "-" in v or "_" in v) and re.search(
                rf"(?<![\w-]){re.escape(v)}(?![\w-])", text):
            found.append(f"enum value {v}")
    if lang == "zh":
        found += [f"latin word {w}" for w in LATIN_WORD.findall(text) if w not in UNITS]
    if not route.startswith(("#/registry", "#/scale/")):
        found += [f"device id {d}" for d in DEVICES
                  if re.search(rf"(?<![\w-]){re.escape(d)}(?![\w-])", text)]
    return sorted(set(found))


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_page_reads_as_words(browser: Any, gateway: Gateway, pages: Pages,
                                   lang: str) -> None:
    with gateway.store.engine.connect() as c:
        # one finding of each kind: each kind's evidence labels get read
        finding_ids = sorted(int(i) for i in c.execute(
            select(func.max(findings.c.id)).group_by(findings.c.kind)).scalars())
    page = pages.page(browser, viewport={"width": 1280, "height": 900},
                      locale="zh-CN" if lang == "zh" else "en-US")
    login(page, gateway, "admin1")
    if lang == "en":
        page.click("#lang")
        page.wait_for_function("document.documentElement.lang === 'en'")
    if "cases" not in gateway.ids:
        gateway.ids["cases"] = _cases(gateway)
    raw_values = page.evaluate("import('/static/js/i18n.js').then((m) => m.RAW_VALUES)")
    raw_values += page.evaluate("import('/static/js/casewords.js').then((m) => m.RAW_VALUES)")
    assert "impact-repeated" in raw_values and "dried_vegetables" in raw_values
    failures: dict[str, list[str]] = {}
    for route, ready in _views(gateway, finding_ids):
        page.goto(f"{gateway.url}/{route}")
        page.wait_for_selector(ready)
        page.wait_for_function("!document.querySelector('.view') || "
                               "document.querySelector('.view').children.length > 0")
        missing = page.evaluate("window.__i18nMissing || []")
        got = _problems(_visible(page), lang, raw_values, route)
        if missing:
            got.append(f"untranslated {sorted(set(missing))}")
        if got:
            failures[route] = got
    # the register's CSV errors, translated (the file has a bad unit, a bad class, a date)
    page.goto(f"{gateway.url}/#/registry/m1")
    page.wait_for_selector("#merchants tbody tr")
    page.set_input_files("#csv-file", files=[{"name": "r.csv", "mimeType": "text/csv",
                                              "buffer": BAD_CSV.encode("utf-8")}])
    page.click("#csv-import button[type=submit]")
    page.wait_for_selector("#import-errors tbody tr")
    report = page.locator("#import-result").inner_text()
    got = _problems(report, lang, raw_values, "#/registry")
    if lang == "zh" and "数据有误" in report:
        got.append("an error message no pattern translated")
    if got:
        failures["csv import"] = got
    # durations of every size (a finding's evidence shows whichever the data gave)
    spans = page.evaluate("import('/static/js/format.js').then((m) => "
                          "[5e3, 3e5, 9e6, 4e8].map((ms) => m.duration(ms)).join(' | '))")
    got = _problems(spans, lang, raw_values, "#/finding")
    if lang == "zh" and not all(u in spans for u in ("秒", "分钟", "小时", "天")):
        got.append(f"durations not in Chinese: {spans}")
    if got:
        failures["durations"] = got
    assert not failures, "\n".join(f"{k}: {v}" for k, v in failures.items())
    assert not pages.errors, pages.errors


def test_the_trust_page_names_scales_without_device_ids(browser: Any, gateway: Gateway,
                                                        pages: Pages) -> None:
    page = pages.page(browser, viewport={"width": 390, "height": 844}, locale="zh-CN")
    page.goto(f"{gateway.url}/m/{gateway.ids['a_token']}")
    page.wait_for_selector("#merchant-name")
    text = _visible(page)
    assert "计价秤 · TM-A15" in text
    assert _problems(text, "zh", [], "/m/") == []
