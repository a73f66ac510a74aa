"""The mail outbox sender against a real SMTP server (aiosmtpd on 127.0.0.1), on both stores.

Time is the outbox's ``now`` callable: a test moves it past ``next_attempt_at`` instead of
sleeping through a backoff.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update

from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database
from pbxcore.tenancy.outbox import Outbox, RunCounts, SmtpSettings, mail_state
from tests.api_fixtures import Api

SENDER = "Example PBX <noreply@voip.example.net>"
SMTP_USER = "pbx-mailer"
SMTP_PASSWORD = "smtp-s3cret-pw"


class Clock:
    """The outbox's ``now``: moves only when the test says so."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    authenticated: bool


@dataclass
class Collector:
    """aiosmtpd handler: keeps what it was given, refuses the ``reject`` recipients."""

    reject: set[str] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # when set: DATA waits for the gate (a message held "on the wire"), ``entered`` says so
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.reject:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.gate is not None:
            self.entered.set()
            await self.gate.wait()
        content = envelope.original_content or b""
        msg = message_from_bytes(content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.received.append(
            Received(
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                msg,
                server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None,
                bool(session.authenticated),
            )
        )
        self.arrived.set()
        return "250 OK queued"


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


class SmtpServer:
    """An aiosmtpd server in the test's own event loop, on a free port of 127.0.0.1 (kept
    across stop and start, so that the outbox's settings stay right)."""

    def __init__(
        self, handler: Collector, tls: ssl.SSLContext | None = None, **smtp_kwargs: Any
    ) -> None:
        self.handler = handler
        self.tls = tls  # TLS from the first byte (port 465 style)
        self.kwargs = smtp_kwargs
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(self.handler, hostname="mx.test", **self.kwargs),
            "127.0.0.1",
            self.port,
            ssl=self.tls,
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def settings(self, **kw: Any) -> SmtpSettings:
        return SmtpSettings(
            host="127.0.0.1", port=self.port, sender=SENDER, timeout=10, helo_name="pbx.test", **kw
        )


@pytest.fixture
async def smtp() -> Any:
    server = SmtpServer(Collector())
    await server.start()
    yield server
    await server.stop()


async def queue(db: Database, clock: Clock, to: str, subject: str = "Hello", body: str = "") -> str:
    row = m.MailMessage(
        id=m.new_id("mail"),
        to_addr=to,
        subject=subject,
        body=body or f"A message for {to}.\n",
        created_at=clock(),
        next_attempt_at=clock(),
    )
    async with db.session() as session:
        session.add(row)
        await session.commit()
    return row.id


async def stored(db: Database, mail_id: str) -> m.MailMessage:
    async with db.session() as session:
        row = await session.get(m.MailMessage, mail_id)
        assert row is not None
        return row


# -- the welcome mail -------------------------------------------------------------------------


async def create_admin(api: Api, slug: str, username: str, email: str) -> dict[str, Any]:
    op = (await api.get("/operators")).json()["items"]
    op_id = op[0]["id"] if op else (await api.operator())["id"]
    t = await api.tenant(op_id, slug)
    return await api.create(
        f"/tenants/{t['id']}/admins", {"username": username, "email": email, "full_name": "Boss"}
    )


async def test_welcome_mail_arrives(api: Api, smtp: SmtpServer) -> None:
    created = await create_admin(api, "acme", "boss", "boss@acme.example")
    outbox = Outbox(api.ctx.db, smtp.settings())
    counts = await outbox.run_once()
    assert counts == RunCounts(claimed=1, sent=1)
    [got] = smtp.handler.received
    assert got.mail_from == "noreply@voip.example.net"
    assert got.rcpt_tos == ["boss@acme.example"]
    mail = got.message
    assert mail["To"] == "boss@acme.example"
    assert mail["From"] == SENDER
    assert mail["Subject"] == "Welcome to Example Telecom: your PBX Acme"
    assert mail["Date"] is not None and mail["Message-ID"].endswith("@voip.example.net>")
    assert mail.get_content_charset() == "utf-8"
    body = mail.get_content()
    assert "Log in at: https://acme.voip.example.net/" in body
    assert "Username: boss" in body
    assert created["password"] not in body
    async with api.ctx.db.session() as session:
        [row] = (await session.execute(select(m.MailMessage))).scalars()
    assert row.sent_at is not None and row.attempts == 0 and row.claimed_until is None
    assert mail_state(row, outbox.max_attempts) == "sent"
    # sent is sent: another round takes nothing
    assert await outbox.run_once() == RunCounts()
    assert len(smtp.handler.received) == 1


async def test_loop_wakes_on_notify(api: Api, smtp: SmtpServer) -> None:
    outbox = Outbox(api.ctx.db, smtp.settings(), poll_interval=3600)
    api.ctx.mail_queued = outbox.notify
    outbox.start()
    try:
        assert outbox.running
        await create_admin(api, "acme", "boss", "boss@acme.example")
        async with asyncio.timeout(30):  # a safety net, not a measurement
            await smtp.handler.arrived.wait()
    finally:
        await outbox.stop()
    assert not outbox.running
    [got] = smtp.handler.received
    assert got.rcpt_tos == ["boss@acme.example"]


async def test_stop_ends_the_message_on_the_wire_and_releases_the_rest(
    db: Database, smtp: SmtpServer
) -> None:
    clock = Clock()
    ids = [await queue(db, clock, f"user{i}@acme.example") for i in range(3)]
    smtp.handler.gate = asyncio.Event()
    outbox = Outbox(db, smtp.settings(), poll_interval=3600, now=clock)
    outbox.start()
    async with asyncio.timeout(30):  # a safety net, not a measurement
        await smtp.handler.entered.wait()
    # the server answers the DATA only once stop() has begun
    asyncio.get_running_loop().call_soon(smtp.handler.gate.set)
    await outbox.stop()
    assert not outbox.running
    rows = [await stored(db, i) for i in ids]
    assert sum(r.sent_at is not None for r in rows) == 1 == len(smtp.handler.received)
    for row in rows:
        assert row.attempts == 0 and row.claimed_until is None and row.last_error is None
    # the released messages go with the next round
    assert await outbox.run_once() == RunCounts(claimed=2, sent=2)
    assert len({r.rcpt_tos[0] for r in smtp.handler.received}) == 3


async def test_non_ascii_body_and_subject(db: Database, smtp: SmtpServer) -> None:
    clock = Clock()
    await queue(db, clock, "ivan@example.ru", subject="Добро пожаловать", body="Привет, мир\n")
    assert (await Outbox(db, smtp.settings(), now=clock).run_once()).sent == 1
    [got] = smtp.handler.received
    assert got.message["Subject"] == "Добро пожаловать"
    assert got.message.get_content().replace("\r\n", "\n") == "Привет, мир\n"


# -- failures and retries ---------------------------------------------------------------------


async def test_server_down_then_back_delivers_once(db: Database, smtp: SmtpServer) -> None:
    clock = Clock()
    outbox = Outbox(db, smtp.settings(), base_delay=30, max_delay=3600, now=clock)
    await smtp.stop()  # nothing listens on the port now
    mail_id = await queue(db, clock, "boss@acme.example")
    assert await outbox.run_once() == RunCounts(claimed=1, deferred=1)
    row = await stored(db, mail_id)
    assert row.sent_at is None and row.attempts == 1 and row.claimed_until is None
    assert row.last_error and "127.0.0.1" in row.last_error
    assert row.next_attempt_at > clock()
    assert mail_state(row, outbox.max_attempts) == "queued"
    # not due yet: a second round leaves it alone, even with the server back
    assert await outbox.run_once() == RunCounts()
    await smtp.start()
    assert await outbox.run_once() == RunCounts()
    assert smtp.handler.received == []
    clock.t = row.next_attempt_at
    assert await outbox.run_once() == RunCounts(claimed=1, sent=1)
    clock.advance(10 * 3600)
    assert await outbox.run_once() == RunCounts()
    assert len(smtp.handler.received) == 1
    row = await stored(db, mail_id)
    assert row.sent_at is not None and row.attempts == 1


async def test_backoff_doubles_up_to_the_cap(db: Database) -> None:
    clock = Clock()
    # a port nothing listens on: bind one, then let it go
    probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    settings = SmtpSettings(host="127.0.0.1", port=port, sender=SENDER, timeout=5)
    outbox = Outbox(db, settings, base_delay=30, max_delay=100, max_attempts=5, now=clock)
    mail_id = await queue(db, clock, "boss@acme.example")
    waits = []
    for _ in range(4):
        assert (await outbox.run_once()).deferred == 1
        row = await stored(db, mail_id)
        waits.append((row.next_attempt_at - clock()).total_seconds())
        clock.t = row.next_attempt_at
    assert waits == [30, 60, 100, 100]
    assert (await outbox.run_once()).failed == 1
    row = await stored(db, mail_id)
    assert row.attempts == 5 and row.sent_at is None
    assert mail_state(row, outbox.max_attempts) == "failed"


async def test_rejected_recipient_is_kept_retried_then_failed(
    db: Database, smtp: SmtpServer
) -> None:
    clock = Clock()
    smtp.handler.reject.add("nobody@acme.example")
    outbox = Outbox(db, smtp.settings(), max_attempts=2, now=clock)
    bad = await queue(db, clock, "nobody@acme.example")
    good = await queue(db, clock, "boss@acme.example")
    # the refusal of one recipient does not stop the other message of the round
    assert await outbox.run_once() == RunCounts(claimed=2, sent=1, deferred=1)
    assert [r.rcpt_tos for r in smtp.handler.received] == [["boss@acme.example"]]
    row = await stored(db, bad)
    assert row.attempts == 1 and row.sent_at is None and row.next_attempt_at > clock()
    assert row.last_error and "550" in row.last_error and "nobody@acme.example" in row.last_error
    assert (await stored(db, good)).sent_at is not None
    clock.t = row.next_attempt_at
    assert await outbox.run_once() == RunCounts(claimed=1, failed=1)
    row = await stored(db, bad)
    assert row.attempts == 2 and row.sent_at is None
    assert row.last_error and row.last_error.startswith("gave up after 2 attempts: ")
    assert mail_state(row, outbox.max_attempts) == "failed"
    # failed stays in the table and no round takes it again
    clock.advance(30 * 86400)
    assert await outbox.run_once() == RunCounts()
    assert len(smtp.handler.received) == 1


# -- TLS and AUTH -----------------------------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_starttls_and_auth(db: Database, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = SmtpServer(
        Collector(),
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    await server.start()
    try:
        clock = Clock()
        secure = {"security": "starttls", "ca_file": str(cert)}
        # a wrong password: refused, kept, and the password is nowhere in the error
        wrong = Outbox(
            db,
            server.settings(username=SMTP_USER, password="wrong-password-123", **secure),
            now=clock,
        )
        mail_id = await queue(db, clock, "boss@acme.example")
        assert (await wrong.run_once()).deferred == 1
        row = await stored(db, mail_id)
        assert row.last_error and "535" in row.last_error
        assert "wrong-password-123" not in row.last_error
        # plain SMTP to a server that wants STARTTLS: refused too
        clock.t = row.next_attempt_at
        plain = Outbox(db, server.settings(), now=clock)
        assert (await plain.run_once()).deferred == 1
        row = await stored(db, mail_id)
        assert row.attempts == 2 and row.last_error and "530" in row.last_error
        # a certificate the client does not trust: no session
        clock.t = row.next_attempt_at
        untrusted = Outbox(
            db,
            server.settings(username=SMTP_USER, password=SMTP_PASSWORD, security="starttls"),
            now=clock,
        )
        assert (await untrusted.run_once()).deferred == 1
        row = await stored(db, mail_id)
        assert row.attempts == 3 and row.last_error and "certificate" in row.last_error.lower()
        assert server.handler.received == []
        # right password over STARTTLS with the test's CA: delivered
        clock.t = row.next_attempt_at
        good = Outbox(
            db, server.settings(username=SMTP_USER, password=SMTP_PASSWORD, **secure), now=clock
        )
        assert await good.run_once() == RunCounts(claimed=1, sent=1)
        [got] = server.handler.received
        assert got.tls and got.authenticated
        assert got.rcpt_tos == ["boss@acme.example"]
    finally:
        await server.stop()


# aiosmtpd counts only STARTTLS as TLS for AUTH, so on a TLS port AUTH has to be allowed
# "without TLS" (it warns about that); the test checks the session was TLS all the same
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_implicit_tls_and_auth(db: Database, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = SmtpServer(
        Collector(),
        tls=tls,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    await server.start()
    try:
        clock = Clock()
        settings = server.settings(
            security="tls", ca_file=str(cert), username=SMTP_USER, password=SMTP_PASSWORD
        )
        await queue(db, clock, "boss@acme.example")
        assert await Outbox(db, settings, now=clock).run_once() == RunCounts(claimed=1, sent=1)
        [got] = server.handler.received
        assert got.tls and got.authenticated and got.rcpt_tos == ["boss@acme.example"]
    finally:
        await server.stop()


# -- several nodes on one database ------------------------------------------------------------


async def test_two_outboxes_send_each_message_once(
    db: Database, db_url: str, smtp: SmtpServer
) -> None:
    clock = Clock()
    ids = {await queue(db, clock, f"user{i}@acme.example") for i in range(25)}
    other_node = Database(db_url)  # a second engine: another server on the same store
    try:
        a = Outbox(db, smtp.settings(), batch=4, now=clock)
        b = Outbox(other_node, smtp.settings(), batch=4, now=clock)
        totals: list[RunCounts] = []
        while True:
            rounds = await asyncio.gather(a.run_once(), b.run_once(), a.run_once(), b.run_once())
            totals += rounds
            if not any(r.claimed for r in rounds):
                break
    finally:
        await other_node.close()
    assert sum(r.sent for r in totals) == 25
    assert all(r.claimed <= 4 for r in totals)  # a round takes at most its batch
    assert sum(r.claimed for r in totals) == 25
    got = [r.message["Message-ID"] for r in smtp.handler.received]
    assert len(got) == 25 and len(set(got)) == 25
    assert {mid.strip("<>").partition("@")[0] for mid in got} == ids


async def test_a_claim_held_by_another_node_waits_for_its_expiry(
    db: Database, smtp: SmtpServer
) -> None:
    clock = Clock()
    mail_id = await queue(db, clock, "boss@acme.example")
    # another node claimed it and died before recording anything
    async with db.session() as session:
        await session.execute(
            update(m.MailMessage)
            .where(m.MailMessage.id == mail_id)
            .values(claimed_until=clock() + timedelta(seconds=120))
        )
        await session.commit()
    outbox = Outbox(db, smtp.settings(), now=clock)
    assert await outbox.run_once() == RunCounts()
    clock.advance(121)
    assert await outbox.run_once() == RunCounts(claimed=1, sent=1)
    assert len(smtp.handler.received) == 1


# -- settings ---------------------------------------------------------------------------------


def test_settings_from_config_and_repr(tmp_path: Path) -> None:
    s = SmtpSettings.from_mapping(
        {
            "host": "smtp.example.net",
            "security": "tls",
            "username": "pbx",
            "password": "hunter2-secret",
            "from": "PBX <noreply@example.net>",
        }
    )
    assert s.port == 465 and s.sender_address == "noreply@example.net"
    assert "hunter2-secret" not in repr(s) and "password='***'" not in repr(s)
    assert "password=***" in repr(s) and "smtp.example.net" in repr(s)
    assert s.scrub("535 bad hunter2-secret") == "535 bad ***"
    assert SmtpSettings.from_mapping({"host": "h", "sender": "a@b.example"}).port == 25
    (tmp_path / "pw").write_text("from-a-file\n")
    s = SmtpSettings.from_mapping(
        {
            "host": "h",
            "sender": "a@b.example",
            "security": "starttls",
            "username": "u",
            "password_file": str(tmp_path / "pw"),
        }
    )
    assert s.password == "from-a-file" and s.port == 25
    assert "from-a-file" not in repr(s)
    for bad, word in (
        ({"sender": "a@b.example"}, "host"),
        ({"host": "h"}, "sender"),
        ({"host": "h", "sender": "not-an-address"}, "sender"),
        ({"host": "h", "sender": "a@b.example", "port": 0}, "port"),
        ({"host": "h", "sender": "a@b.example", "security": "ssl"}, "security"),
        ({"host": "h", "sender": "a@b.example", "timeout": -1}, "timeout"),
        ({"host": "h", "sender": "a@b.example", "colour": "red"}, "colour"),
        ({"host": "h", "sender": "a@b.example", "username": "u", "password": "p"}, "AUTH"),
        ({"host": "h", "sender": "a@b.example", "password_file": "/nonexistent/pw"}, "password"),
    ):
        with pytest.raises(ValueError, match=word):
            SmtpSettings.from_mapping(bad)
