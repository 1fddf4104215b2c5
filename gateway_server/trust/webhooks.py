"""Outgoing notifications (issue 19): a bureau connects its own SMS or messaging gateway.

Rules:

* Events: ``finding.high-risk`` (a new finding of severity high or critical),
  ``complaint.overdue`` (a merchant did not answer in time) and ``merchant.status`` (the
  status feed or the bureau suspended, delisted or restored a merchant; a list entry).
* An outbox: :func:`enqueue` writes one delivery row per subscribed endpoint **in the same
  transaction** as the change it reports, so a notification is never sent for a change
  that rolled back, nor lost for one that committed. :func:`deliver_due` sends what is due.
* Signed: ``X-Gateway-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``
  with ``X-Gateway-Timestamp`` (UTC seconds), ``X-Gateway-Event`` and
  ``X-Gateway-Delivery`` (the delivery id: receivers de-duplicate retries with it). The
  body is JSON ``{"delivery", "event", "created_ms", "data"}``.
* Retried with exponential backoff: after attempt n the next is due ``min(BACKOFF_BASE_S ·
  2^(n−1), BACKOFF_MAX_S)`` later; any 2xx is delivered; after ``MAX_ATTEMPTS`` the row is
  ``failed``. Every attempt's status code or error is kept (the delivery log).
* New high-risk findings are found by a scan over ``findings.id`` (cursor in
  ``webhook_cursor``): the ingest pipeline stays unaware of webhooks. The first scan starts
  at the newest finding (no flood of history).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, func, select

from gateway_server.registry import register as reg
from gateway_server.store.tables import findings, merchants
from gateway_server.store.tables_trust import webhook_cursor, webhook_deliveries, webhook_endpoints

MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 10
BACKOFF_MAX_S = 3600
TIMEOUT_S = 10.0
DELIVER_BATCH = 100
HIGH_RISK = ("high", "critical")
SECRET_BYTES = 32


class Event(StrEnum):
    FINDING_HIGH_RISK = "finding.high-risk"
    COMPLAINT_OVERDUE = "complaint.overdue"
    MERCHANT_STATUS = "merchant.status"


class Status(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def sign(secret: str, timestamp_s: int, body: bytes) -> str:
    """The signature header value of ``body`` sent at ``timestamp_s``."""
    mac = hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff_s(attempts: int) -> int:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    return int(min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S))


# -- endpoints -----------------------------------------------------------------------------

def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise reg.RegistryError("url: an http:// or https:// address", field="url")
    return url


def add_endpoint(conn: Connection, *, url: str, events: Iterable[str], now_ms: int,
                 secret: str | None = None) -> dict[str, Any]:
    """A new endpoint; the answer carries its secret (shown once, like a scale key)."""
    names = sorted({Event(e).value for e in events}) if events else [e.value for e in Event]
    secret = secret or secrets.token_hex(SECRET_BYTES)
    res = conn.execute(webhook_endpoints.insert().values(
        url=_check_url(url), secret=secret, events=",".join(names), active=True,
        created_ms=now_ms))
    return get_endpoint(conn, reg.inserted_id(res)) | {"secret": secret}


def _endpoint_out(row: Any) -> dict[str, Any]:
    return {"id": row.id, "url": row.url, "events": [e for e in row.events.split(",") if e],
            "active": bool(row.active), "created_ms": row.created_ms}


def get_endpoint(conn: Connection, endpoint_id: int) -> dict[str, Any]:
    row = conn.execute(select(webhook_endpoints).where(
        webhook_endpoints.c.id == endpoint_id)).first()
    if row is None:
        raise reg.NotFoundError(f"no webhook {endpoint_id}")
    return _endpoint_out(row)


def list_endpoints(conn: Connection) -> list[dict[str, Any]]:
    return [_endpoint_out(r) for r in conn.execute(
        select(webhook_endpoints).order_by(webhook_endpoints.c.id))]


def set_active(conn: Connection, endpoint_id: int, active: bool) -> dict[str, Any]:
    get_endpoint(conn, endpoint_id)
    conn.execute(webhook_endpoints.update().where(webhook_endpoints.c.id == endpoint_id)
                 .values(active=active))
    return get_endpoint(conn, endpoint_id)


def deliveries(conn: Connection, endpoint_id: int, *, limit: int = 100) -> list[dict[str, Any]]:
    """The delivery log of an endpoint, newest first."""
    get_endpoint(conn, endpoint_id)
    q = (select(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint_id)
         .order_by(webhook_deliveries.c.id.desc()).limit(limit))
    out = []
    for r in conn.execute(q):
        d = dict(r._mapping)
        d["payload"] = json.loads(d["payload"])
        out.append(d)
    return out


# -- the outbox ----------------------------------------------------------------------------

def enqueue(conn: Connection, event: Event, data: dict[str, Any], *, now_ms: int) -> int:
    """One pending delivery per active endpoint subscribed to ``event``; how many."""
    n = 0
    for ep in conn.execute(select(webhook_endpoints).where(webhook_endpoints.c.active.is_(True))):
        if event.value not in ep.events.split(","):
            continue
        conn.execute(webhook_deliveries.insert().values(
            endpoint_id=ep.id, event=event.value,
            payload=json.dumps(data, ensure_ascii=False, sort_keys=True),
            status=Status.PENDING.value, attempts=0, next_attempt_ms=now_ms, created_ms=now_ms))
        n += 1
    return n


def scan_findings(conn: Connection, *, now_ms: int) -> int:
    """Enqueue ``finding.high-risk`` for findings new since the last scan; how many."""
    top = conn.execute(select(func.coalesce(func.max(findings.c.id), 0))).scalar_one()
    cur = conn.execute(select(webhook_cursor.c.value).where(
        webhook_cursor.c.name == "findings")).scalar_one_or_none()
    if cur is None:  # the first scan: from now on
        conn.execute(webhook_cursor.insert().values(name="findings", value=int(top)))
        return 0
    rows = conn.execute(select(findings, merchants.c.name.label("merchant_name"))
                        .join(merchants, merchants.c.id == findings.c.merchant_id, isouter=True)
                        .where(findings.c.id > cur, findings.c.id <= top,
                               findings.c.severity.in_(HIGH_RISK))
                        .order_by(findings.c.id)).all()
    for f in rows:
        enqueue(conn, Event.FINDING_HIGH_RISK, {
            "finding_id": f.id, "kind": f.kind, "severity": f.severity, "market": f.market,
            "device": f.device, "merchant_id": f.merchant_id, "merchant_name": f.merchant_name,
            "ts_ms": f.ts_ms, "title": f.title}, now_ms=now_ms)
    conn.execute(webhook_cursor.update().where(webhook_cursor.c.name == "findings")
                 .values(value=int(top)))
    return len(rows)


# -- delivery ------------------------------------------------------------------------------

Post = Callable[[str, bytes, dict[str, str], float], int]


def http_post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    """POST ``body``; the HTTP status (an HTTP error status is returned, not raised)."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # http(s) only (_check_url)
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def deliver_due(engine: Engine, *, now_ms: int, post: Post = http_post,
                timeout_s: float = TIMEOUT_S) -> int:
    """Send every pending delivery that is due; the number of attempts made. Each attempt
    is recorded in its own transaction, so a crash mid-way repeats at most one request."""
    with engine.connect() as conn:
        due = conn.execute(
            select(webhook_deliveries, webhook_endpoints.c.url, webhook_endpoints.c.secret)
            .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
            .where(webhook_deliveries.c.status == Status.PENDING.value,
                   webhook_deliveries.c.next_attempt_ms <= now_ms)
            .order_by(webhook_deliveries.c.next_attempt_ms, webhook_deliveries.c.id)
            .limit(DELIVER_BATCH)).all()
    for d in due:
        body = json.dumps({"delivery": d.id, "event": d.event, "created_ms": d.created_ms,
                           "data": json.loads(d.payload)}, ensure_ascii=False,
                          sort_keys=True).encode()
        ts = now_ms // 1000
        headers = {"Content-Type": "application/json", "User-Agent": "smart-scale-gateway",
                   "X-Gateway-Event": d.event, "X-Gateway-Delivery": str(d.id),
                   "X-Gateway-Timestamp": str(ts), "X-Gateway-Signature": sign(d.secret, ts, body)}
        code: int | None = None
        error: str | None = None
        try:
            code = post(d.url, body, headers, timeout_s)
        except (OSError, ValueError) as err:  # refused, timed out, unresolvable
            error = f"{type(err).__name__}: {err}"[:500]
        attempts = d.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_status_code": code,
                                  "last_error": error}
        if code is not None and 200 <= code < 300:
            values |= {"status": Status.DELIVERED.value, "delivered_ms": now_ms}
        elif attempts >= MAX_ATTEMPTS:
            values |= {"status": Status.FAILED.value}
        else:
            values |= {"next_attempt_ms": now_ms + backoff_s(attempts) * 1000}
            if code is not None and error is None:
                values["last_error"] = f"HTTP {code}"
        with engine.begin() as conn:
            conn.execute(webhook_deliveries.update().where(webhook_deliveries.c.id == d.id)
                         .values(**values))
    return len(due)
