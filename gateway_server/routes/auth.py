"""Log in (bearer tokens), who am I, log out.

``POST /auth/token`` takes JSON ``{username, password}`` or the OAuth2 password form
(``application/x-www-form-urlencoded``, what the /docs "Authorize" button sends). The
form is parsed with the standard library, so python-multipart is not needed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from gateway_server import auth
from gateway_server.auth import R401, ConnDep, CurrentUser
from gateway_server.deps import SettingsDep
from gateway_server.ratelimit import R429, login_rate_limit

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


@router.post(
    "/token", response_model=TokenPublic, summary="Log in: get a bearer token",
    description="Exchange a username and password for a bearer token (valid "
    "`settings.token_ttl_s`). JSON or OAuth2 password form. Rate limited per client IP.",
    responses={401: {"description": "Wrong username or password"},
               422: {"description": "Neither JSON nor a password form"}, **R429},
    openapi_extra=_LOGIN_BODY, dependencies=[Depends(login_rate_limit)],
)
def login(body: Annotated[LoginRequest, Depends(login_body)], conn: ConnDep,
          settings: SettingsDep) -> TokenPublic:
    user = auth.authenticate(conn, body.username, body.password)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "incorrect username or password",
                            headers=auth.UNAUTHORIZED)
    token, expires = auth.issue_token(conn, user, now_ms=auth.now_ms(),
                                      ttl_s=settings.token_ttl_s)
    return TokenPublic(access_token=token, expires_ms=expires, role=user.role)


@router.get("/me", response_model=UserPublic, summary="The logged-in user", responses=R401)
def me(user: CurrentUser) -> UserPublic:
    return UserPublic(id=user.id, username=user.username, role=user.role,
                      display_name=user.display_name)


@router.post("/logout", status_code=204, summary="Revoke the bearer token used",
             responses=R401)
def logout(user: CurrentUser, conn: ConnDep,
           token: Annotated[str | None, Depends(auth.bearer_scheme)]) -> None:
    if token:
        auth.revoke_token(conn, token)
