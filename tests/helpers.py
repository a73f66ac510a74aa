"""Helpers shared by the test modules (import as `from tests.helpers import ...`)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# conformance data and vectors copied into the project (sources: tests/data/SOURCES.md)
TESTDATA = REPO / "tests" / "data"
PEERS = REPO / "tests" / "peers"


def require_binary(name: str) -> str:
    """Path of an external peer program; skip if absent, or fail when CI demands peers."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (apt-get install it: .ci/apt-packages.txt)"
        if os.environ.get("PBX_REQUIRE_PEERS"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require_testdata(*parts: str) -> Path:
    path = TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"conformance data missing: {path}")
    return path


def pbxcore_command() -> list[str]:
    """The installed ``pbxcore`` console script of the running interpreter's environment."""
    beside = Path(sys.executable).with_name("pbxcore")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("pbxcore")
    if found is None:
        pytest.fail("the pbxcore console script is not installed")
    return [found]
