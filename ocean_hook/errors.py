"""Errors that reach the user as one clear line, never as a traceback."""

from __future__ import annotations

import json
from typing import Any

from ocean_hook import jsontext


class OceanHookError(Exception):
    """A problem the user can fix: bad input, bad config, missing file.

    The CLI prints ``str(error)`` and exits with ``exit_code``; nothing else catches these.
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(OceanHookError):
    """The ocean-hook.yaml or mapping file is invalid (file, line and key in ``where``)."""


class Problems(ConfigError):
    """Every problem found in a file at once, each its own `file:line (key ...): message` line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems:\n" + "\n".join(f"  {p}" for p in self.problems)


class InputError(OceanHookError):
    """A data, state or capture file could not be read or parsed."""


def quoted(value: Any, limit: int = 80) -> str:
    """A value as JSON inside a one-line message, cut to `limit` characters."""
    try:
        text = json.dumps(value, default=str)
    except RecursionError:
        text = None
    # deeper than the parsers read (a streamed item can be); json.dumps only refuses it up to 3.11
    if text is None or (len(text) >= 2 * jsontext.TOO_DEEP and jsontext.nested_too_deeply(value)):
        text = "[...]" if isinstance(value, list) else "{...}" if isinstance(value, dict) else "..."
    return text if len(text) <= limit else text[: limit - 3] + "..."
