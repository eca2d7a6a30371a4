"""Generic HMAC: one header carrying `<prefix><digest of the raw body>`.

GitHub and Jira are configurations of this verifier, not copies of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ocean_hook.auth import options as opt
from ocean_hook.auth.checks import (
    Rejected,
    decode_digest,
    mac,
    require_match,
    returns_verdict,
    single_header,
)
from ocean_hook.events import Headers

ALGORITHMS = ("sha1", "sha256", "sha512")
ENCODINGS = ("hex", "base64")
OPTIONS = frozenset({"header", "algorithm", "prefix", "encoding"})


@dataclass
class HmacVerifier:
    scheme: str
    header: str
    keys: tuple[bytes, ...] = field(repr=False)
    algorithm: str = "sha256"
    prefix: str = ""
    encoding: str = "hex"

    @returns_verdict
    def verify(self, body: bytes, headers: Headers, *, now: float | None) -> None:
        value = single_header(headers, self.header)
        if not value.startswith(self.prefix):
            raise Rejected(f"malformed header {self.header}: does not start with '{self.prefix}'")
        given = decode_digest(value[len(self.prefix) :], self.encoding)
        require_match((mac(key, body, self.algorithm) for key in self.keys), [given], self.header)


def build(scheme: str, secrets: list[str], options: dict[str, Any]) -> HmacVerifier:
    header = opt.text(options, "header").strip()
    if not header:
        raise ValueError("option 'header' must name a header")
    return HmacVerifier(
        scheme,
        header,
        opt.keys_of(secrets),
        algorithm=opt.choice(options, "algorithm", ALGORITHMS, "sha256"),
        prefix=opt.text(options, "prefix", ""),
        encoding=opt.choice(options, "encoding", ENCODINGS, "hex"),
    )
