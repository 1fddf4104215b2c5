"""rollups partitioned by month on PostgreSQL (issue 17)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 06:00:00

On PostgreSQL ``rollups`` becomes a table partitioned by range of ``minute_ms``: one
partition per CST month in the schema ``scalegw_partitions`` (``rollups_pYYYYMM``) plus a
default one, every row kept (``gateway_server/store/partitions.py``). Its primary key
``(device, minute_ms)`` includes the partition key, so the ingest's
``ON CONFLICT (device, minute_ms)`` is unchanged. ``sales`` and ``events`` stay as they are:
their ``(device, seq)`` uniqueness, the ingest's exactly-once key, cannot exist on a table
partitioned by time (docs/operations.md, "Retention and partitions"). SQLite: nothing.
"""
import time

from alembic import op

from gateway_server.store.partitions import partition_table, unpartition_table

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    partition_table(conn, "rollups", months_ahead=3, now_ms=time.time_ns() // 1_000_000)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    unpartition_table(conn, "rollups")
    conn.exec_driver_sql("DROP SCHEMA IF EXISTS scalegw_partitions")
