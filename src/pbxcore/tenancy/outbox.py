"""The mail outbox sender: delivers the rows of ``mail_outbox`` to an SMTP server.

Mail is queued as a :class:`~pbxcore.tenancy.models.MailMessage` row in the same transaction
as the change it tells about (the welcome mail with its client admin), so a committed change
always has its mail and a rolled-back one never does. An :class:`Outbox` then sends it::

    settings = SmtpSettings.from_mapping({"host": "smtp.example.net", "security": "starttls",
                                          "username": "pbx", "password": "...",
                                          "sender": "PBX <noreply@example.net>"})
    outbox = Outbox(db, settings)
    outbox.start()            # the loop: wakes on notify() or every poll_interval
    ctx.mail_queued = outbox.notify   # called after a commit that queued mail
    ...
    await outbox.stop()

``await outbox.run_once()`` is one round (what the loop runs, and what tests call): it claims
up to ``batch`` due messages with one atomic ``UPDATE ... SET claimed_until`` (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL), so several nodes on one database never take the same message;
sends each one; and records the outcome. A sent message gets ``sent_at``. A failed attempt
(server down, timeout, authentication refused, recipient rejected with a 5xx, ...) counts in
``attempts``, keeps its error in ``last_error`` and waits ``base_delay * 2**(attempts-1)``
(at most ``max_delay``) in ``next_attempt_at``. After ``max_attempts`` failed attempts a
message is left as failed: still in the table, ``last_error`` says it was given up, and no
round claims it again. Rows are never deleted. A node that dies holding a claim delays its
messages by ``claim_seconds``; another node takes them afterwards.

Delivery is at least once: a message the SMTP server accepted is sent again only if this node
could not record ``sent_at`` afterwards (database gone, or the claim ran out). The
``Message-ID`` comes from the row id, so such a repeat is the same message to the reader.

The sender is a platform worker, not a request handler: it reads the outbox of every operator
and goes to the database directly rather than through the scoped repositories of
:mod:`pbxcore.tenancy.store`. The SMTP password never appears in ``repr()``, the log or
``last_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, Literal, get_args

import aiosmtplib
from sqlalchemy import func, or_, select, update

from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database

__all__ = [
    "Outbox",
    "RunCounts",
    "Security",
    "SmtpSettings",
    "build_email",
    "mail_backlog",
    "mail_state",
]

log = logging.getLogger(__name__)

Security = Literal["none", "starttls", "tls"]
MAX_ERROR_CHARS = 2000
GAVE_UP = "gave up after {n} attempts: "


@dataclass(frozen=True, repr=False)
class SmtpSettings:
    """Where and how the outbox sends mail.

    ``security``: ``"none"`` (plain SMTP, no upgrade even if offered), ``"starttls"``
    (STARTTLS required, port 25 or 587) or ``"tls"`` (TLS from the first byte, port 465).
    Certificates are verified against the system's CAs, or only ``ca_file`` when given.
    ``username``/``password`` turn on SMTP AUTH, which needs ``starttls`` or ``tls``.
    ``sender`` is the ``From`` (``noreply@example.net`` or ``PBX <noreply@example.net>``);
    ``timeout`` bounds each SMTP step in seconds. ``helo_name`` is the name given in EHLO
    (the host's name when unset).
    """

    host: str
    sender: str
    port: int = 25
    security: Security = "none"
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    ca_file: str | None = None
    helo_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError("smtp host: must be a host name or address")
        if not isinstance(self.port, int) or isinstance(self.port, bool):
            raise ValueError(f"smtp port: must be an integer, got {self.port!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"smtp port: must be 1..65535, got {self.port}")
        if self.security not in get_args(Security):
            raise ValueError(f"smtp security: must be none, starttls or tls, got {self.security!r}")
        if not isinstance(self.timeout, int | float) or not 0 < self.timeout < math.inf:
            raise ValueError(
                f"smtp timeout: must be a positive number of seconds, got {self.timeout!r}"
            )
        _, addr = parseaddr(self.sender)
        if "@" not in addr:
            raise ValueError(f"smtp sender: must be an e-mail address, got {self.sender!r}")
        if (self.username is None) != (self.password is None):
            raise ValueError("smtp username and password: give both or neither")
        if self.username is not None and self.security == "none":
            raise ValueError("smtp username: AUTH needs security starttls or tls")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SmtpSettings:
        """The settings from a config table (a TOML ``[smtp]`` section, say).

        Keys are the field names; ``from`` is accepted for ``sender``, ``password_file``
        (a file holding the password) for ``password``. Without ``port``, ``tls`` uses 465
        and the others 25. An unknown key or a bad value raises :class:`ValueError`
        naming it.
        """
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = {"from": "sender"}.get(key, key)
            if name == "password_file":
                try:
                    values["password"] = Path(value).read_text().strip()
                except OSError as exc:
                    raise ValueError(f"smtp password_file: cannot read: {exc.strerror}") from exc
            elif name in known:
                values[name] = value
            else:
                raise ValueError(f"smtp {key}: unknown setting")
        for name in ("host", "sender"):
            if name not in values:
                raise ValueError(f"smtp {name}: required")
        if "port" not in values:
            values["port"] = 465 if values.get("security") == "tls" else 25
        return cls(**values)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown.append(f"{f.name}={'***' if f.name == 'password' and value else repr(value)}")
        return f"SmtpSettings({', '.join(shown)})"

    @property
    def sender_address(self) -> str:
        """The bare address of ``sender`` (the envelope's MAIL FROM)."""
        return parseaddr(self.sender)[1]

    def tls_context(self) -> ssl.SSLContext | None:
        if self.security == "none":
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def client(self) -> aiosmtplib.SMTP:
        """An unconnected SMTP client with these settings."""
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.security == "tls",
            start_tls=self.security == "starttls",
            tls_context=self.tls_context(),
            timeout=self.timeout,
            local_hostname=self.helo_name,
        )

    def scrub(self, text: str) -> str:
        """``text`` without the password in it (an error message, before it is stored)."""
        if self.password:
            text = text.replace(self.password, "***")
        return text


def build_email(msg: m.MailMessage, sender: str) -> EmailMessage:
    """The RFC 5322 message of an outbox row: From, To, Subject, Date (when it was queued),
    a Message-ID made from the row id (the same on every attempt) and a UTF-8 text body."""
    email = EmailMessage()
    email["From"] = sender
    email["To"] = msg.to_addr
    email["Subject"] = msg.subject
    email["Date"] = format_datetime(msg.created_at)
    domain = parseaddr(sender)[1].rpartition("@")[2]
    email["Message-ID"] = f"<{msg.id}@{domain}>"
    email.set_content(msg.body, charset="utf-8")
    return email


def mail_state(msg: m.MailMessage, max_attempts: int) -> Literal["sent", "queued", "failed"]:
    """Where an outbox row stands for an outbox with ``max_attempts``."""
    if msg.sent_at is not None:
        return "sent"
    return "failed" if msg.attempts >= max_attempts else "queued"


async def mail_backlog(db: Database, max_attempts: int = 30) -> int:
    """Messages waiting in the outbox: not sent, not given up (for metrics; one count)."""
    mail = m.MailMessage
    query = (
        select(func.count())
        .select_from(mail)
        .where(mail.sent_at.is_(None), mail.attempts < max_attempts)
    )
    async with db.session() as session:
        return int(await session.scalar(query) or 0)


@dataclass(frozen=True)
class RunCounts:
    """What one :meth:`Outbox.run_once` did: ``claimed`` messages, of which ``sent``,
    ``deferred`` (failed, will be retried), ``failed`` (failed for the last time) and
    ``released`` (given back untried as the claim was running out or the loop stopping, or
    failed after another node had taken it over)."""

    claimed: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    released: int = 0


class _ConnectionFailedError(Exception):
    """The SMTP server could not be reached or refused the session (not one message)."""


class Outbox:
    """The sender of one node; see the module docstring."""

    def __init__(
        self,
        db: Database,
        settings: SmtpSettings,
        *,
        batch: int = 20,
        base_delay: float = 30.0,
        max_delay: float = 3600.0,
        max_attempts: int = 30,
        claim_seconds: float = 120.0,
        poll_interval: float = 30.0,
        now: Callable[[], datetime] = m.utcnow,
    ) -> None:
        if batch < 1:
            raise ValueError("batch: must be at least 1")
        if not 0 < base_delay <= max_delay:
            raise ValueError("base_delay and max_delay: need 0 < base_delay <= max_delay")
        if max_attempts < 1:
            raise ValueError("max_attempts: must be at least 1")
        if claim_seconds <= 0 or poll_interval <= 0:
            raise ValueError("claim_seconds and poll_interval: must be positive")
        self.db = db
        self.settings = settings
        self.batch = batch
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.claim_seconds = claim_seconds
        self.poll_interval = poll_interval
        self.now = now
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def __repr__(self) -> str:
        return f"Outbox({self.db!r}, {self.settings!r})"

    def backoff(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt."""
        delay = self.base_delay * 2 ** min(max(attempts - 1, 0), 60)
        return timedelta(seconds=min(delay, self.max_delay))

    # -- one round --------------------------------------------------------------------------

    async def run_once(self) -> RunCounts:
        """Claim the due messages, send them, record each outcome; the counts."""
        claimed_until = self.now() + timedelta(seconds=self.claim_seconds)
        messages = await self._claim(claimed_until)
        if not messages:
            return RunCounts()
        # stop sending well before the claim runs out, so no other node takes a message
        # while it is on the wire; what is left is released for the next round
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.claim_seconds * 0.75
        sent = deferred = failed = released = 0
        client: aiosmtplib.SMTP | None = None
        down: str | None = None  # the connection error, once the server proved unreachable
        try:
            for msg in messages:
                _raise_if_cancelled()
                remaining = deadline - loop.time()
                if remaining <= 0 or self._stopping.is_set():
                    await self._release(msg, claimed_until)
                    released += 1
                    continue
                error = down
                try:
                    email = build_email(msg, self.settings.sender)
                except ValueError as exc:  # a header the row cannot make (a line break)
                    error = f"cannot build the message: {exc}"
                if error is None:
                    try:
                        async with asyncio.timeout(remaining):
                            if client is None:
                                client = await self._connect()
                            await client.send_message(
                                email,
                                sender=self.settings.sender_address,
                                recipients=[msg.to_addr],
                            )
                    except _ConnectionFailedError as exc:
                        error = down = str(exc)
                    except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
                        error = _describe(exc)
                        await _close(client)
                        client = None
                if error is None:
                    await self._mark_sent(msg)
                    sent += 1
                else:
                    outcome = await self._mark_failed(
                        msg, claimed_until, self.settings.scrub(error)
                    )
                    if outcome == "failed":
                        failed += 1
                    elif outcome == "deferred":
                        deferred += 1
                    else:
                        released += 1
        finally:
            await _close(client)
        return RunCounts(len(messages), sent, deferred, failed, released)

    async def _connect(self) -> aiosmtplib.SMTP:
        client = self.settings.client()
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
            await _close(client)
            raise _ConnectionFailedError(
                f"{self.settings.host}:{self.settings.port}: {_describe(exc)}"
            ) from exc
        return client

    async def _claim(self, claimed_until: datetime) -> list[m.MailMessage]:
        now = self.now()
        mail = m.MailMessage
        due = (
            mail.sent_at.is_(None),
            mail.next_attempt_at <= now,
            mail.attempts < self.max_attempts,
            or_(mail.claimed_until.is_(None), mail.claimed_until < now),
        )
        # the batch is picked once, in a materialized CTE: as a plain IN (subquery), PostgreSQL
        # may run the LIMIT ... SKIP LOCKED subquery more than once and claim more than a
        # batch. The conditions again on the UPDATE: PostgreSQL re-checks them on a row that
        # another transaction changed meanwhile. SQLite takes one writer at a time.
        pick = (
            select(mail.id)
            .where(*due)
            .order_by(mail.next_attempt_at, mail.id)
            .limit(self.batch)
            .with_for_update(skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        stmt = (
            update(mail)
            .where(mail.id.in_(select(pick.c.id)), *due)
            .values(claimed_until=claimed_until)
            .returning(mail)
            .execution_options(synchronize_session=False)
        )
        async with self.db.session() as session:
            rows = list((await session.execute(stmt)).scalars())
            await session.commit()
        rows.sort(key=lambda r: (r.next_attempt_at, r.id))
        return rows

    async def _mark_sent(self, msg: m.MailMessage) -> None:
        mail = m.MailMessage
        async with self.db.session() as session:
            await session.execute(
                update(mail)
                .where(mail.id == msg.id, mail.sent_at.is_(None))
                .values(sent_at=self.now(), claimed_until=None)
                .execution_options(synchronize_session=False)
            )
            await session.commit()

    async def _mark_failed(
        self, msg: m.MailMessage, claimed_until: datetime, error: str
    ) -> Literal["deferred", "failed", "lost"]:
        """Count the failed attempt: ``failed`` if it was the last one, ``lost`` if the claim
        had run out and another node holds the message now (its outcome counts, not ours)."""
        attempts = msg.attempts + 1
        last = attempts >= self.max_attempts
        text = (GAVE_UP.format(n=attempts) if last else "") + error
        log.warning("mail %s: attempt %d failed: %s", msg.id, attempts, text)
        mail = m.MailMessage
        async with self.db.session() as session:
            # only while the claim is still ours: else another node has the message now
            result = await session.execute(
                update(mail)
                .where(mail.id == msg.id, mail.claimed_until == claimed_until)
                .where(mail.sent_at.is_(None))
                .values(
                    attempts=attempts,
                    last_error=text[:MAX_ERROR_CHARS],
                    next_attempt_at=self.now() + self.backoff(attempts),
                    claimed_until=None,
                )
                .execution_options(synchronize_session=False)
            )
            await session.commit()
        if not _rowcount(result):
            return "lost"
        return "failed" if last else "deferred"

    async def _release(self, msg: m.MailMessage, claimed_until: datetime) -> None:
        mail = m.MailMessage
        async with self.db.session() as session:
            await session.execute(
                update(mail)
                .where(mail.id == msg.id, mail.claimed_until == claimed_until)
                .values(claimed_until=None)
                .execution_options(synchronize_session=False)
            )
            await session.commit()

    # -- the loop ---------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake the loop now (call it after committing a transaction that queued mail).

        Call it from the event loop's thread."""
        self._wake.set()

    def start(self) -> None:
        """Run rounds in a task until :meth:`stop`: on :meth:`notify`, every
        ``poll_interval`` seconds, and at once again while rounds come back full."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("the outbox is already running")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mail outbox")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the loop: the round in progress ends after the message on the wire (the rest
        of its claims are released), or is cancelled after ``grace`` seconds (its claims run
        out and another round sends those messages)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self._stopping.clear()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                counts = await self.run_once()
            except Exception:
                log.exception("mail outbox round failed")
                counts = RunCounts()
            _raise_if_cancelled()
            if self._stopping.is_set():
                break
            if counts.claimed >= self.batch:
                continue  # more may be due
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()


def _rowcount(result: Any) -> int:
    count: int = result.rowcount
    return count


def _raise_if_cancelled() -> None:
    # Python 3.11's asyncio.wait_for (under aiosmtplib) loses a cancel that comes as its
    # future completes; the task still counts it, so honour it between messages
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        parts = [f"{e.recipient}: {e.code} {e.message}" for e in exc.recipients]
        return "recipient refused: " + "; ".join(parts)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.code} {exc.message}"
    if isinstance(exc, TimeoutError):
        return f"timed out: {exc}" if str(exc) else "timed out"
    return f"{type(exc).__name__}: {exc}"


async def _close(client: aiosmtplib.SMTP | None) -> None:
    """Say QUIT if the session is still up, else just drop it."""
    if client is None:
        return
    if client.is_connected:
        try:
            async with asyncio.timeout(client.timeout or 5):
                await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()
