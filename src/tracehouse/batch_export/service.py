"""Batch exports: the records (create, list, show, cancel) and the job that writes one file.

The job, in order, and why each step is safe to repeat:

1. Guard clauses: the feature off, the record missing or in a status no run should see is an
   error; CANCELLED returns at once; an export created more than 30 days ago fails as stale. The
   stored request is validated again (`filters.parse_query`) before anything is read.
2. The record is claimed: QUEUED, PROCESSING (a killed attempt) or FAILED (a retry) becomes
   PROCESSING, its progress reset.
3. The rows are counted, then streamed (export workload class, as of the record's `created_at`,
   see sources.py) through the format's encoder into one multipart upload. Every 5,000 rows the
   progress goes to the record (a conditional UPDATE that also notices a cancellation), the log
   and the queue job. A cancellation raises inside the upload, which aborts it: nothing is left.
   The object appears only when the upload completes, under a name fixed per export, so a killed
   attempt leaves no visible file and its retry writes the same name.
4. COMPLETED with the signed link and its expiry (conditional on still PROCESSING: a cancel that
   won the race deletes the file instead), then the email. Any error: FAILED with a readable
   reason, re-raised so the queue retries with its backoff; the last attempt emails the failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from bullmq.custom_errors import UnrecoverableError
from obstore.exceptions import BaseError as ObstoreError
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from tracehouse.api_common import BadParameter, BadRequest, Forbidden, NotFound, Unavailable
from tracehouse.batch_export.filters import parse_query
from tracehouse.batch_export.formats import Encoder, named, open_encoder
from tracehouse.batch_export.models import (
    FINISHED,
    BatchExports,
    CreateBatchExportRequest,
    CreatedBatchExport,
    ExportRecord,
    FileFormat,
    Status,
)
from tracehouse.batch_export.notify import Mailer, completed_notice, failed_notice
from tracehouse.batch_export.sources import RANGE_ROWS, ExportSql, TimeRange, export_sql, plan_ranges, query_settings
from tracehouse.batch_export.storage import ExportStore, StoredFile
from tracehouse.batch_export.tables import BatchExport
from tracehouse.clickhouse import ClickHouse, ClickHouseError, Workload
from tracehouse.clickhouse.workload import ClickHouseErrorKind
from tracehouse.errors import one_line_reason
from tracehouse.export.formats import HashingSink
from tracehouse.export.worker import BATCH_EXPORT_QUEUE
from tracehouse.logging import get_logger
from tracehouse.metadata import MetadataDB
from tracehouse.queries.models import Page
from tracehouse.queries.service import page_meta
from tracehouse.queues import QueueProducer
from tracehouse.settings import Settings

JOB_NAME = "batch-export-job"  # Langfuse's
STALE_AFTER = timedelta(days=30)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROGRESS_ROWS = 5_000
RUNNABLE = (Status.QUEUED, Status.PROCESSING, Status.FAILED)  # FAILED: a retry of a failed attempt
DISABLED = "batch export is disabled on this server (LANGFUSE_S3_BATCH_EXPORT_ENABLED=false)"


class ExportCancelled(Exception):
    """The record left PROCESSING (cancelled) while the job ran."""


# --- the records (blocking; call from a thread) ----------------------------------------------
def _record(row: BatchExport) -> ExportRecord:
    return ExportRecord(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        status=Status(row.status),
        query=dict(row.query),
        format=FileFormat(row.format),
        compressed=row.compressed,
        email=row.email,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        expires_at=row.expires_at,
        rows_exported=row.rows_exported,
        total_rows=row.total_rows,
        truncated=row.truncated,
        object_key=row.object_key,
        size_bytes=row.size_bytes,
        url=row.url,
        log=row.log,
    )


def insert_record(metadata: MetadataDB, project_id: str, body: CreateBatchExportRequest, now: datetime) -> ExportRecord:
    # Milliseconds: the snapshot moment is compared with ClickHouse's DateTime64(3) `event_ts`.
    created = now.replace(microsecond=now.microsecond // 1000 * 1000)
    row = BatchExport(
        id=_new_id(),
        project_id=project_id,
        name=body.name or f"{body.table_name}-{created:%Y-%m-%dT%H-%M-%S}",
        status=Status.QUEUED,
        query={"tableName": str(body.table_name), "filter": body.filter, "orderBy": body.order_by},
        format=str(body.format),
        compressed=body.compressed,
        email=body.email,
        created_at=created,
        updated_at=created,
        rows_exported=0,
        truncated=False,
    )
    with metadata.session() as session:
        session.add(row)
        session.flush()
        return _record(row)


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex


def get_record(metadata: MetadataDB, export_id: str, project_id: str | None = None) -> ExportRecord | None:
    with metadata.session() as session:
        row = session.get(BatchExport, export_id)
        if row is None or (project_id is not None and row.project_id != project_id):
            return None
        return _record(row)


def list_records(metadata: MetadataDB, project_id: str, page: Page) -> tuple[list[ExportRecord], int]:
    with metadata.session() as session:
        mine = BatchExport.project_id == project_id
        total = session.execute(select(func.count()).select_from(BatchExport).where(mine)).scalar_one()
        rows = session.scalars(
            select(BatchExport)
            .where(mine)
            .order_by(BatchExport.created_at.desc(), BatchExport.id)
            .limit(page.limit)
            .offset(page.offset)
        ).all()
        return [_record(r) for r in rows], int(total)


def _changed(session: Session, export_id: str, allowed: tuple[Status, ...], **values: Any) -> bool:
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(BatchExport)
        .where(BatchExport.id == export_id, BatchExport.status.in_([str(s) for s in allowed]))
        .values(**values)
    )
    return result.rowcount == 1


def request_cancel(
    metadata: MetadataDB, project_id: str, export_id: str, now: datetime, ttl: timedelta
) -> ExportRecord:
    with metadata.session() as session:
        row = session.get(BatchExport, export_id)
        if row is None or row.project_id != project_id:
            raise NotFound(f"Batch export {export_id} not found")
        if Status(row.status) in (Status.COMPLETED, Status.CANCELLED):
            raise BadRequest(f"batch export {export_id} is {row.status}: there is nothing to cancel")
        cancelled = _changed(
            session, export_id, RUNNABLE, status=Status.CANCELLED, finished_at=now, expires_at=now + ttl, updated_at=now
        )
        if not cancelled:  # it finished in the meantime
            session.refresh(row)
            raise BadRequest(f"batch export {export_id} is {row.status}: there is nothing to cancel")
        session.refresh(row)
        return _record(row)


def claim(metadata: MetadataDB, export_id: str, now: datetime) -> bool:
    with metadata.session() as session:
        return _changed(
            session,
            export_id,
            RUNNABLE,
            status=Status.PROCESSING,
            started_at=now,
            finished_at=None,
            expires_at=None,
            log=None,
            url=None,
            rows_exported=0,
            total_rows=None,
            truncated=False,
            updated_at=now,
        )


def record_progress(metadata: MetadataDB, export_id: str, rows: int, **counted: Any) -> bool:
    """Store the rows written so far; False when the record is no longer PROCESSING (cancelled)."""
    with metadata.session() as session:
        return _changed(
            session, export_id, (Status.PROCESSING,), rows_exported=rows, updated_at=datetime.now(UTC), **counted
        )


def record_completed(
    metadata: MetadataDB, export_id: str, stored: StoredFile, rows: int, url: str, now: datetime, expires_at: datetime
) -> bool:
    with metadata.session() as session:
        return _changed(
            session,
            export_id,
            (Status.PROCESSING,),
            status=Status.COMPLETED,
            rows_exported=rows,
            object_key=stored.key,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            url=url,
            finished_at=now,
            expires_at=expires_at,
            updated_at=now,
        )


def record_failed(metadata: MetadataDB, export_id: str, reason: str, now: datetime, ttl: timedelta) -> bool:
    with metadata.session() as session:
        return _changed(
            session,
            export_id,
            RUNNABLE,
            status=Status.FAILED,
            log=reason,
            finished_at=now,
            expires_at=now + ttl,
            url=None,
            updated_at=now,
        )


def expired_records(metadata: MetadataDB, before: datetime) -> list[tuple[str, str | None]]:
    """(id, object key) of finished exports whose expiry is at or before `before`."""
    with metadata.session() as session:
        rows = session.execute(
            select(BatchExport.id, BatchExport.object_key).where(
                BatchExport.expires_at <= before, BatchExport.status.in_([str(s) for s in FINISHED])
            )
        ).all()
        return [(r.id, r.object_key) for r in rows]


def delete_records(session: Session, export_ids: list[str]) -> None:
    if export_ids:
        session.execute(delete(BatchExport).where(BatchExport.id.in_(export_ids)))


# --- what the routes call ----------------------------------------------------------------------
async def create_export(
    *,
    metadata: MetadataDB,
    producer: QueueProducer,
    settings: Settings,
    project_id: str,
    body: CreateBatchExportRequest,
) -> CreatedBatchExport:
    """Validate, store the record, enqueue its one job (job id = export id)."""
    if not settings.batch_export_enabled:
        raise Forbidden(DISABLED)
    parse_query(body.table_name, body.filter, body.order_by)  # a bad filter is a 400 now, not a failed job
    if body.format is FileFormat.PARQUET and body.compressed:
        raise BadParameter("compressed", "Parquet pages are always zstd-compressed; gzip applies to CSV, JSON, JSONL")
    if body.email and not Mailer.from_settings(settings).enabled:
        raise BadParameter("email", "this server sends no email (SMTP_CONNECTION_URL and EMAIL_FROM_ADDRESS unset)")
    record = await asyncio.to_thread(insert_record, metadata, project_id, body, datetime.now(UTC))
    data = {"projectId": project_id, "batchExportId": record.id}
    try:
        await producer.add(BATCH_EXPORT_QUEUE, JOB_NAME, data, jobId=record.id)
    except Exception as exc:
        reason = f"could not be queued: {one_line_reason(exc)}"
        ttl = timedelta(hours=settings.batch_export_link_expiration_hours)
        await asyncio.to_thread(record_failed, metadata, record.id, reason, datetime.now(UTC), ttl)
        raise Unavailable("The export could not be queued; nothing will run. Try again.", reason) from None
    get_logger("tracehouse.batch_export").info(
        "batch_export_created", exportId=record.id, projectId=project_id, table=str(body.table_name)
    )
    return CreatedBatchExport(id=record.id, status=record.status)


async def list_exports(metadata: MetadataDB, project_id: str, page: Page) -> BatchExports:
    records, total = await asyncio.to_thread(list_records, metadata, project_id, page)
    return BatchExports(data=[r.view() for r in records], meta=page_meta(page, total))


# --- the job --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobConfig:
    enabled: bool
    row_limit: int
    row_group_rows: int
    link_ttl: timedelta
    progress_rows: int = PROGRESS_ROWS
    range_rows: int = RANGE_ROWS

    @classmethod
    def from_settings(cls, settings: Settings) -> JobConfig:
        return cls(
            enabled=settings.batch_export_enabled,
            row_limit=settings.batch_export_row_limit,
            row_group_rows=settings.export_parquet_row_group_size,
            link_ttl=timedelta(hours=settings.batch_export_link_expiration_hours),
        )


@dataclass
class _Run:
    """One attempt of one export: its record, SQL and where its progress goes."""

    record: ExportRecord
    sql: ExportSql
    job: Any  # the bullmq job (None when run directly)
    loop: asyncio.AbstractEventLoop
    total: int = 0
    truncated: bool = False
    ranges: list[TimeRange] = dataclasses.field(default_factory=list)  # when read in time ranges


class BatchExportJob:
    def __init__(
        self,
        *,
        clickhouse: ClickHouse,
        metadata: MetadataDB,
        store: ExportStore,
        mailer: Mailer,
        config: JobConfig,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._ch = clickhouse
        self._metadata = metadata
        self._store = store
        self._mailer = mailer
        self._config = config
        self._clock = clock or (lambda: datetime.now(UTC))
        self._log = get_logger("tracehouse.batch_export")

    async def run(self, export_id: str, job: Any = None) -> dict[str, Any]:
        now = self._clock()
        if not self._config.enabled:
            await asyncio.to_thread(record_failed, self._metadata, export_id, DISABLED, now, self._config.link_ttl)
            raise UnrecoverableError(DISABLED)
        record = await asyncio.to_thread(get_record, self._metadata, export_id)
        if record is None:
            raise UnrecoverableError(f"batch export {export_id} does not exist")
        if record.status is Status.CANCELLED:
            self._log.info("batch_export_skipped", exportId=export_id, reason="cancelled")
            return {"skipped": "cancelled"}
        if record.status not in RUNNABLE:
            raise UnrecoverableError(f"batch export {export_id} is {record.status}; it is not run again")
        if now - record.created_at > STALE_AFTER:
            return await self._give_up(record, "stale: created more than 30 days ago; please create the export again")
        try:
            query, order = parse_query(record.table, record.query.get("filter") or {}, record.query.get("orderBy"))
        except BadParameter as exc:
            return await self._give_up(record, f"the stored request is not valid: {exc.message}")
        if not await asyncio.to_thread(claim, self._metadata, export_id, now):
            return {"skipped": "cancelled"}
        sql = export_sql(record.table, query, order, record.project_id, record.created_at)
        run = _Run(record, sql, job, asyncio.get_running_loop())
        self._log.info("batch_export_started", exportId=export_id, projectId=record.project_id, table=record.table)
        try:
            return await self._export(run)
        except ExportCancelled:
            self._log.info("batch_export_cancelled", exportId=export_id, projectId=record.project_id)
            return {"cancelled": True}
        except Exception as exc:
            await self._failed(run, exc)
            raise

    async def _give_up(self, record: ExportRecord, reason: str) -> dict[str, Any]:
        """FAILED for good (no retry could succeed), with the notice."""
        self._log.warning("batch_export_failed", exportId=record.id, projectId=record.project_id, error=reason)
        await asyncio.to_thread(record_failed, self._metadata, record.id, reason, self._clock(), self._config.link_ttl)
        await self._notify(record, *failed_notice(record, reason))
        return {"failed": reason}

    async def _failed(self, run: _Run, exc: Exception) -> None:
        record = run.record
        reason = readable_reason(exc)
        self._log.error(
            "batch_export_failed",
            exportId=record.id,
            projectId=record.project_id,
            error=reason,
            cause=one_line_reason(exc)[:500],
            attempt=(run.job.attemptsMade + 1) if run.job is not None else 1,
        )
        await asyncio.to_thread(record_failed, self._metadata, record.id, reason, self._clock(), self._config.link_ttl)
        if _last_attempt(run.job):
            await self._notify(record, *failed_notice(record, reason))

    async def _export(self, run: _Run) -> dict[str, Any]:
        record = run.record
        matched = await self._count(run)
        run.total, run.truncated = min(matched, self._config.row_limit), matched > self._config.row_limit
        if not await asyncio.to_thread(
            record_progress, self._metadata, record.id, 0, total_rows=run.total, truncated=run.truncated
        ):
            raise ExportCancelled(record.id)
        stored, rows = await asyncio.to_thread(self._write, run)
        finished = self._clock()
        expires_at = finished + self._config.link_ttl
        url = await self._store.download_url(record, stored, expires_at)
        if not await asyncio.to_thread(
            record_completed, self._metadata, record.id, stored, rows, url, finished, expires_at
        ):
            await self._store.blobs.delete(stored.key)  # cancelled at the last moment: leave nothing
            raise ExportCancelled(record.id)
        await self._final_progress(run, rows)
        self._log.info(
            "batch_export_completed",
            exportId=record.id,
            projectId=record.project_id,
            rows=rows,
            truncated=run.truncated,
            sizeBytes=stored.size_bytes,
            key=stored.key,
        )
        if record.email:
            done = dataclasses.replace(record, expires_at=expires_at)
            await self._notify(done, *completed_notice(done, url, rows, run.truncated, self._config.row_limit))
        return {"rows": rows, "totalRows": run.total, "truncated": run.truncated, "sizeBytes": stored.size_bytes}

    async def _count(self, run: _Run) -> int:
        """How many rows match; for an export read in time ranges, also plan the ranges."""
        sql, settings = run.sql, query_settings()
        if sql.hours is None:
            counted = await self._ch.query(sql.count, sql.params, workload=Workload.EXPORT, settings=settings)
            return int(counted[0]["n"])
        per_hour = await self._ch.query(sql.hours, sql.params, workload=Workload.EXPORT, settings=settings)
        hours = [(datetime.fromtimestamp(int(r["h"]), UTC), int(r["n"])) for r in per_hour]
        run.ranges = plan_ranges(hours, sql.descending, self._config.range_rows)
        return sum(n for _, n in hours)

    def _batches(self, run: _Run) -> Generator[pa.RecordBatch]:
        """The export's rows in order: one query, or one per time range (each sorted on its own)."""
        sql, every = run.sql, self._config.progress_rows
        chunks = [sql.params] if sql.hours is None else [{**sql.params, **r.params()} for r in run.ranges]
        for params in chunks:
            batches = self._ch.stream_blocking(
                sql.rows, params, workload=Workload.EXPORT, settings=query_settings(), batch_rows=every
            )
            with closing(batches):  # type: ignore[type-var]  # a generator, typed as an Iterator
                yield from batches

    def _write(self, run: _Run) -> tuple[StoredFile, int]:
        """Blocking (a worker thread): stream the rows through the encoder into one upload."""
        record, sql, limit = run.record, run.sql, self._config.row_limit
        key = ExportStore.object_key(record)
        batches = self._batches(run)
        with closing(batches), self._store.blobs.open_sync_writer(key, part_size=self._store.part_size) as raw:
            sink = HashingSink(raw)
            encoder = open_encoder(
                record.format,
                record.gzipped,
                sink,
                sql.columns,
                row_group_rows=self._config.row_group_rows,
                empty_schema=lambda: self._empty_schema(sql),
            )
            rows = 0
            for batch in batches:
                rows = self._write_batch(run, encoder, named(batch, sql.columns), rows)
                if rows >= limit:  # the limit: the first `limit` rows (recorded as truncated)
                    break
            encoder.close()
        return StoredFile(key, sink.size, sink.sha256, record.format.content_type(record.gzipped)), rows

    def _write_batch(self, run: _Run, encoder: Encoder, batch: pa.RecordBatch, rows: int) -> int:
        """Write one batch, cut at each multiple of the progress step (reported there) and at the
        row limit; return the rows written so far."""
        every, limit = self._config.progress_rows, self._config.row_limit
        offset = 0
        while offset < batch.num_rows and rows < limit:
            take = min(batch.num_rows - offset, every - rows % every, limit - rows)
            encoder.write(batch.slice(offset, take))
            offset, rows = offset + take, rows + take
            if rows % every == 0:
                self._progress(run, rows)
        return rows

    def _empty_schema(self, sql: ExportSql) -> pa.Schema:
        backend = self._ch.backend(Workload.EXPORT)
        params = sql.params if sql.hours is None else {**sql.params, **TimeRange(EPOCH, EPOCH, 0).params()}
        settings = self._ch.settings_for(Workload.EXPORT, query_settings())
        empty = backend.query_arrow(f"SELECT * FROM ({sql.rows}) LIMIT 0", params, settings)
        return pa.schema([field.with_name(name) for field, name in zip(empty.schema, sql.names, strict=True)])

    def _progress(self, run: _Run, rows: int) -> None:
        """Blocking: the record (noticing a cancel), the log and the queue job."""
        if not record_progress(self._metadata, run.record.id, rows):
            raise ExportCancelled(run.record.id)
        self._report(run, rows)

    def _report(self, run: _Run, rows: int) -> None:
        progress = self._logged_progress(run, rows, final=False)
        if run.job is not None:
            asyncio.run_coroutine_threadsafe(run.job.updateProgress(progress), run.loop).result(timeout=30)

    async def _final_progress(self, run: _Run, rows: int) -> None:
        progress = self._logged_progress(run, rows, final=True)
        if run.job is not None:
            await run.job.updateProgress(progress)

    def _logged_progress(self, run: _Run, rows: int, *, final: bool) -> dict[str, int]:
        percent = 100 if final or run.total == 0 else min(100, rows * 100 // run.total)
        self._log.info(
            "batch_export_progress",
            exportId=run.record.id,
            projectId=run.record.project_id,
            rows=rows,
            totalRows=run.total,
            percent=percent,
        )
        return {"percent": percent, "rowsExported": rows, "totalRows": run.total}

    async def _notify(self, record: ExportRecord, subject: str, body: str) -> None:
        """Best effort: a notice that cannot be sent is logged, and the export keeps its outcome."""
        if not record.email:
            return
        try:
            await self._mailer.send(record.email, subject, body)
        except Exception as exc:  # noqa: BLE001 - any SMTP or config failure
            self._log.warning(
                "batch_export_email_failed", exportId=record.id, projectId=record.project_id, error=one_line_reason(exc)
            )


def _last_attempt(job: Any) -> bool:
    if job is None:
        return True
    return bool(job.attemptsMade + 1 >= int(job.opts.get("attempts") or 1))


def readable_reason(exc: BaseException) -> str:
    """What the record and the email say: the cause in the user's terms, never SQL or a stack."""
    if isinstance(exc, ClickHouseError):
        if exc.kind is ClickHouseErrorKind.TIMEOUT:
            return (
                "the query took longer than the export time limit "
                "(LANGFUSE_CLICKHOUSE_DATA_EXPORT_REQUEST_TIMEOUT_MS); narrow the filter"
            )
        if exc.kind in (ClickHouseErrorKind.MEMORY_LIMIT, ClickHouseErrorKind.OVERCOMMIT):
            return (
                "the query needed more memory than exports may use "
                "(LANGFUSE_CLICKHOUSE_DATA_EXPORT_MAX_MEMORY_USAGE); narrow the filter"
            )
        return "the query failed in ClickHouse; it is retried, and the worker's log has the details"
    if isinstance(exc, ObstoreError | OSError):
        return f"the file could not be written to the export store: {one_line_reason(exc)[:300]}"
    return f"an internal error occurred ({type(exc).__name__}); the worker's log has the details"
