"""What opening the two SQLite files ocean-hook owns (the journal, the local catalog) shares.

Both are opened by path from the config or the command line, where a slip can name some other
SQLite file: the other one of the pair, or an application's database. Opening one switches it
to WAL and creates tables in it, so a file holding tables of something else is refused before
anything is changed. Both are then set up alike (`take_over`): WAL, commits that do not sync
(the owner fsyncs the WAL itself, through `wal_descriptor`), checkpoints off the event loop
(`checkpoints.py`). Both also meet other processes opening the same file: SQLite reports those
as "busy", which each waits out in its own way.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any


def not_made_yet(path: Path) -> bool:
    """Nothing there to look into: no file, or an empty one (which opening would make into a
    journal or catalog). Commands that only look refuse it rather than create one."""
    return not path.exists() or (path.is_file() and path.stat().st_size == 0)


def is_busy(exc: sqlite3.Error) -> bool:
    """Another connection holds the lock (`SQLITE_BUSY`, whatever its extended code)."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


def _refuse_foreign(conn: sqlite3.Connection, own_table: str, what: str) -> None:
    """An empty (new) file, or one with `own_table`, is ours; a file with other tables only is
    not, and raises a DatabaseError naming them (each caller words its own open error)."""
    tables = sorted(
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not name.startswith("sqlite_")
    )
    if tables and own_table not in tables:
        raise sqlite3.DatabaseError(
            f"it holds the tables of something else ({', '.join(tables[:5])}), not {what}; it was left as it was"
        )


def foreign_file_problem(path: Path, own_table: str, what: str) -> str | None:
    """`check`'s look, read-only, at an existing file: why opening it as `what` would be refused."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            _refuse_foreign(conn, own_table, what)
    except sqlite3.DatabaseError as exc:
        return str(exc).replace("; it was left as it was", "")
    return None


def take_over(conn: sqlite3.Connection, own_table: str, what: str) -> bool:
    """Refuse a file of something else, then set up one of ours; True when it is in WAL mode
    (an in-memory database, as `check` opens, is not, and has no WAL to sync)."""
    _refuse_foreign(conn, own_table, what)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    conn.execute("PRAGMA synchronous=NORMAL")  # the owner fsyncs the WAL itself
    conn.execute("PRAGMA wal_autocheckpoint=0")  # and checkpoints it off the loop
    return bool(mode == "wal")


def may_write(path: Path) -> bool:
    """Whether this user can write the file and make its WAL beside it. `serve` runs as a
    service user, and an operator who may only read its state still comes to look."""
    real = Path(os.path.realpath(path))
    return os.access(real, os.W_OK) and os.access(real.parent, os.W_OK)


def unwritable_note(exc: BaseException, path: Path) -> str:
    """What to add to SQLite's "attempt to write a readonly database" when the reason is this
    user's rights, not the file's state."""
    readonly = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_READONLY
    return "; this user may not write it (or make its WAL beside it): run as the user serve runs as" if (
        readonly and not may_write(path)) else ""


def look_into(path: Path, own_table: str, what: str, **options: Any) -> sqlite3.Connection:
    """A connection that writes nothing, for a user who may not write (see `may_write`).

    SQLite reads a WAL file read-only only through its WAL index, which exists while a writer
    has the file open (or after a crash); with no writer there is none to share, nor anyone
    changing the file, so it is read as immutable. Not used when the user can write: a read-only
    connection leaves its WAL index behind, owned by whoever looked."""
    real = os.path.realpath(path)
    how = "mode=ro" if os.path.exists(f"{real}-wal") else "immutable=1"
    conn = sqlite3.connect(f"{Path(real).as_uri()}?{how}", uri=True, **options)
    try:
        _refuse_foreign(conn, own_table, what)
    except BaseException:
        conn.close()
        raise
    return conn


def wal_descriptor(path: Path) -> int:
    """A descriptor of the file's WAL, to fsync it: the WAL exists from the first transaction on,
    as long as a connection is open. SQLite keeps it beside the file a symbolic link points to."""
    return os.open(f"{os.path.realpath(path)}-wal", os.O_RDONLY | os.O_CLOEXEC)
