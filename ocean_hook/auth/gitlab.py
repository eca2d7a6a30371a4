"""GitLab: `X-Gitlab-Token` equal to the secret token.

GitLab's newer signing tokens (`whsec_...`) add Standard Webhooks headers: when `webhook-signature`
is present and a secret is a signing token, the delivery is checked as Standard Webhooks and the
token is not consulted. GitLab keeps the signing token apart from the secret token, so a hook
given one while ocean-hook knows only the other still sends the secret token: with no signing
token configured, the token is checked (a sender could leave the signature out anyway).
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
SIGNING_PREFIX = "whsec_"


@dataclass
class GitLabVerifier:
    scheme: str
    tokens: tuple[bytes, ...] = field(repr=False)
    signed: StandardWebhooksVerifier

    def verify(self, body: bytes, headers: Headers, *, now: float | None) -> Verdict:
        if SIGNATURE in headers and self.signed.keys:
            return self.signed.verify(body, headers, now=now)
        verdict = self._verify_token(headers)
        if not verdict.ok and SIGNATURE in headers:
            return Verdict.reject(f"{verdict.reason}; the {SIGNATURE} sent is not checked: no secret is a signing "
                                  "token (whsec_...)")
        return verdict

    @returns_verdict
    def _verify_token(self, headers: Headers) -> None:
        token = single_header(headers, HEADER, ascii_only=False)
        reason = f"token mismatch in header {HEADER}"
        require_secret(header_bytes(HEADER, token), self.tokens, reason)


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> GitLabVerifier:
    # a token of hex digits is base64 too: only GitLab's own signing-token form is a key
    signing = [secret for secret in secrets if secret.strip().startswith(SIGNING_PREFIX)]
    keys = tuple(k for k in map(standard_webhooks.signing_key, signing) if k is not None)
    signed = StandardWebhooksVerifier(scheme, keys, opt.tolerance_seconds(options))
    return GitLabVerifier(scheme, opt.keys_of(secrets), signed)
