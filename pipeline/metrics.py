"""Prometheus metrics: ingest counters from this process, pipeline state from the database.

Why state comes from the database: API, workers and scheduler are separate processes (and
machines, in production); the event log is the one place that knows how many events are
processed, failed or waiting, so a scrape of any API process tells the whole truth.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.db import Database
from pipeline.envelope import utcnow
from pipeline.events import backlog, recent_batch_latency, status_counts


class PipelineCollector(Collector):
    """Reads event counts, queue lag and batch latency from the database at scrape time."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        with self._db.read() as session:
            counts = status_counts(session)
            pending, oldest = backlog(session)
            latency = recent_batch_latency(session)
        events = GaugeMetricFamily(
            "ecrm_events", "Events in the event log by processing status", labels=["status"]
        )
        for status in ("pending", "processed", "failed"):
            events.add_metric([status], counts.get(status, 0))
        yield events
        lag = (utcnow() - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "ecrm_queue_lag_seconds", "Age of the oldest event not yet processed", value=lag
        )
        yield GaugeMetricFamily("ecrm_backlog_events", "Events not yet processed", value=pending)
        yield GaugeMetricFamily(
            "ecrm_batch_latency_seconds",
            "Mean seconds from batching to processed over the latest 200 batches",
            value=latency or 0.0,
        )


class IngestMetrics:
    """Counters the API process updates as it accepts events."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "ecrm_events_accepted",
            "Events accepted into the event log",
            ["channel"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "ecrm_events_rejected", "Events refused at ingest", registry=self.registry
        )
        self.spooled = Counter(
            "ecrm_events_spooled",
            "Messages stored raw in spool mode (expanded into events by a worker)",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "ecrm_events_duplicate", "Events already in the log", registry=self.registry
        )
        self.request_seconds = Histogram(
            "ecrm_ingest_request_seconds", "Ingest request latency", registry=self.registry
        )
        self.registry.register(PipelineCollector(db))
