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
from tracehouse.ingestion.models import MAX_EVENT_BYTES, VALIDATION_VERSION, RejectedEvent, validate_event
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
    batch_keys: list[str]  # one raw batch (and queue job) per piece of at most `max_events_per_job` events


def _batch_key(project_id: str, now: datetime) -> str:
    return f"raw/{project_id}/{now:%Y/%m/%d/%H}/{now:%M%S}-{secrets.token_hex(8)}.json"


@dataclass
class _Checked:
    """Events validated and serialized one by one (so one too-deep or out-of-range event fails alone)."""

    events: list[bytes]
    successes: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    logs: list[str]  # sdk-log event ids: neither successes nor errors, as in Langfuse


def _event_id(raw: Any) -> str:
    return raw["id"] if isinstance(raw, dict) and isinstance(raw.get("id"), str) else "unknown"


def check_events(raw_events: list[Any], max_event_bytes: int) -> _Checked:
    """Blocking (pydantic and JSON over up to thousands of events): run it in a thread."""
    checked = _Checked([], [], [], [])
    for raw in raw_events:
        event_id = _event_id(raw)
        try:
            event = validate_event(raw)
            if event is None:
                checked.logs.append(event_id)
                continue
            encoded = _encode(event, max_event_bytes)
        except RejectedEvent as rejected:
            checked.errors.append(
                {"id": event_id, "status": rejected.status, "message": rejected.message, "error": rejected.error}
            )
            continue
        checked.events.append(encoded)
        checked.successes.append({"id": event["id"], "status": 201})
    return checked


def _encode(event: dict[str, Any], max_event_bytes: int) -> bytes:
    try:
        encoded = orjson.dumps(event)
    except TypeError:  # orjson's nesting limit; the merge serializes input and output the same way
        raise RejectedEvent(400, "Invalid request data", "event is nested too deeply (more than 250 levels)") from None
    if len(encoded) > max_event_bytes:
        raise RejectedEvent(413, "Event too large", f"event is {len(encoded)} bytes; the limit is {max_event_bytes}")
    return encoded


def _document(project_id: str, received_at: datetime, ingestion: dict[str, str], events: list[bytes]) -> bytes:
    # Assembled from the events' own bytes: no second serialization, and no extra nesting levels.
    head = orjson.dumps(
        {"projectId": project_id, "receivedAt": received_at.isoformat(), **ingestion, "validation": VALIDATION_VERSION}
    )
    return head[:-1] + b',"events":[' + b",".join(events) + b"]}"


async def accept_batch(
    raw_events: list[Any],
    *,
    project_id: str,
    blobs: BlobStore,
    producer: QueueProducer,
    ingestion: dict[str, str],
    metrics: Metrics,
    max_events_per_job: int = 1000,
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> BatchResult:
    """Validate, store durably, enqueue. Raises if storing or enqueueing fails (nothing is claimed).

    Events are stored as raw batches of at most `max_events_per_job`, one queue job each, so a giant
    request becomes bounded pieces of work that other projects' jobs can run beside.
    """
    checked = await asyncio.to_thread(check_events, raw_events, max_event_bytes)
    log = get_logger("tracehouse.ingestion")
    for event_id in checked.logs:
        log.info("sdk_log", project_id=project_id, event_id=event_id)
    metrics.ingestion_events.labels("accepted").inc(len(checked.events))
    metrics.ingestion_events.labels("rejected").inc(len(checked.errors))
    keys = []
    now = datetime.now(UTC)
    for start in range(0, len(checked.events), max_events_per_job):
        piece = checked.events[start : start + max_events_per_job]
        key = _batch_key(project_id, now)
        await blobs.put(key, _document(project_id, now, ingestion, piece))
        await producer.add(
            INGESTION_QUEUE,
            INGESTION_JOB,
            {"projectId": project_id, "batchKey": key, "events": len(piece), "receivedAt": now.timestamp()},
            jobId=key.replace("/", ":"),
        )
        keys.append(key)
    return BatchResult(checked.successes, checked.errors, keys)


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


_HISTORY_SQL = (
    "SELECT project_id, entity, entity_id, event_id, event_type, event_time, body, received_at "
    "FROM ingestion_event_log WHERE (project_id, entity, entity_id) IN {keys:Array(Tuple(String, String, String))} "
    "ORDER BY event_ts DESC LIMIT 1 BY project_id, entity, entity_id, event_id"
)


class HistoryReader:
    """Reads entities' logged events for many concurrent jobs with few, bounded queries.

    Each job needs the history of its entities before merging. A lookup costs ClickHouse about the
    same for 10 keys as for 1,000 (planning and index lookups over every part), so jobs share
    queries: while `parallel` reads are in flight, new requests gather and go together in the next
    one (one query per job made these lookups most of ClickHouse's work). Reads are chunked to
    `chunk_keys` entities per query (a 30,000-span trace is 15 modest queries, not one that times
    out), and requests that have waited `patience_s` for a slot start a read of their own: nobody
    queues behind a slow read for long.
    """

    def __init__(
        self,
        clickhouse: ClickHouse,
        *,
        linger_s: float = 0.005,
        chunk_keys: int = 2000,
        parallel: int = 2,
        patience_s: float = 0.5,
    ) -> None:
        self._ch = clickhouse
        self._linger_s = linger_s
        self._chunk_keys = chunk_keys
        self._parallel = parallel  # reads in flight before new requests wait to share the next one
        self._patience_s = patience_s
        self._waiting: list[_HistoryRequest] = []
        self._running = 0
        self._scheduled: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs: the loop only keeps weak ones

    async def read(self, keys: set[EntityKey]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[dict[str, Any]]] = loop.create_future()
        self._waiting.append((keys, future))
        if self._scheduled is None:
            # A free slot starts the read after a short linger; a full one waits for a slot to free,
            # but not longer than the patience.
            delay = self._linger_s if self._running < self._parallel else self._patience_s
            self._scheduled = loop.call_later(delay, self._start)
        return await future

    def _start(self) -> None:
        self._scheduled = None
        if not self._waiting:
            return
        taken, self._waiting = self._waiting, []
        self._running += 1
        task = asyncio.create_task(self._serve(taken))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._running -= 1
        if self._waiting:  # requests gathered while the slots were full go now, together
            if self._scheduled is not None:
                self._scheduled.cancel()
            self._start()

    async def _serve(self, taken: list[_HistoryRequest]) -> None:
        keys = sorted(set().union(*(k for k, _ in taken)))
        chunks = [keys[i : i + self._chunk_keys] for i in range(0, len(keys), self._chunk_keys)]
        slots = asyncio.Semaphore(self._parallel)

        async def fetch(chunk: list[EntityKey]) -> list[dict[str, Any]]:
            async with slots:
                return await self._ch.query(_HISTORY_SQL, {"keys": chunk}, workload=Workload.INGESTION)

        results = await asyncio.gather(*(fetch(c) for c in chunks), return_exceptions=True)
        by_key: dict[EntityKey, list[dict[str, Any]]] = {}
        failed: dict[EntityKey, BaseException] = {}
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, BaseException):
                failed.update(dict.fromkeys(chunk, result))
                continue
            for row in result:
                by_key.setdefault((row["project_id"], row["entity"], row["entity_id"]), []).append(row)
        for wanted, future in taken:
            if future.done():
                continue
            # A job whose entities were in a failed chunk gets the failure (and is retried by the queue).
            error = next((failed[k] for k in wanted if k in failed), None)
            if error is not None:
                future.set_exception(error)
            else:
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
