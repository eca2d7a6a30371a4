"""What every verifier returns and promises.

A verifier checks one delivery's raw body bytes and headers against a secret. It never raises
for bad input and never puts a secret or an expected signature in its reason: the reason goes
back to the sender in a 401 and into logs and metrics.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Protocol

from ocean_hook.events import Headers


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""

    @classmethod
    def passed(cls) -> Verdict:
        return _PASSED  # immutable, so one instance serves every delivery

    @classmethod
    def reject(cls, reason: str) -> Verdict:
        return cls(False, reason)


_PASSED = Verdict(True)


class Verifier(Protocol):
    #: scheme name as written in the config (`github`, `stripe`, ...)
    scheme: str

    def verify(self, body: bytes, headers: Headers, *, now: float | None) -> Verdict:
        """Check a delivery. `now=None` skips timestamp-age checks (replay --verify)."""
        ...


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    a_bytes = a.encode() if isinstance(a, str) else a
    b_bytes = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)
