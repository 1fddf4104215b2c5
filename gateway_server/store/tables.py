"""All tables of the gateway (SQLAlchemy Core), one ``metadata`` for SQLite and PostgreSQL.

Conventions: mass ``*_mg`` and money ``*_fen`` are BigInteger; times ``*_ms`` are
BigInteger UTC milliseconds; ids of devices and markets are the strings of the wire
contract; JSON documents are stored as Text (portable across both databases).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()
BIGINT_MAX = 2**63 - 1  # largest BigInteger (and SQLite INTEGER): API inputs are bounded by it
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER only

# -- registry (登记造册) ------------------------------------------------------------------

markets = Table(
    "markets", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("name_en", String(256)),
    Column("district", String(128)),
    Column("address", String(512)),
    Column("operator", String(256)),  # 市场开办者
    Column("lat_e6", BigInteger),  # WGS-84 degrees × 10^6 (no floats in the store)
    Column("lon_e6", BigInteger),
    # "HH:MM-HH:MM" local (CST); NULL: detectors.offline.DEFAULT_TRADING_HOURS
    Column("trading_hours", String(16)),
    Column("created_ms", BigInteger, nullable=False),
)

merchants = Table(
    "merchants", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("market_id", String(64), ForeignKey("markets.id"), nullable=False, index=True),
    Column("name", String(256), nullable=False),
    Column("credit_code", String(18), unique=True),  # 统一社会信用代码 (GB 32100-2015)
    Column("licence_no", String(128)),  # 营业执照 / 食品经营许可证
    Column("stall_no", String(64)),
    Column("categories", String(512), nullable=False, default=""),  # comma-separated
    Column("phone", String(64)),
    # normal | yellow | red (cards), suspended (经营异常), delisted (licence revoked)
    Column("status", String(16), nullable=False, default="normal"),
    Column("list_status", String(8), nullable=False, default="none"),  # red | black | none
    Column("status_reason", Text),  # why the status / list status was last changed
    Column("status_ms", BigInteger),  # when it was last changed
    # JSON list of {kind, number, valid_until_ms}: 营业执照, 食品经营许可证, ... (registry.py)
    Column("licences_json", Text, nullable=False, default="[]"),
    Column("trust_token", String(64), nullable=False, unique=True),  # 放心消费诚信码
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

scales = Table(
    "scales", metadata,
    Column("device", String(64), primary_key=True),
    Column("market", String(64), nullable=False, index=True),
    Column("role", String(16), nullable=False, default="trade"),
    Column("profile", String(128)),
    Column("protocol", String(64)),
    Column("max_mg", BigInteger),
    Column("e_mg", BigInteger),
    Column("accuracy_class", String(8)),
    Column("serial", String(128)),
    Column("model", String(128)),
    Column("key_hex", String(256)),  # per-device HMAC key (secret; never served by the API)
    Column("cert_no", String(128)),  # 检定证书编号
    Column("verified_on_ms", BigInteger),
    Column("due_on_ms", BigInteger),
    # registered: entered in the register (CSV import or API); unknown devices that
    # publish are recorded with registered = false and quarantined
    Column("registered", Boolean, nullable=False, default=False),
    Column("quarantined", Boolean, nullable=False, default=False),
    Column("birth_json", Text),  # the device's last birth message, as sent
    Column("agent_version", String(64)),
    Column("boot_id", String(64)),
    Column("birth_ms", BigInteger),
    Column("state", String(16), nullable=False, default="unknown"),
    Column("state_ms", BigInteger),
    Column("last_seen_ms", BigInteger),
    Column("last_seq", BigInteger),  # highest event seq stored (gap detection)
    Column("last_ts_ms", BigInteger),  # device time of its newest event (offline detection)
    Column("created_ms", BigInteger),
    # sample batches folded into the rollups: the highest seq and the missing ranges
    # below it (JSON [[first, last], ...]), so a redelivered batch is never counted twice
    Column("samples_seq", BigInteger),
    Column("samples_holes", Text),
)

bindings = Table(
    "bindings", metadata,  # which merchant used which scale, when
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("device", String(64), ForeignKey("scales.device"), nullable=False),
    Column("merchant_id", BigInteger, ForeignKey("merchants.id"), nullable=False),
    Column("valid_from_ms", BigInteger, nullable=False),
    Column("valid_to_ms", BigInteger),  # NULL: still bound
    Index("ix_bindings_device_from", "device", "valid_from_ms"),
    Index("ix_bindings_merchant", "merchant_id"),
)

plu_prices = Table(
    "plu_prices", metadata,  # registered prices (明码标价) per merchant and PLU
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("merchant_id", BigInteger, ForeignKey("merchants.id"), nullable=False, index=True),
    Column("plu", String(64), nullable=False),
    Column("name", String(256), nullable=False),
    Column("category", String(64)),  # weighing.metrology.GoodsCategory value
    Column("unit_price_fen_per_kg", BigInteger, nullable=False),
    Column("valid_from_ms", BigInteger, nullable=False),
    UniqueConstraint("merchant_id", "plu", "valid_from_ms", name="uq_plu_version"),
)

users = Table(
    "users", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(128)),
    Column("password_hash", String(256), nullable=False),
    Column("role", String(16), nullable=False),  # admin | inspector | merchant
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_ms", BigInteger, nullable=False),
    # a merchant account sees this merchant's data only (gateway_server.trust.merchant_portal)
    Column("merchant_id", BigInteger, ForeignKey("merchants.id", name="fk_users_merchant")),
)

api_tokens = Table(
    "api_tokens", metadata,
    Column("token_sha256", String(64), primary_key=True),  # only the hash is stored
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
)

# -- events -------------------------------------------------------------------------------

sales = Table(
    "sales", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("device", String(64), nullable=False),
    Column("market", String(64), nullable=False),
    Column("merchant_id", BigInteger),  # bound to the scale at ts_ms (NULL: none)
    Column("seq", BigInteger, nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("net_mg", BigInteger, nullable=False),
    Column("settled_mg", BigInteger, nullable=False),
    Column("peak_mg", BigInteger, nullable=False),
    Column("tare_mg", BigInteger, nullable=False, default=0),
    Column("stable_device", Boolean, nullable=False),
    Column("stable_software", Boolean, nullable=False),
    Column("unsettled_commit", Boolean, nullable=False, default=False),
    Column("duration_ms", BigInteger, nullable=False, default=0),
    Column("unit_price_fen_per_kg", BigInteger),
    Column("amount_fen", BigInteger),
    Column("plu", String(256)),
    Column("trace_code", String(256), index=True),
    Column("signed", Boolean, nullable=False, default=False),  # signature verified
    Column("raw_ad", BigInteger),  # raw AD count of the settled load (transmitters)
    Column("ad_zero", BigInteger),  # raw AD of the empty pan before it (K = (AD − AD0) / W)
    UniqueConstraint("device", "seq", name="uq_sales_device_seq"),
    Index("ix_sales_market_ts", "market", "ts_ms"),
    Index("ix_sales_merchant_ts", "merchant_id", "ts_ms"),
    Index("ix_sales_device_ts", "device", "ts_ms"),
)

events = Table(
    "events", metadata,  # every other event kind, payload as sent
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("device", String(64), nullable=False),
    Column("market", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),
    UniqueConstraint("device", "seq", name="uq_events_device_seq"),
    Index("ix_events_device_kind_ts", "device", "kind", "ts_ms"),
)

rollups = Table(
    "rollups", metadata,  # per scale and minute, so dashboards never need the TS store
    Column("device", String(64), primary_key=True),
    Column("minute_ms", BigInteger, primary_key=True),
    Column("market", String(64), nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("min_mg", BigInteger, nullable=False),
    Column("max_mg", BigInteger, nullable=False),
    Column("sum_mg", BigInteger, nullable=False),
    Column("stable_n", BigInteger, nullable=False),
)

dead_letters = Table(
    "dead_letters", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("received_ms", BigInteger, nullable=False),
    Column("topic", String(512), nullable=False),
    Column("device", String(64)),
    Column("reason", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("size", Integer, nullable=False),
    Index("ix_dead_letters_received", "received_ms"),  # retention purge
)

quarantine = Table(
    "quarantine", metadata,  # messages of devices not in the register, kept for release
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("received_ms", BigInteger, nullable=False),
    Column("topic", String(512), nullable=False),
    Column("market", String(64), nullable=False),
    Column("device", String(64), nullable=False, index=True),
    Column("payload", LargeBinary, nullable=False),
)

# -- findings and inspections (detectors fill them; see weighing.metrology) ----------------

findings = Table(
    "findings", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),  # e.g. sequence-gap, bad-signature, ...
    Column("severity", String(16), nullable=False),  # info | low | medium | high | critical
    Column("market", String(64), nullable=False),
    Column("device", String(64)),
    Column("merchant_id", BigInteger),
    Column("ts_ms", BigInteger, nullable=False),  # when it happened (device time)
    Column("created_ms", BigInteger, nullable=False),
    Column("status", String(16), nullable=False, default="open"),  # open | confirmed | dismissed
    Column("title", String(256), nullable=False),
    Column("legal_basis", Text, nullable=False, default=""),
    Column("evidence", Text, nullable=False, default="{}"),  # JSON
    Column("dedup_key", String(256), unique=True),  # one finding per (kind, subject, window)
    Index("ix_findings_market_status", "market", "status"),
    Index("ix_findings_device", "device", "ts_ms"),
)
