"""Least-cost routing tables: prefix → ordered trunks with priority, weight and cost.

A :class:`RouteTable` is compiled once from the stored route entries of one route table and
never changes: the configuration snapshot holds it, and an update compiles a new table and
swaps the reference. Every question (which trunks for this call, why, at what cost) is a pure
function of the table and the number.

Decision for a call to ``e164``:

1. the longest prefix of the number that has at least one enabled entry wins;
2. its entries go in ascending ``priority``; entries of equal priority are ordered by weighted
   random (``weight`` is the share, from the table's seedable RNG) or, with
   ``tie_break="cost"``, by ascending ``cost_per_minute``;
3. disabled entries and trunks listed in ``down`` are skipped, and a trunk is listed once;
4. with ``fallthrough=True`` the entries of shorter matching prefixes follow, longest first
   (failover to a broader route); without it a call that exhausts its prefix fails.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pbxcore._lcr import CandidateIndex, RouteTrie

__all__ = ["RouteEntry", "RouteTable", "TieBreak"]

TieBreak = Literal["weight", "cost"]

_DIGITS = frozenset("0123456789")
_MAX_PREFIX = 32


def _to_cost(value: object) -> Decimal:
    if isinstance(value, bool):
        raise TypeError("cost_per_minute must be a number, not bool")
    if isinstance(value, Decimal):
        cost = value
    elif isinstance(value, int | str):
        try:
            cost = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"cost_per_minute {value!r} is not a number") from None
    elif isinstance(value, float):
        cost = Decimal(repr(value))  # the decimal the user wrote, not the binary fraction
    else:
        raise TypeError(f"cost_per_minute must be a number, not {type(value).__name__}")
    if not cost.is_finite() or cost < 0:
        raise ValueError(f"cost_per_minute must be a finite number >= 0, got {value!r}")
    return cost


@dataclass(frozen=True, slots=True, init=False)
class RouteEntry:
    """One route of a route table: calls to ``prefix`` may go out through ``trunk_id``.

    ``prefix`` is E.164 digits without ``+`` (``""`` is the default route), ``priority``
    orders entries (lower first), ``weight`` is the share among equal priorities (0: only
    after the weighted ones), ``cost_per_minute`` is what the trunk charges (stored as a
    Decimal; given as a Decimal, int, str or float).
    """

    prefix: str
    trunk_id: str
    priority: int
    weight: int
    cost_per_minute: Decimal
    enabled: bool

    def __init__(
        self,
        prefix: str,
        trunk_id: str,
        *,
        priority: int = 0,
        weight: int = 1,
        cost_per_minute: Decimal | int | float | str = 0,
        enabled: bool = True,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        if len(prefix) > _MAX_PREFIX or not _DIGITS.issuperset(prefix):
            raise ValueError(f"prefix {prefix!r} must be at most {_MAX_PREFIX} digits 0-9 (no '+')")
        if not isinstance(trunk_id, str) or not trunk_id:
            raise ValueError(f"trunk_id must be a non-empty str, got {trunk_id!r}")
        for name, value in (("priority", priority), ("weight", weight)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be int, not {type(value).__name__}")
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be bool, not {type(enabled).__name__}")
        set_field = object.__setattr__
        set_field(self, "prefix", prefix)
        set_field(self, "trunk_id", trunk_id)
        set_field(self, "priority", priority)
        set_field(self, "weight", weight)
        set_field(self, "cost_per_minute", _to_cost(cost_per_minute))
        set_field(self, "enabled", enabled)

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> RouteEntry:
        """Build from a stored or API row; keys other than the entry's fields are ignored."""
        try:
            prefix = row["prefix"]
            trunk_id = row["trunk_id"]
        except KeyError as exc:
            raise ValueError(f"route entry has no {exc.args[0]!r}") from None
        return cls(
            prefix=prefix,
            trunk_id=trunk_id,
            priority=row.get("priority", 0),
            weight=row.get("weight", 1),
            cost_per_minute=row.get("cost_per_minute", Decimal(0)),
            enabled=row.get("enabled", True),
        )

    def to_json(self) -> dict[str, Any]:
        """The entry as JSON-ready values (the cost as a decimal string)."""
        return {
            "prefix": self.prefix,
            "trunk_id": self.trunk_id,
            "priority": self.priority,
            "weight": self.weight,
            "cost_per_minute": str(self.cost_per_minute),
            "enabled": self.enabled,
        }


class _Group:
    """The enabled entries of one prefix in stored call order, one per trunk."""

    __slots__ = ("best", "entries", "prefix", "shadowed", "tier_ends")

    def __init__(self, prefix: str, entries: list[RouteEntry], tie_break: TieBreak) -> None:
        self.prefix = prefix
        # one entry per trunk: the first by (priority, cost, input order)
        seen: set[str] = set()
        kept: list[RouteEntry] = []
        shadowed: list[RouteEntry] = []
        for entry in sorted(entries, key=lambda e: (e.priority, e.cost_per_minute)):
            (shadowed if entry.trunk_id in seen else kept).append(entry)
            seen.add(entry.trunk_id)
        self.shadowed = tuple(shadowed)
        self.best = kept[0]  # the deterministic first choice: priority, then cost
        if tie_break == "weight":
            kept_ids = {id(e) for e in kept}
            kept = sorted((e for e in entries if id(e) in kept_ids), key=lambda e: e.priority)
        self.entries = tuple(kept)
        # end (exclusive, within the group) of each entry's priority tier
        ends = [0] * len(kept)
        end = len(kept)
        for i in range(len(kept) - 1, -1, -1):
            if i + 1 < len(kept) and kept[i + 1].priority != kept[i].priority:
                end = i + 1
            ends[i] = end
        self.tier_ends = tuple(ends)


class RouteTable:
    """An immutable, compiled route table (see the module docstring for the decision).

    ``entries`` are :class:`RouteEntry` objects or mappings with the API's fields. ``seed``
    seeds the RNG of weighted ordering; a call may pass its own ``rng`` instead. The table
    may be read from any thread.
    """

    __slots__ = (
        "_all",
        "_all_trie",
        "_fallthrough",
        "_flat",
        "_frozen",
        "_groups",
        "_index",
        "_live",
        "_seed_bits",
        "_tie_break",
    )

    def __init__(
        self,
        entries: Iterable[RouteEntry | Mapping[str, Any]],
        *,
        fallthrough: bool = False,
        tie_break: TieBreak = "weight",
        seed: int | None = None,
    ) -> None:
        if tie_break not in ("weight", "cost"):
            raise ValueError(f"tie_break must be 'weight' or 'cost', got {tie_break!r}")
        by_prefix: dict[str, list[RouteEntry]] = {}
        for item in entries:
            entry = item if isinstance(item, RouteEntry) else RouteEntry.from_mapping(item)
            by_prefix.setdefault(entry.prefix, []).append(entry)
        groups: list[_Group] = []
        for prefix, prefix_entries in by_prefix.items():
            enabled = [e for e in prefix_entries if e.enabled]
            if enabled:
                groups.append(_Group(prefix, enabled, tie_break))
        self._assemble(
            tuple((prefix, tuple(group)) for prefix, group in by_prefix.items()),
            groups,
            fallthrough,
            tie_break,
            random.Random(seed).getrandbits(64),
        )

    def _assemble(
        self,
        all_entries: tuple[tuple[str, tuple[RouteEntry, ...]], ...],
        groups: list[_Group],
        fallthrough: bool,
        tie_break: TieBreak,
        seed_bits: int,
    ) -> None:
        self._fallthrough = fallthrough
        self._tie_break: TieBreak = tie_break
        self._seed_bits = seed_bits
        # every prefix with its entries (explain and rating see disabled entries too)
        self._all = all_entries
        self._all_trie = RouteTrie((prefix, i) for i, (prefix, _) in enumerate(self._all))
        # prefixes with at least one enabled entry decide calls
        self._groups: tuple[_Group, ...] = tuple(groups)
        self._live = RouteTrie((g.prefix, i) for i, g in enumerate(groups))
        # flat arrays for the native ordering
        flat: list[RouteEntry] = []
        starts = [0]
        tier_ends: list[int] = []
        for g in groups:
            base = len(flat)
            flat.extend(g.entries)
            tier_ends.extend(base + end for end in g.tier_ends)
            starts.append(len(flat))
        inv_weights = [
            1.0 / e.weight if tie_break == "weight" and e.weight > 0 else 0.0 for e in flat
        ]
        self._flat: tuple[RouteEntry, ...] = tuple(flat)
        self._index = CandidateIndex(
            self._live,
            tuple(e.trunk_id for e in flat),
            starts,
            tier_ends,
            inv_weights,
            fallthrough,
            seed_bits,
        )
        self._frozen = True

    def replace(self, prefixes: Mapping[str, Iterable[RouteEntry]]) -> RouteTable:
        """A new table in which each prefix of ``prefixes`` has the entries given (none:
        the prefix is gone); every other prefix keeps its compiled group, so a change to a
        few routes of a large table costs the index rebuild, not a recompile."""
        new: dict[str, tuple[RouteEntry, ...]] = {}
        for prefix, entries in prefixes.items():
            group = tuple(entries)
            for entry in group:
                if not isinstance(entry, RouteEntry) or entry.prefix != prefix:
                    raise ValueError(
                        f"entries for prefix {prefix!r} must be its RouteEntry objects"
                    )
            new[prefix] = group
        all_entries = tuple(
            [(p, g) for p, g in self._all if p not in new] + [(p, g) for p, g in new.items() if g]
        )
        groups = [g for g in self._groups if g.prefix not in new]
        for prefix, group in new.items():
            enabled = [e for e in group if e.enabled]
            if enabled:
                groups.append(_Group(prefix, enabled, self._tie_break))
        table = object.__new__(RouteTable)
        table._assemble(all_entries, groups, self._fallthrough, self._tie_break, self._seed_bits)
        return table

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"RouteTable is immutable: cannot set {name!r}")
        object.__setattr__(self, name, value)

    @property
    def fallthrough(self) -> bool:
        """Whether shorter prefixes follow when the longest one's trunks are exhausted."""
        return self._fallthrough

    @property
    def tie_break(self) -> TieBreak:
        """How entries of equal priority are ordered: ``"weight"`` or ``"cost"``."""
        return self._tie_break

    @property
    def entries(self) -> tuple[RouteEntry, ...]:
        """All entries, grouped by prefix."""
        return tuple(e for _, group in self._all for e in group)

    def __len__(self) -> int:
        return sum(len(group) for _, group in self._all)

    def __repr__(self) -> str:
        return (
            f"<RouteTable entries={len(self)} prefixes={len(self._all)} "
            f"tie_break={self._tie_break!r} fallthrough={self._fallthrough}>"
        )

    def candidates(
        self,
        e164: str,
        *,
        down: Collection[str] = (),
        rng: random.Random | None = None,
    ) -> list[str]:
        """Trunk ids to try for a call to ``e164`` (``+`` optional), in order.

        ``down`` lists trunks that cannot take calls now (unreachable, full). An empty list
        means no route. ``rng`` makes the weighted draw reproducible (one 64-bit draw per
        call); without it the table's own generator (from ``seed``) is used. Raises
        ValueError if ``e164`` is not a number.
        """
        return self._index.candidates(e164, down, None if rng is None else rng.getrandbits(64))

    def explain(
        self,
        e164: str,
        *,
        down: Collection[str] = (),
        rng: random.Random | None = None,
    ) -> dict[str, Any]:
        """The decision of :meth:`candidates` with the reason for every entry (JSON-ready).

        Given an RNG in the same state, ``explain(...)["candidates"]`` equals
        ``candidates(...)``.
        """
        ordered = self._index.ordered(e164, None if rng is None else rng.getrandbits(64))
        used = [self._groups[g] for g, _ in ordered]
        used_prefixes = {g.prefix for g in used}
        live_prefixes = {self._groups[i].prefix for _, i in self._live.matches(e164)}
        matched_all = self._all_trie.matches(e164)
        prefixes: list[dict[str, Any]] = []
        for _, i in matched_all:
            prefix = self._all[i][0]
            if prefix in used_prefixes:
                reason = (
                    "longest matching prefix"
                    if prefix == used[0].prefix
                    else "fallthrough to a shorter prefix"
                )
            elif prefix not in live_prefixes:
                reason = "every entry is disabled"
            else:
                reason = "shorter prefix not used: the table has no fallthrough"
            prefixes.append({"prefix": prefix, "used": prefix in used_prefixes, "reason": reason})

        steps: list[dict[str, Any]] = []
        out: list[str] = []
        for (_, order), group in zip(ordered, used, strict=True):
            for index in order:
                entry = self._flat[index]
                trunk = entry.trunk_id
                if trunk in out:
                    decision, reason = "skipped", "trunk already listed from a longer prefix"
                elif trunk in down:
                    decision, reason = "skipped", "trunk is down"
                else:
                    out.append(trunk)
                    decision, reason = "candidate", self._tier_reason(group, entry)
                steps.append(self._step(entry, decision, reason, len(out)))
            for entry in group.shadowed:
                steps.append(
                    self._step(entry, "skipped", "trunk listed twice for this prefix", None)
                )
        for _, i in matched_all:
            prefix, entries = self._all[i]
            for entry in entries:
                if prefix in used_prefixes and entry.enabled:
                    continue
                reason = (
                    "entry is disabled"
                    if not entry.enabled
                    else "shorter prefix not used: the table has no fallthrough"
                )
                steps.append(self._step(entry, "skipped", reason, None))
        return {
            "number": e164,
            "fallthrough": self._fallthrough,
            "tie_break": self._tie_break,
            "prefixes": prefixes,
            "steps": steps,
            "candidates": out,
        }

    def _tier_reason(self, group: _Group, entry: RouteEntry) -> str:
        tier = [e for e in group.entries if e.priority == entry.priority]
        if len(tier) == 1:
            return f"priority {entry.priority}, the only entry of that priority"
        if self._tie_break == "cost":
            return (
                f"priority {entry.priority}, ordered by cost among {len(tier)} entries "
                f"(cost {entry.cost_per_minute} per minute)"
            )
        if entry.weight == 0:
            return f"priority {entry.priority}, weight 0: after the weighted entries"
        total = sum(e.weight for e in tier)
        return (
            f"priority {entry.priority}, weighted random among {len(tier)} entries "
            f"(weight {entry.weight} of {total})"
        )

    @staticmethod
    def _step(
        entry: RouteEntry, decision: str, reason: str, position: int | None
    ) -> dict[str, Any]:
        step = entry.to_json()
        step["decision"] = decision
        step["position"] = position if decision == "candidate" else None
        step["reason"] = reason
        return step

    def rate(self, e164: str, trunk_id: str | None = None) -> Decimal | None:
        """Cost per minute to rate a call to ``e164`` (a CDR), or None without a route.

        With ``trunk_id`` (the trunk that carried the call): the cost of that trunk's entry
        at the longest matching prefix that lists it, disabled or not (the table may have
        changed since the call). Without: the first choice of the longest matching prefix
        by priority, then cost.
        """
        if trunk_id is None:
            i = self._live.lookup(e164)
            return None if i is None else self._groups[i].best.cost_per_minute
        for _, i in self._all_trie.matches(e164):
            costs = [e for e in self._all[i][1] if e.trunk_id == trunk_id]
            if costs:
                best = min(costs, key=lambda e: (not e.enabled, e.priority, e.cost_per_minute))
                return best.cost_per_minute
        return None
