"""Accounts, passwords and bearer tokens: who may act, stored in the database.

The account rules (``gateway_server.api.auth`` adds the FastAPI dependencies that guard
routes on top of these):

* Passwords: ``hashlib.scrypt`` with a random 16-byte salt; the parameters are stored
  with the hash (``scrypt$n$r$p$salt$hash``, base64) so they can be raised later without
  breaking old hashes. Compared with ``hmac.compare_digest``. Weak passwords (< 10
  characters, known defaults) are refused (``settings.check_password_strength``).
* Tokens: ``secrets.token_urlsafe(32)``, given to the client once; only the SHA-256 is
  stored, with its expiry. A lost database therefore leaks no usable token.
* Roles: ``admin`` (writes the register, manages keys), ``inspector`` (reads) and
  ``merchant`` (issue 19: one merchant's own data, under ``/api/v1/merchant`` only).

They sit in the register's package, below the trust programme (which creates merchant
accounts) and the API (which checks tokens), so neither reaches up into the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, delete, select

from gateway_server.registry.register import inserted_id
from gateway_server.settings import Settings, check_password_strength
from gateway_server.store.tables import api_tokens, users
from weighing.errors import GatewayError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # 16 MiB, ~50 ms: the RFC 7914 interactive level
SCRYPT_DKLEN = 32
SALT_BYTES = 16
_HASHED_STAND_IN = "hashed-elsewhere"  # passes the strength check: the hash was checked
TOKEN_BYTES = 32
TOKEN_URL = "/api/v1/auth/token"


class AuthError(GatewayError, ValueError):
    """Invalid account input (weak password, unknown role, duplicate user)."""


class Role(StrEnum):
    ADMIN = "admin"
    INSPECTOR = "inspector"
    MERCHANT = "merchant"  # a merchant of the trust programme: its own data only


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: Role
    display_name: str | None = None
    merchant_id: int | None = None  # set for (and only for) merchant accounts

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.ADMIN, Role.INSPECTOR)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- passwords -----------------------------------------------------------------------------

def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                        dklen=SCRYPT_DKLEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, dk = stored.split("$")
        if algo != "scrypt":
            return False
        want = base64.b64decode(dk)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_DUMMY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(bytes(SALT_BYTES))}${_b64(bytes(32))}"


# -- users and tokens ----------------------------------------------------------------------

def _user(row: Any) -> User:
    mid = row._mapping.get("merchant_id")
    return User(int(row.id), row.username, Role(row.role), row.display_name,
                None if mid is None else int(mid))


def _check(username: str, password: str, role: str) -> Role:
    if not username or len(username) > 64 or not username.isprintable() or " " in username:
        raise AuthError("username: 1-64 printable characters without spaces")
    try:
        check_password_strength(password)
    except ValueError as err:
        raise AuthError(str(err)) from err
    try:
        return Role(role)
    except ValueError:
        raise AuthError(f"role must be admin, inspector or merchant, not {role!r}") from None


def user_exists(conn: Connection, username: str) -> bool:
    return conn.execute(select(users.c.id).where(users.c.username == username)).first() is not None


def create_user(conn: Connection, username: str, password: str, role: str, *, now_ms: int,
                display_name: str | None = None, merchant_id: int | None = None,
                password_hash: str | None = None) -> User:
    """A new account. A merchant account needs ``merchant_id`` (and only it has one);
    ``password_hash`` stores an already hashed password (an approved application's)."""
    if password_hash is not None:  # checked when it was hashed
        r = _check(username, _HASHED_STAND_IN, role)
    else:
        r = _check(username, password, role)
    if (r is Role.MERCHANT) != (merchant_id is not None):
        raise AuthError("a merchant account needs a merchant id, and only it has one")
    if conn.execute(select(users.c.id).where(users.c.username == username)).first():
        raise AuthError(f"user {username} exists")
    res = conn.execute(users.insert().values(
        username=username, display_name=display_name,
        password_hash=password_hash or hash_password(password),
        role=r.value, disabled=False, created_ms=now_ms, merchant_id=merchant_id))
    return User(inserted_id(res), username, r, display_name, merchant_id)


def update_user(conn: Connection, username: str, *, password: str | None = None,
                role: str | None = None, disabled: bool | None = None) -> User:
    row = conn.execute(select(users).where(users.c.username == username)).first()
    if row is None:
        raise AuthError(f"no user {username}")
    values: dict[str, Any] = {}
    if password is not None:
        _check(username, password, role or row.role)
        values["password_hash"] = hash_password(password)
    if role is not None:
        if (Role(role) is Role.MERCHANT) != (row.merchant_id is not None):
            raise AuthError("a merchant account stays a merchant account (and staff stays staff)")
        values["role"] = Role(role).value
    if disabled is not None:
        values["disabled"] = disabled
    if values:
        conn.execute(users.update().where(users.c.id == row.id).values(**values))
    if password is not None or disabled:  # a changed password or a disabled account: log out
        conn.execute(delete(api_tokens).where(api_tokens.c.user_id == row.id))
    return _user(conn.execute(select(users).where(users.c.id == row.id)).one())


def ensure_user(store_or_engine: Any, username: str, password: str, role: str, *,
                merchant_id: int | None = None) -> User:
    """Create the user, or set its password and role: idempotent (for the demo and start-up)."""
    engine: Engine = getattr(store_or_engine, "engine", store_or_engine)
    with engine.begin() as conn:
        row = conn.execute(select(users).where(users.c.username == username)).first()
        if row is None:
            return create_user(conn, username, password, role, now_ms=now_ms(),
                               merchant_id=merchant_id)
        if row.role == role and verify_password(password, row.password_hash) and not row.disabled:
            return _user(row)
        return update_user(conn, username, password=password, role=role, disabled=False)


def bootstrap_admin(store_or_engine: Any, settings: Settings) -> User | None:
    """Ensure ``settings.first_admin_username`` exists (the settings refused a weak password)."""
    if settings.first_admin_username is None or settings.first_admin_password is None:
        return None
    return ensure_user(store_or_engine, settings.first_admin_username,
                       settings.first_admin_password.get_secret_value(), Role.ADMIN.value)


def authenticate(conn: Connection, username: str, password: str) -> User | None:
    row = conn.execute(select(users).where(users.c.username == username)).first()
    if row is None:
        verify_password(password, _DUMMY_HASH)  # same work for unknown users: no user probe
        return None
    if not verify_password(password, row.password_hash) or row.disabled:
        return None
    return _user(row)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """``secrets.token_urlsafe(TOKEN_BYTES)`` that does not begin with "-": pasted after a
    command-line option (``scale-sim evaluate --token …``), such a token is taken for an
    option and refused (one token in 64 was). Costs 1/64 of one character's entropy."""
    while True:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if not token.startswith("-"):
            return token


def issue_token(conn: Connection, user: User, *, now_ms: int, ttl_s: int) -> tuple[str, int]:
    """A new bearer token for ``user``: (token, expires_ms). Expired tokens are purged."""
    conn.execute(delete(api_tokens).where(api_tokens.c.expires_ms <= now_ms))
    token = new_token()
    expires = now_ms + ttl_s * 1000
    conn.execute(api_tokens.insert().values(token_sha256=_sha256(token), user_id=user.id,
                                            created_ms=now_ms, expires_ms=expires))
    return token, expires


def user_for_token(conn: Connection, token: str, *, now_ms: int) -> User | None:
    q = (select(users).join(api_tokens, api_tokens.c.user_id == users.c.id)
         .where(api_tokens.c.token_sha256 == _sha256(token), api_tokens.c.expires_ms > now_ms,
                users.c.disabled.is_(False)))
    row = conn.execute(q).first()
    return None if row is None else _user(row)


def revoke_token(conn: Connection, token: str) -> None:
    conn.execute(delete(api_tokens).where(api_tokens.c.token_sha256 == _sha256(token)))
