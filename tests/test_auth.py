"""Webhook verifiers: published vectors, the providers' own signers, tampering, replay, bad input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks
import stripe
import svix.webhooks
from hypothesis import given, settings
from hypothesis import strategies as st

from ocean_hook.auth import SCHEMES, build_verifier, options_for
from ocean_hook.auth.base import Verdict, Verifier
from ocean_hook.events import make_headers

NOW = 1_700_000_000.0
TS = int(NOW)
BODY = b'{"action":"opened","number":7,"title":"caf\xc3\xa9"}'
PLAIN_SECRET = "s3cr3t-Plain-Token-0123"
SWH_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STRIPE_SECRET = "whsec_test_7fJq2ZkYpL0mN8vX"
ALL_SECRETS = [PLAIN_SECRET, SWH_SECRET, STRIPE_SECRET, SWH_SECRET.removeprefix("whsec_")]
# anything that looks like a digest (hex or base64) must never be echoed in a reason
_DIGEST_LIKE = re.compile(r"[0-9a-fA-F]{16,}|[A-Za-z0-9+/]{20,}={0,2}")

Pairs = list[tuple[str, str]]


def verify(verifier: Verifier, body: bytes, pairs: Pairs, now: float | None = NOW) -> Verdict:
    """Run a verifier and check the promises every reason keeps."""
    verdict = verifier.verify(body, make_headers(pairs), now=now)
    assert isinstance(verdict, Verdict)
    for secret in ALL_SECRETS:
        assert secret not in verdict.reason
    assert not _DIGEST_LIKE.search(verdict.reason), verdict.reason
    return verdict


def hex_mac(secret: str | bytes, message: bytes, algorithm: str = "sha256") -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, algorithm).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def flip_char(text: str, index: int) -> str:
    """Change one character into another of the same kind, so the format stays valid."""
    c = text[index]
    hexdigits = "0123456789abcdef"
    if c in hexdigits:
        new = hexdigits[(hexdigits.index(c) + 1) % 16]
    elif c.isalpha():
        new = c.swapcase()
    else:
        new = "A"
    return text[:index] + new + text[index + 1 :]


def flip_body(body: bytes, index: int = 3) -> bytes:
    return body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]


# ----------------------------------------------------------------------------- signers, per scheme
# Each signer is the provider's documented algorithm (or the provider's own package).


def sign_github(secret: str, body: bytes, ts: int) -> Pairs:
    return [("X-Hub-Signature-256", "sha256=" + hex_mac(secret, body))]


def sign_jira(secret: str, body: bytes, ts: int) -> Pairs:
    return [("X-Hub-Signature", "sha256=" + hex_mac(secret, body))]


def sign_gitlab(secret: str, body: bytes, ts: int) -> Pairs:
    return [("X-Gitlab-Token", secret)]


def sign_pagerduty(secret: str, body: bytes, ts: int) -> Pairs:
    return [("X-PagerDuty-Signature", "v1=" + hex_mac(secret, body))]


def sign_stripe(secret: str, body: bytes, ts: int) -> Pairs:
    return [("Stripe-Signature", f"t={ts},v1={hex_mac(secret, f'{ts}.'.encode() + body)}")]


def sign_slack(secret: str, body: bytes, ts: int) -> Pairs:
    signature = "v0=" + hex_mac(secret, f"v0:{ts}:".encode() + body)
    return [("X-Slack-Signature", signature), ("X-Slack-Request-Timestamp", str(ts))]


def sign_standard(secret: str, body: bytes, ts: int) -> Pairs:
    when = datetime.fromtimestamp(ts, tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign("msg_2Lh9", when, body.decode())
    return [("webhook-id", "msg_2Lh9"), ("webhook-timestamp", str(ts)), ("webhook-signature", signature)]


def sign_svix(secret: str, body: bytes, ts: int) -> Pairs:
    when = datetime.fromtimestamp(ts, tz=UTC)
    signature = svix.webhooks.Webhook(secret).sign("msg_p5jX", when, body.decode())
    return [("svix-id", "msg_p5jX"), ("svix-timestamp", str(ts)), ("svix-signature", signature)]


def sign_hmac512(secret: str, body: bytes, ts: int) -> Pairs:
    digest = hmac.new(secret.encode(), body, hashlib.sha512).digest()
    return [("X-Signature", "sha512=" + b64(digest))]


def sign_bearer(secret: str, body: bytes, ts: int) -> Pairs:
    return [("Authorization", f"Bearer {secret}")]


def sign_basic(secret: str, body: bytes, ts: int) -> Pairs:
    return [("Authorization", "Basic " + b64(secret.encode()))]


@dataclass
class Case:
    scheme: str
    sign: Callable[[str, bytes, int], Pairs]
    header: str  # the header that carries the signature / token
    secret: str = PLAIN_SECRET
    other_secret: str = "another-secret-4567"
    options: dict[str, Any] = field(default_factory=dict)
    signs_body: bool = True
    timestamped: bool = False

    def verifier(self, *secrets: str, **options: Any) -> Verifier:
        return build_verifier(self.scheme, list(secrets or [self.secret]), self.options | options)


SWH_OTHER = "whsec_" + b64(b"a different 24-byte key!")
CASES = [
    Case("github", sign_github, "X-Hub-Signature-256"),
    Case("jira", sign_jira, "X-Hub-Signature"),
    Case("gitlab", sign_gitlab, "X-Gitlab-Token", signs_body=False),
    Case("gitlab", sign_standard, "webhook-signature", SWH_SECRET, SWH_OTHER, timestamped=True),
    Case("pagerduty", sign_pagerduty, "X-PagerDuty-Signature"),
    Case("stripe", sign_stripe, "Stripe-Signature", STRIPE_SECRET, timestamped=True),
    Case("slack", sign_slack, "X-Slack-Signature", timestamped=True),
    Case("standard-webhooks", sign_standard, "webhook-signature", SWH_SECRET, SWH_OTHER, timestamped=True),
    Case("svix", sign_svix, "svix-signature", SWH_SECRET, SWH_OTHER, timestamped=True),
    Case(
        "hmac",
        sign_hmac512,
        "X-Signature",
        options={"header": "X-Signature", "algorithm": "sha512", "prefix": "sha512=", "encoding": "base64"},
    ),
    Case("bearer", sign_bearer, "Authorization", signs_body=False),
    Case("basic", sign_basic, "Authorization", "deploy-bot:pa55-W0rd", "deploy-bot:other", signs_body=False),
]


def params(cases: list[Case]) -> list[Any]:
    return [pytest.param(c, id=f"{c.scheme}-{c.sign.__name__.removeprefix('sign_')}") for c in cases]


ALL = params(CASES)
SIGNED = params([c for c in CASES if c.signs_body])
TIMED = params([c for c in CASES if c.timestamped])


def replace_header(pairs: Pairs, name: str, value: str) -> Pairs:
    return [(k, value if k.lower() == name.lower() else v) for k, v in pairs]


def header_value(pairs: Pairs, name: str) -> str:
    return next(v for k, v in pairs if k.lower() == name.lower())


# ----------------------------------------------------------------------------- every scheme


@pytest.mark.parametrize("case", ALL)
def test_valid_delivery_passes(case: Case) -> None:
    assert verify(case.verifier(), BODY, case.sign(case.secret, BODY, TS)).ok


@pytest.mark.parametrize("case", ALL)
def test_wrong_secret_fails(case: Case) -> None:
    verdict = verify(case.verifier(), BODY, case.sign(case.other_secret, BODY, TS))
    assert not verdict.ok
    assert "mismatch" in verdict.reason


@pytest.mark.parametrize("case", ALL)
def test_any_of_several_secrets_passes(case: Case) -> None:
    """Rotation: while old and new secret are both active, either one verifies."""
    verifier = case.verifier(case.other_secret, case.secret)
    assert verify(verifier, BODY, case.sign(case.secret, BODY, TS)).ok
    assert verify(verifier, BODY, case.sign(case.other_secret, BODY, TS)).ok


@pytest.mark.parametrize("case", SIGNED)
def test_flipped_body_byte_fails(case: Case) -> None:
    pairs = case.sign(case.secret, BODY, TS)
    for index in (0, len(BODY) // 2, len(BODY) - 1):
        verdict = verify(case.verifier(), flip_body(BODY, index), pairs)
        assert verdict == Verdict.reject(f"signature mismatch in header {case.header}")


@pytest.mark.parametrize("case", ALL)
def test_flipped_signature_character_fails(case: Case) -> None:
    pairs = case.sign(case.secret, BODY, TS)
    value = header_value(pairs, case.header)
    for index in (len(value) // 2, len(value) - 3):
        verdict = verify(case.verifier(), BODY, replace_header(pairs, case.header, flip_char(value, index)))
        assert not verdict.ok, (value, index)


@pytest.mark.parametrize("case", ALL)
def test_missing_header_names_it(case: Case) -> None:
    pairs = [(k, v) for k, v in case.sign(case.secret, BODY, TS) if k.lower() != case.header.lower()]
    verdict = verify(case.verifier(), BODY, pairs)
    assert not verdict.ok
    if case.scheme == "gitlab" and case.header == "webhook-signature":
        assert verdict.reason == "missing header X-Gitlab-Token"  # unsigned: falls back to the token
    else:
        assert verdict.reason == f"missing header {case.header}"


@pytest.mark.parametrize("case", ALL)
def test_duplicated_signature_header_is_rejected(case: Case) -> None:
    pairs = case.sign(case.secret, BODY, TS)
    value = header_value(pairs, case.header)
    verdict = verify(case.verifier(), BODY, [*pairs, (case.header, value)])
    assert verdict == Verdict.reject(f"duplicated header {case.header}")


@pytest.mark.parametrize("case", ALL)
def test_empty_and_non_ascii_headers_are_rejected_not_raised(case: Case) -> None:
    pairs = case.sign(case.secret, BODY, TS)
    for bad in ("", "   ", "sha256=caf\u00e9", "v1=\udcff\udcfe", "\ud800"):
        verdict = verify(case.verifier(), BODY, replace_header(pairs, case.header, bad))
        assert not verdict.ok
        assert case.header in verdict.reason or "Authorization" in verdict.reason or "mismatch" in verdict.reason


@pytest.mark.parametrize("case", ALL)
def test_repr_does_not_show_secrets(case: Case) -> None:
    text = repr(case.verifier(case.secret, case.other_secret))
    assert case.secret not in text and case.other_secret not in text
    assert case.secret.encode().hex() not in text


@pytest.mark.parametrize("case", TIMED)
@pytest.mark.parametrize(("offset", "word"), [(-301, "old"), (301, "in the future"), (-10_000, "old")])
def test_timestamp_outside_window_fails(case: Case, offset: int, word: str) -> None:
    pairs = case.sign(case.secret, BODY, TS + offset)
    verdict = verify(case.verifier(), BODY, pairs)
    assert not verdict.ok
    assert verdict.reason.startswith("timestamp outside the 300 s window")
    assert word in verdict.reason
    assert verify(case.verifier(), BODY, pairs, now=None).ok, "now=None skips the age check"


@pytest.mark.parametrize("case", TIMED)
def test_timestamp_inside_window_and_custom_tolerance(case: Case) -> None:
    assert verify(case.verifier(), BODY, case.sign(case.secret, BODY, TS - 299)).ok
    assert verify(case.verifier(), BODY, case.sign(case.secret, BODY, TS + 299)).ok
    strict = case.verifier(tolerance_seconds=30)
    verdict = verify(strict, BODY, case.sign(case.secret, BODY, TS - 31))
    assert verdict.reason == "timestamp outside the 30 s window (31 s old)"
    # a fraction of a second past the window is not said as inside it (it said "30 s")
    late = verify(strict, BODY, case.sign(case.secret, BODY, TS + 31), now=TS + 0.5)
    assert late.reason == "timestamp outside the 30 s window (31 s in the future)"
    early = verify(strict, BODY, case.sign(case.secret, BODY, TS - 30), now=TS + 0.5)
    assert early.reason == "timestamp outside the 30 s window (31 s old)"


@pytest.mark.parametrize("case", TIMED)
def test_forged_stale_delivery_reports_mismatch(case: Case) -> None:
    """A bad signature is reported as such even on a stale timestamp: staleness is for real ones."""
    verdict = verify(case.verifier(), flip_body(BODY), case.sign(case.secret, BODY, TS - 1000))
    assert verdict.reason == f"signature mismatch in header {case.header}"


# ----------------------------------------------------------------------------- published vectors


def test_github_documented_vector() -> None:
    verifier = build_verifier("github", ["It's a Secret to Everybody"], {})
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert verify(verifier, b"Hello, World!", [("X-Hub-Signature-256", signature)]).ok
    assert verify(verifier, b"Hello, World!", [("x-hub-signature-256", signature.upper().replace("SHA", "sha"))]).ok
    assert not verify(verifier, b"Hello, World?", [("X-Hub-Signature-256", signature)]).ok


SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)


def test_slack_documented_vector() -> None:
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    verifier = build_verifier("slack", [secret], {})
    pairs = [
        ("X-Slack-Signature", "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
        ("X-Slack-Request-Timestamp", "1531420618"),
    ]
    assert verify(verifier, SLACK_BODY, pairs, now=1531420618 + 5).ok
    assert not verify(verifier, SLACK_BODY, pairs, now=1531420618 + 301).ok
    assert not verify(verifier, SLACK_BODY + b"x", pairs, now=1531420618).ok


# ----------------------------------------------------------------------------- scheme specifics


def test_stripe_several_v1_and_v0_ignored() -> None:
    verifier = build_verifier("stripe", [STRIPE_SECRET], {})
    good = hex_mac(STRIPE_SECRET, f"{TS}.".encode() + BODY)
    bad = hex_mac("nope", f"{TS}.".encode() + BODY)
    header = f"t={TS},v1={bad},v0={good},v1={good}"
    assert verify(verifier, BODY, [("Stripe-Signature", header)]).ok
    only_v0 = f"t={TS},v0={good}"
    assert verify(verifier, BODY, [("Stripe-Signature", only_v0)]).reason == (
        "malformed header Stripe-Signature: no v1= signature"
    )


def test_stripe_secret_is_literal_text_not_base64() -> None:
    decoded_key = base64.b64decode(STRIPE_SECRET.removeprefix("whsec_") + "==")
    header = f"t={TS},v1={hex_mac(decoded_key, f'{TS}.'.encode() + BODY)}"
    assert not verify(build_verifier("stripe", [STRIPE_SECRET], {}), BODY, [("Stripe-Signature", header)]).ok


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("v1=abcd", "no t= timestamp"),
        ("t=1,t=2,v1=abcd", "several t= timestamps"),
        ("t=-5,v1=abcd", "t= is not a Unix timestamp"),
        ("t=1e9,v1=abcd", "t= is not a Unix timestamp"),
        ("t=1700000000", "no v1= signature"),
        ("garbage", "no t= timestamp"),
    ],
)
def test_stripe_malformed_headers(header: str, problem: str) -> None:
    verdict = verify(build_verifier("stripe", [STRIPE_SECRET], {}), BODY, [("Stripe-Signature", header)])
    assert verdict.reason == f"malformed header Stripe-Signature: {problem}"


def test_stripe_agrees_with_stripe_package() -> None:
    assert hasattr(stripe, "WebhookSignature") and hasattr(stripe.Webhook, "construct_event")
    payload = BODY.decode()
    verifier = build_verifier("stripe", [STRIPE_SECRET], {})
    now = int(time.time())
    header = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET, timestamp=now)
    sig = header.split("v1=")[1]
    candidates = [
        (BODY, header),
        (BODY, f"{header},v0={sig}"),
        (BODY, f"t={now},v1={flip_char(sig, 5)},v1={sig}"),
        (BODY, f"t={now},v1={flip_char(sig, 5)}"),
        (BODY, f"t={now},v0={sig}"),
        (BODY, f"t={now + 1},v1={sig}"),
        (flip_body(BODY), header),
        (BODY, stripe.WebhookSignature.generate_signature_header(payload, "whsec_other", timestamp=now)),
        (
            BODY,
            stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET, timestamp=now - 400),
        ),
    ]
    for body, value in candidates:
        try:
            stripe.Webhook.construct_event(body.decode(), value, STRIPE_SECRET, tolerance=300)
            theirs = True
        except stripe.SignatureVerificationError:
            theirs = False
        ours = verify(verifier, body, [("Stripe-Signature", value)], now=time.time()).ok
        assert ours == theirs, value


@given(payload=st.text(max_size=200))
@settings(max_examples=50, deadline=None)
def test_stripe_package_signatures_pass(payload: str) -> None:
    header = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET, timestamp=TS)
    verifier = build_verifier("stripe", [STRIPE_SECRET], {})
    assert verify(verifier, payload.encode(), [("Stripe-Signature", header)]).ok


def test_pagerduty_any_of_several_signatures() -> None:
    verifier = build_verifier("pagerduty", [PLAIN_SECRET], {})
    good, bad = hex_mac(PLAIN_SECRET, BODY), hex_mac("old", BODY)
    assert verify(verifier, BODY, [("X-PagerDuty-Signature", f"v1={bad}, v1={good}")]).ok
    assert verify(verifier, BODY, [("X-PagerDuty-Signature", f"v1={bad},v1=zz")]).reason == (
        "signature mismatch in header X-PagerDuty-Signature"
    )
    assert verify(verifier, BODY, [("X-PagerDuty-Signature", f"v2={good}")]).reason == (
        "malformed header X-PagerDuty-Signature: no v1= signature"
    )


def test_slack_malformed_headers() -> None:
    verifier = build_verifier("slack", [PLAIN_SECRET], {})
    pairs = sign_slack(PLAIN_SECRET, BODY, TS)
    reason = verify(verifier, BODY, replace_header(pairs, "X-Slack-Request-Timestamp", "soon")).reason
    assert reason == "malformed header X-Slack-Request-Timestamp: not a Unix timestamp"
    sig = header_value(pairs, "X-Slack-Signature")
    reason = verify(verifier, BODY, replace_header(pairs, "X-Slack-Signature", sig.replace("v0=", "v1="))).reason
    assert reason == "malformed header X-Slack-Signature: no v0= signature"
    reason = verify(verifier, BODY, pairs[:1]).reason
    assert reason == "missing header X-Slack-Request-Timestamp"


@given(body=st.binary(max_size=300), data=st.data())
@settings(max_examples=100, deadline=None)
def test_github_property_signed_passes_any_mutation_fails(body: bytes, data: st.DataObject) -> None:
    verifier = build_verifier("github", [PLAIN_SECRET], {})
    pairs = sign_github(PLAIN_SECRET, body, TS)
    assert verify(verifier, body, pairs).ok
    if body:
        index = data.draw(st.integers(0, len(body) - 1))
        mask = data.draw(st.integers(1, 255))
        mutated = body[:index] + bytes([body[index] ^ mask]) + body[index + 1 :]
        assert not verify(verifier, mutated, pairs).ok
    assert not verify(verifier, body + data.draw(st.binary(min_size=1, max_size=3)), pairs).ok


@given(body=st.binary(max_size=300), data=st.data())
@settings(max_examples=100, deadline=None)
def test_standard_webhooks_property_signed_passes_any_mutation_fails(body: bytes, data: st.DataObject) -> None:
    verifier = build_verifier("standard-webhooks", [SWH_SECRET], {})
    key = base64.b64decode(SWH_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"msg_1.{TS}.".encode() + body, hashlib.sha256).digest()
    pairs = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", str(TS)),
        ("webhook-signature", "v1," + b64(digest)),
    ]
    assert verify(verifier, body, pairs).ok
    if body:
        index = data.draw(st.integers(0, len(body) - 1))
        mask = data.draw(st.integers(1, 255))
        mutated = body[:index] + bytes([body[index] ^ mask]) + body[index + 1 :]
        assert not verify(verifier, mutated, pairs).ok
    byte = data.draw(st.integers(0, len(digest) - 1))
    bad = digest[:byte] + bytes([digest[byte] ^ 0x80]) + digest[byte + 1 :]
    assert not verify(verifier, body, replace_header(pairs, "webhook-signature", "v1," + b64(bad))).ok


@given(payload=st.text(max_size=200), msg_id=st.from_regex(r"msg_[A-Za-z0-9]{1,20}", fullmatch=True))
@settings(max_examples=50, deadline=None)
def test_standard_webhooks_and_svix_package_signers_pass(payload: str, msg_id: str) -> None:
    when = datetime.fromtimestamp(TS, tz=UTC)
    std = standardwebhooks.Webhook(SWH_SECRET).sign(msg_id, when, payload)
    svx = svix.webhooks.Webhook(SWH_SECRET).sign(msg_id, when, payload)
    body = payload.encode()
    for scheme in ("standard-webhooks", "svix"):
        verifier = build_verifier(scheme, [SWH_SECRET], {})
        std_pairs = [("webhook-id", msg_id), ("webhook-timestamp", str(TS)), ("webhook-signature", std)]
        svx_pairs = [("svix-id", msg_id), ("svix-timestamp", str(TS)), ("svix-signature", svx)]
        assert verify(verifier, body, std_pairs).ok
        assert verify(verifier, body, svx_pairs).ok
        assert not verify(verifier, body + b" ", svx_pairs).ok
        assert not verify(verifier, body, replace_header(std_pairs, "webhook-id", msg_id + "x")).ok
        assert not verify(verifier, body, replace_header(std_pairs, "webhook-timestamp", str(TS + 1))).ok


def test_standard_webhooks_agrees_with_package_verifier() -> None:
    now = int(time.time())
    lib = standardwebhooks.Webhook(SWH_SECRET)
    ours = build_verifier("standard-webhooks", [SWH_SECRET], {})
    sig = lib.sign("msg_x", datetime.fromtimestamp(now, tz=UTC), BODY.decode())
    other = "v1," + b64(b"x" * 32)
    for body, signature, stamp in [
        (BODY, sig, now),
        (BODY, f"{other} {sig}", now),
        (BODY, f"v1a,{sig[3:]} {sig}", now),
        (BODY, other, now),
        (BODY, flip_char(sig, 10), now),
        (flip_body(BODY), sig, now),
        (BODY, sig, now + 1),
    ]:
        headers = {"webhook-id": "msg_x", "webhook-timestamp": str(stamp), "webhook-signature": signature}
        try:
            lib.verify(body, headers, json_parse=False)
            theirs = True
        except standardwebhooks.WebhookVerificationError:
            theirs = False
        assert verify(ours, body, list(headers.items()), now=time.time()).ok == theirs, signature


def test_standard_webhooks_bare_base64_secret_and_no_v1() -> None:
    bare = SWH_SECRET.removeprefix("whsec_")
    pairs = sign_standard(SWH_SECRET, BODY, TS)
    assert verify(build_verifier("standard-webhooks", [bare], {}), BODY, pairs).ok
    v1a = replace_header(pairs, "webhook-signature", "v1a," + b64(b"k" * 64))
    assert verify(build_verifier("svix", [SWH_SECRET], {}), BODY, v1a).reason == (
        "malformed header webhook-signature: no v1, signature"
    )
    stamp = replace_header(pairs, "webhook-timestamp", "17e8")
    assert verify(build_verifier("svix", [SWH_SECRET], {}), BODY, stamp).reason == (
        "malformed header webhook-timestamp: not a Unix timestamp"
    )


def test_gitlab_signed_delivery_ignores_token_and_cannot_be_downgraded() -> None:
    verifier = build_verifier("gitlab", [SWH_SECRET], {})
    signed = sign_standard(SWH_SECRET, BODY, TS)
    assert verify(verifier, BODY, signed).ok
    assert verify(verifier, BODY, [("X-Gitlab-Token", SWH_SECRET)]).ok
    # a forged signature next to a correct token still fails: the signature is what is checked
    forged = replace_header(signed, "webhook-signature", "v1," + b64(b"f" * 32))
    assert not verify(verifier, BODY, [*forged, ("X-Gitlab-Token", SWH_SECRET)]).ok


@pytest.mark.parametrize("token", ["not-base64-token!", "3f9a" * 16])  # the second: what `init` writes
def test_gitlab_signature_without_signing_token_configured_falls_back_to_the_token(token: str) -> None:
    """GitLab keeps the signing token apart from the secret token: a hook given a signing token
    that ocean-hook does not know was refused, its secret token unchecked, and GitLab disables a
    hook that keeps answering 4xx. A token of hex digits was taken for a signing key (it is
    base64 too), and the reason was a signature mismatch (found by probing)."""
    verifier = build_verifier("gitlab", [token], {})
    signed = sign_standard(SWH_SECRET, BODY, TS)
    assert verify(verifier, BODY, [*signed, ("X-Gitlab-Token", token)]).ok
    assert verify(verifier, BODY, signed).reason == (
        "missing header X-Gitlab-Token; the webhook-signature sent is not checked: no secret is a signing token "
        "(whsec_...)")
    assert verify(verifier, BODY, [*signed, ("X-Gitlab-Token", "wrong")]).reason == (
        "token mismatch in header X-Gitlab-Token; the webhook-signature sent is not checked: no secret is a "
        "signing token (whsec_...)")


def test_generic_hmac_defaults_and_sha1() -> None:
    default = build_verifier("hmac", [PLAIN_SECRET], {"header": "X-Sig"})
    assert verify(default, BODY, [("X-Sig", hex_mac(PLAIN_SECRET, BODY))]).ok
    sha1 = build_verifier("hmac", [PLAIN_SECRET], {"header": "X-Sig", "algorithm": "sha1", "prefix": "sha1="})
    assert verify(sha1, BODY, [("X-Sig", "sha1=" + hex_mac(PLAIN_SECRET, BODY, "sha1"))]).ok
    assert verify(sha1, BODY, [("X-Sig", hex_mac(PLAIN_SECRET, BODY, "sha1"))]).reason == (
        "malformed header X-Sig: does not start with 'sha1='"
    )
    # the right digest with the wrong algorithm is still a mismatch
    assert not verify(sha1, BODY, [("X-Sig", "sha1=" + hex_mac(PLAIN_SECRET, BODY))]).ok


def test_bearer_and_basic_specifics() -> None:
    bearer = build_verifier("bearer", [PLAIN_SECRET], {})
    assert verify(bearer, BODY, [("Authorization", f"bearer {PLAIN_SECRET}")]).ok
    assert verify(bearer, BODY, [("Authorization", f"Basic {PLAIN_SECRET}")]).reason == (
        "malformed header Authorization: expected 'Bearer <credentials>'"
    )
    assert not verify(bearer, BODY, [("Authorization", f"Bearer {PLAIN_SECRET}x")]).ok
    basic = build_verifier("basic", ["bot:pw"], {})
    assert verify(basic, BODY, [("Authorization", "Basic " + b64(b"bot:pw"))]).ok
    assert verify(basic, BODY, [("Authorization", "Basic not*base64")]).reason == (
        "malformed header Authorization: credentials are not base64"
    )
    assert not verify(basic, BODY, [("Authorization", "Basic " + b64(b"bot:pwx"))]).ok


def test_none_always_passes() -> None:
    verifier = build_verifier("none", [], {})
    assert verifier.scheme == "none"
    assert verify(verifier, b"", []).ok


HEADER_NAMES = sorted({c.header for c in CASES} | {"X-Slack-Request-Timestamp", "webhook-id", "svix-id"})


@given(
    body=st.binary(max_size=64),
    headers=st.lists(
        st.tuples(
            st.sampled_from([*HEADER_NAMES, "webhook-timestamp", "svix-timestamp"]),
            st.text(st.characters(exclude_categories=()), max_size=40)
            | st.from_regex(r"(t=[0-9]{1,12},)?(v[01]|sha256)[=,][0-9a-f]{0,64}", fullmatch=True),
        ),
        max_size=6,
    ),
)
@settings(max_examples=150, deadline=None)
def test_arbitrary_headers_never_raise(body: bytes, headers: Pairs) -> None:
    for case in CASES:
        verdict = verify(case.verifier(), body, headers, now=NOW)
        assert not verdict.ok


# ----------------------------------------------------------------------------- the factory


def test_registry_lists_every_scheme() -> None:
    assert set(SCHEMES) == {
        "github", "gitlab", "jira", "pagerduty", "stripe", "slack",
        "standard-webhooks", "svix", "hmac", "bearer", "basic", "none",
    }  # fmt: skip
    assert options_for("stripe") == {"tolerance_seconds"}
    assert options_for("hmac") == {"header", "algorithm", "prefix", "encoding"}
    assert options_for("github") == set()
    built = {c.scheme: c.verifier().scheme for c in CASES} | {"none": build_verifier("none", [], {}).scheme}
    assert built == {scheme: scheme for scheme in SCHEMES}


@pytest.mark.parametrize(
    ("scheme", "secrets", "options", "message"),
    [
        ("gitub", ["s"], {}, "unknown auth scheme 'gitub' (known: github, gitlab"),
        (
            "github",
            ["s"],
            {"tolerance_seconds": 5},
            "auth scheme 'github': unknown option 'tolerance_seconds'",
        ),
        ("github", [], {}, "auth scheme 'github' needs a secret"),
        ("github", ["ok", ""], {}, "auth scheme 'github': secret #2 is empty or not text"),
        ("none", ["s"], {}, "auth scheme 'none' takes no secret"),
        (
            "stripe",
            ["s"],
            {"tolerance_seconds": "300"},
            "'tolerance_seconds' must be a positive whole number",
        ),
        ("slack", ["s"], {"tolerance_seconds": 0}, "'tolerance_seconds' must be a positive whole number"),
        ("slack", ["s"], {"tolerance_seconds": True}, "'tolerance_seconds' must be a positive whole number"),
        ("hmac", ["s"], {}, "auth scheme 'hmac': option 'header' is required"),
        ("hmac", ["s"], {"header": " "}, "option 'header' must name a header"),
        (
            "hmac",
            ["s"],
            {"header": "X", "algorithm": "md5"},
            "option 'algorithm' must be one of sha1, sha256, sha512",
        ),
        ("hmac", ["s"], {"header": "X", "encoding": "b32"}, "option 'encoding' must be one of hex, base64"),
        ("hmac", ["s"], {"header": "X", "prefix": 3}, "option 'prefix' must be a string"),
        ("basic", ["no-colon-secret"], {}, "auth scheme 'basic': secret #1 must be 'user:password'"),
        (
            "svix",
            [SWH_SECRET, "whsec_not base64!"],
            {},
            "auth scheme 'svix': secret #2 is not a signing secret",
        ),
    ],
)
def test_build_verifier_errors(scheme: str, secrets: list[str], options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        build_verifier(scheme, secrets, options)
    for secret in secrets:
        assert len(secret) < 2 or secret not in str(info.value)
