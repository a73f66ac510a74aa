"""``/auth``: log in (OAuth2 password flow), who am I, log out, change my password."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from pbxcore.admin.auth import authenticate, end_session, issue_token, revoke_sessions
from pbxcore.admin.deps import CurrentStore, context, json_response
from pbxcore.admin.errors import ApiError
from pbxcore.admin.schemas import In, Password
from pbxcore.tenancy import models as m
from pbxcore.tenancy.secrets import hash_password, verify_password

router = APIRouter(tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str
    expires_in: int


class MeOut(BaseModel):
    user_id: str
    login: str
    role: str
    operator_id: str | None
    tenant_id: str | None


class PasswordChange(In):
    current_password: str = Field(min_length=1, max_length=128)
    new_password: Password


@router.post("/auth/token", response_model=TokenOut, summary="Log in: a bearer token")
async def login(
    request: Request,
    username: Annotated[str, Form(min_length=1, max_length=320)],
    password: Annotated[str, Form(min_length=1, max_length=128)],
) -> Response:
    ctx = context(request)
    ip = request.client.host if request.client else None
    ctx.limiter.check(username, ip)
    async with ctx.db.session() as session:
        user = await authenticate(session, username, password)
        if user is None:
            ctx.limiter.failed(username, ip)
            raise ApiError(
                401,
                "invalid_credentials",
                "wrong username or password",
                headers={"WWW-Authenticate": "Bearer"},
            )
        ctx.limiter.succeeded(username)
        ttl = ctx.settings.token_ttl_s
        token, _principal = await issue_token(session, user, ttl, ip)
    return json_response({"access_token": token, "token_type": "bearer", "expires_in": ttl})


@router.get("/auth/me", response_model=MeOut, summary="Who the token belongs to")
async def me(store: CurrentStore) -> Response:
    p = store.principal
    return json_response(
        {
            "user_id": p.user_id,
            "login": p.login,
            "role": p.role,
            "operator_id": p.operator_id,
            "tenant_id": p.tenant_id,
        }
    )


@router.post("/auth/logout", status_code=204, summary="End this token's session")
async def logout(request: Request, store: CurrentStore) -> Response:
    ctx = context(request)
    session_id = store.principal.session_id
    if session_id is not None:
        await end_session(store.session, ctx.sessions, session_id)
    return Response(status_code=204)


@router.post(
    "/auth/password", status_code=204, summary="Change my password (ends my other sessions)"
)
async def change_password(request: Request, body: PasswordChange, store: CurrentStore) -> Response:
    ctx = context(request)
    p = store.principal
    user = await store.session.get(m.User, p.user_id)
    if user is None or not verify_password(user.password_hash, body.current_password):
        raise ApiError(
            422,
            "validation_error",
            "current_password: wrong password",
            {"field": "current_password"},
        )
    user.password_hash = hash_password(body.new_password)
    user.updated_at = m.utcnow()
    await revoke_sessions(store.session, ctx.sessions, user.id, keep=p.session_id)
    store.record(
        "update", entity="user", row=user, before=None, after={"password": "changed"}, kind=None
    )
    await store.commit()
    return Response(status_code=204)
