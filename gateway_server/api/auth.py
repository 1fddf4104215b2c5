"""The FastAPI dependencies that guard routes; the accounts themselves (passwords, tokens,
roles) are ``gateway_server.registry.accounts``, re-exported here for the routes.

* Unauthenticated → 401 with ``WWW-Authenticate: Bearer``; wrong role → 403. A merchant
  account is refused (403) by every staff route: ``require_user`` admits staff only,
  ``require_account`` any account (``/auth/me``, ``/auth/logout``), ``require_merchant``
  merchant accounts only.

``CurrentUser`` / ``AdminUser`` / ``AnyUser`` / ``MerchantUser`` are the ``Annotated``
dependencies routes declare;
``ConnDep`` gives a route one transaction (committed before the response is sent) and
translates register errors to 404 / 409 / 422.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Connection

from gateway_server.api.deps import StoreDep
from gateway_server.registry.accounts import (  # the account API, re-exported for the routes
    TOKEN_URL,
    AuthError,
    Role,
    User,
    _sha256,  # the tests read what is stored of a token
    authenticate,
    bootstrap_admin,
    create_user,
    ensure_user,
    hash_password,
    issue_token,
    now_ms,
    revoke_token,
    update_user,
    user_exists,
    user_for_token,
    verify_password,
)
from gateway_server.registry.register import ConflictError, NotFoundError, RegistryError

__all__ = [  # the account API (re-exported) and the dependencies below
    "R401",
    "R403",
    "R404",
    "R409",
    "TOKEN_URL",
    "UNAUTHORIZED",
    "AdminUser",
    "AnyUser",
    "AuthError",
    "ConnDep",
    "CurrentUser",
    "MerchantUser",
    "Role",
    "User",
    "_sha256",
    "authenticate",
    "bearer_scheme",
    "bootstrap_admin",
    "create_user",
    "ensure_user",
    "get_conn",
    "hash_password",
    "issue_token",
    "now_ms",
    "require_account",
    "require_admin",
    "require_merchant",
    "require_user",
    "revoke_token",
    "update_user",
    "user_exists",
    "user_for_token",
    "verify_password",
]

# -- FastAPI dependencies ------------------------------------------------------------------

bearer_scheme = OAuth2PasswordBearer(
    tokenUrl=TOKEN_URL, auto_error=False,
    description="Bearer token from POST /api/v1/auth/token (roles: admin, inspector, "
    "merchant)")

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def require_account(store: StoreDep,
                    token: Annotated[str | None, Depends(bearer_scheme)]) -> User:
    """The account of a valid bearer token, any role; else 401 (``WWW-Authenticate``)."""
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not authenticated",
                            headers=UNAUTHORIZED)
    with store.engine.connect() as conn:
        user = user_for_token(conn, token, now_ms=now_ms())
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired token",
                            headers=UNAUTHORIZED)
    return user


AnyUser = Annotated[User, Depends(require_account)]


def require_user(user: AnyUser) -> User:
    """A staff account (admin or inspector): a merchant account gets 403 on every staff
    route, so no route written before merchant accounts existed can leak across merchants."""
    if not user.is_staff:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "staff account required")
    return user


CurrentUser = Annotated[User, Depends(require_user)]


def require_merchant(user: AnyUser) -> User:
    """A merchant account (with its merchant id), else 403."""
    if user.role is not Role.MERCHANT or user.merchant_id is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "merchant account required")
    return user


MerchantUser = Annotated[User, Depends(require_merchant)]


def require_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    return user


AdminUser = Annotated[User, Depends(require_admin)]


def get_conn(store: StoreDep) -> Iterator[Connection]:
    """One transaction per request, committed before the response is sent; register
    errors become 404 / 409 / 422 (the seam where they are translated)."""
    with store.engine.begin() as conn:
        try:
            yield conn
        except NotFoundError as err:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(err)) from err
        except ConflictError as err:
            raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from err
        except RegistryError as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
                "loc": ["body", err.field] if err.field else ["body"], "msg": str(err),
                "type": "value_error"}]) from err


ConnDep = Annotated[Connection, Depends(get_conn, scope="function")]

# OpenAPI ``responses`` for documented errors
R401: dict[int | str, dict[str, Any]] = {401: {"description": "Not authenticated (no, invalid "
                                              "or expired bearer token)"}}
R403: dict[int | str, dict[str, Any]] = {403: {"description": "Admin role required"}}
R404: dict[int | str, dict[str, Any]] = {404: {"description": "Not found"}}
R409: dict[int | str, dict[str, Any]] = {409: {"description": "Conflicts with the register"}}
