"""Admin API throughput on one core: `pbxcore serve` driven by wrk, SQLite and PostgreSQL.

    python bench/bench_api.py                                  # both stores, 10 s per case
    python bench/bench_api.py --stores sqlite --duration 5 --connections 32

The real server (``python -m pbxcore.cli_serve --db URL --api-listen ... --sip-listen
udp:127.0.0.1:0``, uvloop) runs pinned to CPU 1 (``--server-cpu``); wrk runs pinned to CPU
0 (``--wrk-cpu``). PostgreSQL, when measured, is a private cluster (tests/peers/postgres.py)
whose processes are pinned to the server's CPU as well: the whole stack on one core.

Each store gets a fresh database, seeded through the API: an operator, a tenant with 50
extensions (the list), and a second tenant for the creates (max_extensions 100,000). Then,
after a short warm-up per case, wrk measures:

- ``health``: GET /api/v1/health, no auth, no database: the framework's ceiling, same run;
- ``list``: GET /api/v1/tenants/{t}/extensions?limit=50 with the bearer token (50 rows);
- ``create``: POST /api/v1/tenants/{t}/extensions, a new number per request (a Lua
  counter), with a SIP password; each answer waits for the config snapshot to have it.

It prints requests/s, requests per CPU-second of the server (plus PostgreSQL's processes:
a figure that holds on a machine shared with other work), p50 and p99 latency and non-2xx
answers for each, and the ratio list/health. Targets (issue 9): lists >= 1,500 req/s and >= 0.3x health; creates >= 300/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from _common import cpu_seconds

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.peers.postgres

ADMIN_PASSWORD = "bench-admin-password"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
LIST_SIZE = 50

# wrk's done() prints one JSON line the script reads; latency in microseconds
_DONE = """
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
    .. '"status_errors":%d,"socket_errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
"""

_GET = (
    """
wrk.method = "GET"
{headers}
"""
    + _DONE
)

_CREATE = (
    """
local counter = 0
local base = BASE
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{headers}
request = function()
  counter = counter + 1
  local body = string.format(
    '{"number":"%d","name":"Bench %d","sip_password":"bench-sip-pw-%d"}',
    base + counter, counter, counter)
  return wrk.format(nil, nil, nil, body)
end
"""
    + _DONE
)


@dataclass
class Result:
    case: str
    requests: int
    seconds: float
    cpu: float  # CPU seconds of the server (and PostgreSQL) during the run
    p50_ms: float
    p99_ms: float
    max_ms: float
    status_errors: int
    socket_errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def per_cpu_second(self) -> float:
        return self.requests / self.cpu if self.cpu else 0.0


def free_tcp_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(db_url: str, folder: Path, cpu: str) -> Iterator[tuple[str, int]]:
    """`pbxcore serve` pinned to ``cpu``; yields the API base URL (http://host:port) and
    the server's pid."""
    port = free_tcp_port()
    env = os.environ | {
        "PBXCORE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "PBXCORE_SECRET_KEY": SECRET_KEY,
    }
    command = [
        "taskset", "-c", cpu, sys.executable, "-m", "pbxcore.cli_serve",
        "--db", db_url, "--api-listen", f"127.0.0.1:{port}",
        "--sip-listen", "udp:127.0.0.1:0", "--data-dir", str(folder / "data"),
        "--log-level", "WARNING", "--uvloop",
    ]  # fmt: skip
    log_path = folder / "server.log"
    log = log_path.open("w")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        assert process.stdout is not None
        while True:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"pbxcore serve did not start: {log_path.read_text()}")
            if line.startswith("api "):
                yield line.split()[1].removesuffix("/api/v1"), process.pid
                break
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextlib.contextmanager
def postgres(cpu: str) -> Iterator[tuple[str, int]]:
    """A private PostgreSQL cluster, its processes pinned to ``cpu``; yields a database URL
    and the postmaster's pid."""
    from tests.peers.postgres import PostgresCluster, find_bin_dir  # noqa: PLC0415

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.start()
        pid = (cluster.data / "postmaster.pid").read_text().split()[0]
        # the postmaster and its running children; backends forked later inherit it
        subprocess.run(["taskset", "-a", "-cp", cpu, pid], capture_output=True, check=True)
        for child in subprocess.run(
            ["pgrep", "-P", pid], capture_output=True, text=True, check=False
        ).stdout.split():
            subprocess.run(["taskset", "-a", "-cp", cpu, child], capture_output=True, check=False)
        yield cluster.create_database(), int(pid)
    finally:
        cluster.stop()


def seed(base: str) -> tuple[str, str, str]:
    """Operator, list tenant with 50 extensions, create tenant; (token, list t, create t)."""
    with httpx.Client(base_url=f"{base}/api/v1", timeout=30) as client:
        r = client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
        r.raise_for_status()
        token = r.json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"

        def create(path: str, body: dict[str, object]) -> dict[str, object]:
            r = client.post(path, json=body)
            if r.status_code != 201:
                raise RuntimeError(f"POST {path}: {r.status_code} {r.text}")
            data: dict[str, object] = r.json()
            return data

        op = create("/operators", {"name": "Bench Telecom", "domain": "bench.example.net"})
        limits = {"max_extensions": 100_000}
        listed = create(
            f"/operators/{op['id']}/tenants", {"name": "L", "slug": "list", "limits": limits}
        )
        writes = create(
            f"/operators/{op['id']}/tenants", {"name": "W", "slug": "write", "limits": limits}
        )
        for i in range(LIST_SIZE):
            create(
                f"/tenants/{listed['id']}/extensions",
                {"number": f"{100 + i}", "name": f"Employee {i}", "sip_password": f"pw-{i:08d}"},
            )
        r = client.get(f"/tenants/{listed['id']}/extensions", params={"limit": LIST_SIZE})
        assert r.status_code == 200 and len(r.json()["items"]) == LIST_SIZE, r.text
        return token, str(listed["id"]), str(writes["id"])


def run_wrk(
    name: str,
    url: str,
    script: str,
    folder: Path,
    *,
    cpu: str,
    connections: int,
    duration: float,
    pids: list[int],
) -> Result:
    path = folder / f"{name}.lua"
    path.write_text(script)
    command = [
        "taskset", "-c", cpu, shutil.which("wrk") or "wrk", "-t1", f"-c{connections}",
        f"-d{duration:g}s", "--timeout", "10s", "-s", str(path), url,
    ]  # fmt: skip
    before = cpu_seconds(*pids)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(*pids) - before
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    data = json.loads(line.removeprefix("RESULT "))
    return Result(
        name,
        data["requests"],
        data["duration_us"] / 1e6,
        used,
        data["p50_us"] / 1000,
        data["p99_us"] / 1000,
        data["max_us"] / 1000,
        data["status_errors"],
        data["socket_errors"],
    )


def bench_store(
    store: str, db_url: str, folder: Path, args: argparse.Namespace, pids: list[int]
) -> list[Result]:
    results: list[Result] = []
    with server(db_url, folder, args.server_cpu) as (base, pid):
        pids = [pid, *pids]
        token, list_t, write_t = seed(base)
        auth = f'wrk.headers["Authorization"] = "Bearer {token}"'
        cases = [
            ("health", f"{base}/api/v1/health", _GET.replace("{headers}", "")),
            (
                "list",
                f"{base}/api/v1/tenants/{list_t}/extensions?limit={LIST_SIZE}",
                _GET.replace("{headers}", auth),
            ),
            (
                "create",
                f"{base}/api/v1/tenants/{write_t}/extensions",
                _CREATE.replace("{headers}", auth).replace("BASE", "10000000"),
            ),
        ]
        for name, url, script in cases:
            if name not in args.cases.split(","):
                continue
            if name == "create":
                # a different range for the warm-up: every number is new
                warm = _CREATE.replace("{headers}", auth).replace("BASE", "20000000")
            else:
                warm = script
            if args.warmup > 0:
                run_wrk(
                    f"{name}-warmup", url, warm, folder, cpu=args.wrk_cpu,
                    connections=args.connections, duration=args.warmup, pids=pids,
                )  # fmt: skip
            result = run_wrk(
                name, url, script, folder, cpu=args.wrk_cpu,
                connections=args.connections, duration=args.duration, pids=pids,
            )  # fmt: skip
            results.append(result)
            print(
                f"{store:<11} {name:<7} {result.rate:>9,.0f} {result.per_cpu_second:>9,.0f} "
                f"{result.p50_ms:>8.2f} "
                f"{result.p99_ms:>8.2f} {result.max_ms:>8.1f} {result.status_errors:>7} "
                f"{result.socket_errors:>7}",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--cases", default="health,list,create")
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--wrk-cpu", default="0")
    parser.add_argument(
        "--pg-cpu", default="", help="CPUs for PostgreSQL (default: the server's, one core)"
    )
    args = parser.parse_args()
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model}; Python {platform.python_version()}")
    print(
        f"server on CPU {args.server_cpu}, PostgreSQL on CPU {args.pg_cpu or args.server_cpu}, wrk -t1 -c{args.connections} on CPU "
        f"{args.wrk_cpu}; {args.duration:g} s per case after {args.warmup:g} s of warm-up"
    )
    print(
        f"{'store':<11} {'case':<7} {'req/s':>9} {'req/cpu-s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'non-2xx':>7} {'sockerr':>7}"
    )
    summary: dict[str, dict[str, Result]] = {}
    for store in args.stores.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench_api_{store}_") as tmp:
            folder = Path(tmp)
            if store == "sqlite":
                results = bench_store(store, f"sqlite:///{folder}/pbx.db", folder, args, [])
            elif store == "postgresql":
                with postgres(args.pg_cpu or args.server_cpu) as (url, postmaster):
                    results = bench_store(store, url, folder, args, [postmaster])
            else:
                raise SystemExit(f"unknown store {store!r}")
        summary[store] = {r.case: r for r in results}
    print()
    for store, by_case in summary.items():
        if len(by_case) < 3:
            continue
        health, listed, created = by_case["health"], by_case["list"], by_case["create"]
        ratio = listed.rate / health.rate if health.rate else 0.0
        cpu_ratio = listed.per_cpu_second / health.per_cpu_second if health.per_cpu_second else 0.0
        ok_list = listed.rate >= 1500 and ratio >= 0.3
        ok_create = created.rate >= 300
        print(
            f"{store}: list/health {ratio:.2f}x ({cpu_ratio:.2f}x per CPU-second) (list {listed.rate:,.0f}/s, target >= 1,500 "
            f"and >= 0.3x: {'met' if ok_list else 'NOT met'}); creates {created.rate:,.0f}/s "
            f"(target >= 300: {'met' if ok_create else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
