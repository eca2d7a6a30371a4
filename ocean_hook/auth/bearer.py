"""Bearer token: `Authorization: Bearer <secret>`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ocean_hook.auth import options as opt
from ocean_hook.auth.checks import authorization, header_bytes, require_secret, returns_verdict
from ocean_hook.events import Headers

OPTIONS: frozenset[str] = frozenset()


@dataclass
class BearerVerifier:
    scheme: str
    tokens: tuple[bytes, ...] = field(repr=False)

    @returns_verdict
    def verify(self, body: bytes, headers: Headers, *, now: float | None) -> None:
        token = header_bytes("Authorization", authorization(headers, "Bearer"))
        require_secret(token, self.tokens, "token mismatch in header Authorization")


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> BearerVerifier:
    return BearerVerifier(scheme, opt.keys_of(secrets))
