"""Interop with real peers: SIPp and baresip register against `pbxcore serve`.

Runs the real command, ``pbxcore serve`` (the installed console script),
on free ports on 127.0.0.1 and ::1, over UDP and TCP.

Findings that shape the users file below:
- SIPp 3.6.1 computes MD5 (and AKAv1-MD5) only and answers the *first* WWW-Authenticate:
  its realm lists MD5 first (SHA-256 still offered second).
- baresip 1.0.0 (libre 1.1.0) gives up ("Function not implemented") when any challenge
  names an algorithm other than MD5: its realm offers MD5 only.
SHA-256 itself is covered end to end by tests/test_sip_server.py (our own UAC).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import require_binary
from tests.peers.pbxserve import (
    HOSTS,
    RunningServer,
    free_port,
    run_sipp,
    sipp_messages,
    start_serve,
    stop_serve,
)

pytestmark = pytest.mark.peers

USERS = """
[[users]]
domain = "pbx.test"
username = "alice"
password = "secret"

[[users]]
domain = "sipp.test"
username = "alice"
password = "secret"

[[users]]
domain = "md5.test"
username = "alice"
password = "secret"

[[domains]]
name = "sipp.test"
algorithms = ["MD5", "SHA-256"]

[[domains]]
name = "md5.test"
algorithms = ["MD5"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("pbx")
    users = folder / "users.toml"
    users.write_text(USERS)
    log = folder / "server.log"
    args = [
        "--sip-listen", "127.0.0.1:0", "--sip-listen", "[::1]:0",
        "--users", str(users), "--min-expires", "1", "--log-level", "DEBUG",
        "--guard-failures", "1000",
    ]  # fmt: skip
    running = start_serve(args, log, listening=4)
    try:
        yield running
    finally:
        code = stop_serve(running)
    assert code == 0, "SIGTERM must stop the server cleanly"
    text = log.read_text()
    assert "secret" not in text, "the server log must never contain a password"


TRANSPORTS = pytest.mark.parametrize("transport", ["udp", "tcp"])
FAMILIES = pytest.mark.parametrize("family", ["ipv4", "ipv6"])


@TRANSPORTS
@FAMILIES
def test_sipp_registers_with_md5_digest(
    server: RunningServer, transport: str, family: str, tmp_path: Path
) -> None:
    result = run_sipp(
        server, "sipp_register_digest.xml", transport, family, tmp_path,
        "-s", "alice", "-au", "alice", "-ap", "secret", "-set", "domain", "sipp.test",
        "-auth_uri", "sipp.test",  # digest uri sip:sipp.test, not SIPp's default
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    messages = sipp_messages(tmp_path)
    assert messages.count("SIP/2.0 401 Unauthorized") >= 2
    assert messages.count("SIP/2.0 200 OK") == 4  # register + unregister, two calls
    assert "algorithm=MD5" in messages and 'qop="auth"' in messages


@TRANSPORTS
@FAMILIES
def test_sipp_wrong_password_is_refused(
    server: RunningServer, transport: str, family: str, tmp_path: Path
) -> None:
    result = run_sipp(
        server, "sipp_register_wrong_password.xml", transport, family, tmp_path,
        "-s", "alice", "-au", "alice", "-ap", "wrong", "-set", "domain", "sipp.test",
        "-auth_uri", "sipp.test",  # digest uri sip:sipp.test, not SIPp's default
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "SIP/2.0 403 Forbidden" in sipp_messages(tmp_path)


@TRANSPORTS
@FAMILIES
def test_sipp_options_gets_200(
    server: RunningServer, transport: str, family: str, tmp_path: Path
) -> None:
    result = run_sipp(
        server, "sipp_options.xml", transport, family, tmp_path, "-set", "domain", "pbx.test"
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert sipp_messages(tmp_path).count("SIP/2.0 200 OK") == 2


BARESIP_CONFIG = """\
poll_method\t\tepoll
sip_listen\t\t{listen}
net_interface\t\t{host}
module_path\t\t/usr/lib/baresip/modules
module_tmp\t\taccount.so
module_app\t\tmenu.so
"""


@TRANSPORTS
@FAMILIES
def test_baresip_registers_refreshes_and_unregisters(
    server: RunningServer, transport: str, family: str, tmp_path: Path
) -> None:
    baresip = require_binary("baresip")
    host = HOSTS[family]
    bracketed = f"[{host}]" if family == "ipv6" else host
    (tmp_path / "config").write_text(
        BARESIP_CONFIG.format(listen=f"{bracketed}:{free_port(family)}", host=host)
    )
    outbound = f"sip:{bracketed}:{server.port(transport, family)};transport={transport}"
    (tmp_path / "accounts").write_text(
        f'<sip:alice@md5.test;transport={transport}>;outbound="{outbound}";'
        "auth_pass=secret;regint=2\n"
    )
    (tmp_path / "contacts").write_text("")
    args = [baresip, "-f", str(tmp_path), "-t", "6", "-s"]
    if family == "ipv6":
        args.insert(1, "-6")
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False
    )
    trace = result.stdout + result.stderr
    # the SIP trace (-s) holds every message; pair each REGISTER's Contact expires with
    # the answer to it
    registers = trace.split("REGISTER sip:md5.test")[1:]
    expires = [
        int(chunk.split(">;expires=", 1)[1].split("\n", 1)[0].strip())
        for chunk in registers
        if ">;expires=" in chunk.split("\n\n", 1)[0]
    ]
    answers = [line.split()[1] for line in trace.splitlines() if line.startswith("SIP/2.0 ")]
    assert "200" in answers, trace[-3000:]
    ok_registers = answers.count("200")
    assert ok_registers >= 3, trace[-3000:]  # register, at least one refresh, unregister
    assert expires[0] == 2 and expires[-1] == 0, expires
    assert answers[-1] == "200", trace[-3000:]  # the unregister was accepted
    assert "401" in answers  # it was challenged
    assert "403" not in answers and "Function not implemented" not in trace
