"""Authenticated REGISTER/s: `pbxcore serve` against Kamailio, same run, driven by SIPp.

    python bench/bench_register.py                       # both servers, default rate steps
    python bench/bench_register.py --rates 1000,2000,3000 --duration 5 --servers pbxcore

Each registration is REGISTER -> 401 (digest MD5, qop=auth) -> REGISTER with credentials
-> 200 (bench/sipp_register_bench.xml), for 1,000 users cycling. SIPp runs at each rate for
``--duration`` seconds; the steps go up until calls fail (timeouts, unexpected answers).
For every step the script reads the server's CPU time (all its processes) from /proc, and
prints registrations per CPU-second and the highest rate with no failures, for both servers,
and the ratio pbxcore/Kamailio. The server is pinned to CPU 1 and SIPp to CPU 0.

Kamailio (Debian's kamailio): usrloc in memory (db_mode 0), pv_www_authenticate with MD5 and
qop=auth, nonce_count=1 (replay protection, as pbxcore has), one UDP worker, ``-x tlsf -X
tlsf`` memory managers, 4 MiB socket buffers, stateless replies (sl).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from _common import (
    KAMAILIO_BUFFER,
    cpu_seconds,
    free_udp_port,
    kamailio,
    pbxcore_serve,
    sipp_last_stats,
)

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "sipp_register_bench.xml"
DOMAIN = "pbx.test"
PASSWORD = "secret"

KAMAILIO_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
maxbuffer={buffer}

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "auth.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"

modparam("usrloc", "db_mode", 0)
modparam("auth", "nonce_count", 1)
modparam("auth", "secret", "bench-secret-0123456789")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!is_method("REGISTER")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
{stateful}
    if (!pv_www_authenticate("$td", "{password}", "0")) {{
        www_challenge("$td", "1");
        exit;
    }}
    if (!save("location")) {{
        sl_reply_error();
    }}
    exit;
}}
"""

# "mirror" does what pbxcore does: the 401 challenge statelessly, a transaction for a
# REGISTER with credentials (the auth module's docs ask for one with nonce_count);
# "stateless" answers everything with sl (retransmissions get challenged again).
KAMAILIO_STATEFUL = {
    "mirror": """    if (is_present_hf("Authorization")) {
        if (!t_newtran()) {
            sl_reply_error();
            exit;
        }
    }""",
    "stateless": "",
}


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    wall: float
    cpu: float

    @property
    def per_cpu_second(self) -> float:
        return self.successful / self.cpu if self.cpu > 0 else 0.0


def write_users(folder: Path, count: int) -> tuple[Path, Path]:
    users = [f"u{1000 + i}" for i in range(count)]
    toml = folder / "users.toml"
    with toml.open("w") as out:
        for user in users:
            out.write(f'[[users]]\ndomain = "{DOMAIN}"\nusername = "{user}"\n')
            out.write(f'password = "{PASSWORD}"\n\n')
        # SIPp answers only the first challenge and computes MD5 only: list MD5 first
        out.write(f'[[domains]]\nname = "{DOMAIN}"\nalgorithms = ["MD5", "SHA-256"]\n')
    csv = folder / "users.csv"
    with csv.open("w") as out:
        out.write("SEQUENTIAL\n")
        for user in users:
            out.write(f"{user};[authentication username={user} password={PASSWORD}];{DOMAIN}\n")
    return toml, csv


@contextlib.contextmanager
def pbxcore_server(
    folder: Path, users: Path, port: int, *, uvloop: bool, cpu: str, guard: bool = False
) -> Iterator[int]:
    # the per-source rate limit is off: every SIPp call comes from one address
    args = [
        "--sip-listen", f"udp:127.0.0.1:{port}", "--users", str(users),
        "--rate-limit", "0", "--log-level", "WARNING",
        "--uvloop" if uvloop else "--no-uvloop",
    ]  # fmt: skip
    if not guard:
        args += ["--guard-failures", "0"]
    with pbxcore_serve(args, folder, cpu=cpu) as served:
        yield served.pid


def kamailio_server(folder: Path, port: int, *, cpu: str, mode: str) -> AbstractContextManager[int]:
    config = KAMAILIO_CFG.format(
        port=port, buffer=KAMAILIO_BUFFER, password=PASSWORD, stateful=KAMAILIO_STATEFUL[mode]
    )
    return kamailio(folder, config, port, cpu=cpu)


def run_step(
    server_pid: int, port: int, csv: Path, rate: int, duration: float, folder: Path, cpu: str
) -> Step:
    calls = int(rate * duration)
    stat = folder / f"stat_{port}_{rate}.csv"
    command = [
        "taskset", "-c", cpu, shutil.which("sipp") or "sipp", f"127.0.0.1:{port}",
        "-sf", str(SCENARIO), "-inf", str(csv), "-i", "127.0.0.1", "-p", str(free_udp_port()),
        "-r", str(rate), "-m", str(calls), "-l", str(max(rate * 4, 1000)),
        "-nostdin", "-timeout", f"{int(duration * 3 + 20)}s", "-recv_timeout", "5000",
        "-max_recv_loops", "5000", "-max_sched_loops", "5000",
        "-trace_stat", "-stf", str(stat), "-fd", "60", "-buff_size", str(4 * 1024 * 1024),
        "-auth_uri", DOMAIN,  # digest uri = Request-URI, not SIPp's default
    ]  # fmt: skip
    before = cpu_seconds(server_pid)
    start = time.monotonic()
    subprocess.run(command, cwd=folder, capture_output=True, timeout=duration * 4 + 60, check=False)
    wall = time.monotonic() - start
    time.sleep(0.3)  # let the server finish what is queued
    used = cpu_seconds(server_pid) - before
    last = sipp_last_stats(stat)
    successful = int(last["SuccessfulCall(C)"])
    failed = int(last["FailedCall(C)"])
    retrans = int(last.get("Retransmissions(C)", "0") or 0)
    return Step(rate, calls, successful, failed, retrans, wall, used)


def bench_server(
    name: str,
    pid: int,
    port: int,
    csv: Path,
    rates: list[int],
    duration: float,
    folder: Path,
    cpu: str,
) -> list[Step]:
    steps: list[Step] = []
    print(f"\n{name}")
    print(
        f"{'rate/s':>8} {'calls':>7} {'ok':>7} {'failed':>7} {'retrans':>8} {'cpu s':>7} {'reg/cpu-s':>10}"
    )
    for rate in rates:
        step = run_step(pid, port, csv, rate, duration, folder, cpu)
        steps.append(step)
        print(
            f"{step.rate:>8} {step.calls:>7} {step.successful:>7} {step.failed:>7} "
            f"{step.retransmissions:>8} {step.cpu:>7.2f} {step.per_cpu_second:>10,.0f}",
            flush=True,
        )
        if step.failed or step.successful < step.calls:
            break
    return steps


def summary(steps: list[Step]) -> tuple[int, float]:
    clean = [s for s in steps if not s.failed and s.successful == s.calls]
    best_rate = max((s.rate for s in clean), default=0)
    # CPU efficiency: the best figure among clean steps (a loaded server batches best)
    per_cpu = max((s.per_cpu_second for s in clean), default=0.0)
    return best_rate, per_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", default="500,1000,1500,2000,2500,3000,3500,4000,5000,6000,7000,8000"
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--servers", default="pbxcore,kamailio")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument(
        "--guard", action="store_true", help="keep pbxcore's brute-force guard on (default: off)"
    )
    parser.add_argument("--kamailio-mode", choices=sorted(KAMAILIO_STATEFUL), default="mirror")
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--sipp-cpu", default="0")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    servers = args.servers.split(",")
    try:
        import uvloop  # noqa: F401, PLC0415

        has_uvloop = not args.no_uvloop
    except ImportError:
        has_uvloop = False
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
        f"pbxcore event loop: {'uvloop' if has_uvloop else 'asyncio'}; users: {args.users}; "
        f"brute-force guard {'on' if args.guard else 'off'}, per-source rate limit off"
    )
    print(
        f"steps of {args.duration:g} s at {rates} registrations/s; server on CPU {args.server_cpu}, SIPp on CPU {args.sipp_cpu}"
    )
    results: dict[str, list[Step]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_register_") as tmp:
        folder = Path(tmp)
        toml, csv = write_users(folder, args.users)
        if "pbxcore" in servers:
            port = free_udp_port()
            with pbxcore_server(
                folder, toml, port, uvloop=has_uvloop, cpu=args.server_cpu, guard=args.guard
            ) as pid:
                results["pbxcore"] = bench_server(
                    "pbxcore serve", pid, port, csv, rates, args.duration, folder, args.sipp_cpu
                )
        if "kamailio" in servers:
            port = free_udp_port()
            with kamailio_server(folder, port, cpu=args.server_cpu, mode=args.kamailio_mode) as pid:
                results["kamailio"] = bench_server(
                    f"kamailio 5.6 (nonce_count=1, tlsf, {args.kamailio_mode})",
                    pid,
                    port,
                    csv,
                    rates,
                    args.duration,
                    folder,
                    args.sipp_cpu,
                )
    print("\nserver      highest rate with no failures   registrations per CPU-second")
    figures = {name: summary(steps) for name, steps in results.items()}
    for name, (best, per_cpu) in figures.items():
        print(f"{name:<10} {best:>12,}/s {per_cpu:>30,.0f}")
    if "pbxcore" in figures and "kamailio" in figures and figures["kamailio"][1]:
        ratio = figures["pbxcore"][1] / figures["kamailio"][1]
        rate_ratio = figures["pbxcore"][0] / max(1, figures["kamailio"][0])
        print(
            f"ratio pbxcore/kamailio: {ratio:.2f}x per CPU-second, {rate_ratio:.2f}x highest clean rate"
        )


if __name__ == "__main__":
    main()
