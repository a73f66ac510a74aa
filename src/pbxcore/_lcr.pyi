from collections.abc import Collection, Iterable, Sequence
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

class RouteTrie:
    def __init__(self, pairs: Iterable[tuple[str, int]]) -> None: ...
    def lookup(self, number: str | bytes) -> int | None: ...
    def matches(self, number: str | bytes) -> list[tuple[int, int]]: ...
    def lookup_many(
        self, numbers: Sequence[str | bytes] | npt.NDArray[np.str_] | npt.NDArray[np.bytes_]
    ) -> npt.NDArray[np.int64]: ...
    def __len__(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def node_count(self) -> int: ...

class CandidateIndex:
    def __init__(
        self,
        trie: RouteTrie,
        trunks: tuple[str, ...],
        group_starts: Sequence[int],
        tier_ends: Sequence[int],
        inv_weights: Sequence[float],
        fallthrough: bool,
        seed: int,
    ) -> None: ...
    def candidates(
        self, number: str | bytes, down: Collection[str] = (), seed: int | None = None
    ) -> list[str]: ...
    def ordered(
        self, number: str | bytes, seed: int | None = None
    ) -> list[tuple[int, list[int]]]: ...

_R = TypeVar("_R")

class DialMatcher(Generic[_R]):
    def __init__(
        self,
        rules: Sequence[
            tuple[
                Sequence[tuple[int, int, int]],
                Sequence[tuple[int, int]],
                Sequence[str | int],
                str | None,
                str,
            ]
        ],
        country_code: str | None,
        result_type: type[_R],
    ) -> None: ...
    def normalize(self, dialed: object) -> _R | None: ...
