"""``pbxcore demo``: a server on loopback with a client PBX ready to call.

It runs ``pbxcore serve`` on 127.0.0.1 with a fresh SQLite database and, once it serves,
does the operator's six steps through its own HTTP API (as an integrator would): operator
"Demo Telecom" (``demo.test``) and its admin, client PBX ``acme`` with extensions 201 and
202, a trunk to a test carrier on 127.0.0.1, a default route, the Russian dial plan and
two DIDs, one to each extension, and acme's admin. Then it prints the admin URL, the
logins, how to register two softphones and what to dial, and serves until Ctrl-C.

Register it on the main typer app with ``app.command("demo")(demo)``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from pbxcore.cli_serve import build_server, run_server
from pbxcore.config import ConfigError, load_settings
from pbxcore.logformat import configure_logging
from pbxcore.server import PbxServer
from pbxcore.tenancy.db import DatabaseUnavailableError
from pbxcore.tenancy.secrets import generate_password

__all__ = ["demo"]

OPERATOR_DOMAIN = "demo.test"
TENANT = "acme"
EXTENSIONS = ("201", "202")
DIDS = ("+74950000001", "+74950000002")


class _Api:
    """The demo's client of its own admin API (blocking; run in a thread)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.token: str | None = None

    def login(self, username: str, password: str) -> None:
        form = urllib.parse.urlencode({"username": username, "password": password}).encode()
        answer = self._send("POST", "/auth/token", form, "application/x-www-form-urlencoded")
        self.token = str(answer["access_token"])

    def __call__(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        return self._send(method, path, data, "application/json")

    def _send(self, method: str, path: str, data: bytes | None, kind: str) -> Any:
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", kind)
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read().decode()[:500]}") from None
        return json.loads(text) if text else None


def _seed(base: str, admin_password: str, carrier_port: int) -> dict[str, Any]:
    """The six steps through the API; the logins and passwords made."""
    api = _Api(base)
    api.login("admin", admin_password)
    op = api("POST", "/operators", {"name": "Demo Telecom", "domain": OPERATOR_DOMAIN})
    logins = {"operator": generate_password(), "boss": generate_password()}
    api(
        "POST",
        f"/operators/{op['id']}/admins",
        {"username": "operator", "password": logins["operator"]},
    )
    api.login("operator", logins["operator"])
    o = f"/operators/{op['id']}"
    tenant = api(
        "POST",
        f"{o}/tenants",
        {
            "name": "Acme",
            "slug": TENANT,
            "features": ["voicemail", "ivr"],
            "limits": {
                "max_extensions": 20,
                "max_concurrent_calls": 10,
                "international_calls": True,
            },
            # every softphone answers an MD5 challenge; some fail on SHA-256 beside it
            "sip": {"digest_algorithms": ["MD5"]},
        },
    )
    trunk = api(
        "POST",
        f"{o}/trunks",
        {
            "name": "Test carrier",
            "host": "127.0.0.1",
            "port": carrier_port,
            "transport": "udp",
            "number_format": "e164",
            "inbound_ips": ["127.0.0.1/32"],
        },
    )
    table = api("POST", f"{o}/route-tables", {"name": "Default"})
    api(
        "POST",
        f"{o}/route-tables/{table['id']}/routes",
        {"prefix": "", "trunk_id": trunk["id"], "cost_per_minute": "0.01"},
    )
    plan = api(
        "POST",
        f"{o}/dial-plans",
        {"name": "Russia", "country": "RU", "default_area_code": "495", "extension_digits": 3},
    )
    api("POST", f"{o}/numbers:bulk", {"from": DIDS[0], "to": DIDS[-1]})
    pool = api("GET", f"{o}/numbers?limit=100")
    for did in pool["items"]:
        api("PATCH", f"{o}/numbers/{did['id']}", {"tenant_id": tenant["id"]})
    api(
        "PATCH",
        f"{o}/tenants/{tenant['id']}",
        {"route_table_id": table["id"], "dial_plan_id": plan["id"]},
    )
    t = f"/tenants/{tenant['id']}"
    api(
        "POST",
        f"{t}/admins",
        {
            "username": "boss",
            "full_name": "Acme admin",
            "email": "boss@acme.example",  # the welcome mail waits in the outbox (no SMTP)
            "password": logins["boss"],
        },
    )
    sip = {number: generate_password() for number in EXTENSIONS}
    ext_ids = {}
    for number in EXTENSIONS:
        ext = api(
            "POST",
            f"{t}/extensions",
            {"number": number, "name": f"Phone {number}", "sip_password": sip[number]},
        )
        ext_ids[number] = ext["id"]
    mine = {n["number"]: n["id"] for n in api("GET", f"{t}/numbers")["items"]}
    for did, number in zip(DIDS, EXTENSIONS, strict=True):
        api(
            "PATCH",
            f"{t}/numbers/{mine[did]}",
            {"destination": {"type": "extension", "id": ext_ids[number]}},
        )
    return {"logins": logins, "sip": sip, "domain": tenant["domain"], "tenant": tenant["id"]}


def _instructions(
    server: PbxServer, seeded: dict[str, Any], admin_password: str, carrier_port: int, data: Path
) -> str:
    assert server.sip is not None and server.api_url is not None
    sip = next(a for a in server.sip.addresses if a.transport == "udp")
    domain = seeded["domain"]
    logins, phones = seeded["logins"], seeded["sip"]
    first, second = EXTENSIONS
    lines = [
        f"pbxcore demo is running (data in {data}; Ctrl-C stops it)",
        f"  admin API     {server.api_url}/api/v1/docs",
        f"  logins        platform admin: admin / {admin_password}",
        f"                operator admin: operator / {logins['operator']}",
        f"                client admin:   boss@{domain} / {logins['boss']}",
        f"  softphones    SIP server {sip.host}:{sip.port} (UDP or TCP), domain {domain}:",
        *(f"                user {n}, password {phones[n]}" for n in EXTENSIONS),
        f"  dial          {second} from {first}: an internal call, audio through the relay",
        f"                8 495 123-45-67 (or +74951234567): out to the test carrier on "
        f"127.0.0.1:{carrier_port};",
        f"                start one first: sipp -sn uas -i 127.0.0.1 -p {carrier_port}",
        f"                the carrier calling {DIDS[0]} rings {first}: "
        f"sipp -sn uac -s {DIDS[0]} -i 127.0.0.1 -p {carrier_port} -m 1 {sip.host}:{sip.port}",
        f"  calls         the CDRs: {server.api_url}/api/v1/tenants/{seeded['tenant']}/calls "
        "(log in as the client admin)",
    ]
    return "\n".join(lines)


def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="An empty directory for the demo's database (default: a new temporary one)."
        ),
    ] = None,
    sip_port: Annotated[int, typer.Option(help="SIP port on 127.0.0.1 (UDP and TCP).")] = 5060,
    api_port: Annotated[int, typer.Option(help="Admin API port on 127.0.0.1.")] = 8080,
    carrier_port: Annotated[
        int, typer.Option(help="Port of the test carrier on 127.0.0.1.")
    ] = 5070,
    rtp_ports: Annotated[str, typer.Option(help="RTP port range LOW-HIGH.")] = "20000-20999",
) -> None:
    """Run a seeded server on loopback: one operator, one client PBX, two extensions."""
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="pbxcore-demo-"))
    elif (data_dir / "pbxcore.db").exists():
        typer.echo(
            f"pbxcore demo: {data_dir} holds a database already: give an empty directory", err=True
        )
        raise typer.Exit(2)
    flags = {
        "data_dir": data_dir,
        "sip_listen": [f"127.0.0.1:{sip_port}"],
        "api_listen": f"127.0.0.1:{api_port}",
        "rtp_ports": rtp_ports,
        "media_bind": "127.0.0.1",
        "shutdown_grace": 5.0,
    }
    try:
        settings = load_settings(None, {}, flags)
        server = build_server(settings)
    except (ConfigError, ValueError, OSError) as exc:
        typer.echo(f"pbxcore demo: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging("warning")
    admin_password = generate_password()
    server.config.admin_password = admin_password

    async def seed(running: PbxServer) -> None:
        assert running.api_url is not None
        seeded = await asyncio.to_thread(
            _seed, running.api_url + "/api/v1", admin_password, carrier_port
        )
        print(_instructions(running, seeded, admin_password, carrier_port, data_dir), flush=True)

    try:
        with asyncio.Runner() as runner:
            runner.run(run_server(server, grace=settings.shutdown_grace, started=seed))
    except (OSError, DatabaseUnavailableError, ValueError, RuntimeError) as exc:
        typer.echo(f"pbxcore demo: {exc}", err=True)
        raise typer.Exit(1) from None
