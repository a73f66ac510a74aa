"""Log lines: JSON objects with the Call-ID of the message being handled; secrets masked."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from pbxcore.logformat import configure_logging, mask_secrets
from pbxcore.sip.logcontext import set_call_id


@pytest.fixture(autouse=True)
def _root_logger() -> Iterator[None]:
    """configure_logging changes the root logger: put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _capture(fmt: str) -> tuple[io.StringIO, logging.Handler]:
    stream = io.StringIO()
    return stream, configure_logging("DEBUG", fmt, stream)


def test_json_lines_carry_the_call_id_of_their_context_and_its_tasks() -> None:
    stream, handler = _capture("json")
    log = logging.getLogger("pbxcore.test")
    try:
        log.info("before any call")

        async def call() -> None:
            set_call_id("abc@host")
            log.info("in the call")

            async def child() -> None:
                log.warning("in a task of the call: %d", 42)

            await asyncio.create_task(child())

        asyncio.run(call())
        log.info("after the call")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    every = [json.loads(line) for line in stream.getvalue().splitlines()]
    lines = [e for e in every if e["logger"] == "pbxcore.test"]
    assert [(e["message"], e.get("call_id")) for e in lines] == [
        ("before any call", None),
        ("in the call", "abc@host"),
        ("in a task of the call: 42", "abc@host"),
        ("after the call", None),
        ("failed", None),
    ]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert lines[2]["level"] == "WARNING" and lines[2]["logger"] == "pbxcore.test"
    assert "ValueError: boom" in lines[-1]["exception"]


def test_text_lines_name_the_call() -> None:
    stream, handler = _capture("text")
    try:
        set_call_id("xyz@host")
        logging.getLogger("pbxcore.test").info("hello")
        set_call_id(None)
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("pbxcore.test: hello [call-id xyz@host]")


def test_secrets_in_a_message_are_masked() -> None:
    assert (
        mask_secrets("cannot connect to postgresql://pbx:s3cret@db:5432/pbx")
        == "cannot connect to postgresql://pbx:***@db:5432/pbx"
    )
    assert mask_secrets('password="a b" token=xyz, secret: q') == (
        "password=*** token=***, secret: ***"
    )
    assert mask_secrets("REGISTER sip:201@acme.test: 1 binding(s)") == (
        "REGISTER sip:201@acme.test: 1 binding(s)"
    )


def test_a_bad_level_or_format_is_refused() -> None:
    for level, fmt in (("LOUD", "text"), ("INFO", "xml")):
        try:
            configure_logging(level, fmt, io.StringIO())
        except ValueError as exc:
            assert ("level" in str(exc)) == (level == "LOUD")
        else:
            raise AssertionError(f"{level} {fmt} accepted")
