"""Business-register status feed (企业登记状态, issue 19): a CSV of (credit code, status,
date) as a regional enterprise-credit export gives it, imported on demand (CLI, admin API)
or from a watched folder. The CSV shape is documented in docs/registry.md.

Rules:

* 注销 (cancelled) and 吊销 (revoked) → the merchant is ``delisted``: the trust page says
  so and the code no longer resolves to an active merchant. 列入经营异常名录 → ``suspended``
  with the reason. A later normal status (存续 / 在业 / 移出经营异常名录) restores the status
  the merchant had before the feed changed it (a yellow card stays a yellow card). A
  merchant the bureau suspended by hand is not restored by the feed.
* Rows are applied in date order per merchant: a row dated before the status already
  applied is skipped with a warning; the same status on the same date is ``unchanged``
  (a re-import changes nothing).
* A bad row (unknown or invalid credit code, wrong check digit, bad date, unknown status)
  gets a message naming its row and column and changes nothing; every good row is applied.
  A file that cannot be read at all (encoding, no header, a required column missing)
  changes nothing.
* Each change is one audit row carrying the feed row that caused it (file, row number,
  cells), and a ``merchant.status`` webhook.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

from gateway_server.registry import register as reg, uscc
from gateway_server.registry.register_csv import CsvFormatError, decode
from gateway_server.store.tables import merchants
from gateway_server.store.tables_trust import register_status
from gateway_server.trust import webhooks
from gateway_server.trust.merchant_portal import audit

log = logging.getLogger(__name__)
MAX_FEED_BYTES = 20 * 1024 * 1024


class RegisterStatus(StrEnum):
    NORMAL = "normal"  # 存续 / 在业 / 开业 / 移出经营异常名录
    CANCELLED = "cancelled"  # 注销
    REVOKED = "revoked"  # 吊销
    ABNORMAL = "abnormal"  # 列入经营异常名录


# (key, zh header, en header, more accepted headers)
COLUMNS = (
    ("credit_code", "统一社会信用代码", "credit_code", ("uscc", "信用代码", "社会信用代码")),
    ("status", "登记状态", "status", ("经营状态", "企业状态", "状态", "登记状态名称")),
    ("date", "日期", "date", ("状态日期", "变更日期", "核准日期", "列入日期", "作出决定日期")),
    ("reason", "原因", "reason", ("列入原因", "异常原因", "列入经营异常名录原因", "说明")),
    ("name", "企业名称", "name", ("名称", "商户名称")),
)
REQUIRED = ("credit_code", "status", "date")
_NORMAL_WORDS = {"存续", "在业", "开业", "在营", "正常", "在册", "存续在营开业在册", "恢复",
                 "normal", "active"}
_ENGLISH = {"cancelled": RegisterStatus.CANCELLED, "canceled": RegisterStatus.CANCELLED,
            "revoked": RegisterStatus.REVOKED, "abnormal": RegisterStatus.ABNORMAL}
TEXT = {RegisterStatus.CANCELLED: "已注销", RegisterStatus.REVOKED: "营业执照已吊销",
        RegisterStatus.ABNORMAL: "列入经营异常名录", RegisterStatus.NORMAL: "登记状态正常"}


def _norm(header: str) -> str:
    return "".join(ch for ch in header.strip().lstrip("\ufeff").lower() if ch not in " _-")


_HEADER_KEYS = {_norm(h): key for key, zh, en, more in COLUMNS for h in (zh, en, *more)}


def parse_status(text: str) -> RegisterStatus:
    """A register status as the export writes it (吊销，未注销 is revoked, not cancelled)."""
    t = "".join(ch for ch in text.strip().lower() if ch not in " ,，、()（）-_")
    if not t:
        raise ValueError("empty status")
    if t in _ENGLISH:
        return _ENGLISH[t]
    if "吊销" in t:
        return RegisterStatus.REVOKED
    if "注销" in t:
        return RegisterStatus.CANCELLED
    if "移出" in t:
        return RegisterStatus.NORMAL
    if "经营异常" in t or t in ("异常", "列入"):
        return RegisterStatus.ABNORMAL
    if t in _NORMAL_WORDS:
        return RegisterStatus.NORMAL
    raise ValueError(f"unknown status {text.strip()!r} (expected 存续, 在业, 注销, 吊销, "
                     "列入经营异常名录 or 移出经营异常名录)")


@dataclass(frozen=True)
class RowMessage:
    row: int
    column: str
    message: str


@dataclass
class FeedReport:
    applied: int = 0  # rows that changed a merchant's status
    unchanged: int = 0
    errors: list[RowMessage] = field(default_factory=list)
    warnings: list[RowMessage] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read(text: str, report: FeedReport) -> tuple[dict[str, str], list[tuple[int, dict[str, str]]]]:
    first = text.splitlines()[0] if text else ""
    delimiter = "\t" if "\t" in first and "," not in first else ","
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as err:  # e.g. a NUL byte or a stray carriage return
        raise CsvFormatError(f"not a readable CSV file: {err}") from err
    if not rows or not any(c.strip() for c in rows[0]):
        raise CsvFormatError("empty file: no header row")
    index: dict[int, str] = {}
    headers: dict[str, str] = {}
    for i, h in enumerate(rows[0]):
        key = _HEADER_KEYS.get(_norm(h))
        if key is None:
            if h.strip():
                report.warnings.append(RowMessage(1, h.strip(), "unknown column, ignored"))
        elif key not in headers:
            index[i], headers[key] = key, h.strip().lstrip("\ufeff")
    missing = [k for k in REQUIRED if k not in headers]
    if missing:
        names = ", ".join(f"{z} / {e}" for k, z, e, _ in COLUMNS if k in missing)
        raise CsvFormatError(f"required column missing: {names}")
    out = [(n, {index[i]: c.strip() for i, c in enumerate(cells) if i in index})
           for n, cells in enumerate(rows[1:], start=2) if any(c.strip() for c in cells)]
    return headers, out


def import_feed(conn: Connection, data: bytes | str, *, now_ms: int, actor: str,
                source: str = "upload") -> FeedReport:
    """Apply a status feed; the report names every bad row. Raises ``CsvFormatError``
    (nothing applied) when the file cannot be read at all."""
    if isinstance(data, bytes) and len(data) > MAX_FEED_BYTES:
        raise CsvFormatError(f"file larger than {MAX_FEED_BYTES // (1024 * 1024)} MB")
    report = FeedReport()
    headers, rows = _read(decode(data), report)
    for n, cells in rows:
        def bad(column: str, message: str, n: int = n) -> None:
            report.errors.append(RowMessage(n, headers.get(column, column), message))

        try:
            code = uscc.validate(cells.get("credit_code", ""))
        except uscc.CreditCodeError as err:
            bad("credit_code", str(err))
            continue
        try:
            status = parse_status(cells.get("status", ""))
        except ValueError as err:
            bad("status", str(err))
            continue
        try:
            date_ms = reg.parse_date_ms(cells.get("date", ""), field="date")
        except reg.RegistryError as err:
            bad("date", str(err).removeprefix("date: "))
            continue
        if date_ms > now_ms:
            bad("date", f"{reg.format_date(date_ms)} is in the future")
            continue
        m = conn.execute(select(merchants).where(merchants.c.credit_code == code)).first()
        if m is None:
            bad("credit_code", f"no merchant with credit code {code} in the register")
            continue
        feed_row = {"source": source, "row": n, **cells}
        _apply(conn, m, status, date_ms, cells.get("reason") or None, feed_row, report,
               now_ms=now_ms, actor=actor, n=n)
    return report


def _apply(conn: Connection, m: Any, status: RegisterStatus, date_ms: int, reason: str | None,
           feed_row: dict[str, Any], report: FeedReport, *, now_ms: int, actor: str,
           n: int) -> None:
    prev = conn.execute(select(register_status).where(
        register_status.c.merchant_id == m.id)).first()
    if prev is not None and date_ms < prev.status_date_ms:
        report.warnings.append(RowMessage(n, "date", (
            f"older than the status of {reg.format_date(prev.status_date_ms)} already "
            "applied: skipped")))
        return
    if prev is not None and prev.register_status == status and prev.status_date_ms == date_ms:
        report.unchanged += 1
        return
    held = prev.held_status if prev is not None else None
    new_status = m.status
    if status in (RegisterStatus.CANCELLED, RegisterStatus.REVOKED):
        new_status = reg.MerchantStatus.DELISTED.value
    elif status is RegisterStatus.ABNORMAL:
        new_status = reg.MerchantStatus.SUSPENDED.value
    elif prev is not None and prev.register_status != RegisterStatus.NORMAL:
        new_status = held or reg.MerchantStatus.NORMAL.value  # restore what the feed changed
        held = None
    if status is not RegisterStatus.NORMAL and held is None:
        held = m.status if m.status not in ("suspended", "delisted") else "normal"
    values = {"register_status": status.value, "status_date_ms": date_ms, "reason": reason,
              "held_status": held, "updated_ms": now_ms}
    if prev is None:
        conn.execute(register_status.insert().values(merchant_id=m.id, **values))
    else:
        conn.execute(register_status.update().where(register_status.c.merchant_id == m.id)
                     .values(**values))
    why = f"{TEXT[status]}（企业登记信息 {reg.format_date(date_ms)}）" + (
        f"：{reason}" if reason else "")
    if new_status != m.status:
        reg.set_merchant_status(conn, int(m.id), status=new_status, list_status=None,
                                reason=why, now_ms=now_ms)
        webhooks.enqueue(conn, webhooks.Event.MERCHANT_STATUS, {
            "merchant_id": int(m.id), "status": new_status, "old_status": m.status,
            "register_status": status.value, "date_ms": date_ms, "reason": why},
            now_ms=now_ms)
    audit(conn, actor=actor, action="register-status.change", subject=f"merchant:{m.id}",
          merchant_id=int(m.id), now_ms=now_ms,
          detail={"feed_row": feed_row, "register_status": status.value,
                  "old_status": m.status, "new_status": new_status})
    report.applied += 1


# -- the watched folder --------------------------------------------------------------------

def watch_once(engine: Engine, folder: str | Path, *, now_ms: int) -> list[tuple[str, FeedReport]]:
    """Import every ``*.csv`` in ``folder`` once: each file in its own transaction, then
    moved to ``done/`` (or ``failed/`` when it could not be read) beside its report
    ``<name>.result.json``."""
    base = Path(folder)
    out: list[tuple[str, FeedReport]] = []
    for path in sorted(base.glob("*.csv")):
        target = base / "done"
        result: dict[str, Any]
        try:
            with engine.begin() as conn:
                rep = import_feed(conn, path.read_bytes(), now_ms=now_ms, actor="status-feed",
                                  source=path.name)
            result = rep.as_dict()
            out.append((path.name, rep))
        except CsvFormatError as err:
            target, result = base / "failed", {"error": str(err)}
        target.mkdir(exist_ok=True)
        stamp = reg.format_date(now_ms).replace("-", "")
        dest = target / f"{path.stem}.{stamp}.{now_ms}{path.suffix}"
        shutil.move(str(path), dest)
        (target / f"{dest.name}.result.json").write_text(
            json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
        log.info("status feed %s: %s", path.name, result)
    return out
