"""Watching a running server: Prometheus metrics, readiness, platform events (wiring layer).

:class:`ServerMonitor` belongs to one :class:`~pbxcore.server.PbxServer`. Its metrics live in
a registry of its own (two servers in one process do not collide) and are read at scrape
time from the live counters of the server's parts, through their public APIs: nothing is
incremented on the call path for them, except the API latency histogram, which a small
ASGI middleware (:meth:`ServerMonitor.instrument`) fills per request, labelled by the
route's template (``/api/v1/operators/{op}/events``), never the raw path.

The metrics (``pbxcore_`` prefix): ``calls_active``, ``calls_started_total`` (``rate()`` of it
is calls per second), ``calls_failed_total``, ``registrations`` (bindings held) and
``registered_aors``, ``rtp_packets_total{direction}``, ``rtp_dropped_total``,
``media_sessions``, ``trunk_attempts_total{trunk_id}``, ``trunk_failures_total{trunk_id}``,
``trunk_channels{trunk_id}``, ``trunk_registered{trunk_id}``,
``api_request_duration_seconds{method,route,status}``, ``cdr_queue_depth``,
``cdr_dropped_total``, ``cdr_written_total``, ``mail_outbox_backlog``,
``events_queue_depth``, ``events_dropped_total``, ``events_written_total``,
``sip_messages_total{kind}``, ``snapshot_version``.

:meth:`ServerMonitor.readiness` names what is not ready (the snapshot not loaded, SIP not
listening, the server stopping); the admin API adds the database check and answers
``/ready``. The server starts the event writer and connects the hooks of the registrar's
location service, the trunks and the B2BUA to it. The monitor reads a server through the
:class:`Monitored` protocol (it does not import the server module).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pbxcore.media.engine import MediaEngine
from pbxcore.pbx.b2bua import B2bua
from pbxcore.pbx.cdr import CdrWriter
from pbxcore.pbx.events import EventWriter
from pbxcore.pbx.trunks import TrunkRegistrations
from pbxcore.sip.location import MemoryLocationService
from pbxcore.sip.server import SipServer
from pbxcore.tenancy.db import Database
from pbxcore.tenancy.outbox import mail_backlog
from pbxcore.tenancy.snapshot import SnapshotService

__all__ = ["Monitored", "ServerMonitor"]

log = logging.getLogger("pbxcore.monitoring")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BACKLOG_TIMEOUT = 2.0  # seconds a scrape waits for the outbox count


class _Configured(Protocol):
    @property
    def db_url(self) -> str | None: ...


class Monitored(Protocol):
    """What the monitor reads of a server (:class:`~pbxcore.server.PbxServer` is one): its
    parts, each None until started, and whether it is stopping."""

    @property
    def config(self) -> _Configured: ...
    @property
    def db(self) -> Database | None: ...
    @property
    def snapshots(self) -> SnapshotService | None: ...
    @property
    def sip(self) -> SipServer | None: ...
    @property
    def b2bua(self) -> B2bua | None: ...
    @property
    def media(self) -> MediaEngine | None: ...
    @property
    def trunks(self) -> TrunkRegistrations | None: ...
    @property
    def cdr(self) -> CdrWriter | None: ...
    @property
    def events(self) -> EventWriter | None: ...
    @property
    def stopping(self) -> bool: ...


class ServerMonitor:
    """Metrics and readiness of one server."""

    def __init__(self, server: Monitored) -> None:
        self.server = server
        self.registry = CollectorRegistry()
        self.api_latency = Histogram(
            "pbxcore_api_request_duration_seconds",
            "Admin API requests by route template, method and status",
            ["method", "route", "status"],
            buckets=API_BUCKETS,
            registry=self.registry,
        )
        self.mail_backlog: int | None = None  # refreshed by render()
        self.registry.register(_ServerCollector(self))

    async def render(self) -> bytes:
        """The metrics in the Prometheus text format (what ``/metrics`` answers)."""
        db = self.server.db
        if db is not None:
            try:
                async with asyncio.timeout(BACKLOG_TIMEOUT):
                    self.mail_backlog = await mail_backlog(db)
            except Exception as exc:  # the database is down: the gauge goes missing
                log.debug("mail backlog not counted: %s", exc)
                self.mail_backlog = None
        return generate_latest(self.registry)

    def readiness(self) -> dict[str, str | None]:
        """Each check beside the database's, with what is wrong (None: fine)."""
        server = self.server
        checks: dict[str, str | None] = {}
        if server.config.db_url is not None:
            snaps = server.snapshots
            loaded = snaps is not None and snaps.current.version > 0
            checks["snapshot"] = None if loaded else "the configuration snapshot is not loaded"
        sip = server.sip
        listening = sip is not None and bool(sip.addresses) and not server.stopping
        checks["sip"] = None if listening else "SIP is not listening"
        if server.stopping:
            checks["server"] = "the server is stopping"
        return checks

    def instrument(self, app: ASGIApp) -> ASGIApp:
        """``app`` with its requests timed into ``api_request_duration_seconds``."""
        return _Timed(app, self.api_latency)


class _Timed:
    """ASGI middleware: one histogram observation per HTTP request."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.histogram.labels(scope.get("method", "?"), _template(scope), str(status)).observe(
                time.perf_counter() - started
            )


def _template(scope: Scope) -> str:
    """The matched route's path with its parameters as ``{name}`` (the path the client
    sent, its ids put back as the names they were matched by); ``unmatched`` when no
    route matched, so that a scan of random paths adds one label, not one per path."""
    if scope.get("route") is None:
        return "unmatched"
    names = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    path: str = scope.get("path", "")
    return "/".join(f"{{{names[seg]}}}" if seg in names else seg for seg in path.split("/"))


class _ServerCollector(Collector):
    """Reads the server's live counters at each scrape."""

    def __init__(self, monitor: ServerMonitor) -> None:
        self.monitor = monitor

    def describe(self) -> list[Metric]:
        return []  # not described up front: collect() reads objects that come and go

    def collect(self) -> Iterator[Metric]:
        server = self.monitor.server
        b2bua = server.b2bua
        if b2bua is not None:
            c = b2bua.counters()
            yield _gauge("calls_active", "Calls in progress", c.active_calls)
            yield _counter("calls_started", "Calls started", c.calls_started)
            yield _counter("calls_failed", "Calls refused or not connected", c.calls_failed)
            attempts = CounterMetricFamily(
                "pbxcore_trunk_attempts", "Outbound INVITEs to a trunk", labels=["trunk_id"]
            )
            failures = CounterMetricFamily(
                "pbxcore_trunk_failures",
                "Trunk attempts that failed over (no answer, 408, 5xx)",
                labels=["trunk_id"],
            )
            channels = GaugeMetricFamily(
                "pbxcore_trunk_channels", "A trunk's calls in progress", labels=["trunk_id"]
            )
            for trunk_id, n in sorted(c.trunk_attempts.items()):
                attempts.add_metric([trunk_id], n)
                failures.add_metric([trunk_id], c.trunk_failures.get(trunk_id, 0))
                channels.add_metric([trunk_id], b2bua.usage.active_channels(trunk_id))
            yield attempts
            yield failures
            yield channels
        sip = server.sip
        if sip is not None:
            kinds = CounterMetricFamily(
                "pbxcore_sip_messages", "SIP messages by what became of them", labels=["kind"]
            )
            for kind, n in sorted(sip.stats.items()):
                kinds.add_metric([kind], n)
            yield kinds
            registrar = sip.registrar
            location = None if registrar is None else registrar.location
            if isinstance(location, MemoryLocationService):
                yield _gauge("registrations", "Registered contacts", location.binding_count)
                yield _gauge("registered_aors", "AORs with a registered contact", len(location))
        media = server.media
        if media is not None:
            packets = media.relay.packet_counters()
            rtp = CounterMetricFamily(
                "pbxcore_rtp_packets", "RTP packets through the relay", labels=["direction"]
            )
            rtp.add_metric(["received"], packets.received)
            rtp.add_metric(["sent"], packets.sent)
            yield rtp
            yield _counter("rtp_dropped", "RTP packets the relay dropped", packets.dropped)
            sessions = media.relay.counters()["live_sessions"]
            yield _gauge("media_sessions", "Relay sessions", sessions)
        trunks = server.trunks
        if trunks is not None:
            registered = GaugeMetricFamily(
                "pbxcore_trunk_registered",
                "1 when a registering trunk is registered",
                labels=["trunk_id"],
            )
            for status in sorted(trunks.statuses(), key=lambda s: s.trunk_id):
                registered.add_metric([status.trunk_id], int(status.state == "registered"))
            yield registered
        cdr = server.cdr
        if cdr is not None:
            cc = cdr.counters()
            yield _gauge("cdr_queue_depth", "CDR records waiting to be written", cc.queued)
            yield _counter("cdr_written", "CDR records written", cc.written)
            yield _counter("cdr_dropped", "CDR records dropped (queue full)", cc.dropped)
        events = server.events
        if events is not None:
            ec = events.counters()
            yield _gauge("events_queue_depth", "Platform events waiting to be written", ec.queued)
            yield _counter("events_written", "Platform events written", ec.written)
            yield _counter("events_dropped", "Platform events dropped (queue full)", ec.dropped)
        backlog = self.monitor.mail_backlog
        if backlog is not None:
            yield _gauge("mail_outbox_backlog", "Mail waiting to be sent", backlog)
        if server.snapshots is not None:
            version = server.snapshots.current.version
            yield _gauge("snapshot_version", "The configuration snapshot in use", version)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"pbxcore_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"pbxcore_{name}", doc, value=value)
