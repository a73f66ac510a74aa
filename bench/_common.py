"""Helpers shared by the benchmark scripts: what machine this is, and careful timing."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
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
