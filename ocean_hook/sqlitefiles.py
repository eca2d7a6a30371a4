"""What opening the two SQLite files ocean-hook owns (the journal, the local catalog) shares.

Both are opened by path from the config or the command line, where a slip can name some other
SQLite file: the other one of the pair, or an application's database. Opening one switches it
to WAL and creates tables in it, so a file holding tables of something else is refused before
anything is changed. Both also meet other processes opening the same file: SQLite reports
those as "busy", which each waits out in its own way.
"""

from __future__ import annotations

import sqlite3


def is_busy(exc: sqlite3.Error) -> bool:
    """Another connection holds the lock (`SQLITE_BUSY`, whatever its extended code)."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


def refuse_foreign(conn: sqlite3.Connection, own_table: str, what: str) -> None:
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
