"""RFC 4028 header rules: parsing, what a UAS answers, what a UAC runs after the 2xx."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxcore.sip.message import Request, Response
from pbxcore.sip.session_timer import (
    SessionTimer,
    SessionTimerPolicy,
    TooSmall,
    answer_invite,
    expiry_after,
    from_answer,
    parse_min_se,
    parse_session_expires,
)

POLICY = SessionTimerPolicy(interval=1800, min_se=90)


def invite(*headers: tuple[str, str]) -> Request:
    return Request(
        "INVITE",
        "sip:202@a.example",
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"),
            ("From", "<sip:201@a.example>;tag=1"),
            ("To", "<sip:202@a.example>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
            *headers,
        ],
    )


def ok(*headers: tuple[str, str]) -> Response:
    return Response(200, "OK", list(headers))


def test_parse() -> None:
    assert parse_session_expires("1800") == (1800, None)
    assert parse_session_expires("90 ; Refresher = UAS;x=1") == (90, "uas")
    assert parse_min_se("120;ext=1") == 120
    for bad in ("", "-5", "1.5", "abc;refresher=uac", "99999999999"):
        with pytest.raises(ValueError, match="Session-Expires"):
            parse_session_expires(bad)
    with pytest.raises(ValueError, match="refresher must be uac or uas"):
        parse_session_expires("1800;refresher=both")
    with pytest.raises(ValueError, match="Min-SE"):
        parse_min_se("x")


@given(st.text(max_size=60))
def test_any_header_text_parses_or_raises_value_error(text: str) -> None:
    try:
        seconds, refresher = parse_session_expires(text)
    except ValueError as exc:
        assert str(exc).startswith("Session-Expires")
    else:
        assert 0 <= seconds < 2**31 and refresher in (None, "uac", "uas")
    try:
        assert 0 <= parse_min_se(text) < 2**31
    except ValueError as exc:
        assert str(exc).startswith("Min-SE")


def test_a_uas_rejects_too_small_only_a_peer_that_can_retry() -> None:
    assert answer_invite(invite(("Supported", "timer"), ("Session-Expires", "60")), POLICY) == (
        TooSmall(90)
    )
    assert TooSmall(90).headers == [("Min-SE", "90")]
    # no Supported: timer (a proxy put it there): raised to our minimum, we refresh
    timer = answer_invite(invite(("Session-Expires", "60")), POLICY)
    assert timer == SessionTimer(90, we_refresh=True, peer_supports=False, min_se=90)


def test_a_uas_takes_the_asked_interval_and_refresher() -> None:
    timer = answer_invite(
        invite(("Supported", "timer"), ("Session-Expires", "600;refresher=uas")), POLICY
    )
    assert isinstance(timer, SessionTimer)
    assert (timer.interval, timer.we_refresh) == (600, True)
    assert timer.response_headers() == [
        ("Session-Expires", "600;refresher=uas"),
        ("Require", "timer"),
    ]
    assert timer.next_action == 300
    # more than ours: lowered to ours, never below the peer's Min-SE
    timer = answer_invite(
        invite(("Supported", "timer"), ("Session-Expires", "7200"), ("Min-SE", "3600")), POLICY
    )
    assert isinstance(timer, SessionTimer) and timer.interval == 3600
    assert not timer.we_refresh  # no refresher asked: the peer, which supports timers
    assert timer.next_action == expiry_after(3600) == 3568


def test_a_uas_starts_a_timer_when_none_was_asked() -> None:
    knows = answer_invite(invite(("Supported", "timer")), POLICY)
    assert knows == SessionTimer(1800, we_refresh=False, peer_supports=True, min_se=90)
    legacy = answer_invite(invite(), POLICY)
    assert isinstance(legacy, SessionTimer) and legacy.we_refresh
    assert legacy.response_headers() == [("Session-Expires", "1800;refresher=uas")]
    assert legacy.refresh_headers() == [
        ("Supported", "timer"),
        ("Session-Expires", "1800;refresher=uac"),  # we are the UAC of our refresh
        ("Min-SE", "90"),
    ]


def test_a_uac_runs_what_the_2xx_says() -> None:
    assert from_answer(ok(), POLICY) is None
    timer = from_answer(ok(("Session-Expires", "900;refresher=uac"), ("Require", "timer")), POLICY)
    assert timer is not None and timer.we_refresh and timer.interval == 900
    timer = from_answer(ok(("Session-Expires", "900;refresher=uas")), POLICY)
    assert timer is not None and not timer.we_refresh
    timer = from_answer(ok(("Session-Expires", "900")), POLICY)
    assert timer is not None and timer.we_refresh  # none named: the UAC
    with pytest.raises(ValueError):
        from_answer(ok(("Session-Expires", "later")), POLICY)


def test_policy_limits() -> None:
    with pytest.raises(ValueError, match="min_se must be at least 90"):
        SessionTimerPolicy(min_se=30)
    with pytest.raises(ValueError, match="interval must be between"):
        SessionTimerPolicy(interval=60)


def test_expiry_margin() -> None:
    assert expiry_after(90) == 60  # a third of a short interval
    assert expiry_after(1800) == 1768  # 32 s of a long one
