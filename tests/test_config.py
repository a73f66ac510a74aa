"""``pbxcore serve``'s settings: a TOML file, PBXCORE_* variables and flags, in that order
of strength; a bad or unknown setting is one line naming where it was given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pbxcore.cli import app
from pbxcore.config import ConfigError, ServeSettings, base_type, load_settings
from pbxcore.tenancy.outbox import SmtpSettings


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pbx.toml"
    path.write_text(text)
    return path


def test_defaults_work_on_a_laptop() -> None:
    s = load_settings(None, {}, {})
    assert s.sip_listen == ("0.0.0.0:5060",)
    assert s.api_listen == "127.0.0.1:8080"
    assert s.rtp_range == (20000, 30000)
    assert s.database_url == "sqlite:///pbxcore-data/pbxcore.db"
    assert s.smtp_table() is None
    # a users file alone is the registrar without a database, as before
    assert load_settings(None, {}, {"users": Path("u.toml")}).database_url is None


def test_a_flag_wins_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        'rtp_ports = "30000-31000"\nmax_calls = 7\nsip_listen = ["127.0.0.1:5070"]\n'
        "[guard]\nfailures = 3\n",
    )
    only_file = load_settings(path, {}, {})
    assert only_file.rtp_range == (30000, 31000)
    assert only_file.max_calls == 7 and only_file.guard_failures == 3
    assert only_file.sip_listen == ("127.0.0.1:5070",)
    env = {
        "PBXCORE_RTP_PORTS": "32000-33000",
        "PBXCORE_SIP_LISTEN": "udp:[::1]:5080, tcp:[::1]:5080",
    }
    with_env = load_settings(path, env, {})
    assert with_env.rtp_range == (32000, 33000) and with_env.max_calls == 7
    assert with_env.sip_listen == ("udp:[::1]:5080", "tcp:[::1]:5080")
    with_flag = load_settings(path, env, {"rtp_ports": "34000-35000", "max_calls": None})
    assert with_flag.rtp_range == (34000, 35000) and with_flag.max_calls == 7
    # the file named by PBXCORE_CONFIG when no --config is given
    assert load_settings(None, {"PBXCORE_CONFIG": str(path)}, {}).max_calls == 7


def test_the_smtp_table_of_the_file_and_its_variables(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        '[smtp]\nhost = "mx.test"\nport = 587\nstarttls = true\nusername = "u"\n'
        'password = "file-pw"\nfrom = "PBX <noreply@voip.test>"\n',
    )
    s = load_settings(path, {"PBXCORE_SMTP_PASSWORD": "env-pw"}, {})
    table = s.smtp_table()
    assert table is not None
    smtp = SmtpSettings.from_mapping(table)
    assert (smtp.host, smtp.port, smtp.security) == ("mx.test", 587, "starttls")
    assert smtp.username == "u" and smtp.password == "env-pw"
    assert smtp.sender == "PBX <noreply@voip.test>"
    plain = load_settings(None, {"PBXCORE_SMTP_HOST": "mx", "PBXCORE_SMTP_STARTTLS": "off"}, {})
    assert plain.smtp_table() == {"host": "mx", "from": "pbxcore@localhost", "security": "none"}
    with pytest.raises(ConfigError, match="contradicts"):
        load_settings(
            None, {}, {"smtp_host": "mx", "smtp_starttls": False, "smtp_security": "starttls"}
        ).smtp_table()
    with pytest.raises(ConfigError, match="give one of them"):
        load_settings(None, {"PBXCORE_SMTP_PASSWORD": "x"}, {"smtp_password_file": Path("f")})


@pytest.mark.parametrize(
    ("text", "env", "flags", "message"),
    [
        ('rtp_ports = "5-2"\n', {}, {}, "pbx.toml: rtp_ports: must be LOW-HIGH"),
        ("[rtp]\nports = 5\n", {}, {}, "pbx.toml: [rtp] ports: must be a string, got 5"),
        ("", {"PBXCORE_RTP_PORTS": "1-99999"}, {}, "PBXCORE_RTP_PORTS: must be LOW-HIGH"),
        ("", {}, {"rtp_ports": "x"}, "--rtp-ports: must be LOW-HIGH"),
        ("max_calls = 1.5\n", {}, {}, "max_calls: must be a whole number"),
        ("max_calls = true\n", {}, {}, "max_calls: must be a whole number"),
        ("", {"PBXCORE_MAX_CALLS": "ten"}, {}, "PBXCORE_MAX_CALLS: must be a whole number"),
        ("", {"PBXCORE_T1": "nan"}, {}, "PBXCORE_T1: must be a finite number"),
        ("", {"PBXCORE_UVLOOP": "maybe"}, {}, "PBXCORE_UVLOOP: must be true or false"),
        ('log_level = "loud"\n', {}, {}, "log_level: must be one of debug, info"),
        ('sip_listen = ["example.com:5060"]\n', {}, {}, "needs an IP address"),
        ("sip_listen = []\n", {}, {}, "sip_listen: needs at least one listening point"),
        ('api_listen = "8080"\n', {}, {}, "api_listen: must be HOST:PORT"),
        ('media_address = "nat.example"\n', {}, {}, "media_address: must be an IP address"),
        (
            "rtp_port = 1\n",
            {},
            {},
            "rtp_port: not a setting of pbxcore serve (did you mean rtp_ports?)",
        ),
        ("[smtp]\nhots = 1\n", {}, {}, "[smtp] hots: not a setting"),
        ("config = 1\n", {}, {}, "config: not a setting"),
        ("rtp_ports = [\n", {}, {}, "not valid TOML"),
    ],
)
def test_a_bad_setting_is_one_line_naming_where_it_was_given(
    tmp_path: Path, text: str, env: dict[str, str], flags: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(_file(tmp_path, text), env, flags)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"none\.toml: cannot read"):
        load_settings(tmp_path / "none.toml", {}, {})


_NAMES = [n for n in ServeSettings.__dataclass_fields__ if n != "config"]


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(_NAMES), text=st.text(max_size=30))
def test_any_environment_value_loads_or_is_a_config_error(name: str, text: str) -> None:
    if "\x00" in text:
        return  # not a possible environment value
    try:
        s = load_settings(None, {f"PBXCORE_{name.upper()}": text}, {})
    except ConfigError as exc:
        assert f"PBXCORE_{name.upper()}" in str(exc)
        return
    value = getattr(s, name)
    kind = base_type(name)
    assert value is None or isinstance(value, kind if kind is not float else (int, float))


_TOML_VALUES = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.booleans().map(lambda b: str(b).lower()),
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20
    ).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.just('["127.0.0.1:5060"]'),
    st.just("[1, 2]"),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(_NAMES), value=_TOML_VALUES)
def test_any_file_value_loads_or_is_a_config_error(tmp_path: Path, name: str, value: str) -> None:
    path = _file(tmp_path, f"{name} = {value}\n")
    try:
        load_settings(path, {}, {})
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: {name}: ")


def test_serve_stops_on_a_bad_config_file_with_one_line(tmp_path: Path) -> None:
    path = _file(tmp_path, "[sip]\nlisten = 5060\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"pbxcore serve: {path}: [sip] listen: must be a list of strings, got 5060"
    ]
    env = CliRunner().invoke(app, ["serve"], env={"PBXCORE_SHUTDOWN_GRACE": "-1"})
    assert env.exit_code == 2
    assert "PBXCORE_SHUTDOWN_GRACE: must be at least 0" in env.output
