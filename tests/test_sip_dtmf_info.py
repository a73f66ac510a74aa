"""DTMF in SIP INFO bodies: both formats read, anything else a precise ValueError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxcore.sip.dtmf_info import DtmfInfo, parse_dtmf_info


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", DtmfInfo("5", 160)),
        (
            "Application/DTMF-Relay; charset=us-ascii",
            b"signal= #\nduration=250",
            DtmfInfo("#", 250),
        ),
        ("application/dtmf-relay", b"Signal=10\r\n", DtmfInfo("*", 100)),
        ("application/dtmf-relay", b"Signal=11\r\nDuration=90", DtmfInfo("#", 90)),
        ("application/dtmf-relay", b"Signal=a", DtmfInfo("A", 100)),
        ("application/dtmf", b"7", DtmfInfo("7", 100)),
        ("application/dtmf", b" * \r\n", DtmfInfo("*", 100)),
    ],
)
def test_both_formats(content_type: str, body: bytes, expected: DtmfInfo) -> None:
    assert parse_dtmf_info(content_type, body) == expected


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/sdp", b"Signal=1", "carries no DTMF"),
        ("application/dtmf-relay", b"Duration=100", "needs a Signal= line"),
        ("application/dtmf-relay", b"Signal=12", "is not a DTMF key"),
        ("application/dtmf-relay", b"Signal=1\nDuration=-5", "is not a number of ms"),
        ("application/dtmf-relay", b"Signal=1\nDuration=99999999", "is not a number of ms"),
        ("application/dtmf-relay", "Signal=١".encode(), "ASCII"),
        ("application/dtmf", b"12", "is not a DTMF key"),
        ("application/dtmf-relay", b"Signal=1\n" * 200, "too long"),
    ],
)
def test_bad_bodies(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_dtmf_info(content_type, body)


@given(
    content_type=st.sampled_from(["application/dtmf-relay", "application/dtmf", "x/y"]),
    body=st.binary(max_size=200),
)
def test_any_body_is_a_key_or_a_value_error(content_type: str, body: bytes) -> None:
    try:
        info = parse_dtmf_info(content_type, body)
    except ValueError:
        return
    assert (
        info.digit in "0123456789*#ABCD" and len(info.digit) == 1 and 0 < info.duration_ms < 60_000
    )
