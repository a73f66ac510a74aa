"""Routing benchmarks: the LCR trie, RouteTable.candidates and DialPlan.normalize.

Every figure is measured next to its baseline in the same run and printed with the ratio;
nothing here asserts a time.

- RouteTrie on ~1.3M prefixes (1M random digit prefixes of length 1-12 plus every prefix of
  the phonenumbers geocoder and carrier data) and 300k numbers of 11-13 digits, half of
  them extending table keys: build time, memory (nbytes and RSS delta), single lookups
  from Python and bulk lookups, against marisa-trie (iter_prefixes_with_ids) and a dict
  probed longest prefix first.
- RouteTable.candidates with 4-8 entries per prefix, against a pure-Python implementation
  of the same decision.
- DialPlan.russia().normalize against phonenumbers.parse + format_number.

Run:  python bench/bench_lcr.py            (about a minute; --quick for a smaller table)
      python bench/bench_lcr.py --markdown (also print a block for bench/RESULTS.md)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import marisa_trie
import numpy as np
import phonenumbers
from phonenumbers.carrierdata import CARRIER_DATA
from phonenumbers.geodata import GEOCODE_DATA

from _common import machine as common_machine
from pbxcore.routing import DialPlan, RouteEntry, RouteTable, RouteTrie

DIGITS = "0123456789"


def machine() -> str:
    return (
        f"{common_machine()}, numpy {np.__version__}, marisa-trie {version('marisa-trie')}, "
        f"phonenumbers {phonenumbers.__version__}"
    )


def best_rate(fn: Callable[[], Any], items: int, repeat: int = 3) -> float:
    """Items per second of the fastest of `repeat` runs (the machine is shared)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best


def interleaved(*runs: tuple[Callable[[], Any], int], repeat: int = 3) -> list[float]:
    """Best items/s of each run, alternating them so that a change in the machine's load
    hits pbxcore and its baseline alike."""
    best = [float("inf")] * len(runs)
    for _ in range(repeat):
        for i, (fn, _) in enumerate(runs):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return [items / t for (_, items), t in zip(runs, best, strict=True)]


def best_time(fn: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        obj = fn()
        best = min(best, time.perf_counter() - t0)
        del obj
    return best


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_delta(structure: str, random_prefixes: int) -> int:
    """Resident memory one build adds, measured in a fresh process (so that no memory freed
    by earlier builds is reused): the child makes the same table, touches it, reads its RSS,
    builds, reads it again."""
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", structure, "--prefixes", str(random_prefixes)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1])


def rss_child(structure: str, random_prefixes: int) -> None:
    keys = make_table(random_prefixes, seed=1, quiet=True)
    pairs = [(key, i) for i, key in enumerate(keys)]
    gc.collect()
    gc.disable()
    before = rss_bytes()
    if structure == "trie":
        built: Any = RouteTrie(pairs)
    elif structure == "marisa":
        built = marisa_trie.Trie(keys)
    else:
        built = dict(pairs)
    after = rss_bytes()
    assert len(built) > 0
    print(after - before)


# ---- data ----


def make_table(random_prefixes: int, seed: int, quiet: bool = False) -> list[str]:
    rng = random.Random(seed)
    keys = set(GEOCODE_DATA) | set(CARRIER_DATA)
    library = len(keys)
    # distinct random prefixes: short lengths saturate (there are only 10 of length 1)
    while len(keys) < library + random_prefixes:
        keys.add("".join(rng.choices(DIGITS, k=rng.randint(1, 12))))
    out = list(keys)
    rng.shuffle(out)
    if not quiet:
        print(
            f"table: {len(out):,} prefixes ({library:,} from phonenumbers geocoder + carrier data)"
        )
    return out


def make_queries(keys: Sequence[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    queries = []
    for i in range(count):
        length = rng.randint(11, 13)
        if i % 2:
            key = rng.choice(keys)
            tail = max(0, length - len(key))
            queries.append(key + "".join(rng.choices(DIGITS, k=tail)))
        else:
            queries.append("".join(rng.choices(DIGITS, k=length)))
    return queries


# ---- baselines ----


class DictProbe:
    """A dict probed longest prefix first."""

    def __init__(self, pairs: Sequence[tuple[str, int]]) -> None:
        self.table = dict(pairs)
        self.longest = max(map(len, self.table), default=0)

    def lookup(self, number: str) -> int | None:
        table = self.table
        for length in range(min(len(number), self.longest), -1, -1):
            value = table.get(number[:length])
            if value is not None:
                return value
        return None


class MarisaLPM:
    """marisa-trie: the last of iter_prefixes_with_ids is the longest prefix."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.trie = marisa_trie.Trie(keys)

    def lookup(self, number: str) -> int | None:
        best = None
        for _, key_id in self.trie.iter_prefixes_with_ids(number):
            best = key_id
        return best


# ---- benches ----


def bench_trie(args: argparse.Namespace, rows: list[tuple[str, str, str, str]]) -> None:
    keys = make_table(args.random_prefixes, seed=1)
    pairs = [(key, i) for i, key in enumerate(keys)]
    queries = make_queries(keys, args.queries, seed=2)
    n = len(queries)
    print(f"queries: {n:,} numbers of 11-13 digits, half extending table keys\n")

    build_ours = best_time(lambda: RouteTrie(pairs))
    build_marisa = best_time(lambda: marisa_trie.Trie(keys))
    build_dict = best_time(lambda: dict(pairs))
    trie = RouteTrie(pairs)
    marisa = MarisaLPM(keys)
    probe = DictProbe(pairs)

    rss_ours = rss_delta("trie", args.random_prefixes)
    rss_marisa = rss_delta("marisa", args.random_prefixes)
    rss_dict = rss_delta("dict", args.random_prefixes)
    dict_bytes = sys.getsizeof(probe.table)
    marisa_bytes = len(marisa.trie.tobytes())

    # every implementation must give the same answers (marisa answers with its own key ids)
    ours = trie.lookup_many(queries)
    sample = range(0, n, 97)
    for i in sample:
        expected = probe.lookup(queries[i])
        assert ours[i] == (-1 if expected is None else expected)
        mid = marisa.lookup(queries[i])
        assert (mid is None) == (expected is None)
        assert mid is None or keys[expected] == marisa.trie.restore_key(mid)  # type: ignore[index]

    def loop(fn: Callable[[str], Any]) -> Callable[[], None]:
        def run() -> None:
            for q in queries:
                fn(q)

        return run

    single_ours, single_marisa, single_dict = interleaved(
        (loop(trie.lookup), n), (loop(marisa.lookup), n), (loop(probe.lookup), n)
    )
    many_list = best_rate(lambda: trie.lookup_many(queries), n, repeat=5)
    array = np.array(queries, dtype="S13")
    many_array = best_rate(lambda: trie.lookup_many(array), n, repeat=5)

    print(f"{'':28}{'RouteTrie':>14}{'marisa-trie':>14}{'dict probe':>14}")
    print(f"{'build (s)':28}{build_ours:14.3f}{build_marisa:14.3f}{build_dict:14.3f}")
    print(
        f"{'nbytes (MB)':28}{trie.nbytes / 1e6:14.1f}{marisa_bytes / 1e6:14.1f}{dict_bytes / 1e6:14.1f}"
    )
    print(
        f"{'RSS delta (MB)':28}{rss_ours / 1e6:14.1f}{rss_marisa / 1e6:14.1f}{rss_dict / 1e6:14.1f}"
    )
    print(f"{'single lookups/s':28}{single_ours:14,.0f}{single_marisa:14,.0f}{single_dict:14,.0f}")
    print(f"{'lookup_many (list) /s':28}{many_list:14,.0f}")
    print(f"{'lookup_many (numpy S13) /s':28}{many_array:14,.0f}")
    print(
        f"\nratios: single {single_ours / single_marisa:.1f}x marisa, "
        f"{single_ours / single_dict:.1f}x dict; lookup_many {many_list / single_marisa:.0f}x "
        f"marisa; build {build_ours / build_marisa:.2f}x marisa's time; "
        f"{trie.node_count:,} nodes\n"
    )
    rows += [
        (
            "build, 1.3M prefixes",
            f"{build_ours:.2f} s",
            f"marisa {build_marisa:.2f} s, dict {build_dict:.2f} s",
            f"{build_ours / build_marisa:.2f}x marisa's time (target <= 0.5x)",
        ),
        (
            "memory (nbytes / RSS delta)",
            f"{trie.nbytes / 1e6:.0f} MB / {rss_ours / 1e6:.0f} MB",
            f"marisa {marisa_bytes / 1e6:.0f} MB / {rss_marisa / 1e6:.0f} MB; dict {dict_bytes / 1e6:.0f} MB / {rss_dict / 1e6:.0f} MB",
            "target <= 150 MB",
        ),
        (
            "single lookups from Python",
            f"{single_ours / 1e6:.2f} M/s",
            f"marisa {single_marisa / 1e6:.2f} M/s, dict {single_dict / 1e6:.2f} M/s",
            f"{single_ours / single_marisa:.1f}x marisa (target >= 4x)",
        ),
        (
            "lookup_many, list of str",
            f"{many_list / 1e6:.1f} M/s",
            f"marisa loop {single_marisa / 1e6:.2f} M/s",
            f"{many_list / single_marisa:.0f}x (target >= 10 M/s)",
        ),
        ("lookup_many, numpy S13", f"{many_array / 1e6:.1f} M/s", "", ""),
    ]


def python_candidates_table(
    entries: Sequence[RouteEntry],
) -> Callable[[str, random.Random], list[str]]:
    """The same decision in plain Python (dict probe + sorted weighted keys): the baseline."""
    groups: dict[str, list[RouteEntry]] = {}
    for e in entries:
        if e.enabled:
            groups.setdefault(e.prefix, []).append(e)
    probe = DictProbe([(p, 0) for p in groups])
    tiers = {
        p: [
            [(e.trunk_id, 1.0 / e.weight) for e in group if e.priority == prio]
            for prio in sorted({e.priority for e in group})
        ]
        for p, group in groups.items()
    }

    def candidates(number: str, rng: random.Random) -> list[str]:
        digits = number.removeprefix("+")
        table = probe.table
        for length in range(min(len(digits), probe.longest), -1, -1):
            prefix = digits[:length]
            if prefix in table:
                break
        else:
            return []
        out: list[str] = []
        rnd = rng.random
        for tier in tiers[prefix]:
            for _, trunk in sorted(((rnd() ** iw, t) for t, iw in tier), reverse=True):
                if trunk not in out:
                    out.append(trunk)
        return out

    return candidates


def bench_candidates(args: argparse.Namespace, rows: list[tuple[str, str, str, str]]) -> None:
    rng = random.Random(3)
    prefixes: set[str] = set()
    while len(prefixes) < args.route_prefixes:
        prefixes.add("".join(rng.choices(DIGITS, k=rng.randint(1, 8))))
    entries = [
        RouteEntry(
            prefix,
            f"trunk-{rng.randint(0, 99)}-{k}",
            priority=rng.randint(1, 3),
            weight=rng.randint(1, 100),
            cost_per_minute=f"0.{rng.randint(1, 999):03d}",
        )
        for prefix in prefixes
        for k in range(rng.randint(4, 8))
    ]
    t0 = time.perf_counter()
    table = RouteTable(entries, seed=1)
    compile_s = time.perf_counter() - t0
    keys = list(prefixes)
    numbers = [
        "+" + rng.choice(keys) + "".join(rng.choices(DIGITS, k=6)) for _ in range(args.calls)
    ]
    n = len(numbers)
    print(
        f"route table: {len(prefixes):,} prefixes, {len(entries):,} entries (4-8 per prefix), compiled in {compile_s:.2f} s"
    )

    def loop(fn: Callable[[str], Any]) -> Callable[[], None]:
        def run() -> None:
            for number in numbers:
                fn(number)

        return run

    baseline = python_candidates_table(entries)
    brng = random.Random(1)
    ours, base = interleaved(
        (loop(table.candidates), n), (loop(lambda x: baseline(x, brng)), n), repeat=5
    )
    by_cost = RouteTable(entries, tie_break="cost")
    ours_cost = best_rate(loop(by_cost.candidates), n)
    with_fallthrough = RouteTable(entries, fallthrough=True, seed=1)
    ours_fall = best_rate(loop(with_fallthrough.candidates), n)
    down = {"trunk-1-0", "trunk-2-1", "trunk-3-2"}
    ours_down = best_rate(loop(lambda x: table.candidates(x, down=down)), n)
    print(
        f"candidates/s: weighted {ours:,.0f}, by cost {ours_cost:,.0f}, with 3 trunks down {ours_down:,.0f}, fallthrough {ours_fall:,.0f}"
    )
    print(f"pure-Python baseline {base:,.0f}/s: {ours / base:.1f}x\n")
    rows += [
        (
            "RouteTable.candidates (weighted)",
            f"{ours / 1e3:.0f} k/s",
            f"pure Python {base / 1e3:.0f} k/s",
            f"{ours / base:.1f}x (target >= 500k/s)",
        ),
        (
            "candidates: by cost / 3 down / fallthrough",
            f"{ours_cost / 1e3:.0f} / {ours_down / 1e3:.0f} / {ours_fall / 1e3:.0f} k/s",
            "",
            "fallthrough walks every shorter prefix",
        ),
    ]


def bench_normalize(args: argparse.Namespace, rows: list[tuple[str, str, str, str]]) -> None:
    rng = random.Random(4)
    areas = ["495", "499", "812", "343", "383", "843", "9" + "16", "903", "926", "985"]
    dialed = []
    for _ in range(args.dialed):
        national = rng.choice(areas) + "".join(rng.choices(DIGITS, k=7))
        a, b, c, d = national[:3], national[3:6], national[6:8], national[8:]
        dialed.append(
            rng.choice(
                [
                    "8" + national,
                    f"8 ({a}) {b}-{c}-{d}",
                    f"+7 {a} {b}-{c}-{d}",
                    "+7" + national,
                    "7" + national,
                    "8 10 49 30 " + b + c + d,
                ]
            )
        )
    plan = DialPlan.russia()
    fmt = phonenumbers.PhoneNumberFormat.E164
    sample = dialed[: max(1, len(dialed) // 10)]
    for number in sample[:2000]:
        expected = phonenumbers.format_number(phonenumbers.parse(number, "RU"), fmt)
        assert plan.normalize(number).e164 == expected, number

    def ours() -> None:
        normalize = plan.normalize
        for number in dialed:
            normalize(number)

    def theirs() -> None:
        parse, format_number = phonenumbers.parse, phonenumbers.format_number
        for number in sample:
            format_number(parse(number, "RU"), fmt)

    rate, base = interleaved((ours, len(dialed)), (theirs, len(sample)), repeat=5)
    print(
        f"normalize: {rate:,.0f}/s; phonenumbers parse+format {base:,.0f}/s: {rate / base:.0f}x\n"
    )
    rows.append(
        (
            "DialPlan.normalize (Russian forms)",
            f"{rate / 1e6:.2f} M/s",
            f"phonenumbers parse+format {base / 1e3:.0f} k/s",
            f"{rate / base:.0f}x (target >= 25x)",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k random prefixes, fewer queries")
    parser.add_argument("--markdown", action="store_true", help="print a table for RESULTS.md")
    parser.add_argument("--rss-child", choices=["trie", "marisa", "dict"], help=argparse.SUPPRESS)
    parser.add_argument("--prefixes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.prefixes)
        return
    args.random_prefixes = 100_000 if args.quick else 1_000_000
    args.queries = 50_000 if args.quick else 300_000
    args.route_prefixes = 5_000 if args.quick else 50_000
    args.calls = 20_000 if args.quick else 200_000
    args.dialed = 20_000 if args.quick else 200_000

    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {machine()}\n")
    rows: list[tuple[str, str, str, str]] = []
    bench_trie(args, rows)
    bench_candidates(args, rows)
    bench_normalize(args, rows)
    if args.markdown:
        print("| measure | pbxcore | baseline (same run) | ratio / target |")
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
