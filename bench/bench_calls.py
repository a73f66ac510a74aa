"""Calls per second through `pbxcore serve` (the B2BUA) against Kamailio, same run, SIPp.

    python bench/bench_calls.py                          # both servers, default rate steps
    python bench/bench_calls.py --quick                  # < 60 s: a few short steps
    python bench/bench_calls.py --rates 500,1000,1500 --duration 5 --servers pbxcore

SIPp uac (bench/sipp_call_bench_uac.xml) plays extensions of one tenant: INVITE with SDP,
407 (digest MD5, qop=auth), ACK, INVITE with credentials, 180, 200 with SDP, ACK, BYE, 200,
for ``--users`` extensions cycling. They dial a national number that the tenant's route
table sends out through a trunk to a SIPp uas playing the carrier
(bench/sipp_call_bench_uas.xml, answers at once). So pbxcore does the whole B2BUA call:
digest check, routing decision (dial plan, LCR), two dialogs and transactions per call,
a relay session created and deleted (the SDP of both sides rewritten), and a CDR written in
batches to SQLite. It is set up through the admin API (operator, trunk, route table, tenant,
extensions), as an operator would.

Kamailio (Debian's kamailio) is the same path as a minimal stateful proxy: one UDP worker,
``-x tlsf -X tlsf``, 4 MiB socket buffers, pv_proxy_authenticate (MD5, qop=auth,
nonce_count), record_route and t_relay to the same SIPp uas; ACK and BYE loose-routed.

Each server gets the same rate steps of ``--duration`` seconds; the steps go up until more
than 0.1 % of the calls fail. For each step: calls, failures, SIPp retransmissions, the
server's CPU time (all its processes and threads, from /proc), calls per CPU-second, and
INVITE->200 at p50 and p99 (SIPp -trace_rtt: from the authenticated INVITE to its 200).
The summary gives the highest rate with no failure, calls per CPU-second, and the ratio
pbxcore/Kamailio. The server runs pinned to CPU 1, both SIPp processes to CPU 0.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from _common import (
    KAMAILIO_BUFFER,
    SERVE_ADMIN_PASSWORD,
    Served,
    cpu_seconds,
    free_tcp_port,
    free_udp_port,
    kamailio,
    pbxcore_serve,
    print_run_header,
    sipp_last_stats,
    uvloop_wanted,
)

HERE = Path(__file__).resolve().parent
UAC = HERE / "sipp_call_bench_uac.xml"
UAS = HERE / "sipp_call_bench_uas.xml"
PASSWORD = "bench-sip-password"
DIALED = "84951234567"  # a Moscow number as dialed in Russia: the route table's prefix 7
OPERATOR_DOMAIN = "bench.test"
FAILURE_LIMIT = 0.001  # the steps stop once more than 0.1 % of the calls fail

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
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "auth.so"

modparam("auth", "nonce_count", 1)
modparam("auth", "secret", "bench-secret-0123456789")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
        }}
        exit;  # the ACK of a 407 sent by sl, or a stray request
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    if (!pv_proxy_authenticate("$fd", "{password}", "0")) {{
        proxy_challenge("$fd", "1");
        exit;
    }}
    consume_credentials();
    record_route();
    $du = "sip:127.0.0.1:{uas_port}";
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
"""


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    wall: float
    cpu: float
    invite_ms: list[float] = field(default_factory=list)  # INVITE -> 200, per call

    @property
    def per_cpu_second(self) -> float:
        return self.successful / self.cpu if self.cpu > 0 else 0.0

    @property
    def failure_ratio(self) -> float:
        return (self.calls - self.successful) / self.calls if self.calls else 1.0

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.successful == self.calls

    def percentile(self, q: float) -> float:
        if not self.invite_ms:
            return float("nan")
        if len(self.invite_ms) == 1:
            return self.invite_ms[0]
        return statistics.quantiles(self.invite_ms, n=1000, method="inclusive")[int(q * 10) - 1]


def write_users(folder: Path, count: int, domain: str) -> Path:
    csv = folder / "users.csv"
    with csv.open("w") as out:
        out.write("SEQUENTIAL\n")
        for i in range(count):
            user = f"{1000 + i}"
            out.write(f"{user};[authentication username={user} password={PASSWORD}];{domain}\n")
    return csv


def provision(api: str, uas_port: int, users: int) -> str:
    """Through the admin API: an operator, a trunk to the SIPp carrier, a route table
    sending every number out through it, a tenant on that table and ``users`` extensions.
    Returns the tenant's SIP domain."""
    with httpx.Client(base_url=f"{api}/api/v1", timeout=30) as client:
        r = client.post("/auth/token", data={"username": "admin", "password": SERVE_ADMIN_PASSWORD})
        r.raise_for_status()
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

        def create(path: str, body: dict[str, object]) -> dict[str, object]:
            r = client.post(path, json=body)
            if r.status_code != 201:
                raise RuntimeError(f"POST {path}: {r.status_code} {r.text}")
            data: dict[str, object] = r.json()
            return data

        op = create("/operators", {"name": "Bench Telecom", "domain": OPERATOR_DOMAIN})
        trunk = create(
            f"/operators/{op['id']}/trunks",
            {
                "name": "carrier",
                "host": "127.0.0.1",
                "port": uas_port,
                "transport": "udp",
                # the tenant's main number (an extension's own is not a public number)
                "caller_id": {"mode": "fixed", "fixed_number": "+74950000001"},
            },
        )
        table = create(f"/operators/{op['id']}/route-tables", {"name": "all"})
        create(
            f"/operators/{op['id']}/route-tables/{table['id']}/routes",
            {"prefix": "7", "trunk_id": trunk["id"], "cost_per_minute": "0.01"},
        )
        tenant = create(
            f"/operators/{op['id']}/tenants",
            {
                "name": "Bench",
                "slug": "acme",
                "route_table_id": table["id"],
                "limits": {
                    "max_extensions": max(users, 10),
                    "max_concurrent_calls": 100_000,
                    "international_calls": True,
                },
                # SIPp answers MD5 challenges only
                "sip": {"digest_algorithms": ["MD5"]},
            },
        )
        for i in range(users):
            create(
                f"/tenants/{tenant['id']}/extensions",
                {"number": f"{1000 + i}", "sip_password": PASSWORD},
            )
        return str(tenant["domain"])


@contextmanager
def sipp_uas(folder: Path, cpu: str, *extra: str, media_port: int = 0) -> Iterator[int]:
    """The carrier: a SIPp uas on a free port, for as long as the block runs."""
    port = free_udp_port()
    command = [
        "taskset", "-c", cpu, "sipp", "-sf", str(UAS), "-i", "127.0.0.1", "-p", str(port),
        "-nostdin", "-buff_size", str(4 * 1024 * 1024),
        "-max_recv_loops", "5000", "-max_sched_loops", "5000", "-fd", "60",
        "-set", "mport", str(media_port or free_udp_port()), *extra,
    ]  # fmt: skip
    log = (folder / f"uas_{port}.log").open("w")
    process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.3)  # SIPp binds its port
        if process.poll() is not None:
            raise RuntimeError(f"SIPp uas exited: {(folder / f'uas_{port}.log').read_text()}")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextmanager
def pbxcore_b2bua(
    folder: Path,
    uas_port: int,
    users: int,
    *,
    cpu: str,
    uvloop: bool,
    rtp_ports: str = "20000-31999",
) -> Iterator[tuple[Served, int, str, Path]]:
    """`pbxcore serve` with SQLite and the admin API, provisioned (:func:`provision`) to
    send calls to the SIPp carrier on ``uas_port``; yields the server, its SIP port, the
    tenant's domain and SIPp's users file."""
    port = free_udp_port()
    serve_args = [
        "--db", f"sqlite:///{folder}/pbx.db", "--api-listen", f"127.0.0.1:{free_tcp_port()}",
        "--sip-listen", f"udp:127.0.0.1:{port}", "--data-dir", str(folder / "data"),
        "--rate-limit", "0", "--guard-failures", "0", "--log-level", "WARNING",
        "--rtp-ports", rtp_ports, "--rtp-timeout", "0",
        "--cps-per-extension", "0", "--cps-per-tenant", "0",  # the bench is the flood
        "--uvloop" if uvloop else "--no-uvloop",
    ]  # fmt: skip
    with pbxcore_serve(serve_args, folder, cpu=cpu, api=True) as served:
        assert served.api is not None
        domain = provision(served.api, uas_port, users)
        csv = write_users(folder, users, domain)
        time.sleep(0.5)  # the snapshot with the new tenant is swapped in
        yield served, port, domain, csv


def run_step(
    server_pid: int,
    port: int,
    csv: Path,
    rate: int,
    duration: float,
    folder: Path,
    cpu: str,
    auth_domain: str,
    extra: tuple[str, ...] = (),
) -> Step:
    calls = max(1, int(rate * duration))
    name = f"{port}_{rate}"
    stat = folder / f"stat_{name}.csv"
    for old in folder.glob("*_rtt.csv"):
        old.unlink()
    command = [
        "taskset", "-c", cpu, "sipp", f"127.0.0.1:{port}", "-sf", str(UAC), "-inf", str(csv),
        "-s", DIALED, "-i", "127.0.0.1", "-p", str(free_udp_port()),
        "-set", "mport", str(free_udp_port()),
        "-r", str(rate), "-m", str(calls), "-l", str(max(rate * 4, 1000)),
        "-nostdin", "-timeout", f"{int(duration * 3 + 20)}s", "-recv_timeout", "5000",
        "-max_recv_loops", "5000", "-max_sched_loops", "5000",
        "-trace_stat", "-stf", str(stat), "-fd", "60", "-buff_size", str(4 * 1024 * 1024),
        "-trace_rtt", "-rtt_freq", "100",
        "-auth_uri", f"{DIALED}@{auth_domain}",  # digest uri = the Request-URI
        *extra,
    ]  # fmt: skip
    before = cpu_seconds(server_pid)
    start = time.monotonic()
    subprocess.run(command, cwd=folder, capture_output=True, timeout=duration * 4 + 60, check=False)
    wall = time.monotonic() - start
    time.sleep(0.5)  # let the server finish what is queued (the last CDR batch ...)
    used = cpu_seconds(server_pid) - before
    last = sipp_last_stats(stat)
    invite_ms: list[float] = []
    for rtt in folder.glob("*_rtt.csv"):
        for line in rtt.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3 and parts[2].strip() == "invite":
                invite_ms.append(float(parts[1]))
    return Step(
        rate,
        calls,
        int(last["SuccessfulCall(C)"]),
        int(last["FailedCall(C)"]),
        int(last.get("Retransmissions(C)", "0") or 0),
        wall,
        used,
        invite_ms,
    )


def bench_server(
    name: str,
    pid: int,
    port: int,
    csv: Path,
    rates: list[int],
    duration: float,
    folder: Path,
    cpu: str,
    auth_domain: str,
    extra: tuple[str, ...] = (),
) -> list[Step]:
    steps: list[Step] = []
    print(f"\n{name}")
    print(
        f"{'rate/s':>7} {'calls':>7} {'ok':>7} {'failed':>6} {'retrans':>7} {'cpu s':>6} "
        f"{'calls/cpu-s':>11} {'p50 ms':>7} {'p99 ms':>7}"
    )
    for rate in rates:
        step = run_step(pid, port, csv, rate, duration, folder, cpu, auth_domain, extra)
        steps.append(step)
        print(
            f"{step.rate:>7} {step.calls:>7} {step.successful:>7} {step.failed:>6} "
            f"{step.retransmissions:>7} {step.cpu:>6.2f} {step.per_cpu_second:>11,.0f} "
            f"{step.percentile(50):>7.2f} {step.percentile(99):>7.2f}",
            flush=True,
        )
        if step.failure_ratio > FAILURE_LIMIT:
            break
    return steps


@dataclass
class Summary:
    best_rate: int
    per_cpu: float
    p50: float
    p99: float
    no_retrans_rate: int  # the highest clean rate at which SIPp retransmitted nothing


def summary(steps: list[Step]) -> Summary:
    clean = [s for s in steps if s.clean]
    if not clean:
        return Summary(0, 0.0, float("nan"), float("nan"), 0)
    best = max(clean, key=lambda s: s.rate)
    # CPU efficiency: the best figure among clean steps (a loaded server batches best)
    per_cpu = max(s.per_cpu_second for s in clean)
    quiet = max((s.rate for s in clean if s.retransmissions == 0), default=0)
    return Summary(best.rate, per_cpu, best.percentile(50), best.percentile(99), quiet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", default="250,500,750,1000,1250,1500,2000,2500,3000,3500,4000,5000,6000"
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--servers", default="pbxcore,kamailio")
    parser.add_argument("--quick", action="store_true", help="a few 2 s steps: under a minute")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep logs and SIPp files in this folder")
    parser.add_argument("--trace", action="store_true", help="SIPp -trace_msg (slow: debugging)")
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--sipp-cpu", default="0")
    args = parser.parse_args()
    if args.quick:
        args.rates, args.duration, args.users = "500,1000,1500", 2.0, 20
    rates = [int(r) for r in args.rates.split(",")]
    servers = args.servers.split(",")
    has_uvloop = uvloop_wanted(args.no_uvloop)
    print_run_header()
    print(
        f"pbxcore event loop: {'uvloop' if has_uvloop else 'asyncio'}; {args.users} extensions "
        "calling out through a trunk; brute-force guard and per-source rate limit off"
    )
    print(
        f"steps of {args.duration:g} s at {rates} calls/s; server on CPU {args.server_cpu}, "
        f"SIPp on CPU {args.sipp_cpu}"
    )
    results: dict[str, list[Step]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_calls_") as tmp:
        folder = Path(tmp) if args.keep is None else args.keep
        folder.mkdir(parents=True, exist_ok=True)
        trace = ("-trace_msg", "-trace_err") if args.trace else ()
        if "pbxcore" in servers:
            sub = folder / "pbxcore"
            sub.mkdir(exist_ok=True)
            with (
                sipp_uas(sub, args.sipp_cpu, *trace) as uas_port,
                pbxcore_b2bua(
                    sub, uas_port, args.users, cpu=args.server_cpu, uvloop=has_uvloop
                ) as (served, port, domain, csv),
            ):
                results["pbxcore"] = bench_server(
                    "pbxcore serve (B2BUA, relay, CDRs to SQLite)",
                    served.pid, port, csv, rates, args.duration, sub, args.sipp_cpu, domain, trace,
                )  # fmt: skip
        if "kamailio" in servers:
            sub = folder / "kamailio"
            sub.mkdir(exist_ok=True)
            domain = f"acme.{OPERATOR_DOMAIN}"
            csv = write_users(sub, args.users, domain)
            with sipp_uas(sub, args.sipp_cpu, *trace) as uas_port:
                port = free_udp_port()
                config = KAMAILIO_CFG.format(
                    port=port, buffer=KAMAILIO_BUFFER, password=PASSWORD, uas_port=uas_port
                )
                with kamailio(sub, config, port, cpu=args.server_cpu) as pid:
                    results["kamailio"] = bench_server(
                        "kamailio 5.6 (stateful proxy, proxy auth, record-route, tlsf)",
                        pid, port, csv, rates, args.duration, sub, args.sipp_cpu, domain, trace,
                    )  # fmt: skip
    print(
        "\nserver     highest rate with no failure   calls per CPU-second   "
        "INVITE->200 p50 / p99 (ms, at that rate)   highest rate without retransmissions"
    )
    figures = {name: summary(steps) for name, steps in results.items()}
    for name, s in figures.items():
        print(
            f"{name:<10} {s.best_rate:>12,}/s {s.per_cpu:>27,.0f} {s.p50:>18.2f} / {s.p99:<8.2f}"
            f"{s.no_retrans_rate:>20,}/s"
        )
    if "pbxcore" in figures and "kamailio" in figures and figures["kamailio"].per_cpu:
        ratio = figures["pbxcore"].per_cpu / figures["kamailio"].per_cpu
        rate_ratio = figures["pbxcore"].best_rate / max(1, figures["kamailio"].best_rate)
        print(
            f"ratio pbxcore/kamailio: {ratio:.2f}x per CPU-second, {rate_ratio:.2f}x highest "
            "clean rate"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
