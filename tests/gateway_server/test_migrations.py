"""The Alembic migrations produce exactly the schema of the code, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pgutil import fresh_pg_database
from sqlalchemy import inspect

from gateway_server.store.database import Store, metadata
from gateway_server.store.partitions import autogenerate_filter


def _diff(store: Store) -> list[object]:
    """What autogenerate would change; a key table's guard of ``(device, seq)`` in place of
    the unique constraint (migration 0007) is not a difference."""
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"include_object": autogenerate_filter(conn)})
        return list(compare_metadata(ctx, metadata))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_head_equals_the_code_schema(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        store = Store.from_url(f"sqlite:///{tmp_path}/m.db")
        store.migrate()
        store.migrate()  # a second run is a no-op
        assert _diff(store) == []
        store.engine.dispose()
        return
    with fresh_pg_database() as url:
        store = Store.from_url(url)
        store.migrate()
        store.migrate()
        assert _diff(store) == []
        store.engine.dispose()


def test_database_made_by_create_all_is_adopted(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/old.db")
    store.create_all()
    store.migrate()  # stamps instead of failing on existing tables
    with store.engine.connect() as conn:
        assert "alembic_version" in inspect(conn).get_table_names()
    assert _diff(store) == []
    store.engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0002_keeps_reweighs_and_allows_stall_named_ones(backend: str, tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    import gateway_server

    cfg = Config(str(Path(gateway_server.__file__).parent / "store" / "migrations" / "alembic.ini"))

    def alembic(store: Store, verb: str, rev: str) -> None:
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, verb)(cfg, rev)

    def check(store: Store) -> None:
        alembic(store, "upgrade", "0001")
        with store.engine.begin() as c:
            c.execute(text("INSERT INTO reweighs (device, market, seq, ts_ms, trace_code, "
                           "reference_mg, method, verdict) VALUES "
                           "('f-1', 'm1', 1, 5, 'T-1', 1000, '', 'unlinked')"))
        alembic(store, "upgrade", "head")
        assert _diff(store) == []
        with store.engine.begin() as c:
            c.execute(text("INSERT INTO reweighs (device, market, seq, ts_ms, stall_no, "
                           "reference_mg, method, verdict) VALUES "
                           "('f-1', 'm1', 2, 6, 'A-01', 2000, '', 'pending')"))
            assert c.execute(text("SELECT count(*) FROM reweighs")).scalar_one() == 2
        alembic(store, "downgrade", "0001")  # a stall-named row cannot live there
        with store.engine.connect() as c:
            assert c.execute(text("SELECT trace_code FROM reweighs")).scalars().all() == ["T-1"]
        store.engine.dispose()

    if backend == "sqlite":
        check(Store.from_url(f"sqlite:///{tmp_path}/m.db"))
        return
    with fresh_pg_database() as url:
        check(Store.from_url(url))
