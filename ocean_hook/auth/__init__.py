"""Webhook authentication: one verifier per scheme, built from a scheme name, secrets and options.

`secrets` is a list so a secret can be rotated without downtime: while several are active, a
delivery passes if it verifies with any of them. Only `none` takes no secret, and it has to be
asked for by name: there is no default that skips authentication.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ocean_hook.auth import (
    basic,
    bearer,
    generic_hmac,
    github,
    gitlab,
    jira,
    none,
    pagerduty,
    slack,
    standard_webhooks,
    stripe,
)
from ocean_hook.auth.base import Verdict, Verifier

Builder = Callable[[str, list[str], dict[str, Any]], Verifier]

_REGISTRY: dict[str, tuple[Builder, frozenset[str]]] = {
    "github": (github.build, github.OPTIONS),
    "gitlab": (gitlab.build, gitlab.OPTIONS),
    "jira": (jira.build, jira.OPTIONS),
    "pagerduty": (pagerduty.build, pagerduty.OPTIONS),
    "stripe": (stripe.build, stripe.OPTIONS),
    "slack": (slack.build, slack.OPTIONS),
    "standard-webhooks": (standard_webhooks.build, standard_webhooks.OPTIONS),
    "svix": (standard_webhooks.build, standard_webhooks.OPTIONS),
    "hmac": (generic_hmac.build, generic_hmac.OPTIONS),
    "bearer": (bearer.build, bearer.OPTIONS),
    "basic": (basic.build, basic.OPTIONS),
    "none": (none.build, none.OPTIONS),
}

SCHEMES: tuple[str, ...] = tuple(_REGISTRY)

__all__ = ["SCHEMES", "Verdict", "Verifier", "build_verifier", "options_for"]


def options_for(scheme: str) -> set[str]:
    """Option keys `scheme` accepts, for config validation."""
    return set(_entry(scheme)[1])


def build_verifier(scheme: str, secrets: list[str], options: dict[str, Any]) -> Verifier:
    """A ready verifier, or ValueError naming the scheme and what is wrong (never a secret)."""
    build, allowed = _entry(scheme)
    unknown = sorted(set(options) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "no options"
        problem = f"unknown option '{unknown[0]}' (accepted: {accepted})"
        raise ValueError(f"auth scheme '{scheme}': {problem}")
    _check_secrets(scheme, secrets)
    try:
        return build(scheme, list(secrets), dict(options))
    except ValueError as exc:
        raise ValueError(f"auth scheme '{scheme}': {exc}") from None


def _entry(scheme: str) -> tuple[Builder, frozenset[str]]:
    try:
        return _REGISTRY[scheme]
    except (KeyError, TypeError):
        raise ValueError(f"unknown auth scheme {scheme!r} (known: {', '.join(SCHEMES)})") from None


def _check_secrets(scheme: str, secrets: list[str]) -> None:
    if scheme == "none":
        if secrets:
            raise ValueError("auth scheme 'none' takes no secret")
        return
    if not secrets:
        raise ValueError(f"auth scheme '{scheme}' needs a secret")
    for number, secret in enumerate(secrets, start=1):
        if not isinstance(secret, str) or not secret:
            raise ValueError(f"auth scheme '{scheme}': secret #{number} is empty or not text")
