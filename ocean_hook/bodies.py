"""Reading an HTTP body that may be bigger than anyone should hold: the listener's requests,
and the answers of the APIs ocean-hook calls (fetch, Port)."""

from __future__ import annotations

from aiohttp import StreamReader


async def read_at_most(content: StreamReader, limit: int, declared: int | None = None) -> bytes | None:
    """The whole body, or None as soon as it grows past `limit`: at once when its `declared`
    Content-Length does, else while it arrives (a chunked or compressed body has no length to
    trust up front, and one `read(n)` returns only what has arrived so far)."""
    if (declared or 0) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
