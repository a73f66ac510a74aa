"""Outbound registration: trunks with ``register: true`` register to their carriers.

:class:`TrunkRegistrations` keeps one task per such trunk of the current snapshot: a
REGISTER with the trunk's credentials (digest, answered by the stack), a refresh before
the granted expiry (at 80 % of it, at least 30 s early for long ones), exponential backoff
after a failure (5 s doubling up to 5 min), and an un-REGISTER when the trunk goes away or
the server stops. The state of each trunk is :meth:`status` (for the API); each change of
it is reported to :attr:`TrunkRegistrations.on_state`, if set (platform events).

When the snapshot changes (a trunk added, changed, disabled, deleted), :meth:`sync` starts
and stops tasks to match; the server calls it from the snapshot service's listener.

A carrier sends its calls for a registered trunk to the Contact we registered. Each
trunk's Contact carries a ``line`` parameter with a random token (like the ``line`` of
desk phones), so :meth:`trunk_for_request` recognises the trunk by the token in the
Request-URI, or by the source address being the registrar's: a call that carries neither
is not the trunk's, whatever its From says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from pbxcore.sip.errors import SipParseError
from pbxcore.sip.message import Request
from pbxcore.sip.stack import SipStack, StaticCredentials
from pbxcore.sip.transaction import TransactionTimeoutError
from pbxcore.sip.uri import Uri
from pbxcore.tenancy.compile import TrunkConfig
from pbxcore.tenancy.snapshot import Snapshot

__all__ = ["TrunkRegistrations", "TrunkStatus"]

log = logging.getLogger("pbxcore.trunks")

EXPIRES = 3600
MIN_RETRY, MAX_RETRY = 5.0, 300.0


@dataclass(slots=True)
class TrunkStatus:
    trunk_id: str
    state: str = "registering"  # registering | registered | failed | unregistered
    expires_at: float | None = None  # wall clock
    last_status: int | None = None
    last_error: str | None = None
    attempts: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "trunk_id": self.trunk_id,
            "state": self.state,
            "expires_in": None
            if self.expires_at is None
            else max(0, int(self.expires_at - time.time())),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "attempts": self.attempts,
        }


class TrunkRegistrations:
    def __init__(
        self,
        stack: SipStack,
        snapshot: Callable[[], Snapshot],
        password: Callable[[bytes], str],
        *,
        expires: int = EXPIRES,
        min_retry: float = MIN_RETRY,
        max_retry: float = MAX_RETRY,
    ) -> None:
        self.stack = stack
        self._snapshot = snapshot
        self._password = password
        self.expires = expires
        self.min_retry, self.max_retry = min_retry, max_retry
        self._tasks: dict[str, tuple[TrunkConfig, asyncio.Task[None]]] = {}
        self._status: dict[str, TrunkStatus] = {}
        self._lines: dict[str, str] = {}  # line token -> trunk id
        self._line_of: dict[str, str] = {}  # trunk id -> its line token
        self._registrar: dict[str, str] = {}  # trunk id -> the address it registers to
        # trunk id -> its operator's id (kept after the trunk goes: its un-REGISTER is later)
        self._operator_of: dict[str, str] = {}
        # on_state(operator_id, status, previous_state) after a trunk's state changed;
        # it must not raise, nor block
        self.on_state: Callable[[str, TrunkStatus, str | None], None] | None = None

    def status(self, trunk_id: str) -> TrunkStatus | None:
        return self._status.get(trunk_id)

    def statuses(self) -> list[TrunkStatus]:
        """The state of every registering trunk (for metrics)."""
        return list(self._status.values())

    def trunk_for_request(self, request: Request, source_host: str) -> str | None:
        """The id of the registered trunk a carrier's INVITE is for: its Request-URI
        carries the trunk's ``line`` token, or it comes from the address the trunk
        registers to. None otherwise (then it is nobody's call by registration)."""
        uri = request.uri
        token = uri.param("line") if uri.is_sip else None
        if token:
            trunk_id = self._lines.get(token.lower())
            if trunk_id is not None and trunk_id in self._tasks:
                return trunk_id
        host = source_host.strip().removeprefix("[").removesuffix("]")
        for trunk_id, address in self._registrar.items():
            status = self._status.get(trunk_id)
            if address == host and status is not None and status.state == "registered":
                return trunk_id
        return None

    def sync(self, _snapshot: Snapshot | None = None) -> None:
        """Start a task for every trunk that registers, stop those of trunks that don't."""
        wanted: dict[str, TrunkConfig] = {}
        for operator_id, operator in self._snapshot().operators.items():
            for trunk in operator.trunks.values():
                if trunk.register and trunk.enabled and trunk.auth_username:
                    wanted[trunk.id] = trunk
                    self._operator_of[trunk.id] = operator_id
        for trunk_id, (trunk, task) in list(self._tasks.items()):
            if wanted.get(trunk_id) != trunk:
                task.cancel()
                del self._tasks[trunk_id]
        loop = asyncio.get_running_loop()
        for trunk_id, trunk in wanted.items():
            if trunk_id not in self._tasks:
                status = self._status[trunk_id] = TrunkStatus(trunk_id)
                self._changed(status, None)
                task = loop.create_task(self._run(trunk, status), name=f"register {trunk_id}")
                self._tasks[trunk_id] = (trunk, task)
        for trunk_id in list(self._status):
            if trunk_id not in wanted:
                del self._status[trunk_id]
                self._registrar.pop(trunk_id, None)
                token = self._line_of.pop(trunk_id, None)
                if token is not None:
                    self._lines.pop(token, None)

    async def close(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self, trunk: TrunkConfig, status: TrunkStatus) -> None:
        delay = self.min_retry
        try:
            while True:
                granted = await self._register(trunk, status, self.expires)
                if granted:
                    delay = self.min_retry
                    await asyncio.sleep(max(1.0, min(granted * 0.8, granted - 30)))
                    continue
                self._set_state(status, "failed")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry)
        except asyncio.CancelledError:
            if status.state == "registered":
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._register(trunk, status, 0), 2)
                self._set_state(status, "unregistered")
            raise

    async def _register(self, trunk: TrunkConfig, status: TrunkStatus, expires: int) -> int:
        """One REGISTER (``expires`` 0: unregister); the granted expiry, 0 on failure."""
        status.attempts += 1
        aor = f"sip:{trunk.auth_username}@{trunk.host}"
        try:
            target = await self.stack.resolve(
                Uri.parse(f"sip:{trunk.host}:{trunk.port};transport={trunk.transport}")
            )
        except (SipParseError, ValueError, OSError) as exc:
            status.last_error = f"cannot resolve {trunk.host}: {exc}"
            return 0
        token = self._line_of.get(trunk.id)
        if token is None:
            token = self._line_of[trunk.id] = secrets.token_hex(12)
            self._lines[token] = trunk.id
        self._registrar[trunk.id] = target.host
        contact = self.stack.contact_for(target)
        request = self.stack.new_request(
            "REGISTER",
            f"sip:{trunk.host}",
            from_=f"<{aor}>",
            to=f"<{aor}>",
            target=target,
            headers=[("Expires", str(expires))],
            call_id=f"reg-{trunk.id}@pbxcore",
            contact=f"{contact[:-1]};line={token}>",
        )
        password = self._password(trunk.auth_password) if trunk.auth_password else ""
        credentials = StaticCredentials(trunk.auth_username or "", password)
        try:
            response = await self.stack.request(request, target=target, credentials=credentials)
        except (TransactionTimeoutError, ConnectionError, OSError) as exc:
            status.last_error, status.last_status = f"no answer: {exc}", None
            log.info("trunk %s: REGISTER to %s failed: %s", trunk.id, trunk.host, exc)
            return 0
        status.last_status = response.status
        if not 200 <= response.status < 300:
            status.last_error = f"{response.status} {response.reason}"
            log.info("trunk %s: REGISTER to %s: %s", trunk.id, trunk.host, status.last_error)
            return 0
        if expires == 0:
            return 0
        granted = _granted(response, expires)
        status.last_error = None
        status.expires_at = time.time() + granted
        self._set_state(status, "registered")
        return granted

    def _set_state(self, status: TrunkStatus, state: str) -> None:
        previous = status.state
        status.state = state
        if previous != state:
            self._changed(status, previous)

    def _changed(self, status: TrunkStatus, previous: str | None) -> None:
        hook = self.on_state
        operator_id = self._operator_of.get(status.trunk_id)
        if hook is not None and operator_id is not None:
            try:
                hook(operator_id, status, previous)
            except Exception:  # an observer's bug must not stop the registration
                log.exception("trunk %s: the state hook failed", status.trunk_id)


def _granted(response: object, asked: int) -> int:
    """The expiry the registrar granted: the Contact's expires, else Expires, else ours."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return asked
    for value in headers.get_all("contact"):
        for part in value.split(";")[1:]:
            name, _, number = part.strip().partition("=")
            if name.lower() == "expires" and number.strip().isdigit():
                return int(number.strip())
    value = headers.get("expires")
    if value is not None and value.strip().isdigit():
        return int(value.strip())
    return asked
