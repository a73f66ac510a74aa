"""Helpers shared by the benchmark scripts: what machine this is, careful timing, CPU time
of a process tree, and the servers under test (`pbxcore serve`, Kamailio)."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def machine() -> str:
    """CPU model, core count and Python version, for the header of every result table."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{model or platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


def uvloop_wanted(no_uvloop: bool) -> bool:
    """Whether the server under test runs on uvloop: installed and not turned off."""
    try:
        import uvloop  # noqa: F401, PLC0415
    except ImportError:
        return False
    return not no_uvloop


def print_run_header() -> None:
    """The machine and its load, first lines of every benchmark's output."""
    print(f"machine: {machine()}")
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def time_per_call(
    fn: Callable[[Any], object], inputs: Sequence[Any], min_seconds: float = 0.2
) -> float:
    """Best-of-5 seconds per call, each round cycling through all ``inputs``."""
    rounds = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(rounds):
            for x in inputs:
                fn(x)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds / 5:
            break
        rounds *= 2
    best = elapsed
    for _ in range(4):
        t0 = time.perf_counter()
        for _ in range(rounds):
            for x in inputs:
                fn(x)
        best = min(best, time.perf_counter() - t0)
    return best / (rounds * len(inputs))


CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Kamailio's workers, PostgreSQL's backends)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(*pids: int) -> float:
    """CPU time (utime + stime, all threads) of ``pids`` and all their descendants."""
    total = 0
    for pid in pids:
        for member in process_tree(pid):
            try:
                fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


# -- servers under test: `pbxcore serve` and Kamailio, pinned to a CPU ---------------------

SERVE_ADMIN_PASSWORD = "bench-admin-password"
SERVE_SECRET_KEY = "bench-secret-key-0123456789abcdef"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A running ``pbxcore serve``: its pid, SIP listening points, admin API base URL."""

    pid: int
    listening: list[str] = field(default_factory=list)  # "udp:127.0.0.1:5060" ...
    api: str | None = None  # http://host:port (without /api/v1)

    def sip_port(self, transport: str = "udp") -> int:
        spec = next(s for s in self.listening if s.startswith(f"{transport}:"))
        return int(spec.rsplit(":", 1)[1])


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def pbxcore_serve(
    args: Sequence[str],
    folder: Path,
    *,
    cpu: str,
    api: bool = False,
    env: dict[str, str] | None = None,
    log_name: str = "pbxcore.log",
) -> Iterator[Served]:
    """``python -m pbxcore.cli_serve ARGS`` pinned to ``cpu``, with the bench's admin password
    and secret key; waits for its first "listening" line (and its "api" line if ``api``)."""
    command = ["taskset", "-c", cpu, sys.executable, "-m", "pbxcore.cli_serve", *args]
    environment = os.environ | {
        "PBXCORE_ADMIN_PASSWORD": SERVE_ADMIN_PASSWORD,
        "PBXCORE_SECRET_KEY": SERVE_SECRET_KEY,
    }
    log_path = folder / log_name
    log = log_path.open("w")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log, text=True, env=environment | (env or {})
    )
    try:
        assert process.stdout is not None
        served = Served(process.pid)
        while not served.listening or (api and served.api is None):
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"pbxcore serve did not start: {log_path.read_text()}")
            if line.startswith("listening "):
                served.listening.append(line.split()[1])
            elif line.startswith("api "):
                served.api = line.split()[1].removesuffix("/api/v1")
        yield served
    finally:
        stop_process(process)
        log.close()


def answers_options(port: int, domain: str = "bench.test") -> bool:
    """Whether a SIP server on 127.0.0.1:``port`` (UDP) answers an OPTIONS."""
    probe = (
        f"OPTIONS sip:{domain} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKprobe;rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:p@{domain}>;tag=1\r\nTo: <sip:{domain}>\r\n"
        "Call-ID: probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        sock.sendto(probe, ("127.0.0.1", port))
        try:
            return sock.recv(4096).startswith(b"SIP/2.0")
        except OSError:
            return False


KAMAILIO_BUFFER = 4 * 1024 * 1024  # socket buffers, as the issue asks


@contextlib.contextmanager
def kamailio(folder: Path, config: str, port: int, *, cpu: str) -> Iterator[int]:
    """Debian's kamailio with ``config`` (listening on UDP ``port``) pinned to ``cpu``, with
    the tlsf memory managers; yields the main process's pid once it answers OPTIONS."""
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    cfg = folder / "kamailio.cfg"
    cfg.write_text(config)
    command = [
        "taskset", "-c", cpu, binary, "-f", str(cfg), "-DD", "-E", "-w", str(folder),
        "-Y", str(folder), "-m", "2048", "-M", "32", "-x", "tlsf", "-X", "tlsf",
    ]  # fmt: skip
    log = (folder / "kamailio.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"kamailio exited: {(folder / 'kamailio.log').read_text()}")
            if answers_options(port):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("kamailio did not answer")
        yield process.pid
    finally:
        stop_process(process)
        log.close()


def sipp_last_stats(path: Path) -> dict[str, str]:
    """The last row of a SIPp ``-trace_stat`` file, by column name."""
    header, *rows = [line.split(";") for line in path.read_text().splitlines() if line]
    return dict(zip(header, rows[-1], strict=False))
