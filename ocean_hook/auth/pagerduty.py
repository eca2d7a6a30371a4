"""PagerDuty: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]`, one per active signing secret.

PagerDuty lists several signatures while a secret is being rotated; any match passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ocean_hook.auth import options as opt
from ocean_hook.auth.checks import (
    Rejected,
    decode_digest,
    mac,
    require_match,
    returns_verdict,
    single_header,
    split_pairs,
)
from ocean_hook.events import Headers

HEADER = "X-PagerDuty-Signature"
OPTIONS: frozenset[str] = frozenset()


@dataclass
class PagerDutyVerifier:
    scheme: str
    keys: tuple[bytes, ...] = field(repr=False)

    @returns_verdict
    def verify(self, body: bytes, headers: Headers, *, now: float | None) -> None:
        pairs = split_pairs(single_header(headers, HEADER))
        given = [decode_digest(sig, "hex") for version, sig in pairs if version == "v1"]
        if not given:
            raise Rejected(f"malformed header {HEADER}: no v1= signature")
        require_match((mac(key, body) for key in self.keys), given, HEADER)


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> PagerDutyVerifier:
    return PagerDutyVerifier(scheme, opt.keys_of(secrets))
