"""Every capability's queues in one registry, collected from their `worker.py` modules.

A new capability adds its `QUEUES` here (and its router in `web/app.py`); nothing else repeats
queue names.
"""

from __future__ import annotations

from tracehouse.batch_export import worker as batch_export_worker
from tracehouse.export import worker as export_worker
from tracehouse.ingestion import worker as ingestion_worker
from tracehouse.queues import QueueSpec, registry_of
from tracehouse.usage import worker as usage_worker

QUEUES: dict[str, QueueSpec] = registry_of(
    ingestion_worker.QUEUES, usage_worker.QUEUES, export_worker.QUEUES, batch_export_worker.QUEUES
)
