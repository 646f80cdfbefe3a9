"""The ingestion pipeline: accept (web) and merge-and-write (worker).

Web: validate each event, store the accepted ones as one raw-batch object in the blob store (the
replay source of truth) *before* answering, then enqueue one job per batch (not per entity: the
queue would be the bottleneck).

Worker: for each batch, lock its entities, append its events to the event log, fold every logged
event of those entities into final rows, write them through the verifying writer, and only then
let the job complete. A job on its last attempt that still cannot write records its entities in
the dead-letter table, from where `tracehouse dlq replay` re-runs them from the raw batch.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from sqlalchemy import select, update

from tracehouse.blobs import BlobStore
from tracehouse.clickhouse import ClickHouse, Workload
from tracehouse.ingestion.merge import implicit_trace_id, observation_row, score_row, trace_row
from tracehouse.ingestion.models import RejectedEvent, validate_event
from tracehouse.ingestion.writer import ClickHouseWriter
from tracehouse.logging import get_logger
from tracehouse.metadata import MetadataDB
from tracehouse.metadata.models import DeadLetter
from tracehouse.metrics import Metrics
from tracehouse.queues import QueueProducer

INGESTION_QUEUE = "ingestion-queue"
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
    metrics: Metrics | None = None,
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
    if metrics:
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
        "ingestion-job",
        {"projectId": project_id, "batchKey": key, "events": len(accepted), "receivedAt": now.timestamp()},
        jobId=key.replace("/", ":"),
    )
    return BatchResult(successes, errors, key)


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


class EntityLocks:
    """Short Redis locks so two batches never merge the same entity at once (in any process)."""

    def __init__(self, client: aioredis.Redis, prefix: str, *, ttl_ms: int = 60_000, wait_s: float = 30.0) -> None:
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
        try:
            while wanted:
                taken = await self._client.eval(_ACQUIRE, len(wanted), *wanted, token, self._ttl_ms)
                held += [k for k, ok in zip(wanted, taken, strict=True) if ok]
                wanted = [k for k, ok in zip(wanted, taken, strict=True) if not ok]
                if wanted:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"entities busy in another batch: {wanted[:3]}")
                    await asyncio.sleep(0.02)
            yield
        finally:
            if held:
                await self._client.eval(_RELEASE, len(held), *held, token)


def _log_rows(project_id: str, batch_key: str, received_at: datetime, events: list[dict[str, Any]]) -> list[dict]:
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
        metrics: Metrics | None = None,
    ) -> None:
        self._ch = clickhouse
        self._blobs = blobs
        self._writer = writer
        self._locks = locks
        self._metadata = metadata
        self._metrics = metrics
        self._history_reader = HistoryReader(clickhouse)
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
        if self._metrics and data.get("receivedAt"):
            self._metrics.ingestion_lag_seconds.observe(max(0.0, time.time() - float(data["receivedAt"])))
        return written

    async def process(self, project_id: str, batch_key: str) -> dict[str, int]:
        document = orjson.loads(await self._blobs.get(batch_key))
        events: list[dict[str, Any]] = document["events"]
        received_at = datetime.fromisoformat(document["receivedAt"])
        entities = {(e["entity"], e["body"]["id"]) for e in events}
        lock_keys = [f"{project_id}:{entity}:{entity_id}" for entity, entity_id in entities]
        async with self._locks.hold(lock_keys):
            # Earlier batches' events come from the log, this batch's from memory; the log rows and the
            # final rows are then written in the same flush. Both are verified before the locks are
            # released, so the next batch touching these entities sees this one's events.
            history = await self._history(project_id, entities)
            for event in events:
                slot = history.setdefault(
                    (event["entity"], event["body"]["id"]), {"events": [], "created_at": received_at}
                )
                if all(known["id"] != event["id"] for known in slot["events"]):
                    slot["events"].append(event)
                slot["created_at"] = min(slot["created_at"], received_at)
            rows = self._rows(project_id, history, document)
            writes = {"ingestion_event_log": _log_rows(project_id, batch_key, received_at, events), **rows}
            await asyncio.gather(*(self._writer.write(table, table_rows) for table, table_rows in writes.items()))
        return {table: len(table_rows) for table, table_rows in rows.items()}

    async def _history(self, project_id: str, entities: set[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """Every logged event of these entities (by the log's sorting key, shared with concurrent jobs)."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        rows = await self._history_reader.read({(project_id, entity, entity_id) for entity, entity_id in entities})
        for row in rows:
            slot = found.setdefault((row["entity"], row["entity_id"]), {"events": [], "created_at": row["received_at"]})
            slot["created_at"] = min(slot["created_at"], row["received_at"])
            slot["events"].append(
                {
                    "id": row["event_id"],
                    "type": row["event_type"],
                    "timestamp": row["event_time"].isoformat(),
                    "body": orjson.loads(row["body"]),
                }
            )
        return found

    @staticmethod
    def _rows(project_id: str, history: dict[tuple[str, str], dict], document: dict[str, Any]) -> dict[str, list]:
        ingestion = {k: document.get(k, "") for k in ("publicKey", "sdkName", "sdkVersion")}
        rows: dict[str, list[dict[str, Any]]] = {"traces": [], "observations": [], "scores": []}
        for (entity, entity_id), slot in history.items():
            created = slot["created_at"]
            if entity == "trace":
                rows["traces"].append(trace_row(project_id, entity_id, slot["events"], created))
            elif entity == "observation":
                row = observation_row(project_id, entity_id, slot["events"], created)
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
        now = datetime.now(UTC)
        error = f"{type(exc).__name__}: {exc}"[:2000]

        def record() -> None:
            with self._metadata.session() as session:
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

        await asyncio.to_thread(record)
        if self._metrics:
            for entity, _ in entities:
                self._metrics.ingestion_rows_dead_lettered.labels(TABLE_OF.get(entity, entity)).inc()
        self._log.error(
            "ingestion_dead_lettered",
            project_id=project_id,
            batch_key=batch_key,
            entities=len(entities),
            error=error[:500],
        )


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
            "ingestion-job",
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
