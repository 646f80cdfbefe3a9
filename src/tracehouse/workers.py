"""Which processors exist, and starting the workers a role consumes."""

from __future__ import annotations

import os
from collections.abc import Mapping

from tracehouse.logging import get_logger
from tracehouse.queues import Processor, QueueRunner, queues_for_role
from tracehouse.runtime import Services
from tracehouse.settings import WorkerRole


def build_processors(services: Services) -> dict[str, Processor]:
    """Queue name -> processor. Capabilities add theirs here as they land."""
    return {}


async def start_workers(
    services: Services, role: WorkerRole, environ: Mapping[str, str] | None = None
) -> QueueRunner:
    processors = build_processors(services)
    specs = [s for s in queues_for_role(role, dict(environ or os.environ)) if s.name in processors]
    runner = QueueRunner(
        services.redis_connection, specs, processors, prefix=services.settings.redis_key_prefix
    )
    await runner.start()
    get_logger("tracehouse.worker").info("worker_started", role=role.value, queues=runner.queue_names)
    return runner
