"""The server end to end: ``pbxcore serve --db ... --api-listen ...`` (the installed command),
an extension created through the HTTP API, SIPp and baresip registering with it, a password
change taking effect at the next REGISTER. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from pbxcore.tenancy.secrets import sip_ha1
from tests.helpers import pbxcore_command, require_binary
from tests.peers.api import ApiClient
from tests.peers.baresip import make_phone, peak_hz
from tests.peers.pbxserve import (
    RunningServer,
    free_port,
    run_sipp,
    sipp_messages,
    start_serve,
    stop_serve,
)
from tests.peers.postgres import PostgresCluster
from tests.peers.smtp import Inbox

pytestmark = pytest.mark.peers

ADMIN_PASSWORD = "serve-admin-pw-1"
SECRET_KEY = "serve-test-secret-key-0123"


def _serve(
    folder: Path, db_url: str, *extra: str, env: dict[str, str] | None = None
) -> RunningServer:
    args = [
        "--db", db_url, "--api-listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0",
        "--data-dir", str(folder / "data"), "--min-expires", "1", "--guard-failures", "1000",
        "--log-level", "DEBUG", *extra,
    ]  # fmt: skip
    return start_serve(
        args,
        folder / f"server-{len(list(folder.glob('server-*.log')))}.log",
        listening=2,
        api=True,
        env={"PBXCORE_SECRET_KEY": SECRET_KEY} | (env or {}),
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/pbx.db"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.create_database()
    yield url
    cluster.drop_database(url)


def _sipp_register(
    server: RunningServer, tmp_path: Path, user: str, password: str, realm: str, *, ok: bool
) -> str:
    """SIPp registers (``ok``) or expects its REGISTER refused; the messages it traced."""
    scenario = "sipp_register_digest.xml" if ok else "sipp_register_wrong_password.xml"
    result = run_sipp(
        server, scenario, "udp", "ipv4", tmp_path,
        "-s", user, "-au", user, "-ap", password, "-set", "domain", realm, "-auth_uri", realm,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    return sipp_messages(tmp_path)


def _register(server: RunningServer, tmp_path: Path, user: str, password: str, realm: str) -> str:
    return _sipp_register(server, tmp_path, user, password, realm, ok=True)


def _refused(server: RunningServer, tmp_path: Path, user: str, password: str, realm: str) -> str:
    return _sipp_register(server, tmp_path, user, password, realm, ok=False)


BARESIP_CONFIG = """\
poll_method\t\tepoll
sip_listen\t\t127.0.0.1:{port}
net_interface\t\t127.0.0.1
module_path\t\t/usr/lib/baresip/modules
module_tmp\t\taccount.so
module_app\t\tmenu.so
"""


def _baresip(server: RunningServer, tmp_path: Path, aor: str, password: str) -> list[str]:
    """baresip registers (and refreshes, and unregisters): the status codes it got."""
    baresip = require_binary("baresip")
    folder = tmp_path / "baresip"
    folder.mkdir()
    (folder / "config").write_text(BARESIP_CONFIG.format(port=free_port()))
    outbound = f"sip:127.0.0.1:{server.port('udp', 'ipv4')};transport=udp"
    (folder / "accounts").write_text(
        f'<sip:{aor};transport=udp>;outbound="{outbound}";auth_pass={password};regint=2\n'
    )
    (folder / "contacts").write_text("")
    result = subprocess.run(
        [baresip, "-f", str(folder), "-t", "5", "-s"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    trace = result.stdout + result.stderr
    return [line.split()[1] for line in trace.splitlines() if line.startswith("SIP/2.0 ")]


def test_extensions_made_through_the_api_register_over_sip(store_url: str, tmp_path: Path) -> None:
    server = _serve(tmp_path, store_url, env={"PBXCORE_ADMIN_PASSWORD": ADMIN_PASSWORD})
    try:
        assert not any("admin password" in line for line in server.lines)  # it was given
        assert server.api is not None
        api = ApiClient(server.api)
        api.login("admin", ADMIN_PASSWORD)
        op = api.call("POST", "/operators", 201, json={"name": "Voip", "domain": "voip.test"})
        tenant = api.call(
            "POST", f"/operators/{op['id']}/tenants", 201, json={"name": "Acme", "slug": "acme"}
        )
        realm = tenant["domain"]
        assert realm == "acme.voip.test"
        ext = api.call(
            "POST", f"/tenants/{tenant['id']}/extensions", 201,
            json={"number": "101", "name": "Anna", "sip_password": "first-pw-101"},
        )  # fmt: skip

        messages = _register(server, tmp_path, "101", "first-pw-101", realm)
        assert messages.count("SIP/2.0 200 OK") == 4  # register + unregister, twice
        assert f'realm="{realm}"' in messages and "algorithm=MD5" in messages

        # a new password through the API: the old one is refused at the next REGISTER
        api.call(
            "PATCH", f"/tenants/{tenant['id']}/extensions/{ext['id']}", 200,
            json={"sip_password": "second-pw-101"},
        )  # fmt: skip
        assert "SIP/2.0 403 Forbidden" in _refused(server, tmp_path, "101", "first-pw-101", realm)
        assert _register(server, tmp_path, "101", "second-pw-101", realm).count("200 OK") == 4

        # an unknown extension of the tenant and a disabled one are refused
        assert "SIP/2.0 403" in _refused(server, tmp_path, "102", "second-pw-101", realm)
        api.call(
            "PATCH", f"/tenants/{tenant['id']}/extensions/{ext['id']}", 200,
            json={"enabled": False},
        )  # fmt: skip
        assert "SIP/2.0 403" in _refused(server, tmp_path, "101", "second-pw-101", realm)

        # baresip answers only MD5 challenges: a tenant whose realm offers MD5 alone
        legacy = api.call(
            "POST", f"/operators/{op['id']}/tenants", 201,
            json={"name": "Legacy", "slug": "legacy", "sip": {"digest_algorithms": ["MD5"]}},
        )  # fmt: skip
        api.call(
            "POST", f"/tenants/{legacy['id']}/extensions", 201,
            json={"number": "201", "sip_password": "baresip-pw-201"},
        )  # fmt: skip
        answers = _baresip(server, tmp_path, f"201@{legacy['domain']}", "baresip-pw-201")
        assert "401" in answers and answers.count("200") >= 2, answers
        assert "403" not in answers and answers[-1] == "200", answers
    finally:
        code = stop_serve(server)
    assert code == 0, "SIGTERM must stop the server cleanly"
    log = server.log.read_text()
    for secret in ("first-pw-101", "second-pw-101", "baresip-pw-201", ADMIN_PASSWORD, SECRET_KEY):
        assert secret not in log, "the server log must never contain a password"
    for ha1 in sip_ha1("101", "acme.voip.test", "second-pw-101").values():
        assert ha1 not in log, "nor an HA1 (the database drivers log statements' parameters)"
    assert "INSERT INTO" not in log


def test_first_start_prints_a_generated_admin_password_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/pbx.db"
    first = _serve(tmp_path, url)
    try:
        printed = [line for line in first.lines if line.startswith("platform admin:")]
        assert len(printed) == 1
        password = printed[0].rsplit(" ", 1)[1]
        assert first.api is not None
        ApiClient(first.api).login("admin", password)
    finally:
        assert stop_serve(first) == 0
    assert password not in first.log.read_text()
    second = _serve(tmp_path, url)  # the same database: the admin exists, nothing printed
    try:
        assert not any(line.startswith("platform admin:") for line in second.lines)
        assert second.api is not None
        ApiClient(second.api).login("admin", password)
    finally:
        assert stop_serve(second) == 0


def test_serve_refuses_an_unreachable_database(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [
            *pbxcore_command(),
            "serve", "--db", f"postgresql://nobody@127.0.0.1:{port}/none",
            "--sip-listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "pbxcore serve:" in result.stderr and "Traceback" not in result.stderr


def test_the_welcome_mail_goes_out_over_smtp(tmp_path: Path) -> None:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        server = _serve(
            tmp_path, f"sqlite:///{tmp_path}/pbx.db",
            "--smtp-host", "127.0.0.1", "--smtp-port", str(controller.port),
            "--smtp-security", "none", "--mail-from", "noreply@voip.test",
            env={"PBXCORE_ADMIN_PASSWORD": ADMIN_PASSWORD},
        )  # fmt: skip
        try:
            assert server.api is not None
            api = ApiClient(server.api)
            api.login("admin", ADMIN_PASSWORD)
            op = api.call("POST", "/operators", 201, json={"name": "V", "domain": "voip.test"})
            t = api.call(
                "POST", f"/operators/{op['id']}/tenants", 201, json={"name": "A", "slug": "acme"}
            )
            api.call(
                "POST", f"/tenants/{t['id']}/admins", 201,
                json={"username": "boss", "email": "boss@acme.example", "password": "boss-pw-1234"},
            )  # fmt: skip
            assert inbox.arrived.wait(30), "the welcome mail did not arrive"
        finally:
            assert stop_serve(server) == 0
    finally:
        controller.stop()
    [(to, message)] = inbox.messages
    assert to == ["boss@acme.example"] and message["From"] == "noreply@voip.test"
    body = message.get_content()
    assert "https://acme.voip.test/" in body and "boss@acme.voip.test" in body
    assert "boss-pw-1234" not in body


async def _call_through_serve(server: RunningServer, api: ApiClient, t: str, domain: str) -> None:
    from pbxcore.sip.stack import SipStack, StaticCredentials, Target  # noqa: PLC0415
    from pbxcore.sip.transaction import TimerSettings  # noqa: PLC0415
    from pbxcore.sip.transport import ListenAddress  # noqa: PLC0415

    target = Target("udp", "127.0.0.1", server.port("udp", "ipv4"))
    listen = ListenAddress.parse("udp:127.0.0.1:0")
    timers = TimerSettings(t1=0.05, t2=0.4, t4=0.5)
    sdp = (
        b"v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 31000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    async with (
        SipStack(listen=listen, timers=timers) as a,
        SipStack(listen=listen, timers=timers) as b,
    ):
        answered = asyncio.Event()

        async def answer(incoming: Any) -> None:
            incoming.respond(
                200, body=sdp.replace(b"31000", b"32000"), content_type="application/sdp"
            )
            answered.set()

        b.set_handler("INVITE", answer)
        b.set_handler("BYE", lambda incoming: incoming.respond(200))
        for stack, number in ((a, "201"), (b, "202")):
            request = stack.new_request(
                "REGISTER", f"sip:{domain}", from_=f"<sip:{number}@{domain}>",
                to=f"<sip:{number}@{domain}>", target=target,
            )  # fmt: skip
            creds = StaticCredentials(number, f"call-pw-{number}")
            assert (await stack.request(request, target=target, credentials=creds)).status == 200
        invite = a.new_request(
            "INVITE", f"sip:202@{domain}", from_=f"<sip:201@{domain}>", target=target,
            body=sdp, headers=[("Content-Type", "application/sdp")],
        )  # fmt: skip
        call = await a.invite(
            invite, target=target, credentials=StaticCredentials("201", "call-pw-201")
        )
        final = await asyncio.wait_for(call.final, 15)
        assert final.status == 200, final
        # anchored: the relay's port (in --rtp-ports), not B's
        port = int(final.body.split(b"m=audio ", 1)[1].split(b" ", 1)[0])
        assert 43000 <= port <= 43999, final.body
        await asyncio.wait_for(answered.wait(), 5)
        assert call.dialog is not None
        assert (await a.request(call.dialog.new_request("BYE"), dialog=call.dialog)).status == 200


def test_a_call_between_two_extensions_through_serve(tmp_path: Path) -> None:
    server = _serve(
        tmp_path, f"sqlite:///{tmp_path}/pbx.db", "--rtp-ports", "43000-43999",
        env={"PBXCORE_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )  # fmt: skip
    try:
        assert server.api is not None
        api = ApiClient(server.api)
        api.login("admin", ADMIN_PASSWORD)
        op = api.call("POST", "/operators", 201, json={"name": "V", "domain": "voip.test"})
        t = api.call(
            "POST", f"/operators/{op['id']}/tenants", 201, json={"name": "A", "slug": "acme"}
        )
        for number in ("201", "202"):
            api.call(
                "POST", f"/tenants/{t['id']}/extensions", 201,
                json={"number": number, "sip_password": f"call-pw-{number}"},
            )  # fmt: skip
        asyncio.run(_call_through_serve(server, api, t["id"], t["domain"]))
        # the CDR is written in the background (batches): it shows up in the API
        calls: dict[str, Any] = {"items": []}
        for _ in range(100):
            calls = api.call("GET", f"/tenants/{t['id']}/calls", 200)
            if calls["items"] and calls["items"][0]["disposition"] != "in_progress":
                break
            time.sleep(0.1)
        [cdr] = calls["items"]
        assert cdr["direction"] == "internal" and cdr["from"] == "201" and cdr["to"] == "202"
        assert cdr["disposition"] == "answered" and cdr["answered_at"] is not None
    finally:
        assert stop_serve(server) == 0


@pytest.mark.parametrize(
    ("caller_codec", "callee_codec"),
    [(None, None), ("PCMA", "PCMU")],
    ids=["any-codec", "pcma-to-pcmu"],
)
def test_two_baresip_phones_call_each_other_with_audio_both_ways(
    tmp_path: Path, caller_codec: str | None, callee_codec: str | None
) -> None:
    """baresip 202 answers automatically; baresip 201 dials it and hangs up after 8 s. Each
    sends its own tone (440 / 1000 Hz) and records what it receives: each must hear the
    other's tone, through the relay. With one phone restricted to PCMA and the other to
    PCMU (baresip's ``audio_codecs``), the relay transcodes between them."""
    baresip = require_binary("baresip")
    server = _serve(
        tmp_path, f"sqlite:///{tmp_path}/pbx.db", "--rtp-ports", "44000-44999",
        env={"PBXCORE_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )  # fmt: skip
    phones: dict[str, Path] = {}
    try:
        assert server.api is not None
        api = ApiClient(server.api)
        api.login("admin", ADMIN_PASSWORD)
        op = api.call("POST", "/operators", 201, json={"name": "V", "domain": "voip.test"})
        t = api.call(
            "POST", f"/operators/{op['id']}/tenants", 201,
            json={"name": "A", "slug": "acme", "sip": {"digest_algorithms": ["MD5"]}},
        )  # fmt: skip
        outbound = f"sip:127.0.0.1:{server.port('udp', 'ipv4')};transport=udp"
        codecs = {"201": caller_codec, "202": callee_codec}
        for number, tone in (("201", 440), ("202", 1000)):
            api.call(
                "POST", f"/tenants/{t['id']}/extensions", 201,
                json={"number": number, "sip_password": f"bs-pw-{number}"},
            )  # fmt: skip
            phones[number] = make_phone(
                tmp_path / f"baresip-{number}", f"sip:{number}@{t['domain']}",
                f"bs-pw-{number}", outbound=outbound, tone=tone,
                codec=codecs[number],
            )  # fmt: skip
        callee = subprocess.Popen(
            [baresip, "-f", str(phones["202"]), "-t", "14"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            for _ in range(200):  # until the callee is registered (the server logs it)
                if f"REGISTER sip:202@{t['domain']}" in server.log.read_text():
                    break
                time.sleep(0.1)
            dial = f"/dial sip:202@{t['domain']}"
            caller = subprocess.run(
                [baresip, "-f", str(phones["201"]), "-t", "8", "-e", dial],
                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
        finally:
            callee_out = callee.communicate(timeout=30)[0]
        assert "Call established" in caller.stdout, caller.stdout[-3000:]
        assert "Call established" in callee_out, callee_out[-3000:]
        for out, codec in ((caller.stdout, caller_codec), (callee_out, callee_codec)):
            if codec is not None:  # each phone sent and decoded only the codec it allows
                assert f"Set audio encoder: {codec} 8000Hz" in out, out[-3000:]
                assert f"Set audio decoder: {codec} 8000Hz" in out, out[-3000:]
        heard = {}
        for number, folder in phones.items():
            [received] = folder.glob("dump-*-dec.wav")
            heard[number] = peak_hz(received)
        assert abs(heard["201"][0] - 1000) < 20 and heard["201"][1] > 1000, heard
        assert abs(heard["202"][0] - 440) < 20 and heard["202"][1] > 1000, heard
        calls: dict[str, Any] = {"items": []}
        for _ in range(100):
            calls = api.call("GET", f"/tenants/{t['id']}/calls", 200)
            if calls["items"] and calls["items"][0]["disposition"] != "in_progress":
                break
            time.sleep(0.1)
        [cdr] = calls["items"]
        assert cdr["disposition"] == "answered" and cdr["billsec"] >= 3, cdr
    finally:
        assert stop_serve(server) == 0


class _Phones:
    """Two SIP stacks registered as 201 and 202 of ``domain``; 202 answers every call."""

    SDP = (
        b"v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 31000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )

    def __init__(self, a: Any, b: Any, domain: str, target: Any) -> None:
        self.a, self.b, self.domain, self.target = a, b, domain, target
        self.byes = {"a": asyncio.Event(), "b": asyncio.Event()}
        for side, stack in (("a", a), ("b", b)):
            stack.set_handler("BYE", self._on_bye(side))
        b.set_handler("INVITE", self._answer)

    def _on_bye(self, side: str) -> Any:
        def on_bye(incoming: Any) -> None:
            incoming.respond(200)
            self.byes[side].set()

        return on_bye

    async def _answer(self, incoming: Any) -> None:
        body = self.SDP.replace(b"31000", b"32000")
        incoming.respond(200, body=body, content_type="application/sdp")

    async def register(self) -> None:
        from pbxcore.sip.stack import StaticCredentials  # noqa: PLC0415

        for stack, number in ((self.a, "201"), (self.b, "202")):
            request = stack.new_request(
                "REGISTER", f"sip:{self.domain}", from_=f"<sip:{number}@{self.domain}>",
                to=f"<sip:{number}@{self.domain}>", target=self.target,
            )  # fmt: skip
            creds = StaticCredentials(number, f"call-pw-{number}")
            response = await stack.request(request, target=self.target, credentials=creds)
            assert response.status == 200

    async def call(self) -> Any:
        from pbxcore.sip.stack import StaticCredentials  # noqa: PLC0415

        invite = self.a.new_request(
            "INVITE", f"sip:202@{self.domain}", from_=f"<sip:201@{self.domain}>",
            target=self.target, body=self.SDP, headers=[("Content-Type", "application/sdp")],
        )  # fmt: skip
        call = await self.a.invite(
            invite, target=self.target, credentials=StaticCredentials("201", "call-pw-201")
        )
        return await asyncio.wait_for(call.final, 15)


async def _with_phones(server: RunningServer, domain: str, work: Any) -> Any:
    from pbxcore.sip.stack import SipStack, Target  # noqa: PLC0415
    from pbxcore.sip.transaction import TimerSettings  # noqa: PLC0415
    from pbxcore.sip.transport import ListenAddress  # noqa: PLC0415

    target = Target("udp", "127.0.0.1", server.port("udp", "ipv4"))
    listen = ListenAddress.parse("udp:127.0.0.1:0")
    timers = TimerSettings(t1=0.05, t2=0.4, t4=0.5)
    async with (
        SipStack(listen=listen, timers=timers) as a,
        SipStack(listen=listen, timers=timers) as b,
    ):
        phones = _Phones(a, b, domain, target)
        await phones.register()
        return await work(phones)


def _cdrs(api: ApiClient, t: str) -> list[dict[str, Any]]:
    """The tenant's CDRs once none is in progress any more."""
    items: list[dict[str, Any]] = []
    for _ in range(100):
        items = api.call("GET", f"/tenants/{t}/calls", 200)["items"]
        if items and all(c["disposition"] != "in_progress" for c in items):
            break
        time.sleep(0.1)
    return items


def test_sigterm_ends_a_call_with_bye_and_kill_9_leaves_it_failed(tmp_path: Path) -> None:
    """SIGTERM during a call: a new call gets 503, the call gets BYE on both sides after
    the grace period, its CDR is written, exit status 0. After kill -9 and a restart the
    call that was up is closed as failed."""
    db = f"sqlite:///{tmp_path}/pbx.db"
    extra = ("--rtp-ports", "44000-44999", "--shutdown-grace", "1")
    env = {"PBXCORE_ADMIN_PASSWORD": ADMIN_PASSWORD}
    server = _serve(tmp_path, db, *extra, env=env)
    try:
        assert server.api is not None
        api = ApiClient(server.api)
        api.login("admin", ADMIN_PASSWORD)
        op = api.call("POST", "/operators", 201, json={"name": "V", "domain": "voip.test"})
        t = api.call(
            "POST", f"/operators/{op['id']}/tenants", 201, json={"name": "A", "slug": "acme"}
        )
        for number in ("201", "202"):
            api.call(
                "POST", f"/tenants/{t['id']}/extensions", 201,
                json={"number": number, "sip_password": f"call-pw-{number}"},
            )  # fmt: skip

        async def sigterm_during_a_call(phones: _Phones) -> int:
            assert (await phones.call()).status == 200
            server.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(phones.byes["a"].wait(), 20)
            await asyncio.wait_for(phones.byes["b"].wait(), 20)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, lambda: server.process.wait(20))

        code = asyncio.run(_with_phones(server, t["domain"], sigterm_during_a_call))
        assert code == 0
        log = server.log.read_text()
        assert "shutting down: ending 1 calls" in log

        server = _serve(tmp_path, db, *extra, env=env)  # the same database
        api = ApiClient(server.api or "")
        api.login("admin", ADMIN_PASSWORD)
        [first] = _cdrs(api, t["id"])
        assert first["disposition"] == "answered" and first["ended_at"] is not None

        async def refused_while_stopping(phones: _Phones) -> int:
            """A call while the server drains: the grace period of the first call."""
            assert (await phones.call()).status == 200
            server.process.send_signal(signal.SIGTERM)
            for _ in range(200):  # the server has begun its shutdown (read its log)
                if "calls may finish" in server.log.read_text():
                    break
                await asyncio.sleep(0.05)
            return int((await phones.call()).status)

        refused = asyncio.run(_with_phones(server, t["domain"], refused_while_stopping))
        assert refused == 503
        assert server.process.wait(20) == 0

        server = _serve(tmp_path, db, *extra, env=env)

        async def up(phones: _Phones) -> None:
            assert (await phones.call()).status == 200

        asyncio.run(_with_phones(server, t["domain"], up))
        api = ApiClient(server.api or "")
        api.login("admin", ADMIN_PASSWORD)
        for _ in range(100):  # its row is written (CDRs go in batches)
            items = api.call("GET", f"/tenants/{t['id']}/calls", 200)["items"]
            if any(c["disposition"] == "in_progress" for c in items):
                break
            time.sleep(0.1)
        server.process.kill()  # kill -9 with the call up
        server.process.wait(10)
        server = _serve(tmp_path, db, *extra, env=env)
        api = ApiClient(server.api or "")
        api.login("admin", ADMIN_PASSWORD)
        cdrs = _cdrs(api, t["id"])
        assert len(cdrs) == 3
        assert sorted(c["disposition"] for c in cdrs) == ["answered", "answered", "failed"]
    finally:
        assert stop_serve(server) == 0
