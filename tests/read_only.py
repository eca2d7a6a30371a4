"""A directory this test's user may only read, as an operator sees the state of a `serve` that
runs as a service user."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocean_hook import sqlitefiles


@contextlib.contextmanager
def only_readable(directory: Path) -> Iterator[None]:
    """The directory and its files made read-only. Root writes them all the same, so for root
    the permission check is told what a non-root user would find; the files' listing and bytes
    are what the test checks either way."""
    modes = {path: path.stat().st_mode for path in [directory, *directory.iterdir()]}
    for path, mode in modes.items():
        path.chmod(stat.S_IMODE(mode) & ~0o222)
    try:
        with pytest.MonkeyPatch.context() as patch:
            if os.access(directory, os.W_OK):  # root: told what SQLite tells anyone else
                patch.setattr(sqlitefiles, "may_write", lambda path: False)
                for module in ("ocean_hook.queue.sqlite", "ocean_hook.targets.local"):
                    patch.setattr(f"{module}.may_write", lambda path: False)
                    patch.setattr(f"{module}.take_over", _refused)
            yield
    finally:
        for path, mode in modes.items():
            with contextlib.suppress(FileNotFoundError):
                path.chmod(stat.S_IMODE(mode))


def _refused(*args: object) -> bool:
    """A writable open of a file in a directory one may not write: SQLite cannot make the WAL
    index, and says so."""
    refused = sqlite3.OperationalError("attempt to write a readonly database")
    refused.sqlite_errorcode = sqlite3.SQLITE_READONLY  # type: ignore[attr-defined]
    raise refused


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}
