"""HTTP Basic auth: `Authorization: Basic base64(user:password)`; the secret is `user:password`."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from ocean_hook.auth import options as opt
from ocean_hook.auth.checks import Rejected, authorization, require_secret, returns_verdict
from ocean_hook.events import Headers

OPTIONS: frozenset[str] = frozenset()


@dataclass
class BasicVerifier:
    scheme: str
    credentials: tuple[bytes, ...] = field(repr=False)

    @returns_verdict
    def verify(self, body: bytes, headers: Headers, *, now: float | None) -> None:
        encoded = authorization(headers, "Basic")
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected("malformed header Authorization: credentials are not base64") from None
        require_secret(given, self.credentials, "credentials mismatch in header Authorization")


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> BasicVerifier:
    for number, secret in enumerate(secrets, start=1):
        if ":" not in secret:
            raise ValueError(f"secret #{number} must be 'user:password'")
    return BasicVerifier(scheme, opt.keys_of(secrets))
