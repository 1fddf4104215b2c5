"""Mosquitto configuration from the register (``gateway-server export-mosquitto``).

Writes, into one folder: ``mosquitto.conf`` (a complete snippet: listeners, accounts,
ACL, persistence and queue limits), ``passwd`` (the devices' accounts), ``passwd-gateway``
(the gateway's account) and ``acl``.

Rules:

* **Who may publish what.** Each registered device may publish only to its own topics
  (``scales/v1/{market}/{device}/{birth,state,events,samples}``) and read only its own
  commands (``.../cmd/#``); the gateway account reads everything under ``scales/v1`` and
  writes commands.
* **Who may hold which session.** Two listeners with ``per_listener_settings true``:

  - the *device listener* (``use_username_as_clientid true``, devices' password file):
    Mosquitto replaces the client id a device sends with its username, so device A's
    credentials always get client id ``A``. They cannot kick device B off, nor take or
    wipe the gateway's persistent sessions (``gw-market-{market}``,
    ``gateway-ingest-1``), whatever client id and clean-session flag they send.
  - the *gateway listener* (loopback or a private network; the gateway's password file
    only): device credentials are refused there. The gateway's processes keep choosing
    their client ids (one session per market worker, one per ``serve``, others for
    command senders), so nothing in ingest or sharding has to know about accounts.

  Why not one gateway account per client id on the device listener (the other way to
  bind ids to accounts): every gateway MQTT client (each market's worker, ``serve``,
  the API and CLI sending commands) would then have to log in as its own client id,
  and one of them logging in with a shared account would take over — and, with a clean
  session, wipe — another's session: the very failure this export prevents.
* A device whose id could be a gateway client id (``gw-market-…``, or the names given
  in ``reserved_client_ids``) is left out and reported: on the device listener its
  username would become the gateway's client id.
* Device passwords are derived from the device's HMAC key
  (:func:`weighing.signing.mqtt_password`), so an agent configured with its key logs in
  without a second secret. Hashes use Mosquitto 2's ``$7$`` format (PBKDF2-SHA512, 101
  iterations, 12-byte salt), as ``mosquitto_passwd`` writes them.
* Nothing in ``mosquitto.conf`` carries the no-loss guarantee (the edge keeps every event
  until the gateway confirms it stored it): the queue, persistence and in-flight settings
  only decide how often the edge has to resend. docs/operations.md "Broker settings".
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, select

from gateway_server.store.tables import scales
from weighing import wire
from weighing.signing import mqtt_password

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for $7$
GATEWAY_CLIENT_ID_PREFIX = "gw-market-"  # gateway_server.ingest.sharding.client_id_for
DEFAULT_RESERVED_CLIENT_IDS = ("gateway-ingest-1",)  # Settings.mqtt_client_id's default

# Efficiency settings (docs/operations.md "Broker settings"): none of them is needed for
# the no-loss guarantee; each one only saves the edge a resend.
MAX_QUEUED_MESSAGES = 100_000  # per client: a gateway session's backlog while it is down
MAX_QUEUED_BYTES = 256 * 1024 * 1024  # … and its memory bound (unbounded grew to ~1 GB)
MAX_INFLIGHT_MESSAGES = 1000  # unacknowledged messages per client: the ingest's batch
AUTOSAVE_INTERVAL_S = 60
# Above the wire's limit: an oversized message reaches the gateway and is dead-lettered
# with its reason (visible), instead of vanishing in the broker; twice the limit still
# keeps absurd payloads out of the broker's memory.
MESSAGE_SIZE_LIMIT = 2 * wire.MAX_PAYLOAD_BYTES


def mosquitto_hash(password: str, *, salt: bytes | None = None,
                   iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass(frozen=True)
class Listener:
    host: str
    port: int


@dataclass(frozen=True)
class Tls:
    """Server certificate of the device listener (paths as Mosquitto will read them)."""

    cafile: str
    certfile: str
    keyfile: str


@dataclass(frozen=True)
class Export:
    passwd: str  # the devices' accounts: the device listener's password file
    gateway_passwd: str  # the gateway's account: the gateway listener's password file
    acl: str
    devices: int
    left_out: tuple[str, ...] = ()  # device ids that could be a gateway client id


def _reserved(device: str, reserved: tuple[str, ...]) -> bool:
    return device.startswith(GATEWAY_CLIENT_ID_PREFIX) or device in reserved


def export(conn: Connection, *, gateway_user: str, gateway_password: str,
           market: str | None = None,
           reserved_client_ids: tuple[str, ...] = DEFAULT_RESERVED_CLIENT_IDS) -> Export:
    """Accounts and ACL of the registered devices (of ``market``, else all) and the gateway."""
    q = select(scales.c.device, scales.c.market, scales.c.key_hex).where(
        scales.c.registered.is_(True), scales.c.key_hex.is_not(None)).order_by(scales.c.device)
    if market:
        q = q.where(scales.c.market == market)
    reserved = (*reserved_client_ids, gateway_user)
    pw: list[str] = []
    acl = [
        "# generated by gateway-server export-mosquitto: one block per registered device",
        f"user {gateway_user}",
        f"topic read {wire.TOPIC_ROOT}/#",
        f"topic write {wire.TOPIC_ROOT}/+/+/cmd/#",
        "",
    ]
    left_out: list[str] = []
    device_channels = [c for c in wire.Channel if c is not wire.Channel.CMD]
    for r in conn.execute(q):
        if _reserved(r.device, reserved):
            left_out.append(r.device)
            continue
        key = bytes.fromhex(r.key_hex)
        pw.append(f"{r.device}:{mosquitto_hash(mqtt_password(key, r.device))}")
        acl.append(f"user {r.device}")
        acl.extend(f"topic write {wire.topic(r.market, r.device, ch)}" for ch in device_channels)
        acl.append(f"topic read {wire.TOPIC_ROOT}/{r.market}/{r.device}/cmd/#")
        acl.append("")
    return Export(passwd="".join(f"{line}\n" for line in pw),
                  gateway_passwd=f"{gateway_user}:{mosquitto_hash(gateway_password)}\n",
                  acl="\n".join(acl), devices=len(pw), left_out=tuple(left_out))


def mosquitto_conf(folder: Path, *, devices: Listener, gateway: Listener,
                   persistence_location: Path, tls: Tls | None = None) -> str:
    """The ``mosquitto.conf`` that loads the files of :func:`write` from ``folder``."""
    folder = folder.resolve()
    tls_lines = (f"cafile {tls.cafile}\ncertfile {tls.certfile}\nkeyfile {tls.keyfile}\n"
                 if tls else
                 "# no TLS given (--tls-cafile/--tls-certfile/--tls-keyfile): plaintext, for\n"
                 "# tests only; devices outside this host need a TLS listener\n")
    return f"""\
# generated by gateway-server export-mosquitto (docs/operations.md "Broker settings").
# A whole configuration: mosquitto -c THIS_FILE (not from conf.d beside Debian's default,
# which sets its own listener and persistence_location).
# The no-loss guarantee does not depend on anything in this file: an agent keeps every
# event until the gateway has confirmed storing it and resends the rest. The settings
# below only decide how much it has to resend.

# Accounts, ACLs and anonymous access are set per listener.
per_listener_settings true

# -- sessions and queues (efficiency) -------------------------------------------------
# The gateway's sessions survive a broker restart (what was queued for a stopped gateway).
persistence true
persistence_location {str(persistence_location).rstrip('/')}/
autosave_interval {AUTOSAVE_INTERVAL_S}
# A gateway session's backlog while the gateway is down: messages and bytes per client.
# Past either bound the broker drops; the edge resends what the gateway did not confirm.
max_queued_messages {MAX_QUEUED_MESSAGES}
max_queued_bytes {MAX_QUEUED_BYTES}
# Unacknowledged messages per client. The ingest acknowledges after its database commit,
# so this is the size of its batches, and it bounds the ingest's queue: its network
# thread never blocks on a full queue, keeps answering, and keep-alive never drops it
# during a backlog drain.
max_inflight_messages {MAX_INFLIGHT_MESSAGES}
queue_qos0_messages false
# Above the wire's payload limit ({wire.MAX_PAYLOAD_BYTES} bytes), so an oversized message reaches
# the gateway and is dead-lettered with its reason rather than dropped here unseen.
message_size_limit {MESSAGE_SIZE_LIMIT}
# persistent_client_expiration is left unset: a gateway session expiring while the
# gateway is down would throw its queue away.

# -- devices: the client id is the username -------------------------------------------
# Device A's credentials get client id A whatever it sends: they cannot take over
# device B's session nor the gateway's.
listener {devices.port} {devices.host}
use_username_as_clientid true
allow_anonymous false
password_file {folder / "passwd"}
acl_file {folder / "acl"}
{tls_lines}
# -- the gateway's processes: their own account, their own client ids -----------------
# Bind to loopback or a private network; device credentials are not valid here.
listener {gateway.port} {gateway.host}
allow_anonymous false
password_file {folder / "passwd-gateway"}
acl_file {folder / "acl"}
"""


def write(folder: Path, exp: Export, conf: str) -> list[Path]:
    """Write the four files (password files owner-only); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text, mode in (("passwd", exp.passwd, 0o600),
                             ("passwd-gateway", exp.gateway_passwd, 0o600),
                             ("acl", exp.acl, 0o644), ("mosquitto.conf", conf, 0o644)):
        path = folder / name
        path.touch(mode)
        path.chmod(mode)
        path.write_text(text, encoding="utf-8")
        out.append(path)
    return out
