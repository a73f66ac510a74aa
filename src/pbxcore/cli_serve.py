"""``pbxcore serve``: run the SIP registrar (later issues grow it into the full server).

Register it on the main typer app with ``app.command("serve")(serve)``; it also runs
alone as ``python -m pbxcore.cli_serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from pathlib import Path
from typing import Annotated

import typer

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

__all__ = ["run_server", "serve"]

log = logging.getLogger("pbxcore.serve")


def serve(  # noqa: PLR0917 - one parameter per command-line option
    sip_listen: Annotated[
        list[str],
        typer.Option(
            help="Listening point HOST:PORT, optionally prefixed udp:, tcp: or tls: "
            "(no prefix: UDP and TCP). "
            "IPv6 in brackets: [::1]:5060. Repeatable.",
        ),
    ] = ["127.0.0.1:5060"],  # noqa: B006 - typer reads the default, never mutates it
    users: Annotated[
        Path | None,
        typer.Option(
            help="TOML users file: users tables with domain, username, password "
            "(default users.toml without --db; with --db it serves the realms that are "
            "not tenants)."
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="Database URL: sqlite:///path or postgresql://user:pass@host/db "
            "(default: env PBXCORE_DB). Migrations run at start.",
            envvar="PBXCORE_DB",
        ),
    ] = None,
    api_listen: Annotated[
        str | None,
        typer.Option(help="Admin API listening point HOST:PORT (needs --db)."),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(help="Directory for the secret key file (unless PBXCORE_SECRET_KEY)."),
    ] = Path("pbxcore-data"),
    smtp_host: Annotated[
        str | None,
        typer.Option(
            help="SMTP server for mail (welcome mail ...); without it mail waits in the outbox."
        ),
    ] = None,
    smtp_port: Annotated[
        int | None, typer.Option(help="SMTP port (default 25, or 465 with --smtp-security tls).")
    ] = None,
    smtp_security: Annotated[
        str, typer.Option(help="none, starttls or tls (implicit TLS).")
    ] = "starttls",
    smtp_username: Annotated[str | None, typer.Option(help="SMTP AUTH username.")] = None,
    smtp_password_file: Annotated[
        Path | None,
        typer.Option(help="File holding the SMTP AUTH password (never on the command line)."),
    ] = None,
    media_bind: Annotated[
        str, typer.Option(help="Address the RTP relay binds (calls need --db).")
    ] = "127.0.0.1",
    media_advertise: Annotated[
        str | None, typer.Option(help="Address put in SDP, when it differs (NAT).")
    ] = None,
    rtp_ports: Annotated[str, typer.Option(help="RTP port range LOW-HIGH.")] = "20000-29999",
    rtp_timeout: Annotated[
        float,
        typer.Option(help="Seconds without RTP after which a call is ended (0: never)."),
    ] = 60.0,
    cps_per_extension: Annotated[
        float,
        typer.Option(help="New calls a second one extension may start (0: no cap)."),
    ] = 5.0,
    cps_per_tenant: Annotated[
        float,
        typer.Option(help="New calls a second one tenant may start (0: no cap)."),
    ] = 50.0,
    max_calls: Annotated[
        int,
        typer.Option(help="Calls this node carries at once; beyond, 503 (0: no cap)."),
    ] = 0,
    node_id: Annotated[
        str | None,
        typer.Option(help="This node's name in CDRs (unique per node; default: host name)."),
    ] = None,
    mail_from: Annotated[
        str, typer.Option(help="Sender address of the platform's mail.")
    ] = "pbxcore@localhost",
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    min_expires: Annotated[int, typer.Option(help="Shortest registration (423 below).")] = 60,
    max_expires: Annotated[int, typer.Option(help="Longest registration granted.")] = 3600,
    default_expires: Annotated[int, typer.Option(help="Expiry when none is asked.")] = 3600,
    nonce_ttl: Annotated[float, typer.Option(help="Digest nonce lifetime, seconds.")] = 300.0,
    rate_limit: Annotated[
        float,
        typer.Option(help="Messages per second per source IP (0: no per-source limit at all)."),
    ] = 500.0,
    rate_burst: Annotated[float, typer.Option(help="Burst allowance per source IP.")] = 1000.0,
    rate_bytes: Annotated[
        float,
        typer.Option(
            help="Bytes per second per source IP, counted before parsing: datagrams over it "
            "are dropped, TCP/TLS reading pauses (0: bytes not limited)."
        ),
    ] = 2_000_000.0,
    rate_bytes_burst: Annotated[
        float,
        typer.Option(help="Byte burst allowance per source IP (at least 65535, one message)."),
    ] = 4_000_000.0,
    max_connections: Annotated[
        int,
        typer.Option(
            help="Open TCP/TLS connections in total; the open-file limit is raised to its "
            "hard maximum at start and this is lowered to fit in it. Refusals are logged."
        ),
    ] = 10_000,
    max_connections_per_ip: Annotated[
        int, typer.Option(help="Open TCP/TLS connections from one source IP.")
    ] = 64,
    message_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a TCP/TLS message may take from its first byte to its last "
            "(later bytes do not extend it); then the connection is closed."
        ),
    ] = 30.0,
    idle_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a TCP/TLS connection stays open without a complete message, "
            "keepalive or response."
        ),
    ] = 900.0,
    guard_failures: Annotated[
        int,
        typer.Option(
            help="Failed logins from one IP before it is banned, or for one user before the "
            "IPs that failed for it are refused for it (others still may log in; 0: off)."
        ),
    ] = 10,
    guard_window: Annotated[float, typer.Option(help="Window for counting failures, s.")] = 60.0,
    guard_ban: Annotated[float, typer.Option(help="Ban duration, seconds.")] = 600.0,
    guard_action: Annotated[
        GuardAction, typer.Option(help="What a banned source gets.")
    ] = GuardAction.REJECT,
    t1: Annotated[float, typer.Option(help="SIP timer T1, seconds.")] = 0.5,
    t2: Annotated[float, typer.Option(help="SIP timer T2, seconds.")] = 4.0,
    t4: Annotated[float, typer.Option(help="SIP timer T4, seconds.")] = 5.0,
    use_uvloop: Annotated[
        bool, typer.Option("--uvloop/--no-uvloop", help="Use uvloop when it is installed.")
    ] = True,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
    log_format: Annotated[
        str, typer.Option(help="text, or json: one JSON object a line (with call_id).")
    ] = "text",
) -> None:
    """Run SIP (and, with --db, the admin API) until SIGINT or SIGTERM."""
    try:
        configure_logging(log_level, log_format)
    except ValueError as exc:
        typer.echo(f"pbxcore serve: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        listen = [a for spec in sip_listen for a in ListenAddress.parse(spec)]
        if users is None and db is None:
            users = Path("users.toml")
        file_store = FileCredentialStore.from_toml(users) if users is not None else None
        api = parse_host_port(api_listen) if api_listen is not None else None
        if api is not None and db is None:
            raise ValueError("--api-listen needs --db")
        policy = RegistrarPolicy(
            min_expires=min_expires, max_expires=max_expires, default_expires=default_expires
        )
        guard = GuardPolicy(
            max_failures=guard_failures,
            window=guard_window,
            ban_time=guard_ban,
            action=guard_action,
        )
        timers = TimerSettings(t1=t1, t2=t2, t4=t4)
        limit = (
            RateLimit(rate_limit, rate_burst, byte_rate=rate_bytes, byte_burst=rate_bytes_burst)
            if rate_limit > 0
            else None
        )
        limits = TransportLimits(
            max_connections=max_connections,
            max_connections_per_source=max_connections_per_ip,
            message_timeout=message_timeout,
            idle_timeout=idle_timeout,
        )
        context = _tls_context(tls_cert, tls_key, listen)

        def build_sip(credentials: CredentialStore) -> SipServer:
            registrar = Registrar(
                credentials,
                MemoryLocationService(),
                authenticator=DigestAuthenticator(credentials, NonceStore(ttl=nonce_ttl)),
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
        smtp = None
        if smtp_host is not None:
            smtp_config: dict[str, object] = {
                "host": smtp_host,
                "sender": mail_from,
                "security": smtp_security,
            }
            if smtp_port is not None:
                smtp_config["port"] = smtp_port
            if smtp_username is not None:
                smtp_config["username"] = smtp_username
            if smtp_password_file is not None:
                smtp_config["password_file"] = str(smtp_password_file)
            smtp = SmtpSettings.from_mapping(smtp_config)
        low, sep, high = rtp_ports.partition("-")
        if not (sep and low.isdigit() and high.isdigit() and 0 < int(low) < int(high) < 65536):
            raise ValueError(f"--rtp-ports must be LOW-HIGH, got {rtp_ports!r}")
        config = ServerConfig(
            db_url=db,
            api_listen=api,
            data_dir=data_dir,
            users=file_store,
            smtp=smtp,
            media_bind=media_bind,
            media_advertise=media_advertise,
            rtp_ports=(int(low), int(high)),
            rtp_timeout=rtp_timeout if rtp_timeout > 0 else None,
            call_rates=CallRateLimits(
                per_extension=cps_per_extension or None,
                per_tenant=cps_per_tenant or None,
                max_calls=max_calls or None,
            ),
        )
        if node_id is not None:
            config.node_id = node_id
        server = PbxServer(config, build_sip)
    except (ValueError, OSError) as exc:
        typer.echo(f"pbxcore serve: {exc}", err=True)
        raise typer.Exit(2) from None
    if file_store is not None:
        log.info("%d users in %d domains from %s", len(file_store), len(file_store.realms), users)
    runner_factory = _loop_factory(use_uvloop)
    try:
        with asyncio.Runner(loop_factory=runner_factory) as runner:
            runner.run(run_server(server))
    except (OSError, DatabaseUnavailableError, ValueError) as exc:
        typer.echo(f"pbxcore serve: {exc}", err=True)
        raise typer.Exit(1) from None


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


async def run_server(server: PbxServer) -> None:
    """Start ``server``, print its listening points, and run it until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stopping.set)
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
        await stopping.wait()
    finally:
        log.info("stopping")
        await server.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)


if __name__ == "__main__":
    typer.run(serve)
