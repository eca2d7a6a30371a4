"""Stripe: `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">[,v1=...]`.

The `whsec_...` secret is the HMAC key as literal text (Stripe does not base64-decode it, unlike
Standard Webhooks). Other schemes in the header (`v0` test-mode signatures) are ignored.
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
    split_pairs,
    unix_timestamp,
)
from ocean_hook.events import Headers

HEADER = "Stripe-Signature"
OPTIONS = frozenset({opt.TOLERANCE})


@dataclass
class StripeVerifier:
    scheme: str
    keys: tuple[bytes, ...] = field(repr=False)
    tolerance: int = opt.DEFAULT_TOLERANCE

    @returns_verdict
    def verify(self, body: bytes, headers: Headers, *, now: float | None) -> None:
        pairs = split_pairs(single_header(headers, HEADER))
        stamp = _one_timestamp([value for key, value in pairs if key == "t"])
        given = [decode_digest(sig, "hex") for scheme, sig in pairs if scheme == "v1"]
        if not given:
            raise Rejected(f"malformed header {HEADER}: no v1= signature")
        signed = stamp.encode() + b"." + body
        require_match((mac(key, signed) for key in self.keys), given, HEADER)
        check_window(int(stamp), now, self.tolerance)


def _one_timestamp(stamps: list[str]) -> str:
    if not stamps:
        raise Rejected(f"malformed header {HEADER}: no t= timestamp")
    if len(stamps) > 1:
        raise Rejected(f"malformed header {HEADER}: several t= timestamps")
    if unix_timestamp(stamps[0]) is None:
        raise Rejected(f"malformed header {HEADER}: t= is not a Unix timestamp")
    return stamps[0]


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> StripeVerifier:
    return StripeVerifier(scheme, opt.keys_of(secrets), opt.tolerance_seconds(options))
