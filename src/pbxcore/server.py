"""Server wiring: SIP, the config snapshot and the admin API on one asyncio loop.

:class:`PbxServer` is what ``pbxcore serve`` runs and what an integrator embeds::

    server = PbxServer(ServerConfig(db_url="sqlite:///var/pbx.db",
                                    api_listen=("127.0.0.1", 8080)), build_sip=...)
    await server.start()    # migrations, first admin, snapshot, SIP, API
    ...
    await server.stop()

With a database, extensions come from the tenancy snapshot (a change made through the API
is used by the next REGISTER) and a users file, if given, serves the realms that are not
tenants. Without one, the users file is the only credential store (the registrar alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from pbxcore.admin.app import create_app
from pbxcore.admin.deps import AdminContext, ApiSettings
from pbxcore.media.engine import MediaEngine
from pbxcore.media.prompt import Prompt
from pbxcore.monitoring import ServerMonitor
from pbxcore.pbx.b2bua import B2bua
from pbxcore.pbx.cdr import CdrWriter
from pbxcore.pbx.events import EventWriter, PlatformEvents
from pbxcore.pbx.limits import CallRateGuard, CallRateLimits
from pbxcore.pbx.trunks import TrunkRegistrations
from pbxcore.sip.credentials import CredentialStore
from pbxcore.sip.location import MemoryLocationService
from pbxcore.sip.server import SipServer
from pbxcore.tenancy.bootstrap import ensure_platform_admin
from pbxcore.tenancy.db import Database
from pbxcore.tenancy.outbox import Outbox, SmtpSettings
from pbxcore.tenancy.secrets import SecretBox, load_secret_key
from pbxcore.tenancy.snapshot import SnapshotCredentialStore, SnapshotService
from pbxcore.tenancy.store import stored_prompt

__all__ = ["PbxServer", "ServerConfig", "parse_host_port"]

log = logging.getLogger("pbxcore.server")

PROMPT_CACHE = 512  # prompts kept in memory for the voice menus (the oldest go first)


def parse_host_port(spec: str, default_port: int = 8080) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets, ``[::1]:8080``) as a pair; a precise ValueError."""
    host, sep, port = spec.rpartition(":")
    if not sep:
        host, port = spec, str(default_port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {spec!r}")
    return host, int(port)


@dataclass(slots=True)
class ServerConfig:
    db_url: str | None = None
    api_listen: tuple[str, int] | None = None
    data_dir: Path = Path("pbxcore-data")
    users: CredentialStore | None = None  # the --users file, beside (or instead of) the DB
    admin_password: str | None = None  # first start; else PBXCORE_ADMIN_PASSWORD or generated
    api_settings: ApiSettings = field(default_factory=ApiSettings)
    snapshot_debounce: float = 0.0
    smtp: SmtpSettings | None = None  # the outbox sends (welcome mail ...) only with it
    calls: bool = True  # the B2BUA (with a database): calls between extensions
    media_bind: str = "127.0.0.1"
    media_advertise: str | None = None  # the address put in SDP (NAT), else media_bind
    rtp_ports: tuple[int, int] = (20000, 29999)
    rtp_timeout: float | None = 60.0  # an answered call with no RTP that long is ended
    call_rates: CallRateLimits = field(default_factory=CallRateLimits)  # CPS caps, capacity
    node_id: str = field(default_factory=socket.gethostname)
    events_keep_days: float = 7.0  # platform events (the operators' /events) kept this long
    events_keep_rows: int = 1_000_000  # ... and at most this many


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn on a loop it does not own: the server's own signal handling stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class PbxServer:
    """SIP, the snapshot and the admin API, started and stopped together."""

    def __init__(
        self, config: ServerConfig, build_sip: Callable[[CredentialStore], SipServer]
    ) -> None:
        self.config = config
        self._build_sip = build_sip
        self.db: Database | None = None
        self.snapshots: SnapshotService | None = None
        self.sip: SipServer | None = None
        self.admin: AdminContext | None = None
        self.api_address: tuple[str, int] | None = None
        self.generated_admin_password: str | None = None
        self.outbox: Outbox | None = None
        self.media: MediaEngine | None = None
        self.cdr: CdrWriter | None = None
        self.b2bua: B2bua | None = None
        self._secret_box: SecretBox | None = None
        self.trunks: TrunkRegistrations | None = None
        self._api: _EmbeddedUvicorn | None = None
        self._api_task: asyncio.Task[None] | None = None
        self._prompts: dict[tuple[str, str], Prompt] = {}  # (tenant, prompt) -> audio
        self.events: EventWriter | None = None
        self.monitor = ServerMonitor(self)  # /metrics and /ready
        self.stopping = False

    async def start(self) -> None:
        cfg = self.config
        credentials: CredentialStore | None = cfg.users
        if cfg.db_url is not None:
            self.db = Database(cfg.db_url)
            await self.db.upgrade()
            await self.db.caught_up()  # PostgreSQL: LISTEN for other nodes' writes from now on
            self.generated_admin_password = await ensure_platform_admin(self.db, cfg.admin_password)
            self.snapshots = SnapshotService(self.db, debounce=cfg.snapshot_debounce)
            snap = await self.snapshots.load()
            log.info(
                "snapshot %d: %d operators, %d tenants, %d extensions (%.3fs)",
                snap.version,
                len(snap.operators),
                len(snap.tenants),
                snap.extension_count,
                self.snapshots.last_build_seconds,
            )
            credentials = SnapshotCredentialStore(self.snapshots, fallback=cfg.users)
        if credentials is None:
            raise ValueError("nothing to serve: give a database or a users file")
        self.sip = self._build_sip(credentials)
        await self.sip.start()
        if self.snapshots is not None and cfg.calls and self.sip.registrar is not None:
            await self._start_calls()
        self.events = self._start_events()
        if cfg.smtp is not None:
            if self.db is None:
                raise ValueError("mail needs a database (--db): it goes through the outbox")
            self.outbox = Outbox(self.db, cfg.smtp)
            self.outbox.start()
        if cfg.api_listen is not None:
            if self.db is None:
                raise ValueError("the admin API needs a database (--db)")
            await self._start_api(cfg.api_listen)

    async def _start_calls(self) -> None:
        """The B2BUA on the SIP stack, its media engine and its CDR writer."""
        assert self.sip is not None and self.sip.registrar is not None
        assert self.db is not None and self.snapshots is not None
        cfg = self.config
        registrar = self.sip.registrar
        self._secrets()  # a missing or bad key fails the start, not the first trunk call
        self.media = MediaEngine(
            bind=cfg.media_bind,
            ports=cfg.rtp_ports,
            advertise=cfg.media_advertise,
            leg_timeout=cfg.rtp_timeout,
        )
        await self.media.start()
        self.cdr = CdrWriter(self.db, node_id=cfg.node_id)
        self.cdr.start()
        self.b2bua = B2bua(
            self.sip,
            snapshot=self.snapshots,
            location=registrar.location,
            authenticator=registrar.authenticator,
            guard=registrar.guard,
            media=self.media,
            cdr=self.cdr,
            trunk_password=lambda sealed: self._secrets().decrypt(sealed),
            rates=CallRateGuard(cfg.call_rates),
            prompts=self._prompt,
        )
        self.b2bua.attach()
        self.trunks = TrunkRegistrations(
            self.sip, self.snapshots, lambda sealed: self._secrets().decrypt(sealed)
        )
        self.trunks.sync()
        self.b2bua.registered_trunk = self.trunks.trunk_for_request
        self.snapshots.subscribe(self.trunks.sync)  # trunks added, changed or deleted
        log.info("calls: media on %s ports %d-%d", cfg.media_bind, *cfg.rtp_ports)

    def _start_events(self) -> EventWriter | None:
        """The event writer of a server with a database, its hooks connected (None without)."""
        if self.db is None or self.snapshots is None:
            return None
        cfg = self.config
        writer = EventWriter(
            self.db,
            node_id=cfg.node_id,
            keep_days=cfg.events_keep_days,
            keep_rows=cfg.events_keep_rows,
        )
        writer.start()
        events = PlatformEvents(self.snapshots, writer)
        sip = self.sip
        location = None if sip is None or sip.registrar is None else sip.registrar.location
        if isinstance(location, MemoryLocationService):
            location.listener = events.bindings_changed
        if self.trunks is not None:
            self.trunks.on_state = events.trunk_state
        if self.b2bua is not None:
            self.b2bua.on_failure = events.call_failed
        return writer

    async def _prompt(self, tenant_id: str, prompt_id: str) -> Prompt | None:
        """A tenant's prompt for a call, read once and kept (a prompt's audio never changes;
        one in use by a menu cannot be deleted)."""
        key = (tenant_id, prompt_id)
        prompt = self._prompts.get(key)
        if prompt is None and self.db is not None:
            audio = await stored_prompt(self.db, tenant_id, prompt_id)
            if audio is None:
                return None
            prompt = Prompt.from_ulaw(audio)
            if len(self._prompts) >= PROMPT_CACHE:
                self._prompts.pop(next(iter(self._prompts)))
            self._prompts[key] = prompt
        return prompt

    def _trunk_status(self, trunk_id: str) -> dict[str, Any]:
        """A trunk's live state for the API: its registration and its active channels."""
        state: dict[str, Any] = {}
        if self.trunks is not None:
            status = self.trunks.status(trunk_id)
            if status is not None:
                state = status.to_json()
        if self.b2bua is not None:
            state["active_channels"] = self.b2bua.usage.active_channels(trunk_id)
        return state

    def _secrets(self) -> SecretBox:
        """The box of the trunks' passwords (its key from the environment or the key file)."""
        if self._secret_box is None:
            self._secret_box = SecretBox(load_secret_key(self.config.data_dir / "secret.key"))
        return self._secret_box

    async def _start_api(self, listen: tuple[str, int]) -> None:
        assert self.db is not None
        secrets = self._secrets()
        self.admin = AdminContext(
            self.db,
            secrets,
            sink=self.snapshots,
            settings=self.config.api_settings,
            mail_queued=None if self.outbox is None else self.outbox.notify,
            trunk_status=self._trunk_status,
            readiness=self.monitor.readiness,
            metrics=self.monitor.render,
        )
        app = self.monitor.instrument(create_app(self.admin))
        host, port = listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.listen(1024)
        sock.setblocking(False)
        bound = sock.getsockname()
        self.api_address = (bound[0], bound[1])
        config = uvicorn.Config(
            app,
            lifespan="off",
            access_log=False,
            log_level="warning",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._api = _EmbeddedUvicorn(config)
        self._api_task = asyncio.get_running_loop().create_task(
            self._api.serve(sockets=[sock]), name="admin-api"
        )
        while not self._api.started:
            if self._api_task.done():
                self._api_task.result()  # raises what stopped it
                raise OSError("the admin API did not start")
            await asyncio.sleep(0.01)

    @property
    def api_url(self) -> str | None:
        if self.api_address is None:
            return None
        host, port = self.api_address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def stop(self, *, grace: float = 0.0, hurry: asyncio.Event | None = None) -> None:
        """Stop everything: new calls get 503 at once, the calls in progress may finish
        within ``grace`` seconds (or until ``hurry`` is set) and then get BYE; the CDRs
        and the mail outbox are flushed before the database closes."""
        self.stopping = True
        if self.b2bua is not None:
            ended = await self.b2bua.shutdown(grace, hurry=hurry)
            if ended:
                log.info("%d calls ended by the shutdown", ended)
        if self._api is not None and self._api_task is not None:
            self._api.should_exit = True
            with contextlib.suppress(Exception):
                await self._api_task
        if self.outbox is not None:
            await self.outbox.stop()
        if self.trunks is not None:
            await self.trunks.close()  # un-REGISTERs, while SIP still runs
        if self.sip is not None:
            await self.sip.stop()
        if self.media is not None:
            await self.media.close()
        if self.cdr is not None:
            await self.cdr.stop()  # after SIP: the calls' last records are written
        if self.events is not None:
            await self.events.stop()
        if self.snapshots is not None:
            await self.snapshots.close()
        if self.db is not None:
            await self.db.close()
