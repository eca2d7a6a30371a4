"""What every command shares: consoles, the one-line error contract, async entry."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console

from ocean_hook.errors import OceanHookError
from ocean_hook.render import escape_text

T = TypeVar("T")


class OutputFailed(Exception):
    """Standard output refused a write: `user_errors` ends the command on it."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Stdout:
    """`sys.stdout` (whatever it is at the time of the write), whose failures raise OutputFailed."""

    def write(self, text: str) -> int:
        try:
            return sys.stdout.write(text)
        except OSError as exc:
            raise OutputFailed(exc) from None

    def flush(self) -> None:
        try:
            sys.stdout.flush()
        except OSError as exc:
            raise OutputFailed(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.stdout, name)


def utf8_output() -> None:
    """Output is UTF-8 whatever the locale says: JSON and markdown are read by CI, and an entity
    title in another script made a traceback under LANG=C. A character the terminal cannot show
    is then its bytes, not a crash."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")


def stdout() -> Console:
    # rich turns colors off when stdout is not a terminal and when NO_COLOR is set
    return Console(file=_Stdout(), highlight=False, soft_wrap=True, emoji=False)  # type: ignore[arg-type]  # ":Star:" stays text


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` (its own lines kept, anything else spelled out: it may quote a file)."""
    shown = "\n".join(escape_text(line) for line in message.split("\n"))
    stderr().print(f"[red]error:[/] {shown}")
    return typer.Exit(code)


def write_stdout(text: str) -> None:
    output = _Stdout()
    output.write(text)
    output.flush()


def output_failed(exc: OutputFailed) -> typer.Exit:
    """A reader that went away (`| head`) ends the command quietly, with the code of a process
    SIGPIPE ended (141); a full disk is one line, not a traceback. Python's own flush at exit,
    which would fail again, gets /dev/null."""
    with contextlib.suppress(OSError, ValueError):  # no descriptor behind it (a test's capture)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if isinstance(exc.error, BrokenPipeError):
        return typer.Exit(141)
    return fail(f"cannot write the output: {exc.error.strerror or exc.error}", 1)


def user_errors(func: Callable[..., T]) -> Callable[..., T]:
    """Turn `OceanHookError` into a one-line message and its exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except OceanHookError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except OutputFailed as exc:
            raise output_failed(exc) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def listening_line(url: str, fmt: str) -> str:
    """The line that says `serve` is up, printed whatever the log level, in the log's format (a
    JSON log stays one JSON document per line)."""
    text = f"ocean-hook listening on {url}"
    if fmt != "json":
        return text
    from ocean_hook.logs import JsonFormatter

    return JsonFormatter().format(logging.makeLogRecord({"name": "ocean_hook.serve", "levelname": "INFO",
                                                         "msg": text, "url": url}))


def setup_logging(*, verbose: bool, quiet: bool, fmt: str = "text") -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    from ocean_hook.logs import JsonFormatter, TextFormatter

    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # no format shows the thread or process: not looking them up halves the cost of a record
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root.addHandler(handler)
    root.setLevel(level)
