"""the trust programme's merchant lifecycle (issue 19)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 04:33:06

Merchant accounts (``users.merchant_id``), applications and their licence images, the
append-only audit log (UPDATE / DELETE refused by triggers on both databases), the
business-register status per merchant, complaint cases with their clock, red/black list
entries, outgoing webhooks and their delivery log (``gateway_server/store/tables_trust.py``).
"""
import sqlalchemy as sa
from alembic import op

from gateway_server.store.tables_trust import AUDIT_TRIGGERS_POSTGRESQL, AUDIT_TRIGGERS_SQLITE


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('ts_ms', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('merchant_id', sa.BigInteger(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_merchant', ['merchant_id', 'id'], unique=False)
        batch_op.create_index('ix_audit_subject', ['subject', 'id'], unique=False)

    op.create_table('webhook_cursor',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('webhook_endpoints',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('url', sa.String(length=1024), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('events', sa.String(length=256), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('complaint_cases',
    sa.Column('complaint_id', sa.BigInteger(), nullable=False),
    sa.Column('number', sa.String(length=20), nullable=False),
    sa.Column('merchant_id', sa.BigInteger(), nullable=False),
    sa.Column('market_id', sa.String(length=64), nullable=False),
    sa.Column('opened_ms', sa.BigInteger(), nullable=False),
    sa.Column('due_ms', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('answer', sa.Text(), nullable=True),
    sa.Column('answered_ms', sa.BigInteger(), nullable=True),
    sa.Column('answered_by', sa.String(length=64), nullable=True),
    sa.Column('overdue_ms', sa.BigInteger(), nullable=True),
    sa.Column('finding_id', sa.BigInteger(), nullable=True),
    sa.Column('mediation_note', sa.Text(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.Column('outcome_note', sa.Text(), nullable=True),
    sa.Column('compensation_fen', sa.BigInteger(), nullable=True),
    sa.Column('closed_ms', sa.BigInteger(), nullable=True),
    sa.Column('closed_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['complaint_id'], ['complaints.id'], ),
    sa.PrimaryKeyConstraint('complaint_id'),
    sa.UniqueConstraint('number')
    )
    with op.batch_alter_table('complaint_cases', schema=None) as batch_op:
        batch_op.create_index('ix_cases_market_opened', ['market_id', 'opened_ms'], unique=False)
        batch_op.create_index('ix_cases_state_due', ['state', 'due_ms'], unique=False)
        batch_op.create_index(batch_op.f('ix_complaint_cases_merchant_id'), ['merchant_id'], unique=False)

    op.create_table('webhook_deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('endpoint_id', sa.BigInteger(), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_ms', sa.BigInteger(), nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('delivered_ms', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_deliveries_due', ['status', 'next_attempt_ms'], unique=False)
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_endpoint_id'), ['endpoint_id'], unique=False)

    op.create_table('list_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('merchant_id', sa.BigInteger(), nullable=False),
    sa.Column('list', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('since_ms', sa.BigInteger(), nullable=False),
    sa.Column('until_ms', sa.BigInteger(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('ended_ms', sa.BigInteger(), nullable=True),
    sa.Column('end_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('list_entries', schema=None) as batch_op:
        batch_op.create_index('ix_list_entries_active', ['list', 'ended_ms'], unique=False)
        batch_op.create_index(batch_op.f('ix_list_entries_merchant_id'), ['merchant_id'], unique=False)

    op.create_table('merchant_applications',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('number', sa.String(length=20), nullable=False),
    sa.Column('secret_sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('market_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('credit_code', sa.String(length=18), nullable=False),
    sa.Column('stall_no', sa.String(length=64), nullable=False),
    sa.Column('categories', sa.String(length=512), nullable=False),
    sa.Column('phone', sa.String(length=64), nullable=False),
    sa.Column('licences_json', sa.Text(), nullable=False),
    sa.Column('commitments_json', sa.Text(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('review_note', sa.Text(), nullable=True),
    sa.Column('merchant_id', sa.BigInteger(), nullable=True),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.Column('submitted_ms', sa.BigInteger(), nullable=True),
    sa.Column('decided_ms', sa.BigInteger(), nullable=True),
    sa.Column('decided_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['market_id'], ['markets.id'], ),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('number')
    )
    with op.batch_alter_table('merchant_applications', schema=None) as batch_op:
        batch_op.create_index('ix_applications_status', ['status', 'submitted_ms'], unique=False)
        batch_op.create_index(batch_op.f('ix_merchant_applications_credit_code'), ['credit_code'], unique=False)

    op.create_table('merchant_register_status',
    sa.Column('merchant_id', sa.BigInteger(), nullable=False),
    sa.Column('register_status', sa.String(length=16), nullable=False),
    sa.Column('status_date_ms', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('held_status', sa.String(length=16), nullable=True),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], ),
    sa.PrimaryKeyConstraint('merchant_id')
    )
    op.create_table('application_documents',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('application_id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('mime', sa.String(length=32), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('uploaded_ms', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['application_id'], ['merchant_applications.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('application_id', 'sha256', name='uq_application_document_hash')
    )
    with op.batch_alter_table('application_documents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_application_documents_application_id'), ['application_id'], unique=False)

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('merchant_id', sa.BigInteger(), nullable=True))
        batch_op.create_foreign_key('fk_users_merchant', 'merchants', ['merchant_id'], ['id'])

    triggers = (AUDIT_TRIGGERS_POSTGRESQL if op.get_bind().dialect.name == 'postgresql'
                else AUDIT_TRIGGERS_SQLITE)
    for sql in triggers:
        op.execute(sql)


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint('fk_users_merchant', type_='foreignkey')
        batch_op.drop_column('merchant_id')

    with op.batch_alter_table('application_documents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_application_documents_application_id'))

    op.drop_table('application_documents')
    op.drop_table('merchant_register_status')
    with op.batch_alter_table('merchant_applications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_merchant_applications_credit_code'))
        batch_op.drop_index('ix_applications_status')

    op.drop_table('merchant_applications')
    with op.batch_alter_table('list_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_list_entries_merchant_id'))
        batch_op.drop_index('ix_list_entries_active')

    op.drop_table('list_entries')
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_endpoint_id'))
        batch_op.drop_index('ix_webhook_deliveries_due')

    op.drop_table('webhook_deliveries')
    with op.batch_alter_table('complaint_cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_complaint_cases_merchant_id'))
        batch_op.drop_index('ix_cases_state_due')
        batch_op.drop_index('ix_cases_market_opened')

    op.drop_table('complaint_cases')
    op.drop_table('webhook_endpoints')
    op.drop_table('webhook_cursor')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_subject')
        batch_op.drop_index('ix_audit_merchant')

    op.drop_table('audit_log')  # its triggers go with it
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION IF EXISTS audit_log_append_only()')
