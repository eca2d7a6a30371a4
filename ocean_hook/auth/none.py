"""`auth: none`: accept every delivery. Only ever built when the config says so in words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ocean_hook.auth.base import Verdict
from ocean_hook.events import Headers

OPTIONS: frozenset[str] = frozenset()


@dataclass
class NoVerifier:
    scheme: str = "none"

    def verify(self, body: bytes, headers: Headers, *, now: float | None) -> Verdict:
        return Verdict.passed()


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> NoVerifier:
    return NoVerifier(scheme)
