"""exactly-once sample rollups; dead-letter retention (issue 15)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 04:30:00

Sample batches carry a per-device ``seq`` (``weighing.wire.SampleBatch``): the gateway keeps
the highest it folded into the rollups and the missing ranges below it on the scale
(``scales.samples_seq`` / ``samples_holes``), so a redelivered batch is not counted twice.
Dead letters are purged by age (``dead_letter_retention_days``), by ``received_ms``.
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scales", schema=None) as batch_op:
        batch_op.add_column(sa.Column("samples_seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("samples_holes", sa.Text(), nullable=True))
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.create_index("ix_dead_letters_received", ["received_ms"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index("ix_dead_letters_received")
    with op.batch_alter_table("scales", schema=None) as batch_op:
        batch_op.drop_column("samples_holes")
        batch_op.drop_column("samples_seq")
