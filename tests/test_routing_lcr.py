"""Route tables: candidates, explain and rating."""

from __future__ import annotations

import json
import random
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore.routing import RouteEntry, RouteTable


def E(
    prefix: str, trunk: str, priority: int = 0, weight: int = 1, cost: Any = 0, **kw: Any
) -> RouteEntry:
    return RouteEntry(prefix, trunk, priority=priority, weight=weight, cost_per_minute=cost, **kw)


BASIC = [
    E("", "default", 100, cost="0.5"),
    E("7", "ru-any", 10, cost="0.05"),
    E("7495", "msk-a", 10, cost="0.010"),
    E("7495", "msk-b", 20, cost="0.008"),
    E("7495", "msk-c", 30, cost="0.020"),
    E("49", "de", 10, cost="0.02"),
]


class TestCandidates:
    def test_longest_prefix_then_priority(self) -> None:
        table = RouteTable(BASIC)
        assert table.candidates("+74951234567") == ["msk-a", "msk-b", "msk-c"]
        assert table.candidates("74991234567") == ["ru-any"]
        assert table.candidates("4930123456") == ["de"]
        assert table.candidates("12125551234") == ["default"]

    def test_no_route(self) -> None:
        table = RouteTable([E("7", "ru")])
        assert table.candidates("4930123456") == []
        assert RouteTable([]).candidates("7") == []

    def test_down_trunks_are_skipped(self) -> None:
        table = RouteTable(BASIC)
        assert table.candidates("74951234567", down={"msk-a"}) == ["msk-b", "msk-c"]
        assert table.candidates("74951234567", down=["msk-a", "msk-c"]) == ["msk-b"]

    def test_without_fallthrough_an_exhausted_prefix_fails(self) -> None:
        table = RouteTable(BASIC)
        assert table.candidates("74951234567", down={"msk-a", "msk-b", "msk-c"}) == []

    def test_fallthrough_appends_shorter_prefixes(self) -> None:
        table = RouteTable(BASIC, fallthrough=True)
        assert table.fallthrough
        assert table.candidates("74951234567") == ["msk-a", "msk-b", "msk-c", "ru-any", "default"]
        assert table.candidates("74951234567", down={"msk-a", "msk-b", "msk-c"}) == [
            "ru-any",
            "default",
        ]

    def test_fallthrough_lists_a_trunk_once(self) -> None:
        table = RouteTable(
            [E("7", "a"), E("7", "b", 1), E("74", "b"), E("74", "c", 1)], fallthrough=True
        )
        assert table.candidates("749") == ["b", "c", "a"]

    def test_disabled_entries_are_skipped(self) -> None:
        table = RouteTable([E("7495", "a", 1, enabled=False), E("7495", "b", 2), E("7", "c")])
        assert table.candidates("74951") == ["b"]

    def test_prefix_with_only_disabled_entries_does_not_match(self) -> None:
        table = RouteTable([E("7495", "a", enabled=False), E("7", "c")])
        assert table.candidates("74951") == ["c"]

    def test_same_trunk_twice_in_a_prefix_is_listed_once(self) -> None:
        table = RouteTable([E("7", "a", 5), E("7", "b", 3), E("7", "a", 1)])
        assert table.candidates("71") == ["a", "b"]

    def test_cost_tie_break_orders_equal_priorities_by_cost(self) -> None:
        entries = [
            E("7", "dear", 1, cost="0.03"),
            E("7", "cheap", 1, cost="0.01"),
            E("7", "mid", 1, cost="0.02"),
            E("7", "mid2", 1, cost="0.02"),
            E("7", "backup", 2, cost="0.001"),
        ]
        table = RouteTable(entries, tie_break="cost")
        for seed in range(5):
            assert table.candidates("71", rng=random.Random(seed)) == [
                "cheap",
                "mid",
                "mid2",
                "dear",
                "backup",
            ]

    def test_weighted_random_follows_weights(self) -> None:
        table = RouteTable(
            [E("7", "heavy", 1, weight=3), E("7", "light", 1, weight=1), E("7", "last", 2)], seed=7
        )
        firsts = Counter(table.candidates("71")[0] for _ in range(4000))
        assert set(firsts) == {"heavy", "light"}
        assert 0.70 < firsts["heavy"] / 4000 < 0.80
        for _ in range(50):
            assert table.candidates("71")[2] == "last"

    def test_zero_weight_comes_after_weighted_entries(self) -> None:
        table = RouteTable(
            [E("7", "spare", 1, weight=0), E("7", "a", 1, weight=5), E("7", "b", 1, weight=5)]
        )
        for _ in range(100):
            assert table.candidates("71")[2] == "spare"

    def test_seed_makes_the_draw_reproducible(self) -> None:
        entries = [E("7", f"t{i}", 1, weight=i + 1) for i in range(6)]
        one = RouteTable(entries, seed=42)
        two = RouteTable(entries, seed=42)
        assert [one.candidates("7") for _ in range(20)] == [two.candidates("7") for _ in range(20)]
        other = RouteTable(entries, seed=43)
        assert [one.candidates("7") for _ in range(20)] != [
            other.candidates("7") for _ in range(20)
        ]

    def test_rng_argument_makes_one_call_reproducible(self) -> None:
        table = RouteTable([E("7", f"t{i}", 1, weight=i + 1) for i in range(6)])
        assert table.candidates("7", rng=random.Random(5)) == table.candidates(
            "7", rng=random.Random(5)
        )

    def test_entries_from_api_rows(self) -> None:
        rows = [
            {
                "id": "r1",
                "prefix": "7",
                "trunk_id": "a",
                "priority": 2,
                "weight": 1,
                "cost_per_minute": "0.1",
                "enabled": True,
            },
            {"id": "r2", "prefix": "7", "trunk_id": "b", "priority": 1},
        ]
        table = RouteTable(rows)
        assert table.candidates("7") == ["b", "a"]
        assert len(table) == 2
        assert {e.trunk_id for e in table.entries} == {"a", "b"}

    @pytest.mark.parametrize("number", ["", "+", "7a", "1" * 33])
    def test_invalid_number_raises(self, number: str) -> None:
        table = RouteTable(BASIC)
        with pytest.raises(ValueError):
            table.candidates(number)
        with pytest.raises(ValueError):
            table.explain(number)
        with pytest.raises(ValueError):
            table.rate(number)

    def test_immutable(self) -> None:
        table = RouteTable(BASIC)
        with pytest.raises(AttributeError, match="immutable"):
            table.fallthrough = True  # type: ignore[misc]

    def test_bad_tie_break(self) -> None:
        with pytest.raises(ValueError, match="tie_break"):
            RouteTable(BASIC, tie_break="random")  # type: ignore[arg-type]


class TestRouteEntry:
    @pytest.mark.parametrize(
        ("kwargs", "error", "reason"),
        [
            ({"prefix": "+7"}, ValueError, "digits"),
            ({"prefix": "7a"}, ValueError, "digits"),
            ({"prefix": "1" * 33}, ValueError, "at most 32"),
            ({"prefix": 7}, TypeError, "prefix must be str"),
            ({"trunk_id": ""}, ValueError, "trunk_id"),
            ({"priority": True}, TypeError, "priority"),
            ({"weight": -1}, ValueError, "weight"),
            ({"weight": 1.5}, TypeError, "weight"),
            ({"cost_per_minute": "abc"}, ValueError, "not a number"),
            ({"cost_per_minute": "NaN"}, ValueError, "finite"),
            ({"cost_per_minute": -1}, ValueError, ">= 0"),
            ({"cost_per_minute": [1]}, TypeError, "cost_per_minute"),
            ({"enabled": 1}, TypeError, "enabled"),
        ],
    )
    def test_validation(self, kwargs: dict[str, Any], error: type[Exception], reason: str) -> None:
        fields = {"prefix": "7", "trunk_id": "a", **kwargs}
        with pytest.raises(error, match=reason):
            RouteEntry(**fields)

    def test_cost_is_decimal(self) -> None:
        assert RouteEntry("7", "a", cost_per_minute=0.1).cost_per_minute == Decimal("0.1")
        assert RouteEntry("7", "a", cost_per_minute="0.015").cost_per_minute == Decimal("0.015")
        assert RouteEntry("7", "a", cost_per_minute=2).cost_per_minute == Decimal(2)

    def test_from_mapping_needs_prefix_and_trunk(self) -> None:
        with pytest.raises(ValueError, match="trunk_id"):
            RouteEntry.from_mapping({"prefix": "7"})

    def test_to_json_round_trip(self) -> None:
        entry = RouteEntry(
            "7", "a", priority=3, weight=4, cost_per_minute=Decimal("0.25"), enabled=False
        )
        data = json.loads(json.dumps(entry.to_json()))
        assert RouteEntry.from_mapping(data) == entry


class TestExplain:
    def test_is_json_and_agrees_with_candidates(self) -> None:
        table = RouteTable(
            [*BASIC, E("7495", "off", 5, enabled=False), E("749", "mid", 1, enabled=False)],
            fallthrough=True,
        )
        for seed in range(20):
            got = table.explain("74951234567", down={"msk-b"}, rng=random.Random(seed))
            assert json.loads(json.dumps(got)) == got
            assert got["candidates"] == table.candidates(
                "74951234567", down={"msk-b"}, rng=random.Random(seed)
            )

    def test_reasons(self) -> None:
        table = RouteTable(
            [*BASIC, E("7495", "off", 5, enabled=False), E("749", "mid", 1, enabled=False)]
        )
        got = table.explain("+74951234567", down={"msk-b"})
        assert got["candidates"] == ["msk-a", "msk-c"]
        assert [p["prefix"] for p in got["prefixes"]] == ["7495", "749", "7", ""]
        reasons = {p["prefix"]: (p["used"], p["reason"]) for p in got["prefixes"]}
        assert reasons["7495"] == (True, "longest matching prefix")
        assert reasons["749"] == (False, "every entry is disabled")
        assert reasons["7"] == (False, "shorter prefix not used: the table has no fallthrough")
        steps = {s["trunk_id"]: s for s in got["steps"]}
        assert steps["msk-a"]["decision"] == "candidate"
        assert steps["msk-a"]["position"] == 1
        assert steps["msk-a"]["cost_per_minute"] == "0.010"
        assert "priority 10" in steps["msk-a"]["reason"]
        assert steps["msk-b"]["decision"] == "skipped"
        assert steps["msk-b"]["reason"] == "trunk is down"
        assert steps["msk-c"]["position"] == 2
        assert steps["off"]["reason"] == "entry is disabled"
        assert steps["mid"]["reason"] == "entry is disabled"
        assert steps["ru-any"]["reason"] == "shorter prefix not used: the table has no fallthrough"
        assert steps["default"]["decision"] == "skipped"

    def test_weighted_and_shadowed_reasons(self) -> None:
        table = RouteTable(
            [E("7", "a", 1, weight=3), E("7", "b", 1, weight=1), E("7", "a", 2)], fallthrough=True
        )
        got = table.explain("71")
        by_reason = {s["trunk_id"] + str(s["priority"]): s["reason"] for s in got["steps"]}
        assert by_reason["a1"] == "priority 1, weighted random among 2 entries (weight 3 of 4)"
        assert by_reason["a2"] == "trunk listed twice for this prefix"

    def test_fallthrough_reasons(self) -> None:
        table = RouteTable([E("7", "a"), E("74", "a"), E("74", "b")], fallthrough=True)
        got = table.explain("749")
        assert got["prefixes"][1] == {
            "prefix": "7",
            "used": True,
            "reason": "fallthrough to a shorter prefix",
        }
        last = got["steps"][-1]
        assert (last["prefix"], last["trunk_id"], last["decision"]) == ("7", "a", "skipped")
        assert last["reason"] == "trunk already listed from a longer prefix"

    def test_no_route(self) -> None:
        got = RouteTable([E("7", "a")]).explain("49")
        assert got["candidates"] == [] and got["steps"] == [] and got["prefixes"] == []


class TestRate:
    def test_rate_of_the_first_choice(self) -> None:
        table = RouteTable(BASIC)
        assert table.rate("74951234567") == Decimal("0.010")
        assert table.rate("74991234567") == Decimal("0.05")
        assert RouteTable([E("7", "a")]).rate("49") is None

    def test_rate_of_the_carrying_trunk(self) -> None:
        table = RouteTable([*BASIC, E("7495", "old", 1, cost="0.3", enabled=False)])
        assert table.rate("74951234567", "msk-b") == Decimal("0.008")
        assert table.rate("74951234567", "ru-any") == Decimal("0.05")  # from the shorter prefix
        assert table.rate("74951234567", "old") == Decimal("0.3")  # disabled since the call
        assert table.rate("74951234567", "de") is None

    def test_cheapest_of_equal_priorities(self) -> None:
        table = RouteTable(
            [E("7", "a", 1, cost="0.2"), E("7", "b", 1, cost="0.1"), E("7", "c", 0, cost="0.9")]
        )
        assert table.rate("71") == Decimal("0.9")
        assert RouteTable([E("7", "a", 1, cost="0.2"), E("7", "b", 1, cost="0.1")]).rate(
            "71"
        ) == Decimal("0.1")


entry_st = st.builds(
    RouteEntry,
    prefix=st.text("123", max_size=4),
    trunk_id=st.sampled_from([f"t{i}" for i in range(8)]),
    priority=st.integers(0, 3),
    weight=st.integers(0, 5),
    cost_per_minute=st.integers(0, 3),
    enabled=st.booleans(),
)


def model(
    entries: list[RouteEntry], number: str, down: set[str], fallthrough: bool
) -> list[list[set[str]]]:
    """Per used prefix, the trunk sets of each priority tier, as the table must order them."""
    live: dict[str, list[RouteEntry]] = {}
    for e in entries:
        if e.enabled:
            live.setdefault(e.prefix, []).append(e)
    used = [number[:n] for n in range(len(number), -1, -1) if number[:n] in live]
    if not fallthrough:
        used = used[:1]
    out: list[list[set[str]]] = []
    for prefix in used:
        best: dict[str, RouteEntry] = {}
        for e in sorted(live[prefix], key=lambda e: (e.priority, e.cost_per_minute)):
            best.setdefault(e.trunk_id, e)
        tiers: dict[int, set[str]] = {}
        for e in best.values():
            tiers.setdefault(e.priority, set()).add(e.trunk_id)
        out.append([tiers[p] for p in sorted(tiers)])
    return out


@settings(max_examples=300, deadline=None)
@given(
    entries=st.lists(entry_st, max_size=25),
    number=st.text("123", min_size=1, max_size=6),
    down=st.sets(st.sampled_from([f"t{i}" for i in range(8)]), max_size=3),
    fallthrough=st.booleans(),
    tie_break=st.sampled_from(["weight", "cost"]),
    seed=st.integers(0, 2**64 - 1),
)
def test_property_candidates_follow_the_model(
    entries: list[RouteEntry],
    number: str,
    down: set[str],
    fallthrough: bool,
    tie_break: Any,
    seed: int,
) -> None:
    table = RouteTable(entries, fallthrough=fallthrough, tie_break=tie_break, seed=seed)
    got = table.candidates(number, down=down)
    assert len(got) == len(set(got))
    assert not set(got) & down
    # walk the model's tiers: each tier's remaining trunks appear next, in some order
    expected: list[str] = []
    pos = 0
    for tiers in model(entries, number, down, fallthrough):
        for tier in tiers:
            want = tier - down - set(expected)
            assert set(got[pos : pos + len(want)]) == want
            pos += len(want)
            expected.extend(got[pos - len(want) : pos])
    assert pos == len(got)
    explained = table.explain(number, down=down, rng=random.Random(seed))
    assert explained["candidates"] == table.candidates(number, down=down, rng=random.Random(seed))
    assert json.loads(json.dumps(explained)) == explained


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(entry_st, max_size=25),
    changed=st.dictionaries(st.text("123", max_size=4), st.lists(entry_st, max_size=4), max_size=4),
    numbers=st.lists(st.text("0123", min_size=1, max_size=6), min_size=1, max_size=8),
    fallthrough=st.booleans(),
)
def test_replace_is_a_rebuild_with_the_new_entries(
    before: list[RouteEntry],
    changed: dict[str, list[RouteEntry]],
    numbers: list[str],
    fallthrough: bool,
) -> None:
    # the replacement entries of a prefix carry that prefix
    replacement = {
        p: [
            RouteEntry(
                p,
                e.trunk_id,
                priority=e.priority,
                weight=e.weight,
                cost_per_minute=e.cost_per_minute,
                enabled=e.enabled,
            )
            for e in es
        ]
        for p, es in changed.items()
    }
    table = RouteTable(before, fallthrough=fallthrough, tie_break="cost", seed=5)
    patched = table.replace(replacement)
    kept = [e for e in before if e.prefix not in replacement]
    rebuilt = RouteTable(
        kept + [e for es in replacement.values() for e in es],
        fallthrough=fallthrough,
        tie_break="cost",
        seed=5,
    )
    assert sorted(map(repr, patched.entries)) == sorted(map(repr, rebuilt.entries))
    for number in numbers:
        assert patched.candidates(number) == rebuilt.candidates(number)
        assert patched.explain(number) == rebuilt.explain(number)
    assert table.entries == RouteTable(before, fallthrough=fallthrough).entries  # unchanged


def test_replace_refuses_entries_of_another_prefix() -> None:
    table = RouteTable([RouteEntry("7", "a")])
    with pytest.raises(ValueError, match="prefix '8'"):
        table.replace({"8": [RouteEntry("7", "b")]})
