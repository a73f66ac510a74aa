"""The server's log: plain text or one JSON object per line, each record with its Call-ID.

:func:`configure_logging` is what ``pbxcore serve --log-format text|json`` calls. Every
record gets ``call_id``: the Call-ID of the SIP message (or call) being handled when it was
logged (:mod:`pbxcore.sip.logcontext`), or None. A JSON line holds ``time`` (ISO 8601 UTC),
``level``, ``logger``, ``message``, ``call_id`` when known, and ``exception`` for a record
with a traceback.

A last safety net against secrets: the password of a URL (``postgresql://user:pw@host``)
and the value of a ``password=`` / ``passwd=`` / ``secret=`` / ``token=`` pair are masked
in every line. The code does not log secrets in the first place; this catches a driver's
message that quotes what it was given.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

from pbxcore.sip.logcontext import current_call_id

__all__ = ["CallIdFilter", "JsonFormatter", "LogFormat", "TextFormatter", "configure_logging"]

LogFormat = Literal["text", "json"]

_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
_PAIR = re.compile(
    r"(?i)\b(password|passwd|auth_pass|secret|token|access_token|api_key)(\s*[=:]\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
)


def mask_secrets(text: str) -> str:
    """``text`` with URL passwords and ``password=...``-like values replaced by ``***``."""
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1***@", text)
    return _PAIR.sub(r"\1\2***", text)


class CallIdFilter(logging.Filter):
    """Puts the current Call-ID into each record as ``record.call_id`` (None if none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = current_call_id()
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [call-id ...]``, secrets masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        call_id = getattr(record, "call_id", None)
        if call_id:
            text += f" [call-id {call_id}]"
        return mask_secrets(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module documentation."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        call_id = getattr(record, "call_id", None)
        if call_id:
            entry["call_id"] = call_id
        if record.exc_info:
            entry["exception"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(
    level: str = "INFO", log_format: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """The root logger writes ``log_format`` lines to ``stream`` (stderr) at ``level``;
    the database drivers stay at WARNING (they log statements with their parameters).
    Raises ValueError for an unknown level or format."""
    if log_format not in ("text", "json"):
        raise ValueError(f"--log-format must be text or json, got {log_format!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(CallIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # the database drivers log statements with their parameters (HA1s, password hashes) at
    # DEBUG (SQLAlchemy even at INFO): never into the server log
    for noisy in ("aiosqlite", "sqlalchemy", "psycopg", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, numeric))
    return handler
