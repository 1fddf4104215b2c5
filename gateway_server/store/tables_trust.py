"""Tables of the trust programme's merchant lifecycle (issue 19): applications and their
licence images, the append-only audit log, the business-register status of each merchant,
complaint cases with their clock, red/black list entries, outgoing webhooks.

On the same ``metadata`` as ``tables.py``. Conventions as there: time in integer UTC ms,
money in integer fen, JSON documents as Text.
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
)

from gateway_server.store.tables import _ID, metadata

# -- applications (入驻申请) and their licence images -------------------------------------

merchant_applications = Table(
    "merchant_applications", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("number", String(20), nullable=False, unique=True),  # shown to the applicant
    Column("secret_sha256", String(64), nullable=False),  # the applicant's access secret
    # draft | submitted | changes_requested | approved | rejected (applications.py)
    Column("status", String(20), nullable=False),
    Column("market_id", String(64), ForeignKey("markets.id"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("credit_code", String(18), nullable=False, index=True),
    Column("stall_no", String(64), nullable=False),
    Column("categories", String(512), nullable=False, default=""),
    Column("phone", String(64), nullable=False),
    Column("licences_json", Text, nullable=False, default="[]"),
    Column("commitments_json", Text, nullable=False, default="[]"),  # keys ticked
    Column("username", String(64), nullable=False),  # the account made on approval
    Column("password_hash", String(256), nullable=False),
    Column("review_note", Text),  # reason of a rejection / the changes asked for
    Column("merchant_id", BigInteger, ForeignKey("merchants.id")),  # set on approval
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("submitted_ms", BigInteger),
    Column("decided_ms", BigInteger),
    Column("decided_by", String(64)),
    Index("ix_applications_status", "status", "submitted_ms"),
)

application_documents = Table(
    "application_documents", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("application_id", BigInteger, ForeignKey("merchant_applications.id"),
           nullable=False, index=True),
    Column("kind", String(64), nullable=False),  # 营业执照, 食品经营许可证, ...
    Column("mime", String(32), nullable=False),  # image/jpeg | image/png (by magic bytes)
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),  # content hash, hex
    Column("content", LargeBinary, nullable=False),
    Column("uploaded_ms", BigInteger, nullable=False),
    UniqueConstraint("application_id", "sha256", name="uq_application_document_hash"),
)

# -- the audit log: every step of the lifecycle, append-only ------------------------------

audit_log = Table(
    "audit_log", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),  # username, "public", "status-feed", "clock"
    Column("action", String(64), nullable=False),  # e.g. application.approve
    Column("subject", String(64), nullable=False),  # "application:3", "merchant:7", ...
    Column("merchant_id", BigInteger),
    Column("detail", Text, nullable=False, default="{}"),  # JSON: the input that caused it
    Index("ix_audit_subject", "subject", "id"),
    Index("ix_audit_merchant", "merchant_id", "id"),
)

# UPDATE and DELETE are refused by the database itself, on SQLite and PostgreSQL alike
# (the same statements are in migration 0004).
AUDIT_TRIGGERS_SQLITE = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
)
AUDIT_TRIGGERS_POSTGRESQL = (
    "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
)
for _sql in AUDIT_TRIGGERS_SQLITE:
    event.listen(audit_log, "after_create",
                 DDL(_sql).execute_if(dialect="sqlite"))  # type: ignore[no-untyped-call]
for _sql in AUDIT_TRIGGERS_POSTGRESQL:
    event.listen(audit_log, "after_create",
                 DDL(_sql).execute_if(dialect="postgresql"))  # type: ignore[no-untyped-call]

# -- business-register status (企业信用信息 feed) -----------------------------------------

register_status = Table(
    "merchant_register_status", metadata,
    Column("merchant_id", BigInteger, ForeignKey("merchants.id"), primary_key=True),
    # normal | cancelled (注销) | revoked (吊销) | abnormal (经营异常名录)
    Column("register_status", String(16), nullable=False),
    Column("status_date_ms", BigInteger, nullable=False),  # the feed row's date (CST day)
    Column("reason", Text),
    # the merchant's status before the feed suspended or delisted it (restored later)
    Column("held_status", String(16)),
    Column("updated_ms", BigInteger, nullable=False),
)

# -- complaint cases: the number a consumer looks up, the merchant's clock -----------------

complaint_cases = Table(
    "complaint_cases", metadata,
    Column("complaint_id", BigInteger, ForeignKey("complaints.id"), primary_key=True),
    Column("number", String(20), nullable=False, unique=True),
    Column("merchant_id", BigInteger, nullable=False, index=True),
    Column("market_id", String(64), nullable=False),
    Column("opened_ms", BigInteger, nullable=False),
    Column("due_ms", BigInteger, nullable=False),  # the merchant answers before this
    # awaiting | answered | overdue | mediating | closed (complaint_cases.py)
    Column("state", String(16), nullable=False),
    Column("answer", Text),
    Column("answered_ms", BigInteger),
    Column("answered_by", String(64)),
    Column("overdue_ms", BigInteger),
    Column("finding_id", BigInteger),  # the complaint-overdue finding
    Column("mediation_note", Text),
    Column("outcome", String(16)),  # refund | compensation | settled | rejected
    Column("outcome_note", Text),
    Column("compensation_fen", BigInteger),
    Column("closed_ms", BigInteger),
    Column("closed_by", String(64)),
    Index("ix_cases_state_due", "state", "due_ms"),
    Index("ix_cases_market_opened", "market_id", "opened_ms"),
)

# -- red / black lists (红黑榜) ------------------------------------------------------------

list_entries = Table(
    "list_entries", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("merchant_id", BigInteger, ForeignKey("merchants.id"), nullable=False, index=True),
    Column("list", String(8), nullable=False),  # red | black
    Column("reason", Text, nullable=False),
    Column("since_ms", BigInteger, nullable=False),
    Column("until_ms", BigInteger),  # NULL: until removed; else expires at this instant
    Column("created_by", String(64), nullable=False),
    Column("ended_ms", BigInteger),  # removed or expired
    Column("end_reason", Text),
    Index("ix_list_entries_active", "list", "ended_ms"),
)

# -- outgoing webhooks ---------------------------------------------------------------------

webhook_endpoints = Table(
    "webhook_endpoints", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("url", String(1024), nullable=False),
    Column("secret", String(128), nullable=False),  # HMAC-SHA256 key (never served again)
    Column("events", String(256), nullable=False),  # comma-separated event names
    Column("active", Boolean, nullable=False, default=True),
    Column("created_ms", BigInteger, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("endpoint_id", BigInteger, ForeignKey("webhook_endpoints.id"), nullable=False,
           index=True),
    Column("event", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # the JSON body, as signed and sent
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_ms", BigInteger, nullable=False),
    Column("delivered_ms", BigInteger),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_ms"),
)

webhook_cursor = Table(
    "webhook_cursor", metadata,  # how far the finding scan has read (findings.id)
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
