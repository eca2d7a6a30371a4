"""Readers for verifier options from the config: typed values or a ValueError naming the option."""

from __future__ import annotations

from typing import Any

TOLERANCE = "tolerance_seconds"
DEFAULT_TOLERANCE = 300


def tolerance_seconds(options: dict[str, Any]) -> int:
    value = options.get(TOLERANCE, DEFAULT_TOLERANCE)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"option '{TOLERANCE}' must be a positive whole number of seconds")
    return value


def text(options: dict[str, Any], key: str, default: str | None = None) -> str:
    """A string option; required when `default` is None."""
    value = options.get(key, default)
    if value is None:
        raise ValueError(f"option '{key}' is required")
    if not isinstance(value, str):
        raise ValueError(f"option '{key}' must be a string")
    return value


def choice(options: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = options.get(key, default)
    if value not in allowed:
        raise ValueError(f"option '{key}' must be one of {', '.join(allowed)}")
    return str(value)


def keys_of(secrets: list[str]) -> tuple[bytes, ...]:
    """Secrets used as literal HMAC keys: their UTF-8 bytes, never base64-decoded.

    `surrogateescape` gives back the exact bytes of a secret read from the environment.
    """
    return tuple(secret.encode("utf-8", "surrogateescape") for secret in secrets)
