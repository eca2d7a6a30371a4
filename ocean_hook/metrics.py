"""Prometheus metrics, one registry per running service (no process-wide globals)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # the process_* and python_* series every Python exporter has: memory, CPU, open files, GC
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.received = Counter(
            "ocean_hook_deliveries_received",
            "Requests to processor paths, by path and answer status code (202: accepted or ignored; requests to "
            "other paths are counted in rejected, reason unknown_path, not here: their paths are the sender's)",
            ["path", "status"], registry=r)
        self.rejected = Counter(
            "ocean_hook_deliveries_rejected", "Deliveries rejected at the door, by reason",
            ["reason"], registry=r)
        self.ignored = Counter(
            "ocean_hook_deliveries_ignored", "Deliveries no processor matched", ["path"], registry=r)
        self.duplicates = Counter(
            "ocean_hook_deliveries_duplicate", "Deliveries already in the journal", ["path"], registry=r)
        self.processed = Counter(
            "ocean_hook_deliveries_processed", "Deliveries processed successfully", registry=r)
        self.failed = Counter(
            "ocean_hook_deliveries_failed", "Processing attempts that failed", registry=r)
        self.retried = Counter(
            "ocean_hook_deliveries_retried", "Deliveries scheduled for another attempt", registry=r)
        self.dead = Counter(
            "ocean_hook_deliveries_dead_lettered", "Deliveries moved to the dead-letter list", registry=r)
        self.writes = Counter(
            "ocean_hook_entity_writes", "Entity writes sent to the target, by action", ["action"], registry=r)
        self.queue_depth = Gauge(
            "ocean_hook_queue_depth", "Deliveries in the queue, by state", ["state"], registry=r)
        self.ingest_latency = Histogram(
            "ocean_hook_ingest_seconds", "From request received to answer, on processor paths (any answer)",
            buckets=LATENCY_BUCKETS, registry=r)
        self.end_to_end_latency = Histogram(
            "ocean_hook_end_to_end_seconds", "From request received to applied at the target",
            buckets=LATENCY_BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
