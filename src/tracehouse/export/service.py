"""The per-project export job: one window of every table -> files -> manifest -> cursor.

Order of effects, and why each step is safe to repeat:

1. The window is fixed in the integration row first (`pending_window_*`). A retry, even one after
   the manifest was written, exports exactly this window again under the same file names.
2. Each table streams from ClickHouse (export workload class) into one file per (sub)window; a table
   that fails on a window longer than the minimum is split in half and retried (`AdaptiveSplitter`).
3. The manifest is written last among the files: readers trust manifested files only.
4. The cursor moves to the window's end in one conditional UPDATE. Only then is the window done.

A failed or killed attempt leaves its files unreferenced; the retry overwrites them (same names) or
ignores them (a different split). Nothing is deleted: a file another attempt of the same window may
have written, and a manifest may name, is never at risk.

Network destinations are reached only through a per-attempt `EgressProxy` (see egress.py), and what
a destination answers never reaches a log line, the status or the queue: its failures are reported
in the fixed words of destination.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from tracehouse.blobs import BlobStore
from tracehouse.clickhouse import ClickHouse, Workload
from tracehouse.clickhouse.workload import classify_error
from tracehouse.errors import one_line_reason
from tracehouse.export import state
from tracehouse.export.crypto import SecretBox
from tracehouse.export.destination import BLOCKED, DestinationError, destination_failure, destination_store
from tracehouse.export.egress import EgressProxy, EgressRule, Resolve, resolve_host
from tracehouse.export.formats import FileFormat, write_batches
from tracehouse.export.integrations import Integration, refused_host
from tracehouse.export.tables import ExportTable, first_row_query, tables_for, window_params
from tracehouse.export.windows import (
    ExportWindow,
    file_time,
    floor_to,
    from_ms,
    iso_ms,
    plan_window,
    skippable_until,
    to_ms,
)
from tracehouse.logging import get_logger
from tracehouse.metadata import MetadataDB
from tracehouse.metrics import Metrics
from tracehouse.settings import Settings

MANIFEST_VERSION = 1
Enqueue = Callable[[str, str], Awaitable[None]]  # (project_id, job_id)


@dataclass(frozen=True)
class ExportConfig:
    """The settings the job uses, separated from Settings so tests and the bench can tune them."""

    lag: timedelta
    catchup: timedelta
    min_window: timedelta
    row_group_rows: int
    trace_only_projects: frozenset[str]
    data_dir: Path
    # TRACEHOUSE_EXPORT_ALLOWED_DESTINATIONS: internal destinations the egress rule allows.
    allowed_destinations: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> ExportConfig:
        return cls(
            lag=timedelta(milliseconds=settings.export_safety_lag_ms),
            catchup=timedelta(milliseconds=settings.export_catchup_interval_ms),
            min_window=timedelta(milliseconds=settings.export_min_window_ms),
            row_group_rows=settings.export_parquet_row_group_size,
            trace_only_projects=settings.trace_only_projects,
            data_dir=settings.data_dir,
            allowed_destinations=settings.export_allowed_destinations,
        )


@dataclass(frozen=True)
class ExportedFile:
    key: str  # full object key, prefix included
    table: str
    window: ExportWindow
    rows: int
    size_bytes: int
    sha256: str
    content_type: str

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "table": self.table,
            "window": self.window.as_json(),
            "rows": self.rows,
            "sizeBytes": self.size_bytes,
            "sha256": self.sha256,
            "contentType": self.content_type,
        }


@dataclass
class _Attempt:
    """One run of one window: where it writes, and what it wrote (for cleanup on failure)."""

    integration: Integration
    store: BlobStore
    fmt: FileFormat
    window: ExportWindow
    owner: str  # the lease token of this attempt
    egress: EgressProxy | None = None  # the proxy the store talks through (None: a folder, or a test's store)
    written: list[ExportedFile] = field(default_factory=list)
    splits: int = 0

    @property
    def blocked(self) -> bool:
        return self.egress is not None and self.egress.blocked > 0

    def failure(self, exc: BaseException) -> str | None:
        """The fixed phrase for a destination failure (None: not the destination's)."""
        egress = self.egress
        return destination_failure(exc, blocked=self.blocked, unreachable=egress is not None and egress.unreachable > 0)


def manifest_key(project_id: str, window: ExportWindow) -> str:
    return f"{project_id}/manifests/{window.stamp}.json"


def job_id(project_id: str, cursor: datetime | None) -> str:
    """One queued job per project and cursor position: the scheduler and the job's own chaining
    produce the same id for the same position, so the queue keeps only one."""
    return f"{project_id}-{file_time(cursor) if cursor else 'start'}"


class LeaseLost(Exception):
    """A newer attempt of this export took the project's lease; this one stops without side effects."""


class ExportJob:
    def __init__(
        self,
        *,
        clickhouse: ClickHouse,
        metadata: MetadataDB,
        box: SecretBox,
        config: ExportConfig,
        metrics: Metrics,
        enqueue: Enqueue | None = None,
        clock: Callable[[], datetime] | None = None,
        store_for: Callable[[Integration], BlobStore] | None = None,
        resolve: Resolve | None = None,
    ) -> None:
        """`store_for` replaces the destination store (tests; such a store bypasses the egress proxy);
        `resolve` replaces DNS resolution for the egress check (tests)."""
        self._ch = clickhouse
        self._metadata = metadata
        self._box = box
        self._config = config
        self._metrics = metrics
        self._enqueue = enqueue
        self._clock = clock or (lambda: datetime.now(UTC))
        self._store_for = store_for
        self._rule = EgressRule(config.allowed_destinations)
        self._resolve = resolve or resolve_host
        self._log = get_logger("tracehouse.export")

    async def run(self, project_id: str, owner: str) -> dict[str, Any]:
        """Export the project's next window, if one is due. `owner` is the queue job's id."""
        try:
            integration = await asyncio.to_thread(state.load_integration, self._metadata, self._box, project_id)
        except Exception as exc:  # e.g. a secret the ENCRYPTION_KEY cannot decrypt: show it in the status
            await self._failed(project_id, exc, time.perf_counter())
            raise
        if integration is None or not integration.enabled:
            reason = "no integration" if integration is None else "disabled"
            self._log.info("blob_export_skipped", projectId=project_id, reason=reason)
            return {"skipped": reason}
        now = self._clock()
        token = await asyncio.to_thread(state.take_lease, self._metadata, project_id, owner, datetime.now(UTC))
        if token is None:
            self._log.info("blob_export_skipped", projectId=project_id, reason="another job is exporting it")
            return {"skipped": "another job is exporting this project"}
        try:
            return await self._run_leased(integration, token, now)
        except LeaseLost:
            self._log.warning("blob_export_lease_lost", projectId=project_id, owner=owner)
            return {"skipped": "a newer attempt took this export over"}
        finally:
            await asyncio.to_thread(state.release_lease, self._metadata, project_id, token)

    async def _run_leased(self, integration: Integration, owner: str, now: datetime) -> dict[str, Any]:
        project_id = integration.project_id
        tables = tables_for(project_id, self._config.trace_only_projects)
        started = time.perf_counter()
        try:
            window = await self._next_window(integration, tables, now)
        except Exception as exc:
            await self._failed(project_id, exc, started)
            raise
        if window is None:
            return {"waiting": True}
        horizon = now - self._config.lag
        catching_up = window.end + integration.frequency <= horizon
        egress = self._egress_for(integration)
        attempt: _Attempt | None = None
        sanitized: DestinationError | None = None
        try:
            async with AsyncExitStack() as stack:
                if egress is not None:
                    await self._preflight(integration)
                    await stack.enter_async_context(egress)
                attempt = _Attempt(
                    integration,
                    self._open_store(integration, egress),
                    FileFormat(integration.file_type, integration.compressed),
                    window,
                    owner,
                    egress,
                )
                for table in tables:
                    table_started = time.perf_counter()
                    await self._export_table(attempt, table, window)
                    self._metrics.blob_export_table_duration.labels(table.name).observe(
                        (time.perf_counter() - table_started) * 1000
                    )
                await self._hold_lease(attempt)  # a newer attempt of this window writes the manifest instead
                await self._write_manifest(attempt, tables)
            figures = state.JobFigures(
                datetime.now(UTC),
                int((time.perf_counter() - started) * 1000),
                sum(f.rows for f in attempt.written),
                len(attempt.written),
            )
            next_run = now if catching_up else window.end + integration.frequency + self._config.lag
            moved = await asyncio.to_thread(
                state.advance_cursor, self._metadata, project_id, owner, window, next_run, figures
            )
        except LeaseLost:
            raise
        except Exception as exc:
            failure = attempt.failure(exc) if attempt is not None else destination_failure(exc)
            await self._failed(project_id, exc, started, failure)
            if failure is None:
                raise
            sanitized = DestinationError(failure)
        if sanitized is not None:
            # Raised outside the handler and `from None`: the original error (which may quote the
            # destination's answer) is neither the message nor in the traceback the queue logs.
            raise sanitized from None
        assert attempt is not None
        mode = "catchup" if catching_up else "steady"
        self._log.info(
            "blob_export_job_completed",
            projectId=project_id,
            durationMs=figures.duration_ms,
            tablesExported=len(tables),
            rows=figures.rows,
            files=figures.files,
            mode=mode,
            windowStart=iso_ms(window.start),
            windowEnd=iso_ms(window.end),
            splits=attempt.splits,
            cursorMoved=moved,
        )
        self._metrics.blob_export_job_duration.labels(mode).observe(figures.duration_ms)
        self._metrics.blob_export_lag.labels(project_id).set((self._clock() - window.end).total_seconds())
        if moved and catching_up and self._enqueue is not None:
            await self._enqueue(project_id, job_id(project_id, window.end))
        return {
            "window": window.as_json(),
            "rows": figures.rows,
            "files": figures.files,
            "mode": mode,
            "splits": attempt.splits,
            "cursorMoved": moved,
        }

    # --- where -------------------------------------------------------------------------------
    def _egress_for(self, integration: Integration) -> EgressProxy | None:
        """A proxy for this attempt's network destination (a folder, or a test's store: none)."""
        if self._store_for is not None or integration.type == "LOCAL":
            return None
        return EgressProxy(self._rule, resolve=self._resolve, internal=integration.internal_endpoint_allowed)

    def _open_store(self, integration: Integration, egress: EgressProxy | None) -> BlobStore:
        if self._store_for is not None:
            return self._store_for(integration)
        return destination_store(integration, self._config.data_dir, proxy_url=egress.url if egress else None)

    async def _preflight(self, integration: Integration) -> None:
        """Fail at once, in fixed words, when the endpoint is refused now: the proxy would refuse
        every request anyway, and the client would retry refused https tunnels for a minute. (Not
        the enforcement: the proxy checks each connection, so a name that resolves differently
        later is still caught.)"""
        refused = await refused_host(
            integration.type,
            integration.endpoint,
            integration.bucket_name,
            integration.force_path_style,
            self._rule,
            internal=integration.internal_endpoint_allowed,
            resolve=self._resolve,
        )
        if refused is not None:
            self._log.warning("blob_export_egress_blocked", projectId=integration.project_id, host=refused)
            raise DestinationError(BLOCKED)

    # --- which window ------------------------------------------------------------------------
    async def _next_window(
        self, integration: Integration, tables: list[ExportTable], now: datetime
    ) -> ExportWindow | None:
        project_id = integration.project_id
        if integration.pending_window is not None:
            self._log.info("blob_export_resuming_window", projectId=project_id, **integration.pending_window.as_json())
            return integration.pending_window
        horizon = now - self._config.lag
        cursor = integration.last_sync_at
        if cursor is None:
            cursor = await self._initial_cursor(integration, tables, horizon)
            if not await asyncio.to_thread(state.set_initial_cursor, self._metadata, project_id, cursor):
                return None  # another job got there first; it carries on
        plan = plan_window(
            cursor, frequency=integration.frequency, catchup=self._config.catchup, horizon=horizon, lag=self._config.lag
        )
        if plan.window is None:
            assert plan.next_run is not None
            await asyncio.to_thread(state.set_next_run, self._metadata, project_id, cursor, plan.next_run)
            self._log.info(
                "blob_export_not_due", projectId=project_id, cursor=iso_ms(cursor), nextRun=iso_ms(plan.next_run)
            )
            return None
        window = plan.window
        if plan.catching_up:
            first = await self._first_row(project_id, tables, cursor)
            skip_to = skippable_until(cursor, first_row=first, horizon=horizon, chunk=window.duration)
            if skip_to is not None:
                # One window over the whole empty stretch: it is exported like any other (an empty
                # manifest), so the manifests still cover time without a gap.
                window = ExportWindow(cursor, skip_to)
                self._log.info("blob_export_skipping_empty", projectId=project_id, **window.as_json())
        if not await asyncio.to_thread(state.fix_window, self._metadata, project_id, window):
            return None
        return window

    async def _initial_cursor(self, integration: Integration, tables: list[ExportTable], horizon: datetime) -> datetime:
        if integration.export_mode != "FULL_HISTORY":
            return integration.export_start_date or floor_to(self._clock(), timedelta(days=1))
        first = await self._first_row(integration.project_id, tables, datetime(1970, 1, 1, tzinfo=UTC))
        # No data yet: nothing before the horizon can still arrive, so start there.
        return floor_to(first if first is not None else horizon, timedelta(minutes=1))

    async def _first_row(self, project_id: str, tables: list[ExportTable], after: datetime) -> datetime | None:
        """Earliest event_ts at or after `after` in the exported tables (None when there is none)."""
        rows = await self._ch.query(
            first_row_query(tables), {"project_id": project_id, "after_ms": to_ms(after)}, workload=Workload.EXPORT
        )
        found = [int(r["first"]) for r in rows if int(r["n"]) > 0]
        return from_ms(min(found)) if found else None

    # --- one table ---------------------------------------------------------------------------
    async def _export_table(self, attempt: _Attempt, table: ExportTable, window: ExportWindow) -> list[ExportedFile]:
        """Export `window` of `table`; on failure, split in half and export each half (recursively)."""
        failure: Exception | None = None
        try:
            written = await asyncio.to_thread(self._write_file, attempt, table, window)
        except Exception as exc:
            failure = exc
        if failure is not None:
            # Outside the handler: the halves' errors must not chain onto this one.
            return await self._split(attempt, table, window, failure)
        if written is None:
            return []
        attempt.written.append(written)
        await self._hold_lease(attempt)
        return [written]

    async def _split(
        self, attempt: _Attempt, table: ExportTable, window: ExportWindow, exc: Exception
    ) -> list[ExportedFile]:
        project_id = attempt.integration.project_id
        reason = attempt.failure(exc) or one_line_reason(exc)[:500]
        # A blocked destination stays blocked, whatever the window's size.
        if window.duration <= self._config.min_window or attempt.blocked:
            self._log.error(
                "blob_export_table_failed",
                table=table.name,
                projectId=project_id,
                windowMs=window.end_ms - window.start_ms,
                error=reason,
            )
            raise exc
        kind = classify_error(reason).value
        first, second = window.halves()
        self._log.warning(
            "blob_export_error_splitting",
            table=table.name,
            projectId=project_id,
            errorType=kind,
            errorMessage=reason,
            originalWindowMs=window.end_ms - window.start_ms,
            splitWindowMs=first.end_ms - first.start_ms,
            minTimestamp=iso_ms(window.start),
            maxTimestamp=iso_ms(window.end),
        )
        self._metrics.blob_export_splits.labels(table.name, kind).inc()
        attempt.splits += 1
        return await self._export_table(attempt, table, first) + await self._export_table(attempt, table, second)

    async def _hold_lease(self, attempt: _Attempt) -> None:
        if not await asyncio.to_thread(
            state.renew_lease, self._metadata, attempt.integration.project_id, attempt.owner
        ):
            raise LeaseLost(attempt.integration.project_id)

    def _write_file(self, attempt: _Attempt, table: ExportTable, window: ExportWindow) -> ExportedFile | None:
        """Blocking: stream the window's rows from ClickHouse into one object (runs in a thread)."""
        project_id = attempt.integration.project_id
        key = f"{project_id}/{table.name}/{window.stamp}.{attempt.fmt.extension}"
        batches = self._ch.stream_blocking(
            table.window_query(),
            window_params(project_id, window),
            workload=Workload.EXPORT,
            batch_rows=self._config.row_group_rows,
        )
        with closing(batches):  # type: ignore[type-var]
            result = write_batches(
                batches,
                lambda: attempt.store.open_sync_writer(key),
                attempt.fmt,
                row_group_rows=self._config.row_group_rows,
            )
        if result is None:
            return None
        self._metrics.blob_export_rows.labels(table.name).inc(result.rows)
        return ExportedFile(
            attempt.store.config.key_prefix + key,
            table.name,
            window,
            result.rows,
            result.size_bytes,
            result.sha256,
            attempt.fmt.content_type,
        )

    # --- commit ------------------------------------------------------------------------------
    async def _write_manifest(self, attempt: _Attempt, tables: list[ExportTable]) -> None:
        integration, window = attempt.integration, attempt.window
        rows = {t.name: sum(f.rows for f in attempt.written if f.table == t.name) for t in tables}
        manifest = {
            "version": MANIFEST_VERSION,
            "projectId": integration.project_id,
            "window": window.as_json(),
            "bounds": "[start, end)",
            "keyedTo": "event_ts",
            "createdAt": iso_ms(datetime.now(UTC)),
            "exportMode": integration.export_mode,
            "fileType": integration.file_type,
            "compressed": attempt.fmt.gzipped,
            "tables": [t.name for t in tables],
            "rows": rows,
            "files": [f.as_json() for f in attempt.written],
            "splits": attempt.splits,
            "querySettings": self._ch.settings_for(Workload.EXPORT),
            "rowGroupRows": self._config.row_group_rows,
        }
        await attempt.store.put(
            manifest_key(integration.project_id, window),
            orjson.dumps(manifest, option=orjson.OPT_INDENT_2),
            content_type="application/json",
        )

    async def _failed(
        self, project_id: str, exc: BaseException, started: float, destination: str | None = None
    ) -> None:
        """Log and record a failed job. `destination`: the fixed phrase when the destination failed
        (then nothing of the original error is used: it may quote the destination's answer)."""
        duration_ms = int((time.perf_counter() - started) * 1000)
        if destination is not None:
            reason, recorded, kind = destination, f"{DestinationError.__name__}: {destination}", "unknown"
        else:
            reason = one_line_reason(exc)
            recorded, kind = f"{type(exc).__name__}: {reason}", classify_error(str(exc)).value
        self._log.error(
            "blob_export_failed",
            projectId=project_id,
            durationMs=duration_ms,
            errorType=kind,
            error=reason[:500],
        )
        await asyncio.to_thread(
            state.record_failure, self._metadata, project_id, recorded, datetime.now(UTC), duration_ms
        )
