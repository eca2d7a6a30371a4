"""A webhook processor written in Python, for a source no preset covers.

"deploybot" (a fictional deployment tool) POSTs one JSON document per deployment event:

    {"action": "started" | "finished" | "deleted", "deployment": {"id": ..., "service": ..., ...}}

with the headers X-DeployBot-Event: deployment, X-DeployBot-Delivery: <uuid> and
X-DeployBot-Signature: sha256=<hex HMAC-SHA256 of the body>. The signature is checked by the
`auth:` the config gives this processor (scheme hmac); the class decides what the event means.

ocean-hook.yaml names it as `class: my_processor:DeployBotProcessor`; the loader imports
`my_processor` from the folder of that ocean-hook.yaml first, so no package install is needed.
"""

from __future__ import annotations

from typing import Any

from ocean_hook.auth.base import Verdict
from ocean_hook.events import WebhookEvent
from ocean_hook.processors.base import RawResults, WebhookProcessor

STATUSES = {"queued", "running", "succeeded", "failed", "canceled"}


class DeployBotProcessor(WebhookProcessor):
    """Deployments of the environments listed in `options: {environments: [...]}` (default: all)."""

    def could_process(self, event: WebhookEvent) -> bool:
        # headers only: this runs before the signature is checked and the body parsed
        return event.headers.get("X-DeployBot-Event") == "deployment"

    def should_process_event(self, event: WebhookEvent) -> bool:
        deployment = _deployment(event.payload)
        wanted = self.settings.options.get("environments")
        return deployment is not None and (not wanted or deployment.get("environment") in wanted)

    def validate_payload(self, payload: Any) -> Verdict:
        deployment = _deployment(payload) or {}
        for key in ("id", "service", "environment"):
            if not isinstance(deployment.get(key), str) or not deployment[key]:
                return Verdict.reject(f"deployment.{key} must be a non-empty string")
        if deployment.get("status") not in STATUSES:
            return Verdict.reject(f"deployment.status must be one of {', '.join(sorted(STATUSES))}")
        return Verdict.passed()

    def delivery_id(self, event: WebhookEvent) -> str | None:
        return event.headers.get("X-DeployBot-Delivery")

    def order_key(self, event: WebhookEvent) -> str:
        # deployments of one service to one environment are applied in arrival order
        deployment = _deployment(event.payload) or {}
        return f"{self.name}:{deployment.get('service')}:{deployment.get('environment')}"

    async def handle_event(self, payload: Any, resource: Any, fetcher: Any) -> RawResults:
        deployment = dict(_deployment(payload) or {})
        deployment["triggered_by"] = (deployment.get("triggered_by") or {}).get("login")
        if payload.get("action") == "deleted":
            return RawResults(deleted=[deployment])
        return RawResults(updated=[deployment])


def _deployment(payload: Any) -> dict[str, Any] | None:
    found = payload.get("deployment") if isinstance(payload, dict) else None
    return found if isinstance(found, dict) else None
