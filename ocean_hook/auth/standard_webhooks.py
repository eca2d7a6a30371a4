"""Standard Webhooks (and Svix, which it came from).

`webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<ts>.<body>"> [v1,<...> ...]` with
`webhook-id` and `webhook-timestamp`; Svix sends the same under `svix-*` names. The secret is
`whsec_<base64 key>` and, unlike Stripe's, is base64-decoded to get the HMAC key.
"""

from __future__ import annotations

import base64
import binascii
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
    timestamp_header,
)
from ocean_hook.events import Headers

#: (id, timestamp, signature) header names, Standard Webhooks' first.
FAMILIES = (
    ("webhook-id", "webhook-timestamp", "webhook-signature"),
    ("svix-id", "svix-timestamp", "svix-signature"),
)
SIGNATURE = FAMILIES[0][2]
OPTIONS = frozenset({opt.TOLERANCE})


@dataclass
class StandardWebhooksVerifier:
    scheme: str
    keys: tuple[bytes, ...] = field(repr=False)
    tolerance: int = opt.DEFAULT_TOLERANCE

    @returns_verdict
    def verify(self, body: bytes, headers: Headers, *, now: float | None) -> None:
        id_name, stamp_name, signature_name = _family(headers, self.scheme)
        pairs = split_pairs(single_header(headers, signature_name), sep=" ", kv=",")
        message_id = single_header(headers, id_name)
        stamp, timestamp = timestamp_header(headers, stamp_name)
        given = [decode_digest(sig, "base64") for version, sig in pairs if version == "v1"]
        if not given:
            raise Rejected(f"malformed header {signature_name}: no v1, signature")
        signed = f"{message_id}.{stamp}.".encode() + body
        require_match((mac(key, signed) for key in self.keys), given, signature_name)
        check_window(timestamp, now, self.tolerance)


def _family(headers: Headers, scheme: str) -> tuple[str, str, str]:
    """The header names in use: the first family with any header present, else the scheme's own."""
    for family in FAMILIES:
        if any(name in headers for name in family):
            return family
    return FAMILIES[1] if scheme == "svix" else FAMILIES[0]


def signing_key(secret: str) -> bytes | None:
    """The HMAC key of a `whsec_<base64>` (or bare base64) secret; None if it is not one."""
    text = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def signing_keys(secrets: list[str]) -> tuple[bytes, ...]:
    keys = []
    for number, secret in enumerate(secrets, start=1):
        key = signing_key(secret)
        if key is None:
            raise ValueError(f"secret #{number} is not a signing secret (expected whsec_<base64>)")
        keys.append(key)
    return tuple(keys)


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> StandardWebhooksVerifier:
    return StandardWebhooksVerifier(scheme, signing_keys(secrets), opt.tolerance_seconds(options))
