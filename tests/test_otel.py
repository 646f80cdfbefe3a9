"""OTLP/HTTP ingestion: protobuf and JSON, gzip, Langfuse attribute mapping, whole-export rejection."""

import gzip
import json
import uuid

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from helpers import rows_of, start_ingestion, until
from tracehouse.web.app import create_app

T0 = 1_793_000_000_000_000_000  # ns


def _kv(key, value):
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _export(trace_id: bytes, spans):
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_kv("service.name", "svc"), _kv("deployment.environment", "Prod")]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="langfuse-sdk", version="5.0.4"), spans=spans)],
            )
        ]
    )


async def _post(app, headers, body, content_type, encoding=None):
    extra = {"content-type": content_type, **({"content-encoding": encoding} if encoding else {})}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post("/api/public/otel/v1/traces", headers={**headers, **extra}, content=body)


async def test_protobuf_gzip_spans_map_to_trace_and_observations(services, project):
    project_id, headers = project
    trace_id, root_id, child_id = uuid.uuid4().bytes, uuid.uuid4().bytes[:8], uuid.uuid4().bytes[:8]
    root = Span(
        trace_id=trace_id,
        span_id=root_id,
        name="agent-run",
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 2_000_000_000,
        attributes=[
            _kv("langfuse.trace.name", "support"),
            _kv("langfuse.user.id", "u9"),
            _kv("langfuse.session.id", "s9"),
            _kv("langfuse.trace.tags", '["a","b"]'),
            _kv("langfuse.trace.metadata.team", '"core"'),
            _kv("langfuse.observation.type", "agent"),
            _kv("langfuse.observation.input", '{"ask":"refund"}'),
            _kv("langfuse.observation.metadata.customer", '"acme"'),
        ],
    )
    child = Span(
        trace_id=trace_id,
        span_id=child_id,
        parent_span_id=root_id,
        name="chat gpt-4o",
        start_time_unix_nano=T0 + 100_000_000,
        end_time_unix_nano=T0 + 900_000_000,
        status=Status(code=2, message="rate limited"),
        attributes=[
            _kv("gen_ai.operation.name", "chat"),
            _kv("gen_ai.request.model", "gpt-4o"),
            _kv("gen_ai.usage.input_tokens", 20),
            _kv("gen_ai.usage.output_tokens", 8),
            _kv("gen_ai.request.temperature", "0.3"),
        ],
    )
    body = gzip.compress(_export(trace_id, [root, child]).SerializeToString())
    runner = await start_ingestion(services)
    try:
        response = await _post(create_app(services), headers, body, "application/x-protobuf", "gzip")
        observations = await until(lambda: _count(services, "observations", project_id, 2))
        traces = await until(lambda: _count(services, "traces", project_id, 1))
    finally:
        await runner.shutdown(10)
    assert response.status_code == 200
    by_id = {o["id"]: o for o in observations}
    agent, gen = by_id[root_id.hex()], by_id[child_id.hex()]
    assert (agent["type"], agent["trace_id"], json.loads(agent["input"])) == (
        "AGENT",
        trace_id.hex(),
        {"ask": "refund"},
    )
    assert dict(agent["metadata"])["customer"] == "acme" and agent["environment"] == "prod"
    assert (gen["type"], gen["parent_observation_id"], gen["provided_model_name"]) == (
        "GENERATION",
        root_id.hex(),
        "gpt-4o",
    )
    assert dict(gen["usage_details"]) == {"input": 20, "output": 8, "total": 28}
    assert (gen["level"], gen["status_message"]) == ("ERROR", "rate limited")
    assert (gen["end_time"] - gen["start_time"]).total_seconds() == 0.8
    trace = traces[0]
    assert (trace["id"], trace["name"], trace["user_id"], trace["session_id"]) == (
        trace_id.hex(),
        "support",
        "u9",
        "s9",
    )
    assert trace["tags"] == ["a", "b"] and dict(trace["metadata"])["team"] == "core"


async def _count(services, table, project_id, n):
    rows = await rows_of(services, table, project_id)
    return rows if len(rows) >= n else None


async def test_json_export_with_child_only_gets_a_trace(services, project):
    project_id, headers = project
    trace_hex, span_hex = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    payload = {
        "resourceSpans": [
            {
                "resource": {"attributes": []},
                "scopeSpans": [
                    {
                        "scope": {"name": "x"},
                        "spans": [
                            {
                                "traceId": trace_hex,
                                "spanId": span_hex,
                                "parentSpanId": "ab" * 8,
                                "name": "tool-call",
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": str(T0 + 1_000_000),
                                "attributes": [{"key": "gen_ai.tool.name", "value": {"stringValue": "search"}}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    runner = await start_ingestion(services)
    try:
        response = await _post(create_app(services), headers, json.dumps(payload).encode(), "application/json")
        traces = await until(lambda: _count(services, "traces", project_id, 1))
        observations = await until(lambda: _count(services, "observations", project_id, 1))
    finally:
        await runner.shutdown(10)
    assert response.status_code == 200
    assert traces[0]["id"] == trace_hex
    assert (observations[0]["type"], observations[0]["id"]) == ("TOOL", span_hex)


async def test_invalid_exports_are_rejected_whole(services, project):
    _, headers = project
    app = create_app(services)
    no_ids = {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x"}]}]}]}
    logs = {"resourceSpans": [{"scopeSpans": [{"spans": {"not": "a list"}}]}]}
    bad_type = await _post(app, headers, b"{}", "text/plain")
    missing_ids = await _post(app, headers, json.dumps(no_ids).encode(), "application/json")
    wrong_shape = await _post(app, headers, json.dumps(logs).encode(), "application/json")
    garbage = await _post(app, headers, b"\x00\x01garbage", "application/x-protobuf")
    empty = await _post(app, headers, b"{}", "application/json")
    bad_version = await _post(app, {**headers, "x-langfuse-ingestion-version": "9"}, b"{}", "application/json")
    assert bad_type.status_code == 400 and "content type" in bad_type.json()["error"]
    assert missing_ids.status_code == 400 and "traceId and spanId" in missing_ids.json()["error"]
    assert wrong_shape.status_code == 400 and "logs" in wrong_shape.json()["error"]
    assert garbage.status_code == 400
    assert empty.status_code == 200 and empty.json() == {}
    assert bad_version.status_code == 400
