"""Ingestion's queue side: the `ingestion-queue` spec and its processor (merge and write).

For each batch: lock its entities, read their earlier events from the event log, fold every event
of those entities into final rows, write the log rows and the final rows through the verifying
writer, and only then let the job complete. A job on its last attempt that still cannot write
records its entities as dead letters, from where `tracehouse dlq replay` re-runs the raw batch.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from tracehouse.blobs import BlobStore
from tracehouse.clickhouse import ClickHouse
from tracehouse.ingestion.merge import implicit_trace_id, observation_row, score_row, trace_row
from tracehouse.ingestion.models import VALIDATION_VERSION, RejectedEvent, validate_event
from tracehouse.ingestion.service import (
    INGESTION_QUEUE,
    TABLE_OF,
    HistoryReader,
    log_rows,
    record_dead_letters,
)
from tracehouse.ingestion.writer import ClickHouseWriter
from tracehouse.logging import get_logger
from tracehouse.metadata import MetadataDB
from tracehouse.metrics import Metrics
from tracehouse.pricing.matching import ProjectModels
from tracehouse.pricing.service import PricingService, pricing_service
from tracehouse.queues import QueueSpec, RoleGroup, retry_options

# A re-run batch rewrites the same rows (merging is idempotent), so a job may stall a few times (a
# killed worker, then a starved one) before bullmq gives up on it; past the limit it is failed
# unretried and dead-lettered (`abandoned`). Concurrency is LANGFUSE_INGESTION_QUEUE_PROCESSING_CONCURRENCY.
QUEUES = [
    QueueSpec(
        INGESTION_QUEUE, RoleGroup.INGESTION, concurrency=20, max_stalled_count=3, job_options=retry_options(6, 5_000)
    )
]

# Take every free key (SET NX PX) in one round trip; answer which were taken.
_ACQUIRE = """
local taken = {}
for i, key in ipairs(KEYS) do
  taken[i] = redis.call('set', key, ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
end
return taken
"""
# Release only keys still holding our token (an expired lock may belong to someone else now).
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then redis.call('del', key) end
end
return 1
"""
# Extend only keys still holding our token.
_EXTEND = """
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then redis.call('pexpire', key, ARGV[2]) end
end
return 1
"""


class EntityLocks:
    """Short Redis locks so two batches never merge the same entity at once (in any process).

    A holder extends its locks every third of their TTL for as long as it runs, so a long merge keeps
    them however long it takes, and a killed worker's locks are free again one TTL after it died
    (before its jobs' queue locks lapse, at the defaults, so their re-runs do not wait at all).
    """

    def __init__(self, client: aioredis.Redis, prefix: str, *, ttl_ms: int = 15_000, wait_s: float = 30.0) -> None:
        self._client = client
        self._prefix = f"{prefix}:tracehouse:lock"
        self._ttl_ms = ttl_ms
        self._wait_s = wait_s

    @asynccontextmanager
    async def hold(self, keys: list[str]) -> AsyncIterator[None]:
        token = secrets.token_hex(8)
        wanted = sorted({f"{self._prefix}:{key}" for key in keys})
        held: list[str] = []
        deadline = time.monotonic() + self._wait_s
        pause = 0.02
        try:
            while wanted:
                taken = await self._client.eval(_ACQUIRE, len(wanted), *wanted, token, self._ttl_ms)
                held += [k for k, ok in zip(wanted, taken, strict=True) if ok]
                wanted = [k for k, ok in zip(wanted, taken, strict=True) if not ok]
                if wanted:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"entities busy in another batch: {wanted[:3]}")
                    # Backing off: a hundred jobs polling every 20 ms for locks a killed worker left
                    # behind would starve the process that has to renew their queue locks.
                    await asyncio.sleep(pause)
                    pause = min(pause * 1.5, 0.5)
            keeper = asyncio.create_task(self._keep(held, token))
            try:
                yield
            finally:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
        finally:
            if held:
                await self._client.eval(_RELEASE, len(held), *held, token)

    async def _keep(self, held: list[str], token: str) -> None:
        while held:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                await self._client.eval(_EXTEND, len(held), *held, token, self._ttl_ms)
            except Exception as exc:  # noqa: BLE001 - a missed extension is retried; the TTL is the backstop
                get_logger("tracehouse.ingestion").warning("entity_locks_not_extended", error=str(exc)[:200])


class IngestionProcessor:
    """The `ingestion-queue` processor."""

    def __init__(
        self,
        *,
        clickhouse: ClickHouse,
        blobs: BlobStore,
        writer: ClickHouseWriter,
        locks: EntityLocks,
        metadata: MetadataDB,
        metrics: Metrics,
        history_chunk_keys: int = 2000,
        pricing: PricingService | None = None,
    ) -> None:
        self._ch = clickhouse
        self._blobs = blobs
        self._writer = writer
        self._locks = locks
        self._metadata = metadata
        self._metrics = metrics
        self._history_reader = HistoryReader(clickhouse, chunk_keys=history_chunk_keys)
        # Model prices for computed costs: project models cached per TTL, defaults in memory.
        self._pricing = pricing if pricing is not None else pricing_service(metadata)
        self._log = get_logger("tracehouse.ingestion")

    async def __call__(self, job: Any, token: str) -> dict[str, Any]:
        data = job.data
        try:
            written = await self.process(data["projectId"], data["batchKey"])
        except Exception as exc:
            attempts = int(job.opts.get("attempts", 1))
            if job.attemptsMade + 1 >= attempts:
                await self._dead_letter(data["projectId"], data["batchKey"], exc, job.attemptsMade + 1)
            raise
        if data.get("receivedAt"):
            self._metrics.ingestion_lag_seconds.observe(max(0.0, time.time() - float(data["receivedAt"])))
        return written

    async def abandoned(self, job: Any) -> None:
        """A job bullmq failed without running it (it stalled too often): a dead letter like any other."""
        data = job.data
        reason = RuntimeError(f"abandoned by the queue: {job.deferredFailure}")
        await self._dead_letter(data["projectId"], data["batchKey"], reason, job.attemptsMade + 1)

    async def process(self, project_id: str, batch_key: str) -> dict[str, int]:
        document = orjson.loads(await self._blobs.get(batch_key))
        events: list[dict[str, Any]] = document["events"]
        if document.get("validation") != VALIDATION_VERSION:
            # A batch stored by an older version (a replayed dead letter, say): check it as today's edge
            # would, so an event that can never be written is skipped instead of failing the batch again.
            events = [e for e in events if self._still_valid(project_id, e, "batch")]
        received_at = datetime.fromisoformat(document["receivedAt"])
        entities = {(e["entity"], e["body"]["id"]) for e in events}
        # Fetched before the locks: at most one metadata query per project and TTL, none per row.
        models = await self._pricing.for_project(project_id) if any(e == "observation" for e, _ in entities) else None
        lock_keys = [f"{project_id}:{entity}:{entity_id}" for entity, entity_id in entities]
        async with self._locks.hold(lock_keys):
            # Earlier batches' events come from the log, this batch's from memory; the log rows and the
            # final rows are then written in the same flush. Both are verified before the locks are
            # released, so the next batch touching these entities sees this one's events.
            logged = await self._history_reader.read(
                {(project_id, entity, entity_id) for entity, entity_id in entities}
            )
            # Decoding, validating and merging is pure CPU: in a thread, so the many jobs that finish a
            # shared history read at once cannot hold the loop past a lock renewal (a job whose lock
            # lapses is declared stalled and run again).
            rows = await asyncio.to_thread(self._merge, project_id, logged, events, received_at, document, models)
            writes = {"ingestion_event_log": log_rows(project_id, batch_key, received_at, events), **rows}
            await asyncio.gather(*(self._writer.write(table, table_rows) for table, table_rows in writes.items()))
        return {table: len(table_rows) for table, table_rows in rows.items()}

    def _merge(
        self,
        project_id: str,
        logged: list[dict[str, Any]],
        events: list[dict[str, Any]],
        received_at: datetime,
        document: dict[str, Any],
        models: ProjectModels | None,
    ) -> dict[str, list]:
        """The final rows of every entity this batch touches: its logged events plus this batch's."""
        history = self._history(project_id, logged)
        for event in events:
            slot = history.setdefault((event["entity"], event["body"]["id"]), {"events": [], "created_at": received_at})
            if all(known["id"] != event["id"] for known in slot["events"]):
                slot["events"].append(event)
            slot["created_at"] = min(slot["created_at"], received_at)
        return self._rows(project_id, history, document, models)

    def _history(self, project_id: str, rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict]:
        """The logged events of each entity, decoded and checked again, with its earliest receipt time."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            slot = found.setdefault((row["entity"], row["entity_id"]), {"events": [], "created_at": row["received_at"]})
            slot["created_at"] = min(slot["created_at"], row["received_at"])
            event = {
                "id": row["event_id"],
                "type": row["event_type"],
                "entity": row["entity"],
                "timestamp": row["event_time"].isoformat(),
                "body": orjson.loads(row["body"]),
            }
            # Logged by an older version, an event may hold a value no column can take; folded in again,
            # it would fail every later update of its entity. Skipped (and recorded), the entity heals.
            if self._still_valid(project_id, event, "event_log"):
                slot["events"].append(event)
        return found

    def _still_valid(self, project_id: str, event: dict[str, Any], source: str) -> bool:
        try:
            validate_event({k: event[k] for k in ("id", "timestamp", "type", "body")})
        except (RejectedEvent, KeyError, TypeError) as exc:
            reason = exc.error if isinstance(exc, RejectedEvent) else f"malformed event: {exc}"
            self._log.warning(
                "ingestion_event_skipped",
                project_id=project_id,
                source=source,
                event_id=event.get("id"),
                entity=event.get("entity"),
                entity_id=(event.get("body") or {}).get("id"),
                reason=reason[:300],
            )
            self._metrics.ingestion_events_skipped.labels(source).inc()
            return False
        return True

    @staticmethod
    def _rows(
        project_id: str,
        history: dict[tuple[str, str], dict],
        document: dict[str, Any],
        models: ProjectModels | None = None,
    ) -> dict[str, list]:
        ingestion = {k: document.get(k, "") for k in ("publicKey", "sdkName", "sdkVersion")}
        rows: dict[str, list[dict[str, Any]]] = {"traces": [], "observations": [], "scores": []}
        for (entity, entity_id), slot in history.items():
            created = slot["created_at"]
            if entity == "trace":
                rows["traces"].append(trace_row(project_id, entity_id, slot["events"], created))
            elif entity == "observation":
                row = observation_row(project_id, entity_id, slot["events"], created, models)
                rows["observations"].append(row)
                if row["trace_id"] == implicit_trace_id(project_id, entity_id):
                    # An observation sent without a trace gets one, so reads can find it.
                    rows["traces"].append(
                        trace_row(
                            project_id,
                            row["trace_id"],
                            [
                                {
                                    "id": f"implicit-{entity_id}",
                                    "type": "trace-create",
                                    "timestamp": row["start_time"],
                                    "body": {"name": row["name"]},
                                }
                            ],
                            created,
                        )
                    )
            else:
                rows["scores"].append(score_row(project_id, entity_id, slot["events"], created, ingestion))
        return {table: table_rows for table, table_rows in rows.items() if table_rows}

    async def _dead_letter(self, project_id: str, batch_key: str, exc: BaseException, attempts: int) -> None:
        try:
            document = json.loads(await self._blobs.get(batch_key))
            entities = sorted({(e["entity"], e["body"]["id"]) for e in document["events"]})
        except Exception:  # noqa: BLE001 - record the batch even if its blob cannot be read now
            entities = [("batch", batch_key)]
        error = f"{type(exc).__name__}: {exc}"[:2000]
        await asyncio.to_thread(
            record_dead_letters,
            self._metadata,
            project_id=project_id,
            batch_key=batch_key,
            entities=entities,
            error=error,
            attempts=attempts,
        )
        for entity, _ in entities:
            self._metrics.ingestion_rows_dead_lettered.labels(TABLE_OF.get(entity, entity)).inc()
        self._log.error(
            "ingestion_dead_lettered",
            project_id=project_id,
            batch_key=batch_key,
            entities=len(entities),
            error=error[:500],
        )
