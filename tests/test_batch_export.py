"""Batch exports, end to end: the API, the job over real chDB, the local store and moto S3, an
aiosmtpd SMTP server on loopback, the queue, the expiry cron, and the CLI against a running server.

Exported files are read back with their own readers (json, csv, pyarrow) and compared row for row
with what the read API answers for the same parameters. The SIGKILL case is in
test_batch_export_crash.py.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import gzip
import io
import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword
from bullmq.custom_errors import UnrecoverableError

from conftest import ACCESS_KEY, REGION, SECRET_KEY, free_port, server_thread
from export_helpers import write_rows
from helpers import rows_of, start_ingestion, until
from tracehouse.api_common import Forbidden
from tracehouse.batch_export import service as batch_service
from tracehouse.batch_export.models import CreateBatchExportRequest, Status
from tracehouse.batch_export.notify import Mailer
from tracehouse.batch_export.service import BatchExportJob, JobConfig, create_export, get_record, request_cancel
from tracehouse.batch_export.sources import TimeRange, plan_ranges
from tracehouse.batch_export.storage import build_export_store
from tracehouse.batch_export.worker import cleanup_cron
from tracehouse.cron import run_cron
from tracehouse.export.worker import BATCH_EXPORT_QUEUE
from tracehouse.queries.service import parse_json
from tracehouse.settings import WorkerRole
from tracehouse.timefmt import api_time
from tracehouse.web.app import create_app
from tracehouse.workers import start_workers

# The loopback SMTP server asks for AUTH without TLS (aiosmtpd warns about that; it is a test server).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
FORMATS = [("JSON", False), ("JSONL", False), ("CSV", False), ("PARQUET", False), ("JSONL", True), ("CSV", True)]


# --- an SMTP server on loopback ---------------------------------------------------------------
class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook
        assert isinstance(envelope.content, bytes)
        message = message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"mailer", b"s3cret")
    return AuthResult(success=ok)


@pytest.fixture
def smtp() -> Iterator[tuple[str, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=_authenticate, auth_required=True, auth_require_tls=False
    )
    controller.start()
    try:
        yield f"smtp://mailer:s3cret@127.0.0.1:{port}", inbox
    finally:
        controller.stop()


# --- data through the real ingestion pipeline -----------------------------------------------------
def ev(kind: str, body: dict[str, Any], ts: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "timestamp": ts, "type": kind, "body": body}


def t(minute: int, second: int = 0) -> str:
    return f"2026-11-01T12:{minute:02d}:{second:02d}.000Z"


@pytest.fixture
async def loaded(services: Any, project: tuple[str, dict[str, str]]) -> tuple[str, dict[str, str], Any]:
    """6 traces with observations, scores (numeric and text) and sessions, with structured I/O and
    metadata; the app with the batch export routes."""
    project_id, headers = project
    batch = []
    for i in range(6):
        trace_id = f"tr-{i}"
        batch += [
            ev(
                "trace-create",
                {
                    "id": trace_id,
                    "name": "chat" if i % 2 == 0 else "search",
                    "userId": f"u{i % 2}",
                    "sessionId": f"sess-{i % 3}",
                    "tags": ["a", "b"] if i < 3 else ["a"],
                    "environment": "prod" if i != 4 else "dev",
                    "release": "r1",
                    "version": f"v{i}",
                    "timestamp": t(i),
                    "input": {"q": i, "messages": [{"role": "user", "content": f'question, "{i}"\nline'}]},
                    "output": "ok" if i % 2 else {"answer": i},
                    "metadata": {"k": "v", "n": i, "nested": {"x": [1, 2]}},
                },
                t(i),
            ),
            ev(
                "span-create",
                {"id": f"sp-{i}", "traceId": trace_id, "name": "root", "startTime": t(i), "endTime": t(i, 2)},
                t(i),
            ),
            ev(
                "generation-create",
                {
                    "id": f"gen-{i}",
                    "traceId": trace_id,
                    "parentObservationId": f"sp-{i}",
                    "name": "llm",
                    "model": "gpt-4o",
                    "modelParameters": {"temperature": 0.2},
                    "startTime": t(i, 1),
                    "endTime": t(i, 5),
                    "completionStartTime": t(i, 2),
                    "level": "ERROR" if i == 1 else "DEFAULT",
                    "usageDetails": {"input": 10 + i, "output": 5},
                    "costDetails": {"input": 0.01, "output": 0.02},
                    "metadata": {"step": i},
                },
                t(i, 1),
            ),
            ev("score-create", {"id": f"sc-{i}", "traceId": trace_id, "name": "quality", "value": i / 10}, t(i, 6)),
        ]
    batch.append(
        ev(
            "score-create",
            {"id": "sc-text", "traceId": "tr-0", "name": "note", "value": "fine", "dataType": "TEXT"},
            t(0, 7),
        )
    )
    app = create_app(services)
    runner = await start_ingestion(services)
    try:
        async with client_of(app) as client:
            response = await client.post("/api/public/ingestion", headers=headers, json={"batch": batch})
            assert response.status_code == 207 and not response.json()["errors"], response.text
        await until(lambda: _count(services, "scores", project_id, 7))
        await until(lambda: _count(services, "observations", project_id, 12))
        await until(lambda: _count(services, "traces", project_id, 6))
    finally:
        await runner.shutdown(10)
    return project_id, headers, app


async def _count(services: Any, table: str, project_id: str, n: int) -> bool:
    return len(await rows_of(services, table, project_id)) >= n


def client_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def export_job(services: Any, clock: Any = None, range_rows: int | None = None, **changes: Any) -> BatchExportJob:
    """The job as the worker builds it, over `services`' settings with `changes`."""
    settings = services.settings.model_copy(update=changes)
    config = JobConfig.from_settings(settings)
    if range_rows is not None:
        config = dataclasses.replace(config, range_rows=range_rows)
    return BatchExportJob(
        clickhouse=services.clickhouse,
        metadata=services.metadata,
        store=build_export_store(settings),
        mailer=Mailer.from_settings(settings),
        config=config,
        clock=clock,
    )


async def create(services: Any, project_id: str, **body: Any) -> str:
    request = CreateBatchExportRequest.model_validate(body)
    created = await create_export(
        metadata=services.metadata,
        producer=services.producer,
        settings=services.settings,
        project_id=project_id,
        body=request,
    )
    return created.id


async def read_file(job: BatchExportJob, export_id: str) -> bytes:
    record = get_record(job._metadata, export_id)  # noqa: SLF001 - the job's own metadata DB
    assert record is not None and record.object_key is not None, record
    return await job._store.blobs.get(record.object_key)  # noqa: SLF001


# --- reading files back --------------------------------------------------------------------------
def rows_in(data: bytes, fmt: str, gzipped: bool) -> list[dict[str, Any]]:
    if gzipped:
        data = gzip.decompress(data)
    if fmt == "JSON":
        rows = json.loads(data)
        assert isinstance(rows, list)
        return rows
    if fmt == "JSONL":
        return [json.loads(line) for line in data.decode().splitlines()]
    if fmt == "CSV":
        return list(csv.DictReader(io.StringIO(data.decode())))
    return pq.read_table(io.BytesIO(data)).to_pylist(maps_as_pydicts="strict")


def same(exported: Any, api: Any, fmt: str) -> bool:
    """Whether an exported value is the API's value, in the format's representation."""
    if fmt in ("JSON", "JSONL"):
        return bool(exported == api)
    if fmt == "CSV":
        return _same_text(exported, api)
    return _same_typed(exported, api)


def _same_text(cell: str, api: Any) -> bool:
    if api is None:
        return cell == ""
    if isinstance(api, bool):
        return cell == str(api).lower()
    if isinstance(api, int | float):
        return float(cell) == api
    if isinstance(api, str):
        return cell == api or _json_or_none(cell) == api
    return bool(json.loads(cell) == api)


def _same_typed(value: Any, api: Any) -> bool:
    if isinstance(value, datetime):
        return api_time(value) == api
    texts = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if texts and isinstance(api, dict) and {k: parse_json(v) for k, v in value.items()} == api:
        return True  # metadata: stored JSON texts
    if isinstance(value, str) and not isinstance(api, str):
        return bool(parse_json(value) == api)  # input/output: the stored text
    return bool(value == api)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


async def api_items(app: Any, headers: dict[str, str], path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a paged list route."""
    items: list[dict[str, Any]] = []
    async with client_of(app) as client:
        for page in range(1, 100):
            response = await client.get(path, headers=headers, params={**params, "page": page, "limit": 100})
            assert response.status_code == 200, response.text
            body = response.json()
            items += body["data"]
            if page >= body["meta"]["totalPages"]:
                return items
    raise AssertionError("too many pages")


def assert_rows_match(exported: list[dict[str, Any]], api: list[dict[str, Any]], fmt: str) -> None:
    assert [r["id"] for r in exported] == [a["id"] for a in api]
    for row, item in zip(exported, api, strict=True):
        assert set(row) <= set(item) | {"value"}, f"fields the API does not have: {set(row) - set(item)}"
        for name, value in row.items():
            assert same(value, item.get(name), fmt), (fmt, row["id"], name, value, item.get(name))


# (table, the read API route, the filter, extra route parameters the export does not take)
CASES = [
    (
        "traces",
        "/api/public/traces",
        {
            "userId": "u0",
            "tags": ["a"],
            "filter": [{"type": "stringOptions", "column": "environment", "operator": "any of", "value": ["prod"]}],
        },
        {},
    ),
    ("observations", "/api/public/observations", {"type": "GENERATION", "fromStartTime": "2026-11-01T12:01:00Z"}, {}),
    (
        "scores",
        "/api/public/v2/scores",
        {
            "traceTags": ["b"],
            "filter": json.dumps([{"type": "string", "column": "traceId", "operator": "starts with", "value": "tr-"}]),
        },
        {"fields": "score"},
    ),
    ("sessions", "/api/public/sessions", {"fromTimestamp": "2026-11-01T12:01:00Z", "environment": ["prod"]}, {}),
]


@pytest.mark.parametrize(("table", "route", "filters", "extra"), CASES, ids=[c[0] for c in CASES])
async def test_every_table_and_format_holds_what_the_read_api_returns(
    services: Any, loaded: Any, table: str, route: str, filters: dict[str, Any], extra: dict[str, Any]
) -> None:
    project_id, headers, app = loaded
    params = {k: json.dumps(v) if k == "filter" and isinstance(v, list) else v for k, v in filters.items()}
    expected = await api_items(app, headers, route, {**params, **extra})
    assert 0 < len(expected) < len(await api_items(app, headers, route, extra)), "the filter selects some rows"
    job = export_job(services)
    for fmt, compressed in FORMATS:
        export_id = await create(
            services, project_id, tableName=table, filter=filters, format=fmt, compressed=compressed
        )
        result = await job.run(export_id)
        assert result["rows"] == len(expected), result
        record = get_record(services.metadata, export_id)
        assert record is not None and record.status is Status.COMPLETED and record.rows_exported == len(expected)
        data = await read_file(job, export_id)
        assert record.size_bytes == len(data)
        if compressed:
            assert data[:2] == b"\x1f\x8b" and record.object_key is not None and record.object_key.endswith(".gz")
        assert_rows_match(rows_in(data, fmt, compressed), expected, fmt)


# --- the other guarantees --------------------------------------------------------------------------
def s3_changes(moto_endpoint: str, bucket: str) -> dict[str, Any]:
    return {
        "batch_export_bucket": bucket,
        "batch_export_prefix": "exports/",
        "batch_export_endpoint": moto_endpoint,
        "batch_export_region": REGION,
        "batch_export_access_key_id": ACCESS_KEY,
        "batch_export_secret_access_key": SECRET_KEY,
        "batch_export_force_path_style": True,
    }


def mail_changes(smtp_url: str) -> dict[str, Any]:
    return {"smtp_connection_url": smtp_url, "email_from_address": "exports@tracehouse.test"}


async def test_a_filter_that_matches_nothing_gives_an_empty_but_valid_file(services: Any, loaded: Any) -> None:
    project_id, _, _ = loaded
    job = export_job(services)
    full = await create(services, project_id, tableName="traces", filter={}, format="PARQUET")
    await job.run(full)
    columns = pq.read_table(io.BytesIO(await read_file(job, full))).schema.names
    for fmt, compressed in FORMATS:
        export_id = await create(
            services, project_id, tableName="traces", filter={"userId": "nobody"}, format=fmt, compressed=compressed
        )
        assert (await job.run(export_id))["rows"] == 0
        data = await read_file(job, export_id)
        assert rows_in(data, fmt, compressed) == []
        if fmt == "PARQUET":  # an empty Parquet file still has the export's columns and types
            assert pq.read_table(io.BytesIO(data)).schema.names == columns
        if fmt == "CSV":
            lines = list(csv.reader(io.StringIO((gzip.decompress(data) if compressed else data).decode())))
            assert lines == [columns]  # the header alone


async def test_the_api_answers_202_queues_one_job_and_the_worker_completes_it(services: Any, loaded: Any) -> None:
    project_id, headers, app = loaded
    async with client_of(app) as client:
        bad = await client.post(
            "/api/public/batch-exports",
            headers=headers,
            json={"tableName": "traces", "format": "CSV", "filter": {"fromTimestamp": "yesterday"}},
        )
        assert bad.status_code == 400 and bad.json()["parameter"] == "filter.fromTimestamp", bad.text
        unknown = await client.post(
            "/api/public/batch-exports",
            headers=headers,
            json={"tableName": "traces", "format": "CSV", "filter": {"colour": "red"}},
        )
        assert unknown.status_code == 400 and unknown.json()["parameter"] == "filter.colour", unknown.text
        created = await client.post(
            "/api/public/batch-exports",
            headers=headers,
            json={"tableName": "observations", "format": "JSONL", "filter": {"type": "GENERATION"}},
        )
        assert created.status_code == 202, created.text
        export_id = created.json()["id"]
        shown = (await client.get(f"/api/public/batch-exports/{export_id}", headers=headers)).json()
        assert shown["status"] == "QUEUED" and shown["rowsExported"] == 0 and shown["url"] is None
        listed = (await client.get("/api/public/batch-exports", headers=headers)).json()
        assert export_id in [e["id"] for e in listed["data"]]

        # One export id, one job: enqueuing it again is a no-op.
        queue = services.producer.queue(BATCH_EXPORT_QUEUE)
        await services.producer.add(
            BATCH_EXPORT_QUEUE, "batch-export-job", {"batchExportId": export_id}, jobId=export_id
        )
        assert (await queue.getJobCounts("waiting"))["waiting"] == 1

        runner = await start_workers(services, WorkerRole.EXPORT, crons=[])
        try:
            done = await until(lambda: _finished(client, headers, export_id), timeout=60)
        finally:
            await runner.shutdown(10)
        assert done["status"] == "COMPLETED" and done["rowsExported"] == done["totalRows"] == 6, done
        assert done["url"] and done["expiresAt"] and done["startedAt"] and done["finishedAt"] and done["error"] is None
        job = await queue.getJob(export_id)
        assert job.progress == {"percent": 100, "rowsExported": 6, "totalRows": 6}

        # The signed link downloads the file; a tampered one does not; another project sees nothing.
        link = httpx.URL(done["url"])
        got = await client.get(link.path, params=dict(link.params))
        assert got.status_code == 200 and len(got.content) == done["sizeBytes"]
        assert sorted(r["id"] for r in rows_in(got.content, "JSONL", False)) == [f"gen-{i}" for i in range(6)]
        tampered = await client.get(link.path, params={"token": str(link.params["token"])[:-4] + "AAAA"})
        assert tampered.status_code == 403
    other_id, other_headers = _other_project(services)
    async with client_of(app) as client:
        assert (await client.get(f"/api/public/batch-exports/{export_id}", headers=other_headers)).status_code == 404
        assert (
            await client.post(f"/api/public/batch-exports/{export_id}/cancel", headers=other_headers)
        ).status_code == 404


async def _finished(client: httpx.AsyncClient, headers: dict[str, str], export_id: str) -> dict[str, Any] | None:
    body = (await client.get(f"/api/public/batch-exports/{export_id}", headers=headers)).json()
    return body if body["status"] in ("COMPLETED", "FAILED", "CANCELLED") else None


def _other_project(services: Any) -> tuple[str, dict[str, str]]:
    import base64

    from tracehouse.metadata import create_api_key, create_project

    created = create_project(services.metadata, "other", project_id=f"p-{uuid.uuid4().hex[:10]}")
    key = create_api_key(services.metadata, created.id, salt=services.settings.salt)
    token = base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()
    return created.id, {"Authorization": f"Basic {token}"}


async def test_the_file_is_the_state_as_of_creation(services: Any, project: Any) -> None:
    """Rows written after the export was created are not in it; rows deleted before are not."""
    project_id, _ = project
    now = datetime.now(UTC)
    before = now - timedelta(minutes=5)
    await write_rows(
        services.clickhouse,
        "traces",
        project_id,
        [{"id": f"t{i}", "event_ts": before, "timestamp": before, "name": "v1"} for i in range(4)]
        + [{"id": "t3", "event_ts": before + timedelta(minutes=1), "timestamp": before, "is_deleted": 1}],
    )
    export_id = await create(services, project_id, tableName="traces", filter={}, format="JSON")
    record = get_record(services.metadata, export_id)
    assert record is not None
    later = record.created_at + timedelta(seconds=1)
    await write_rows(
        services.clickhouse,
        "traces",
        project_id,
        [
            {"id": "t0", "event_ts": later, "timestamp": before, "name": "v2"},  # an update after
            {"id": "t9", "event_ts": later, "timestamp": before, "name": "v1"},  # a new row after
            {"id": "t1", "event_ts": later, "timestamp": before, "is_deleted": 1},  # a delete after
        ],
    )
    job = export_job(services)
    await job.run(export_id)
    rows = rows_in(await read_file(job, export_id), "JSON", False)
    assert sorted((r["id"], r["name"]) for r in rows) == [("t0", "v1"), ("t1", "v1"), ("t2", "v1")]


async def test_a_cancel_mid_stream_aborts_the_multipart_upload_and_leaves_nothing(
    services: Any, project: Any, moto_endpoint: str, bucket: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_id, _ = project
    ts = datetime.now(UTC) - timedelta(hours=1)
    big = "x" * 2000  # ~24 MB of rows: several 5 MiB parts before the cancel lands
    await write_rows(
        services.clickhouse,
        "traces",
        project_id,
        [{"id": f"t{i:05d}", "event_ts": ts, "timestamp": ts, "input": big} for i in range(12_000)],
    )
    export_id = await create(services, project_id, tableName="traces", filter={}, format="JSONL")
    real_progress = batch_service.record_progress
    seen: list[int] = []

    def progress_then_cancel(metadata: Any, export: str, rows: int, **counted: Any) -> bool:
        seen.append(rows)
        if rows >= 10_000:  # the user presses cancel while the file is being written
            request_cancel(metadata, project_id, export, datetime.now(UTC), timedelta(hours=1))
        return real_progress(metadata, export, rows, **counted)

    monkeypatch.setattr(batch_service, "record_progress", progress_then_cancel)
    job = export_job(services, **s3_changes(moto_endpoint, bucket), batch_export_part_size_mib=5)
    assert await job.run(export_id) == {"cancelled": True}
    record = get_record(services.metadata, export_id)
    assert record is not None and record.status is Status.CANCELLED and record.url is None
    assert record.rows_exported == 5_000 and record.total_rows == 12_000 and seen == [0, 5_000, 10_000]
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert not s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "the upload was aborted"
    assert await job.run(export_id) == {"skipped": "cancelled"}  # a retry of a cancelled export does nothing


async def test_completed_exports_email_the_link_and_the_presigned_url_downloads(
    services: Any, loaded: Any, moto_endpoint: str, bucket: str, smtp: tuple[str, Inbox]
) -> None:
    project_id, headers, app = loaded
    smtp_url, inbox = smtp
    changes = {**s3_changes(moto_endpoint, bucket), **mail_changes(smtp_url)}
    services = dataclasses.replace(services, settings=services.settings.model_copy(update=changes))
    export_id = await create(
        services,
        project_id,
        tableName="traces",
        filter={"userId": "u1"},
        format="CSV",
        email="ana@example.com",
        name="u1",
    )
    job = export_job(services)
    await job.run(export_id)
    record = get_record(services.metadata, export_id)
    assert record is not None and record.status is Status.COMPLETED and record.url and record.expires_at
    assert record.object_key is not None and record.object_key.startswith(f"{project_id}/")
    [message] = inbox.messages
    assert message["X-Envelope-To"] == "ana@example.com" and message["From"] == "exports@tracehouse.test"
    assert "ready" in message["Subject"]
    text = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert record.url in text and api_time(record.expires_at) in text and "3 rows" in text
    async with httpx.AsyncClient() as client:
        got = await client.get(record.url)
    assert got.status_code == 200
    expected = await api_items(app, headers, "/api/public/traces", {"userId": "u1"})
    assert_rows_match(rows_in(got.content, "CSV", False), expected, "CSV")


async def test_a_failed_export_stores_a_readable_reason_and_emails_it(
    services: Any, loaded: Any, moto_endpoint: str, smtp: tuple[str, Inbox]
) -> None:
    project_id, _, _ = loaded
    smtp_url, inbox = smtp
    missing_bucket = f"missing-{uuid.uuid4().hex[:8]}"
    changes = {**s3_changes(moto_endpoint, missing_bucket), **mail_changes(smtp_url)}
    services = dataclasses.replace(services, settings=services.settings.model_copy(update=changes))
    export_id = await create(services, project_id, tableName="scores", filter={}, format="JSON", email="bo@example.com")
    with pytest.raises(Exception):  # noqa: B017 - re-raised for the queue's retry, whatever the store said
        await export_job(services).run(export_id)
    record = get_record(services.metadata, export_id)
    assert record is not None and record.status is Status.FAILED and record.url is None
    assert record.log is not None and record.log.startswith("the file could not be written to the export store")
    [message] = inbox.messages
    assert "failed" in message["Subject"] and message["X-Envelope-To"] == "bo@example.com"
    assert record.log in message.get_payload(decode=True).decode()  # type: ignore[union-attr]


async def test_guard_clauses(services: Any, loaded: Any, smtp: tuple[str, Inbox]) -> None:
    project_id, _, _ = loaded
    smtp_url, inbox = smtp
    services = dataclasses.replace(services, settings=services.settings.model_copy(update=mail_changes(smtp_url)))
    # Stale: created more than 30 days before the worker sees it.
    stale_id = await create(services, project_id, tableName="traces", filter={}, format="CSV", email="cy@example.com")
    stale = get_record(services.metadata, stale_id)
    assert stale is not None
    late = export_job(services, clock=lambda: stale.created_at + timedelta(days=31))
    assert "stale" in (await late.run(stale_id))["failed"]
    failed = get_record(services.metadata, stale_id)
    assert failed is not None and failed.status is Status.FAILED and "30 days" in (failed.log or "")
    assert [m["Subject"] for m in inbox.messages] == ["Your traces export failed"]
    # Missing; finished (an unexpected status for a run); the feature switched off.
    job = export_job(services)
    with pytest.raises(UnrecoverableError, match="does not exist"):
        await job.run("no-such-export")
    done_id = await create(services, project_id, tableName="traces", filter={}, format="CSV")
    await job.run(done_id)
    with pytest.raises(UnrecoverableError, match="COMPLETED"):
        await job.run(done_id)
    off_id = await create(services, project_id, tableName="traces", filter={}, format="CSV")
    with pytest.raises(UnrecoverableError, match="LANGFUSE_S3_BATCH_EXPORT_ENABLED"):
        await export_job(services, batch_export_enabled=False).run(off_id)
    off = get_record(services.metadata, off_id)
    assert off is not None and off.status is Status.FAILED and "disabled" in (off.log or "")
    disabled = dataclasses.replace(
        services, settings=services.settings.model_copy(update={"batch_export_enabled": False})
    )
    with pytest.raises(Forbidden):
        await create(disabled, project_id, tableName="traces", filter={}, format="CSV")
    # The row limit: the first rows, marked truncated.
    limited_id = await create(services, project_id, tableName="traces", filter={}, format="JSONL")
    result = await export_job(services, batch_export_row_limit=4).run(limited_id)
    limited = get_record(services.metadata, limited_id)
    assert result["rows"] == 4 and limited is not None and limited.truncated and limited.total_rows == 4


async def test_expired_files_and_records_are_cleaned_exactly_once(services: Any, loaded: Any) -> None:
    project_id, _, _ = loaded
    job = export_job(services)
    export_id = await create(services, project_id, tableName="sessions", filter={}, format="JSON")
    await job.run(export_id)
    record = get_record(services.metadata, export_id)
    assert record is not None and record.expires_at is not None and record.object_key is not None
    store = build_export_store(services.settings)
    assert await store.blobs.get(record.object_key)
    later = record.expires_at + timedelta(hours=3)
    spec = cleanup_cron(services.metadata, store)
    outcomes = await asyncio.gather(*(run_cron(spec, services.metadata, now=lambda: later) for _ in range(2)))
    assert sum(len(o.periods) for o in outcomes) == 1, outcomes  # two workers, one cleanup
    assert get_record(services.metadata, export_id) is None
    assert not await store.blobs.list(project_id + "/")


async def test_the_cli_creates_waits_downloads_lists_and_cancels(
    base_services: Any, services: Any, loaded: Any, key_prefix: str, tmp_path: Path
) -> None:
    project_id, headers, _ = loaded
    from tracehouse.metadata import create_api_key

    key = create_api_key(services.metadata, project_id, salt=services.settings.salt)
    with server_thread(base_services, key_prefix) as url:
        # The worker signs the download link for the address clients reach the server by.
        worker = dataclasses.replace(services, settings=services.settings.model_copy(update={"public_url": url}))
        runner = await start_workers(worker, WorkerRole.EXPORT, crons=[])
        try:
            env = {"LANGFUSE_HOST": url, "LANGFUSE_PUBLIC_KEY": key.public_key, "LANGFUSE_SECRET_KEY": key.secret_key}
            out = tmp_path / "traces.parquet"
            code, stdout, stderr = await _cli(
                env,
                "create",
                "--table",
                "traces",
                "--format",
                "parquet",
                "--filter",
                '{"userId": "u0"}',
                "--wait",
                "--output",
                str(out),
            )
            assert code == 0, stderr
            assert "COMPLETED" in stdout and "rows exported" in stderr + stdout
            exported = pq.read_table(out).to_pylist()
            assert sorted(r["id"] for r in exported) == ["tr-0", "tr-2", "tr-4"]
            export_id = stdout.split("queued batch export ", 1)[1].split()[0]
            code, stdout, stderr = await _cli(env, "download", export_id, "--output", str(tmp_path / "again.parquet"))
            assert code == 0 and (tmp_path / "again.parquet").read_bytes() == out.read_bytes(), stderr
            code, stdout, _ = await _cli(env, "list", "--json")
            assert code == 0 and export_id in [e["id"] for e in json.loads(stdout)["data"]]
            code, _, stderr = await _cli(env, "cancel", export_id)
            assert code == 1 and "nothing to cancel" in stderr
            code, _, stderr = await _cli(env, "create", "--table", "traces", "--format", "XML")
            assert code == 1 and "400" in stderr
        finally:
            await runner.shutdown(10)


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    import os

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracehouse.cli",
        "batch-export",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    return int(process.returncode or 0), stdout.decode(), stderr.decode()


def test_time_ranges_are_whole_days_and_busy_days_whole_hours_in_the_export_order() -> None:
    day = datetime(2026, 11, 1, tzinfo=UTC)
    hours = [(day + timedelta(hours=h), 2) for h in (1, 5)]  # a quiet day: 4 rows
    hours += [(day + timedelta(days=1, hours=h), n) for h, n in ((0, 3), (1, 2), (2, 9), (7, 1))]  # busy: 15
    ascending = plan_ranges(hours, descending=False, range_rows=5)
    assert ascending == [
        TimeRange(day, day + timedelta(days=1), 4),
        TimeRange(day + timedelta(days=1), day + timedelta(days=1, hours=2), 5),
        TimeRange(day + timedelta(days=1, hours=2), day + timedelta(days=1, hours=7), 9),  # one hour above: alone
        TimeRange(day + timedelta(days=1, hours=7), day + timedelta(days=1, hours=8), 1),
    ]
    assert all(a.end == b.start for a, b in zip(ascending[1:], ascending[2:], strict=False))  # no gaps in a day
    assert plan_ranges(hours, descending=True, range_rows=5) == ascending[::-1]
    assert plan_ranges([], descending=True) == []


@pytest.mark.parametrize("order_by", [None, "timestamp.asc", "name.desc"])
async def test_an_export_read_in_time_ranges_keeps_the_lists_order(
    services: Any, project: Any, order_by: str | None
) -> None:
    """Rows over three days, busy hours and ties on the timestamp: the file in the list's order."""
    project_id, headers = project
    app = create_app(services)
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    rows = []
    for i in range(60):
        ts = base + timedelta(days=i % 3, hours=(i % 7) % 3, minutes=i % 2)  # several rows share a time
        rows.append({"id": f"t{i:02d}", "event_ts": base, "timestamp": ts, "name": f"n{i % 5}"})
    await write_rows(services.clickhouse, "traces", project_id, rows)
    export_id = await create(services, project_id, tableName="traces", filter={}, format="JSONL", orderBy=order_by)
    job = export_job(services, range_rows=4)
    assert (await job.run(export_id))["rows"] == 60
    exported = rows_in(await read_file(job, export_id), "JSONL", False)
    params = {"orderBy": order_by} if order_by else {}
    assert [r["id"] for r in exported] == [a["id"] for a in await api_items(app, headers, "/api/public/traces", params)]
