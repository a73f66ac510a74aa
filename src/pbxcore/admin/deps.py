"""What every router depends on: the server's context, the caller's store, pages, JSON.

Handlers get a :class:`~pbxcore.tenancy.store.Store` for the caller from ``CurrentStore``
and reach data only through its scopes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from starlette.responses import Response

from pbxcore.admin.auth import LoginLimiter, SessionCache, cached_principal, resolve_token
from pbxcore.admin.errors import ApiError
from pbxcore.tenancy.db import Database
from pbxcore.tenancy.readcache import ReadCache
from pbxcore.tenancy.secrets import SecretBox
from pbxcore.tenancy.store import ChangeSink, Principal, Store

__all__ = [
    "AdminContext",
    "ApiSettings",
    "CurrentPage",
    "CurrentStore",
    "Page",
    "context",
    "json_body_response",
    "json_response",
    "page_body",
    "page_response",
]


@dataclass(slots=True)
class ApiSettings:
    token_ttl_s: int = 3600
    session_revalidate_s: float = 5.0
    login_failures_per_user: int = 5
    login_failures_per_ip: int = 20
    login_window_s: float = 300.0
    login_url_scheme: str = "https"
    max_body_bytes: int = 1_000_000
    max_upload_bytes: int = 12_000_000  # a prompt: 10 minutes of PCM16 at 8 kHz, and more


@dataclass(slots=True)
class AdminContext:
    """What the API needs from the running server."""

    db: Database
    secrets: SecretBox
    sink: ChangeSink | None = None
    settings: ApiSettings = field(default_factory=ApiSettings)
    sessions: SessionCache = field(default_factory=SessionCache)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    # called after an outbox row is committed, so the sender wakes up at once
    mail_queued: Callable[[], None] | None = None
    # a trunk's live state (registration, channels) from the call layer, by trunk id
    trunk_status: Callable[[str], dict[str, Any]] | None = None
    # list answers kept while the database is unchanged (Store.read_through)
    reads: ReadCache = field(default_factory=ReadCache)
    # /ready: the server's checks beside the database's, name -> what is wrong (None: ok)
    readiness: Callable[[], dict[str, str | None]] | None = None
    # /metrics: the Prometheus text of the server's metrics
    metrics: Callable[[], Awaitable[bytes]] | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.sessions.revalidate_s = s.session_revalidate_s
        self.limiter = LoginLimiter(
            s.login_failures_per_user, s.login_failures_per_ip, s.login_window_s
        )


def json_response(data: Any, status: int = 200) -> Response:
    """Lean serialization: the views are JSON types already, so no second validation."""
    return Response(
        json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        status_code=status,
        media_type="application/json",
    )


def page_response(items: list[dict[str, Any]], total: int) -> Response:
    return json_response({"items": items, "total": total})


def page_body(items: list[dict[str, Any]], total: int) -> bytes:
    """The JSON of a page, for an answer kept by ``Store.read_through``."""
    return json.dumps(
        {"items": items, "total": total}, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def json_body_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def context(request: Request) -> AdminContext:
    ctx: AdminContext = request.app.state.pbx
    return ctx


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthorized",
            "send Authorization: Bearer <token> (POST /api/v1/auth/token gives one)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def store(request: Request) -> AsyncIterator[Store]:
    """The caller's store (401 without a valid token); its session, opened when the handler
    first needs it (a kept answer or a recently seen token needs none), closes after the
    answer."""
    ctx = context(request)
    token = _bearer(request)
    principal: Principal | None = cached_principal(ctx.sessions, token)
    if principal is None:
        async with ctx.db.read_session() as session:
            principal = await resolve_token(session, ctx.sessions, token)
    store = Store(
        ctx.db.sessions, principal, secrets=ctx.secrets, sink=ctx.sink, reads=ctx.reads, db=ctx.db
    )
    async with ctx.db.guard():
        try:
            yield store
        finally:
            await store.close()


# scope "function": the session (and its pooled connection) ends when the handler returns,
# before the answer is written to a slow client
CurrentStore = Annotated[Store, Depends(store, scope="function")]


@dataclass(frozen=True, slots=True)
class Page:
    limit: int = 50
    offset: int = 0


async def page(  # async: no thread pool hop
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size, 1..1000.")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip.")] = 0,
) -> Page:
    """``limit`` and ``offset`` of a list (out of range: 422 naming the parameter)."""
    return Page(limit, offset)


CurrentPage = Annotated[Page, Depends(page)]
