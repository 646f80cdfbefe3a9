"""What a queue is (name, role group, concurrency, locks, job defaults) and which ones a role consumes.

Each capability declares its own queues in its `worker.py`; `tracehouse.capabilities` collects
them. Names follow Langfuse's so dashboards and runbooks carry over. Role groups follow the fork:
`export` consumes the blob-storage export queues and batch export; `ingestion` everything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tracehouse.settings import Settings, WorkerRole


class RoleGroup(StrEnum):
    INGESTION = "ingestion"
    EXPORT = "export"


def retry_options(
    attempts: int, delay_ms: int, *, keep_completed_s: int = 3600, keep_failed_s: int = 7 * 86400
) -> dict[str, Any]:
    """Job defaults: exponential backoff, and retention by age so Redis stays bounded (failed jobs
    stay a week so they can be inspected)."""
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


def registry_of(*groups: Iterable[QueueSpec]) -> dict[str, QueueSpec]:
    """One name -> spec map from each capability's queues; a name declared twice is a bug."""
    registry: dict[str, QueueSpec] = {}
    for spec in (s for group in groups for s in group):
        if spec.name in registry:
            raise ValueError(f"queue {spec.name!r} is declared twice")
        registry[spec.name] = spec
    return registry


def role_consumes(role: WorkerRole, group: RoleGroup) -> bool:
    return role == WorkerRole.ALL or role.value == group.value


def queues_for_role(role: WorkerRole, specs: Iterable[QueueSpec], settings: Settings) -> list[QueueSpec]:
    """The queues a worker of this role consumes: its group, minus queues switched off by their flag."""
    return [s for s in specs if role_consumes(role, s.group) and settings.queue_consumer_enabled(s.name)]
