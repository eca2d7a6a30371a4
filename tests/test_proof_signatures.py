"""Proof: deliveries signed by independent implementations are accepted at the listener, and the
same deliveries with one byte changed are not.

The signers are not ocean-hook's: the `standardwebhooks` and `svix` packages (Standard Webhooks,
`webhook-*` and `svix-*` headers), the `stripe` package's own test-header helper, and Slack's
documented basestring with Slack's published example. Everything goes over real HTTP to one
`ocean-hook serve` child process; accepted deliveries must reach the catalog.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
import standardwebhooks
import stripe
import svix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proof_helpers import (
    HeaderPairs,
    flip_byte,
    flip_hex,
    header,
    poll,
    replace,
    send,
    slack_headers,
    slack_signature,
    standard_headers,
    start_listener,
    stop_listener,
    stripe_headers,
    whsec,
)
from serve_helpers import hook_env, write_config
from webhook_samples import catalog

from ocean_hook.config import Config, load_config

STRIPE_SECRET = "whsec_conformance-stripe-5b7d"
SLACK_SECRET = "conformance-slack-signing-secret"
STANDARD_SECRET = whsec(b"conformance-standard-webhooks-key!")
OTHER_STANDARD_SECRET = whsec(b"a key being rotated out, 32 bytes")
#: Slack's published example (api.slack.com/authentication/verifying-requests-from-slack)
SLACK_DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_DOC_TIMESTAMP = "1531420618"
SLACK_DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
SLACK_DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
FORM = "application/x-www-form-urlencoded"

ENV = {"OH_SIG_STRIPE": STRIPE_SECRET, "OH_SIG_SLACK": SLACK_SECRET, "OH_SIG_STANDARD": STANDARD_SECRET,
       "OH_SIG_SLACK_DOC": SLACK_DOC_SECRET}

conformance = settings(max_examples=15, deadline=None,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
titles = st.text(max_size=30)
#: where to change a byte, taken modulo the length (bodies vary with a counter hypothesis does not see)
positions = st.integers(0, 10**6)


def processor(name: str, preset: str, secret_env: str, items: str, **auth: Any) -> dict[str, Any]:
    return {"name": name, "preset": preset, "path": f"/webhooks/{name}", "kinds": ["pull-request"],
            "auth": {"secret": f"${{{secret_env}}}", **auth}, "items": items, "validate": [f"{items}.number != null"]}


PROCESSORS = [
    processor("standard", "standard-webhooks", "OH_SIG_STANDARD", ".data"),
    processor("svix", "standard-webhooks", "OH_SIG_STANDARD", ".data", scheme="svix"),
    processor("stripe", "stripe", "OH_SIG_STRIPE", ".data.object"),
    processor("slack", "slack", "OH_SIG_SLACK", ".event.pr // .pr"),
    # the published example is from 2018: its window is widened so its signature can be checked today
    processor("slack-doc", "slack", "OH_SIG_SLACK_DOC", ".pr", tolerance_seconds=10**10),
]


@dataclass
class Listener:
    url: str
    config: Config
    expected: dict[str, str] = field(default_factory=dict)  # identifier -> title the catalog must show
    numbers: Iterator[int] = field(default_factory=lambda: iter(range(1, 10**6)))

    def item(self, title: str) -> dict[str, Any]:
        number = next(self.numbers)
        return {"number": number, "title": title or f"PR {number}", "value": number, "state": "open"}

    def post(self, path: str, body: bytes, headers: HeaderPairs) -> tuple[int, str]:
        reply = send(self.url, "POST", path, body, headers)
        return reply.status, reply.reason

    def accepted(self, path: str, body: bytes, headers: HeaderPairs, item: dict[str, Any]) -> None:
        assert self.post(path, body, headers) == (202, "accepted")
        self.expected[str(item["number"])] = item["title"]

    def rejected(self, path: str, body: bytes, headers: HeaderPairs) -> None:
        status, reason = self.post(path, body, headers)
        named = reason.removeprefix("signature mismatch in header ")
        # the reason names the signature header the sender sent (never its value)
        assert status == 401 and named != reason, (status, reason)
        assert named.lower() in {name.lower() for name, _ in headers}, (reason, headers)

    def applied(self) -> None:
        def titles() -> dict[str, str]:
            return {key[1]: entity["title"] for key, entity in catalog(self.config).items()}

        poll(lambda: titles() == self.expected, what=lambda: f"catalog {titles()} == {self.expected}")


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    directory = tmp_path_factory.mktemp("signatures")
    config_path = write_config(directory, processors=PROCESSORS)
    env = hook_env(ENV)
    proc = start_listener(config_path, env)
    try:
        yield Listener(proc.url, load_config(config_path, env={**os.environ, **env}))
    finally:
        assert stop_listener(proc) == 0, proc.logs()[-3000:]


@pytest.fixture
def hooks(listener: Listener) -> Iterator[Listener]:
    """The listener; after the test, every accepted delivery must be in the catalog."""
    yield listener
    listener.applied()


def flip_base64_signature(value: str, index: int) -> str:
    """`v1,<base64>` with one byte of the decoded digest changed."""
    version, _, encoded = value.partition(",")
    digest = base64.b64decode(encoded)
    return version + "," + base64.b64encode(flip_byte(digest, index % len(digest))).decode()


def one_char_changed(text: str, index: int) -> str:
    index %= len(text)
    return text[:index] + ("b" if text[index] != "b" else "c") + text[index + 1 :]


# ----------------------------------------------------------------------------- Standard Webhooks / Svix


@given(title=titles, data=st.data())
@conformance
def test_standardwebhooks_package_signature_is_accepted_one_byte_changed_is_not(
    hooks: Listener, title: str, data: st.DataObject
) -> None:
    item = hooks.item(title)
    body = json.dumps({"type": "pr.updated", "data": item}).encode()
    msg_id = f"msg_{uuid.uuid4().hex}"
    headers = standard_headers(body, STANDARD_SECRET, msg_id=msg_id)
    # the package's own verifier agrees the headers are right
    assert standardwebhooks.Webhook(STANDARD_SECRET).verify(body, dict(headers)) == json.loads(body)
    index = data.draw(positions) % len(body)
    hooks.rejected("/webhooks/standard", flip_byte(body, index), headers)
    signature = header(headers, "webhook-signature")
    hooks.rejected("/webhooks/standard", body, replace(headers, "webhook-signature",
                                                       flip_base64_signature(signature, index)))
    hooks.rejected("/webhooks/standard", body, replace(headers, "webhook-id", one_char_changed(msg_id, index)))
    stamp = header(headers, "webhook-timestamp")
    hooks.rejected("/webhooks/standard", body, replace(headers, "webhook-timestamp", str(int(stamp) - 1)))
    hooks.accepted("/webhooks/standard", body, headers, item)


@given(title=titles, data=st.data())
@conformance
def test_svix_package_signature_is_accepted_one_byte_changed_is_not(
    hooks: Listener, title: str, data: st.DataObject
) -> None:
    item = hooks.item(title)
    body = json.dumps({"type": "pr.updated", "data": item}).encode()
    msg_id = f"msg_{uuid.uuid4().hex}"
    headers = standard_headers(body, STANDARD_SECRET, msg_id=msg_id, svix_names=True)
    svix.webhooks.Webhook(STANDARD_SECRET).verify(body, dict(headers))  # raises when it disagrees
    index = data.draw(positions) % len(body)
    path = data.draw(st.sampled_from(["/webhooks/svix", "/webhooks/standard"]))  # both header families, both
    hooks.rejected(path, flip_byte(body, index), headers)
    signature = header(headers, "svix-signature")
    hooks.rejected(path, body, replace(headers, "svix-signature", flip_base64_signature(signature, index)))
    hooks.accepted(path, body, headers, item)


def test_standard_webhooks_several_signatures_during_key_rotation(hooks: Listener) -> None:
    """The sender signs with the old and the new key, space separated: one match is enough."""
    item = hooks.item("rotation")
    body = json.dumps({"type": "pr.updated", "data": item}).encode()
    msg_id, stamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    ours = header(standard_headers(body, STANDARD_SECRET, msg_id=msg_id, timestamp=stamp), "webhook-signature")
    old = header(standard_headers(body, OTHER_STANDARD_SECRET, msg_id=msg_id, timestamp=stamp), "webhook-signature")
    headers = standard_headers(body, STANDARD_SECRET, msg_id=msg_id, timestamp=stamp)
    hooks.rejected("/webhooks/standard", body, replace(headers, "webhook-signature", old))
    hooks.accepted("/webhooks/standard", body, replace(headers, "webhook-signature", f"{old} {ours}"), item)


# ----------------------------------------------------------------------------- Stripe


@given(title=titles, data=st.data())
@conformance
def test_stripe_package_signature_is_accepted_one_byte_changed_is_not(
    hooks: Listener, title: str, data: st.DataObject
) -> None:
    item = hooks.item(title)
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "pr.updated",
                       "data": {"object": item}}, indent=2).encode()
    headers = stripe_headers(body, STRIPE_SECRET)
    value = header(headers, "Stripe-Signature")
    assert stripe.Webhook.construct_event(body.decode(), value, STRIPE_SECRET).id == json.loads(body)["id"]
    index = data.draw(positions) % len(body)
    hooks.rejected("/webhooks/stripe", flip_byte(body, index), headers)
    stamp, signature = value.split(",v1=")
    flipped = flip_hex(signature, index % len(signature))
    hooks.rejected("/webhooks/stripe", body, replace(headers, "Stripe-Signature", f"{stamp},v1={flipped}"))
    later = f"t={int(stamp.removeprefix('t=')) + 1},v1={signature}"
    hooks.rejected("/webhooks/stripe", body, replace(headers, "Stripe-Signature", later))
    hooks.accepted("/webhooks/stripe", body, headers, item)


def test_stripe_rolling_secret_sends_several_v1_signatures(hooks: Listener) -> None:
    item = hooks.item("rolling")
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "pr.updated", "data": {"object": item}}).encode()
    stamp = int(time.time())
    old = stripe.WebhookSignature.generate_signature_header(body.decode(), "whsec_old-secret", timestamp=stamp)
    new = stripe.WebhookSignature.generate_signature_header(body.decode(), STRIPE_SECRET, timestamp=stamp)
    both = f"{old},v1={new.split(',v1=')[1]}"
    headers = [("Content-Type", "application/json"), ("Stripe-Signature", old)]
    hooks.rejected("/webhooks/stripe", body, headers)
    hooks.accepted("/webhooks/stripe", body, replace(headers, "Stripe-Signature", both), item)


# ----------------------------------------------------------------------------- Slack


def test_slack_documented_example_passes_the_signature_check_at_the_listener(hooks: Listener) -> None:
    """Slack's published example: our signer reproduces the published signature, and the listener
    verifies it. The example is a slash command, a form without a JSON `payload` field, so past
    the signature the listener answers 400 (it takes JSON webhooks); one byte changed is 401."""
    assert slack_signature(SLACK_DOC_BODY, SLACK_DOC_SECRET, SLACK_DOC_TIMESTAMP) == SLACK_DOC_SIGNATURE
    headers = [("Content-Type", FORM), ("X-Slack-Request-Timestamp", SLACK_DOC_TIMESTAMP),
               ("X-Slack-Signature", SLACK_DOC_SIGNATURE)]
    assert hooks.post("/webhooks/slack-doc", SLACK_DOC_BODY, headers) == (
        400, "form-encoded body without a 'payload' field")
    for index in (0, len(SLACK_DOC_BODY) // 2, len(SLACK_DOC_BODY) - 1):
        hooks.rejected("/webhooks/slack-doc", flip_byte(SLACK_DOC_BODY, index), headers)
    for index in (3, 40, len(SLACK_DOC_SIGNATURE) - 1):
        hooks.rejected("/webhooks/slack-doc", SLACK_DOC_BODY,
                       replace(headers, "X-Slack-Signature", flip_hex(SLACK_DOC_SIGNATURE, index)))
    hooks.rejected("/webhooks/slack-doc", SLACK_DOC_BODY, replace(headers, "X-Slack-Request-Timestamp", "1531420619"))


@given(title=titles, data=st.data())
@conformance
def test_slack_documented_basestring_is_accepted_one_byte_changed_is_not(
    hooks: Listener, title: str, data: st.DataObject
) -> None:
    """An Events API delivery (JSON) and an interactivity one (form, JSON in `payload`), signed
    with the documented scheme the published example confirms above."""
    item = hooks.item(title)
    if data.draw(st.booleans()):
        body = json.dumps({"type": "event_callback", "event_id": f"Ev{uuid.uuid4().hex}",
                           "event": {"type": "pr", "pr": item}}).encode()
        headers = slack_headers(body, SLACK_SECRET)
    else:
        body = urlencode({"payload": json.dumps({"type": "block_actions", "pr": item})}).encode()
        headers = slack_headers(body, SLACK_SECRET, content_type=FORM)
    index = data.draw(positions) % len(body)
    hooks.rejected("/webhooks/slack", flip_byte(body, index), headers)
    signature = header(headers, "X-Slack-Signature")
    hooks.rejected("/webhooks/slack", body,
                   replace(headers, "X-Slack-Signature", flip_hex(signature, 3 + index % (len(signature) - 3))))
    hooks.accepted("/webhooks/slack", body, headers, item)
