"""``pbxcore status``: the live counters of a running server, read from its ``/metrics``.

Register it on the main typer app with ``app.command("status")(status)``.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Annotated

import typer
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["read_metrics", "status"]

# what is printed, in this order: (sample name, label)
LINES = (
    ("pbxcore_calls_active", "calls active"),
    ("pbxcore_calls_started_total", "calls started"),
    ("pbxcore_calls_failed_total", "calls failed"),
    ("pbxcore_registrations", "registrations"),
    ("pbxcore_registered_aors", "registered AORs"),
    ("pbxcore_media_sessions", "media sessions"),
    ("pbxcore_rtp_dropped_total", "RTP dropped"),
    ("pbxcore_cdr_queue_depth", "CDR queue"),
    ("pbxcore_cdr_dropped_total", "CDRs dropped"),
    ("pbxcore_events_queue_depth", "event queue"),
    ("pbxcore_events_dropped_total", "events dropped"),
    ("pbxcore_mail_outbox_backlog", "mail backlog"),
    ("pbxcore_snapshot_version", "snapshot version"),
)
PER_TRUNK = (
    ("pbxcore_trunk_attempts_total", "attempts"),
    ("pbxcore_trunk_failures_total", "failures"),
    ("pbxcore_trunk_channels", "channels"),
    ("pbxcore_trunk_registered", "registered"),
)


def _metrics_url(api: str) -> str:
    base = api.rstrip("/")
    base = base.removesuffix("/api/v1")  # what `pbxcore serve` prints is accepted too
    return f"{base}/metrics"


def read_metrics(
    api: str, timeout: float = 5.0
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the server's ``/metrics``, by (name, sorted labels). Raises
    :class:`OSError` when nothing answers, ValueError for a wrong answer."""
    url = _metrics_url(api)
    if not url.startswith(("http://", "https://")):
        raise ValueError("--api must be an http:// or https:// URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        raise ValueError(f"{url} answered {exc.code}") from None
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.3f}"


def status(
    api: Annotated[
        str, typer.Option(help="The server's API listening point (its /metrics is read).")
    ] = "http://127.0.0.1:8080",
) -> None:
    """Print the live counters of a running server (calls, registrations, trunks, queues)."""
    try:
        samples = read_metrics(api)
    except (OSError, ValueError) as exc:
        typer.echo(f"pbxcore status: no server answers at {api}: {exc}", err=True)
        raise typer.Exit(1) from None
    plain = {name: value for (name, labels), value in samples.items() if not labels}
    for name, label in LINES:
        if name in plain:
            typer.echo(f"{label:<18} {_number(plain[name])}")
    rtp = {
        dict(labels).get("direction"): v
        for (n, labels), v in samples.items()
        if n == "pbxcore_rtp_packets_total"
    }
    if rtp:
        received, sent = _number(rtp.get("received", 0)), _number(rtp.get("sent", 0))
        typer.echo(f"{'RTP packets':<18} {received} received, {sent} sent")
    trunks: dict[str, dict[str, float]] = {}
    for (name, labels), value in samples.items():
        trunk_id = dict(labels).get("trunk_id")
        if trunk_id is not None:
            trunks.setdefault(trunk_id, {})[name] = value
    for trunk_id, values in sorted(trunks.items()):
        parts = [f"{label} {_number(values[n])}" for n, label in PER_TRUNK if n in values]
        typer.echo(f"trunk {trunk_id}: " + ", ".join(parts))
