"""Watching a real ``pbxcore serve``: /metrics after registrations and calls (parsed with
prometheus_client), the operator's events, JSON log lines with call_id and no secret in
them at DEBUG, ``pbxcore status`` against it and against nothing, /ready before the start
and while PostgreSQL is down."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pbxcore.server import PbxServer, ServerConfig
from pbxcore.sip.auth import DigestAuthenticator
from pbxcore.sip.credentials import CredentialStore
from pbxcore.sip.location import MemoryLocationService
from pbxcore.sip.registrar import Registrar
from pbxcore.sip.server import SipServer
from pbxcore.sip.stack import SipStack, StaticCredentials, Target
from pbxcore.sip.transaction import TimerSettings
from pbxcore.sip.transport import ListenAddress
from pbxcore.tenancy.secrets import sip_ha1
from tests.helpers import pbxcore_command
from tests.peers.pbxserve import RunningServer, free_port, start_serve, stop_serve
from tests.peers.postgres import PostgresCluster, find_bin_dir

pytestmark = pytest.mark.peers

ADMIN_PASSWORD = "mon-admin-pw-0001"
OPERATOR_PASSWORD = "mon-operator-pw-0002"
TRUNK_PASSWORD = "mon-trunk-pw-0003"
SIP_PASSWORDS = {"201": "mon-sip-pw-0201", "202": "mon-sip-pw-0202"}
SECRET_KEY = "monitoring-test-secret-key-01"
SDP = (
    b"v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 31000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _serve(folder: Path, db_url: str, *extra: str) -> RunningServer:
    args = [
        "--db", db_url, "--api-listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0",
        "--data-dir", str(folder / "data"), "--guard-failures", "1000",
        "--rtp-ports", "45000-45999", "--t1", "0.05", "--t2", "0.4", *extra,
    ]  # fmt: skip
    return start_serve(
        args,
        folder / "server.log",
        listening=2,
        api=True,
        env={"PBXCORE_SECRET_KEY": SECRET_KEY, "PBXCORE_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )


class Client:
    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)
        self.headers: dict[str, str] = {}
        self.token = ""

    def login(self, username: str, password: str) -> None:
        r = self.http.post("/auth/token", data={"username": username, "password": password})
        assert r.status_code == 200, r.text
        self.token = r.json()["access_token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def call(self, method: str, path: str, status: int, **kw: Any) -> Any:
        r = self.http.request(method, path, headers=self.headers, **kw)
        assert r.status_code == status, r.text
        return r.json() if r.content else {}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def _phones(server: RunningServer, domain: str) -> dict[str, str]:
    """201 and 202 register, 201 calls 202 (answered, hung up), 201 calls 299 (too short a
    number: 484), then 202 unregisters. The Call-IDs of the two calls."""
    target = Target("udp", "127.0.0.1", server.port("udp", "ipv4"))
    listen = ListenAddress.parse("udp:127.0.0.1:0")
    timers = TimerSettings(t1=0.05, t2=0.4, t4=0.5)
    call_ids = {}
    async with (
        SipStack(listen=listen, timers=timers) as a,
        SipStack(listen=listen, timers=timers) as b,
    ):

        async def answer(incoming: Any) -> None:
            body = SDP.replace(b"31000", b"32000")
            incoming.respond(200, body=body, content_type="application/sdp")

        b.set_handler("INVITE", answer)
        b.set_handler("BYE", lambda incoming: incoming.respond(200))

        async def register(stack: SipStack, number: str, expires: int) -> None:
            request = stack.new_request(
                "REGISTER", f"sip:{domain}", from_=f"<sip:{number}@{domain}>",
                to=f"<sip:{number}@{domain}>", target=target,
                headers=[("Expires", str(expires))],
            )  # fmt: skip
            creds = StaticCredentials(number, SIP_PASSWORDS[number])
            assert (await stack.request(request, target=target, credentials=creds)).status == 200

        await register(a, "201", 300)
        await register(b, "202", 300)
        creds = StaticCredentials("201", SIP_PASSWORDS["201"])
        for dialed, expected in (("202", 200), ("299", 484)):
            invite = a.new_request(
                "INVITE", f"sip:{dialed}@{domain}", from_=f"<sip:201@{domain}>", target=target,
                body=SDP, headers=[("Content-Type", "application/sdp")],
            )  # fmt: skip
            call_ids[dialed] = invite.call_id
            call = await a.invite(invite, target=target, credentials=creds)
            final = await asyncio.wait_for(call.final, 15)
            assert final.status == expected, final
            if call.dialog is not None:
                bye = call.dialog.new_request("BYE")
                assert (await a.request(bye, dialog=call.dialog)).status == 200
        await register(b, "202", 0)
    return call_ids


def _wait_events(api: Client, op: str, want: dict[str, int]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for _ in range(150):
        items = api.call("GET", f"/operators/{op}/events", 200, params={"limit": 100})["items"]
        kinds = [e["type"] for e in items]
        if all(kinds.count(k) >= n for k, n in want.items()):
            return items
        time.sleep(0.1)
    raise AssertionError(f"events {want} not all written: {items}")


def test_metrics_events_status_and_json_logs_of_a_running_server(tmp_path: Path) -> None:
    closed = free_port()  # nothing answers there: the trunk's REGISTER fails
    server = _serve(tmp_path, f"sqlite:///{tmp_path}/pbx.db", "--log-format", "json",
                    "--log-level", "DEBUG")  # fmt: skip
    tokens = []
    try:
        assert server.api is not None
        root = server.api.removesuffix("/api/v1")
        for path in ("/health", "/ready", "/api/v1/health", "/api/v1/ready"):
            r = httpx.get(root + path, timeout=10)
            assert r.status_code == 200, (path, r.text)
        assert httpx.get(root + "/ready").json()["checks"] == {
            "database": "ok", "snapshot": "ok", "sip": "ok",
        }  # fmt: skip
        api = Client(server.api)
        api.login("admin", ADMIN_PASSWORD)
        tokens.append(api.token)
        ops = [
            api.call("POST", "/operators", 201, json={"name": f"O{i}", "domain": f"o{i}.test"})
            for i in (1, 2)
        ]
        op1, op2 = ops[0]["id"], ops[1]["id"]
        t = api.call("POST", f"/operators/{op1}/tenants", 201, json={"name": "A", "slug": "acme"})
        for number, password in SIP_PASSWORDS.items():
            api.call(
                "POST", f"/tenants/{t['id']}/extensions", 201,
                json={"number": number, "sip_password": password},
            )  # fmt: skip
        trunk = api.call(
            "POST", f"/operators/{op1}/trunks", 201,
            json={"name": "carrier", "host": "127.0.0.1", "port": closed, "register": True,
                  "auth": {"username": "pbx-user", "password": TRUNK_PASSWORD}},
        )  # fmt: skip
        api.call(
            "POST", f"/operators/{op2}/admins", 201,
            json={"username": "op2admin", "password": OPERATOR_PASSWORD},
        )  # fmt: skip
        other = Client(server.api)
        other.login("op2admin", OPERATOR_PASSWORD)
        tokens.append(other.token)

        call_ids = asyncio.run(_phones(server, t["domain"]))

        events = _wait_events(
            api, op1,
            {"registration": 2, "unregistration": 1, "call_failed": 1, "trunk_state": 1},
        )  # fmt: skip
        assert {e["operator_id"] for e in events} == {op1}
        [failed] = [e for e in events if e["type"] == "call_failed"]
        assert failed["status"] == 484 and failed["call_id"] == call_ids["299"]
        assert failed["tenant_id"] == t["id"]
        [trunk_event] = [e for e in events if e["type"] == "trunk_state"][-1:]
        assert trunk_event["subject"] == trunk["id"]
        assert trunk_event["detail"]["state"] == "failed"
        # the other operator: 404 on op1's events, nothing of op1's in its own
        other.call("GET", f"/operators/{op1}/events", 404)
        assert other.call("GET", f"/operators/{op2}/events", 200) == {"items": [], "total": 0}
        only = api.call("GET", f"/operators/{op1}/events", 200, params={"type": "registration"})
        assert only["total"] == 2 and {e["type"] for e in only["items"]} == {"registration"}

        r = httpx.get(root + "/metrics", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        samples = _samples(r.text)
        assert samples[("pbxcore_calls_started_total", ())] == 1
        assert samples[("pbxcore_calls_failed_total", ())] >= 1
        assert samples[("pbxcore_calls_active", ())] == 0
        assert samples[("pbxcore_registrations", ())] == 1  # 202 unregistered
        assert ("pbxcore_rtp_packets_total", (("direction", "received"),)) in samples
        assert ("pbxcore_rtp_dropped_total", ()) in samples
        assert samples[("pbxcore_cdr_queue_depth", ())] >= 0
        assert samples[("pbxcore_mail_outbox_backlog", ())] == 0
        assert samples[("pbxcore_events_dropped_total", ())] == 0
        assert samples[("pbxcore_trunk_registered", (("trunk_id", trunk["id"]),))] == 0
        routes = {dict(labels).get("route") for (name, labels) in samples if "api_request" in name}
        assert "/api/v1/operators/{op}/events" in routes, routes
        assert not any(op1 in (route or "") for route in routes)  # templates, not paths

        status = subprocess.run(
            [*pbxcore_command(), "status", "--api", server.api],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert "calls started      1" in status.stdout, status.stdout
        assert f"trunk {trunk['id']}:" in status.stdout, status.stdout
    finally:
        assert stop_serve(server) == 0
    text = server.log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    logged_ids = {e.get("call_id") for e in lines}
    assert call_ids["202"] in logged_ids and call_ids["299"] in logged_ids, logged_ids
    secrets = [ADMIN_PASSWORD, OPERATOR_PASSWORD, TRUNK_PASSWORD, SECRET_KEY, *tokens]
    for number, password in SIP_PASSWORDS.items():
        secrets.append(password)
        secrets.extend(sip_ha1(number, t["domain"], password).values())
    for secret in secrets:
        assert secret not in text, f"a secret is in the log: {secret[:6]}..."


def test_status_against_nothing_says_so_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [*pbxcore_command(), "status", "--api", url],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"pbxcore status: no server answers at {url}")


def _users_sip(credentials: CredentialStore) -> SipServer:
    registrar = Registrar(
        credentials, MemoryLocationService(), authenticator=DigestAuthenticator(credentials)
    )
    return SipServer(registrar, listen=ListenAddress.parse("udp:127.0.0.1:0"))


async def test_readiness_names_what_is_not_ready(tmp_path: Path) -> None:
    server = PbxServer(
        ServerConfig(db_url=f"sqlite:///{tmp_path}/pbx.db", data_dir=tmp_path / "data"),
        _users_sip,
    )
    # before the start: no snapshot loaded, SIP not listening
    assert server.monitor.readiness() == {
        "snapshot": "the configuration snapshot is not loaded",
        "sip": "SIP is not listening",
    }
    await server.start()
    try:
        assert server.monitor.readiness() == {"snapshot": None, "sip": None}
    finally:
        await server.stop()
    assert server.monitor.readiness()["server"] == "the server is stopping"


def test_ready_flips_while_postgresql_is_down(tmp_path: Path) -> None:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    cluster = PostgresCluster(bin_dir)
    cluster.start()
    try:
        server = _serve(tmp_path, cluster.create_database())
        try:
            assert server.api is not None
            ready = server.api.removesuffix("/api/v1") + "/ready"
            assert httpx.get(ready, timeout=10).status_code == 200
            cluster.pause()
            r = httpx.get(ready, timeout=30)
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "not_ready" and list(error["details"]) == ["database"]
            assert "database" in error["message"]
            cluster.resume()
            for _ in range(100):  # the pool reconnects at the next request
                r = httpx.get(ready, timeout=30)
                if r.status_code == 200:
                    break
                time.sleep(0.1)
            assert r.status_code == 200, r.text
        finally:
            assert stop_serve(server) == 0
    finally:
        cluster.stop()
