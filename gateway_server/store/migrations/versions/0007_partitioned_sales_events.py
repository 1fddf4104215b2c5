"""sales and events partitioned by month on PostgreSQL (issue 17)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 17:00:00

On PostgreSQL ``sales`` and ``events`` become tables partitioned by range of ``ts_ms``, one
partition per CST month like ``rollups`` (0006), every row copied. A partitioned table can
have no unique constraint without the partition key, so their primary key becomes
``(id, ts_ms)`` and the ingest's exactly-once key ``(device, seq)`` moves to a key table
beside each, ``scalegw_partitions.{sales,events}_keys``, filled from the rows
(``gateway_server/store/partitions.py``; the ingest writes through
``gateway_server.store.bulk.insert_once``). Run with the workers stopped: the copy takes as
long as copying the tables, and the agents' outboxes hold everything meanwhile. SQLite:
nothing.
"""
import time

from alembic import op

from gateway_server.store.partitions import partition_table, unpartition_table

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    now_ms = time.time_ns() // 1_000_000
    for table in ("sales", "events"):
        partition_table(conn, table, months_ahead=3, now_ms=now_ms)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    for table in ("sales", "events"):
        unpartition_table(conn, table)
