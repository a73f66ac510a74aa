"""Number formats for trunks and caller-ID rules."""

from __future__ import annotations

import json
from typing import Any

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore.routing import (
    RUSSIA,
    CallerId,
    CallerIdRule,
    Country,
    DialPlan,
    calling_code,
    format_number,
    is_e164,
)
from pbxcore.routing.numbers import CALLING_CODES


class TestFormatNumber:
    @pytest.mark.parametrize(
        ("fmt", "domestic", "foreign"),
        [
            ("e164", "+74951234567", "+49301234567"),
            ("e164_digits", "74951234567", "49301234567"),
            ("national", "84951234567", "81049301234567"),
            ("international_00", "0074951234567", "0049301234567"),
        ],
    )
    def test_formats(self, fmt: Any, domestic: str, foreign: str) -> None:
        assert format_number("+74951234567", fmt) == domestic
        assert format_number("+49301234567", fmt) == foreign

    def test_national_of_another_country(self) -> None:
        germany = Country(code="49", trunk_prefix="0", international_prefix="00")
        assert format_number("+49301234567", "national", country=germany) == "0301234567"
        assert format_number("+74951234567", "national", country=germany) == "0074951234567"

    @pytest.mark.parametrize(
        "number", ["74951234567", "+0123456789", "+123456", "+1234567890123456", "+7 495", "", "+"]
    )
    def test_rejects_non_e164(self, number: str) -> None:
        with pytest.raises(ValueError, match=r"not E\.164"):
            format_number(number, "e164")

    def test_rejects_unknown_format_and_types(self) -> None:
        with pytest.raises(ValueError, match="unknown number format"):
            format_number("+74951234567", "local")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            format_number(74951234567, "e164")  # type: ignore[arg-type]

    def test_country_validation(self) -> None:
        with pytest.raises(ValueError, match="code"):
            Country(code="+7", trunk_prefix="8", international_prefix="810")
        assert Country("7", "8", "810") == RUSSIA


def test_is_e164() -> None:
    assert is_e164("+74951234567")
    assert is_e164("+1234567")
    assert is_e164("+123456789012345")
    assert not is_e164("+123456")
    assert not is_e164("+1234567890123456")
    assert not is_e164("+04951234567")
    assert not is_e164("74951234567")
    assert not is_e164("+7495123456a")


class TestCallingCodes:
    def test_lookup(self) -> None:
        assert calling_code("RU") == "7"
        assert calling_code("de") == "49"
        assert calling_code("KZ") == "7"
        with pytest.raises(ValueError, match="unknown country"):
            calling_code("XX")

    def test_table_agrees_with_phonenumbers(self) -> None:
        regions = phonenumbers.SUPPORTED_REGIONS
        assert set(CALLING_CODES) == set(regions)
        for region in regions:
            assert CALLING_CODES[region] == str(phonenumbers.country_code_for_region(region))


class TestCallerId:
    def test_pass_presents_the_caller(self) -> None:
        rule = CallerIdRule(mode="pass", format="national")
        assert rule.apply("+74951234567") == CallerId("84951234567", False)

    def test_pass_uses_the_did_for_an_extension(self) -> None:
        rule = CallerIdRule()
        assert rule.apply("101", did="+74957654321") == CallerId("+74957654321", False)
        with pytest.raises(ValueError, match="no DID"):
            rule.apply("101")

    def test_fixed(self) -> None:
        rule = CallerIdRule(mode="fixed", fixed_number="+78001234567", format="e164_digits")
        assert rule.apply("+74951234567", did="+74957654321") == CallerId("78001234567", False)
        with pytest.raises(ValueError, match="fixed_number"):
            CallerIdRule(mode="fixed")
        with pytest.raises(ValueError, match=r"not E\.164"):
            CallerIdRule(mode="fixed", fixed_number="84951234567")

    def test_from_did(self) -> None:
        rule = CallerIdRule(mode="from_did", format="international_00")
        assert rule.apply("101", did="+74957654321") == CallerId("0074957654321", False)
        with pytest.raises(ValueError, match="needs the tenant's DID"):
            rule.apply("101")
        with pytest.raises(ValueError, match=r"DID .123. is not E\.164"):
            rule.apply("101", did="123")

    def test_presentation_restricted(self) -> None:
        assert CallerIdRule(restricted=True).apply("+74951234567").restricted
        assert CallerIdRule().apply("+74951234567", restricted=True).restricted
        assert not CallerIdRule().apply("+74951234567").restricted
        # the number is still there for P-Asserted-Identity
        assert CallerIdRule(restricted=True).apply("+74951234567").number == "+74951234567"

    def test_from_mapping_and_json(self) -> None:
        rule = CallerIdRule.from_mapping(
            {"mode": "fixed", "fixed_number": "+74950000000", "format": "national"}
        )
        assert rule == CallerIdRule("fixed", "+74950000000", "national", False)
        got = rule.apply("101").to_json()
        assert json.loads(json.dumps(got)) == {"number": "84950000000", "restricted": False}

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"mode": "random"}, ValueError),
            ({"format": "local"}, ValueError),
            ({"restricted": "yes"}, TypeError),
        ],
    )
    def test_validation(self, kwargs: dict[str, Any], error: type[Exception]) -> None:
        with pytest.raises(error):
            CallerIdRule(**kwargs)


PLAN = DialPlan.russia()
FORMATS = ["e164", "e164_digits", "national", "international_00"]

domestic = st.builds(
    lambda first, rest: f"+7{first}{rest}",
    st.sampled_from("3456789"),
    st.text("0123456789", min_size=9, max_size=9),
)
foreign = st.builds(
    lambda first, rest: f"+{first}{rest}",
    st.sampled_from("12345689"),
    st.text("0123456789", min_size=6, max_size=14),
)


@settings(max_examples=400, deadline=None)
@given(number=domestic, fmt=st.sampled_from(FORMATS))
def test_round_trip_domestic_every_format(number: str, fmt: Any) -> None:
    assert PLAN.normalize(format_number(number, fmt)).e164 == number


@settings(max_examples=400, deadline=None)
@given(number=foreign, fmt=st.sampled_from(["e164", "national", "international_00"]))
def test_round_trip_foreign(number: str, fmt: Any) -> None:
    # e164_digits of a foreign number has no prefix to tell it from a national one: a trunk
    # format, not something a Russian caller dials
    assert PLAN.normalize(format_number(number, fmt)).e164 == number
