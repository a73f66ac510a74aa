"""The test infrastructure itself: the digest helper, the port retry, CI's skip policy."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from tests.helpers import (
    PortTakenError,
    digest_ha1,
    digest_response,
    retry_on_taken_port,
)

# RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256
RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "qop": "auth",
}


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_digest_response_is_rfc7616s_example(algorithm: str, response: str) -> None:
    assert digest_response(algorithm, **RFC7616) == response


def test_digest_response_rfc2617_md5_example() -> None:
    # RFC 2617 §3.5 (the formula RFC 3261 uses): another realm, password and nonce
    assert digest_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life") == (
        hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
    )
    got = digest_response(
        "MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093", nc="00000001", cnonce="0a4f113b",
    )  # fmt: skip
    assert got == "6629fae49393a05397450978507c4ef1"


def test_retry_on_taken_port_runs_again_then_fails_precisely() -> None:
    runs: list[int] = []

    def twice_taken() -> str:
        runs.append(len(runs))
        if len(runs) < 3:
            raise PortTakenError(f"127.0.0.1:{20000 + len(runs)}")
        return "done"

    assert retry_on_taken_port(twice_taken) == "done"
    assert runs == [0, 1, 2]

    def always_taken() -> None:
        raise PortTakenError("127.0.0.1:20000")

    with pytest.raises(pytest.fail.Exception, match="taken on each of 3 attempts"):
        retry_on_taken_port(always_taken, attempts=3)

    def broken() -> None:
        raise AssertionError("not a port problem")

    with pytest.raises(AssertionError, match="not a port problem"):
        retry_on_taken_port(broken)


# ---------------------------------------------------------------- skip policy (conftest.py)

SKIPPING_TESTS = """
import pytest

def test_runtime_skip():
    pytest.skip("no IPv6 loopback")

@pytest.mark.skipif(True, reason="audioop left the stdlib")
def test_marked_skip():
    pass

@pytest.fixture
def needs_port():
    pytest.skip("the peer's port was taken meanwhile")

def test_fixture_skip(needs_port):
    pass

def test_allowed_skip():
    pytest.skip("allowed: a documented reason")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_xfail():
    assert False

def test_passes():
    pass
"""

MODULE_SKIP = """
import pytest
pytest.skip("whole module", allow_module_level=True)

def test_never():
    pass
"""


@pytest.fixture
def policy_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(
        """
import tests.conftest as policy
from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport

policy.ALLOWED_SKIPS = (("^allowed: ", "for this test of the policy"),)
"""
    )
    pytester.makepyfile(test_skips=SKIPPING_TESTS, test_module_skip=MODULE_SKIP)
    return pytester


@pytest.fixture
def restore_allow_list() -> Iterator[None]:
    import tests.conftest as policy  # noqa: PLC0415

    saved = policy.ALLOWED_SKIPS
    yield
    policy.ALLOWED_SKIPS = saved


@pytest.mark.usefixtures("restore_allow_list")
def test_skips_fail_under_pbx_require_peers(
    policy_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PBX_REQUIRE_PEERS", "1")
    result = policy_project.runpytest(
        "-rA", "-p", "no:cacheprovider", "--continue-on-collection-errors"
    )
    # a skip in the call fails the test; one in setup (a skipif mark, a fixture) or in
    # collection (a module-level skip) is an error: either way CI's pytest exits non-zero
    result.assert_outcomes(passed=1, failed=1, skipped=1, xfailed=1, errors=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    why = "skipped under PBX_REQUIRE_PEERS=1, and not on ALLOWED_SKIPS in tests/conftest.py: "
    out = result.stdout.str()
    for reason in (
        "no IPv6 loopback",
        "audioop left the stdlib",
        "the peer's port was taken meanwhile",
        "whole module",
    ):
        assert why + reason in out
    assert "SKIPPED [1] test_skips.py:18: allowed: a documented reason" in out


@pytest.mark.usefixtures("restore_allow_list")
@pytest.mark.parametrize("value", [None, "", "0"])
def test_skips_stay_skips_without_the_variable(
    policy_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("PBX_REQUIRE_PEERS", raising=False)
    else:
        monkeypatch.setenv("PBX_REQUIRE_PEERS", value)
    result = policy_project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
