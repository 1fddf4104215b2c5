"""Tables of the inspection workflow (re-weighs, repairs, tasks, results, complaints) and
of the workers sharded by market (``sharding``).

Kept apart from ``tables.py`` (register and events) but on the same ``metadata``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from gateway_server.store.tables import _ID, metadata

reweighs = Table(
    "reweighs", metadata,  # 核称 at a fair scale, linked to the sale by its traceability code
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("device", String(64), nullable=False),  # the fair scale
    Column("market", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("trace_code", String(256), index=True),  # NULL: named by the stall, no receipt
    Column("merchant_token", String(64)),  # the stall's trust code scanned at the fair scale
    Column("stall_no", String(64)),  # or the stall picked on the fair-scale station
    Column("reference_mg", BigInteger, nullable=False),
    Column("sale_id", BigInteger),  # NULL: no sale carries this code (yet)
    Column("sale_device", String(64)),
    Column("merchant_id", BigInteger, index=True),
    Column("sold_mg", BigInteger),
    Column("settled_mg", BigInteger),
    Column("shortfall_mg", BigInteger),
    Column("limit_mg", BigInteger),
    Column("method", String(32), nullable=False),
    Column("category", String(32)),
    # by trace code: ok | violation | no_rule | unlinked;
    # by stall only (``detection.untraced``): pending | matched | untracked | unknown-merchant
    Column("verdict", String(16), nullable=False),
    Column("e_mg", BigInteger),  # e of the selling scale
    Column("accuracy_class", String(8)),
    Index("ix_reweighs_market_verdict", "market", "verdict"),
)

repairs = Table(
    "repairs", metadata,  # registered repairs / verifications that explain counter changes
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("device", String(64), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # repair | verification
    Column("ts_ms", BigInteger, nullable=False),
    Column("by", String(128)),
    Column("note", Text, nullable=False, default=""),
)

inspection_tasks = Table(
    "inspection_tasks", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("device", String(64), nullable=False, index=True),
    Column("market", String(64), nullable=False),
    Column("merchant_id", BigInteger),
    Column("created_ms", BigInteger, nullable=False),
    Column("created_by", BigInteger),
    Column("risk", BigInteger, nullable=False, default=0),
    Column("reason", Text, nullable=False),
    Column("finding_ids", Text, nullable=False, default="[]"),  # JSON list
    Column("test_loads_mg", Text, nullable=False),  # JSON list of loads to use
    Column("status", String(16), nullable=False, default="open"),  # open | done | cancelled
    Index("ix_tasks_status", "status", "risk"),
)

inspection_results = Table(
    "inspection_results", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("task_id", BigInteger, ForeignKey("inspection_tasks.id")),
    Column("device", String(64), nullable=False, index=True),
    Column("market", String(64), nullable=False),
    Column("merchant_id", BigInteger),
    Column("inspector", String(64)),
    Column("ts_ms", BigInteger, nullable=False),
    Column("loads", Text, nullable=False),  # JSON: [{load_mg, indication_mg, error_mg, mpe_mg, ok}]
    Column("verdict", String(16), nullable=False),  # pass | fail
    Column("fraud", String(8), nullable=False, default="no"),  # yes: cheating established
    Column("notes", Text, nullable=False, default=""),
)

complaints = Table(
    "complaints", metadata,  # consumer complaints (trust-code page, 12315)
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("merchant_id", BigInteger, nullable=False, index=True),
    Column("sale_id", BigInteger),
    Column("reweigh_id", BigInteger),
    Column("ts_ms", BigInteger, nullable=False),
    Column("channel", String(16), nullable=False, default="page"),
    Column("contact", String(128)),
    Column("text", Text, nullable=False),
    Column("status", String(16), nullable=False, default="open"),
    Column("compensation_fen", BigInteger),
)

status_history = Table(
    "merchant_status_history", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("merchant_id", BigInteger, nullable=False, index=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("old_status", String(16)),
    Column("new_status", String(16), nullable=False),
    Column("old_list", String(8)),
    Column("new_list", String(8), nullable=False),
    Column("reason", Text, nullable=False),
)

# -- the case file (issue 18; gateway_server/casework/cases.py) ------------------------------------

inspection_cases = Table(
    "inspection_cases", metadata,  # from an incident to a task to a case: the 现场检查笔录
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("task_id", BigInteger, ForeignKey("inspection_tasks.id"), index=True),
    Column("device", String(64), nullable=False, index=True),
    Column("market", String(64), nullable=False),
    Column("merchant_id", BigInteger, index=True),  # bound to the scale when the case opened
    Column("finding_ids", Text, nullable=False, default="[]"),  # JSON list: what it answers
    Column("opened_ms", BigInteger, nullable=False),
    Column("opened_by", String(64), nullable=False),
    # open | recorded | signed | decided (casework.CaseState)
    Column("state", String(16), nullable=False),
    Column("place", Text, nullable=False, default=""),
    Column("weights_cert_no", String(64)),  # the standard weights' calibration certificate
    Column("notes", Text, nullable=False, default=""),
    Column("result_id", BigInteger, ForeignKey("inspection_results.id")),
    Column("recorded_ms", BigInteger),
    Column("signer_name", String(64)),
    Column("signature_png", LargeBinary),
    Column("signature_sha256", String(64)),
    Column("signed_ms", BigInteger),
    Column("decision", String(16)),  # casework.Action
    Column("decision_reason", Text),
    Column("decided_ms", BigInteger),
    Column("decided_by", String(64)),
    Index("ix_cases_state", "state", "opened_ms"),
)

case_photos = Table(
    "case_photos", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("case_id", BigInteger, ForeignKey("inspection_cases.id"), nullable=False,
           index=True),
    Column("mime", String(32), nullable=False),  # image/jpeg | image/png (by magic bytes)
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),  # content hash, hex
    Column("content", LargeBinary, nullable=False),
    Column("caption", String(200), nullable=False, default=""),
    Column("uploaded_ms", BigInteger, nullable=False),
    Column("uploaded_by", String(64), nullable=False),
    UniqueConstraint("case_id", "sha256", name="uq_case_photo_hash"),
)

# -- workers sharded by market (gateway_server.ingest.sharding) -----------------------------------

workers_table = Table(
    "gateway_workers", metadata,
    Column("worker_id", String(128), primary_key=True),
    Column("host", String(256)),
    Column("started_ms", BigInteger, nullable=False),
    Column("heartbeat_ms", BigInteger, nullable=False),
)

market_leases = Table(
    "market_leases", metadata,
    Column("market", String(64), primary_key=True),
    Column("worker_id", String(128), nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("taken_ms", BigInteger, nullable=False),
)
