"""Jira: `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>` (WebSub style)."""

from __future__ import annotations

from typing import Any

from ocean_hook.auth import options as opt
from ocean_hook.auth.generic_hmac import HmacVerifier

OPTIONS: frozenset[str] = frozenset()


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> HmacVerifier:
    return HmacVerifier(scheme, "X-Hub-Signature", opt.keys_of(secrets), prefix="sha256=")
