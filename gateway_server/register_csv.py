"""CSV import and export of a market's scale register (登记造册, 集贸市场计量监督管理办法).

One row per scale with the merchant it is bound to. Rules:

* Headers in zh-CN or English (``COLUMNS``), in any order; ``device`` and
  ``merchant_name`` are required columns. A column that is absent leaves that field
  as it is; a column that is present but empty clears it (so export → import is exact).
* Text is UTF-8 with or without a BOM (Excel writes one), else GB18030 (older Excel
  on a zh-CN Windows); comma-separated, or tab-separated when the header has tabs.
* Row numbers are spreadsheet rows: the header is row 1, the first scale row 2.
* Every row is checked on its own; a bad row is reported (row, column, message) and
  skipped, and never stops the good ones. All checks of a row run before any write.
* Idempotent: importing the same file twice changes nothing the second time. A
  device whose merchant changed is re-bound from the import time (``now_ms``).
* A merchant is found by its 统一社会信用代码 when the row has one, else by (name, stall).
* Export writes the same columns (zh headers by default) with masses as ``"15 kg"`` and
  dates as ``YYYY-MM-DD`` (China Standard Time); the device key only when asked.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from gateway_server import registry as reg
from gateway_server import uscc
from gateway_server.tables import merchants, scales
from weighing.errors import GatewayError
from weighing.metrology import AccuracyClass as MetrologyClass
from weighing.metrology import MetrologyError, check_scale

# key, zh-CN header, English header, further accepted spellings
COLUMNS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("market", "市场编号", "market", ("market_id", "市场")),
    ("merchant_name", "商户名称", "merchant_name", ("merchant", "商户", "经营者")),
    ("credit_code", "统一社会信用代码", "credit_code", ("uscc", "信用代码")),
    ("stall_no", "摊位号", "stall_no", ("stall", "摊位")),
    ("categories", "经营类别", "categories", ("category", "经营范围")),
    ("device", "设备编号", "device", ("device_id", "设备号", "秤编号")),
    ("model", "型号", "model", ("规格型号",)),
    ("serial", "出厂编号", "serial", ("serial_no", "出厂号")),
    ("max", "最大秤量", "max", ("max_capacity", "最大称量")),
    ("e", "分度值", "e", ("检定分度值", "scale_interval")),
    ("accuracy_class", "准确度等级", "accuracy_class", ("class", "准确度")),
    ("role", "用途", "role", ("类型",)),
    ("profile", "设备配置", "profile", ("协议配置",)),
    ("cert_no", "检定证书编号", "cert_no", ("certificate", "证书编号")),
    ("verified_on", "检定日期", "verified_on", ("verification_date",)),
    ("due_on", "有效期至", "due_on", ("due_date", "检定有效期至")),
    ("key", "设备密钥", "key", ("key_hex", "密钥")),
)
REQUIRED = ("device", "merchant_name")


def _norm(header: str) -> str:
    return "".join(ch for ch in header.strip().lstrip("\ufeff").lower() if ch not in " _-")


_HEADER_KEYS = {_norm(h): key for key, zh, en, more in COLUMNS for h in (zh, en, *more)}


class CsvFormatError(GatewayError, ValueError):
    """The file as a whole cannot be read (encoding, no header, required column missing)."""


@dataclass(frozen=True)
class RowError:
    row: int
    column: str
    message: str


@dataclass
class ImportReport:
    imported: int = 0  # scales new to the register
    updated: int = 0  # rows that changed a scale, its merchant or its binding
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    warnings: list[RowError] = field(default_factory=list)


def decode(data: bytes | str) -> str:
    """UTF-8 (BOM or not), else GB18030."""
    if isinstance(data, str):
        return data.lstrip("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError as err:
        raise CsvFormatError("the file is neither UTF-8 nor GB18030 text") from err


@dataclass
class _Row:
    n: int
    cells: dict[str, str]  # column key → stripped cell text (present columns only)
    headers: dict[str, str]  # column key → header as written in the file
    merchant: dict[str, Any] = field(default_factory=dict)
    scale: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    errors: list[RowError] = field(default_factory=list)

    def error(self, column: str, message: str) -> None:
        self.errors.append(RowError(self.n, self.headers.get(column, column), message))


def _parse_row(r: _Row, market_id: str) -> None:
    c = r.cells
    if c.get("market") and c["market"] != market_id:
        r.error("market", f"row is for market {c['market']!r}, importing into {market_id!r}")
    device = c.get("device", "")
    if not device:
        r.error("device", "required")
    elif not reg.ID_RE.match(device):
        r.error("device", f"{device!r} is not a device id (A-Z a-z 0-9 _ . -, max 64)")
    r.scale["device"] = device
    r.merchant["name"] = c.get("merchant_name", "")
    if c.get("credit_code"):
        try:
            r.merchant["credit_code"] = uscc.validate(c["credit_code"])
        except uscc.CreditCodeError as err:
            r.error("credit_code", str(err))
    if "stall_no" in c:
        r.merchant["stall_no"] = c["stall_no"] or None
    if "categories" in c:
        r.merchant["categories"] = ",".join(reg.parse_categories(c["categories"]))
    for key in ("model", "serial", "cert_no", "profile"):
        if key in c:
            r.scale[key] = c[key] or None
    parsers: list[tuple[str, str, Any]] = [
        ("max", "max_mg", reg.parse_mass_mg), ("e", "e_mg", reg.parse_mass_mg),
        ("verified_on", "verified_on_ms", reg.parse_date_ms),
        ("due_on", "due_on_ms", reg.parse_date_ms),
        ("accuracy_class", "accuracy_class", lambda v, field: reg.parse_class(v).value),
        ("role", "role", lambda v, field: reg.parse_role(v).value),
    ]
    for col, key, parse in parsers:
        if col not in c:
            continue
        if not c[col]:
            r.scale[key] = "trade" if key == "role" else None
            continue
        try:
            r.scale[key] = parse(c[col], field=col)
        except reg.RegistryError as err:
            r.error(col, str(err).split(": ", 1)[-1])
    if c.get("key"):
        try:
            r.key = reg.parse_key_hex(c["key"])
        except reg.RegistryError as err:
            r.error("key", str(err).split(": ", 1)[-1])
    _check_class(r)


def _check_class(r: _Row) -> None:
    mx, e, cls = r.scale.get("max_mg"), r.scale.get("e_mg"), r.scale.get("accuracy_class")
    if mx and e and cls in ("III", "IIII"):
        try:
            check_scale(mx, e, MetrologyClass(cls))
        except MetrologyError as err:
            r.error("max", f"Max/e do not fit class {cls} (JJG 539 / OIML R76-1 Table 3): "
                    + "; ".join(getattr(err, "reasons", [str(err)])))


def _read(text: str) -> tuple[dict[str, str], list[_Row], list[RowError], list[RowError]]:
    lines = text.splitlines()
    first = lines[0] if lines else ""
    delimiter = "\t" if "\t" in first and "," not in first else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise CsvFormatError("empty file: no header row")
    errors: list[RowError] = []
    warnings: list[RowError] = []
    index: dict[int, str] = {}
    headers: dict[str, str] = {}
    for i, h in enumerate(rows[0]):
        key = _HEADER_KEYS.get(_norm(h))
        if key is None:
            if h.strip():
                warnings.append(RowError(1, h.strip(), "unknown column, ignored"))
        elif key in headers:
            errors.append(RowError(1, h.strip(), f"duplicate column (also {headers[key]!r})"))
        else:
            index[i] = key
            headers[key] = h.strip().lstrip("\ufeff")
    for key in REQUIRED:
        if key not in headers:
            zh, en = next((z, e) for k, z, e, _ in COLUMNS if k == key)
            errors.append(RowError(1, zh, f"required column missing ({zh} / {en})"))
    out: list[_Row] = []
    for n, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        row = _Row(n, {index[i]: c.strip() for i, c in enumerate(cells) if i in index}, headers)
        if len(cells) > len(rows[0]) and any(c.strip() for c in cells[len(rows[0]):]):
            row.error("device", f"row has {len(cells)} cells, the header {len(rows[0])}")
        out.append(row)
    return headers, out, errors, warnings


def import_register(conn: Connection, market_id: str, data: bytes | str, *,
                    now_ms: int) -> ImportReport:
    """Import a register file into ``market_id`` (which must exist); see the module rules."""
    reg.get_market(conn, market_id)
    _, rows, file_errors, warnings = _read(decode(data))
    report = ImportReport(errors=file_errors, warnings=warnings)
    if file_errors:
        return report
    seen_device: dict[str, int] = {}
    seen_merchant: dict[tuple[str, ...], tuple[int, dict[str, Any]]] = {}
    for r in rows:
        _parse_row(r, market_id)
        dev = r.scale["device"]
        if dev and dev in seen_device:
            r.error("device", f"device {dev} is also on row {seen_device[dev]}")
        mkey = _merchant_key(r.merchant)
        if mkey is not None and not r.errors:
            if mkey in seen_merchant and seen_merchant[mkey][1] != r.merchant:
                r.error("merchant_name", "same merchant as row "
                        f"{seen_merchant[mkey][0]} but with different details")
            seen_merchant.setdefault(mkey, (r.n, r.merchant))
        if not r.errors:
            seen_device[dev] = r.n
            _apply(conn, r, market_id, now_ms, report)
        report.errors.extend(r.errors)
    report.errors.sort(key=lambda e: e.row)
    return report


def _merchant_key(m: dict[str, Any]) -> tuple[str, ...] | None:
    if not m.get("name"):
        return None
    if m.get("credit_code"):
        return ("code", m["credit_code"])
    return ("name", m["name"], m.get("stall_no") or "")


def _find_merchant(conn: Connection, r: _Row, market_id: str) -> dict[str, Any] | None:
    m = r.merchant
    if m.get("credit_code"):
        row = conn.execute(select(merchants).where(
            merchants.c.credit_code == m["credit_code"])).first()
        if row is not None:
            if row.market_id != market_id:
                r.error("credit_code", f"this code is merchant {row.id} of market {row.market_id}")
                return None
            return dict(row._mapping)
    q = select(merchants).where(merchants.c.market_id == market_id, merchants.c.name == m["name"])
    q = q.where(merchants.c.stall_no == m["stall_no"]) if m.get("stall_no") else \
        q.where(merchants.c.stall_no.is_(None))
    for row in conn.execute(q.order_by(merchants.c.id)):
        if m.get("credit_code") and row.credit_code:
            r.error("credit_code", f"{m['name']} at stall {m.get('stall_no') or '-'} is merchant "
                    f"{row.id} with credit code {row.credit_code}")
            return None
        return dict(row._mapping)
    return None


def _apply(conn: Connection, r: _Row, market_id: str, now_ms: int, report: ImportReport) -> None:
    device = r.scale["device"]
    existing = conn.execute(select(scales).where(scales.c.device == device)).first()
    if existing is not None and existing.registered and existing.market != market_id:
        r.error("device", f"device {device} is registered in market {existing.market}")
        return
    merchant = _find_merchant(conn, r, market_id) if r.merchant["name"] else None
    if r.errors:
        return
    changed = False
    merchant_id: int | None = None
    if r.merchant["name"]:
        if merchant is None:
            merchant_id = reg.create_merchant(conn, market_id, now_ms=now_ms, **{
                **r.merchant, "categories": r.merchant.get("categories", "")})["id"]
            changed = True
        else:
            merchant_id = merchant["id"]
            diff = {k: v for k, v in r.merchant.items() if merchant.get(k) != v}
            if diff:
                reg.update_merchant(conn, merchant_id, diff, now_ms=now_ms)
                changed = True
    fields = {k: v for k, v in r.scale.items() if k != "device"}
    if existing is None or not existing.registered:
        reg.register_scale(conn, device, market_id=market_id, now_ms=now_ms, key_hex=r.key,
                           **fields)
        report.imported += 1
        reg.bind(conn, device, merchant_id, at_ms=now_ms)
        return
    old = dict(existing._mapping)
    diff = {k: v for k, v in fields.items() if old.get(k) != v}
    if diff:
        reg.update_scale(conn, device, diff)
        changed = True
    if r.key and r.key != old["key_hex"]:
        reg.rotate_key(conn, device, r.key)
        changed = True
    if reg.binding_at(conn, device, now_ms) != merchant_id:
        changed = reg.bind(conn, device, merchant_id, at_ms=now_ms) or changed
    if changed:
        report.updated += 1
    else:
        report.unchanged += 1


def export_register(conn: Connection, market_id: str, *, now_ms: int, lang: str = "zh",
                    include_keys: bool = False) -> str:
    """The register of ``market_id`` as CSV text (no BOM; the caller adds one for Excel)."""
    reg.get_market(conn, market_id)
    cols = [c for c in COLUMNS if include_keys or c[0] != "key"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([zh if lang == "zh" else en for _, zh, en, _ in cols])
    rows, _ = reg.list_register(conn, market_id=market_id, limit=1_000_000)
    bound = reg.current_bindings(conn, (s["device"] for s in rows), now_ms)
    cache: dict[int, dict[str, Any]] = {}
    sep = "、" if lang == "zh" else ", "
    for s in rows:
        mid = bound.get(s["device"])
        m = cache.setdefault(mid, reg.get_merchant(conn, mid)) if mid is not None else {}
        values = {
            "market": market_id, "merchant_name": m.get("name"),
            "credit_code": m.get("credit_code"), "stall_no": m.get("stall_no"),
            "categories": sep.join(m.get("categories") or []),
            "device": s["device"], "model": s["model"], "serial": s["serial"],
            "max": reg.format_mass(s["max_mg"]) if s["max_mg"] else None,
            "e": reg.format_mass(s["e_mg"]) if s["e_mg"] else None,
            "accuracy_class": s["accuracy_class"], "role": s["role"], "profile": s["profile"],
            "cert_no": s["cert_no"],
            "verified_on": reg.format_date(s["verified_on_ms"]) if s["verified_on_ms"] else None,
            "due_on": reg.format_date(s["due_on_ms"]) if s["due_on_ms"] else None,
            "key": s["key_hex"],
        }
        w.writerow(["" if values[k] is None else values[k] for k, *_ in cols])
    return buf.getvalue()
