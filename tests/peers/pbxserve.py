"""Run the real ``pbxcore serve`` command for interop tests, and SIPp against it.

``start_serve(args, log)`` starts the installed console script on free ports, reads the
lines it prints on stdout (``listening udp:127.0.0.1:PORT``, ``api http://.../api/v1``,
``platform admin: admin password ...``) and returns a :class:`RunningServer`;
``stop_serve`` sends SIGTERM and waits.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import PEERS, pbxcore_command, require_binary

HOSTS = {"ipv4": "127.0.0.1", "ipv6": "::1"}


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    ports: dict[tuple[str, str], int]  # (transport, family) -> port
    log: Path
    api: str | None = None  # base URL of the admin API, .../api/v1
    lines: list[str] = field(default_factory=list)

    def port(self, transport: str, family: str) -> int:
        return self.ports[(transport, family)]


def free_port(family: str = "ipv4") -> int:
    """A port free for both UDP and TCP on the loopback address of ``family``."""
    af = socket.AF_INET6 if family == "ipv6" else socket.AF_INET
    for _ in range(50):
        with socket.socket(af, socket.SOCK_DGRAM) as udp:
            udp.bind((HOSTS[family], 0))
            port = udp.getsockname()[1]
            with socket.socket(af, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOSTS[family], port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port")


def start_serve(
    args: list[str],
    log: Path,
    *,
    listening: int,
    api: bool = False,
    env: dict[str, str] | None = None,
) -> RunningServer:
    """Start ``pbxcore serve ARGS``; wait for ``listening`` SIP lines (and the API line)."""
    environment = os.environ.copy() | (env or {})
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [*pbxcore_command(), "serve", *args],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env=environment,
        )
    server = RunningServer(process, {}, log)
    try:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        pending = ""
        while len(server.ports) < listening or (api and server.api is None):
            if not selector.select(timeout=30):
                pytest.fail(f"pbxcore serve did not start: {log.read_text()}")
            chunk = os.read(process.stdout.fileno(), 4096).decode()
            if not chunk:
                pytest.fail(f"pbxcore serve exited: {log.read_text()}")
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                server.lines.append(line)
                if line.startswith("listening "):
                    transport, rest = line.split()[1].split(":", 1)
                    family = "ipv6" if rest.startswith("[") else "ipv4"
                    server.ports[(transport, family)] = int(rest.rsplit(":", 1)[1])
                elif line.startswith("api "):
                    server.api = line.split()[1]
        selector.close()
    except BaseException:
        stop_serve(server)
        raise
    return server


def stop_serve(server: RunningServer) -> int:
    """SIGTERM, then wait (kill after 10 s); the exit code."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


def run_sipp(
    server: RunningServer,
    scenario: str,
    transport: str,
    family: str,
    tmp_path: Path,
    *args: str,
) -> subprocess.CompletedProcess[str]:
    """Run a SIPp scenario of tests/peers against ``server`` (two calls, one at a time)."""
    sipp = require_binary("sipp")
    host = HOSTS[family]
    port = server.port(transport, family)
    target = f"[{host}]:{port}" if family == "ipv6" else f"{host}:{port}"
    command = [
        sipp, target, "-sf", str(PEERS / scenario), "-i", host, "-p", str(free_port(family)),
        "-t", "u1" if transport == "udp" else "t1", "-m", "2", "-l", "1",
        "-nostdin", "-timeout", "15s", "-recv_timeout", "5000",
        "-trace_err", "-trace_msg", *args,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
    )


def sipp_messages(tmp_path: Path) -> str:
    """Every message SIPp traced in ``tmp_path`` (then removes the trace files)."""
    text = ""
    for path in tmp_path.glob("*_messages.log"):
        text += path.read_text(errors="replace")
        path.unlink()
    return text
