"""Jitter buffer benchmark: the simulator's table, and the cost of put+get.

    python bench/bench_jitter.py [--seconds 60] [--repeat 5]

Part 1 replays the synthetic traces of tests/jitter_sim.py through the native buffer
(min 20 ms, max 500 ms) and prints mean / p95 added delay and late loss next to the
offline-optimal fixed delay for the same trace (1 % late loss), plus the target delay over
time through a jitter storm. Part 2 times one put + one get (a 20 ms tick) in native code
(``run_trace``, no Python per packet) against the pure-Python reference on the same trace,
and the Python-level ``put()``/``get()`` calls for scale. No time is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.jitter_sim import (
    PAYLOAD,
    TRACES,
    Trace,
    TraceSpec,
    format_table,
    make_trace,
    replay,
    score,
)

from _common import machine
from pbxcore._jitter import JitterBuffer
from pbxcore._jitter_ref import JitterBuffer as RefJitterBuffer

CONFIG = {"min_delay_ms": 20, "max_delay_ms": 500}


def simulator_table(seconds: float) -> None:
    scores = []
    for spec in TRACES:
        trace = make_trace(dataclasses.replace(spec, duration_s=seconds))
        scores.append(score(trace, replay(JitterBuffer(**CONFIG), trace)))
    print(format_table(scores))
    s20 = next(s for s in scores if s.name == "gauss-20ms")
    print(
        f"\nσ = 20 ms: late loss {s20.late_loss * 100:.2f} % (target <= 1 %), mean added delay "
        f"{s20.mean_delay_ms:.1f} ms = {s20.ratio:.2f}x the offline optimum {s20.optimal_ms:.1f} ms "
        "(target <= 1.2x)"
    )
    storm = TraceSpec("storm", duration_s=90, jitter_ms=5, storm=(30, 45, 40))
    trace = make_trace(storm)
    rep = replay(JitterBuffer(**CONFIG), trace)
    sc = score(trace, rep)
    per_5s = rep.target_us[::250] / 1000
    print(
        "\ntarget delay over time, σ 5 ms with a 40 ms storm from 30 s to 45 s "
        f"(late loss {sc.late_loss * 100:.2f} %):"
    )
    print(
        "  "
        + " ".join(f"{t:.0f}s:{v:.0f}" for t, v in zip(range(0, 10**6, 5), per_5s, strict=False))
    )


def time_trace(make_jb: type, trace: Trace, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        jb = make_jb(**CONFIG)
        t0 = time.perf_counter_ns()
        replay(jb, trace)
        best = min(best, time.perf_counter_ns() - t0)
    return best / len(trace.tick_us)


def python_api_cost(trace: Trace, repeat: int) -> float:
    # the Python-level put(bytes)/get(); packets are prebuilt RTP datagrams
    import struct  # noqa: PLC0415

    pkts = [
        struct.pack("!BBHII", 0x80, 0, int(s), int(t), 1) + PAYLOAD
        for s, t in zip(trace.seq, trace.ts, strict=True)
    ]
    arrivals = (trace.arrival_us / 1e6).tolist()
    ticks = (trace.tick_us / 1e6).tolist()
    best = float("inf")
    for _ in range(repeat):
        jb = JitterBuffer(**CONFIG)
        put, get = jb.put, jb.get
        i, n = 0, len(pkts)
        t0 = time.perf_counter_ns()
        for tick in ticks:
            while i < n and arrivals[i] <= tick:
                put(pkts[i], arrivals[i])
                i += 1
            get(tick)
        best = min(best, time.perf_counter_ns() - t0)
    return best / len(ticks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each trace")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"buffer: {CONFIG}, quantile 0.99, forget factor 0.998\n")
    simulator_table(args.seconds)

    trace = make_trace(dataclasses.replace(TRACES[1], duration_s=args.seconds))
    native = time_trace(JitterBuffer, trace, args.repeat)
    ref = time_trace(RefJitterBuffer, trace, max(1, args.repeat // 2))
    api = python_api_cost(trace, args.repeat)
    print(
        f"\nput+get per 20 ms tick, {len(trace.tick_us)} ticks of the gauss-20ms trace (best of {args.repeat}):"
    )
    print(f"{'implementation':36} {'ns':>10} {'vs reference':>14}")
    print(f"{'native (C loop, run_trace)':36} {native:10.0f} {ref / native:13.0f}x")
    print(f"{'native via Python put()/get()':36} {api:10.0f} {ref / api:13.0f}x")
    print(f"{'pure-Python reference':36} {ref:10.0f} {1:13.0f}x")
    print("target: native put+get <= 200 ns")


if __name__ == "__main__":
    main()
