"""The settings of ``pbxcore serve``: a TOML file, ``PBXCORE_*`` variables and flags.

:class:`ServeSettings` is the one list of settings: each field is a key of the file, a
variable of the environment and a flag of the command, with one default, one help text
and one check. A flag wins over the environment, which wins over the file::

    settings = load_settings(Path("pbx.toml"), os.environ, {"rtp_ports": "30000-40000"})

In the file a setting is a top-level key (``rtp_ports = "20000-30000"``) or a key of the
table named by its first word (``[rtp] ports = ...``, ``[smtp] host = ...``); in the
environment it is ``PBXCORE_`` and its name in capitals (``PBXCORE_RTP_PORTS``; a list is
comma-separated); as a flag, its name with dashes (``--rtp-ports``). A bad value raises
:class:`ConfigError`, one line that names the setting where it was given and what is
allowed.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import socket
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "ServeSettings", "load_settings", "primary_address", "setting_help"]

ENV_PREFIX = "PBXCORE_"
WILDCARDS = ("0.0.0.0", "::")  # the names of "every address"


class ConfigError(ValueError):
    """A setting with a bad value or an unknown name; the message is one line."""


# -- checks: each returns the value (normalised) or raises ValueError(what is allowed) ------


def _at_least(low: float) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value < low:
            raise ValueError(f"must be at least {low:g}, got {value!r}")
        return value

    return check


def _positive(value: Any) -> Any:
    if not value > 0:
        raise ValueError(f"must be more than 0, got {value!r}")
    return value


def _one_of(*allowed: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        text = str(value).lower()
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {value!r}")
        return text

    return check


def _port_range(value: Any) -> Any:
    low, sep, high = str(value).partition("-")
    if not (sep and low.isdigit() and high.isdigit() and 0 < int(low) < int(high) < 65536):
        raise ValueError(f"must be LOW-HIGH with 1 <= LOW < HIGH <= 65535, got {value!r}")
    return f"{int(low)}-{int(high)}"


def _host_port(value: Any) -> Any:
    if str(value).lower() in ("off", "none", ""):
        return "off"
    host, sep, port = str(value).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must be HOST:PORT (IPv6 in brackets) or off, got {value!r}")
    return value


def _listen_points(value: Any) -> Any:
    from pbxcore.sip.transport import ListenAddress  # noqa: PLC0415 - keep this module light

    if not value:
        raise ValueError("needs at least one listening point")
    for spec in value:
        ListenAddress.parse(spec)  # its ValueError names the bad one
    return value


def _ip_address(value: Any) -> Any:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ValueError(f"must be an IP address, got {value!r}") from None


def _setting(
    default: Any,
    help: str,
    *,
    check: Callable[[Any], Any] | None = None,
    flags: tuple[str, ...] = (),
    cli: bool = True,
) -> Any:
    """A field of :class:`ServeSettings`; ``flags`` are extra flag names (old spellings),
    ``cli=False`` for a secret that never goes on a command line."""
    return field(
        default=default, metadata={"help": help, "check": check, "flags": flags, "cli": cli}
    )


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Every setting of ``pbxcore serve`` with its default (see the module docstring)."""

    config: Path | None = _setting(None, "TOML settings file (flags and PBXCORE_* win over it).")
    db: str | None = _setting(
        None,
        "Database URL: sqlite:///path or postgresql://user:pass@host/db; migrations run at "
        "start (default: sqlite in --data-dir, unless only --users is given).",
    )
    data_dir: Path = _setting(
        Path("pbxcore-data"), "Directory of the default SQLite file and the secret key file."
    )
    users: Path | None = _setting(
        None,
        "TOML users file (users tables: domain, username, password). Alone it is the "
        "registrar; beside a database it serves the realms that are not tenants.",
    )
    sip_listen: tuple[str, ...] = _setting(
        ("0.0.0.0:5060",),
        "SIP listening point HOST:PORT, optionally prefixed udp:, tcp: or tls: (no prefix: "
        "UDP and TCP); IPv6 in brackets: [::1]:5060. Repeatable.",
        check=_listen_points,
    )
    api_listen: str = _setting(
        "127.0.0.1:8080",
        "Admin API listening point HOST:PORT (off: no API); needs a database.",
        check=_host_port,
    )
    media_bind: str | None = _setting(
        None, "Address the RTP relay binds (default: the first SIP address).", check=_ip_address
    )
    media_address: str | None = _setting(
        None,
        "Address written into SDP (NAT) (default: the RTP bind address, or the host's "
        "primary address when that is a wildcard).",
        check=_ip_address,
        flags=("--media-advertise",),
    )
    rtp_ports: str = _setting("20000-30000", "RTP port range LOW-HIGH.", check=_port_range)
    rtp_timeout: float = _setting(
        60.0, "Seconds without RTP after which a call is ended (0: never).", check=_at_least(0)
    )
    cps_per_extension: float = _setting(
        5.0, "New calls a second one extension may start (0: no cap).", check=_at_least(0)
    )
    cps_per_tenant: float = _setting(
        50.0, "New calls a second one tenant may start (0: no cap).", check=_at_least(0)
    )
    max_calls: int = _setting(
        0, "Calls this node carries at once; beyond, 503 (0: no cap).", check=_at_least(0)
    )
    shutdown_grace: float = _setting(
        30.0,
        "Seconds the calls in progress may go on after SIGTERM/SIGINT before they get BYE "
        "(new calls get 503 at once; a second signal ends the wait).",
        check=_at_least(0),
    )
    node_id: str | None = _setting(
        None, "This node's name in CDRs (unique per node) (default: the host name)."
    )
    smtp_host: str | None = _setting(
        None, "SMTP server for mail (welcome mail ...); without it mail waits in the outbox."
    )
    smtp_port: int | None = _setting(
        None, "SMTP port (default: 25, or 465 with smtp security tls).", check=_at_least(1)
    )
    smtp_security: str | None = _setting(
        None,
        "SMTP security: none, starttls or tls (implicit TLS) (default: starttls).",
        check=_one_of("none", "starttls", "tls"),
    )
    smtp_starttls: bool | None = _setting(
        None,
        "SMTP STARTTLS on or off (the file's [smtp] starttls; same as security).",
    )
    smtp_username: str | None = _setting(None, "SMTP AUTH username.")
    smtp_password: str | None = _setting(
        None, "SMTP AUTH password (file or environment only).", cli=False
    )
    smtp_password_file: Path | None = _setting(
        None, "File holding the SMTP AUTH password (never on the command line)."
    )
    smtp_from: str = _setting(
        "pbxcore@localhost", "Sender address of the platform's mail.", flags=("--mail-from",)
    )
    tls_cert: Path | None = _setting(None, "TLS certificate (PEM) for tls: listening points.")
    tls_key: Path | None = _setting(None, "TLS private key (PEM).")
    min_expires: int = _setting(60, "Shortest registration (423 below).", check=_at_least(1))
    max_expires: int = _setting(3600, "Longest registration granted.", check=_at_least(1))
    default_expires: int = _setting(3600, "Expiry when none is asked.", check=_at_least(1))
    nonce_ttl: float = _setting(300.0, "Digest nonce lifetime, seconds.", check=_positive)
    rate_limit: float = _setting(
        500.0,
        "Messages per second per source IP (0: no per-source limit at all).",
        check=_at_least(0),
    )
    rate_burst: float = _setting(1000.0, "Burst allowance per source IP.", check=_at_least(1))
    rate_bytes: float = _setting(
        2_000_000.0,
        "Bytes per second per source IP, counted before parsing: datagrams over it are "
        "dropped, TCP/TLS reading pauses (0: bytes not limited).",
        check=_at_least(0),
    )
    rate_bytes_burst: float = _setting(
        4_000_000.0,
        "Byte burst allowance per source IP (at least 65535, one message).",
        check=_at_least(65535),
    )
    max_connections: int = _setting(
        10_000,
        "Open TCP/TLS connections in total; the open-file limit is raised to its hard "
        "maximum at start and this is lowered to fit in it. Refusals are logged.",
        check=_at_least(1),
    )
    max_connections_per_ip: int = _setting(
        64, "Open TCP/TLS connections from one source IP.", check=_at_least(1)
    )
    message_timeout: float = _setting(
        30.0,
        "Seconds a TCP/TLS message may take from its first byte to its last (later bytes "
        "do not extend it); then the connection is closed.",
        check=_positive,
    )
    idle_timeout: float = _setting(
        900.0,
        "Seconds a TCP/TLS connection stays open without a complete message, keepalive or "
        "response.",
        check=_positive,
    )
    guard_failures: int = _setting(
        10,
        "Failed logins from one IP before it is banned, or for one user before the IPs "
        "that failed for it are refused for it (others still may log in; 0: off).",
        check=_at_least(0),
    )
    guard_window: float = _setting(60.0, "Window for counting failures, s.", check=_at_least(0))
    guard_ban: float = _setting(600.0, "Ban duration, seconds.", check=_at_least(0))
    guard_action: str = _setting(
        "reject",
        "What a banned source gets: reject (403) or drop.",
        check=_one_of("reject", "drop"),
    )
    t1: float = _setting(0.5, "SIP timer T1, seconds.", check=_positive)
    t2: float = _setting(4.0, "SIP timer T2, seconds.", check=_positive)
    t4: float = _setting(5.0, "SIP timer T4, seconds.", check=_positive)
    uvloop: bool = _setting(True, "Use uvloop when it is installed.")
    log_level: str = _setting(
        "info", "debug, info, warning or error.", check=_one_of("debug", "info", "warning", "error")
    )
    log_format: str = _setting(
        "text",
        "text, or json: one JSON object a line (with call_id).",
        check=_one_of("text", "json"),
    )

    # -- what the settings mean together -------------------------------------------------

    @property
    def database_url(self) -> str | None:
        """The database to use: ``db``, else SQLite in ``data_dir`` unless a users file
        alone is given (the registrar without a database, as before there was one)."""
        if self.db is not None:
            return self.db
        if self.users is not None:
            return None
        return f"sqlite:///{self.data_dir / 'pbxcore.db'}"

    @property
    def rtp_range(self) -> tuple[int, int]:
        low, _, high = self.rtp_ports.partition("-")
        return int(low), int(high)

    def smtp_table(self) -> dict[str, Any] | None:
        """The ``[smtp]`` settings as :meth:`SmtpSettings.from_mapping` takes them; None
        without a host (mail then waits in the outbox)."""
        if self.smtp_host is None:
            return None
        table: dict[str, Any] = {"host": self.smtp_host, "from": self.smtp_from}
        security = self.smtp_security
        if self.smtp_starttls is not None:
            implied = "starttls" if self.smtp_starttls else "none"
            if security is not None and security not in (implied, "tls"):
                raise ConfigError(
                    f"smtp starttls = {str(self.smtp_starttls).lower()} contradicts "
                    f"smtp security = {security}"
                )
            security = security or implied
        table["security"] = security or "starttls"
        for key in ("port", "username", "password", "password_file"):
            value = getattr(self, f"smtp_{key}")
            if value is not None:
                table[key] = str(value) if key == "password_file" else value
        return table


_FIELDS = {f.name: f for f in fields(ServeSettings)}
_TYPES = typing.get_type_hints(ServeSettings)


def base_type(name: str) -> Any:
    """The type of setting ``name`` without its ``| None``: str, int, float, bool, Path,
    or tuple (a list of strings)."""
    hint = _TYPES[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return tuple
    return args[0] if args and typing.get_origin(hint) is not None else hint


def setting_help(name: str) -> str:
    return str(_FIELDS[name].metadata["help"])


def setting_flags(name: str) -> tuple[str, ...]:
    """The flag names of setting ``name``, the first one the main one; () for none."""
    meta = _FIELDS[name].metadata
    if not meta["cli"]:
        return ()
    return ("--" + name.replace("_", "-"), *meta["flags"])


def cli_settings() -> list[str]:
    """The settings that have a flag, in the order of :class:`ServeSettings`."""
    return [name for name in _FIELDS if setting_flags(name)]


# -- loading -------------------------------------------------------------------------------


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _from_text(name: str, text: str) -> Any:
    """An environment variable's text as the setting's type."""
    kind = base_type(name)
    if kind is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if kind is bool:
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise ValueError(f"must be true or false, got {text!r}")
    return _coerce(name, text.strip())


def _coerce(name: str, value: Any) -> Any:
    """``value`` (from the file, or text) as the setting's type, or a ValueError."""
    kind = base_type(name)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
        return value
    if kind is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"must be a list of strings, got {value!r}")
        return tuple(value)
    if kind is int:
        if isinstance(value, bool):
            raise ValueError(f"must be a whole number, got {value!r}")
        try:
            return int(value) if isinstance(value, int) else int(str(value), 10)
        except ValueError:
            raise ValueError(f"must be a whole number, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(f"must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {value!r}")
        return number
    if kind is Path and isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return Path(value) if kind is Path else value


def _file_values(path: Path) -> dict[str, Any]:
    """The settings of a TOML file, by name; a :class:`ConfigError` for an unreadable
    file, bad TOML or an unknown key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, item in value.items():
                values[_known(path, f"{key}_{sub}", f"[{key}] {sub}")] = (f"[{key}] {sub}", item)
        else:
            values[_known(path, key, key)] = (key, value)
    return values


def _known(path: Path, name: str, shown: str) -> str:
    name = name.replace("-", "_")
    if name in _FIELDS and name != "config":
        return name
    close = difflib.get_close_matches(name, list(_FIELDS), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"{path}: {shown}: not a setting of pbxcore serve{hint}")


def load_settings(
    file: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any],
) -> ServeSettings:
    """The settings from ``file`` (None: ``PBXCORE_CONFIG`` or none), the ``PBXCORE_*``
    variables of ``env`` and the ``flags`` that were given (None: not given)."""
    if file is None and env.get(ENV_PREFIX + "CONFIG"):
        file = Path(env[ENV_PREFIX + "CONFIG"])
    from_file = _file_values(file) if file is not None else {}
    chosen: dict[str, Any] = {}
    for name in _FIELDS:
        if name == "config":
            chosen[name] = file
            continue
        variable = ENV_PREFIX + name.upper()
        flag = flags.get(name)
        try:
            if flag is not None:
                where = setting_flags(name)[0] if setting_flags(name) else name
                value = _coerce(name, list(flag) if base_type(name) is tuple else flag)
            elif env.get(variable) is not None:
                where = variable
                value = _from_text(name, env[variable])
            elif name in from_file:
                shown, raw = from_file[name]
                where = f"{file}: {shown}"
                value = _coerce(name, raw)
            else:
                continue
            check = _FIELDS[name].metadata["check"]
            chosen[name] = check(value) if check is not None else value
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    settings = ServeSettings(**chosen)
    if settings.smtp_password is not None and settings.smtp_password_file is not None:
        raise ConfigError("smtp password and smtp password_file: give one of them")
    return settings


def default_of(name: str) -> Any:
    f = _FIELDS[name]
    return None if f.default is MISSING else f.default


def primary_address(family: socket.AddressFamily = socket.AF_INET) -> str:
    """The address this host uses toward the outside (the route to a documentation
    address; no packet is sent), loopback when there is no such route."""
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((probe, 9))
            return str(sock.getsockname()[0])
        except OSError:
            return "::1" if family == socket.AF_INET6 else "127.0.0.1"
