"""The small checks every verifier is made of: one header, one digest, one timestamp window.

Each check raises `Rejected` with a reason fit to send back to the sender; `returns_verdict`
turns that into a `Verdict` at the edge, so a verifier reads as a straight list of checks and
still never raises. Reasons name headers and problems, never header values or expected digests.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import math
import re
from collections.abc import Callable, Iterable
from typing import ParamSpec

from ocean_hook.auth.base import Verdict, constant_time_equal
from ocean_hook.events import Headers

P = ParamSpec("P")

_UNIX_TIME = re.compile(r"[0-9]{1,15}")


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def returns_verdict(check: Callable[P, None]) -> Callable[P, Verdict]:
    """Wrap a check that raises `Rejected` into a `verify` that returns a `Verdict`."""

    @functools.wraps(check)
    def verify(*args: P.args, **kwargs: P.kwargs) -> Verdict:
        try:
            check(*args, **kwargs)
        except Rejected as rejected:
            return Verdict.reject(rejected.reason)
        return Verdict.passed()

    return verify


# ----------------------------------------------------------------------------- headers


def single_header(headers: Headers, name: str, *, ascii_only: bool = True) -> str:
    """The one value of `name`. A duplicated header is refused: which copy was signed is unknown."""
    values = headers.getall(name, [])
    if not values:
        raise Rejected(f"missing header {name}")
    if len(values) > 1:
        raise Rejected(f"duplicated header {name}")
    value = values[0].strip()
    if not value:
        raise Rejected(f"malformed header {name}: empty")
    if ascii_only and not value.isascii():
        raise Rejected(f"malformed header {name}: non-ASCII characters")
    return value


def header_bytes(name: str, value: str) -> bytes:
    """Header text back to the bytes on the wire (aiohttp decodes UTF-8 with surrogateescape)."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise Rejected(f"malformed header {name}: not valid text") from None


def authorization(headers: Headers, kind: str) -> str:
    """The credentials of `Authorization: <kind> <credentials>`; `kind` is case-insensitive."""
    value = single_header(headers, "Authorization", ascii_only=False)
    word, _, credentials = value.partition(" ")
    if word.lower() != kind.lower() or not credentials.strip():
        raise Rejected(f"malformed header Authorization: expected '{kind} <credentials>'")
    return credentials.strip()


def split_pairs(text: str, *, sep: str = ",", kv: str = "=") -> list[tuple[str, str]]:
    """`t=1,v1=ab,v1=cd` -> [(t, 1), (v1, ab), (v1, cd)]. Items without `kv` are dropped."""
    pairs = []
    for item in text.split(sep):
        key, found, value = item.strip().partition(kv)
        if found:
            pairs.append((key.strip(), value.strip()))
    return pairs


# ----------------------------------------------------------------------------- digests


def mac(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, message, algorithm).digest()


def decode_digest(text: str, encoding: str) -> bytes | None:
    """A received digest as bytes; None when it is not valid `encoding` (so it matches nothing)."""
    if encoding == "hex":
        # unhexlify takes pairs of hex digits and nothing else (bytes.fromhex would skip spaces)
        try:
            return binascii.unhexlify(text) if text else None
        except (binascii.Error, ValueError):
            return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def require_match(expected: Iterable[bytes], given: Iterable[bytes | None], header: str) -> None:
    """Pass when any received digest equals any expected one (secrets and signatures rotate).
    The reason names the header, so a sender with several signature headers knows which one."""
    candidates = [g for g in given if g is not None]
    for digest in expected:
        for candidate in candidates:
            if constant_time_equal(digest, candidate):
                return
    raise Rejected(f"signature mismatch in header {header}")


def require_secret(given: bytes, secrets: Iterable[bytes], reason: str) -> None:
    """Pass when a received token or credential equals any configured secret."""
    if not any(constant_time_equal(given, secret) for secret in secrets):
        raise Rejected(reason)


# ----------------------------------------------------------------------------- timestamps


def unix_timestamp(text: str) -> int | None:
    """Whole seconds since the epoch, or None: no signs, fractions or exponents."""
    return int(text) if _UNIX_TIME.fullmatch(text) else None


def timestamp_header(headers: Headers, name: str) -> tuple[str, int]:
    """A header holding a Unix timestamp: its text, signed as sent, and its value."""
    text = single_header(headers, name)
    timestamp = unix_timestamp(text)
    if timestamp is None:
        raise Rejected(f"malformed header {name}: not a Unix timestamp")
    return text, timestamp


def check_window(timestamp: int, now: float | None, tolerance: int) -> None:
    """Refuse replays: the timestamp must be within `tolerance` seconds of `now`, either way."""
    if now is None:
        return
    age = now - timestamp
    if abs(age) > tolerance:  # said rounded up: 300.4 s is outside a 300 s window, "300 s" is not
        when = f"{math.ceil(age)} s old" if age >= 0 else f"{math.ceil(-age)} s in the future"
        raise Rejected(f"timestamp outside the {tolerance} s window ({when})")
