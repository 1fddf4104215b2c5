"""The case file through the API (SQLite and PostgreSQL): incident → case → on-site record
(verdicts per the in-service MPE, no card yet) → photos (type, size, hash) → signature
(the record freezes) → a confirmed card → lifting it only after a passing re-inspection
past the waiting period; every step in the append-only audit log. Also the queue's
filters and CSV export and the SQL totals."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from test_inspection_api import setup_scale_with_findings

from gateway_server.store.database import Store
from gateway_server.store.tables import merchants
from gateway_server.store.tables_workflow import status_history

DAY = 86_400_000


def png(seed: int = 0) -> bytes:
    """A real 1 × 1 PNG (a different pixel per seed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    raw = b"\x00" + bytes([seed % 256, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", (1).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00")
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _record(client: TestClient, h: dict[str, str], cid: int, heavy_mg: int) -> dict:
    loads = [100_000, 2_500_000, 10_000_000, 15_000_000]
    r = client.post(f"/api/v1/cases/{cid}/record", headers=h, json={
        "loads": [{"load_mg": x, "indication_mg": x + heavy_mg} for x in loads],
        "weights_cert_no": "ZB-2026-0042", "place": "东门农贸市场 A-01 摊位",
        "notes": "当事人在场"})
    assert r.status_code == 200, r.text
    return r.json()


def test_case_flow_card_and_lift(client: TestClient, store: Store,
                                 inspector: dict[str, str], admin: dict[str, str],
                                 tmp_path: Path) -> None:
    ids = setup_scale_with_findings(store, seal_broken=True)
    h = inspector
    r = client.post("/api/v1/cases", headers=h, json={"device": "s-1"})
    assert r.status_code == 201, r.text
    case = r.json()
    cid = case["id"]
    assert case["state"] == "open" and case["merchant_id"] == ids["a"]
    assert case["finding_ids"] and case["number"] == f"JC-{cid:06d}"

    case = _record(client, h, cid, heavy_mg=100_000)  # 100 g heavy at every load: fail
    assert case["state"] == "recorded" and case["result"]["verdict"] == "fail"
    assert [c["ok"] for c in case["result"]["loads"]] == [False] * 4
    assert case["result"]["loads"][1]["mpe_mg"] == "5000"  # 2.5 kg on 15 kg / 5 g: ±5 g
    m = client.get(f"/api/v1/merchants/{ids['a']}", headers=h).json()
    assert m["status"] == "normal"  # no card before the confirmed decision
    # a second record of the same case is refused
    r = client.post(f"/api/v1/cases/{cid}/record", headers=h, json={
        "loads": [{"load_mg": 100_000, "indication_mg": 100_000}], "weights_cert_no": "x"})
    assert r.status_code == 409 and r.json()["detail"]["code"] == "recorded"

    photo = png(1)
    r = client.post(f"/api/v1/cases/{cid}/photos?caption=铅封", headers=h | {
        "Content-Type": "image/png"}, content=photo)
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == hashlib.sha256(photo).hexdigest()
    r = client.post(f"/api/v1/cases/{cid}/photos", headers=h | {"Content-Type": "image/png"},
                    content=b"GIF89a not a png")
    assert r.status_code == 415 and r.json()["detail"]["code"] == "not-an-image"
    r = client.post(f"/api/v1/cases/{cid}/photos", headers=h | {"Content-Type": "image/png"},
                    content=photo)
    assert r.status_code == 409 and r.json()["detail"]["code"] == "duplicate-photo"
    r = client.post(f"/api/v1/cases/{cid}/photos", headers=h | {"Content-Type": "image/jpeg"},
                    content=png(2))
    assert r.status_code == 415 and r.json()["detail"]["code"] == "type-mismatch"

    # a decision before the signature is refused
    r = client.post(f"/api/v1/cases/{cid}/decision", headers=h,
                    json={"action": "yellow", "reason": "超差", "confirm": True})
    assert r.status_code == 409 and r.json()["detail"]["code"] == "not-signed"
    sig = png(3)
    r = client.post(f"/api/v1/cases/{cid}/sign", headers=h,
                    json={"name": "王检查", "signature": data_url(sig)})
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["state"] == "signed"
    assert case["signature_sha256"] == hashlib.sha256(sig).hexdigest()
    assert case["options"]["proposed"] == "yellow"
    assert "lift" not in case["options"]["actions"]
    r = client.post(f"/api/v1/cases/{cid}/photos", headers=h | {"Content-Type": "image/png"},
                    content=png(4))
    assert r.status_code == 409 and r.json()["detail"]["code"] == "signed"

    r = client.post(f"/api/v1/cases/{cid}/decision", headers=h,
                    json={"action": "yellow", "reason": "四个载荷均超差", "confirm": False})
    assert r.status_code == 422 and r.json()["detail"]["code"] == "not-confirmed"
    r = client.post(f"/api/v1/cases/{cid}/decision", headers=h,
                    json={"action": "black", "reason": "作弊", "confirm": True})
    assert r.status_code == 403 and r.json()["detail"]["code"] == "admin-only"
    r = client.post(f"/api/v1/cases/{cid}/decision", headers=h,
                    json={"action": "yellow", "reason": "四个载荷均超差", "confirm": True})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "decided"
    m = client.get(f"/api/v1/merchants/{ids['a']}", headers=h).json()
    assert m["status"] == "yellow"
    actions = [a["action"] for a in r.json()["audit"]][::-1]
    assert actions == ["case.open", "case.record", "case.photo", "case.sign", "case.decision"]

    # the printable record: HTML (no script) and a PDF whose text names the case
    r = client.get(f"/api/v1/cases/{cid}/record.html", headers=h)
    assert r.status_code == 200 and "<script" not in r.text and "现场检查笔录" in r.text
    assert "script-src" not in r.headers["content-security-policy"]
    assert "ZB-2026-0042" in r.text and "±0.005" in r.text
    if shutil.which("pdftotext") is None or not Path("/usr/bin/chromium").exists():
        pytest.fail("chromium and poppler-utils are needed (see .ci/run)")
    r = client.get(f"/api/v1/cases/{cid}/record.pdf", headers=h)
    assert r.status_code == 200 and r.content.startswith(b"%PDF"), r.text[:300]
    (tmp_path / "r.pdf").write_bytes(r.content)
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "r.pdf"), "-"],
                          capture_output=True, check=True).stdout.decode()
    for want in ("现场检查笔录", f"JC-{cid:06d}", "张三蔬菜", "ZB-2026-0042", "不合格", "王检查"):
        assert want in text, (want, text)

    # a passing re-inspection inside the waiting period does not offer the lift ...
    c2 = client.post("/api/v1/cases", headers=h, json={"device": "s-1"}).json()["id"]
    _record(client, h, c2, heavy_mg=0)
    client.post(f"/api/v1/cases/{c2}/sign", headers=h,
                json={"name": "王检查", "signature": data_url(png(5))})
    r = client.post(f"/api/v1/cases/{c2}/decision", headers=h,
                    json={"action": "lift", "reason": "复检合格", "confirm": True})
    assert r.status_code == 409 and r.json()["detail"]["code"] == "lift-too-early"
    assert r.json()["detail"]["days"] == 30
    # ... after it, the lift is an option, explicit and audited
    back = time.time_ns() // 1_000_000 - 31 * DAY
    with store.engine.begin() as c:
        c.execute(update(status_history).where(status_history.c.merchant_id == ids["a"])
                  .values(ts_ms=back))
        c.execute(update(merchants).where(merchants.c.id == ids["a"]).values(status_ms=back))
    case2 = client.get(f"/api/v1/cases/{c2}", headers=h).json()
    assert case2["options"]["proposed"] == "lift"
    r = client.post(f"/api/v1/cases/{c2}/decision", headers=h,
                    json={"action": "lift", "reason": "复检合格，期满解除", "confirm": True})
    assert r.status_code == 200, r.text
    assert client.get(f"/api/v1/merchants/{ids['a']}", headers=h).json()["status"] == "normal"
    assert r.json()["audit"][0]["action"] == "card.lift"
    assert r.json()["audit"][0]["detail"]["before"]["status"] == "yellow"


def test_queue_filters_csv_and_sql_totals(client: TestClient, store: Store,
                                          inspector: dict[str, str]) -> None:
    setup_scale_with_findings(store, seal_broken=True)
    h = inspector
    q = lambda **p: client.get("/api/v1/inspection-queue", headers=h, params=p).json()  # noqa: E731
    assert [x["device"] for x in q()] == ["s-1"]
    assert [x["device"] for x in q(kind="calibration-change")] == ["s-1"]
    assert q(kind="price-mismatch") == []
    assert [x["device"] for x in q(status="untasked")] == ["s-1"]
    assert q(status="tasked") == []
    client.post("/api/v1/inspection-tasks", headers=h, json={"device": "s-1"})
    assert [x["task_open"] for x in q(status="tasked")] == [True]
    r = client.get("/api/v1/inspection-queue.csv", headers=h)
    assert r.status_code == 200 and r.content.startswith("\ufeff".encode())
    lines = r.content.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("序号,市场,摊位号,商户（当时绑定）")
    assert "计量参数变更" in lines[1] and "张三蔬菜" in lines[1] and "A-01" in lines[1]
    en = client.get("/api/v1/inspection-queue.csv", headers=h, params={"lang": "en"})
    assert en.content.decode("utf-8-sig").splitlines()[0].startswith("rank,market,stall_no")

    t = client.get("/api/v1/stats/sales", headers=h).json()
    assert t == {"count": 1, "amount_fen": 0, "net_mg": 198_000, "priced": 0}
    grid = client.get("/api/v1/risk/markets/m1/stalls", headers=h).json()
    by = {s["device"]: s for s in grid["stalls"]}
    assert by["s-1"]["in_queue"] and by["s-1"]["stall_no"] == "A-01"
    assert not by["s-2"]["in_queue"]
