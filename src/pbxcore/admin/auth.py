"""Bearer tokens, sessions and login rate limits.

A token is ``<session id>.<secret>``; the ``sessions`` table keeps only SHA-256 of the
secret and the expiry, so a stolen database holds no usable token. A token ends when it
expires, at logout, or when its user's password changes (which ends the user's other
sessions). Validated sessions are cached for ``revalidate_s`` seconds: a revocation on this
node takes effect at once, on another node within that time.

Failed logins are counted per username and per client address in a sliding window; past
the limit the answer is 429 with ``Retry-After`` and the password is not even checked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from pbxcore.admin.errors import ApiError
from pbxcore.tenancy import models as m
from pbxcore.tenancy.secrets import verify_password
from pbxcore.tenancy.store import Principal

__all__ = [
    "LoginLimiter",
    "SessionCache",
    "authenticate",
    "cached_principal",
    "end_session",
    "issue_token",
    "resolve_token",
    "revoke_sessions",
]

_ROLES: frozenset[str] = frozenset({"platform_admin", "operator_admin", "tenant_admin", "user"})


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


@dataclass(slots=True)
class _Cached:
    principal: Principal
    secret_hash: bytes
    expires_at: float  # unix time
    checked_at: float  # monotonic


class SessionCache:
    """Recently validated sessions, so that a request does not always read the table."""

    def __init__(self, revalidate_s: float = 5.0, max_entries: int = 100_000) -> None:
        self.revalidate_s = revalidate_s
        self.max_entries = max_entries
        self._entries: dict[str, _Cached] = {}

    def get(self, session_id: str, secret: str) -> Principal | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        now = time.monotonic()
        if now - entry.checked_at > self.revalidate_s or time.time() >= entry.expires_at:
            del self._entries[session_id]
            return None
        if not hmac.compare_digest(entry.secret_hash, _digest(secret)):
            return None
        return entry.principal

    def put(self, principal: Principal, secret_hash: bytes, expires_at: float) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        assert principal.session_id is not None
        self._entries[principal.session_id] = _Cached(
            principal, secret_hash, expires_at, time.monotonic()
        )

    def drop_user(self, user_id: str, keep: str | None = None) -> None:
        for sid in [s for s, e in self._entries.items() if e.principal.user_id == user_id]:
            if sid != keep:
                del self._entries[sid]

    def drop(self, session_id: str) -> None:
        self._entries.pop(session_id, None)


def principal_of(user: m.User, session_id: str | None) -> Principal:
    role = user.role
    if role not in _ROLES:
        raise ValueError(f"unknown role {role!r} for user {user.id}")
    return Principal(
        user_id=user.id,
        login=user.login,
        role=role,  # type: ignore[arg-type]
        operator_id=user.operator_id,
        tenant_id=user.tenant_id,
        session_id=session_id,
    )


async def issue_token(
    session: AsyncSession, user: m.User, ttl_s: int, client_ip: str | None
) -> tuple[str, Principal]:
    """A new session for ``user``: the token (shown once) and its principal."""
    session_id = m.new_id("ses")
    secret = secrets.token_urlsafe(32)
    now = m.utcnow()
    session.add(
        m.Session(
            id=session_id,
            user_id=user.id,
            secret_hash=_digest(secret),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
            client_ip=client_ip,
        )
    )
    await session.commit()
    return f"{session_id}.{secret}", principal_of(user, session_id)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def _token_parts(token: str) -> tuple[str, str]:
    session_id, dot, secret = token.partition(".")
    if not dot or not session_id.startswith("ses_") or not secret or len(token) > 200:
        raise _unauthorized("the bearer token is not valid")
    return session_id, secret


def cached_principal(cache: SessionCache, token: str) -> Principal | None:
    """The principal of a token validated recently (no database), None if not cached;
    401 for a token that is malformed."""
    return cache.get(*_token_parts(token))


async def resolve_token(session: AsyncSession, cache: SessionCache, token: str) -> Principal:
    """The principal of a bearer token, or 401."""
    session_id, secret = _token_parts(token)
    cached = cache.get(session_id, secret)
    if cached is not None:
        return cached
    row = (
        await session.execute(
            select(m.Session, m.User)
            .join(m.User, m.User.id == m.Session.user_id)
            .where(m.Session.id == session_id)
        )
    ).first()
    if row is None:
        raise _unauthorized("the bearer token is not valid or has been revoked")
    stored, user = row
    if not hmac.compare_digest(stored.secret_hash, _digest(secret)):
        raise _unauthorized("the bearer token is not valid or has been revoked")
    if stored.expires_at <= m.utcnow():
        raise _unauthorized("the bearer token has expired")
    principal = principal_of(user, session_id)
    cache.put(principal, stored.secret_hash, stored.expires_at.timestamp())
    return principal


async def revoke_sessions(
    session: AsyncSession, cache: SessionCache, user_id: str, *, keep: str | None = None
) -> None:
    """End the user's sessions (all, or all but ``keep``)."""
    query = delete(m.Session).where(m.Session.user_id == user_id)
    if keep is not None:
        query = query.where(m.Session.id != keep)
    await session.execute(query)
    cache.drop_user(user_id, keep)


async def end_session(session: AsyncSession, cache: SessionCache, session_id: str) -> None:
    """Logout: the session's row goes, and with it the token."""
    await session.execute(delete(m.Session).where(m.Session.id == session_id))
    await session.commit()
    cache.drop(session_id)


async def authenticate(session: AsyncSession, login: str, password: str) -> m.User | None:
    user = (
        await session.scalars(select(m.User).where(m.User.login == login.strip().lower()))
    ).first()
    ok = verify_password(None if user is None else user.password_hash, password)
    return user if ok else None


class LoginLimiter:
    """Failed logins per username and per client address, in a sliding window."""

    def __init__(
        self, per_user: int = 5, per_ip: int = 20, window_s: float = 300.0, max_keys: int = 100_000
    ) -> None:
        self.per_user, self.per_ip, self.window_s = per_user, per_ip, window_s
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and now - q[0] >= self.window_s:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def check(self, login: str, ip: str | None) -> None:
        """Raise 429 if either key is over its limit."""
        now = time.monotonic()
        for key, limit in ((f"u:{login.lower()}", self.per_user), (f"ip:{ip}", self.per_ip)):
            q = self._recent(key, now)
            if len(q) >= limit:
                retry = max(1, int(self.window_s - (now - q[0])) + 1)
                raise ApiError(
                    429,
                    "too_many_login_failures",
                    "too many failed logins; try again later",
                    {"retry_after_s": retry},
                    headers={"Retry-After": str(retry)},
                )

    def failed(self, login: str, ip: str | None) -> None:
        now = time.monotonic()
        if len(self._failures) >= self.max_keys:
            self._failures.clear()
        for key in (f"u:{login.lower()}", f"ip:{ip}"):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, login: str) -> None:
        self._failures.pop(f"u:{login.lower()}", None)
