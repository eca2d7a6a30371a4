"""Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<ts>:<body>">`.

The timestamp comes in `X-Slack-Request-Timestamp`; both directions of clock skew are bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ocean_hook.auth import options as opt
from ocean_hook.auth.checks import (
    Rejected,
    check_window,
    decode_digest,
    mac,
    require_match,
    returns_verdict,
    single_header,
    timestamp_header,
)
from ocean_hook.events import Headers

SIGNATURE = "X-Slack-Signature"
TIMESTAMP = "X-Slack-Request-Timestamp"
OPTIONS = frozenset({opt.TOLERANCE})


@dataclass
class SlackVerifier:
    scheme: str
    keys: tuple[bytes, ...] = field(repr=False)
    tolerance: int = opt.DEFAULT_TOLERANCE

    @returns_verdict
    def verify(self, body: bytes, headers: Headers, *, now: float | None) -> None:
        signature = single_header(headers, SIGNATURE)
        stamp, timestamp = timestamp_header(headers, TIMESTAMP)
        if not signature.startswith("v0="):
            raise Rejected(f"malformed header {SIGNATURE}: no v0= signature")
        signed = b"v0:" + stamp.encode() + b":" + body
        given = decode_digest(signature.removeprefix("v0="), "hex")
        require_match((mac(key, signed) for key in self.keys), [given], SIGNATURE)
        check_window(timestamp, now, self.tolerance)


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> SlackVerifier:
    return SlackVerifier(scheme, opt.keys_of(secrets), opt.tolerance_seconds(options))
