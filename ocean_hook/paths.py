"""Paths a user writes (in the config, on the command line): `~` is read as the shell reads it."""

from __future__ import annotations

from pathlib import Path


def home_expanded(path: str | Path) -> Path:
    """`~` and `~name` as home folders; a `~name` of no user, or `~` with no home to be found (a
    container's arbitrary user), as written rather than a RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)
