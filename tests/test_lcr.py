"""The LCR prefix trie: the same tests against the native trie and the dict reference."""

from __future__ import annotations

import random
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore import _lcr, _lcr_ref

IMPLS = [_lcr.RouteTrie, _lcr_ref.RouteTrie]


@pytest.fixture(scope="module", params=IMPLS, ids=["native", "reference"])
def Trie(request: pytest.FixtureRequest) -> Any:
    return request.param


def brute_matches(table: dict[str, int], number: str) -> list[tuple[int, int]]:
    digits = number.removeprefix("+")
    return [(n, table[digits[:n]]) for n in range(len(digits), -1, -1) if digits[:n] in table]


ROUTES = [("", 0), ("7", 1), ("7495", 2), ("74951", 3), ("49", 4), ("380", 5)]


class TestRouteTrie:
    def test_longest_prefix_wins(self, Trie: Any) -> None:
        trie = Trie(ROUTES)
        assert trie.lookup("74951234567") == 3
        assert trie.lookup("74961234567") == 1
        assert trie.lookup("7495") == 2
        assert trie.lookup("749") == 1
        assert trie.lookup("4930123456") == 4
        assert trie.lookup("38") == 0  # only the default route
        assert trie.lookup("12125551234") == 0

    def test_plus_is_ignored(self, Trie: Any) -> None:
        trie = Trie(ROUTES)
        assert trie.lookup("+74951234567") == trie.lookup("74951234567") == 3
        assert trie.matches("+7495") == trie.matches("7495")

    def test_no_default_route_gives_none(self, Trie: Any) -> None:
        trie = Trie([("7", 1), ("7495", 2)])
        assert trie.lookup("49301234") is None
        assert trie.matches("49301234") == []
        assert trie.lookup("7812") == 1

    def test_matches_longest_first_for_failover(self, Trie: Any) -> None:
        trie = Trie(ROUTES)
        assert trie.matches("74951234567") == [(5, 3), (4, 2), (1, 1), (0, 0)]
        assert trie.matches("3801") == [(3, 5), (0, 0)]
        assert trie.matches("1") == [(0, 0)]

    def test_last_duplicate_wins(self, Trie: Any) -> None:
        trie = Trie([("7", 1), ("7495", 2), ("7", 9), ("", 3), ("", 4)])
        assert len(trie) == 3
        assert trie.lookup("7812") == 9
        assert trie.lookup("1") == 4
        assert trie.matches("74950") == [(4, 2), (1, 9), (0, 4)]

    def test_empty_trie(self, Trie: Any) -> None:
        trie = Trie([])
        assert len(trie) == 0
        assert trie.lookup("74951234567") is None
        assert trie.matches("7") == []
        assert trie.lookup_many(["1", "22"]).tolist() == [-1, -1]

    def test_only_default_route(self, Trie: Any) -> None:
        trie = Trie([("", 42)])
        assert trie.lookup("1") == 42
        assert trie.lookup("9" * 32) == 42
        assert trie.lookup_many(["1", "22", "9" * 20]).tolist() == [42, 42, 42]

    def test_values_span_int64(self, Trie: Any) -> None:
        trie = Trie([("1", 0), ("12", 2**63 - 1)])
        assert trie.lookup("123") == 2**63 - 1
        assert trie.lookup("13") == 0
        assert trie.lookup_many(["123", "13"]).tolist() == [2**63 - 1, 0]

    @pytest.mark.parametrize("top", [2**26 - 2, 2**26 - 1, 2**26, 2**32, 2**63 - 1])
    def test_values_around_the_node_field(self, Trie: Any, top: int) -> None:
        # small values live in the node, others in a side array: both must read back
        pairs = [("", 7), ("1", top), ("12", 0), ("123", top - 1), ("2", 1)]
        trie = Trie(pairs)
        assert [trie.lookup(n) for n in ("9", "15", "129", "1234", "2")] == [7, top, 0, top - 1, 1]
        assert trie.matches("1234") == [(3, top - 1), (2, 0), (1, top), (0, 7)]
        assert trie.lookup_many(["9", "15", "1234"]).tolist() == [7, top, top - 1]

    def test_longest_numbers_and_prefixes(self, Trie: Any) -> None:
        prefix = "1234567890" * 3 + "12"  # 32 digits
        trie = Trie([(prefix, 7), (prefix[:31], 6), (prefix[:17], 5), (prefix[:16], 4)])
        assert trie.lookup(prefix) == 7
        assert trie.lookup("+" + prefix) == 7
        assert trie.lookup(prefix[:31]) == 6
        assert trie.lookup(prefix[:30]) == 5
        assert trie.lookup(prefix[:16]) == 4
        assert trie.matches(prefix) == [(32, 7), (31, 6), (17, 5), (16, 4)]
        assert trie.lookup_many([prefix, prefix[:20]]).tolist() == [7, 5]

    def test_bytes_numbers(self, Trie: Any) -> None:
        trie = Trie(ROUTES)
        assert trie.lookup(b"+74951") == 3
        assert trie.lookup_many([b"7495", "49"]).tolist() == [2, 4]

    @pytest.mark.parametrize(
        ("number", "reason"),
        [
            ("", "empty number"),
            ("+", "empty number"),
            ("++7495", "'\\+', which is not a digit"),
            ("7495a", "'a', which is not a digit"),
            (" 7495", "' ', which is not a digit"),
            ("7-495", "'-', which is not a digit"),
            ("7\x00", "not a digit"),
            ("٣٤", "not a digit"),  # Arabic-Indic digits are not 0-9
            ("1" * 33, "33 digits, more than 32"),
            ("+" + "1" * 33, "33 digits, more than 32"),
        ],
    )
    def test_invalid_numbers_raise(self, Trie: Any, number: str, reason: str) -> None:
        trie = Trie(ROUTES)
        with pytest.raises(ValueError, match=reason):
            trie.lookup(number)
        with pytest.raises(ValueError, match=reason):
            trie.matches(number)
        with pytest.raises(ValueError, match=r"numbers\[1\]: .*" + reason):
            trie.lookup_many(["7", number, "8"])

    def test_number_must_be_a_string(self, Trie: Any) -> None:
        trie = Trie(ROUTES)
        with pytest.raises(TypeError):
            trie.lookup(74951234567)
        with pytest.raises(TypeError, match=r"numbers\[1\]"):
            trie.lookup_many(["7", 7])

    @pytest.mark.parametrize(
        ("pairs", "error", "reason"),
        [
            ([("7a", 1)], ValueError, "'a', which is not a digit"),
            ([("+7", 1)], ValueError, "'\\+', which is not a digit"),
            ([("7 495", 1)], ValueError, "' ', which is not a digit"),
            ([("1" * 33, 1)], ValueError, "longer than 32 digits"),
            ([("7", -1)], ValueError, "0..2\\*\\*63-1"),
            ([("7", 2**63)], ValueError, "0..2\\*\\*63-1"),
            ([("7", True)], TypeError, "must be int"),
            ([("7", 1.0)], TypeError, "must be int"),
            ([(7, 1)], TypeError, "must be str"),
            ([("7",)], TypeError, "pair"),
            ([("7", 1, 2)], TypeError, "pair"),
            ([None], TypeError, "pair"),
        ],
    )
    def test_invalid_routes_raise(
        self, Trie: Any, pairs: list[Any], error: type[Exception], reason: str
    ) -> None:
        with pytest.raises(error, match=reason):
            Trie([("1", 1), *pairs])

    def test_build_from_any_iterable(self, Trie: Any) -> None:
        trie = Trie((p, v) for p, v in ROUTES)
        assert trie.lookup("74951") == 3
        assert Trie(tuple(ROUTES)).lookup("74951") == 3
        assert Trie(dict(ROUTES).items()).lookup("74951") == 3
        assert Trie([["7", 1]]).lookup("78") == 1

    def test_lookup_many_inputs(self, Trie: Any) -> None:
        trie = Trie(ROUTES)
        numbers = ["74951234567", "+74961234567", "4930", "2125551234"]
        expected = [3, 1, 4, 0]
        for given_numbers in (
            numbers,
            tuple(numbers),
            np.array(numbers),
            np.array(numbers, dtype="S13"),
            np.array(numbers, dtype=object),
            np.array(numbers, dtype="U40"),
        ):
            out = trie.lookup_many(given_numbers)
            assert out.dtype == np.int64
            assert out.tolist() == expected
        assert trie.lookup_many(iter(numbers)).tolist() == expected
        assert trie.lookup_many(np.array(numbers)[::2]).tolist() == expected[::2]

    def test_lookup_many_empty_and_no_match(self, Trie: Any) -> None:
        trie = Trie([("7", 1)])
        assert trie.lookup_many([]).tolist() == []
        assert trie.lookup_many(np.array([], dtype="S5")).tolist() == []
        assert trie.lookup_many(["8", "7", "9"]).tolist() == [-1, 1, -1]

    def test_lookup_many_rejects_bad_arrays(self, Trie: Any) -> None:
        trie = Trie(ROUTES)
        with pytest.raises(ValueError, match="1-D"):
            trie.lookup_many(np.array([["7"], ["8"]]))
        with pytest.raises(TypeError, match="strings"):
            trie.lookup_many(np.array([7, 8]))
        with pytest.raises(ValueError, match=r"numbers\[2\]: .*'x'"):
            trie.lookup_many(np.array(["7", "8", "7x"], dtype="S4"))
        with pytest.raises(ValueError, match=r"numbers\[0\]: empty"):
            trie.lookup_many(np.array(["", "8"]))
        with pytest.raises(ValueError, match=r"numbers\[1\]: .*not a digit"):
            trie.lookup_many(np.array(["7", "7٣"]))
        with pytest.raises(ValueError, match=r"numbers\[1\]: .*33 digits"):
            trie.lookup_many(np.array(["7", "1" * 33]))

    def test_len_and_sizes(self, Trie: Any) -> None:
        trie = Trie([("", 0), ("7", 1), ("7495", 2)])
        assert len(trie) == 3
        assert trie.node_count == 5  # root, 7, 74, 749, 7495
        assert trie.nbytes > 0
        big = Trie([(str(n), n) for n in range(1000, 3000)])
        assert big.nbytes > trie.nbytes

    def test_random_table_matches_brute_force(self, Trie: Any) -> None:
        # enough prefixes for a deep jump table (10**5 entries) and long chains below it
        rng = random.Random(20261126)
        table: dict[str, int] = {}
        for n in range(120_000):
            length = rng.choice((1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 14))
            table["".join(rng.choices("0123456789", k=length))] = n
        trie = Trie(table.items())
        keys = list(table)
        numbers = ["".join(rng.choices("0123456789", k=rng.randint(1, 14))) for _ in range(3000)]
        numbers += [rng.choice(keys) + str(rng.randint(0, 10**6)) for _ in range(3000)]
        numbers += rng.sample(keys, 1000)
        expected = []
        for number in numbers:
            found = brute_matches(table, number)
            assert trie.matches(number) == found
            assert trie.lookup(number) == (found[0][1] if found else None)
            expected.append(found[0][1] if found else -1)
        assert trie.lookup_many(numbers).tolist() == expected
        assert trie.lookup_many(np.array(numbers, dtype="S")).tolist() == expected

    def test_concurrent_readers(self, Trie: Any) -> None:
        trie = Trie([(str(n), n) for n in range(10_000)])
        numbers = [str(n) + "55" for n in range(10_000)]
        expected = trie.lookup_many(numbers).tolist()
        results: list[list[int]] = []

        def read() -> None:
            for _ in range(5):
                results.append(trie.lookup_many(numbers).tolist())

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(results) == 20
        assert all(r == expected for r in results)

    @settings(max_examples=300, deadline=None)
    @given(
        table=st.dictionaries(st.text("0123", max_size=9), st.integers(0, 2**63 - 1), max_size=60),
        numbers=st.lists(
            st.tuples(st.booleans(), st.text("0123", min_size=1, max_size=14)),
            min_size=1,
            max_size=20,
        ),
    )
    def test_property_against_brute_force(
        self, Trie: Any, table: dict[str, int], numbers: list[tuple[bool, str]]
    ) -> None:
        trie = Trie(table.items())
        dialed = [("+" if plus else "") + digits for plus, digits in numbers]
        for number in dialed:
            found = brute_matches(table, number)
            assert trie.matches(number) == found
            assert trie.lookup(number) == (found[0][1] if found else None)
        assert trie.lookup_many(dialed).tolist() == [
            (brute_matches(table, n) or [(0, -1)])[0][1] for n in dialed
        ]


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.text("0123456789", max_size=12), st.integers(0, 1000)), max_size=80
    ),
    numbers=st.lists(st.text("0123456789", min_size=1, max_size=16), min_size=1, max_size=30),
)
def test_native_agrees_with_reference(pairs: list[tuple[str, int]], numbers: list[str]) -> None:
    native = _lcr.RouteTrie(pairs)
    reference = _lcr_ref.RouteTrie(pairs)
    assert len(native) == len(reference)
    assert native.node_count == reference.node_count
    for number in numbers:
        assert native.lookup(number) == reference.lookup(number)
        assert native.matches(number) == reference.matches(number)
    assert native.lookup_many(numbers).tolist() == reference.lookup_many(numbers).tolist()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    size=st.sampled_from([100, 1_000, 5_000]),
    alphabet=st.sampled_from(["01", "0123", "0123456789"]),
    longest=st.integers(1, 32),
)
def test_native_agrees_with_reference_on_larger_tables(
    seed: int, size: int, alphabet: str, longest: int
) -> None:
    # deeper jump tables (up to 10**3 entries), long chains and dense subtrees
    rng = random.Random(seed)
    pairs = [
        ("".join(rng.choices(alphabet, k=rng.randint(0, longest))), rng.randint(0, 2**40))
        for _ in range(size)
    ]
    native = _lcr.RouteTrie(pairs)
    reference = _lcr_ref.RouteTrie(pairs)
    assert len(native) == len(reference)
    keys = [p for p, _ in pairs if p]
    numbers = ["".join(rng.choices(alphabet, k=rng.randint(1, 32))) for _ in range(200)]
    numbers += [k + "".join(rng.choices(alphabet, k=rng.randint(0, 5))) for k in keys[:200]]
    numbers = [n[:32] for n in numbers]
    for number in numbers[::7]:
        assert native.matches(number) == reference.matches(number)
    assert native.lookup_many(numbers).tolist() == reference.lookup_many(numbers).tolist()
    assert [native.lookup(n) for n in numbers] == [reference.lookup(n) for n in numbers]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_numbers_same_verdict(number: str) -> None:
    native = _lcr.RouteTrie(ROUTES)
    reference = _lcr_ref.RouteTrie(ROUTES)
    try:
        expected: Any = reference.lookup(number)
    except ValueError:
        expected = ValueError
    if expected is ValueError:
        with pytest.raises(ValueError):
            native.lookup(number)
    else:
        assert native.lookup(number) == expected
