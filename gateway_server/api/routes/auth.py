"""Log in (bearer tokens), who am I, log out.

``POST /auth/token`` takes JSON ``{username, password}`` or the OAuth2 password form
(``application/x-www-form-urlencoded``, what the /docs "Authorize" button sends). The
form is parsed with the standard library, so python-multipart is not needed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from gateway_server.api import auth
from gateway_server.api.auth import R401, AnyUser, ConnDep
from gateway_server.api.deps import SettingsDep
from gateway_server.api.ratelimit import locked_error, login_lockout, login_rate_limit

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenPublic(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_ms: int = Field(description="expiry, UTC ms")
    role: auth.Role


class UserPublic(BaseModel):
    id: int
    username: str
    role: auth.Role
    display_name: str | None = None
    merchant_id: int | None = Field(None, description="a merchant account's merchant")


async def login_body(request: Request) -> LoginRequest:
    """JSON or ``application/x-www-form-urlencoded`` credentials, 422 when neither fits."""
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data: Any
    try:
        if ctype == "application/x-www-form-urlencoded":
            data = {k: v[0] for k, v in parse_qs(raw.decode("utf-8"), keep_blank_values=True)
                    .items()}
        else:
            data = json.loads(raw or b"null")
        return LoginRequest.model_validate(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestValidationError([{"loc": ("body",), "msg": f"unreadable body: {err}",
                                       "type": "value_error"}]) from err
    except ValidationError as err:
        raise RequestValidationError(err.errors(include_url=False)) from err


_LOGIN_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/LoginRequest"}},
    "application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": ["username", "password"],
        "properties": {"grant_type": {"type": "string", "enum": ["password"]},
                       "username": {"type": "string"},
                       "password": {"type": "string", "format": "password"}}}},
}}}


# RFC 6749 §5.1: a response carrying a token must not be stored by any cache
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_TOKEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "A bearer token; never cached (`Cache-Control: no-store`)",
          "headers": {"Cache-Control": {"schema": {"type": "string", "enum": ["no-store"]}},
                      "Pragma": {"schema": {"type": "string", "enum": ["no-cache"]}}}},
    401: {"description": "Wrong username or password (the failure that locks the account "
          "says so and carries `Retry-After`)"},
    422: {"description": "Neither JSON nor a password form"},
    429: {"description": "Too many requests from this client IP, or the account is locked "
          "after `settings.login_lockout_failures` failed logins in a row; retry after "
          "`Retry-After` seconds",
          "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
}


@router.post(
    "/token", response_model=TokenPublic, summary="Log in: get a bearer token",
    description="Exchange a username and password for a bearer token (valid "
    "`settings.token_ttl_s`). JSON or OAuth2 password form. Rate limited per client IP "
    "(behind `settings.trusted_proxies`, the right-most untrusted X-Forwarded-For hop); "
    "an account is locked for `settings.login_lockout_s` seconds after "
    "`settings.login_lockout_failures` failed logins in a row.",
    responses=_TOKEN_RESPONSES, openapi_extra=_LOGIN_BODY,
    dependencies=[Depends(login_rate_limit)],
)
def login(body: Annotated[LoginRequest, Depends(login_body)], conn: ConnDep,
          settings: SettingsDep, request: Request, response: Response) -> TokenPublic:
    lockout = login_lockout(request, settings)
    wait_s = lockout.retry_after(body.username)
    if wait_s > 0:  # refused before the password is even checked: no oracle while locked
        raise locked_error(wait_s, lockout.failures)
    user = auth.authenticate(conn, body.username, body.password)
    if user is None:
        locked_s = lockout.failed(body.username)
        if locked_s > 0:  # this failure locked the account: still a 401, saying so
            lock = locked_error(locked_s, lockout.failures)
            raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                                f"incorrect username or password. {lock.detail}",
                                headers={**auth.UNAUTHORIZED, **(lock.headers or {})})
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "incorrect username or password",
                            headers=auth.UNAUTHORIZED)
    lockout.succeeded(body.username)
    token, expires = auth.issue_token(conn, user, now_ms=auth.now_ms(),
                                      ttl_s=settings.token_ttl_s)
    response.headers.update(NO_STORE)
    return TokenPublic(access_token=token, expires_ms=expires, role=user.role)


@router.get("/me", response_model=UserPublic, summary="The logged-in user", responses=R401)
def me(user: AnyUser) -> UserPublic:
    return UserPublic(id=user.id, username=user.username, role=user.role,
                      display_name=user.display_name, merchant_id=user.merchant_id)


@router.post("/logout", status_code=204, summary="Revoke the bearer token used",
             responses=R401)
def logout(user: AnyUser, conn: ConnDep,
           token: Annotated[str | None, Depends(auth.bearer_scheme)]) -> None:
    if token:
        auth.revoke_token(conn, token)
