"""Metrics, one registry per process (not the library's global), built once.

Each instrument is recorded twice: in Prometheus (scraped at /metrics) and through the
OpenTelemetry metrics API, so an operator with an OTel collector gets the same numbers.
Without an OTel SDK configured, the OTel side is a no-op.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics as otel
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

JOB_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)


class Metrics:
    def __init__(self, meter_provider: Any = None) -> None:
        self.registry = CollectorRegistry()
        meter = (meter_provider or otel.get_meter_provider()).get_meter("tracehouse")
        self.http_requests = Counter(
            "http_requests_total", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.http_latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.queue_jobs = Counter(
            "queue_jobs_total", "Jobs finished, by outcome", ["queue", "status"], registry=self.registry
        )
        self.queue_job_duration = Histogram(
            "queue_job_duration_seconds",
            "Job run time",
            ["queue", "status"],
            registry=self.registry,
            buckets=JOB_BUCKETS,
        )
        self.queue_job_attempts = Counter(
            "queue_job_attempts_total", "Job attempts started", ["queue"], registry=self.registry
        )
        self.queue_depth = Gauge("queue_depth", "Jobs per queue and state", ["queue", "state"], registry=self.registry)
        self.ingestion_events = Counter(
            "ingestion_events_total", "Ingestion events by outcome", ["status"], registry=self.registry
        )
        self.ingestion_rows_written = Counter(
            "ingestion_rows_written_total", "Rows written and verified", ["table"], registry=self.registry
        )
        self.ingestion_rows_dead_lettered = Counter(
            "ingestion_rows_dead_lettered_total",
            "Entities whose writes exhausted retries",
            ["table"],
            registry=self.registry,
        )
        self.ingestion_events_skipped = Counter(
            "ingestion_events_skipped_total",
            "Stored events that no longer pass validation, skipped when merging (source: batch or event_log)",
            ["source"],
            registry=self.registry,
        )
        self.ingestion_write_seconds = Histogram(
            "ingestion_write_seconds",
            "ClickHouse insert latency",
            ["table"],
            registry=self.registry,
            buckets=JOB_BUCKETS,
        )
        self.ingestion_verify_seconds = Histogram(
            "ingestion_verify_seconds",
            "Latency of the check that written rows are present",
            registry=self.registry,
            buckets=JOB_BUCKETS,
        )
        self.ingestion_lag_seconds = Histogram(
            "ingestion_queue_lag_seconds",
            "From HTTP accept to rows verified in ClickHouse",
            registry=self.registry,
            buckets=JOB_BUCKETS,
        )
        ms_buckets = (10, 50, 100, 500, 1_000, 5_000, 15_000, 60_000, 300_000, 900_000, 3_600_000)
        self.blob_export_table_duration = Histogram(
            "blob_export_table_duration_ms",
            "Export of one table for one window (incl. splits)",
            ["table"],
            registry=self.registry,
            buckets=ms_buckets,
        )
        self.blob_export_job_duration = Histogram(
            "blob_export_job_duration_ms",
            "Export job run time, by mode (catchup or steady)",
            ["mode"],
            registry=self.registry,
            buckets=ms_buckets,
        )
        self.blob_export_rows = Counter(
            "blob_export_rows_total", "Rows written to export files", ["table"], registry=self.registry
        )
        self.blob_export_lag = Gauge(
            "blob_export_lag_seconds",
            "How far a project's export watermark trails now",
            ["project"],
            registry=self.registry,
        )
        self.blob_export_splits = Counter(
            "blob_export_split_count",
            "Export windows split in half after an error",
            ["table", "errorType"],
            registry=self.registry,
        )
        self._otel_jobs = meter.create_counter("queue_jobs_total", description="Jobs finished, by outcome")
        self._otel_duration = meter.create_histogram("queue_job_duration_seconds", unit="s", description="Job run time")
        self._otel_attempts = meter.create_counter("queue_job_attempts_total", description="Job attempts started")
        self._otel_depth = meter.create_gauge("queue_depth", description="Jobs per queue and state")

    def job_started(self, queue: str) -> None:
        self.queue_job_attempts.labels(queue).inc()
        self._otel_attempts.add(1, {"queue": queue})

    def job_finished(self, queue: str, status: str, seconds: float) -> None:
        self.queue_jobs.labels(queue, status).inc()
        self.queue_job_duration.labels(queue, status).observe(seconds)
        self._otel_jobs.add(1, {"queue": queue, "status": status})
        self._otel_duration.record(seconds, {"queue": queue, "status": status})

    def set_depth(self, queue: str, state: str, value: int) -> None:
        self.queue_depth.labels(queue, state).set(value)
        self._otel_depth.set(value, {"queue": queue, "state": state})
