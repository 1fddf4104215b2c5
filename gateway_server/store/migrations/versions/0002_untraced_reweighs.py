"""re-weighs named by the stall (no receipt); trading hours; raw AD of sales

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 05:40:00

A fair-scale station may name a purchase by the stall (trust code or stall number) instead of
a receipt's traceability code (``weighing.wire.ReweighEvent.merchant_token`` / ``stall_no``);
the gateway matches such re-weighs against the merchant's sales (``gateway_server.detect.untraced_scan``).
Markets get their trading hours and scales the device time of their newest event, for the
offline-during-trading-hours rule (``gateway_server.detect.rules.offline``); sales their raw AD
count and the empty pan's, for the K-factor rule (``gateway_server.detect.rules.kfactor``).
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reweighs", schema=None) as batch_op:
        batch_op.alter_column("trace_code", existing_type=sa.String(length=256), nullable=True)
        batch_op.add_column(sa.Column("merchant_token", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("stall_no", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_reweighs_market_verdict", ["market", "verdict"], unique=False)
    with op.batch_alter_table("bindings", schema=None) as batch_op:
        batch_op.create_index("ix_bindings_merchant", ["merchant_id"], unique=False)
    with op.batch_alter_table("markets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trading_hours", sa.String(length=16), nullable=True))
    with op.batch_alter_table("scales", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_ts_ms", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("sales", schema=None) as batch_op:
        batch_op.add_column(sa.Column("raw_ad", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("ad_zero", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sales", schema=None) as batch_op:
        batch_op.drop_column("ad_zero")
        batch_op.drop_column("raw_ad")
    with op.batch_alter_table("scales", schema=None) as batch_op:
        batch_op.drop_column("last_ts_ms")
    with op.batch_alter_table("markets", schema=None) as batch_op:
        batch_op.drop_column("trading_hours")
    with op.batch_alter_table("bindings", schema=None) as batch_op:
        batch_op.drop_index("ix_bindings_merchant")
    op.execute("DELETE FROM reweighs WHERE trace_code IS NULL")
    with op.batch_alter_table("reweighs", schema=None) as batch_op:
        batch_op.drop_index("ix_reweighs_market_verdict")
        batch_op.drop_column("stall_no")
        batch_op.drop_column("merchant_token")
        batch_op.alter_column("trace_code", existing_type=sa.String(length=256), nullable=False)
