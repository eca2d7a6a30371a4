"""GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`."""

from __future__ import annotations

from typing import Any

from ocean_hook.auth import options as opt
from ocean_hook.auth.generic_hmac import HmacVerifier

OPTIONS: frozenset[str] = frozenset()


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> HmacVerifier:
    return HmacVerifier(scheme, "X-Hub-Signature-256", opt.keys_of(secrets), prefix="sha256=")
