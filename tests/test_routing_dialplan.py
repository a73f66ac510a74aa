"""Dial plans: the Russian and generic built-ins, API-shaped rules, the native matcher."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore._lcr import DialMatcher
from pbxcore.routing import DialPlan, DialRule, Normalized
from pbxcore.routing.dialplan import _simple_pattern

RU = DialPlan.russia()


def regex_only(plan: DialPlan) -> DialPlan:
    """The same plan with the native matcher switched off (the regex engine decides)."""
    return DialPlan(
        plan.rules,
        country_code=plan.country_code,
        extension_digits=plan.extension_digits,
        native=False,
    )


RU_REGEX = regex_only(RU)


class TestRussianPlan:
    @pytest.mark.parametrize(
        ("dialed", "e164", "kind", "rule"),
        [
            ("84951234567", "+74951234567", "national", "8 and 10 digits"),
            ("8 (495) 123-45-67", "+74951234567", "national", "8 and 10 digits"),
            ("8.495.123.45.67", "+74951234567", "national", "8 and 10 digits"),
            ("8 800 555-35-35", "+78005553535", "national", "8 and 10 digits"),
            ("+7 495 123 45 67", "+74951234567", "national", "+7 and 10 digits"),
            ("+7(916)123-45-67", "+79161234567", "national", "+7 and 10 digits"),
            ("79161234567", "+79161234567", "national", "7 and 10 digits"),
            ("9161234567", "+79161234567", "national", "10-digit national number"),
            (
                "8 10 49 30 1234567",
                "+49301234567",
                "international",
                "8 10 and an international number",
            ),
            (
                "810 1 212 555 1234",
                "+12125551234",
                "international",
                "8 10 and an international number",
            ),
            (
                "8 10 7 495 123 45 67",
                "+74951234567",
                "national",
                "8 10 and an international number",
            ),
            ("00 49 30 1234567", "+49301234567", "international", "00 and an international number"),
            ("+49 30 1234567", "+49301234567", "international", "+ and an international number"),
            (
                "+380 44 123 45 67",
                "+380441234567",
                "international",
                "+ and an international number",
            ),
            ("123-45-67", "+74951234567", "national", "local number in area code 495"),
            ("112", "112", "emergency", "emergency number"),
            ("101", "101", "emergency", "emergency number"),
            ("104", "104", "emergency", "emergency number"),
            ("105", "105", "internal", "extension (3 digits)"),
            ("200", "200", "internal", "extension (3 digits)"),
            ("*98", "*98", "service", "feature code"),
            ("#21#", "#21#", "service", "feature code"),
        ],
    )
    def test_forms(self, dialed: str, e164: str, kind: str, rule: str) -> None:
        for plan in (RU, RU_REGEX):
            assert plan.normalize(dialed) == Normalized(e164, kind, rule)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("dialed", "reason"),
        [
            ("", "empty number"),
            (" - ", "empty number"),
            ("8495123", "8 must be followed by 10 digits, or by 10 and an international number"),
            ("849512345678", "8 must be followed by 10 digits"),
            ("+7495123", "+7 must be followed by 10 digits"),
            ("+0123456789", "+ must be followed by 7-15 digits, not 0 first"),
            ("+1234", "+ must be followed by 7-15 digits"),
            ("00123", "00 must be followed by an international number"),
            ("123456", "local numbers in area code 495 have 7 digits"),
            ("12345", "local numbers in area code 495 have 7 digits"),
            ("12", "no rule of the dial plan matches '12'"),
            ("1234", "no rule of the dial plan matches '1234'"),
            ("12345678", "no rule of the dial plan matches '12345678'"),
            ("8495abc4567", "'a' cannot be dialled"),
            ("8495١٢٣4567", "'١' cannot be dialled"),
            ("+7+4951234567", "+ must be followed by 7-15 digits"),
        ],
    )
    def test_invalid_with_reason(self, dialed: str, reason: str) -> None:
        for plan in (RU, RU_REGEX):
            got = plan.normalize(dialed)
            assert got.kind == "invalid"
            assert got.e164 is None
            assert got.reason is not None and got.reason.startswith(reason)

    def test_extension_digits(self) -> None:
        plan = DialPlan.russia(extension_digits=4)
        assert plan.normalize("1234") == Normalized("1234", "internal", "extension (4 digits)")
        assert plan.normalize("123").kind == "invalid"
        assert plan.normalize("112").kind == "emergency"
        assert DialPlan.russia(extension_digits=None).normalize("200").kind == "invalid"
        with pytest.raises(ValueError, match="extension_digits"):
            DialPlan.russia(extension_digits=0)

    @pytest.mark.parametrize(
        ("area", "local", "e164"),
        [
            ("812", "1234567", "+78121234567"),
            ("3812", "123456", "+73812123456"),
            ("48439", "12345", "+74843912345"),
        ],
    )
    def test_default_area_code(self, area: str, local: str, e164: str) -> None:
        plan = DialPlan.russia(default_area_code=area)
        got = plan.normalize(local)
        assert (got.e164, got.kind) == (e164, "national")

    def test_area_code_validation(self) -> None:
        with pytest.raises(ValueError, match="leaves 8 digits"):
            DialPlan.russia(default_area_code="49")
        with pytest.raises(ValueError, match="digits"):
            DialPlan.russia(default_area_code="49a")
        no_area = DialPlan.russia(default_area_code=None)
        assert no_area.normalize("1234567").reason == "local number but no default area code"

    def test_result_is_json(self) -> None:
        got = RU.normalize("8 495 123-45-67").to_json()
        assert json.loads(json.dumps(got)) == {
            "e164": "+74951234567",
            "kind": "national",
            "rule": "8 and 10 digits",
            "reason": None,
        }
        bad = RU.normalize("8495").to_json()
        assert bad["kind"] == "invalid" and bad["e164"] is None and bad["reason"]

    def test_not_a_string(self) -> None:
        with pytest.raises(TypeError):
            RU.normalize(84951234567)  # type: ignore[arg-type]

    def test_built_in_plans_run_natively(self) -> None:
        assert RU.native
        assert DialPlan.generic("49", 3).native
        assert not RU_REGEX.native

    def test_immutable(self) -> None:
        with pytest.raises(AttributeError, match="immutable"):
            RU.country_code = "49"  # type: ignore[misc]


class TestGenericPlan:
    def test_forms(self) -> None:
        plan = DialPlan.generic(country_code="49", extension_digits=2)
        assert plan.normalize("+49 30 1234567") == Normalized(
            "+49301234567", "national", "+ and an international number"
        )
        assert plan.normalize("0049301234567").kind == "national"
        assert plan.normalize("001 212 555 1234") == Normalized(
            "+12125551234", "international", "00 and an international number"
        )
        assert plan.normalize("112").kind == "emergency"
        assert plan.normalize("21").kind == "internal"
        assert plan.normalize("0301234567").kind == "invalid"

    def test_without_country_every_number_is_international(self) -> None:
        assert DialPlan.generic().normalize("+74951234567").kind == "international"

    def test_emergency_numbers(self) -> None:
        plan = DialPlan.generic(emergency=("911", "112"))
        assert plan.normalize("911").kind == "emergency"
        assert plan.normalize("112").kind == "emergency"


class TestCustomRules:
    def test_api_rules_before_the_country_plan(self) -> None:
        plan = DialPlan.from_config(
            country="RU",
            rules=[
                {
                    "match": r"9(\d{3})",
                    "replace": r"+74955550\1",
                    "description": "office short dial",
                },
                {
                    "match": r"0(?P<ext>\d{3})",
                    "replace": r"\g<ext>",
                    "description": "old extensions",
                },
                {
                    "match": r"8(?:9\d{2})\d{7}",
                    "replace": "",
                    "description": "no mobiles",
                    "kind": "invalid",
                },
            ],
            default_area_code="812",
            extension_digits=3,
        )
        assert plan.normalize("9123") == Normalized("+74955550123", "national", "office short dial")
        assert plan.normalize("0101") == Normalized("101", "internal", "old extensions")
        assert plan.normalize("89161234567") == Normalized(
            None, "invalid", "no mobiles", "no mobiles"
        )
        assert plan.normalize("84951234567").e164 == "+74951234567"
        assert plan.normalize("1234567").e164 == "+78121234567"
        assert plan.country_code == "7"

    def test_other_country_gets_the_generic_plan(self) -> None:
        plan = DialPlan.from_config(country="DE", extension_digits=3)
        assert plan.normalize("+49301234567").kind == "national"
        assert plan.normalize("84951234567").kind == "invalid"
        with pytest.raises(ValueError, match="unknown country"):
            DialPlan.from_config(country="XX")

    def test_inferred_kinds_and_e164_check(self) -> None:
        plan = DialPlan(
            [
                {"match": r"1(\d+)", "replace": r"+\1"},
                {"match": r"2(\d+)", "replace": r"\1"},
                {"match": r"3(\d+)", "replace": r"+7\1"},
            ],
            country_code="7",
        )
        assert plan.normalize("149301234567").kind == "international"
        assert plan.normalize("212").kind == "internal"
        assert plan.normalize("34951234567").kind == "national"
        bad = plan.normalize("112")
        assert bad.kind == "invalid" and "'+12' is not an E.164 number" in (bad.reason or "")
        assert bad.rule == r"1(\d+) -> +\1"

    def test_complex_patterns_fall_back_to_the_regex_engine(self) -> None:
        plan = DialPlan(
            [
                {"match": r"(?:5|6)(\d{2})|7(\d)", "replace": r"\1\2"},
                {"match": r"(\d)\1", "replace": r"\g<0>"},
            ]
        )
        assert not plan.native
        assert plan.normalize("512").e164 == "12"
        assert plan.normalize("79").e164 == "9"
        assert plan.normalize("33").e164 == "33"
        assert plan.normalize("34").kind == "invalid"

    @pytest.mark.parametrize(
        ("rule", "reason"),
        [
            ({"match": "8(", "replace": ""}, "not a valid regex"),
            ({"match": r"8(\d)", "replace": r"\2"}, "missing group 2"),
            ({"match": r"8(\d)", "replace": r"\g<x>"}, "unknown group 'x'"),
            ({"match": r"8(\d)", "replace": r"\n"}, "unsupported escape"),
            ({"match": r"8", "replace": "", "kind": "local"}, "kind"),
            ({"match": r"8"}, "no 'replace'"),
        ],
    )
    def test_rule_validation(self, rule: dict[str, Any], reason: str) -> None:
        with pytest.raises(ValueError, match=reason):
            DialPlan([rule])

    def test_rules_round_trip(self) -> None:
        rule = DialRule(r"8(\d{10})", r"+7\1", "national", "national")
        assert DialPlan([rule]).rules == (rule,)


# ---- the native matcher against the regex engine ----

PATTERNS = [
    r"8([0-9]{10})",
    r"\+7[0-9]*",
    r"810([1-9][0-9]{6,14})",
    r"(\d{2,4})(\d*)",
    r"([0-9]*)5([0-9]?)",
    r"(?P<a>[1-3]+)[^1-3](?P<b>.*)",
    r"^[*#][0-9*#]*$",
    r"(?:8)(\d{3})-?(\d+)",
    r"[\d+]{3,}",
    r"(0{,2})(1{2,})(\*?)",
    r"[-+][0-9-]+",
    r".+#",
    r"\*\d\d#?",
    r"1{,}2{,2}",
    r"([0-9]{3})([0-9]{2,})",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_patterns_are_simple(pattern: str) -> None:
    assert _simple_pattern(pattern) is not None


@pytest.mark.parametrize(
    "pattern",
    [r"a|b", r"(\d)\1", r"(?i)8", r"(\d+)+", r"\d+?", r"(?=8)8", r"\w", r"[[:digit:]]", "8{}"],
)
def test_unsupported_patterns_are_left_to_re(pattern: str) -> None:
    assert _simple_pattern(pattern) is None


@settings(max_examples=500, deadline=None)
@given(pattern=st.sampled_from(PATTERNS), dialed=st.text("0123456789+*#-5818", max_size=18))
def test_native_matcher_agrees_with_re(pattern: str, dialed: str) -> None:
    compiled = re.compile(pattern)
    simple = _simple_pattern(pattern)
    assert simple is not None
    atoms, groups = simple
    parts: list[str | int] = ["<", *range(compiled.groups + 1), ">"]
    matcher = DialMatcher([(atoms, groups, parts, "internal", "rule")], None, Normalized)
    cleaned = dialed.replace("-", "")
    m = compiled.fullmatch(cleaned)
    got = matcher.normalize(dialed)
    if m is None or not cleaned:  # an empty number is the plan's to report
        assert got is None
    else:
        expected = "<" + "".join(g or "" for g in [m.group(0), *m.groups()]) + ">"
        assert got == Normalized(expected, "internal", "rule")


@settings(max_examples=500, deadline=None)
@given(st.text("0123456789+*#- ()x", max_size=20))
def test_native_and_regex_plans_agree(dialed: str) -> None:
    assert RU.normalize(dialed) == RU_REGEX.normalize(dialed)


# ---- against phonenumbers ----

AREA_CODES = [
    "495",
    "499",
    "812",
    "343",
    "383",
    "843",
    "863",
    "846",
    "861",
    "351",
    "473",
    "423",
    "391",
    "831",
    "342",
]


def corpus(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    numbers = []
    for _ in range(count):
        if rng.random() < 0.5:
            area = "9" + "".join(rng.choices("0123456789", k=2))
        else:
            area = rng.choice(AREA_CODES)
        numbers.append(area + "".join(rng.choices("0123456789", k=7)))
    return numbers


def dialing_forms(national: str) -> list[str]:
    a, b, c, d = national[:3], national[3:6], national[6:8], national[8:]
    return [
        "8" + national,
        f"8 ({a}) {b}-{c}-{d}",
        f"+7 {a} {b}-{c}-{d}",
        "7" + national,
        national,
        "8 10 7 " + national,
        f"00 7 {a} {b} {c} {d}",
    ]


def test_agrees_with_phonenumbers_on_a_corpus() -> None:
    numbers = corpus(10_000, seed=20261126)
    assert len(set(numbers)) > 9_900
    valid_cache: dict[tuple[int, int], bool] = {}
    checked = 0
    valid_numbers = 0
    for national in numbers:
        valid = False
        for dialed in dialing_forms(national):
            parsed = phonenumbers.parse(dialed, "RU")
            key = (parsed.country_code, parsed.national_number)
            if key not in valid_cache:
                valid_cache[key] = phonenumbers.is_valid_number(parsed)
            if not valid_cache[key]:
                continue
            valid = True
            expected = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            got = RU.normalize(dialed)
            assert got.e164 == expected, dialed
            assert got.kind == "national"
            checked += 1
        valid_numbers += valid
    # the corpus is mostly real numbers, so the check is not vacuous
    assert valid_numbers > 7_000
    assert checked > 6 * 7_000


def test_international_example_numbers() -> None:
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        example = phonenumbers.example_number(region)
        if example is None:
            continue
        e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        digits = e164[1:]
        for dialed in (e164, "8 10 " + digits, "00" + digits):
            parsed = phonenumbers.parse(dialed, "RU")
            if not phonenumbers.is_valid_number(parsed):
                continue
            assert RU.normalize(dialed).e164 == e164, dialed
            checked += 1
    assert checked > 400
