"""Source presets: what `preset: github` fills in for a processor.

A preset names the auth scheme, where the event name is (a header or a jq on the body), and
where the sender's delivery id is. Anything the processor writes itself wins over the preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    name: str
    scheme: str
    path: str
    #: header holding the event name (`events:` is matched against it) ...
    event_header: str | None = None
    #: ... or a jq expression on the payload giving it
    event_query: str | None = None
    #: delivery id sources, tried in order: header names joined by ":" (all present), or a jq
    delivery_id: tuple[dict[str, object], ...] = field(default_factory=tuple)
    #: a jq giving what the sender's URL verification expects back (nothing for other deliveries)
    challenge: str | None = None
    doc: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "github", "github", "/webhooks/github", event_header="X-GitHub-Event",
            delivery_id=({"headers": ["X-GitHub-Hook-ID", "X-GitHub-Delivery"]},
                         {"headers": ["X-GitHub-Delivery"]}),
            doc="X-Hub-Signature-256 (HMAC-SHA256); event X-GitHub-Event; "
                "delivery X-GitHub-Hook-ID + X-GitHub-Delivery",
        ),
        Preset(
            "gitlab", "gitlab", "/webhooks/gitlab", event_header="X-Gitlab-Event",
            delivery_id=({"headers": ["Idempotency-Key"]}, {"headers": ["X-Gitlab-Event-UUID"]}),
            doc="X-Gitlab-Token (or webhook-signature); event X-Gitlab-Event; "
                "delivery Idempotency-Key, else X-Gitlab-Event-UUID",
        ),
        Preset(
            "jira", "jira", "/webhooks/jira", event_query=".webhookEvent",
            delivery_id=({"headers": ["X-Atlassian-Webhook-Identifier"]},),
            doc="X-Hub-Signature (HMAC-SHA256); event .webhookEvent; "
                "delivery X-Atlassian-Webhook-Identifier",
        ),
        Preset(
            "pagerduty", "pagerduty", "/webhooks/pagerduty", event_query=".event.event_type",
            delivery_id=({"headers": ["X-Webhook-Id"]}, {"query": ".event.id"}),
            doc="X-PagerDuty-Signature (v1=, any of several); event .event.event_type; "
                "delivery X-Webhook-Id",
        ),
        Preset(
            "stripe", "stripe", "/webhooks/stripe", event_query=".type",
            delivery_id=({"query": ".id"},),
            doc="Stripe-Signature (t=, v1=; 300 s tolerance); event .type; delivery the event's .id",
        ),
        Preset(
            "slack", "slack", "/webhooks/slack", event_query=".event.type // .type",
            delivery_id=({"query": ".event_id"},),
            challenge='select(.type == "url_verification") | .challenge',
            doc="X-Slack-Signature + X-Slack-Request-Timestamp (300 s); event .event.type; "
                "delivery .event_id; a signed url_verification is answered with its challenge",
        ),
        Preset(
            "standard-webhooks", "standard-webhooks", "/webhooks/standard", event_query=".type",
            delivery_id=({"headers": ["webhook-id"]}, {"headers": ["svix-id"]}),
            doc="webhook-id, webhook-timestamp, webhook-signature (v1,base64); event .type; "
                "delivery webhook-id",
        ),
    )
}
