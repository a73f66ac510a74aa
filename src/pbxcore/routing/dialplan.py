"""Dial plans: what the user dialled ("8 495 123-45-67", "8 10 49 ...", "+7 ...") as E.164.

A :class:`DialPlan` is an ordered list of rules, each a regular expression that must match
the whole dialled string (after spaces, dashes, dots and parentheses are dropped) and a
replacement in :func:`re.sub` syntax (``\\1``, ``\\g<name>``, ``\\g<0>``). The first rule that
matches decides. The rules are compiled once into one alternation, so a lookup is a single
regex match whatever the number of rules.

A rule's ``kind`` says what the result is; without one, a result starting with ``+`` is
``national`` when it starts with the plan's calling code and ``international`` otherwise,
and any other result is ``internal``. A rule of kind ``invalid`` rejects the number with its
description as the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

from pbxcore._lcr import DialMatcher
from pbxcore.routing.numbers import calling_code, is_e164

__all__ = ["DialPlan", "DialRule", "Kind", "Normalized"]

Kind = Literal["internal", "national", "international", "emergency", "service", "invalid"]
_KINDS = frozenset(get_args(Kind))

# dropped before matching: people write numbers with these
_STRIP = str.maketrans("", "", " -.()\t")
_DIALABLE = re.compile(r"[0-9+*#]+")
_TEMPLATE_ESCAPE = re.compile(r"\\(?:g<([^>]*)>|([0-9]{1,2})|(.))", re.DOTALL)
# numbered backreferences or references by name would shift in the combined regex
_BACKREF = re.compile(r"\\[1-9]|\(\?P=")


class Normalized(NamedTuple):
    """What a dialled string means: ``e164`` (``+...``; the extension for ``internal``; the
    short number for ``emergency`` and ``service``; None if ``invalid``), its ``kind``, the
    description of the ``rule`` that decided, and for ``invalid`` the ``reason``."""

    e164: str | None
    kind: Kind
    rule: str | None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The result as the dial-plan ``normalize`` endpoint returns it."""
        return {"e164": self.e164, "kind": self.kind, "rule": self.rule, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class DialRule:
    """One rule of a dial plan (the API's ``{"match", "replace", "description"}``)."""

    match: str
    replace: str
    description: str = ""
    kind: Kind | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in _KINDS:
            raise ValueError(f"rule kind must be one of {sorted(_KINDS)}, got {self.kind!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DialRule:
        """Build from an API rule; ``kind`` is optional."""
        try:
            return cls(
                match=data["match"],
                replace=data["replace"],
                description=data.get("description", ""),
                kind=data.get("kind"),
            )
        except KeyError as exc:
            raise ValueError(f"dial-plan rule has no {exc.args[0]!r}") from None


def _parse_template(rule: DialRule, pattern: re.Pattern[str]) -> tuple[str | int, ...]:
    # literal strings and group numbers (of the rule's own pattern)
    parts: list[str | int] = []
    pos = 0
    for m in _TEMPLATE_ESCAPE.finditer(rule.replace):
        if m.start() > pos:
            parts.append(rule.replace[pos : m.start()])
        pos = m.end()
        name, number, char = m.groups()
        if char is not None:
            if char != "\\":
                raise ValueError(f"rule {rule.match!r}: unsupported escape \\{char} in replace")
            parts.append("\\")
            continue
        ref = name if name is not None else number
        assert ref is not None
        if ref.isdigit():
            group = int(ref)
        elif ref in pattern.groupindex:
            group = pattern.groupindex[ref]
        else:
            raise ValueError(f"rule {rule.match!r}: replace refers to unknown group {ref!r}")
        if group > pattern.groups:
            raise ValueError(f"rule {rule.match!r}: replace refers to missing group {group}")
        parts.append(group)
    if pos < len(rule.replace):
        parts.append(rule.replace[pos:])
    return tuple(parts)


_Atom = tuple[int, int, int]  # (ASCII charset mask, min, max; -1 = unbounded)
_DIGIT_MASK = sum(1 << c for c in range(48, 58))
_ANY_MASK = ((1 << 128) - 1) & ~(1 << 10)  # '.': anything but a newline
_META = frozenset("\\.[]{}()*+?^$|")


def _class_mask(pattern: str, i: int) -> tuple[int, int] | None:
    # [...] starting at pattern[i] == "[": (mask, index after "]"), or None if unsupported
    i += 1
    negate = pattern.startswith("^", i)
    if negate:
        i += 1
    mask = 0
    first = True
    while i < len(pattern):
        ch = pattern[i]
        if ch == "]" and not first:
            if negate:
                mask = ((1 << 128) - 1) & ~mask
            return mask, i + 1
        first = False
        if ch == "\\":
            if i + 1 >= len(pattern):
                return None
            esc = pattern[i + 1]
            if esc == "d":
                mask |= _DIGIT_MASK
                i += 2
                continue
            if esc.isalnum() or not esc.isascii():
                return None
            ch = esc
            i += 1
        elif ch == "[":
            return None  # nested sets / POSIX classes: leave to `re`
        if not ch.isascii():
            return None
        if pattern.startswith("-", i + 1) and i + 2 < len(pattern) and pattern[i + 2] != "]":
            end = pattern[i + 2]
            if end == "\\" or not end.isascii() or ord(end) < ord(ch):
                return None
            for c in range(ord(ch), ord(end) + 1):
                mask |= 1 << c
            i += 3
            continue
        mask |= 1 << ord(ch)
        i += 1
    return None


def _simple_pattern(pattern: str) -> tuple[list[_Atom], list[tuple[int, int]]] | None:
    """The pattern as atoms and capturing groups, if it is in the subset DialMatcher runs:
    literals, ``.``, ``\\d``, sets, greedy quantifiers, unnested groups without quantifiers;
    no alternation, lookaround or backreferences. None otherwise (``re`` then decides)."""
    atoms: list[_Atom] = []
    groups: list[tuple[int, int]] = []
    stack: list[int | None] = []  # open groups: index into groups, or None if non-capturing
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "(":
            if pattern.startswith("(?:", i):
                stack.append(None)
                i += 3
                continue
            if pattern.startswith("(?P<", i):
                i = pattern.find(">", i) + 1
                if i == 0:
                    return None
            elif pattern.startswith("(?", i):
                return None
            else:
                i += 1
            if any(g is not None for g in stack):
                return None  # nested capturing groups
            stack.append(len(groups))
            groups.append((len(atoms), -1))
            continue
        if ch == ")":
            if not stack:
                return None
            g = stack.pop()
            if g is not None:
                groups[g] = (groups[g][0], len(atoms))
            i += 1
            if i < n and pattern[i] in "*+?{":
                return None  # a quantified group
            continue
        if ch == "|":
            return None
        if ch == "^" and i == 0:
            i += 1
            continue
        if ch == "$" and i == n - 1:
            i += 1
            continue
        if ch == ".":
            mask = _ANY_MASK
            i += 1
        elif ch == "[":
            found = _class_mask(pattern, i)
            if found is None:
                return None
            mask, i = found
        elif ch == "\\":
            if i + 1 >= n:
                return None
            esc = pattern[i + 1]
            if esc == "d":
                mask = _DIGIT_MASK
            elif esc.isalnum() or not esc.isascii():
                return None
            else:
                mask = 1 << ord(esc)
            i += 2
        elif ch in _META or not ch.isascii():
            return None
        else:
            mask = 1 << ord(ch)
            i += 1
        low, high = 1, 1
        if i < n and pattern[i] in "*+?":
            low, high = {"*": (0, -1), "+": (1, -1), "?": (0, 1)}[pattern[i]]
            i += 1
        elif i < n and pattern[i] == "{":
            q = _QUANTIFIER.match(pattern, i)
            if q is None or (q.group(1) == "" and q.group(2) is None):
                return None  # not a quantifier to `re`: a literal brace
            low = int(q.group(1) or 0)
            high = -1 if q.group(2) == "" else int(q.group(2) or q.group(1))
            if high != -1 and high < low:
                return None
            i = q.end()
        if i < n and pattern[i] in "?+":
            return None  # lazy or possessive
        atoms.append((mask, low, high))
    if stack:
        return None
    return atoms, groups


_QUANTIFIER = re.compile(r"\{([0-9]*)(?:,([0-9]*))?\}")


class _Compiled:
    __slots__ = ("description", "kind", "offset", "parts", "pattern", "rule")

    def __init__(self, rule: DialRule) -> None:
        if not isinstance(rule.match, str) or not isinstance(rule.replace, str):
            raise TypeError("rule match and replace must be str")
        try:
            self.pattern = re.compile(rule.match)
        except re.error as exc:
            raise ValueError(f"rule {rule.match!r} is not a valid regex: {exc}") from None
        self.rule = rule
        self.parts = _parse_template(rule, self.pattern)
        self.kind = rule.kind
        self.description = rule.description or f"{rule.match} -> {rule.replace}"
        self.offset = 0  # group number of the rule's group 0 in the combined regex


class DialPlan:
    """An ordered, compiled dial plan; :meth:`normalize` gives a :class:`Normalized`.

    ``country_code`` (e.g. ``"7"``) tells national from international results;
    ``extension_digits`` is the length of internal numbers (informational here: the rules
    decide). ``native=False`` leaves every match to the regex engine (for checking the
    native matcher). A plan is immutable.
    """

    __slots__ = (
        "_combined",
        "_frozen",
        "_native",
        "_rules",
        "country_code",
        "extension_digits",
        "name",
    )

    def __init__(
        self,
        rules: Iterable[DialRule | Mapping[str, Any]],
        *,
        country_code: str | None = None,
        extension_digits: int | None = None,
        name: str = "",
        native: bool = True,
    ) -> None:
        compiled = [
            _Compiled(r if isinstance(r, DialRule) else DialRule.from_mapping(r)) for r in rules
        ]
        if country_code is not None and not (country_code.isascii() and country_code.isdigit()):
            raise ValueError(f"country_code must be digits, got {country_code!r}")
        self.country_code = country_code
        self.extension_digits = extension_digits
        self.name = name
        self._rules: tuple[_Compiled, ...] = tuple(compiled)
        self._combined = self._combine(compiled)
        self._native = self._native_matcher(compiled, country_code) if native else None
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"DialPlan is immutable: cannot set {name!r}")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return (
            f"<DialPlan {self.name!r} rules={len(self._rules)} "
            f"country_code={self.country_code!r} native={self.native}>"
        )

    @property
    def native(self) -> bool:
        """Whether the native matcher runs this plan (every rule is a simple pattern)."""
        return self._native is not None

    @staticmethod
    def _native_matcher(
        rules: Sequence[_Compiled], country_code: str | None
    ) -> DialMatcher[Normalized] | None:
        # the whole plan runs natively if every rule is a simple pattern
        specs: list[
            tuple[
                list[tuple[int, int, int]], list[tuple[int, int]], list[str | int], Kind | None, str
            ]
        ] = []
        for r in rules:
            simple = _simple_pattern(r.rule.match)
            if simple is None or len(simple[1]) != r.pattern.groups:
                return None
            atoms, groups = simple
            specs.append((atoms, groups, list(r.parts), r.kind, r.description))
        return DialMatcher(specs, country_code, Normalized) if specs else None

    @staticmethod
    def _combine(rules: Sequence[_Compiled]) -> re.Pattern[str] | None:
        # one alternation, first rule first: fullmatch tries them in order, like a loop would
        if not rules or any(_BACKREF.search(r.rule.match) for r in rules):
            return None
        pieces = []
        group = 1
        for i, r in enumerate(rules):
            r.offset = group
            pieces.append(f"(?P<_r{i}>{r.rule.match})")
            group += r.pattern.groups + 1
        try:
            return re.compile("|".join(pieces))
        except re.error:  # e.g. the same group name in two rules, inline global flags
            for r in rules:
                r.offset = 0
            return None

    @property
    def rules(self) -> tuple[DialRule, ...]:
        """The rules, in order."""
        return tuple(r.rule for r in self._rules)

    def normalize(self, dialed: str) -> Normalized:
        """What ``dialed`` means under this plan (never raises for a bad number: ``invalid``)."""
        if self._native is not None:
            found = self._native.normalize(dialed)
            if found is not None:
                return found
        if not isinstance(dialed, str):
            raise TypeError(f"dialed number must be str, not {type(dialed).__name__}")
        cleaned = dialed.translate(_STRIP)
        if not cleaned:
            return Normalized(None, "invalid", None, "empty number")
        combined = self._combined
        if combined is not None:
            m = combined.fullmatch(cleaned)
            if m is None:
                return self._no_rule(cleaned)
            rule = self._rules[int(m.lastgroup[2:])]  # type: ignore[index]
        else:
            for rule in self._rules:
                m = rule.pattern.fullmatch(cleaned)
                if m is not None:
                    break
            else:
                return self._no_rule(cleaned)
        offset = rule.offset
        result = "".join(
            [p if isinstance(p, str) else (m.group(offset + p) or "") for p in rule.parts]
        )
        kind = rule.kind
        if kind is None:
            code = self.country_code
            if result[:1] != "+":
                kind = "internal"
            elif code is not None and result.startswith(code, 1):
                kind = "national"
            else:
                kind = "international"
        if kind == "invalid":
            return Normalized(None, "invalid", rule.description, rule.description)
        if kind in ("national", "international") and not is_e164(result):
            return Normalized(
                None,
                "invalid",
                rule.description,
                f"{result!r} is not an E.164 number ('+' and 7-15 digits)",
            )
        return Normalized(result, kind, rule.description)

    @staticmethod
    def _no_rule(cleaned: str) -> Normalized:
        if _DIALABLE.fullmatch(cleaned) is None:
            bad = next(ch for ch in cleaned if ch not in "0123456789+*#")
            reason = f"{bad!r} cannot be dialled"
        else:
            reason = f"no rule of the dial plan matches {cleaned!r}"
        return Normalized(None, "invalid", None, reason)

    # ---- built-in plans ----

    @classmethod
    def russia(
        cls, default_area_code: str | None = "495", extension_digits: int | None = 3
    ) -> DialPlan:
        """The Russian plan: 8 + 10 digits, 8 10 + international, +7 / 7 + 10 digits, 00 +
        international, local 5-7 digit numbers in ``default_area_code``, 112 and 101-104
        (emergency), ``*``/``#`` feature codes (service), extensions of ``extension_digits``.
        """
        return cls(
            _russia_rules(default_area_code, extension_digits),
            country_code="7",
            extension_digits=extension_digits,
            name="RU",
        )

    @classmethod
    def generic(
        cls,
        country_code: str | None = None,
        extension_digits: int | None = None,
        emergency: Sequence[str] = ("112",),
    ) -> DialPlan:
        """A plan for any country: ``+`` or ``00`` and an international number, the
        ``emergency`` numbers, feature codes and extensions of ``extension_digits``."""
        return cls(
            _generic_rules(extension_digits, emergency),
            country_code=country_code,
            extension_digits=extension_digits,
        )

    @classmethod
    def from_config(
        cls,
        *,
        country: str = "RU",
        rules: Iterable[DialRule | Mapping[str, Any]] = (),
        default_area_code: str | None = None,
        extension_digits: int | None = None,
        name: str = "",
    ) -> DialPlan:
        """A stored dial plan (the API's fields): its own ``rules`` first, then the built-in
        rules of ``country`` (the Russian plan for RU, the generic plan otherwise)."""
        code = calling_code(country)
        own = [r if isinstance(r, DialRule) else DialRule.from_mapping(r) for r in rules]
        if country.upper() == "RU":
            base = _russia_rules(default_area_code, extension_digits)
        else:
            base = _generic_rules(extension_digits, ("112",))
        return cls([*own, *base], country_code=code, extension_digits=extension_digits, name=name)


def _common_rules(extension_digits: int | None, emergency: Sequence[str]) -> list[DialRule]:
    # one rule per emergency number keeps every rule a simple pattern (see DialMatcher)
    rules = [DialRule(re.escape(n), r"\g<0>", "emergency number", "emergency") for n in emergency]
    rules.append(DialRule(r"[*#][0-9*#]*", r"\g<0>", "feature code", "service"))
    if extension_digits is not None:
        if not 1 <= extension_digits <= 9:
            raise ValueError(f"extension_digits must be 1-9, got {extension_digits}")
        rules.append(
            DialRule(
                f"[0-9]{{{extension_digits}}}",
                r"\g<0>",
                f"extension ({extension_digits} digits)",
                "internal",
            )
        )
    return rules


_INTERNATIONAL = r"[1-9][0-9]{6,14}"


def _russia_rules(default_area_code: str | None, extension_digits: int | None) -> list[DialRule]:
    rules = _common_rules(extension_digits, ("112", "101", "102", "103", "104"))
    rules += [
        DialRule(r"\+7([0-9]{10})", r"+7\1", "+7 and 10 digits", "national"),
        DialRule(r"\+7[0-9]*", "", "+7 must be followed by 10 digits", "invalid"),
        DialRule(f"\\+({_INTERNATIONAL})", r"+\1", "+ and an international number"),
        DialRule(r"\+.*", "", "+ must be followed by 7-15 digits, not 0 first", "invalid"),
        DialRule(f"810({_INTERNATIONAL})", r"+\1", "8 10 and an international number"),
        DialRule(r"8([0-9]{10})", r"+7\1", "8 and 10 digits", "national"),
        DialRule(r"7([0-9]{10})", r"+7\1", "7 and 10 digits", "national"),
        DialRule(f"00({_INTERNATIONAL})", r"+\1", "00 and an international number"),
        DialRule(r"[3-9][0-9]{9}", r"+7\g<0>", "10-digit national number", "national"),
        DialRule(
            r"8[0-9]*",
            "",
            "8 must be followed by 10 digits, or by 10 and an international number",
            "invalid",
        ),
        DialRule(r"00[0-9]*", "", "00 must be followed by an international number", "invalid"),
    ]
    if default_area_code is not None:
        if not (default_area_code.isascii() and default_area_code.isdigit()):
            raise ValueError(f"default_area_code must be digits, got {default_area_code!r}")
        local = 10 - len(default_area_code)
        if not 5 <= local <= 7:
            raise ValueError(
                f"default_area_code {default_area_code!r} leaves {local} digits for local "
                "numbers; Russian local numbers have 5-7"
            )
        rules.append(
            DialRule(
                f"[0-9]{{{local}}}",
                f"+7{default_area_code}\\g<0>",
                f"local number in area code {default_area_code}",
                "national",
            )
        )
        rules.append(
            DialRule(
                r"[0-9]{5,7}",
                "",
                f"local numbers in area code {default_area_code} have {local} digits",
                "invalid",
            )
        )
    else:
        rules.append(
            DialRule(r"[0-9]{5,7}", "", "local number but no default area code", "invalid")
        )
    return rules


def _generic_rules(extension_digits: int | None, emergency: Sequence[str]) -> list[DialRule]:
    return [
        *_common_rules(extension_digits, emergency),
        DialRule(f"\\+({_INTERNATIONAL})", r"+\1", "+ and an international number"),
        DialRule(f"00({_INTERNATIONAL})", r"+\1", "00 and an international number"),
        DialRule(r"\+.*", "", "+ must be followed by 7-15 digits, not 0 first", "invalid"),
        DialRule(r"00[0-9]*", "", "00 must be followed by an international number", "invalid"),
    ]
