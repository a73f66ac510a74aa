"""Pure-Python reference of the LCR prefix trie: a dict probed longest prefix first.

The same API as the native :class:`pbxcore._lcr.RouteTrie`; the test suite runs one test
class against both. It is the baseline of the benchmark, not for carrying calls.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_DIGITS", "RouteTrie"]

MAX_DIGITS = 32
_DIGITS = frozenset("0123456789")


def _describe(number: str | bytes) -> str:
    text = number.decode("ascii", "replace") if isinstance(number, bytes) else number
    digits = text[1:] if text.startswith("+") else text
    if not digits:
        return f"empty number {number!r}"
    for ch in digits:
        if not ("0" <= ch <= "9"):
            return f"number {number!r} has {ch!r}, which is not a digit"
    return f"number {number!r} has {len(digits)} digits, more than {MAX_DIGITS}"


def _digits(number: Any) -> str:
    if isinstance(number, bytes):
        text = number.decode("ascii", "replace")
    elif isinstance(number, str):
        text = number
    else:
        raise TypeError(f"a number must be str, not {type(number).__name__}")
    digits = text[1:] if text.startswith("+") else text
    if not digits or len(digits) > MAX_DIGITS or not _DIGITS.issuperset(digits):
        raise ValueError(_describe(number))
    return digits


class RouteTrie:
    """Longest-prefix match from digit prefixes to non-negative ints (dict reference)."""

    def __init__(self, pairs: Iterable[tuple[str, int]]) -> None:
        table: dict[str, int] = {}
        for seq, item in enumerate(pairs):
            try:
                prefix, value = item
            except (TypeError, ValueError):
                raise TypeError(
                    f"route #{seq} must be a (prefix, value) pair, got {item!r}"
                ) from None
            if not isinstance(prefix, str):
                raise TypeError(f"prefix #{seq} must be str, not {type(prefix).__name__}")
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(
                    f"value of prefix {prefix!r} must be int, not {type(value).__name__}"
                )
            if not 0 <= value < 2**63:
                raise ValueError(f"value of prefix {prefix!r} must be in 0..2**63-1, got {value}")
            if len(prefix) > MAX_DIGITS:
                raise ValueError(f"prefix {prefix!r} is longer than {MAX_DIGITS} digits")
            for ch in prefix:
                if ch not in _DIGITS:
                    raise ValueError(f"prefix {prefix!r} has {ch!r}, which is not a digit")
            table[prefix] = value
        self._table = table
        self._longest = max(map(len, table), default=0)

    def lookup(self, number: str | bytes) -> int | None:
        digits = _digits(number)
        table = self._table
        for length in range(min(len(digits), self._longest), -1, -1):
            value = table.get(digits[:length])
            if value is not None:
                return value
        return None

    def matches(self, number: str | bytes) -> list[tuple[int, int]]:
        digits = _digits(number)
        table = self._table
        out = []
        for length in range(min(len(digits), self._longest), -1, -1):
            value = table.get(digits[:length])
            if value is not None:
                out.append((length, value))
        return out

    def lookup_many(
        self, numbers: Sequence[str | bytes] | npt.NDArray[np.str_] | npt.NDArray[np.bytes_]
    ) -> npt.NDArray[np.int64]:
        if isinstance(numbers, np.ndarray):
            if numbers.ndim != 1:
                raise ValueError(f"numbers must be a 1-D array, got {numbers.ndim} dimensions")
            if numbers.dtype.kind not in "SUO":
                raise TypeError(f"numbers must be strings, got a {numbers.dtype} array")
        items = list(numbers)
        out = np.empty(len(items), dtype=np.int64)
        for i, number in enumerate(items):
            if not isinstance(number, str | bytes):
                raise TypeError(f"numbers[{i}] must be str, not {type(number).__name__}")
            try:
                value = self.lookup(number)
            except ValueError as exc:
                raise ValueError(f"numbers[{i}]: {exc}") from None
            out[i] = -1 if value is None else value
        return out

    def __len__(self) -> int:
        return len(self._table)

    @property
    def nbytes(self) -> int:
        """Bytes held by the dict and its keys (the int values are shared or small)."""
        return sys.getsizeof(self._table) + sum(map(sys.getsizeof, self._table))

    @property
    def node_count(self) -> int:
        """Number of distinct prefixes of the stored prefixes (the nodes a trie would have)."""
        return len({""} | {p[:i] for p in self._table for i in range(len(p) + 1)})
