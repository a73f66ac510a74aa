"""From an empty database to a client's first calls, through the HTTP API only.

``pbxcore serve`` runs as a subprocess on loopback with a fresh database (SQLite, then
PostgreSQL). The platform admin creates operator Telco and its admin; the operator admin
does the six steps (client PBX acme, two trunks to two SIPp carriers, a route table, the
Russian dial plan, DIDs, the attachments) and creates acme's admin, whose welcome mail an
aiosmtpd server catches; acme's admin creates extensions 101 and 102 and points a DID at
101. Then the calls: baresip 101 and 102 with audio both ways, out to carrier A in its
number format, failover to carrier B on 503, an international call to B, a carrier's call
to the DID; their CDRs; SIGTERM during a call; kill -9 and a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from pbxcore.sip.stack import IncomingRequest, SipStack, StaticCredentials, Target
from pbxcore.sip.transaction import TimerSettings
from pbxcore.sip.transport import ListenAddress
from tests.helpers import PEERS, require_binary
from tests.peers.api import ApiClient
from tests.peers.baresip import make_phone, peak_hz
from tests.peers.pbxserve import RunningServer, free_port, start_serve, stop_serve
from tests.peers.postgres import PostgresCluster
from tests.peers.smtp import Inbox

pytestmark = pytest.mark.peers

ADMIN_PASSWORD = "e2e-platform-pw-1"
SECRET_KEY = "e2e-secret-key-0123456789"
DOMAIN = "acme.telco.test"
SDP = (
    b"v=0\r\no=ua 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/pbx.db"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.create_database()
    yield url
    cluster.drop_database(url)


def _serve(folder: Path, db_url: str, sip_port: int, smtp_port: int) -> RunningServer:
    """The server as an operator starts it; mail settings from the environment."""
    args = [
        "--db", db_url, "--api-listen", "127.0.0.1:0",
        "--sip-listen", f"udp:127.0.0.1:{sip_port}",
        "--rtp-ports", "45000-45999", "--data-dir", str(folder / "data"),
        "--shutdown-grace", "2", "--log-level", "DEBUG",
    ]  # fmt: skip
    env = {
        "PBXCORE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "PBXCORE_SECRET_KEY": SECRET_KEY,
        "PBXCORE_SMTP_HOST": "127.0.0.1",
        "PBXCORE_SMTP_PORT": str(smtp_port),
        "PBXCORE_SMTP_STARTTLS": "false",
        "PBXCORE_SMTP_FROM": "Telco PBX <noreply@telco.test>",
    }
    log = folder / f"server-{len(list(folder.glob('server-*.log')))}.log"
    return start_serve(args, log, listening=1, api=True, env=env)


@dataclass
class Setup:
    op: str
    tenant: str
    trunks: dict[str, str]
    ext: dict[str, str]
    welcome: str


def _six_steps(server: RunningServer, inbox: Inbox, carrier_ports: dict[str, int]) -> Setup:
    assert server.api is not None
    platform = ApiClient(server.api)
    platform.login("admin", ADMIN_PASSWORD)
    # 1. the platform admin: operator Telco and its admin
    op = platform.call("POST", "/operators", 201, json={"name": "Telco", "domain": "telco.test"})
    platform.call(
        "POST", f"/operators/{op['id']}/admins", 201,
        json={"username": "telco-admin", "password": "telco-admin-pw-1",
              "email": "noc@telco.example"},
    )  # fmt: skip
    # 2. the operator admin's six steps
    operator = ApiClient(server.api)
    operator.login("telco-admin", "telco-admin-pw-1")
    base = f"/operators/{op['id']}"
    tenant = operator.call(
        "POST", f"{base}/tenants", 201,
        json={
            "name": "Acme", "slug": "acme", "features": ["voicemail", "ivr"],
            "limits": {"max_extensions": 10, "max_concurrent_calls": 5, "max_dids": 2,
                       "international_calls": True},
            "time_zone": "Europe/Moscow",
            # baresip fails a REGISTER challenged with SHA-256 beside MD5: MD5 alone
            "sip": {"digest_algorithms": ["MD5"]},
        },
    )  # fmt: skip
    assert tenant["domain"] == DOMAIN
    trunks = {}
    for name, number_format in (("a", "e164_digits"), ("b", "e164")):
        trunk = operator.call(
            "POST", f"{base}/trunks", 201,
            json={
                "name": f"Carrier {name.upper()}", "host": "127.0.0.1",
                "port": carrier_ports[name], "transport": "udp",
                "number_format": number_format,
                # carrier A's calls come in from its address (B only takes calls)
                "inbound_ips": ["127.0.0.1/32"] if name == "a" else [],
            },
        )  # fmt: skip
        trunks[name] = trunk["id"]
    rt = operator.call("POST", f"{base}/route-tables", 201, json={"name": "Retail"})
    for prefix, trunk, priority, cost in (
        ("7495", "a", 1, "0.50"),
        ("7495", "b", 2, "0.70"),
        ("49", "b", 1, "1.20"),
    ):
        operator.call(
            "POST", f"{base}/route-tables/{rt['id']}/routes", 201,
            json={"prefix": prefix, "trunk_id": trunks[trunk], "priority": priority,
                  "cost_per_minute": cost},
        )  # fmt: skip
    plan = operator.call(
        "POST", f"{base}/dial-plans", 201,
        json={"name": "Russia", "country": "RU", "default_area_code": "495", "extension_digits": 3},
    )  # fmt: skip
    operator.call(
        "POST", f"{base}/numbers:bulk", 201, json={"from": "+74950000001", "to": "+74950000010"}
    )
    pool = operator.call("GET", f"{base}/numbers", 200, params={"limit": 100})
    assert pool["total"] == 10
    dids = {n["number"]: n["id"] for n in pool["items"]}
    for number in ("+74950000001", "+74950000002"):
        operator.call(
            "PATCH", f"{base}/numbers/{dids[number]}", 200, json={"tenant_id": tenant["id"]}
        )
    operator.call(
        "PATCH", f"{base}/tenants/{tenant['id']}", 200,
        json={"route_table_id": rt["id"], "dial_plan_id": plan["id"]},
    )  # fmt: skip
    # 3. acme's admin, and the welcome mail
    operator.call(
        "POST", f"/tenants/{tenant['id']}/admins", 201,
        json={"username": "boss", "full_name": "Boss", "email": "boss@acme.example",
              "password": "acme-boss-pw-1"},
    )  # fmt: skip
    assert inbox.arrived.wait(30), "the welcome mail did not arrive"
    [(to, message)] = inbox.messages
    assert to == ["boss@acme.example"]
    welcome = message.get_content()
    assert f"https://{DOMAIN}/" in welcome and f"boss@{DOMAIN}" in welcome
    # 4. acme's admin: extensions 101 and 102, DID +74950000001 to 101
    acme = ApiClient(server.api)
    acme.login(f"boss@{DOMAIN}", "acme-boss-pw-1")
    t = f"/tenants/{tenant['id']}"
    ext = {}
    for number in ("101", "102"):
        ext[number] = acme.call(
            "POST", f"{t}/extensions", 201,
            json={"number": number, "name": f"Employee {number}",
                  "sip_password": f"pw-{number}-e2e"},
        )["id"]  # fmt: skip
    mine = acme.call("GET", f"{t}/numbers", 200)
    assert sorted(n["number"] for n in mine["items"]) == ["+74950000001", "+74950000002"]
    did = next(n for n in mine["items"] if n["number"] == "+74950000001")
    acme.call(
        "PATCH", f"{t}/numbers/{did['id']}", 200,
        json={"destination": {"type": "extension", "id": ext["101"]}},
    )  # fmt: skip
    return Setup(op["id"], tenant["id"], trunks, ext, welcome)


def _baresip_call(server: RunningServer, tmp_path: Path) -> None:
    """baresip 102 answers, baresip 101 dials 102; each hears the other's tone."""
    baresip = require_binary("baresip")
    outbound = f"sip:127.0.0.1:{server.port('udp', 'ipv4')};transport=udp"
    phones = {
        number: make_phone(
            tmp_path / f"baresip-{number}",
            f"sip:{number}@{DOMAIN}",
            f"pw-{number}-e2e",
            outbound=outbound,
            tone=tone,
        )
        for number, tone in (("101", 440), ("102", 1000))
    }
    callee = subprocess.Popen(
        [baresip, "-f", str(phones["102"]), "-t", "14"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        for _ in range(200):  # until the callee is registered (the registrar logs it)
            if f"REGISTER sip:102@{DOMAIN} from" in server.log.read_text():
                break
            time.sleep(0.1)
        caller = subprocess.run(
            [baresip, "-f", str(phones["101"]), "-t", "8", "-e", f"/dial sip:102@{DOMAIN}"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    finally:
        callee_out = callee.communicate(timeout=30)[0]
    assert "Call established" in caller.stdout, caller.stdout[-3000:]
    assert "Call established" in callee_out, callee_out[-3000:]
    heard = {n: peak_hz(next(folder.glob("dump-*-dec.wav"))) for n, folder in phones.items()}
    assert abs(heard["101"][0] - 1000) < 20 and heard["101"][1] > 1000, heard
    assert abs(heard["102"][0] - 440) < 20 and heard["102"][1] > 1000, heard


@dataclass
class Phone:
    """A softphone on pbxcore's own SIP stack: registers, dials, answers, hangs up."""

    number: str
    stack: SipStack
    server: Target
    invites: list[IncomingRequest] = field(default_factory=list)
    byes: asyncio.Event = field(default_factory=asyncio.Event)
    rang: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_invite(self, incoming: IncomingRequest) -> None:
        self.invites.append(incoming)
        self.rang.set()
        incoming.respond(180)
        port = 36000 + int(self.number)
        incoming.respond(
            200, body=SDP.replace(b"{port}", str(port).encode()), content_type="application/sdp"
        )

    def on_bye(self, incoming: IncomingRequest) -> None:
        incoming.respond(200)
        self.byes.set()

    @property
    def credentials(self) -> StaticCredentials:
        return StaticCredentials(self.number, f"pw-{self.number}-e2e")

    async def register(self) -> None:
        request = self.stack.new_request(
            "REGISTER", f"sip:{DOMAIN}", from_=f"<sip:{self.number}@{DOMAIN}>",
            to=f"<sip:{self.number}@{DOMAIN}>", target=self.server,
        )  # fmt: skip
        response = await self.stack.request(
            request, target=self.server, credentials=self.credentials
        )
        assert response.status == 200, response

    async def dial(self, dialed: str) -> Any:
        """INVITE ``dialed`` as the user typed it (escaped in the URI); the client INVITE."""
        user = dialed.replace(" ", "%20")
        port = 34000 + int(self.number)
        request = self.stack.new_request(
            "INVITE", f"sip:{user}@{DOMAIN}", from_=f"<sip:{self.number}@{DOMAIN}>",
            target=self.server, body=SDP.replace(b"{port}", str(port).encode()),
            headers=[("Content-Type", "application/sdp")],
        )  # fmt: skip
        invite = await self.stack.invite(request, target=self.server, credentials=self.credentials)
        final = await asyncio.wait_for(invite.final, 20)
        return invite, final

    async def talk(self, dialed: str, seconds: float = 1.2) -> None:
        """Dial, expect an answer, stay on the line (so that billsec > 0), hang up."""
        invite, final = await self.dial(dialed)
        assert final.status == 200, final
        await asyncio.sleep(seconds)
        response = await self.stack.request(invite.dialog.new_request("BYE"), dialog=invite.dialog)
        assert response.status == 200


@contextlib.asynccontextmanager
async def _phones(server: RunningServer, *numbers: str) -> AsyncIterator[dict[str, Phone]]:
    target = Target("udp", "127.0.0.1", server.port("udp", "ipv4"))
    timers = TimerSettings(t1=0.1, t2=0.8, t4=1.0)
    phones: dict[str, Phone] = {}
    try:
        for number in numbers:
            stack = SipStack(listen=ListenAddress.parse("udp:127.0.0.1:0"), timers=timers)
            await stack.start()
            phone = Phone(number, stack, target)
            stack.set_handler("INVITE", phone.on_invite)
            stack.set_handler("BYE", phone.on_bye)
            phones[number] = phone
            await phone.register()
        yield phones
    finally:
        for phone in phones.values():
            await phone.stack.stop()


async def _sipp(folder: Path, *args: str) -> asyncio.subprocess.Process:
    folder.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        require_binary("sipp"), "-i", "127.0.0.1", "-nostdin", "-timeout", "30s",
        "-trace_msg", "-trace_err", *args,
        cwd=folder, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def _carrier(folder: Path, port: int, calls: int, status: int | None = None) -> Any:
    """A SIPp carrier on ``port`` taking ``calls`` calls: answering, or refusing with
    ``status``."""
    if status is None:
        scenario = ["-sn", "uas"]
    else:
        text = (PEERS / "sipp_uas_reject.xml").read_text().replace("[status]", str(status))
        path = folder.parent / f"uas_{status}.xml"
        path.write_text(text)
        scenario = ["-sf", str(path)]
    process = await _sipp(folder, *scenario, "-p", str(port), "-m", str(calls))
    await asyncio.sleep(0.3)  # SIPp binds its port
    return process


def _traced(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.glob("*_messages.log"))


async def _finished(process: asyncio.subprocess.Process) -> str:
    out, _ = await asyncio.wait_for(process.communicate(), 40)
    assert process.returncode == 0, out.decode(errors="replace")[-3000:]
    return out.decode(errors="replace")


async def _calls(server: RunningServer, tmp_path: Path, ports: dict[str, int]) -> None:
    carriers = tmp_path / "carriers"
    a = await _carrier(carriers / "a1", ports["a"], 1)
    b = await _carrier(carriers / "b", ports["b"], 2)
    async with _phones(server, "101") as phones:
        phone = phones["101"]
        # 101 dials 8 (495) 123-45-67: carrier A receives +74951234567 in its format
        await phone.talk("8 (495) 123-45-67")
        await _finished(a)
        assert "INVITE sip:74951234567@127.0.0.1" in _traced(carriers / "a1")
        # carrier A answers 503: the same call reaches carrier B
        a = await _carrier(carriers / "a2", ports["a"], 1, status=503)
        await phone.talk("8 (495) 123-45-67")
        await _finished(a)
        assert "SIP/2.0 503" in _traced(carriers / "a2")
        # 101 dials 8 10 49 30 1234567: Germany, carrier B only
        await phone.talk("8 10 49 30 1234567")
        await _finished(b)
        traced = _traced(carriers / "b")
        assert "INVITE sip:+74951234567@127.0.0.1" in traced
        assert "INVITE sip:+49301234567@127.0.0.1" in traced
        # a call from carrier A to +74950000001 rings 101
        inbound = await _sipp(
            carriers / "in", "-sn", "uac", "-s", "+74950000001", "-p", str(ports["a"]),
            "-m", "1", "-d", "1000", f"127.0.0.1:{server.port('udp', 'ipv4')}",
        )  # fmt: skip
        await _finished(inbound)
        await asyncio.wait_for(phone.byes.wait(), 10)  # the carrier's BYE, passed on
        assert len(phone.invites) == 1  # it rang 101, which answered


def _cdrs(api: ApiClient, t: str, count: int) -> list[dict[str, Any]]:
    """The tenant's ``count`` CDRs once none is in progress (CDRs go in batches)."""
    items: list[dict[str, Any]] = []
    for _ in range(150):
        items = api.call("GET", f"/tenants/{t}/calls", 200, params={"limit": 100})["items"]
        if len(items) >= count and all(c["disposition"] != "in_progress" for c in items):
            break
        time.sleep(0.1)
    return sorted(items, key=lambda c: c["started_at"])


def _acme(server: RunningServer) -> ApiClient:
    assert server.api is not None
    api = ApiClient(server.api)
    api.login(f"boss@{DOMAIN}", "acme-boss-pw-1")
    return api


async def _sigterm_during_a_call(server: RunningServer) -> int:
    async with _phones(server, "101", "102") as phones:
        _invite, final = await phones["101"].dial("102")
        assert final.status == 200, final
        server.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(phones["101"].byes.wait(), 20)  # both sides get BYE
        await asyncio.wait_for(phones["102"].byes.wait(), 20)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: server.process.wait(30))


async def _call_up(server: RunningServer) -> None:
    async with _phones(server, "101", "102") as phones:
        _invite, final = await phones["101"].dial("102")
        assert final.status == 200, final


def test_from_an_empty_database_to_a_clients_calls(db_url: str, tmp_path: Path) -> None:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    sip_port = free_port()
    ports = {"a": free_port(), "b": free_port()}
    server = _serve(tmp_path, db_url, sip_port, controller.port)
    try:
        setup = _six_steps(server, inbox, ports)
        _baresip_call(server, tmp_path)
        asyncio.run(_calls(server, tmp_path, ports))
        api = _acme(server)
        cdrs = _cdrs(api, setup.tenant, 5)
        seen = [(c["direction"], c["to"], c["disposition"], c["trunk_id"]) for c in cdrs]
        a, b = setup.trunks["a"], setup.trunks["b"]
        assert seen == [
            ("internal", "102", "answered", None),
            ("outbound", "+74951234567", "answered", a),
            ("outbound", "+74951234567", "answered", b),  # after A's 503
            ("outbound", "+49301234567", "answered", b),
            ("inbound", "+74950000001", "answered", a),
        ], seen
        internal, via_a, via_b, germany, inbound = cdrs
        assert [c["from"] for c in cdrs[:4]] == ["101"] * 4
        assert internal["cost"] is None and internal["billsec"] >= 3
        for cdr, rate in ((via_a, "0.50"), (via_b, "0.70"), (germany, "1.20")):
            assert cdr["billsec"] >= 1
            expected = Decimal(cdr["billsec"]) * Decimal(rate) / 60
            assert Decimal(str(cdr["cost"])) == expected.quantize(Decimal("0.000001")), cdr
        assert inbound["extension"] == "101"
        # SIGTERM during a call: BYE to both sides within the grace period, exit status 0
        assert asyncio.run(_sigterm_during_a_call(server)) == 0
        server = _serve(tmp_path, db_url, sip_port, controller.port)  # the same database
        api = _acme(server)
        last = _cdrs(api, setup.tenant, 6)[-1]
        assert (last["direction"], last["disposition"]) == ("internal", "answered")
        assert last["ended_at"] is not None
        # kill -9 with a call up; after the restart the call is closed as failed
        asyncio.run(_call_up(server))
        for _ in range(100):  # its row is written
            items = api.call("GET", f"/tenants/{setup.tenant}/calls", 200, params={"limit": 100})
            if len(items["items"]) == 7:
                break
            time.sleep(0.1)
        server.process.kill()
        server.process.wait(10)
        server = _serve(tmp_path, db_url, sip_port, controller.port)
        cdrs = _cdrs(_acme(server), setup.tenant, 7)
        assert len(cdrs) == 7 and cdrs[-1]["disposition"] == "failed"
    finally:
        try:
            assert stop_serve(server) == 0
        finally:
            controller.stop()
    for secret in ("acme-boss-pw-1", "telco-admin-pw-1", "pw-101-e2e", ADMIN_PASSWORD, SECRET_KEY):
        for log in tmp_path.glob("server-*.log"):
            assert secret not in log.read_text(), f"{secret} in {log.name}"
