"""Monthly periods of the big tables: partitions (PostgreSQL), exports, retention (issue 17).

One module (about 440 lines) on purpose: creating, exporting, verifying and dropping a
period are one procedure whose steps must agree on the same bounds and names.

A *period* is one calendar month in China Standard Time (UTC+8, no daylight saving), over the
table's time column: ``ts_ms`` (device time) for ``sales`` and ``events``, ``minute_ms`` for
``rollups``. ``month_bounds("2025-01")`` is [2025-01-01 00:00 CST, 2025-02-01 00:00 CST) in ms.

On PostgreSQL a table may be declaratively partitioned by range of that column (migration 0006
does it for ``rollups``, 0007 for ``sales`` and ``events``): one partition per month,
``scalegw_partitions.{table}_pYYYYMM``, and
a ``{table}_default`` partition that catches rows of months without one (a late or
future-dated row is stored, never refused). Partitions live in their own schema so Alembic's
autogenerate, which compares the default schema with the code, never proposes to drop them.
:func:`ensure_partitions` creates the months ahead (the retention thread calls it), moving any
rows the default partition holds for a new month into it.

Exactly-once on a partitioned ``sales`` or ``events``: PostgreSQL allows no unique
constraint without the partition key, so the ingest's key ``(device, seq)`` lives in a small
unpartitioned *key table* beside it, ``scalegw_partitions.{table}_keys (device, seq, ts_ms)``.
The ingest inserts the batch's keys there ``ON CONFLICT DO NOTHING`` and stores only the rows
whose key was new, in one statement (``gateway_server.store.bulk.insert_once``); a key
outlives its row until the row is retired and ``event_max_age_s`` refuses a redelivery of it
(:func:`prune_keys`).

Retiring a period past its retention (:func:`retire_period`) is: export the period's rows as
gzip JSON lines with a ``sha256sum``-format checksum file (:func:`export_period`), verify the
file (:func:`verify_export`: checksum, then every line decompressed and parsed), then, in one
transaction, compare the export's content with the rows about to go and drop them
(:func:`drop_period`): the partition (DETACH + DROP) where the table is partitioned, a
``DELETE`` of the month's rows elsewhere (SQLite; tables not partitioned). Any mismatch —
a tampered or truncated file, a row that arrived or changed after the export — raises
:class:`ExportMismatch` and nothing is dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    Table,
    UniqueConstraint,
    and_,
    func,
    select,
    text,
)
from sqlalchemy.schema import CreateIndex

from gateway_server.store.tables import events, rollups, sales

log = logging.getLogger(__name__)

CST = timezone(timedelta(hours=8), "CST")
SCHEMA = "scalegw_partitions"

#: table → (its time column, its row order in an export)
TABLES: dict[str, tuple[Table, str, tuple[str, ...]]] = {
    "sales": (sales, "ts_ms", ("id",)),
    "events": (events, "ts_ms", ("id",)),
    "rollups": (rollups, "minute_ms", ("device", "minute_ms")),
}

#: tables whose exactly-once key ``(device, seq)`` moves to a key table when partitioned
KEYED = ("sales", "events")

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class ExportMismatch(Exception):
    """An export does not verify, or does not hold exactly the rows of its period."""


# -- months ------------------------------------------------------------------------------------

def parse_month(month: str) -> tuple[int, int]:
    m = _MONTH.match(month)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"month must be YYYY-MM, not {month!r}")
    return int(m.group(1)), int(m.group(2))


def add_months(month: str, n: int) -> str:
    y, m = parse_month(month)
    k = y * 12 + (m - 1) + n
    return f"{k // 12:04d}-{k % 12 + 1:02d}"


def month_bounds(month: str) -> tuple[int, int]:
    """[start, end) of the CST calendar month in epoch milliseconds."""
    y, m = parse_month(month)
    start = datetime(y, m, 1, tzinfo=CST)
    ny, nm = parse_month(add_months(month, 1))
    end = datetime(ny, nm, 1, tzinfo=CST)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def month_of(ms: int) -> str:
    d = datetime.fromtimestamp(ms / 1000, tz=CST)
    return f"{d.year:04d}-{d.month:02d}"


def retention_start(now_ms: int, retention_months: int) -> tuple[str, int]:
    """The first month a retention of ``retention_months`` keeps (the current CST month
    and that many before it), and its start in ms: older rows may be retired."""
    keep_from = add_months(month_of(now_ms), -retention_months)
    return keep_from, month_bounds(keep_from)[0]


def partition_name(table: str, month: str) -> str:
    y, m = parse_month(month)
    return f"{table}_p{y:04d}{m:02d}"


def _spec(table: str) -> tuple[Table, str, tuple[str, ...]]:
    if table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}, not {table!r}")
    return TABLES[table]


# -- partitions (PostgreSQL) -------------------------------------------------------------------

def is_partitioned(conn: Connection, table: str) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    return bool(conn.execute(text(
        "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = :t AND c.relnamespace = current_schema()::regnamespace"),
        {"t": table}).first())


def partitions(conn: Connection, table: str) -> dict[str, str]:
    """month → qualified name of the table's monthly partitions (not the default one)."""
    if not is_partitioned(conn, table):
        return {}
    rows = conn.execute(text(
        "SELECT n.nspname, c.relname FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = :t AND p.relnamespace = current_schema()::regnamespace"),
        {"t": table}).all()
    out = {}
    pat = re.compile(rf"^{re.escape(table)}_p(\d{{4}})(\d{{2}})$")
    for nsp, rel in rows:
        m = pat.match(rel)
        if m:
            out[f"{m.group(1)}-{m.group(2)}"] = f'"{nsp}"."{rel}"'
    return out


def ensure_partitions(conn: Connection, table: str, months: Iterable[str]) -> list[str]:
    """Create the monthly partitions that are missing; the months created.

    Rows of such a month already in the default partition are moved into the new one in
    the same transaction (PostgreSQL refuses to attach a range the default partition holds
    rows of). A no-op on a table that is not partitioned.
    """
    if not is_partitioned(conn, table):
        return []
    _, col, _ = _spec(table)
    have = partitions(conn, table)
    made = []
    default = f'"{SCHEMA}"."{table}_default"'
    has_default = conn.execute(text("SELECT to_regclass(:n)"), {"n": default}).scalar()
    for month in sorted(set(months)):
        if month in have:
            continue
        lo, hi = month_bounds(month)
        part = f'"{SCHEMA}"."{partition_name(table, month)}"'
        conn.exec_driver_sql(
            f"CREATE TABLE {part} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        if has_default:
            conn.exec_driver_sql(
                f"WITH moved AS (DELETE FROM {default} WHERE {col} >= {lo} AND {col} < {hi} "
                f"RETURNING *) INSERT INTO {part} SELECT * FROM moved")
        conn.exec_driver_sql(
            f"ALTER TABLE {table} ATTACH PARTITION {part} FOR VALUES FROM ({lo}) TO ({hi})")
        made.append(month)
    if made:
        log.info("%s: created partition(s) for %s", table, ", ".join(made))
    return made


def keys_table(table: str) -> str:
    """The qualified name of a partitioned table's key table (``KEYED`` tables only)."""
    return f'"{SCHEMA}"."{table}_keys"'


_GATES: WeakKeyDictionary[Engine, dict[str, str | None]] = WeakKeyDictionary()


def exactly_once_gate(conn: Connection, table: str) -> str | None:
    """The key table guarding ``table``'s ``(device, seq)``, or ``None`` where the table's
    own unique constraint does (SQLite; PostgreSQL before migration 0007 or made by
    ``create_all``). Looked up once per engine; :func:`forget_gates` after a schema change."""
    if conn.dialect.name != "postgresql":
        return None
    known = _GATES.setdefault(conn.engine, {})
    if table not in known:
        name = keys_table(table)
        found = conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar()
        known[table] = name if found is not None else None
    return known[table]


def forget_gates(engine: Engine) -> None:
    _GATES.pop(engine, None)


def autogenerate_filter(conn: Connection) -> Any:
    """Alembic's ``include_object`` for this database: the ``(device, seq)`` unique
    constraint of a table whose key table guards it instead is not missing."""
    guarded = {t for t in KEYED if exactly_once_gate(conn, t)}

    def include(obj: Any, name: str | None, type_: str, reflected: bool,
                compare_to: Any) -> bool:
        return not (type_ == "unique_constraint" and obj.table.name in guarded
                    and name == f"uq_{obj.table.name}_device_seq")
    return include


def partition_table(conn: Connection, table: str, *, months_ahead: int, now_ms: int) -> None:
    """Turn ``table`` into a table partitioned by month (PostgreSQL), keeping every row.

    All in the caller's transaction: the old table is renamed; a partitioned one with the
    same columns and defaults takes its name, with the primary key widened by the time
    column where it lacks it (``sales``, ``events``: ``(id, ts_ms)``; their ``id`` sequence
    moves to it) and the code's indexes; the partitions of every month the rows span (up to
    ``months_ahead`` after the current one) and a default one are created; the rows are
    copied; the old table is dropped. ``KEYED`` tables get their key table, filled from
    the rows, in place of their ``(device, seq)`` unique constraint.
    """
    tbl, col, key = _spec(table)
    old = f"{table}_unpartitioned"
    pk = key if col in key else (*key, col)
    conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {old}")
    conn.exec_driver_sql(f"ALTER TABLE {old} RENAME CONSTRAINT {table}_pkey TO {old}_pkey")
    conn.exec_driver_sql(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS) "
                         f"PARTITION BY RANGE ({col})")
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey "
                         f"PRIMARY KEY ({', '.join(pk)})")
    conn.exec_driver_sql(f'CREATE TABLE "{SCHEMA}"."{table}_default" PARTITION OF {table} DEFAULT')
    lo = conn.exec_driver_sql(f"SELECT min({col}) FROM {old}").scalar()
    current = month_of(now_ms)
    first = month_of(lo) if lo is not None and month_of(lo) < current else current
    ensure_partitions(conn, table, _months(first, add_months(current, months_ahead)))
    conn.exec_driver_sql(f"INSERT INTO {table} SELECT * FROM {old}")
    if table in KEYED:
        keys = keys_table(table)
        conn.exec_driver_sql(f"CREATE TABLE {keys} (device VARCHAR(64) NOT NULL, "
                             "seq BIGINT NOT NULL, ts_ms BIGINT NOT NULL, "
                             "PRIMARY KEY (device, seq))")
        conn.exec_driver_sql(f"CREATE INDEX {table}_keys_ts ON {keys} (ts_ms)")
        conn.exec_driver_sql(f"INSERT INTO {keys} SELECT device, seq, ts_ms FROM {old}")
    _adopt_sequence(conn, old, table)
    conn.exec_driver_sql(f"DROP TABLE {old}")
    for index in tbl.indexes:  # on the parent: every partition gets its own
        conn.execute(CreateIndex(index))
    forget_gates(conn.engine)


def _adopt_sequence(conn: Connection, old: str, new: str) -> None:
    """``new.id`` takes over the sequence of ``old.id`` (so dropping ``old`` keeps it)."""
    has_id = conn.execute(text(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = :t AND column_name = 'id'"), {"t": old}).first()
    seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"),
                       {"t": old}).scalar() if has_id else None
    if seq:
        conn.exec_driver_sql(f"ALTER SEQUENCE {seq} OWNED BY {new}.id")


def unpartition_table(conn: Connection, table: str) -> None:
    """The reverse of :func:`partition_table` (a migration's downgrade): a plain table with
    the code's primary key, unique constraints and indexes; the key table dropped."""
    tbl, _, key = _spec(table)
    tmp = f"{table}_plain"
    conn.exec_driver_sql(f"CREATE TABLE {tmp} (LIKE {table} INCLUDING DEFAULTS)")
    conn.exec_driver_sql(f"INSERT INTO {tmp} SELECT * FROM {table}")
    _adopt_sequence(conn, table, tmp)
    conn.exec_driver_sql(f"DROP TABLE {table}")  # its partitions go with it
    conn.exec_driver_sql(f"ALTER TABLE {tmp} RENAME TO {table}")
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey "
                         f"PRIMARY KEY ({', '.join(key)})")
    for c in tbl.constraints:
        if isinstance(c, UniqueConstraint):
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD CONSTRAINT {c.name} "
                                 f"UNIQUE ({', '.join(col.name for col in c.columns)})")
    for index in tbl.indexes:
        conn.execute(CreateIndex(index))
    if table in KEYED:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {keys_table(table)}")
    forget_gates(conn.engine)


def prune_keys(engine: Engine, table: str, *, before_ms: int) -> int:
    """Delete the exactly-once keys of rows that are gone (retired), older than
    ``before_ms``; the keys deleted. Month by month, from the oldest key: a month whose
    table still holds a row (its retirement failed, or is still to come) keeps every key,
    so a redelivery of a stored row is never taken for new."""
    deleted = 0
    with engine.begin() as conn:
        keys = exactly_once_gate(conn, table)
        if keys is None:
            return 0
        _, col, _ = _spec(table)
        at = conn.exec_driver_sql(f"SELECT min(ts_ms) FROM {keys}").scalar()
        while at is not None and at < before_ms:
            month = month_of(at)
            lo, hi = month_bounds(month)
            hi = min(hi, before_ms)
            held = conn.exec_driver_sql(
                f"SELECT 1 FROM {table} WHERE {col} >= {lo} AND {col} < {hi} LIMIT 1").first()
            if held is None:
                n = conn.exec_driver_sql(
                    f"DELETE FROM {keys} WHERE ts_ms >= {lo} AND ts_ms < {hi}").rowcount
                deleted += n
                if n:
                    log.info("%s: %d exactly-once key(s) of %s pruned", table, n, month)
            at = conn.exec_driver_sql(
                f"SELECT min(ts_ms) FROM {keys} WHERE ts_ms >= {hi}").scalar()
    return deleted


def _months(first: str, last: str) -> Iterator[str]:
    m = first
    while m <= last:
        yield m
        m = add_months(m, 1)


def manage_partitions(engine: Engine, *, months_ahead: int, now_ms: int) -> list[str]:
    """Create the current and the next ``months_ahead`` months' partitions of every
    partitioned table; ``table:month`` of each one created."""
    made: list[str] = []
    current = month_of(now_ms)
    with engine.begin() as conn:
        if conn.dialect.name != "postgresql":
            return made
        for table in TABLES:
            made += [f"{table}:{m}" for m in ensure_partitions(
                conn, table, _months(current, add_months(current, months_ahead)))]
    return made


# -- export ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Export:
    path: Path  # the .jsonl.gz file
    checksum_path: Path  # sha256sum format: "<hex>  <file name>"
    rows: int
    file_sha256: str  # of the gzip file
    content_sha256: str  # of the uncompressed JSON lines


def _line(row: Any) -> bytes:
    return (json.dumps(dict(row._mapping), sort_keys=True, separators=(",", ":"),
                       ensure_ascii=False) + "\n").encode()


def _period_rows(conn: Connection, table: str, month: str, *,
                 source: Any = None) -> Iterator[bytes]:
    tbl, col, key = _spec(table)
    lo, hi = month_bounds(month)
    src = tbl if source is None else source
    c = src.c[col]
    q = (select(src).where(and_(c >= lo, c < hi)).order_by(*(src.c[k] for k in key))
         .execution_options(yield_per=5000))
    for row in conn.execute(q):
        yield _line(row)


def _fsync_write(path: Path, data_iter: Iterable[bytes], *, gz: bool) -> None:
    with open(path, "wb") as raw:
        if gz:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
                for chunk in data_iter:
                    f.write(chunk)
        else:
            for chunk in data_iter:
                raw.write(chunk)
        raw.flush()
        os.fsync(raw.fileno())


def _free_name(out_dir: Path, table: str, month: str) -> Path:
    base = f"{table}-{month}"
    path = out_dir / f"{base}.jsonl.gz"
    n = 1
    while path.exists() or Path(f"{path}.sha256").exists():  # never overwrite an export
        n += 1
        path = out_dir / f"{base}.{n}.jsonl.gz"
    return path


def export_period(engine: Engine, table: str, month: str, out_dir: str | Path) -> Export:
    """Write the period's rows to ``DIR/{table}-{month}.jsonl.gz`` (``.2``, … if taken) and
    its checksum file, then verify what is on disk; :class:`ExportMismatch` if it does not."""
    _spec(table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = _free_name(out, table, month)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    content = hashlib.sha256()
    rows = 0

    def lines() -> Iterator[bytes]:
        nonlocal rows
        with engine.connect() as conn:
            for line in _period_rows(conn, table, month):
                content.update(line)
                rows += 1
                yield line

    _fsync_write(tmp, lines(), gz=True)
    file_sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    while True:  # a hard link never replaces a file another export took meanwhile
        try:
            os.link(tmp, path)
            break
        except FileExistsError:
            path = _free_name(out, table, month)
    tmp.unlink()
    ck = Path(f"{path}.sha256")
    ck_tmp = Path(f"{ck}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    _fsync_write(ck_tmp, [f"{file_sha}  {path.name}\n".encode()], gz=False)
    os.replace(ck_tmp, ck)
    dfd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    exp = verify_export(path)
    if exp.rows != rows or exp.content_sha256 != content.hexdigest():
        raise ExportMismatch(f"{path}: read back {exp.rows} row(s), wrote {rows}")
    log.info("exported %s %s: %d row(s) to %s (sha256 %s)", table, month, rows, path, file_sha)
    return exp


def verify_export(path: str | Path) -> Export:
    """Check the file against its ``.sha256`` file and read every line back."""
    path = Path(path)
    ck = Path(f"{path}.sha256")
    try:
        want, name = ck.read_text().split()
    except (OSError, ValueError) as err:
        raise ExportMismatch(f"{ck}: no readable checksum ({err})") from err
    if name != path.name:
        raise ExportMismatch(f"{ck} is the checksum of {name}, not {path.name}")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != want:
        raise ExportMismatch(f"{path}: sha256 {h.hexdigest()} differs from {want} in {ck.name}")
    content = hashlib.sha256()
    rows = 0
    try:
        with gzip.open(path, "rb") as f:
            for line in f:
                json.loads(line)
                content.update(line)
                rows += 1
    except (OSError, EOFError, ValueError) as err:
        raise ExportMismatch(f"{path}: unreadable ({err})") from err
    return Export(path, ck, rows, want, content.hexdigest())


# -- drop ----------------------------------------------------------------------------------------

def _digest(lines: Iterable[bytes]) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for line in lines:
        h.update(line)
        n += 1
    return n, h.hexdigest()


def drop_period(engine: Engine, table: str, month: str, export: str | Path) -> int:
    """Drop the period's rows if ``export`` verifies and holds exactly them; the rows dropped.

    One transaction. Partitioned (PostgreSQL): the month's partition is locked against
    writers (``SHARE``: only writers of that month wait; the rest of the table is free),
    compared row for row with the export, then detached and dropped; the table itself is
    locked only for the DETACH and DROP, given up after ``lock_timeout`` (10 s) rather than
    stall the ingest behind a long query (the next run tries again). Otherwise: the month's
    rows are compared and deleted under one snapshot (REPEATABLE READ on PostgreSQL;
    SQLite's single writer), so a row inserted meanwhile is neither compared nor deleted: it
    stays for the next run.
    """
    tbl, col, _ = _spec(table)
    exp = verify_export(export)
    lo, hi = month_bounds(month)
    with engine.connect() as probe:
        part = partitions(probe, table).get(month)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql" and part is None:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            if conn.dialect.name == "sqlite":  # a write first: the lock, then one snapshot
                conn.exec_driver_sql(f"DELETE FROM {table} WHERE {col} < {lo} AND {col} >= {hi}")
            if part is not None:
                # READ COMMITTED: the compare, after the lock, sees every committed row of
                # the month, and none can come or change until the commit
                conn.exec_driver_sql(f"LOCK TABLE {part} IN SHARE MODE")
                schema, name = (s.strip('"') for s in part.split("."))
                src = Table(name, MetaData(), *(Column(c.name, c.type) for c in tbl.columns),
                            schema=schema)
                n, digest = _digest(_period_rows(conn, table, month, source=src))
                if (n, digest) != (exp.rows, exp.content_sha256):
                    raise ExportMismatch(f"{exp.path}: {exp.rows} row(s) exported, partition "
                                         f"{part} holds {n}, or they differ: not dropped")
                conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
                conn.exec_driver_sql(f"ALTER TABLE {table} DETACH PARTITION {part}")
                conn.exec_driver_sql(f"DROP TABLE {part}")
                log.info("dropped partition %s (%d row(s), export %s)", part, n, exp.path)
                return n
            n, digest = _digest(_period_rows(conn, table, month))
            if (n, digest) != (exp.rows, exp.content_sha256):
                raise ExportMismatch(f"{exp.path}: {exp.rows} row(s) exported, the table holds "
                                     f"{n} for {month}, or they differ: nothing deleted")
            c = tbl.c[col]
            deleted = conn.execute(tbl.delete().where(and_(c >= lo, c < hi))).rowcount
            if deleted != n:
                raise ExportMismatch(f"{table} {month}: would delete {deleted} row(s), "
                                     f"exported {n}: nothing deleted")
            log.info("deleted %s %s: %d row(s) (export %s)", table, month, n, exp.path)
            return n


def retire_period(engine: Engine, table: str, month: str, out_dir: str | Path) -> Export:
    """Export, verify, then drop one closed period. Raises (and drops nothing) on failure."""
    exp = export_period(engine, table, month, out_dir)
    drop_period(engine, table, month, exp.path)
    return exp


def expired_months(engine: Engine, table: str, *, retention_months: int,
                   now_ms: int) -> list[str]:
    """Closed months whose end lies before the retention: their rows may be retired.

    The current CST month and the ``retention_months`` before it are kept.
    """
    if retention_months <= 0:
        return []
    tbl, col, _ = _spec(table)
    keep_from, cutoff = retention_start(now_ms, retention_months)
    with engine.connect() as conn:
        parts = partitions(conn, table)
        months = {m for m in parts if m < keep_from}
        c = tbl.c[col]
        # rows outside a monthly partition (SQLite, an unpartitioned table, the default one)
        lo = conn.execute(select(func.min(c)).where(c < cutoff)).scalar()
        if lo is not None:
            for m in _months(month_of(lo), add_months(keep_from, -1)):
                a, b = month_bounds(m)
                if m in parts or conn.execute(select(c).where(c >= a, c < b).limit(1)).first():
                    months.add(m)
    return sorted(months)
