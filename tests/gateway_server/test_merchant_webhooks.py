"""Outgoing webhooks (issue 19) against a real HTTP receiver on a loopback port, started by
the test: signed bodies, retries with backoff after failures and refusals, the delivery
log; events from the status feed, an overdue complaint and a new high-risk finding. Also
the ``status-feed`` CLI and the trust clock's tick."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from conftest import CODE_A, seed
from gateway_server.api.auth import now_ms
from gateway_server.casework.clock import tick
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import findings
from gateway_server.store.tables_trust import webhook_deliveries
from gateway_server.trust import webhooks
from gateway_server.trust.statusfeed import import_feed


class Receiver:
    """Answers each POST with the next status of ``script`` (then 200) and keeps it."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.got: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append({"headers": dict(self.headers), "body": body})
                code = outer.script.pop(0) if outer.script else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def _pending(store: Store) -> list[Any]:
    with store.engine.connect() as c:
        return c.execute(select(webhook_deliveries).order_by(webhook_deliveries.c.id)).all()


def test_signed_delivery_with_retries(store: Store, receiver: Receiver) -> None:
    now = now_ms()
    with store.engine.begin() as c:
        ids = seed(c)
        ep = webhooks.add_endpoint(c, url=receiver.url, events=[], now_ms=now)
        rep = import_feed(c, f"统一社会信用代码,登记状态,日期\n{CODE_A},吊销,2025-03-01\n",
                          now_ms=now, actor="t")
    assert rep.applied == 1
    receiver.script = [500, 503]
    assert webhooks.deliver_due(store.engine, now_ms=now) == 1  # 500
    d = _pending(store)[0]
    assert (d.status, d.attempts, d.last_status_code) == ("pending", 1, 500)
    assert d.next_attempt_ms == now + webhooks.BACKOFF_BASE_S * 1000
    assert webhooks.deliver_due(store.engine, now_ms=now + 5_000) == 0  # not due yet
    assert webhooks.deliver_due(store.engine, now_ms=now + 10_000) == 1  # 503
    assert _pending(store)[0].next_attempt_ms == now + 10_000 + 2 * webhooks.BACKOFF_BASE_S * 1000
    assert webhooks.deliver_due(store.engine, now_ms=now + 30_000) == 1  # 200
    d = _pending(store)[0]
    assert (d.status, d.attempts, d.delivered_ms) == ("delivered", 3, now + 30_000)
    assert len(receiver.got) == 3
    last = receiver.got[-1]
    ts, sig = last["headers"]["X-Gateway-Timestamp"], last["headers"]["X-Gateway-Signature"]
    want = hmac.new(ep["secret"].encode(), ts.encode() + b"." + last["body"], hashlib.sha256)
    assert sig == "sha256=" + want.hexdigest()
    body = json.loads(last["body"])
    assert body["event"] == "merchant.status" and body["data"]["status"] == "delisted"
    assert body["data"]["merchant_id"] == ids["a"] and body["delivery"] == d.id
    # a forged body does not verify
    assert sig != webhooks.sign(ep["secret"], int(ts), last["body"] + b" ")


def test_unreachable_endpoint_fails_after_max_attempts(store: Store) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    now = now_ms()
    with store.engine.begin() as c:
        webhooks.add_endpoint(c, url=f"http://127.0.0.1:{port}/x", events=["complaint.overdue"],
                              now_ms=now)
        assert webhooks.enqueue(c, webhooks.Event.MERCHANT_STATUS, {}, now_ms=now) == 0
        assert webhooks.enqueue(c, webhooks.Event.COMPLAINT_OVERDUE, {"n": 1}, now_ms=now) == 1
    t = now
    for _ in range(webhooks.MAX_ATTEMPTS):
        assert webhooks.deliver_due(store.engine, now_ms=t, timeout_s=2) == 1
        t += webhooks.BACKOFF_MAX_S * 1000
    d = _pending(store)[0]
    assert d.status == "failed" and d.attempts == webhooks.MAX_ATTEMPTS
    assert "Connection" in (d.last_error or "") or "refused" in (d.last_error or "")
    assert webhooks.deliver_due(store.engine, now_ms=t) == 0


def test_clock_sends_high_risk_findings_and_overdue_complaints(store: Store,
                                                               receiver: Receiver) -> None:
    settings = Settings(database_url="sqlite://", complaint_answer_hours=1)
    now = now_ms()
    with store.engine.begin() as c:
        ids = seed(c)
    tick(store, settings, now_ms=now)  # the first scan sets the findings cursor
    with store.engine.begin() as c:
        webhooks.add_endpoint(c, url=receiver.url, events=[], now_ms=now)
        for sev, key in (("high", "h"), ("low", "l")):
            c.execute(findings.insert().values(
                kind="impact", severity=sev, market="m1", device=None,
                merchant_id=ids["a"], ts_ms=now, created_ms=now, status="open",
                title="冲击法 Impact", legal_basis="", evidence="{}", dedup_key=key))
        from gateway_server.store.tables_workflow import complaints

        c.execute(complaints.insert().values(merchant_id=ids["b"], ts_ms=now, channel="12315",
                                             text="电话投诉", status="open"))
    done = tick(store, settings, now_ms=now + 2 * 3_600_000)
    assert done["findings"] == 1 and done["overdue"] == 1 and done["deliveries"] >= 2
    events = sorted(json.loads(g["body"])["event"] for g in receiver.got)
    assert events == ["complaint.overdue", "finding.high-risk"]


def test_status_feed_cli(store: Store, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway_server.cli import main
    from gateway_server.registry import register as reg

    with store.engine.begin() as c:
        ids = seed(c)
    url = store.engine.url.render_as_string(hide_password=False)
    feed = tmp_path / "feed.csv"
    feed.write_text(f"credit_code,status,date,reason\n{CODE_A},abnormal,2025-03-01,年报未报\n"
                    "91350100M000100Y44,注销,2025-03-01,\n", encoding="utf-8")
    assert main(["status-feed", str(feed), "--database-url", url]) == 1  # one bad row
    out = capsys.readouterr()
    assert "applied 1, unchanged 0, errors 1" in out.out
    assert "row 3, column credit_code" in out.err
    with store.engine.connect() as c:
        m = reg.get_merchant(c, int(ids["a"]))
    assert m["status"] == "suspended" and "年报未报" in m["status_reason"]
    feed.write_text("foo,bar\n1,2\n", encoding="utf-8")
    assert main(["status-feed", str(feed), "--database-url", url]) == 2
    assert "required column missing" in capsys.readouterr().err
