"""One bad event, one giant trace or one hostile input never costs anyone else's data.

Every test here reproduces a defect found by probing the server: before the fix each one failed
(a poison row dead-lettered other projects' rows, a giant trace timed out and stalled the others,
malformed input answered 500 or 503).
"""

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from helpers import rows_of, start_ingestion, until
from tracehouse.clickhouse import Workload
from tracehouse.ingestion.merge import observation_row
from tracehouse.ingestion.writer import ClickHouseWriter, WriteFailed
from tracehouse.metadata import create_api_key, create_project
from tracehouse.metrics import Metrics
from tracehouse.web.app import create_app

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def ts(seconds: float = 0) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def ev(kind, body, seconds=0, event_id=None):
    return {"id": event_id or str(uuid.uuid4()), "timestamp": ts(seconds), "type": kind, "body": body}


def _client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=120)


async def _ingest(app, headers, batch):
    async with _client(app) as client:
        # The standard library's encoder, as a client would use: it writes integers beyond 64 bits and
        # nesting deeper than orjson's limit, both of which must be answered per event.
        return await client.post("/api/public/ingestion", headers=headers, content=json.dumps({"batch": batch}))


def _new_project(services, name):
    created = create_project(services.metadata, name, project_id=f"{name}-{uuid.uuid4().hex[:8]}")
    key = create_api_key(services.metadata, created.id, salt=services.settings.salt)
    token = base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()
    return created.id, {"Authorization": f"Basic {token}"}


# --- 1. a poison row fails alone -----------------------------------------------------------------


def _observation(project_id, obs_id, **body):
    event = {"id": f"e-{obs_id}", "type": "span-create", "timestamp": ts(), "body": {"id": obs_id, **body}}
    return observation_row(project_id, obs_id, [event], NOW)


async def test_a_poison_row_fails_alone_in_a_flush_shared_by_three_projects(services, monkeypatch):
    """1,000 valid rows of three projects and one unwritable row meet in one flush: every valid row is
    stored, and only the poison's job fails, with the real reason."""
    projects = [f"iso-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    jobs = [
        [_observation(projects[j % 3], f"ok-{j}-{k}", traceId=f"t-{j}", name="fine") for k in range(10)]
        for j in range(100)
    ]
    # promptVersion 70000 cannot be a UInt16: the row the probe used to poison everyone else's flush.
    poison = [_observation(projects[0], "poison", traceId="t-poison", promptName="p", promptVersion=70000)]
    from tracehouse.ingestion import writer as writer_module

    attempted: list[int] = []  # rows in each attempt to build an insert
    real_to_arrow = writer_module._to_arrow

    def to_arrow(table, rows):
        attempted.append(len(rows))
        return real_to_arrow(table, rows)

    monkeypatch.setattr(writer_module, "_to_arrow", to_arrow)
    writer = ClickHouseWriter(services.clickhouse, batch_size=5000, interval_ms=300, metrics=Metrics())
    try:
        outcomes = await asyncio.gather(
            *(writer.write("observations", rows) for rows in [*jobs[:50], poison, *jobs[50:]]),
            return_exceptions=True,
        )
    finally:
        await writer.close()
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], WriteFailed)
    assert outcomes[50] is failed[0], "the poison's own job is the one that fails"
    assert "70000" in str(failed[0]) or "too large" in str(failed[0]), str(failed[0])
    assert attempted[0] == 1001, f"all rows were meant to share the first flush: {attempted}"
    stored = await services.clickhouse.query(
        "SELECT count() AS n FROM observations FINAL WHERE project_id IN {p:Array(String)}",
        {"p": projects},
        workload=Workload.INTERACTIVE,
    )
    assert stored[0]["n"] == 1000


async def test_project_a_poison_event_is_a_per_event_400_and_project_b_is_stored(services):
    a, a_headers = _new_project(services, "poison-a")
    b, b_headers = _new_project(services, "poison-b")
    app = create_app(services)
    runner = await start_ingestion(services)
    try:
        bad = ev("generation-create", {"id": "gen-a", "traceId": "tr-a", "promptName": "p", "promptVersion": 70000})
        poisoned = await _ingest(app, a_headers, [bad])
        fine = await _ingest(
            app,
            b_headers,
            [ev("trace-create", {"id": "tr-b"}), ev("span-create", {"id": "span-b", "traceId": "tr-b"}, seconds=1)],
        )
        spans = await until(lambda: rows_of(services, "observations", b))
    finally:
        await runner.shutdown(10)
    assert poisoned.status_code == 207 and poisoned.json()["successes"] == []
    [error] = poisoned.json()["errors"]
    assert error["status"] == 400 and "promptVersion" in error["error"]
    assert fine.status_code == 207 and not fine.json()["errors"]
    assert [s["id"] for s in spans] == ["span-b"]
    assert await rows_of(services, "observations", a) == []


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("generation-create", {"usageDetails": {"input": 2**64 - 1, "output": 2**64 - 1}}, "usageDetails"),
        ("generation-create", {"usageDetails": {"input": 1e300}}, "usageDetails"),
        ("generation-create", {"usage": {"input": 2**64}}, "usage"),
        ("generation-create", {"costDetails": {"total": 1e300}}, "costDetails"),
        ("trace-create", {"timestamp": "0001-01-01T00:00:00Z"}, "timestamp"),
        ("trace-create", {"timestamp": "9999-12-31T00:00:00Z"}, "timestamp"),
        ("trace-create", {"timestamp": "1969-07-20T20:17:00Z"}, "timestamp"),
        ("span-create", {"startTime": "1800-01-01T00:00:00Z", "endTime": "2500-01-01T00:00:00Z"}, "startTime"),
        ("trace-create", {"public": "yes"}, "public"),
        ("trace-create", {"timestamp": 1793000000}, "timestamp"),
        ("trace-create", {"environment": 123}, "environment"),
        ("trace-create", {"tags": "a,b"}, "tags"),
        ("span-create", {"metadata": {"k": "v"}, "level": "LOUD"}, "level"),
        ("generation-create", {"modelParameters": "{}"}, "modelParameters"),
    ],
)
async def test_values_no_column_can_hold_are_rejected_per_event(services, project, kind, body, field):
    _, headers = project
    good = ev("trace-create", {"id": f"sibling-{uuid.uuid4().hex[:6]}"})
    bad = ev(kind, {"id": f"bad-{uuid.uuid4().hex[:6]}", **body})
    response = await _ingest(create_app(services), headers, [good, bad])
    assert response.status_code == 207
    assert response.json()["successes"] == [{"id": good["id"], "status": 201}]
    [error] = response.json()["errors"]
    assert error["id"] == bad["id"] and error["status"] == 400 and field in error["error"], error


async def test_an_event_nested_too_deep_fails_alone_and_its_siblings_are_stored(services, project):
    project_id, headers = project
    deep: object = "bottom"
    for _ in range(300):
        deep = {"d": deep}
    padding = "x" * 1_100_000  # a request over 1 MB, where events used to be measured one by one
    batch = [
        ev("trace-create", {"id": "deep", "input": deep}),
        ev("trace-create", {"id": "big-but-fine", "input": padding[:900_000]}),
        ev("trace-create", {"id": "sibling", "name": "fine"}, seconds=1),
    ]
    runner = await start_ingestion(services)
    try:
        response = await _ingest(create_app(services), headers, batch)
        rows = await until(lambda: _n_rows(services, "traces", project_id, 2))
    finally:
        await runner.shutdown(10)
    assert response.status_code == 207, response.text
    assert [e["id"] for e in response.json()["errors"]] == [batch[0]["id"]]
    assert "nested" in response.json()["errors"][0]["error"]
    assert {r["id"] for r in rows} == {"big-but-fine", "sibling"}


async def _n_rows(services, table, project_id, n):
    rows = await rows_of(services, table, project_id)
    return rows if len(rows) >= n else None


# --- a poisoned entity heals ------------------------------------------------------------------------


async def test_an_entity_poisoned_by_an_old_logged_event_heals_on_its_next_update(services, project):
    """An event logged before this validation existed (promptVersion 70000) is skipped with a recorded
    reason when the entity is merged again, so a later valid update is stored instead of failing forever."""
    project_id, headers = project
    poison_body = {
        "id": "healing",
        "traceId": "tr-heal",
        "type": "GENERATION",
        "promptName": "p",
        "promptVersion": 70000,
    }
    writer = ClickHouseWriter(services.clickhouse, batch_size=10, interval_ms=50, metrics=Metrics())
    try:
        await writer.write(
            "ingestion_event_log",
            [
                {
                    "project_id": project_id,
                    "entity": "observation",
                    "entity_id": "healing",
                    "event_id": "old-poison",
                    "event_type": "generation-create",
                    "event_time": NOW,
                    "body": json.dumps(poison_body),
                    "batch_key": "raw/old",
                    "received_at": NOW,
                }
            ],
        )
    finally:
        await writer.close()
    runner = await start_ingestion(services)
    try:
        update = ev("generation-update", {"id": "healing", "traceId": "tr-heal", "output": "done"}, seconds=5)
        response = await _ingest(create_app(services), headers, [update])
        rows = await until(lambda: rows_of(services, "observations", project_id))
    finally:
        await runner.shutdown(10)
    assert response.status_code == 207 and not response.json()["errors"]
    assert rows[0]["output"] == "done" and rows[0]["prompt_version"] is None
    skipped = services.metrics.registry.get_sample_value("ingestion_events_skipped_total", {"source": "event_log"})
    assert skipped == 1.0


async def test_a_replayed_batch_from_an_older_version_skips_only_its_unwritable_events(services, project):
    """A raw batch stored before this validation existed (a dead letter replayed, say) is checked again:
    its valid events are stored, the unwritable one is skipped with a reason."""
    project_id, _ = project
    document = {
        "projectId": project_id,
        "receivedAt": NOW.isoformat(),
        "events": [
            {**ev("trace-create", {"id": "old-ok"}), "entity": "trace"},
            {**ev("trace-create", {"id": "old-bad", "timestamp": "0001-01-01T00:00:00Z"}), "entity": "trace"},
        ],
    }
    key = f"raw/{project_id}/old-version.json"
    await services.blobs.put(key, orjson.dumps(document))
    runner = await start_ingestion(services)
    try:
        await services.producer.add("ingestion-queue", "ingestion-job", {"projectId": project_id, "batchKey": key})
        rows = await until(lambda: rows_of(services, "traces", project_id))
    finally:
        await runner.shutdown(10)
    assert [r["id"] for r in rows] == ["old-ok"]
    assert services.metrics.registry.get_sample_value("ingestion_events_skipped_total", {"source": "batch"}) == 1.0


# --- 2. a giant trace is stored and stalls nobody -------------------------------------------------


def _giant_export(trace_id: bytes, spans: int) -> bytes:
    start = int(NOW.timestamp() * 1e9)
    root_id = uuid.uuid4().bytes[:8]
    items = [
        Span(
            trace_id=trace_id,
            span_id=root_id,
            name="root",
            start_time_unix_nano=start,
            end_time_unix_nano=start + 10**9,
        )
    ]
    items += [
        Span(
            trace_id=trace_id,
            span_id=(i + 1).to_bytes(8, "big"),
            parent_span_id=root_id,
            name=f"step-{i}",
            start_time_unix_nano=start + i,
            end_time_unix_nano=start + i + 1000,
        )
        for i in range(spans - 1)
    ]
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=items)])])
    return request.SerializeToString()


@pytest.mark.slow
async def test_a_30000_span_trace_is_stored_while_another_projects_batch_flows(services):
    """The probe's giant trace: 30,000 spans in one OTel request (1.7 MB of protobuf). It is stored
    completely, and a one-event batch of another project sent while it is being received and processed
    becomes visible within seconds (it used to take 61 s, and the giant trace was dead-lettered)."""
    giant_project, giant_headers = _new_project(services, "giant")
    small_project, small_headers = _new_project(services, "small")
    trace_id = uuid.uuid4().bytes
    body = _giant_export(trace_id, 30_000)
    app = create_app(services)
    runner = await start_ingestion(services)
    try:
        async with _client(app) as client:
            started = time.monotonic()
            giant = asyncio.create_task(
                client.post(
                    "/api/public/otel/v1/traces",
                    headers={**giant_headers, "content-type": "application/x-protobuf"},
                    content=body,
                )
            )
            await asyncio.sleep(0.2)  # the giant request is being decoded and mapped
            posted = time.monotonic()
            small = await client.post(
                "/api/public/ingestion",
                headers=small_headers,
                content=orjson.dumps({"batch": [ev("trace-create", {"id": "small-one"})]}),
            )
            assert small.status_code == 207 and not small.json()["errors"]
            await until(lambda: rows_of(services, "traces", small_project), timeout=30)
            small_visible_s = time.monotonic() - posted
            giant_pending = not giant.done() or await _count(services, giant_project) < 30_000
            response = await giant
        assert response.status_code == 200 and response.json() == {}, response.text
        await until(lambda: _count_is(services, giant_project, 30_000), timeout=240)
        print(
            f"small batch visible after {small_visible_s:.2f}s; giant trace stored after "
            f"{time.monotonic() - started:.1f}s"
        )
    finally:
        await runner.shutdown(30)
    assert giant_pending, "the small batch was meant to be checked while the giant trace was in flight"
    assert small_visible_s < 5, f"another project's batch waited {small_visible_s:.1f}s behind the giant trace"
    traces = await rows_of(services, "traces", giant_project)
    assert [t["id"] for t in traces] == [trace_id.hex()]


async def _count(services, project_id):
    rows = await services.clickhouse.query(
        "SELECT count() AS n FROM observations FINAL WHERE project_id = {p:String}",
        {"p": project_id},
        workload=Workload.INTERACTIVE,
    )
    return int(rows[0]["n"])


async def _count_is(services, project_id, n):
    return await _count(services, project_id) >= n


# --- 5. malformed OTel input is a 400 (or a rejected span), never a 500 --------------------------


def _otel_json(spans):
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


GOOD_SPAN = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "fine", "startTimeUnixNano": "1793000000000000000"}


async def _otel(app, headers, body, content_type="application/json", encoding=None):
    extra = {"content-type": content_type, **({"content-encoding": encoding} if encoding else {})}
    async with _client(app) as client:
        return await client.post("/api/public/otel/v1/traces", headers={**headers, **extra}, content=body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceSpans":[1]}',
        b'{"resourceSpans":[{"scopeSpans":[7]}]}',
        b'{"resourceSpans":{"not":"a list"}}',
        b"[" * 5000 + b"]" * 5000,
        _otel_json([{**GOOD_SPAN, "startTimeUnixNano": str(2**64 - 1)}]),
        _otel_json([{**GOOD_SPAN, "traceId": "abc"}]),
        _otel_json([{**GOOD_SPAN, "spanId": "cd" * 9}]),
    ],
)
async def test_malformed_otel_requests_are_400(services, project, body):
    _, headers = project
    response = await _otel(create_app(services), headers, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


async def test_a_truncated_gzip_otel_body_is_400(services, project):
    import gzip

    _, headers = project
    body = gzip.compress(_otel_json([GOOD_SPAN]))[:-12]
    response = await _otel(create_app(services), headers, body, encoding="gzip")
    assert response.status_code == 400 and "gzip" in response.json()["error"]


async def test_one_bad_span_is_rejected_and_its_sibling_is_stored(services, project):
    project_id, headers = project
    bad = {**GOOD_SPAN, "spanId": "ef" * 8, "attributes": [{"key": "n", "value": {"intValue": "abc"}}]}
    late = {**GOOD_SPAN, "spanId": "aa" * 8, "startTimeUnixNano": str(2**64 - 1)}
    runner = await start_ingestion(services)
    try:
        response = await _otel(create_app(services), headers, _otel_json([GOOD_SPAN, bad, late]))
        rows = await until(lambda: rows_of(services, "observations", project_id))
    finally:
        await runner.shutdown(10)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == 2
    assert "intValue" in partial["errorMessage"] and "startTimeUnixNano" in partial["errorMessage"]
    assert [r["id"] for r in rows] == ["cd" * 8]


# --- 6. smaller defects ---------------------------------------------------------------------------


async def test_a_page_whose_offset_would_wrap_is_400_not_page_one(services, project):
    _, headers = project
    async with _client(create_app(services)) as client:
        wrapped = await client.get("/api/public/traces", headers=headers, params={"page": 2147483649, "limit": 50})
        far = await client.get("/api/public/traces", headers=headers, params={"page": 2147483647, "limit": 50})
    assert wrapped.status_code == 400 and wrapped.json()["parameter"] == "page"
    assert far.status_code == 200 and far.json()["data"] == []


async def test_ids_with_a_slash_can_be_read_and_deleted(services, project):
    project_id, headers = project
    batch = [
        ev("trace-create", {"id": "tenant/trace-1", "sessionId": "sess/1"}),
        ev("span-create", {"id": "tenant/span-1", "traceId": "tenant/trace-1"}, seconds=1),
    ]
    app = create_app(services)
    runner = await start_ingestion(services)
    try:
        await _ingest(app, headers, batch)
        await until(lambda: rows_of(services, "observations", project_id))
    finally:
        await runner.shutdown(10)
    async with _client(app) as client:
        trace = await client.get("/api/public/traces/tenant%2Ftrace-1", headers=headers)
        span = await client.get("/api/public/observations/tenant%2Fspan-1", headers=headers)
        session = await client.get("/api/public/sessions/sess%2F1", headers=headers)
        deleted = await client.delete("/api/public/traces/tenant%2Ftrace-1", headers=headers)
        gone = await client.get("/api/public/traces/tenant%2Ftrace-1", headers=headers)
    assert trace.status_code == 200 and trace.json()["id"] == "tenant/trace-1"
    assert span.status_code == 200 and span.json()["id"] == "tenant/span-1"
    assert session.status_code == 200 and session.json()["id"] == "sess/1"
    assert deleted.status_code == 200 and gone.status_code == 404
