"""Monthly periods past retention: exported, verified, then dropped (issue 17).

On a real PostgreSQL (``rollups`` partitioned by migration 0006, ``sales`` and ``events`` by
0007, their exactly-once keys in key tables) and on SQLite (nothing partitioned, the month's
rows are deleted). A period is dropped
only if its export verifies against its checksum and holds exactly the rows that go; rows of
every other month are untouched; a tampered export, a row that arrives after the export, or
an export that cannot be written leave the period in place.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgutil import fresh_pg_database
from sqlalchemy import select, text

from gateway_server.cli import main as cli_main
from gateway_server.settings import Settings
from gateway_server.store import partitions as P
from gateway_server.store.bulk import insert_once
from gateway_server.store.database import Store
from gateway_server.store.retention import retire_once
from gateway_server.store.tables import events, rollups, sales

NOW = P.month_bounds("2026-12")[0] + 14 * 86_400_000  # 2026-12-15 CST


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store.from_url(f"sqlite:///{tmp_path}/p.db")
        s.migrate()
        yield s
        s.engine.dispose()
        return
    with fresh_pg_database() as url:
        s = Store.from_url(url)
        s.migrate()
        yield s
        s.engine.dispose()


def _sale(seq: int, ts: int) -> dict[str, object]:
    return {"device": "s-1", "market": "m1", "merchant_id": None, "seq": seq, "ts_ms": ts,
            "received_ms": ts + 5, "net_mg": 1000 + seq, "settled_mg": 1000 + seq,
            "peak_mg": 1100, "tare_mg": 0, "stable_device": True, "stable_software": True,
            "unsettled_commit": False, "duration_ms": 900, "unit_price_fen_per_kg": 1200,
            "amount_fen": 1200, "plu": "白菜", "trace_code": f"T-{seq}", "signed": True}


def _event(seq: int, ts: int) -> dict[str, object]:
    return {"device": "s-1", "market": "m1", "seq": seq, "kind": "zero", "ts_ms": ts,
            "received_ms": ts, "payload": '{"zero_mg": 0}'}


def _key_months(store: Store, table: str) -> dict[str, int]:
    """month → exactly-once keys held for it (PostgreSQL's key table)."""
    with store.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT ts_ms FROM {P.keys_table(table)}")).scalars().all()
    out: dict[str, int] = {}
    for ts in rows:
        out[P.month_of(ts)] = out.get(P.month_of(ts), 0) + 1
    return out


def _rollup(device: str, minute: int) -> dict[str, object]:
    return {"device": device, "minute_ms": minute, "market": "m1", "n": 60, "min_mg": 0,
            "max_mg": 5000, "sum_mg": 60 * 2500, "stable_n": 50}


# (month, sales rows, rollup rows); retention: sales 36 months (kept from 2023-12),
# rollups 24 months (kept from 2024-12)
SALES_MONTHS = {"2022-01": 3, "2023-11": 2, "2023-12": 2, "2026-12": 1}
ROLLUP_MONTHS = {"2022-01": 4, "2024-11": 2, "2024-12": 3, "2026-12": 1}


def _fill(store: Store) -> None:
    seq = 0
    with store.engine.begin() as conn:
        for month, n in SALES_MONTHS.items():
            lo, hi = P.month_bounds(month)
            for i in range(n):
                seq += 1  # the month's first and last millisecond are in it
                # as the ingest writes them (on PostgreSQL: through the key tables)
                assert insert_once(conn, sales, [_sale(seq, lo if i == 0 else hi - i)],
                                   returning=("seq",))
                assert insert_once(conn, events, [_event(1000 + seq, lo + i)],
                                   returning=("seq",))
        for month, n in ROLLUP_MONTHS.items():
            lo, hi = P.month_bounds(month)
            for i in range(n):
                minute = lo if i == 0 else hi - 60_000 * i
                conn.execute(rollups.insert().values(**_rollup(f"s-{i}", minute)))


def _rows(store: Store, table: str) -> dict[str, list[dict[str, object]]]:
    tbl, col, key = P.TABLES[table]
    out: dict[str, list[dict[str, object]]] = {}
    with store.engine.connect() as conn:
        for r in conn.execute(select(tbl).order_by(*(tbl.c[k] for k in key))):
            out.setdefault(P.month_of(r._mapping[col]), []).append(dict(r._mapping))
    return out


def _exported(path: Path) -> list[dict[str, object]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_month_bounds_are_cst_calendar_months() -> None:
    lo, hi = P.month_bounds("2025-01")
    assert lo == 1735660800000  # 2024-12-31T16:00:00Z = 2025-01-01 00:00 CST
    assert hi == P.month_bounds("2025-02")[0]
    assert P.month_of(lo) == "2025-01" and P.month_of(lo - 1) == "2024-12"
    assert P.month_of(hi - 1) == "2025-01"
    assert P.add_months("2025-01", -13) == "2023-12"
    with pytest.raises(ValueError):
        P.month_bounds("2025-13")


def test_a_period_past_retention_is_exported_verified_and_dropped(
        store: Store, tmp_path: Path) -> None:
    pg = store.engine.dialect.name == "postgresql"
    _fill(store)
    if pg:  # the old months' rows went to the default partitions; give them theirs
        with store.engine.begin() as conn:
            assert all(P.is_partitioned(conn, t) for t in ("rollups", "sales", "events"))
            assert P.ensure_partitions(conn, "rollups", ["2022-01", "2024-11", "2024-12"]) == [
                "2022-01", "2024-11", "2024-12"]
            # sales: 2023-11 stays in the default partition (dropped by DELETE, not DETACH)
            assert P.ensure_partitions(conn, "sales", ["2022-01", "2023-12"]) == [
                "2022-01", "2023-12"]
            assert conn.execute(text(
                f'SELECT count(*) FROM "{P.SCHEMA}".rollups_default')).scalar_one() == 0
            assert conn.execute(text(
                f'SELECT count(*) FROM "{P.SCHEMA}".rollups_p202201')).scalar_one() == 4
            assert conn.execute(text(
                f'SELECT count(*) FROM "{P.SCHEMA}".sales_default')).scalar_one() == 2
        assert _key_months(store, "sales") == SALES_MONTHS
    before = {t: _rows(store, t) for t in ("sales", "events", "rollups")}
    out = tmp_path / "exports"
    settings = Settings(database_url="sqlite://", retention_export_dir=str(out),
                        sales_retention_months=36, events_retention_months=36,
                        rollups_retention_months=24)

    dropped = retire_once(store, settings, now_ms=NOW)

    assert dropped == {"sales": 5, "events": 5, "rollups": 6}
    expect_gone = {"sales": ["2022-01", "2023-11"], "events": ["2022-01", "2023-11"],
                   "rollups": ["2022-01", "2024-11"]}
    for table, months in expect_gone.items():
        after = _rows(store, table)
        for month in months:
            assert month not in after
            path = out / f"{table}-{month}.jsonl.gz"
            exp = P.verify_export(path)
            assert exp.rows == len(before[table][month])
            assert _exported(path) == before[table][month]  # exactly the rows that went
            # the checksum file is checked by a tool that is not ours
            subprocess.run(["sha256sum", "--quiet", "-c", f"{path.name}.sha256"], cwd=out,
                           check=True)
        # every other month untouched, row for row
        assert after == {m: r for m, r in before[table].items() if m not in months}
    if pg:
        with store.engine.connect() as conn:
            parts = P.partitions(conn, "rollups")
            sale_parts = P.partitions(conn, "sales")
        assert "2022-01" not in parts and "2024-11" not in parts
        assert {"2024-12", "2026-12", "2027-01", "2027-02", "2027-03"} <= set(parts)
        assert "2022-01" not in sale_parts and "2023-12" in sale_parts
        # the keys of the retired months went with them; the others guard their rows
        kept = {m: n for m, n in SALES_MONTHS.items() if m not in expect_gone["sales"]}
        assert _key_months(store, "sales") == kept
        assert sum(_key_months(store, "events").values()) == sum(kept.values())
        with store.engine.begin() as conn:  # a redelivery of a kept sale is no new sale
            lo, _ = P.month_bounds("2023-12")
            assert insert_once(conn, sales, [_sale(6, lo)], returning=("seq",)) == []
    # a second run finds nothing more to do and writes nothing
    files = sorted(out.iterdir())
    assert retire_once(store, settings, now_ms=NOW) == {}
    assert sorted(out.iterdir()) == files


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_tampered_export_fails_and_nothing_is_dropped(store: Store, tmp_path: Path) -> None:
    pg = store.engine.dialect.name == "postgresql"
    _fill(store)
    table = "sales"
    if pg:
        with store.engine.begin() as conn:
            P.ensure_partitions(conn, "sales", ["2022-01"])
    before = _rows(store, table)
    exp = P.export_period(store.engine, table, "2022-01", tmp_path)
    assert P.verify_export(exp.path).rows == len(before["2022-01"])

    _tamper(exp.path)  # one bit flipped: the checksum no longer matches
    with pytest.raises(P.ExportMismatch, match="sha256"):
        P.verify_export(exp.path)
    with pytest.raises(P.ExportMismatch):
        P.drop_period(store.engine, table, "2022-01", exp.path)
    assert _rows(store, table) == before

    # rewritten with one row changed and a matching checksum: verifies as a file, but is
    # not what the database holds
    rows = before["2022-01"]
    forged = [dict(r) for r in rows]
    forged[0]["net_mg"] = 1
    body = "".join(json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                   + "\n" for r in forged).encode()
    exp.path.write_bytes(gzip.compress(body))
    Path(f"{exp.path}.sha256").write_text(
        f"{hashlib.sha256(exp.path.read_bytes()).hexdigest()}  {exp.path.name}\n")
    assert P.verify_export(exp.path).rows == len(rows)
    with pytest.raises(P.ExportMismatch, match="differ"):
        P.drop_period(store.engine, table, "2022-01", exp.path)
    assert _rows(store, table) == before
    if pg:
        with store.engine.connect() as conn:
            assert "2022-01" in P.partitions(conn, "sales")  # the DETACH was rolled back


def test_a_row_that_arrives_after_the_export_keeps_the_period(
        store: Store, tmp_path: Path) -> None:
    _fill(store)
    exp = P.export_period(store.engine, "sales", "2022-01", tmp_path)
    lo, _ = P.month_bounds("2022-01")
    with store.engine.begin() as conn:  # a late redelivery of an old sale
        conn.execute(sales.insert().values(**_sale(99, lo + 7)))
    with pytest.raises(P.ExportMismatch):
        P.drop_period(store.engine, "sales", "2022-01", exp.path)
    assert len(_rows(store, "sales")["2022-01"]) == SALES_MONTHS["2022-01"] + 1
    # the next export holds it too, under a new name: the first one is never overwritten
    exp2 = P.export_period(store.engine, "sales", "2022-01", tmp_path)
    assert exp2.path.name == "sales-2022-01.2.jsonl.gz" and exp.path.exists()
    assert P.drop_period(store.engine, "sales", "2022-01", exp2.path) == 4
    assert "2022-01" not in _rows(store, "sales")


def test_a_failed_export_drops_nothing(store: Store, tmp_path: Path) -> None:
    _fill(store)
    before = {t: _rows(store, t) for t in ("sales", "events", "rollups")}
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the export directory should be")
    settings = Settings(database_url="sqlite://", retention_export_dir=str(blocker))
    assert retire_once(store, settings, now_ms=NOW) == {}
    assert {t: _rows(store, t) for t in before} == before
    # and without an export directory nothing is ever dropped
    assert retire_once(store, Settings(database_url="sqlite://"), now_ms=NOW) == {}
    assert {t: _rows(store, t) for t in before} == before


def test_cli_export_period(store: Store, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    _fill(store)
    url = store.engine.url.render_as_string(hide_password=False)
    out = tmp_path / "cli"
    assert cli_main(["export-period", "--table", "sales", "--month", "2023-12", "--out",
                     str(out), "--database-url", url]) == 0
    assert "verified" in capsys.readouterr().out
    exp = P.verify_export(out / "sales-2023-12.jsonl.gz")
    assert exp.rows == SALES_MONTHS["2023-12"]
    assert len(_rows(store, "sales")["2023-12"]) == 2  # an export drops nothing
    assert cli_main(["export-period", "--table", "sales", "--month", "2023-13", "--out",
                     str(out), "--database-url", url]) == 2


def test_the_retention_thread_retires_expired_months(store: Store, tmp_path: Path) -> None:
    from gateway_server.store.retention import Purger

    _fill(store)
    keep_from = P.add_months(P.month_of(time.time_ns() // 1_000_000), -36)  # the real clock
    gone = {m for m in SALES_MONTHS if m < keep_from}
    assert "2022-01" in gone
    settings = Settings(database_url="sqlite://", retention_export_dir=str(tmp_path),
                        purge_interval_s=10)
    purger = Purger(store, settings).start()
    try:
        deadline = time.monotonic() + 60
        want = sum(SALES_MONTHS[m] for m in gone)
        while purger.retired.get("sales") != want and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        purger.stop()
    assert purger.retired.get("sales") == want
    assert set(_rows(store, "sales")) == set(SALES_MONTHS) - gone
    assert P.verify_export(tmp_path / "sales-2022-01.jsonl.gz").rows == 3


def test_migrations_0006_0007_keep_every_row_and_downgrade(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    import gateway_server

    cfg = Config(str(Path(gateway_server.__file__).parent / "store" / "migrations" / "alembic.ini"))
    with fresh_pg_database() as url:
        store = Store.from_url(url)

        def alembic(verb: str, rev: str) -> None:
            with store.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                getattr(command, verb)(cfg, rev)

        alembic("upgrade", "0005")
        _fill(store)  # insert_once: the table's own (device, seq) constraint guards it here
        before = _rows(store, "rollups")
        before_sales, before_events = _rows(store, "sales"), _rows(store, "events")
        alembic("upgrade", "head")
        assert _rows(store, "sales") == before_sales and _rows(store, "events") == before_events
        assert _key_months(store, "sales") == SALES_MONTHS
        with store.engine.begin() as conn:
            assert P.is_partitioned(conn, "sales") and P.is_partitioned(conn, "events")
            assert set(SALES_MONTHS) <= set(P.partitions(conn, "sales"))
            top = conn.execute(text("SELECT max(id) FROM sales")).scalar_one()
            lo, _ = P.month_bounds("2023-12")
            assert insert_once(conn, sales, [_sale(6, lo)], returning=("id",)) == []
            new = insert_once(conn, sales, [_sale(50, lo + 9)] * 2, returning=("id",))
            assert [r.id for r in new] == [top + 1]  # once, numbered by the adopted sequence
        with store.engine.connect() as conn:
            assert P.is_partitioned(conn, "rollups")
            parts = P.partitions(conn, "rollups")
            for month, n in ROLLUP_MONTHS.items():  # every month it spans has its partition
                assert conn.execute(text(f"SELECT count(*) FROM {parts[month]}")).scalar_one() == n
            assert conn.execute(text(
                f'SELECT count(*) FROM "{P.SCHEMA}".rollups_default')).scalar_one() == 0
        assert _rows(store, "rollups") == before
        # the ingest's upsert still finds its conflict target
        from gateway_server.store.bulk import pg_insert_unnest
        lo, _ = P.month_bounds("2022-01")
        with store.engine.begin() as conn:
            pg_insert_unnest(conn, rollups, [_rollup("s-0", lo)], conflict=("device", "minute_ms"),
                             set_sql="n = rollups.n + excluded.n")
        assert _rows(store, "rollups")["2022-01"][0]["n"] == 120
        alembic("downgrade", "0005")
        with store.engine.connect() as conn:
            assert not P.is_partitioned(conn, "rollups")
            assert not P.is_partitioned(conn, "sales")
            assert conn.execute(text("SELECT to_regclass(:n)"),
                                {"n": P.keys_table("sales")}).scalar() is None
        assert sum(map(len, _rows(store, "sales").values())) == sum(SALES_MONTHS.values()) + 1
        with store.engine.begin() as conn:  # the unique constraint guards again
            assert insert_once(conn, sales, [_sale(50, lo + 9)], returning=("id",)) == []
            # (ON CONFLICT burns a sequence number on the refused row: ids only grow)
            (again,) = insert_once(conn, sales, [_sale(51, lo)], returning=("id",))
            assert again.id > top + 1
        after = _rows(store, "rollups")
        after["2022-01"][0]["n"] = 60
        assert after == before
        store.engine.dispose()


def test_keys_of_rows_still_held_are_never_pruned(tmp_path: Path) -> None:
    """A month whose retirement failed keeps every key: a redelivery stays a duplicate."""
    with fresh_pg_database() as url:
        store = Store.from_url(url)
        store.migrate()
        _fill(store)
        before = _key_months(store, "sales")
        end = P.month_bounds("2026-12")[0]
        with store.engine.begin() as conn:  # 2022-01 retired by hand: rows gone, keys left
            lo, hi = P.month_bounds("2022-01")
            conn.execute(sales.delete().where(sales.c.ts_ms >= lo, sales.c.ts_ms < hi))
        assert P.prune_keys(store.engine, "sales", before_ms=end) == SALES_MONTHS["2022-01"]
        assert _key_months(store, "sales") == {m: n for m, n in before.items() if m != "2022-01"}
        with store.engine.begin() as conn:
            lo, _ = P.month_bounds("2023-11")
            assert insert_once(conn, sales, [_sale(4, lo)], returning=("seq",)) == []
            # a key whose row is gone is free again: that is why pruning waits for
            # event_max_age_s to refuse such a redelivery first
            lo, _ = P.month_bounds("2022-01")
            assert len(insert_once(conn, sales, [_sale(1, lo)], returning=("seq",))) == 1
        # keys are pruned only before the bound given
        assert P.prune_keys(store.engine, "sales", before_ms=P.month_bounds("2022-01")[0]) == 0
        store.engine.dispose()
