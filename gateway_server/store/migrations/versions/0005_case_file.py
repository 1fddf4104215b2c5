"""the case file (issue 18)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 05:10:00

Inspection cases (the 现场检查笔录: task, record, standard weights' certificate, signature,
the confirmed decision) and their photos with a content hash
(``gateway_server/store/tables_workflow.py``, ``gateway_server/casework/cases.py``).
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('inspection_cases',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('task_id', sa.BigInteger(), nullable=True),
    sa.Column('device', sa.String(length=64), nullable=False),
    sa.Column('market', sa.String(length=64), nullable=False),
    sa.Column('merchant_id', sa.BigInteger(), nullable=True),
    sa.Column('finding_ids', sa.Text(), nullable=False),
    sa.Column('opened_ms', sa.BigInteger(), nullable=False),
    sa.Column('opened_by', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('place', sa.Text(), nullable=False),
    sa.Column('weights_cert_no', sa.String(length=64), nullable=True),
    sa.Column('notes', sa.Text(), nullable=False),
    sa.Column('result_id', sa.BigInteger(), nullable=True),
    sa.Column('recorded_ms', sa.BigInteger(), nullable=True),
    sa.Column('signer_name', sa.String(length=64), nullable=True),
    sa.Column('signature_png', sa.LargeBinary(), nullable=True),
    sa.Column('signature_sha256', sa.String(length=64), nullable=True),
    sa.Column('signed_ms', sa.BigInteger(), nullable=True),
    sa.Column('decision', sa.String(length=16), nullable=True),
    sa.Column('decision_reason', sa.Text(), nullable=True),
    sa.Column('decided_ms', sa.BigInteger(), nullable=True),
    sa.Column('decided_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['result_id'], ['inspection_results.id'], ),
    sa.ForeignKeyConstraint(['task_id'], ['inspection_tasks.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('inspection_cases', schema=None) as batch_op:
        batch_op.create_index('ix_cases_state', ['state', 'opened_ms'], unique=False)
        batch_op.create_index(batch_op.f('ix_inspection_cases_device'), ['device'], unique=False)
        batch_op.create_index(batch_op.f('ix_inspection_cases_merchant_id'), ['merchant_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_inspection_cases_task_id'), ['task_id'], unique=False)

    op.create_table('case_photos',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('case_id', sa.BigInteger(), nullable=False),
    sa.Column('mime', sa.String(length=32), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('caption', sa.String(length=200), nullable=False),
    sa.Column('uploaded_ms', sa.BigInteger(), nullable=False),
    sa.Column('uploaded_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['inspection_cases.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('case_id', 'sha256', name='uq_case_photo_hash')
    )
    with op.batch_alter_table('case_photos', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_photos_case_id'), ['case_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('case_photos', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_case_photos_case_id'))
    op.drop_table('case_photos')
    with op.batch_alter_table('inspection_cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inspection_cases_task_id'))
        batch_op.drop_index(batch_op.f('ix_inspection_cases_merchant_id'))
        batch_op.drop_index(batch_op.f('ix_inspection_cases_device'))
        batch_op.drop_index('ix_cases_state')
    op.drop_table('inspection_cases')
