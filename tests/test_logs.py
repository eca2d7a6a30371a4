"""The log formatters: the fast text one writes what the standard library's would, byte for byte."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator

import pytest

from ocean_hook.logs import JsonFormatter, TextFormatter, for_delivery

STDLIB = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def record(msg: str, *args: object, created: float, exc: bool = False, level: int = logging.INFO) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    made = logging.LogRecord("ocean_hook.server", level, __file__, 1, msg, args or None, exc_info)
    made.created = created
    made.msecs = (created - int(created)) * 1000
    return made


@pytest.mark.parametrize("created", [1795931849.0, 1795931849.0009, 1795931849.5004, 1795931849.9999, 1795931850.001])
def test_text_lines_match_the_standard_formatter(created: float) -> None:
    fast = TextFormatter()
    for made in (record("accepted for %s", "gh-pr", created=created),
                 record("plain, with 100% literal", created=created, level=logging.WARNING)):
        assert fast.format(made) == STDLIB.format(made)


def test_the_date_is_redone_when_the_second_changes() -> None:
    fast = TextFormatter()
    first = fast.format(record("one", created=1795931849.999))
    second = fast.format(record("two", created=1795931850.000))
    assert first == STDLIB.format(record("one", created=1795931849.999))
    assert second == STDLIB.format(record("two", created=1795931850.000))
    assert first[:19] != second[:19]


def test_a_traceback_is_kept() -> None:
    made = record("failed %d", 3, created=1795931849.25, exc=True)
    text = TextFormatter().format(made)
    assert text.startswith(STDLIB.format(record("failed %d", 3, created=1795931849.25)))
    assert "Traceback (most recent call last)" in text and "ValueError: boom" in text


@pytest.mark.parametrize("exc", [False, True], ids=["line", "with a traceback"])
def test_text_from_a_payload_cannot_forge_a_line_or_reach_the_terminal(exc: bool) -> None:
    made = record("dead-lettered: %s", "pr/1\n2026-11-29 00:00:00,000 INFO ocean_hook.server: forged\x1b[2J",
                  created=1795931849.25, exc=exc, level=logging.ERROR)
    first, *rest = TextFormatter().format(made).split("\n")
    assert first == STDLIB.format(record("dead-lettered: %s", "pr/1\\x0a2026-11-29 00:00:00,000 INFO "
                                         "ocean_hook.server: forged\\x1b[2J", created=1795931849.25,
                                         level=logging.ERROR))
    assert ("ValueError: boom" in rest[-1]) if exc else rest == []


def test_text_that_reorders_the_screen_or_breaks_a_line_is_spelled_out() -> None:
    """U+202E showed `moc.elgoog` as `google.com` in tables and logs; U+2028 starts a new line
    in some viewers (found by probing)."""
    made = record("title %s", "ok\u202egnp.exe\u2066x\u2028y", created=1795931849.25)
    assert TextFormatter().format(made).endswith("title ok\\u202egnp.exe\\u2066x\\u2028y")


@contextlib.contextmanager
def capturing(name: str) -> Iterator[tuple[logging.Logger, list[logging.LogRecord]]]:
    """A logger at INFO and the records it handles, as they reach a handler."""
    logger = logging.getLogger(name)
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield logger, captured
    finally:
        logger.removeHandler(handler)


def test_json_lines_carry_utc_time_and_the_delivery_id() -> None:
    formatter = JsonFormatter()
    with capturing("ocean_hook.test_logs") as (logger, captured):
        for_delivery(logger, "abc-1").info("accepted for %s", "gh-pr")
    doc = json.loads(formatter.format(captured[0]))
    assert doc["message"] == "[abc-1] accepted for gh-pr"
    assert doc["delivery_id"] == "abc-1"
    assert doc["level"] == "info"
    assert doc["time"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(captured[0].created))


@pytest.mark.parametrize("delivery_id", ["pct-%s", "100%", "pct-%(x)s", "pct-%%"])
def test_a_percent_sign_in_a_delivery_id_is_logged_as_written(delivery_id: str) -> None:
    """The sender's id went into the format string: every line of the delivery became a
    "--- Logging error ---" traceback on stderr, under --quiet too (found by probing)."""
    with capturing("ocean_hook.test_logs_percent") as (logger, captured):
        said = for_delivery(logger, delivery_id)
        said.info("accepted for %s", "gh-pr")
        said.warning("plain")
        try:
            raise ValueError("boom")
        except ValueError:
            said.exception("failed %d times", 2)
    assert [r.getMessage() for r in captured] == [f"[{delivery_id}] accepted for gh-pr", f"[{delivery_id}] plain",
                                                  f"[{delivery_id}] failed 2 times"]
    assert [json.loads(JsonFormatter().format(r))["delivery_id"] for r in captured] == [delivery_id] * 3
