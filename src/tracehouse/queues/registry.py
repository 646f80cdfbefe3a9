"""Every queue tracehouse knows, in one place: name, role group, concurrency, locks, job defaults.

Names follow Langfuse's so dashboards and runbooks carry over. Role groups follow the fork:
`export` consumes the blob-storage export queues and batch export; `ingestion` everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tracehouse.settings import WorkerRole


class RoleGroup(StrEnum):
    INGESTION = "ingestion"
    EXPORT = "export"


def _retry(attempts: int, delay_ms: int, *, keep_completed_s: int = 3600, keep_failed_s: int = 7 * 86400) -> dict:
    # Retention by age keeps Redis bounded; failed jobs stay a week so they can be inspected.
    return {
        "attempts": attempts,
        "backoff": {"type": "exponential", "delay": delay_ms},
        "removeOnComplete": {"age": keep_completed_s},
        "removeOnFail": {"age": keep_failed_s},
        "stackTraceLimit": 1,  # errors are stored truncated (see runner.instrument); keep one trace
    }


@dataclass(frozen=True)
class QueueSpec:
    name: str
    group: RoleGroup
    concurrency: int = 1
    lock_duration_ms: int = 30_000
    stalled_interval_ms: int = 30_000
    max_stalled_count: int = 1
    job_options: dict[str, Any] = field(default_factory=dict)

    @property
    def enabled_flag(self) -> str:
        """Langfuse's per-queue switch, e.g. QUEUE_CONSUMER_INGESTION_QUEUE_IS_ENABLED."""
        return "QUEUE_CONSUMER_" + self.name.upper().replace("-", "_") + "_IS_ENABLED"


QUEUES: dict[str, QueueSpec] = {
    spec.name: spec
    for spec in [
        QueueSpec("ingestion-queue", RoleGroup.INGESTION, concurrency=20, job_options=_retry(6, 5_000)),
        QueueSpec("otel-ingestion-queue", RoleGroup.INGESTION, concurrency=5, job_options=_retry(6, 5_000)),
        QueueSpec("clickhouse-writer-dlq", RoleGroup.INGESTION, job_options=_retry(3, 30_000)),
        QueueSpec("cloud-usage-metering-queue", RoleGroup.INGESTION, job_options=_retry(3, 5_000)),
        QueueSpec("trace-delete", RoleGroup.INGESTION, lock_duration_ms=60_000, job_options=_retry(2, 30_000)),
        QueueSpec("blobstorage-integration-queue", RoleGroup.EXPORT, job_options=_retry(5, 5_000)),
        QueueSpec(
            "blobstorage-integration-processing-queue",
            RoleGroup.EXPORT,
            lock_duration_ms=60_000,
            stalled_interval_ms=120_000,
            max_stalled_count=3,
            # Job ids are "<project>-<cursor>"; a finished job must not keep its id, or the next
            # enqueue for the same cursor would be ignored and the project's export would stall
            # (the fork's incident). The integration row keeps the last error instead.
            job_options={**_retry(5, 30_000), "removeOnComplete": True, "removeOnFail": True},
        ),
        QueueSpec("batch-export-queue", RoleGroup.EXPORT, job_options=_retry(8, 5_000)),
    ]
}


def role_consumes(role: WorkerRole, group: RoleGroup) -> bool:
    return role == WorkerRole.ALL or role.value == group.value


def _flag_enabled(environ: dict[str, str], spec: QueueSpec) -> bool:
    value = environ.get(spec.enabled_flag, "true").strip().lower()
    return value not in ("false", "0", "no", "off")


def queues_for_role(role: WorkerRole, environ: dict[str, str]) -> list[QueueSpec]:
    """The queues a worker of this role consumes: its group, minus queues switched off by flag."""
    return [s for s in QUEUES.values() if role_consumes(role, s.group) and _flag_enabled(environ, s)]
