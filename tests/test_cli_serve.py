"""`pbxcore serve` option handling (the running server is exercised in test_interop_sip)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pbxcore.cli_serve import serve

app = typer.Typer()
app.command("serve")(serve)
app.command("other")(lambda: None)  # two commands: "serve" is a subcommand, as in pbxcore


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users.toml"
    path.write_text('[[users]]\ndomain = "pbx.test"\nusername = "alice"\npassword = "pw"\n')
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sip-listen", "example.com:5060"], "needs an IP address"),
        (["--sip-listen", "tls:127.0.0.1:0"], "needs --tls-cert and --tls-key"),
        (["--tls-cert", "/nonexistent.pem"], "go together"),
        (["--min-expires", "100", "--default-expires", "50"], "min_expires"),
        (["--guard-window", "0"], "positive"),
        (["--t1", "10"], "T1"),
    ],
)
def test_serve_rejects_bad_options(users: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--users", str(users), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_serve_rejects_bad_users_file(tmp_path: Path) -> None:
    bad = tmp_path / "users.toml"
    bad.write_text('[[users]]\ndomain = "pbx.test"\n')
    result = CliRunner().invoke(app, ["serve", "--users", str(bad)])
    assert result.exit_code == 2 and "users[0]" in result.output
    missing = CliRunner().invoke(app, ["serve", "--users", str(tmp_path / "none.toml")])
    assert missing.exit_code == 2 and "No such file" in missing.output
