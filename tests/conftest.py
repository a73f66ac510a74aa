"""Shared fixtures, and the skip policy of CI.

Under ``PBX_REQUIRE_PEERS=1`` (set by .ci/run) a skipped test is a failure, whatever made it
skip (a missing peer, no IPv6 loopback, no 127.0.0.2, a Python version ...), unless its
reason matches an entry of ``ALLOWED_SKIPS``. Without the variable, skips stay skips.
"""

from __future__ import annotations

import re
from collections.abc import Generator

import pytest

from tests.helpers import peers_required

# pytester: tests/test_helpers.py runs the skip policy in a pytest; api_fixtures: db, api
pytest_plugins = ["pytester", "tests.api_fixtures"]

# (reason pattern, why CI may skip it). Keep this short: every entry is a test CI never runs.
# Empty today: the suite has no skip that is right on the CI machine (Debian, IPv6 loopback,
# all of 127/8, the peers of .ci/apt-packages.txt, audioop or audioop-lts on any Python).
ALLOWED_SKIPS: tuple[tuple[str, str], ...] = ()


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped report gives ("no IPv6 loopback"), without pytest's prefix."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def skip_allowed(reason: str) -> bool:
    return any(re.search(pattern, reason) for pattern, _why in ALLOWED_SKIPS)


def _enforce(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail") or not peers_required():
        return
    reason = skip_reason(report)
    if skip_allowed(reason):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under PBX_REQUIRE_PEERS=1, and not on ALLOWED_SKIPS in tests/conftest.py: "
        f"{reason}"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _enforce(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield  # a module-level pytest.skip() or importorskip()
    _enforce(report)
    return report
