"""``pbxcore serve``: SIP, media, calls, the admin API and the mail outbox in one process.

Its flags are generated from :class:`pbxcore.config.ServeSettings`, the one list of
settings (also the keys of ``--config FILE`` and the ``PBXCORE_*`` variables).

Register it on the main typer app with ``app.command("serve")(serve)``; it also runs
alone as ``python -m pbxcore.cli_serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import inspect
import logging
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pbxcore.config import (
    WILDCARDS,
    ConfigError,
    ServeSettings,
    base_type,
    cli_settings,
    default_of,
    load_settings,
    primary_address,
    setting_flags,
    setting_help,
)
from pbxcore.logformat import configure_logging
from pbxcore.pbx.limits import CallRateLimits
from pbxcore.server import PbxServer, ServerConfig, parse_host_port
from pbxcore.sip.auth import DigestAuthenticator, NonceStore
from pbxcore.sip.credentials import CredentialStore, FileCredentialStore
from pbxcore.sip.guard import BruteForceGuard, GuardAction, GuardPolicy
from pbxcore.sip.location import MemoryLocationService
from pbxcore.sip.registrar import Registrar, RegistrarPolicy
from pbxcore.sip.server import SipServer
from pbxcore.sip.transaction import TimerSettings
from pbxcore.sip.transport import ListenAddress, RateLimit, TransportLimits
from pbxcore.tenancy.db import DatabaseUnavailableError
from pbxcore.tenancy.outbox import SmtpSettings

__all__ = ["build_server", "run_server", "serve"]

log = logging.getLogger("pbxcore.serve")


def serve(**flags: Any) -> None:
    """Run SIP, media, calls and the admin API until SIGINT or SIGTERM.

    Settings come from --config FILE (TOML), PBXCORE_* variables and these flags; a flag
    wins over the environment, which wins over the file.
    """
    try:
        settings = load_settings(flags.pop("config", None), os.environ, flags)
    except ConfigError as exc:
        typer.echo(f"pbxcore serve: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    try:
        server = build_server(settings)
    except (ValueError, OSError) as exc:
        typer.echo(f"pbxcore serve: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.uvloop)) as runner:
            runner.run(run_server(server, grace=settings.shutdown_grace))
    except (OSError, DatabaseUnavailableError, ValueError) as exc:
        typer.echo(f"pbxcore serve: {exc}", err=True)
        raise typer.Exit(1) from None


_METAVARS: dict[Any, str] = {int: "INTEGER", float: "NUMBER", Path: "PATH", tuple: "ADDRESS"}


def _cli_signature() -> inspect.Signature:
    """serve's parameters: one flag per setting of :class:`ServeSettings` (None: not
    given, so that the environment and the file can fill it)."""
    cli_types: dict[Any, Any] = {tuple: list[str]}
    parameters = []
    for name in cli_settings():
        names = setting_flags(name)
        kind = base_type(name)
        if kind is bool:
            names = (f"{names[0]}/--no-{names[0][2:]}",)
        text = setting_help(name).replace("[", "\\[")  # not rich markup
        default = default_of(name)
        if default is not None:
            shown = ", ".join(default) if isinstance(default, tuple) else str(default)
            text += f" \\[default: {shown}]"
        metavar = None if kind is bool else _METAVARS.get(kind, "TEXT")
        option = typer.Option(*names, help=text, show_default=False, metavar=metavar)
        optional: Any = Optional[cli_types.get(kind, kind)]  # noqa: UP045 - typer reads it
        annotation: Any = Annotated[optional, option]
        keyword = inspect.Parameter.KEYWORD_ONLY
        parameters.append(inspect.Parameter(name, keyword, default=None, annotation=annotation))
    return inspect.Signature(parameters)


serve.__signature__ = _cli_signature()  # type: ignore[attr-defined]
serve.__annotations__ = {p.name: p.annotation for p in serve.__signature__.parameters.values()}  # type: ignore[attr-defined]


def build_server(settings: ServeSettings) -> PbxServer:
    """The server the settings describe (nothing is bound yet); a ValueError names a
    setting that does not work with the others."""
    listen = [a for spec in settings.sip_listen for a in ListenAddress.parse(spec)]
    db = settings.database_url
    users = settings.users
    file_store = FileCredentialStore.from_toml(users) if users is not None else None
    if file_store is not None:
        log.info("%d users in %d domains from %s", len(file_store), len(file_store.realms), users)
    api = None
    if settings.api_listen != "off":
        if db is not None:
            api = parse_host_port(settings.api_listen)
        elif "api_listen" in _given(settings):
            raise ValueError("api_listen needs a database (db)")
    policy = RegistrarPolicy(
        min_expires=settings.min_expires,
        max_expires=settings.max_expires,
        default_expires=settings.default_expires,
    )
    guard = GuardPolicy(
        max_failures=settings.guard_failures,
        window=settings.guard_window,
        ban_time=settings.guard_ban,
        action=GuardAction(settings.guard_action),
    )
    timers = TimerSettings(t1=settings.t1, t2=settings.t2, t4=settings.t4)
    limit = (
        RateLimit(
            settings.rate_limit,
            settings.rate_burst,
            byte_rate=settings.rate_bytes,
            byte_burst=settings.rate_bytes_burst,
        )
        if settings.rate_limit > 0
        else None
    )
    limits = TransportLimits(
        max_connections=settings.max_connections,
        max_connections_per_source=settings.max_connections_per_ip,
        message_timeout=settings.message_timeout,
        idle_timeout=settings.idle_timeout,
    )
    context = _tls_context(settings.tls_cert, settings.tls_key, listen)

    def build_sip(credentials: CredentialStore) -> SipServer:
        registrar = Registrar(
            credentials,
            MemoryLocationService(),
            authenticator=DigestAuthenticator(credentials, NonceStore(ttl=settings.nonce_ttl)),
            guard=BruteForceGuard(guard),
            policy=policy,
        )
        return SipServer(
            registrar,
            listen=listen,
            timers=timers,
            rate_limit=limit,
            ssl_context=context,
            limits=limits,
        )

    build_sip(FileCredentialStore())  # check every SIP option now, before any database work
    table = settings.smtp_table()
    smtp = SmtpSettings.from_mapping(table) if table is not None else None
    if db is not None and db.startswith("sqlite:///") and settings.db is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # the default database's home
    media_bind = settings.media_bind or listen[0].host
    media_address = settings.media_address
    if media_address is None and media_bind in WILDCARDS:
        media_address = primary_address(socket.AF_INET6 if ":" in media_bind else socket.AF_INET)
    config = ServerConfig(
        db_url=db,
        api_listen=api,
        data_dir=settings.data_dir,
        users=file_store,
        smtp=smtp,
        media_bind=media_bind,
        media_advertise=media_address,
        rtp_ports=settings.rtp_range,
        rtp_timeout=settings.rtp_timeout if settings.rtp_timeout > 0 else None,
        call_rates=CallRateLimits(
            per_extension=settings.cps_per_extension or None,
            per_tenant=settings.cps_per_tenant or None,
            max_calls=settings.max_calls or None,
        ),
    )
    if settings.node_id is not None:
        config.node_id = settings.node_id
    return PbxServer(config, build_sip)


def _given(settings: ServeSettings) -> set[str]:
    """The settings that differ from their defaults."""
    return {f.name for f in dataclasses.fields(settings) if getattr(settings, f.name) != f.default}


def _tls_context(
    cert: Path | None, key: Path | None, listen: list[ListenAddress]
) -> ssl.SSLContext | None:
    wants_tls = any(a.transport == "tls" for a in listen)
    if cert is None and key is None:
        if wants_tls:
            raise ValueError("a tls: listening point needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _loop_factory(use_uvloop: bool) -> type[asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        log.info("event loop: asyncio")
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional extra
    except ImportError:
        log.info("event loop: asyncio (uvloop not installed)")
        return None
    log.info("event loop: uvloop %s", getattr(uvloop, "__version__", "?"))
    return uvloop.Loop


async def run_server(
    server: PbxServer,
    *,
    grace: float = 30.0,
    started: Callable[[PbxServer], Awaitable[None]] | None = None,
) -> None:
    """Start ``server``, print its listening points, and run it until SIGINT/SIGTERM; then
    stop it, the calls in progress given ``grace`` seconds (a second signal: none).
    ``started(server)`` runs once it serves (``pbxcore demo`` seeds it then)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    hurry = asyncio.Event()

    def on_signal() -> None:
        if stopping.is_set():
            hurry.set()
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal)
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    # what was loaded at start (users, code) is never garbage: keep it out of collections,
    # and collect the older generations less often (a registrar holds many live objects)
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 20, 100)
    if server.generated_admin_password is not None:
        # printed once, at the first start on an empty database; never stored in clear
        print(f"platform admin: admin password {server.generated_admin_password}", flush=True)
    assert server.sip is not None
    for address in server.sip.addresses:
        # one line per listening point on stdout: scripts (and tests) read the ports here
        print(f"listening {address}", flush=True)
    if server.api_url is not None:
        print(f"api {server.api_url}/api/v1", flush=True)
    try:
        if started is not None:
            await started(server)
        await stopping.wait()
    finally:
        log.info("stopping")
        await server.stop(grace=grace, hurry=hurry)
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)


if __name__ == "__main__":
    typer.run(serve)
