"""Jitter buffer simulator: synthetic network traces, replay, and scoring.

A trace is one G.711 stream of 20 ms packets (seq, timestamp, SSRC, arrival time) shaped by
a network model: Gaussian jitter, Pareto delay spikes, Gilbert-Elliott bursty loss,
reordering, sender clock drift, sequence and timestamp wrap. ``replay()`` drives a jitter
buffer (native or the pure-Python reference, through ``run_trace``) on a 20 ms playout clock
and ``score()`` reports the mean and p95 added delay and the late-loss rate, next to the
offline-optimal fixed delay for the same trace: the smallest delay that keeps late loss at
1 %. Added delay is measured above the trace's fastest transit, for both.

Used by tests/test_jitter.py (behaviour) and bench/bench_jitter.py (the table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

FRAME_US = 20_000
FRAME_SAMPLES = 160
PAYLOAD = bytes([0xFF]) * FRAME_SAMPLES  # μ-law silence


@dataclass(frozen=True)
class TraceSpec:
    """The network model of one trace."""

    name: str
    duration_s: float = 60.0
    jitter_ms: float = 0.0  # Gaussian σ of the transit time
    spike_rate: float = 0.0  # probability per packet that a delay spike starts
    spike_ms: float = 0.0  # Pareto scale (minimum spike height)
    spike_alpha: float = 1.5  # Pareto shape
    loss: float = 0.0  # Gilbert-Elliott mean loss rate
    burst: float = 2.0  # mean loss burst length in packets
    reorder: float = 0.0  # probability a packet is held back 1-3 packet times
    drift_ppm: float = 0.0  # sender clock error
    storm: tuple[float, float, float] | None = None  # (start s, end s, σ ms) of a jitter storm
    seq0: int = 1000
    ts0: int = 123_456
    seed: int = 1


@dataclass
class Trace:
    spec: TraceSpec
    index: np.ndarray  # packet number, in arrival order
    seq: np.ndarray  # uint16
    ts: np.ndarray  # uint32
    ssrc: np.ndarray  # uint32
    arrival_us: np.ndarray  # int64, sorted
    send_us: np.ndarray  # int64 per packet number (receiver clock)
    n_sent: int
    tick_us: np.ndarray  # int64 playout ticks


def make_trace(spec: TraceSpec) -> Trace:
    rng = np.random.default_rng(spec.seed)
    n = int(spec.duration_s * 1000 / 20)
    i = np.arange(n, dtype=np.int64)
    # send times on the receiver's clock; the RTP timestamps run on the sender's
    send = np.floor(i * FRAME_US * (1.0 + spec.drift_ppm * 1e-6)).astype(np.int64) + 1_000_000
    base = 40_000 + 4 * spec.jitter_ms * 1000
    transit = (
        base + rng.normal(0.0, spec.jitter_ms * 1000, n) if spec.jitter_ms else np.full(n, base)
    )
    if spec.storm:
        start, end, sigma = spec.storm
        inside = (i >= start * 50) & (i < end * 50)
        transit = transit + inside * (4 * sigma * 1000 + rng.normal(0.0, sigma * 1000, n))
    transit = np.maximum(transit, 40_000.0)
    if spec.spike_rate:
        starts = rng.random(n) < spec.spike_rate
        heights = spec.spike_ms * 1000 * (1.0 + rng.pareto(spec.spike_alpha, n))
        extra = np.zeros(n)
        level = 0.0
        for k in range(n):
            # a queue drains one packet time per packet after the spike
            level = max(level - FRAME_US, heights[k] if starts[k] else 0.0)
            extra[k] = level
        transit = transit + extra
    if spec.reorder:
        held = rng.random(n) < spec.reorder
        transit = transit + held * rng.integers(1, 4, n) * FRAME_US * 1.1
    arrival = send + transit.astype(np.int64)
    keep = np.ones(n, dtype=bool)
    if spec.loss:
        p_bg = 1.0 / spec.burst
        p_gb = spec.loss * p_bg / (1.0 - spec.loss)
        u = rng.random(n)
        bad = False
        for k in range(n):
            bad = (u[k] >= p_bg) if bad else (u[k] < p_gb)
            keep[k] = not bad
    idx = i[keep]
    order = np.argsort(arrival[keep], kind="stable")
    idx = idx[order]
    seq = ((spec.seq0 + idx) & 0xFFFF).astype(np.uint16)
    ts = ((spec.ts0 + idx * FRAME_SAMPLES) & 0xFFFFFFFF).astype(np.uint32)
    ssrc = np.full(len(idx), 0x1234ABCD, dtype=np.uint32)
    phase = int(rng.integers(0, FRAME_US))
    last = int(arrival.max()) + 1_000_000
    ticks = np.arange(int(send[0]) + phase, last, FRAME_US, dtype=np.int64)
    return Trace(spec, idx, seq, ts, ssrc, arrival[idx], send, n, ticks)


@dataclass
class Replay:
    put_result: np.ndarray
    status: np.ndarray
    played_seq: np.ndarray
    target_us: np.ndarray


def replay(jb: Any, trace: Trace) -> Replay:
    n, m = len(trace.seq), len(trace.tick_us)
    out = Replay(
        np.zeros(n, np.uint8), np.zeros(m, np.uint8), np.zeros(m, np.int32), np.zeros(m, np.int32)
    )
    jb.run_trace(
        trace.seq,
        trace.ts,
        trace.ssrc,
        trace.arrival_us,
        trace.tick_us,
        PAYLOAD,
        out.put_result,
        out.status,
        out.played_seq,
        out.target_us,
    )
    return out


@dataclass
class Score:
    name: str
    received: int
    played: int
    late_loss: float  # received but never played, over received
    mean_delay_ms: float  # playout time above send time + fastest transit
    p95_delay_ms: float
    optimal_ms: float  # offline-optimal fixed delay for 1 % late loss
    concealed: int
    target_min_ms: float
    target_max_ms: float
    in_order: bool  # frames came out in sending order

    @property
    def ratio(self) -> float:
        return self.mean_delay_ms / self.optimal_ms if self.optimal_ms else math.inf


def optimal_fixed_delay_us(trace: Trace, late_loss: float = 0.01) -> float:
    """Smallest fixed delay (above the fastest transit) that keeps late loss at ``late_loss``."""
    transit = trace.arrival_us - trace.send_us[trace.index]
    rel = np.sort(transit - transit.min())
    allowed = math.floor(late_loss * len(rel))
    return float(rel[len(rel) - 1 - allowed])


def score(trace: Trace, rep: Replay) -> Score:
    spec = trace.spec
    frames = rep.status == 0
    ticks = trace.tick_us[frames]
    seqs = rep.played_seq[frames].astype(np.int64)
    # unwrap the 16-bit sequence number to the packet number nearest the tick's
    approx = (ticks - trace.send_us[0]) // FRAME_US
    cand = (seqs - spec.seq0) & 0xFFFF
    idx = cand + 65536 * np.round((approx - cand) / 65536).astype(np.int64)
    transit = trace.arrival_us - trace.send_us[trace.index]
    fastest = int(transit.min())
    added = (ticks - trace.send_us[idx] - fastest) / 1000.0
    received = len(np.unique(trace.index))
    played = len(np.unique(idx))
    return Score(
        name=spec.name,
        received=received,
        played=played,
        late_loss=1.0 - played / received,
        mean_delay_ms=float(added.mean()) if len(added) else math.nan,
        p95_delay_ms=float(np.percentile(added, 95)) if len(added) else math.nan,
        optimal_ms=optimal_fixed_delay_us(trace) / 1000.0,
        concealed=int((rep.status == 1).sum()),
        target_min_ms=float(rep.target_us.min()) / 1000.0,
        target_max_ms=float(rep.target_us.max()) / 1000.0,
        in_order=bool(np.all(np.diff(idx) > 0)),
    )


def simulate(jb: Any, spec: TraceSpec) -> Score:
    trace = make_trace(spec)
    return score(trace, replay(jb, trace))


# The traces of the issue: Gaussian jitter (σ = 5, 20, 50 ms), Pareto spikes, bursty loss,
# reordering, ±500 ppm drift and sequence/timestamp wrap.
TRACES: tuple[TraceSpec, ...] = (
    TraceSpec("gauss-5ms", jitter_ms=5),
    TraceSpec("gauss-20ms", jitter_ms=20),
    TraceSpec("gauss-50ms", jitter_ms=50),
    TraceSpec("pareto-spikes", jitter_ms=5, spike_rate=0.005, spike_ms=60),
    TraceSpec("ge-loss-1%", jitter_ms=10, loss=0.01),
    TraceSpec("ge-loss-10%", jitter_ms=10, loss=0.10, burst=3.0),
    TraceSpec("reorder-1%", jitter_ms=5, reorder=0.01),
    TraceSpec("reorder-5%", jitter_ms=5, reorder=0.05),
    TraceSpec("drift+500ppm", jitter_ms=10, drift_ppm=500),
    TraceSpec("drift-500ppm", jitter_ms=10, drift_ppm=-500),
    TraceSpec("seq-wrap", jitter_ms=10, seq0=65_000, ts0=0xFFFF_0000),
)


def format_table(scores: list[Score]) -> str:
    head = (
        "| trace | late loss | mean added delay | p95 added delay | offline optimum "
        "| ratio | concealed | target min-max |"
    )
    rows = [head, "|" + "---|" * 8]
    for s in scores:
        rows.append(
            f"| {s.name} | {s.late_loss * 100:.2f} % | {s.mean_delay_ms:.1f} ms "
            f"| {s.p95_delay_ms:.1f} ms | {s.optimal_ms:.1f} ms | {s.ratio:.2f} "
            f"| {s.concealed} | {s.target_min_ms:.0f}-{s.target_max_ms:.0f} ms |"
        )
    return "\n".join(rows)
