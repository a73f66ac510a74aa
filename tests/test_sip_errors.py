"""pbxcore.sip.errors: SipParseError carries the answer a server should send."""

from __future__ import annotations

import pytest

from pbxcore.sip import SipParseError


def test_is_a_value_error_with_status_and_reason() -> None:
    err = SipParseError("missing Call-ID header")
    assert isinstance(err, ValueError)
    assert (err.status, err.reason, err.unsupported) == (400, "missing Call-ID header", ())
    assert str(err) == "400: missing Call-ID header"


def test_drop_has_no_status() -> None:
    err = SipParseError("bad status code", None)
    assert err.status is None and str(err) == "bad status code"


def test_unsupported_extensions() -> None:
    err = SipParseError("unsupported", 420, unsupported=["100rel", "timer"])
    assert err.unsupported == ("100rel", "timer")
    with pytest.raises(ValueError, match="420: unsupported"):
        raise err
