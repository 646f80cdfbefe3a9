"""Ingestion logic: accept a batch (web side), read entity history and manage dead letters.

Accept: validate each event, store the accepted ones as one raw-batch object in the blob store (the
replay source of truth) *before* answering, then enqueue one job per batch (not per entity: the
queue would be the bottleneck). The worker side (`worker.py`) merges and writes them.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select, update

from tracehouse.blobs import BlobStore
from tracehouse.clickhouse import ClickHouse, Workload
from tracehouse.ingestion.models import RejectedEvent, validate_event
from tracehouse.logging import get_logger
from tracehouse.metadata import MetadataDB
from tracehouse.metadata.models import DeadLetter
from tracehouse.metrics import Metrics
from tracehouse.queues import QueueProducer

INGESTION_QUEUE = "ingestion-queue"
INGESTION_JOB = "ingestion-job"
TABLE_OF = {"trace": "traces", "observation": "observations", "score": "scores"}


@dataclass
class BatchResult:
    successes: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    batch_key: str | None


def _batch_key(project_id: str, now: datetime) -> str:
    return f"raw/{project_id}/{now:%Y/%m/%d/%H}/{now:%M%S}-{secrets.token_hex(8)}.json"


async def accept_batch(
    raw_events: list[Any],
    *,
    project_id: str,
    blobs: BlobStore,
    producer: QueueProducer,
    ingestion: dict[str, str],
    metrics: Metrics,
) -> BatchResult:
    """Validate, store durably, enqueue. Raises if storing or enqueueing fails (nothing is claimed)."""
    accepted: list[dict[str, Any]] = []
    successes, errors = [], []
    for raw in raw_events:
        event_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else "unknown"
        try:
            event = validate_event(raw)
        except RejectedEvent as rejected:
            errors.append(
                {"id": event_id, "status": rejected.status, "message": rejected.message, "error": rejected.error}
            )
            continue
        if event is None:  # sdk-log: logged, neither a success nor an error (as Langfuse)
            get_logger("tracehouse.ingestion").info("sdk_log", project_id=project_id, event_id=event_id)
            continue
        accepted.append(event)
        successes.append({"id": event["id"], "status": 201})
    metrics.ingestion_events.labels("accepted").inc(len(accepted))
    metrics.ingestion_events.labels("rejected").inc(len(errors))
    if not accepted:
        return BatchResult(successes, errors, None)
    now = datetime.now(UTC)
    key = _batch_key(project_id, now)
    document = {"projectId": project_id, "receivedAt": now.isoformat(), **ingestion, "events": accepted}
    await blobs.put(key, orjson.dumps(document))
    await producer.add(
        INGESTION_QUEUE,
        INGESTION_JOB,
        {"projectId": project_id, "batchKey": key, "events": len(accepted), "receivedAt": now.timestamp()},
        jobId=key.replace("/", ":"),
    )
    return BatchResult(successes, errors, key)


def log_rows(project_id: str, batch_key: str, received_at: datetime, events: list[dict[str, Any]]) -> list[dict]:
    rows = []
    for event in events:
        entity_id = event["body"]["id"]
        rows.append(
            {
                "project_id": project_id,
                "entity": event["entity"],
                "entity_id": entity_id,
                "event_id": event["id"],
                "event_type": event["type"],
                "event_time": datetime.fromisoformat(event["timestamp"]),
                "body": orjson.dumps(event["body"]).decode(),
                "batch_key": batch_key,
                "received_at": received_at,
            }
        )
    return rows


EntityKey = tuple[str, str, str]  # (project_id, entity, entity_id)
_HistoryRequest = tuple[set[EntityKey], "asyncio.Future[list[dict[str, Any]]]"]


class HistoryReader:
    """Reads entities' logged events for many concurrent jobs with one query per short tick.

    Each job needs the history of its entities before merging. One query per job made these lookups
    most of ClickHouse's work (planning and index lookups over every part, ~50 times a second at
    5k events/s); jobs waiting in the same few milliseconds now share one query.
    """

    def __init__(self, clickhouse: ClickHouse, *, linger_s: float = 0.005, max_keys: int = 5000) -> None:
        self._ch = clickhouse
        self._linger_s = linger_s
        self._max_keys = max_keys
        self._waiting: list[_HistoryRequest] = []
        self._flusher: asyncio.Task[None] | None = None

    async def read(self, keys: set[EntityKey]) -> list[dict[str, Any]]:
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())
        return await future

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._linger_s)
        while self._waiting:
            taken: list[_HistoryRequest] = []
            count = 0
            while self._waiting and (not taken or count + len(self._waiting[0][0]) <= self._max_keys):
                item = self._waiting.pop(0)
                taken.append(item)
                count += len(item[0])
            keys = sorted(set().union(*(k for k, _ in taken)))
            try:
                rows = await self._ch.query(
                    "SELECT project_id, entity, entity_id, event_id, event_type, event_time, body, received_at "
                    "FROM ingestion_event_log WHERE (project_id, entity, entity_id) IN "
                    "{keys:Array(Tuple(String, String, String))} "
                    "ORDER BY event_ts DESC LIMIT 1 BY project_id, entity, entity_id, event_id",
                    {"keys": keys},
                    workload=Workload.INGESTION,
                )
            except Exception as exc:  # noqa: BLE001 - every waiting job gets the failure (and is retried)
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            by_key: dict[EntityKey, list[dict[str, Any]]] = {}
            for row in rows:
                by_key.setdefault((row["project_id"], row["entity"], row["entity_id"]), []).append(row)
            for wanted, future in taken:
                if not future.done():
                    future.set_result([r for key in wanted for r in by_key.get(key, ())])


def list_dead_letters(metadata: MetadataDB, *, include_replayed: bool = False) -> list[DeadLetter]:
    with metadata.session() as session:
        query = select(DeadLetter).order_by(DeadLetter.id)
        if not include_replayed:
            query = query.where(DeadLetter.replayed_at.is_(None))
        rows = list(session.execute(query).scalars())
        session.expunge_all()
        return rows


async def replay_dead_letters(metadata: MetadataDB, producer: QueueProducer, ids: list[int] | None = None) -> int:
    """Re-enqueue the raw batches of open dead letters; mark them replayed. Returns batches enqueued."""
    letters = [d for d in await asyncio.to_thread(list_dead_letters, metadata) if ids is None or d.id in ids]
    batches = {(d.project_id, d.batch_key) for d in letters}
    for project_id, batch_key in sorted(batches):
        await producer.add(
            INGESTION_QUEUE,
            INGESTION_JOB,
            {"projectId": project_id, "batchKey": batch_key, "replay": True},
            jobId=f"replay:{uuid.uuid4().hex}",
        )

    def mark() -> None:
        with metadata.session() as session:
            session.execute(
                update(DeadLetter)
                .where(DeadLetter.id.in_([d.id for d in letters]))
                .values(replayed_at=datetime.now(UTC))
            )

    await asyncio.to_thread(mark)
    return len(batches)


def record_dead_letters(
    metadata: MetadataDB,
    *,
    project_id: str,
    batch_key: str,
    entities: list[tuple[str, str]],
    error: str,
    attempts: int,
) -> None:
    """One dead letter per entity of a batch whose write exhausted its attempts. Blocking."""
    now = datetime.now(UTC)
    with metadata.session() as session:
        for entity, entity_id in entities:
            session.add(
                DeadLetter(
                    project_id=project_id,
                    table_name=TABLE_OF.get(entity, entity),
                    entity_id=entity_id,
                    batch_key=batch_key,
                    last_error=error,
                    attempts=attempts,
                    first_failed_at=now,
                    last_failed_at=now,
                )
            )
