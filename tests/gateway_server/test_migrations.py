"""The Alembic migrations produce exactly the schema of the code, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pgutil import fresh_pg_database
from sqlalchemy import inspect

from gateway_server.store import Store, metadata


def _diff(store: Store) -> list[object]:
    with store.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


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
