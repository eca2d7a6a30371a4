"""GitLab: `X-Gitlab-Token` equal to the secret token.

GitLab's newer signing tokens send Standard Webhooks headers instead; when `webhook-signature`
is present the delivery is checked as Standard Webhooks with those secrets that are signing
keys, and the token is not consulted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ocean_hook.auth import options as opt
from ocean_hook.auth import standard_webhooks
from ocean_hook.auth.base import Verdict
from ocean_hook.auth.checks import header_bytes, require_secret, returns_verdict, single_header
from ocean_hook.auth.standard_webhooks import StandardWebhooksVerifier
from ocean_hook.events import Headers

HEADER = "X-Gitlab-Token"
SIGNATURE = standard_webhooks.SIGNATURE
OPTIONS = frozenset({opt.TOLERANCE})


@dataclass
class GitLabVerifier:
    scheme: str
    tokens: tuple[bytes, ...] = field(repr=False)
    signed: StandardWebhooksVerifier

    def verify(self, body: bytes, headers: Headers, *, now: float | None) -> Verdict:
        if SIGNATURE not in headers:
            return self._verify_token(headers)
        if not self.signed.keys:
            return Verdict.reject(f"header {SIGNATURE} sent but no secret is a signing token")
        return self.signed.verify(body, headers, now=now)

    @returns_verdict
    def _verify_token(self, headers: Headers) -> None:
        token = single_header(headers, HEADER, ascii_only=False)
        reason = f"token mismatch in header {HEADER}"
        require_secret(header_bytes(HEADER, token), self.tokens, reason)


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> GitLabVerifier:
    keys = tuple(k for k in map(standard_webhooks.signing_key, secrets) if k is not None)
    signed = StandardWebhooksVerifier(scheme, keys, opt.tolerance_seconds(options))
    return GitLabVerifier(scheme, opt.keys_of(secrets), signed)
