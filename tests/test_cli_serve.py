"""`pbxcore serve` option handling (the running server is exercised in test_interop_sip)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pbxcore.cli_serve import serve
from tests.helpers import pbxcore_command

app = typer.Typer()
app.command("serve")(serve)
app.command("other")(lambda: None)  # two commands: "serve" is a subcommand, as in pbxcore


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users.toml"
    path.write_text('[[users]]\ndomain = "pbx.test"\nusername = "alice"\npassword = "pw"\n')
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sip-listen", "example.com:5060"], "needs an IP address"),
        (["--sip-listen", "tls:127.0.0.1:0"], "needs --tls-cert and --tls-key"),
        (["--tls-cert", "/nonexistent.pem"], "go together"),
        (["--min-expires", "100", "--default-expires", "50"], "min_expires"),
        (["--guard-window", "0"], "positive"),
        (["--t1", "10"], "T1"),
        (["--max-connections", "0"], "--max-connections: must be at least 1"),
        (["--max-connections-per-ip", "0"], "--max-connections-per-ip: must be at least 1"),
        (["--message-timeout", "0"], "--message-timeout: must be more than 0"),
        (["--idle-timeout", "-5"], "--idle-timeout: must be more than 0"),
        (["--rate-bytes", "-1"], "--rate-bytes: must be at least 0"),
        (["--rate-bytes-burst", "1000"], "--rate-bytes-burst: must be at least 65535"),
        (["--nonce-ttl", "0"], "--nonce-ttl: must be more than 0"),
        (["--rtp-ports", "30000"], "--rtp-ports"),
        (["--rtp-ports", "3000-200"], "--rtp-ports"),
        (["--cps-per-extension", "-1"], "--cps-per-extension: must be at least 0"),
        (["--cps-per-tenant", "-2"], "--cps-per-tenant: must be at least 0"),
        (["--max-calls", "-3"], "--max-calls: must be at least 0"),
    ],
)
def test_serve_rejects_bad_options(users: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--users", str(users), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_serve_rejects_bad_users_file(tmp_path: Path) -> None:
    bad = tmp_path / "users.toml"
    bad.write_text('[[users]]\ndomain = "pbx.test"\n')
    result = CliRunner().invoke(app, ["serve", "--users", str(bad)])
    assert result.exit_code == 2 and "users[0]" in result.output
    missing = CliRunner().invoke(app, ["serve", "--users", str(tmp_path / "none.toml")])
    assert missing.exit_code == 2 and "No such file" in missing.output


def test_serve_help_names_the_transport_limits() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in (
        "--rate-bytes",
        "--rate-bytes-burst",
        "--max-connections",
        "--max-connections-per-ip",
        "--message-timeout",
        "--idle-timeout",
    ):
        assert option in result.output


def test_serve_refuses_connections_over_the_per_ip_cap_and_logs_it(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text('[[users]]\ndomain = "pbx.test"\nusername = "alice"\npassword = "pw"\n')
    log = tmp_path / "server.log"
    command = [
        *pbxcore_command(), "serve", "--sip-listen", "tcp:127.0.0.1:0", "--users", str(users),
        "--max-connections-per-ip", "2", "--no-uvloop",
    ]  # fmt: skip
    with log.open("w") as log_file:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening tcp:127.0.0.1:"), log.read_text()
        port = int(line.rsplit(":", 1)[1])
        kept = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        for sock in kept:  # both are served: a keepalive ping gets its pong
            sock.sendall(b"\r\n\r\n")
            assert sock.recv(2) == b"\r\n"
        third = socket.create_connection(("127.0.0.1", port), timeout=5)
        with third, contextlib.suppress(ConnectionResetError):  # closed: EOF or reset
            assert third.recv(10) == b""
        for sock in kept:
            sock.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    text = log.read_text()
    assert "refusing tcp connection from 127.0.0.1:" in text
    assert "2 connections from 127.0.0.1" in text
