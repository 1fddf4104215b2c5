"""Issue 19 through the API, on SQLite and PostgreSQL: application → review → approval (the
merchant, its trust code, its account), the business-register status feed, complaints with
a clock, red/black lists, and every step in the append-only audit log."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from conftest import CODE_A, CODE_B, CODE_C, PASSWORD, login, make_code, seed
from gateway_server.api.auth import now_ms
from gateway_server.casework import complaints as cases
from gateway_server.registry import register as reg
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import findings, merchants
from gateway_server.store.tables_trust import audit_log
from gateway_server.trust import lists as trust_lists

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 64
APP_CODE = make_code("92350100MA2C00007")
H = 3_600_000


@pytest.fixture
def settings() -> Settings:
    """The public rate limit out of the way: these tests call many public routes."""
    return Settings(database_url="sqlite://", public_rate_per_min=6000, public_rate_burst=1000)


def _seed(store: Store) -> dict[str, int | str]:
    with store.engine.begin() as c:
        return seed(c)


def _apply(client: TestClient, **over: object) -> dict[str, str]:
    body = {"market_id": "m1", "name": "陈七干货", "credit_code": APP_CODE, "stall_no": "E-05",
            "phone": "13900000000", "categories": ["干货"], "username": "chen7",
            "password": PASSWORD, "licences": [{"kind": "食品经营许可证", "number": "JY1",
                                                "valid_until": "2030-01-01"}]} | over
    r = client.post("/api/v1/public/applications", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _audit(store: Store, subject: str) -> list[str]:
    with store.engine.connect() as c:
        return list(c.execute(select(audit_log.c.action).where(audit_log.c.subject == subject)
                              .order_by(audit_log.c.id)).scalars())


def test_application_review_approval(client: TestClient, store: Store,
                                     admin: dict[str, str]) -> None:
    _seed(store)
    form = client.get("/api/v1/public/application-form").json()
    assert [m["id"] for m in form["markets"]] == ["m1"] and len(form["commitments"]) == 6
    # a wrong check digit: a clear message, nothing stored
    bad = APP_CODE[:-1] + ("0" if APP_CODE[-1] != "0" else "1")
    r = client.post("/api/v1/public/applications", json={
        "market_id": "m1", "name": "x", "credit_code": bad, "stall_no": "E", "phone": "13900000000",
        "username": "u1", "password": PASSWORD})
    assert r.status_code == 422 and "check" in r.text and r.json()["detail"][0]["loc"][-1] == "credit_code"
    r = client.post("/api/v1/public/applications", json={
        "market_id": "m1", "name": "x", "credit_code": CODE_A, "stall_no": "E", "phone": "13900000000",
        "username": "u1", "password": PASSWORD})
    assert r.status_code == 409  # already a merchant
    made = _apply(client)
    number, secret = made["number"], made["secret"]
    sh = {"X-Application-Secret": secret}
    assert client.get(f"/api/v1/public/applications/{number}",
                      headers={"X-Application-Secret": "wrong-secret"}).status_code == 404
    # uploads: not an image, a lie about the type, too large; then a PNG, twice (one document)
    up = f"/api/v1/public/applications/{number}/documents"
    assert client.post(up, headers=sh | {"Content-Type": "image/png"},
                       content=b"%PDF-1.4 not an image").status_code == 422
    r = client.post(up, headers=sh | {"Content-Type": "image/jpeg"}, content=PNG)
    assert r.status_code == 422 and "declared image/jpeg" in r.text
    big = PNG + b"\x00" * (5 * 1024 * 1024)
    assert client.post(up, headers=sh | {"Content-Type": "image/png"}, content=big).status_code == 422
    for _ in range(2):
        r = client.post(up + "?kind=营业执照", headers=sh | {"Content-Type": "image/png"}, content=PNG)
        assert r.status_code == 201, r.text
        assert r.json()["sha256"] == hashlib.sha256(PNG).hexdigest()
    app = client.get(f"/api/v1/public/applications/{number}", headers=sh).json()
    assert len(app["documents"]) == 1 and app["status"] == "draft"
    # submit needs every commitment
    r = client.post(f"/api/v1/public/applications/{number}/submit", headers=sh)
    assert r.status_code == 422 and "commitments" in r.text
    keys = [c["key"] for c in form["commitments"]]
    assert client.patch(f"/api/v1/public/applications/{number}", headers=sh,
                        json={"commitments": keys}).status_code == 200
    assert client.post(f"/api/v1/public/applications/{number}/submit",
                       headers=sh).json()["status"] == "submitted"
    # review: ask for changes, the applicant sees the note, edits, resubmits
    queue = client.get("/api/v1/applications", headers=admin).json()
    app_id = queue[0]["id"]
    assert [a["number"] for a in queue] == [number] and "password_hash" not in queue[0]
    img = client.get(f"/api/v1/applications/{app_id}/documents/{app['documents'][0]['id']}",
                     headers=admin)
    assert img.content == PNG and img.headers["content-type"] == "image/png"
    r = client.post(f"/api/v1/applications/{app_id}/request-changes", headers=admin,
                    json={"note": "请补充摊位租赁合同"})
    assert r.json()["status"] == "changes_requested"
    mine = client.get(f"/api/v1/public/applications/{number}", headers=sh).json()
    assert mine["review_note"] == "请补充摊位租赁合同"
    client.post(up + "?kind=租赁合同", headers=sh | {"Content-Type": "image/jpeg"}, content=JPEG)
    client.patch(f"/api/v1/public/applications/{number}", headers=sh, json={"stall_no": "E-06"})
    client.post(f"/api/v1/public/applications/{number}/submit", headers=sh)
    # approve: merchant, trust code, account with the applicant's password
    r = client.post(f"/api/v1/applications/{app_id}/approve", headers=admin)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["trust_url"].endswith("/m/" + out["trust_token"])
    trust = client.get(f"/api/v1/public/merchants/{out['trust_token']}").json()
    assert trust["name"] == "陈七干货" and trust["stall_no"] == "E-06" and trust["status"] == "normal"
    assert client.post(f"/api/v1/applications/{app_id}/approve", headers=admin).status_code == 409
    mh = login(client, "chen7")
    me = client.get("/api/v1/merchant/me", headers=mh).json()
    assert me["id"] == out["merchant_id"] and me["credit_code"] == APP_CODE
    assert client.get("/api/v1/merchant/qr.svg", headers=mh).text.startswith("<?xml")
    assert _audit(store, f"application:{app_id}") == [
        "application.create", "application.document", "application.edit", "application.submit",
        "application.request-changes", "application.document", "application.edit",
        "application.submit", "application.approve"]
    assert _audit(store, f"merchant:{out['merchant_id']}") == ["account.create"]


def test_reject_with_reason(client: TestClient, store: Store, admin: dict[str, str]) -> None:
    _seed(store)
    made = _apply(client)
    sh = {"X-Application-Secret": made["secret"]}
    keys = [c["key"] for c in client.get("/api/v1/public/application-form").json()["commitments"]]
    client.patch(f"/api/v1/public/applications/{made['number']}", headers=sh,
                 json={"commitments": keys})
    client.post(f"/api/v1/public/applications/{made['number']}/documents", content=PNG,
                headers=sh | {"Content-Type": "image/png"})
    client.post(f"/api/v1/public/applications/{made['number']}/submit", headers=sh)
    app_id = client.get("/api/v1/applications", headers=admin).json()[0]["id"]
    assert client.post(f"/api/v1/applications/{app_id}/reject", headers=admin,
                       json={"reason": "x"}).status_code == 422
    r = client.post(f"/api/v1/applications/{app_id}/reject", headers=admin,
                    json={"reason": "执照已过期"})
    assert r.json()["status"] == "rejected" and r.json()["review_note"] == "执照已过期"
    with store.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(merchants)).scalar_one() == 2
    # the username and the code are free again for a new application
    _apply(client)


def test_audit_log_is_append_only(store: Store) -> None:
    from gateway_server.trust.merchant_portal import audit

    with store.engine.begin() as c:
        audit(c, actor="t", action="x", subject="s:1", now_ms=1)
    for sql in ("UPDATE audit_log SET actor = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), store.engine.begin() as c:
            c.execute(text(sql))
    with store.engine.connect() as c:
        assert c.execute(select(audit_log.c.actor)).scalars().all() == ["t"]


FEED_BAD = ("统一社会信用代码,登记状态,日期,原因\n"
            "{a},吊销，未注销,2025-03-01,\n"
            "{bad},注销,2025-03-01,\n"
            "{c},注销,2025-03-01,\n"
            "{b},列入经营异常名录,2025-13-40,\n"
            "{b},迁出,2025-03-01,\n")


def test_status_feed(client: TestClient, store: Store, admin: dict[str, str]) -> None:
    ids = _seed(store)
    bad = CODE_B[:-1] + ("0" if CODE_B[-1] != "0" else "1")
    csv = FEED_BAD.format(a=CODE_A, bad=bad, c=CODE_C, b=CODE_B)
    r = client.post("/api/v1/status-feed", headers=admin | {"Content-Type": "text/csv"},
                    content=csv.encode())
    rep = r.json()
    assert r.status_code == 200 and rep["applied"] == 1, rep
    errs = {(e["row"], e["column"]) for e in rep["errors"]}
    assert errs == {(3, "统一社会信用代码"), (4, "统一社会信用代码"), (5, "日期"), (6, "登记状态")}
    assert "no merchant" in next(e["message"] for e in rep["errors"] if e["row"] == 4)
    a = client.get(f"/api/v1/merchants/{ids['a']}", headers=admin).json()
    b = client.get(f"/api/v1/merchants/{ids['b']}", headers=admin).json()
    assert a["status"] == "delisted" and "吊销" in a["status_reason"]
    assert b["status"] == "normal"  # its rows were bad: nothing changed
    assert client.get(f"/api/v1/public/merchants/{ids['a_token']}").json()["status"] == "delisted"
    # a re-import changes nothing; an older row is skipped with a warning
    rep2 = client.post("/api/v1/status-feed", headers=admin | {"Content-Type": "text/csv"},
                       content=csv.encode()).json()
    assert rep2["applied"] == 0 and rep2["unchanged"] == 1
    old = f"credit_code,status,date\n{CODE_A},存续,2024-01-01\n"
    rep3 = client.post("/api/v1/status-feed", headers=admin | {"Content-Type": "text/csv"},
                       content=old.encode()).json()
    assert rep3["applied"] == 0 and "older" in rep3["warnings"][0]["message"]
    # suspended with the reason; a yellow card comes back when the feed restores
    with store.engine.begin() as c:
        reg.set_merchant_status(c, int(ids["b"]), status="yellow", list_status=None,
                                reason="检查不合格", now_ms=now_ms())
    feed = f"统一社会信用代码,登记状态,日期,原因\n{CODE_B},列入经营异常名录,2025-04-01,通过登记的住所无法联系\n"
    client.post("/api/v1/status-feed", headers=admin | {"Content-Type": "text/csv"},
                content=feed.encode())
    b = client.get(f"/api/v1/merchants/{ids['b']}", headers=admin).json()
    assert b["status"] == "suspended" and "无法联系" in b["status_reason"]
    feed = f"统一社会信用代码,登记状态,日期\n{CODE_B},移出经营异常名录,2025-05-01\n"
    client.post("/api/v1/status-feed", headers=admin | {"Content-Type": "text/csv"},
                content=feed.encode())
    assert client.get(f"/api/v1/merchants/{ids['b']}", headers=admin).json()["status"] == "yellow"
    with store.engine.connect() as c:
        rows = c.execute(select(audit_log.c.detail).where(
            audit_log.c.action == "register-status.change",
            audit_log.c.merchant_id == ids["b"])).scalars().all()
    assert len(rows) == 2 and '"row": 2' in rows[0] and "移出经营异常名录" in rows[1]
    # a file without the required columns: nothing applied
    r = client.post("/api/v1/status-feed", headers=admin | {"Content-Type": "text/csv"},
                    content=b"name,foo\nx,y\n")
    assert r.status_code == 422 and "登记状态" in r.text


def test_status_feed_watched_folder(store: Store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gateway_server.trust.statusfeed import watch_once

    ids = _seed(store)
    (tmp_path / "feed.csv").write_text(f"统一社会信用代码,登记状态,日期\n{CODE_A},注销,2025-03-01\n",
                                       encoding="utf-8")
    (tmp_path / "broken.csv").write_bytes(b"\xff\xfe\x00garbage")
    done = watch_once(store.engine, tmp_path, now_ms=now_ms())
    assert [name for name, _ in done] == ["feed.csv"]
    assert not list(tmp_path.glob("*.csv"))
    assert len(list((tmp_path / "done").glob("feed.*.csv"))) == 1
    assert len(list((tmp_path / "failed").glob("broken.*.result.json"))) == 1
    with store.engine.connect() as c:
        assert reg.get_merchant(c, int(ids["a"]))["status"] == "delisted"


def test_complaint_clock(client: TestClient, store: Store, admin: dict[str, str]) -> None:
    ids = _seed(store)
    with store.engine.begin() as c:
        from gateway_server.trust.merchant_portal import create_account

        create_account(c, int(ids["a"]), username="zhang3", password=PASSWORD, now_ms=1,
                       actor="admin1")
        create_account(c, int(ids["b"]), username="li4", password=PASSWORD, now_ms=1,
                       actor="admin1")
    r = client.post("/api/v1/public/complaint-cases", json={
        "trust_token": ids["a_token"], "text": "1 斤猪肉复秤只有 450 克", "contact": "13911112222"})
    assert r.status_code == 201, r.text
    number = r.json()["number"]
    look = client.get(f"/api/v1/public/complaint-cases/{number.lower()}").json()
    assert look["state"] == "awaiting" and "text" not in look and "contact" not in look
    assert "13911112222" not in str(look) and "猪肉" not in str(look)
    assert client.get("/api/v1/public/complaint-cases/TS2222222222").status_code == 404
    ah, bh = login(client, "zhang3"), login(client, "li4")
    assert [c["number"] for c in client.get("/api/v1/merchant/complaints", headers=ah).json()] == [number]
    assert client.get("/api/v1/merchant/complaints", headers=bh).json() == []
    assert client.post(f"/api/v1/merchant/complaints/{number}/answer", headers=bh,
                       json={"answer": "不是我们"}).status_code == 404
    r = client.post(f"/api/v1/merchant/complaints/{number}/answer", headers=ah,
                    json={"answer": "已联系顾客并退还差价"})
    assert r.status_code == 200 and r.json()["state"] == "answered"
    look = client.get(f"/api/v1/public/complaint-cases/{number}").json()
    assert look["answer"] == "已联系顾客并退还差价" and look["late"] is False
    assert client.post(f"/api/v1/merchant/complaints/{number}/answer", headers=ah,
                       json={"answer": "again"}).status_code == 409
    # a second complaint goes unanswered past the deadline: overdue, one finding
    n2 = client.post("/api/v1/public/complaint-cases", json={
        "trust_token": ids["a_token"], "text": "价格不符"}).json()["number"]
    later = now_ms() + 49 * H
    with store.engine.begin() as c:
        assert [o["number"] for o in cases.tick(c, now_ms=later, answer_s=48 * 3600)] == [n2]
        assert cases.tick(c, now_ms=later + H, answer_s=48 * 3600) == []
        f = c.execute(select(findings).where(findings.c.kind == "complaint-overdue")).one()
    assert f.merchant_id == ids["a"] and f.device is None
    assert client.get(f"/api/v1/public/complaint-cases/{n2}").json()["state"] == "overdue"
    # the bureau mediates and closes; compensation needs established fraud
    client.post(f"/api/v1/complaint-cases/{n2}/mediate", headers=admin, json={"note": "电话调解"})
    r = client.post(f"/api/v1/complaint-cases/{n2}/close", headers=admin,
                    json={"outcome": "compensation"})
    assert r.status_code == 409 and "fraud" in r.text
    r = client.post(f"/api/v1/complaint-cases/{n2}/close", headers=admin,
                    json={"outcome": "refund", "compensation_fen": 1250, "note": "退款 12.50 元"})
    assert r.status_code == 200 and r.json()["state"] == "closed"
    look = client.get(f"/api/v1/public/complaint-cases/{n2}").json()
    assert look["outcome"] == "refund" and look["compensation_fen"] == 1250 and look["late"]
    figs = client.get("/api/v1/public/complaint-figures").json()
    assert figs[0]["received"] == 2 and figs[0]["answered_in_time"] == 1
    assert figs[0]["overdue_unanswered"] == 1 and figs[0]["outcomes"]["refund"] == 1
    with store.engine.connect() as c:
        steps = c.execute(select(audit_log.c.action).where(
            audit_log.c.subject.like("complaint:%")).order_by(audit_log.c.id)).scalars().all()
    assert steps == ["complaint.open", "complaint.answer", "complaint.open",
                     "complaint.overdue", "complaint.mediate", "complaint.close"]
    page = client.get(f"/public/complaints?number={number}")
    assert page.status_code == 200 and "已联系顾客并退还差价" in page.text and "猪肉" not in page.text
    assert client.get("/public/complaints?number=TS2222222222").status_code == 404


def test_red_and_black_lists(client: TestClient, store: Store, admin: dict[str, str]) -> None:
    ids = _seed(store)
    tomorrow = reg.format_date(now_ms() + 86_400_000)
    r = client.post("/api/v1/lists/red/entries", headers=admin, json={
        "merchant_id": ids["a"], "reason": "连续 12 个月检查合格", "until": tomorrow})
    assert r.status_code == 201, r.text
    client.post("/api/v1/lists/black/entries", headers=admin, json={
        "merchant_id": ids["b"], "reason": "遥控作弊，已立案"})
    red = client.get("/api/v1/public/red-list").json()
    assert [(e["name"], e["reason"]) for e in red] == [("张三蔬菜", "连续 12 个月检查合格")]
    assert red[0]["until_ms"] is not None and "credit_code" not in red[0]
    page = client.get("/public/black-list")
    assert page.status_code == 200 and "遥控作弊" in page.text and "李四水产" in page.text
    with store.engine.begin() as c:  # two days on: the red entry has expired
        assert trust_lists.expire(c, now_ms=now_ms() + 2 * 86_400_000) == 1
    assert client.get("/api/v1/public/red-list").json() == []
    assert client.get(f"/api/v1/merchants/{ids['a']}", headers=admin).json()["list_status"] == "none"
    assert client.post("/api/v1/lists/red/entries", headers=admin, json={
        "merchant_id": ids["a"], "reason": "过去", "until": "2020-01-01"}).status_code == 422
