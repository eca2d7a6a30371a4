"""Proof: bad input gets its documented 4xx, never a 5xx, is never stored, and cannot stop the
listener from serving real deliveries.

One `ocean-hook serve` child process takes everything in this module, hand-written and
hypothesis-generated: broken JSON, wrong media types, oversized and compressed bodies, deep
nesting, huge headers, broken HTTP framing, missing, duplicated and forged signatures, stale and
future timestamps, replays, unknown paths and methods, and slow clients. A valid signed delivery
(GitHub, Stripe, Slack or Standard Webhooks, in turn) is sent after every few bad ones; after each
test the journal must hold exactly the valid deliveries, all applied to the catalog.

The figures of the run are printed, and kept in benchmarks/results/ with OCEAN_HOOK_RECORD_PROOF=1.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import re
import socket
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from proof_helpers import (
    HeaderPairs,
    Reply,
    address,
    exchange,
    header,
    journaled,
    poll,
    record_result,
    replace,
    request_head,
    send,
    slack_headers,
    standard_headers,
    start_listener,
    stop_listener,
    stripe_headers,
    whsec,
)
from serve_helpers import HOOK_PATH, SECRET, github_headers, github_processor, hook_env, pr_payload, write_config
from webhook_samples import catalog

from ocean_hook.config import Config, load_config
from ocean_hook.queue.base import DeliveryState
from ocean_hook.server import BODY_TIMEOUT_SECONDS

LIMIT = 2 * 1024 * 1024  # server.max_body_bytes: 100k-level nested bodies (even form-encoded) fit under it
SHORT = 2  # tolerance_seconds of the *-short processors, for replays after the window closes
INTERLEAVE = 4  # a valid delivery after this many bad ones
TIMED = ("stripe", "slack", "standard")
SECRETS = {
    "stripe": ("OH_PROOF_STRIPE_SECRET", "whsec_proof-stripe-secret-3c9a"),
    "slack": ("OH_PROOF_SLACK_SECRET", "proof-slack-signing-secret-81d2"),
    "standard": ("OH_PROOF_STANDARD_SECRET", whsec(b"proof-standard-webhooks-key-7e5b")),
}
#: where each timed scheme puts the item, as the processor's `items:` and its check
ITEMS = {"stripe": ".data.object", "slack": ".event.pr", "standard": ".data"}
SIGNATURE_HEADER = {"github": "X-Hub-Signature-256", "stripe": "Stripe-Signature",
                    "slack": "X-Slack-Signature", "standard": "webhook-signature"}
PRESET = {"stripe": "stripe", "slack": "slack", "standard": "standard-webhooks"}

#: the listener is shared by all examples on purpose: `settled` checks the journal once, after the last one
hypothesis_settings = settings(max_examples=30, deadline=None,
                               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def timed_processor(scheme: str, *, short: bool) -> dict[str, Any]:
    env_name = SECRETS[scheme][0]
    auth: dict[str, Any] = {"secret": f"${{{env_name}}}"}
    if short:
        auth["tolerance_seconds"] = SHORT
    return {
        "name": scheme + ("-short" if short else ""),
        "preset": PRESET[scheme],
        "path": path_of(scheme, short=short),
        "kinds": ["pull-request"],
        "auth": auth,
        "items": ITEMS[scheme],
        "validate": [f"{ITEMS[scheme]}.number != null"],
    }


def path_of(scheme: str, *, short: bool = False) -> str:
    return f"/webhooks/{scheme}" + ("-short" if short else "") if scheme != "github" else HOOK_PATH


def gh(body: bytes, **options: Any) -> list[tuple[str, str]]:
    """GitHub's headers for `body`, as pairs (signed unless `secret=None`)."""
    return list(github_headers(body, **options).items())


def pr_item(number: int, value: int) -> dict[str, Any]:
    return {"number": number, "title": f"PR {number}", "value": value, "state": "open"}


def delivery(scheme: str, number: int, *, value: int = 1, timestamp: int | None = None,
             short: bool = False, extra: dict[str, Any] | None = None) -> tuple[str, bytes, list[tuple[str, Any]]]:
    """(path, body, headers) of a correctly signed delivery of PR `number` in `scheme`."""
    item = pr_item(number, value)
    path = path_of(scheme, short=short)
    secret = SECRETS.get(scheme, ("", ""))[1]
    if scheme == "github":
        body = json.dumps({**pr_payload(number, value=value), **(extra or {})}).encode()
        return path, body, gh(body)
    if scheme == "stripe":
        body = json.dumps({"id": f"evt_{number}", "object": "event", "type": "pr.updated",
                           "data": {"object": item}}).encode()
        return path, body, stripe_headers(body, secret, timestamp=timestamp)
    if scheme == "slack":
        body = json.dumps({"type": "event_callback", "event_id": f"Ev{number}",
                           "event": {"type": "pr", "pr": item}}).encode()
        return path, body, slack_headers(body, secret, timestamp=timestamp)
    body = json.dumps({"type": "pr.updated", "data": item}).encode()
    return path, body, standard_headers(body, secret, msg_id=f"msg_{number}", timestamp=timestamp)


def parse_problem(body: bytes) -> str | None:
    """What the listener's parser must report about `body` (None: it is JSON)."""
    try:
        value = json.loads(body, parse_constant=int)  # NaN, Infinity: not JSON (int() refuses them)
        json.dumps(value, ensure_ascii=False).encode()  # a lone surrogate is not text
    except RecursionError:
        return "malformed JSON: nested too deeply"
    except UnicodeDecodeError:
        return "body is not UTF-8 JSON"
    except ValueError:
        return "malformed JSON"
    return None


def parses(body: bytes) -> bool:
    return parse_problem(body) is None


def json_or_form(content_type: str) -> bool:
    """The media types the listener documents as accepted (everything else is 415)."""
    kind = content_type.split(";")[0].strip().lower()
    return kind in ("application/json", "text/json", "application/x-www-form-urlencoded") or kind.endswith("+json")


# ----------------------------------------------------------------------------- the listener


@dataclass
class Listener:
    """The listener under test and the tally of what it was sent and answered."""

    url: str
    config: Config
    logs: Callable[[], str]  # the listener's stderr so far
    numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    statuses: Counter[int] = field(default_factory=Counter)
    unanswered: int = 0  # slow clients still sending when the test ended
    expected: dict[int, int] = field(default_factory=dict)  # PR number -> value the catalog must show
    accepted: set[str] = field(default_factory=set)  # delivery ids answered 202
    duplicates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    _turn: Iterator[str] = field(default_factory=lambda: itertools.cycle(("github", *TIMED)))
    _since_valid: int = 0

    @property
    def bad_inputs(self) -> int:
        return sum(self.statuses.values()) + self.unanswered

    def bad(self, expected: int, method: str, path: str, body: bytes = b"", headers: HeaderPairs = (),
            *, chunk_size: int | None = None, words: tuple[str, ...] = ()) -> Reply:
        reply = send(self.url, method, path, body, headers, chunk_size=chunk_size)
        return self.judge(expected, reply, words, f"{method} {path}")

    def bad_raw(self, expected: int, data: bytes, words: tuple[str, ...] = (), *, case: str = "") -> Reply:
        return self.judge(expected, exchange(self.url, data), words, case or repr(data[:60]))

    def judge(self, expected: int, reply: Reply, words: tuple[str, ...], what: str) -> Reply:
        self.statuses[reply.status] += 1
        assert reply.status < 500, f"{what}: {reply.status} {reply.body[:300]!r}"
        assert reply.status == expected, f"{what}: expected {expected}, got {reply.status} {reply.body[:300]!r}"
        for word in words:
            assert word in reply.reason, f"{what}: {word!r} not in {reply.reason!r}"
        if reply.status == 200:
            self.duplicates += 1
        self._since_valid += 1
        if self._since_valid >= INTERLEAVE:
            self.valid()
        return reply

    def next_valid(self, scheme: str | None = None, **options: Any) -> tuple[int, str, bytes, list[tuple[str, Any]]]:
        number = next(self.numbers)
        return (number, *delivery(scheme or next(self._turn), number, value=number % 7, **options))

    def record(self, number: int, status: int, doc: Any) -> str:
        assert status == 202 and doc["status"] == "accepted", (status, doc)
        self.accepted.add(doc["delivery_id"])
        self.expected[number] = number % 7
        return str(doc["delivery_id"])

    def valid(self, scheme: str | None = None, **options: Any) -> tuple[str, bytes, list[tuple[str, Any]], str]:
        """Send a fresh, correctly signed delivery; it must be accepted. (path, body, headers, id)."""
        self._since_valid = 0
        number, path, body, headers = self.next_valid(scheme, **options)
        reply = send(self.url, "POST", path, body, headers)
        return path, body, headers, self.record(number, reply.status, reply.doc)

    def metrics(self) -> str:
        return send(self.url, "GET", "/metrics").body.decode()

    def settle(self, timeout: float = 15.0) -> None:
        """The journal holds exactly the accepted deliveries, each done once, all in the catalog."""
        deadline = time.monotonic() + timeout
        while True:
            deliveries = journaled(self.config.state_dir)
            entities = catalog(self.config)
            applied = {int(k[1]): e["properties"]["value"] for k, e in entities.items()}
            done = all(d.state == DeliveryState.DONE for d in deliveries)
            if done and len(deliveries) == len(self.accepted) and applied == self.expected:
                break
            if time.monotonic() > deadline:
                stuck = [(d.delivery_id, d.state, d.last_error) for d in deliveries if d.state != DeliveryState.DONE]
                raise AssertionError(f"not settled: {len(deliveries)} journaled, {len(self.accepted)} accepted, "
                                     f"{len(applied)}/{len(self.expected)} applied, unfinished {stuck[:5]}")
            time.sleep(0.02)
        assert {d.delivery_id for d in deliveries} == self.accepted  # nothing bad was stored
        assert all(d.attempts == 1 for d in deliveries)  # and nothing was processed twice
        # a worker counts a delivery once its ack is durable, a moment after others can read it
        poll(lambda: metric_sum(self.metrics(), "ocean_hook_deliveries_processed_total") >= len(self.accepted),
             what=lambda: f"processed_total below {len(self.accepted)}", timeout=max(deadline - time.monotonic(), 2))
        metrics = self.metrics()
        assert metric_sum(metrics, "ocean_hook_deliveries_processed_total") == len(self.accepted)
        assert metric_sum(metrics, "ocean_hook_deliveries_duplicate_total") == self.duplicates
        assert metric_sum(metrics, "ocean_hook_deliveries_received_total", status="5") == 0
        assert not failures_logged(self.logs())

    def write_results(self, seconds: float) -> None:
        deliveries = journaled(self.config.state_dir)
        record_result("proof_bad_input", {
            "bad_inputs": self.bad_inputs,
            "5xx": sum(n for status, n in self.statuses.items() if status >= 500),
            "5xx_in_listener_metrics": metric_sum(self.metrics(), "ocean_hook_deliveries_received_total", status="5"),
            "stored": len([d for d in deliveries if d.delivery_id not in self.accepted]),
            "answers": {str(status): n for status, n in sorted(self.statuses.items())},
            "unanswered_slow_clients": self.unanswered,
            "duplicates_answered_200": self.duplicates,
            "valid_deliveries_accepted": len(self.accepted),
            "valid_deliveries_applied": len([d for d in deliveries if d.state == DeliveryState.DONE]),
            **self.extra,
            "seconds": round(seconds, 1),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })


def failures_logged(logs: str) -> list[str]:
    """Log entries at ERROR, ocean-hook's or aiohttp's: what a sender does is no error of the
    listener's (aiohttp's tracebacks for a bad Content-Encoding or a sender hanging up included)."""
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", logs)
    return [e for e in entries if " ERROR " in e or "Traceback" in e]


def metric_sum(metrics: str, name: str, *, status: str = "") -> float:
    """A sample summed over its labels (only `status` codes starting with `status`)."""
    return sum(sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
               if sample.name == name and sample.labels.get("status", "").startswith(status))


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    directory = tmp_path_factory.mktemp("bad-input")
    processors = [github_processor()] + [timed_processor(s, short=short) for s in TIMED for short in (False, True)]
    config_path = write_config(directory, processors=processors, server={"max_body_bytes": LIMIT, "workers": 4})
    env = hook_env(dict(SECRETS.values()))
    started = time.monotonic()
    proc = start_listener(config_path, env)
    probe = Listener(proc.url, load_config(config_path, env={**os.environ, **env}), proc.logs)
    try:
        yield probe
        probe.write_results(time.monotonic() - started)
    finally:
        assert stop_listener(proc) == 0, proc.logs()[-3000:]


@pytest.fixture
def settled(listener: Listener) -> Iterator[Listener]:
    """The listener, checked after the test: every valid delivery applied, nothing else stored."""
    yield listener
    listener.valid()
    listener.settle()


# ----------------------------------------------------------------------------- the body


@given(title=st.text(max_size=40), data=st.data())
@hypothesis_settings
def test_truncated_json_signed_is_400(settled: Listener, title: str, data: st.DataObject) -> None:
    body = json.dumps(pr_payload(9, title=title)).encode()
    part = body[: data.draw(st.integers(0, len(body) - 1))]
    reply = settled.bad(400, "POST", HOOK_PATH, part, gh(part))
    assert reply.reason.startswith("malformed JSON at line 1 column ")


@given(body=st.binary(max_size=300))
@hypothesis_settings
def test_arbitrary_bytes_signed_are_400(settled: Listener, body: bytes) -> None:
    assume(not parses(body))
    reply = settled.bad(400, "POST", HOOK_PATH, body, gh(body))
    assert reply.reason.startswith(("malformed JSON at line", "body is not UTF-8 JSON")), reply.reason


@given(prefix=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'),
                      max_size=20),
       invalid=st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xc3(", b"\xed\xa0\x80", b"\xf5\x80\x80\x80",
                                b"\xc0\xaf"]))
@hypothesis_settings
def test_non_utf8_bytes_signed_are_400(settled: Listener, prefix: str, invalid: bytes) -> None:
    body = b'{"action": "opened", "pull_request": {"number": 3, "title": "' + prefix.encode() + invalid + b'"}}'
    settled.bad(400, "POST", HOOK_PATH, body, gh(body), words=("body is not UTF-8 JSON",))


DEEP = 100_000
DEEP_BODIES = {
    "arrays": b"[" * DEEP + b"]" * DEEP,
    "objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "mixed, inside a real payload": json.dumps(pr_payload(5)).encode()[:-1] + b', "x": ' + b'[{"a":' * (DEEP // 2)
    + b"0" + b"}]" * (DEEP // 2) + b"}",
    "unclosed": b"[" * DEEP,
}


@pytest.mark.parametrize("shape", DEEP_BODIES)
def test_json_nested_100k_levels_is_400_signed_and_401_forged(settled: Listener, shape: str) -> None:
    body = DEEP_BODIES[shape]
    reason = parse_problem(body)
    assert reason is not None
    settled.bad(400, "POST", HOOK_PATH, body, gh(body), words=(reason,))
    settled.bad(401, "POST", HOOK_PATH, body, gh(body, secret="forger"), words=("signature mismatch",))
    form = urlencode({"payload": body.decode()}).encode()
    assert len(form) <= LIMIT
    settled.bad(400, "POST", HOOK_PATH, form, gh(form, content_type="application/x-www-form-urlencoded"),
                words=(reason,))


def test_a_number_too_long_for_python_is_400_never_500(settled: Listener) -> None:
    """Python refuses to convert an integer of over 4300 digits (a guard against quadratic time)
    with a plain ValueError, not json's JSONDecodeError: the door answered it 500."""
    body = json.dumps(pr_payload(5)).encode()[:-1] + b', "n": ' + b"9" * 5000 + b"}"
    settled.bad(400, "POST", HOOK_PATH, body, gh(body), words=("malformed JSON: a number has more than 4300 digits",))
    settled.bad(401, "POST", HOOK_PATH, body, gh(body, secret="forger"), words=("signature mismatch",))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_400_not_stored_as_null_or_a_huge_number(settled: Listener, constant: str) -> None:
    """Python's parser takes them; jq read NaN as null and Infinity as 1.8e308, which went to the catalog."""
    body = json.dumps(pr_payload(5)).encode()[:-1] + b', "n": ' + constant.encode() + b"}"
    settled.bad(400, "POST", HOOK_PATH, body, gh(body), words=(f"malformed JSON: {constant} is not a JSON number",))


@pytest.mark.parametrize("escape", ["\\ud83d", "\\udc00", "\\ude00\\ud83d"])
def test_a_lone_surrogate_escape_is_400_not_a_false_422_or_ignored(settled: Listener, escape: str) -> None:
    """Valid JSON syntax but not Unicode text: jq cannot read the payload, so every check on it
    failed (a 422 naming a field that is there) and every event filter missed (202 ignored, lost)."""
    payload = json.dumps(pr_payload(5, title="half an emoji")).replace("half an emoji", escape)
    body = payload.encode()
    settled.bad(400, "POST", HOOK_PATH, body, gh(body), words=("malformed JSON: a \\u escape is half of a surrogate",))
    path, good, _ = delivery("stripe", next(settled.numbers))
    stripe = good.replace(b'"evt_', f'"{escape}evt_'.encode())
    settled.bad(400, "POST", path, stripe, stripe_headers(stripe, SECRETS["stripe"][1]), words=("surrogate",))


def test_numbers_past_64_bits_are_accepted_and_applied(settled: Listener) -> None:
    settled.valid("github", extra={"id128": 2**127 + 1, "big": -(10**4000), "far": 1e308})


def test_deep_but_legal_json_is_accepted_and_applied(settled: Listener) -> None:
    settled.valid("github", extra={"deep": json.loads("[" * 500 + "]" * 500)})


WELL_FORMED_BUT_INVALID = [b"[]", b'"text"', b"null", b"42", b'{"action": "opened"}',
                           b'{"pull_request": {"number": null}}', b'{"pull_request": 7}']


def test_well_formed_json_failing_validation_is_422(settled: Listener) -> None:
    for body in WELL_FORMED_BUT_INVALID:
        settled.bad(422, "POST", HOOK_PATH, body, gh(body), words=("payload fails validation",))


def test_form_encoded_without_payload_or_with_broken_json_is_400(settled: Listener) -> None:
    form = "application/x-www-form-urlencoded"
    for body, reason in [(b"action=opened&number=1", "without a 'payload' field"),
                         (b"", "without a 'payload' field"),
                         (urlencode({"payload": '{"action": '}).encode(), "malformed JSON"),
                         (b"payload=%FF%FE", "not UTF-8"),
                         (json.dumps(pr_payload(4)).encode(), "without a 'payload' field")]:
        settled.bad(400, "POST", HOOK_PATH, body, gh(body, content_type=form), words=(reason,))


# ----------------------------------------------------------------------------- media types


@given(content_type=st.from_regex(r"[a-z]{1,12}/[a-z0-9.+-]{1,20}(; ?charset=[a-z0-9-]{1,10})?", fullmatch=True))
@hypothesis_settings
def test_generated_content_types_are_415(settled: Listener, content_type: str) -> None:
    assume(not json_or_form(content_type))
    body = json.dumps(pr_payload(8)).encode()
    settled.bad(415, "POST", HOOK_PATH, body, gh(body, content_type=content_type),
                words=("unsupported Content-Type", content_type.split(";")[0]))


WRONG_CONTENT_TYPES = [None, "", "text/plain", "application/xml", "application/octet-stream",
                       "multipart/form-data; boundary=x", "application/jsonp", "json", "application/json-seq",
                       "text/html; charset=utf-8"]


def test_missing_and_wrong_content_types_are_415_signed_or_not(settled: Listener) -> None:
    body = json.dumps(pr_payload(8)).encode()
    for content_type in WRONG_CONTENT_TYPES:
        for secret in (None, "forger", SECRET):
            headers = replace(gh(body, secret=secret), "Content-Type", content_type)
            settled.bad(415, "POST", HOOK_PATH, body, headers, words=("unsupported Content-Type",))


# ----------------------------------------------------------------------------- size and encoding


def padded(size: int, number: int = 1, value: int = 0) -> bytes:
    """A valid pull-request payload of exactly `size` bytes."""
    body = json.dumps({**pr_payload(number, value=value), "pad": ""}).encode()
    return body[:-2] + b"x" * (size - len(body)) + body[-2:]


def test_body_over_the_limit_is_413_with_length_chunked_or_compressed(settled: Listener) -> None:
    over = padded(LIMIT + 1)
    for headers in (gh(over), gh(over, secret=None)):
        settled.bad(413, "POST", HOOK_PATH, over, headers, words=("byte limit",))
        settled.bad(413, "POST", HOOK_PATH, over, headers, chunk_size=64 * 1024, words=("byte limit",))
    # a length announced far over the limit is refused before any body is read
    settled.bad_raw(413, request_head("POST", HOOK_PATH, [*gh(b"{}"), ("Content-Length", str(10**12))]),
                    words=("byte limit",))
    # the limit holds for what the body inflates to, not what travels: a 50 MiB gzip bomb
    bomb = gzip.compress(b" " * 50 * 1024 * 1024)
    settled.bad(413, "POST", HOOK_PATH, bomb, [*gh(bomb), ("Content-Encoding", "gzip")], words=("byte limit",))
    bomb = zlib.compress(b"[" * 50 * 1024 * 1024)
    settled.bad(413, "POST", HOOK_PATH, bomb, [*gh(bomb), ("Content-Encoding", "deflate")], chunk_size=8192,
                words=("byte limit",))


def test_body_of_exactly_the_limit_is_accepted(settled: Listener) -> None:
    number = next(settled.numbers)
    body = padded(LIMIT, number, value=number % 7)
    assert len(body) == LIMIT and parses(body)
    for chunk_size in (None, 50_000):
        reply = send(settled.url, "POST", HOOK_PATH, body, gh(body), chunk_size=chunk_size)
        settled.record(number, reply.status, reply.doc)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_body_that_does_not_decode_as_its_content_encoding_is_400(settled: Listener, encoding: str) -> None:
    body = json.dumps(pr_payload(6)).encode()
    settled.bad(400, "POST", HOOK_PATH, body, [*gh(body), ("Content-Encoding", encoding)])


@pytest.mark.parametrize("encoding", ["compress", "x-gzip", "gzip, identity", "identity, gzip", "foo"])
def test_a_content_encoding_the_listener_does_not_decode_is_415(settled: Listener, encoding: str) -> None:
    """A coding aiohttp leaves as it is reached the checks still encoded: `foo` or `compress` over
    plain JSON was journaled as if no coding were named, `x-gzip` failed its signature with a
    401 that said nothing of the coding (found by probing)."""
    body = json.dumps(pr_payload(6)).encode()
    sent = gzip.compress(body) if "gzip" in encoding else body
    settled.bad(415, "POST", HOOK_PATH, sent, [*gh(body), ("Content-Encoding", encoding)],
                words=("unsupported Content-Encoding", json.dumps(encoding)))


# ----------------------------------------------------------------------------- headers and framing


def test_huge_headers_hit_aiohttps_limit_400(settled: Listener) -> None:
    body = json.dumps(pr_payload(2)).encode()
    cases: list[tuple[str, HeaderPairs]] = [
        ("one 9000-byte header", [*gh(body), ("X-Padding", "a" * 9000)]),
        ("a 9000-byte signature", replace(gh(body), "X-Hub-Signature-256", "sha256=" + "ab" * 4500)),
        ("200 headers", [*gh(body), *((f"X-Extra-{i}", "v") for i in range(200))]),
        ("a 20000-byte header name", [*gh(body), ("X-" + "n" * 20000, "v")]),
    ]
    for _name, headers in cases:
        settled.bad(400, "POST", HOOK_PATH, body, headers)
    settled.bad(400, "POST", HOOK_PATH + "?" + "q" * 9000, body, gh(body))


def test_a_sender_hanging_up_mid_body_is_no_error(settled: Listener) -> None:
    body = json.dumps(pr_payload(7)).encode()
    with socket.create_connection(address(settled.url)) as sock:
        sock.sendall(request_head("POST", HOOK_PATH, [*gh(body), ("Content-Length", str(len(body)))]) + body[:10])
        time.sleep(0.2)
    settled.unanswered += 1  # `settled` checks the log after the test: no ERROR, no traceback


def raw_post(*extra: tuple[str, str], body: bytes = b"{}", length: bool = True) -> bytes:
    headers = [*gh(body), *extra] + ([("Content-Length", str(len(body)))] if length else [])
    return request_head("POST", HOOK_PATH, headers) + body


BROKEN_HTTP = {
    "duplicate Content-Length": raw_post(("Content-Length", "3")),
    "Content-Length and Transfer-Encoding": raw_post(("Transfer-Encoding", "chunked")),
    "Content-Length not a number": raw_post(("Content-Length", "ten"), length=False),
    "negative Content-Length": raw_post(("Content-Length", "-1"), length=False),
    "bad chunk size": raw_post(("Transfer-Encoding", "chunked"), length=False, body=b"zz\r\n{}\r\n0\r\n\r\n"),
    "chunk longer than announced": raw_post(("Transfer-Encoding", "chunked"), length=False,
                                            body=b"1\r\n{}\r\n0\r\n\r\n"),
    "Transfer-Encoding gzip": raw_post(("Transfer-Encoding", "gzip"), length=False),
    "NUL in a header": raw_post(("X-Nul", "a\x00b")),
    "folded header line": raw_post(("X-Fold", "a\r\n b")),
    "space before colon": request_head("POST", HOOK_PATH, [("X-Hub-Signature-256 ", "sha256=00")]),
    "bare LF line endings": raw_post().replace(b"\r\n", b"\n"),
    "method with a bad character": b"PO@ST " + HOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "unknown method token": b"FETCH " + HOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "not HTTP at all (TLS hello)": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "bad HTTP version": raw_post().replace(b"HTTP/1.1", b"HTTP/9.7", 1),
    "control character in the path": b"POST /webhooks/\x01github HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
}


def test_broken_http_framing_is_400(settled: Listener) -> None:
    for case, data in BROKEN_HTTP.items():
        settled.bad_raw(400, data, case=case)


def test_a_delivery_id_header_that_is_not_utf8_is_400_and_the_listener_stays_ready(settled: Listener) -> None:
    """GitHub signs the body, not the headers: whoever holds one signed body can resend it with a
    delivery id of raw bytes, which neither queue can store. It used to be a 503 that marked the
    listener not ready (a 500 on Redis)."""
    body = json.dumps(pr_payload(next(settled.numbers))).encode()
    headers = replace(gh(body), "X-GitHub-Delivery", b"d\xff")
    settled.bad(400, "POST", HOOK_PATH, body, headers, words=("delivery id header is not UTF-8",))
    assert send(settled.url, "GET", "/readyz").status == 200
    metrics = send(settled.url, "GET", "/metrics").body.decode()
    assert 'ocean_hook_deliveries_rejected_total{reason="bad_delivery_id"} 1.0' in metrics  # not bad_json


def test_a_delivery_id_far_longer_than_any_senders_is_400(settled: Listener) -> None:
    """A 7,000-character id was journaled and written whole into every log line of the delivery
    (found by probing); 400 characters still pass."""
    body = json.dumps(pr_payload(next(settled.numbers))).encode()
    settled.bad(400, "POST", HOOK_PATH, body, replace(gh(body), "X-GitHub-Delivery", "d" * 513),
                words=("the delivery id is over 512 characters",))
    number = next(settled.numbers)
    body = json.dumps(pr_payload(number, value=number % 7)).encode()
    reply = send(settled.url, "POST", HOOK_PATH, body, replace(gh(body), "X-GitHub-Delivery", "e" * 400))
    settled.record(number, reply.status, reply.doc)


def test_a_repeated_event_header_is_400_not_read_as_its_first_value(settled: Listener) -> None:
    """GitHub signs the body only: `X-GitHub-Event: issues` and `pull_request` together were
    processed as whichever came first."""
    body = json.dumps(pr_payload(next(settled.numbers))).encode()
    headers = [*gh(body), ("X-GitHub-Event", "issues")]
    settled.bad(400, "POST", HOOK_PATH, body, headers, words=("duplicated header X-GitHub-Event",))


def test_a_repeated_delivery_id_header_is_400_not_read_as_its_first_value(settled: Listener) -> None:
    """Two `X-GitHub-Delivery` values were taken as the first: the id that de-duplicates the
    delivery was whichever a relay put first (found by probing)."""
    body = json.dumps(pr_payload(next(settled.numbers))).encode()
    headers = [*gh(body), ("X-GitHub-Delivery", "another-id")]
    settled.bad(400, "POST", HOOK_PATH, body, headers, words=("duplicated header X-GitHub-Delivery", "one id"))


def test_expect_100_continue_over_the_limit_is_413_at_once(settled: Listener) -> None:
    """It was `100 Continue`, then 413: the sender was asked to upload the whole body first
    (found by probing). Under the limit, the 100 still comes."""
    for length, first in ((LIMIT + 1, b"HTTP/1.1 413 "), (10, b"HTTP/1.1 100 Continue")):
        head = request_head("POST", HOOK_PATH, [*gh(b"{}"), ("Content-Length", str(length)),
                                                ("Expect", "100-continue")])
        with socket.create_connection(address(settled.url), timeout=10) as sock:
            sock.sendall(head)
            assert sock.recv(4096).startswith(first), length
    settled.bad_raw(413, head.replace(b"Content-Length: 10", f"Content-Length: {LIMIT + 1}".encode()),
                    words=("byte limit",))


def test_unknown_expectation_is_417(settled: Listener) -> None:
    settled.bad_raw(417, raw_post(("Expect", "the-unexpected")))


# ----------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("scheme", ["github", *TIMED])
def test_missing_duplicated_and_empty_signature_headers_are_401(settled: Listener, scheme: str) -> None:
    path, body, headers = delivery(scheme, next(settled.numbers))
    name = SIGNATURE_HEADER[scheme]
    signature = header(headers, name)
    settled.bad(401, "POST", path, body, replace(headers, name, None), words=("missing header", name))
    settled.bad(401, "POST", path, body, [*headers, (name, signature)], words=("duplicated header", name))
    settled.bad(401, "POST", path, body, [(name, "v1=00"), *headers], words=("duplicated header", name))
    settled.bad(401, "POST", path, body, replace(headers, name, ""), words=("empty", name))
    settled.bad(401, "POST", path, body, replace(headers, name, b"sha256=\xff\xfe"), words=(name,))
    for stamp in {"stripe": [], "slack": ["X-Slack-Request-Timestamp"], "standard": ["webhook-timestamp", "webhook-id"],
                  "github": []}[scheme]:
        settled.bad(401, "POST", path, body, replace(headers, stamp, None), words=("missing header", stamp))
        settled.bad(401, "POST", path, body, [*headers, (stamp, header(headers, stamp))], words=("duplicated",))


@given(signed=st.text(max_size=200).map(str.encode), sent=st.binary(max_size=200),
       scheme=st.sampled_from(["github", *TIMED]))
@hypothesis_settings
def test_signature_for_another_body_is_401(settled: Listener, signed: bytes, sent: bytes, scheme: str) -> None:
    assume(signed != sent)
    path = path_of(scheme)
    headers = {
        "github": lambda: gh(signed),
        "stripe": lambda: stripe_headers(signed, SECRETS["stripe"][1]),
        "slack": lambda: slack_headers(signed, SECRETS["slack"][1]),
        "standard": lambda: standard_headers(signed, SECRETS["standard"][1], msg_id="msg_x"),
    }[scheme]()
    settled.bad(401, "POST", path, sent, headers, words=("signature mismatch",))


HEADER_BYTES = [*range(0x20, 0x7F), *range(0x80, 0x100)]


@given(value=st.lists(st.sampled_from(HEADER_BYTES), max_size=120).map(bytes),
       scheme=st.sampled_from(["github", *TIMED]))
@hypothesis_settings
def test_arbitrary_signature_header_values_are_401(settled: Listener, value: bytes, scheme: str) -> None:
    path, body, headers = delivery(scheme, 1)
    settled.bad(401, "POST", path, body, replace(headers, SIGNATURE_HEADER[scheme], value))


@given(scheme=st.sampled_from(TIMED), offset=st.integers(310, 10**9), future=st.booleans())
@hypothesis_settings
def test_stale_and_future_timestamps_are_401(settled: Listener, scheme: str, offset: int, future: bool) -> None:
    stamp = int(time.time()) + (offset if future else -offset)
    path, body, headers = delivery(scheme, next(settled.numbers), timestamp=stamp)
    words = ("timestamp outside the 300 s window", "in the future" if future else "s old")
    settled.bad(401, "POST", path, body, headers, words=words)


@pytest.mark.parametrize("scheme", TIMED)
def test_timestamp_inside_the_window_is_accepted(settled: Listener, scheme: str) -> None:
    for offset in (-250, 250):
        settled.valid(scheme, timestamp=int(time.time()) + offset)


# ----------------------------------------------------------------------------- replays


@pytest.mark.parametrize("scheme", ["github", *TIMED])
def test_replay_inside_the_window_is_200_duplicate_and_processed_once(settled: Listener, scheme: str) -> None:
    path, body, headers, delivery_id = settled.valid(scheme)
    for _ in range(3):
        reply = settled.bad(200, "POST", path, body, headers, words=("duplicate",))
        assert reply.doc["delivery_id"] == delivery_id


def test_a_signed_slack_url_verification_gets_its_challenge_back_and_is_not_stored(settled: Listener) -> None:
    """Slack sends no event to a URL until it has answered this; `settled` checks nothing was journaled."""
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = json.dumps({"token": "t", "challenge": challenge, "type": "url_verification"}).encode()
    reply = send(settled.url, "POST", path_of("slack"), body, slack_headers(body, SECRETS["slack"][1]))
    assert (reply.status, reply.doc) == (200, {"challenge": challenge})
    settled.bad(401, "POST", path_of("slack"), body, slack_headers(body, "forged"), words=("signature mismatch",))


def test_stripe_retry_resigned_later_is_a_duplicate(settled: Listener) -> None:
    path, body, _, delivery_id = settled.valid("stripe")
    resigned = stripe_headers(body, SECRETS["stripe"][1], timestamp=int(time.time()) + 5)
    assert settled.bad(200, "POST", path, body, resigned, words=("duplicate",)).doc["delivery_id"] == delivery_id


def test_replay_after_the_window_closed_is_401(settled: Listener) -> None:
    sent = [settled.valid(scheme, short=True) for scheme in TIMED]
    time.sleep(SHORT + 1.5)
    for path, body, headers, _ in sent:
        settled.bad(401, "POST", path, body, headers, words=(f"timestamp outside the {SHORT} s window", "s old"))


# ----------------------------------------------------------------------------- paths and methods


def test_other_methods_on_a_webhook_path_are_405(settled: Listener) -> None:
    body = json.dumps(pr_payload(1)).encode()
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "HEAD"):
        for path in [HOOK_PATH, *(path_of(s) for s in TIMED)]:
            reply = settled.bad(405, method, path, body if method != "HEAD" else b"", gh(body))
            assert reply.headers.get("Allow") == "POST"
            if method != "HEAD":
                assert reply.reason == f"method {method} not allowed; use POST"


UNKNOWN_PATHS = ["/", "/webhooks", "/webhooks/", "/webhooks/github/", "/webhooks/GITHUB", "/webhooks/gitlab",
                 "//webhooks/github", "/webhooks/x/../github", "/webhooks/github%2F", "/webhooks/github/extra",
                 "/healthz/x", "/metrics/../webhooks/github", "/%00", "/webhooks/github;x",
                 "/webhooks/github%0a", "/%0d%0a"]  # an encoded newline got aiohttp's own text 404


def test_unknown_paths_are_404_whatever_the_method(settled: Listener) -> None:
    body = json.dumps(pr_payload(1)).encode()
    for path in UNKNOWN_PATHS:
        for method in ("POST", "GET", "PUT", "DELETE"):
            settled.bad(404, method, path, body, gh(body), words=("no processor listens on",))


def test_a_path_one_trailing_slash_away_from_a_route_is_404_naming_the_route(settled: Listener) -> None:
    body = json.dumps(pr_payload(1)).encode()
    reply = settled.bad(404, "POST", HOOK_PATH + "/", body, gh(body))
    assert reply.reason == f"no processor listens on {HOOK_PATH}/ (one listens on {HOOK_PATH})"
    assert "one listens" not in settled.bad(404, "POST", HOOK_PATH + "//", body, gh(body)).reason


def test_a_path_with_an_escaped_slash_is_404_saying_so(settled: Listener) -> None:
    """`/webhooks%2Fgithub` was answered "no processor listens on /webhooks/github", the very
    path of a processor (found by probing)."""
    body = json.dumps(pr_payload(1)).encode()
    escaped = HOOK_PATH.replace("/", "%2F", 2).replace("%2F", "/", 1)
    reply = settled.bad(404, "POST", escaped, body, gh(body))
    assert reply.reason == f"no processor listens on {escaped}: an escaped '/' (%2F) is not a '/'"


def test_post_to_operations_endpoints_is_405(settled: Listener) -> None:
    body = json.dumps(pr_payload(1)).encode()
    for path in ("/healthz", "/readyz", "/metrics"):
        reply = settled.bad(405, "POST", path, body, gh(body), words=("method POST not allowed; use GET or HEAD",))
        assert reply.headers["Allow"] == "GET, HEAD"  # both are answered (it said GET: found by probing)
        assert send(settled.url, "HEAD", path).status == 200


# ----------------------------------------------------------------------------- slow clients

SLOW_CONNECTIONS = 50
TRICKLE_SECONDS = 0.2


async def trickle(url: str, head: bytes, slow: bytes, stop: asyncio.Event) -> int | None:
    """Send `head` at once, then `slow` one byte every TRICKLE_SECONDS: the status the listener
    answered, 0 if it closed the connection without one, None if it was still waiting at `stop`."""
    reader, writer = await asyncio.open_connection(*address(url))
    answer = asyncio.ensure_future(reader.readline())
    try:
        writer.write(head)
        for byte in slow:
            if stop.is_set() or answer.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.wait({answer}, timeout=TRICKLE_SECONDS)
    except ConnectionError:
        await asyncio.wait({answer}, timeout=1)
    finally:
        writer.close()
    if not answer.done():
        answer.cancel()
        return None
    line = answer.result() if not answer.exception() else b""
    return int(line.split()[1]) if line else 0


async def test_slow_clients_cannot_hold_the_listener(settled: Listener) -> None:
    """50 connections trickle one byte at a time (half in the headers, half in the body) while valid
    deliveries keep coming: each valid one is answered promptly, and every slow body is cut off
    with 408 once BODY_TIMEOUT_SECONDS have passed."""
    assert BODY_TIMEOUT_SECONDS <= 15, "this test waits for the body timeout"
    body = json.dumps(pr_payload(1)).encode()
    slow_head = request_head("POST", HOOK_PATH, gh(body))[:-2] + b"X-Padding: " + b"p" * 400 + b"\r\n\r\n"
    body_head = request_head("POST", HOOK_PATH, [*gh(body), ("Content-Length", "4096")])
    stop = asyncio.Event()
    half = SLOW_CONNECTIONS // 2
    slow_headers = [asyncio.create_task(trickle(settled.url, b"", slow_head, stop)) for _ in range(half)]
    slow_bodies = [asyncio.create_task(trickle(settled.url, body_head, b" " * 4096, stop))
                   for _ in range(SLOW_CONNECTIONS - half)]
    latencies: list[float] = []
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while not all(t.done() for t in slow_bodies) and time.monotonic() - started < BODY_TIMEOUT_SECONDS + 5:
            number, path, body, headers = settled.next_valid()
            sent = time.monotonic()
            async with http.post(settled.url + path, data=body, headers=headers) as response:
                settled.record(number, response.status, await response.json())
            latencies.append(time.monotonic() - sent)
            await asyncio.sleep(0.1)
    stop.set()
    body_answers = await asyncio.gather(*slow_bodies)
    header_answers = await asyncio.gather(*slow_headers)
    for status in [*body_answers, *header_answers]:
        if status is None:
            settled.unanswered += 1
        else:
            settled.statuses[status] += 1
    settled.extra["slowloris"] = {
        "connections": SLOW_CONNECTIONS, "seconds": round(time.monotonic() - started, 1),
        "valid_answered_meanwhile": len(latencies), "valid_max_seconds": round(max(latencies), 3),
        "slow_bodies_cut_off_408": body_answers.count(408),
        "slow_headers_still_waiting": header_answers.count(None),
    }
    assert body_answers == [408] * len(slow_bodies)
    assert set(header_answers) <= {None, 408}, header_answers  # still waiting or cut off, never a 5xx
    assert len(latencies) >= BODY_TIMEOUT_SECONDS * 4
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
