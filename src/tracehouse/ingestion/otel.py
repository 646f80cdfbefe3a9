"""OTLP/HTTP traces (protobuf or JSON; gzip is inflated by the route) mapped to Langfuse ingestion events.

Spans become observation events and, for root spans or spans carrying trace-level attributes,
trace events, following Langfuse's attribute mapping (`langfuse.*`, `gen_ai.*` and common
framework keys). The converted events then take the same path as batch ingestion (raw batch,
queue, merge), so OTel and SDK data merge into the same rows. Event ids derive from span ids, so
a retried export replaces rather than duplicates.

The Langfuse SDKs JSON-encode attribute values (a metadata value "acme" arrives as "\\"acme\\"");
values that parse as JSON strings, objects or arrays are decoded, as Langfuse does.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

OBS_TYPES = {
    "span",
    "generation",
    "event",
    "embedding",
    "agent",
    "tool",
    "chain",
    "retriever",
    "guardrail",
    "evaluator",
}
OPENINFERENCE = {
    "LLM": "generation",
    "CHAIN": "chain",
    "RETRIEVER": "retriever",
    "EMBEDDING": "embedding",
    "AGENT": "agent",
    "TOOL": "tool",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "evaluator",
}
GENAI_OPS = {
    "chat": "generation",
    "completion": "generation",
    "text_completion": "generation",
    "generate_content": "generation",
    "generate": "generation",
    "embeddings": "embedding",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "execute_tool": "tool",
}
MODEL_KEYS = (
    "langfuse.observation.model.name",
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.response.model",
    "llm.model_name",
    "model",
)
LEVEL_ALIASES = {
    "TRACE": "DEBUG",
    "VERBOSE": "DEBUG",
    "INFO": "DEFAULT",
    "LOG": "DEFAULT",
    "NOTICE": "DEFAULT",
    "OK": "DEFAULT",
    "SUCCESS": "DEFAULT",
    "WARN": "WARNING",
    "FATAL": "ERROR",
    "CRITICAL": "ERROR",
}


class OtelRejected(Exception):
    """The request as a whole is not an OTLP trace export we can read (400)."""


class SpanRejected(ValueError):
    """One span cannot be mapped; its siblings still are."""


@dataclass
class MappedSpans:
    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # one reason per span that could not be mapped
    spans: int = 0


# Span times become row times, whose sort key holds a Date: 1970-01-01 .. 2149-06-06.
_FIRST_NS = 0
_LAST_NS = int(datetime(2149, 6, 6, 23, 59, 59, tzinfo=UTC).timestamp()) * 1_000_000_000


def decode_body(body: bytes, content_type: str) -> dict[str, Any]:
    """Parse an OTLP request body that is already inflated: the route reads it with `read_body`, which
    inflates gzip within the decompressed limit (inflating here again would reopen gzip-in-gzip bombs)."""
    if "application/x-protobuf" in content_type:
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
            raise OtelRejected(f"body is not a valid ExportTraceServiceRequest: {exc}") from None
        return MessageToDict(request, preserving_proto_field_name=False)
    if "application/json" in content_type:
        try:
            decoded = orjson.loads(body)  # nesting beyond 1024 levels is a decode error, not a crash
        except ValueError as exc:
            raise OtelRejected(f"body is not valid JSON: {exc}") from None
        if not isinstance(decoded, dict):
            raise OtelRejected("body must be an OTLP ExportTraceServiceRequest object")
        return decoded
    raise OtelRejected("Invalid content type: use application/x-protobuf or application/json")


def _hex_id(value: Any, *, from_protobuf: bool, length: int, what: str) -> str:
    """A trace id (16 bytes) or span id (8 bytes) as lower-case hex; anything else rejects the span."""
    if not isinstance(value, str) or not value:
        raise SpanRejected("every span needs a traceId and spanId")
    if from_protobuf:  # MessageToDict renders bytes as base64
        try:
            value = base64.b64decode(value, validate=True).hex()
        except (binascii.Error, ValueError):
            raise SpanRejected(f"{what} is not valid bytes") from None
    value = value.lower()
    if len(value) != 2 * length or any(c not in "0123456789abcdef" for c in value) or not value.strip("0"):
        raise SpanRejected(f"{what} must be {length} bytes ({2 * length} hex digits), not all zero")
    return value


def _value(any_value: Any) -> Any:
    if not isinstance(any_value, dict):
        raise SpanRejected("an attribute value must be an AnyValue object")
    if "stringValue" in any_value:
        return _text(any_value["stringValue"])
    if "boolValue" in any_value:
        return bool(any_value["boolValue"])
    if "intValue" in any_value:
        return _integer(any_value["intValue"])
    if "doubleValue" in any_value:
        try:
            return float(any_value["doubleValue"])
        except (TypeError, ValueError):
            raise SpanRejected(f"doubleValue {str(any_value['doubleValue'])[:30]!r} is not a number") from None
    if "arrayValue" in any_value:
        return [_value(v) for v in _items(any_value["arrayValue"], "arrayValue")]
    if "kvlistValue" in any_value:
        return _attributes(_items(any_value["kvlistValue"], "kvlistValue"))
    if "bytesValue" in any_value:
        return any_value["bytesValue"]
    return None


def _items(container: Any, what: str) -> list[Any]:
    values = container.get("values", []) if isinstance(container, dict) else None
    if not isinstance(values, list):
        raise SpanRejected(f"{what}.values must be an array")
    return values


def _integer(value: Any) -> int:
    # OTLP JSON carries 64-bit integers as strings; out of 64 bits they are not OTLP integers.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SpanRejected(f"intValue {str(value)[:30]!r} is not an integer")
    try:
        number = int(value)
    except ValueError:
        raise SpanRejected(f"intValue {str(value)[:30]!r} is not an integer") from None
    if not -(2**63) <= number < 2**64:
        raise SpanRejected("intValue does not fit in 64 bits")
    return number


def _attributes(items: Any) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise SpanRejected("attributes must be an array")
    found = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise SpanRejected("each attribute must be an object with a string key")
        found[item["key"]] = _value(item.get("value", {}))
    return found


def _text(value: Any) -> Any:
    """String fields take strings; OTel attributes of another type are written as text, as Langfuse does."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return orjson.dumps(value).decode()


def _json_or_raw(value: Any) -> Any:
    """Decode a JSON-encoded attribute value; keep plain strings as they are."""
    if isinstance(value, str) and value[:1] in ('"', "{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if attrs.get(key) not in (None, ""):
            return attrs[key]
    return None


def _prefixed(attrs: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: _json_or_raw(v) for k, v in attrs.items() if k.startswith(prefix)}


def _nanos_iso(value: Any, what: str) -> str | None:
    if value in (None, "", 0, "0"):
        return None
    try:
        nanos = _integer(value)
    except SpanRejected:
        raise SpanRejected(f"{what} must be an integer of nanoseconds") from None
    if not _FIRST_NS <= nanos <= _LAST_NS:
        raise SpanRejected(f"{what} must be between 1970-01-01 and 2149-06-06")
    return datetime.fromtimestamp(nanos / 1e9, UTC).isoformat(timespec="milliseconds")


def _obs_type(attrs: dict[str, Any]) -> str:
    explicit = str(attrs.get("langfuse.observation.type") or "").lower()
    if explicit in OBS_TYPES:
        return explicit
    if (kind := OPENINFERENCE.get(str(attrs.get("openinference.span.kind") or "").upper())) is not None:
        return kind
    if (kind := GENAI_OPS.get(str(attrs.get("gen_ai.operation.name") or ""))) is not None:
        return kind
    if attrs.get("gen_ai.tool.name") or attrs.get("gen_ai.tool.call.id"):
        return "tool"
    if _first(attrs, *MODEL_KEYS):
        return "generation"
    return "span"


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise SpanRejected(f"{what} must be a token count")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise SpanRejected(f"{what} must be a token count, not {str(value)[:30]!r}") from None


def _usage(attrs: dict[str, Any]) -> dict[str, Any] | None:
    explicit = _json_or_raw(attrs.get("langfuse.observation.usage_details"))
    if isinstance(explicit, dict):
        return explicit  # checked as an SDK's usageDetails is
    raw = {**_prefixed(attrs, "gen_ai.usage."), **_prefixed(attrs, "llm.token_count.")}
    raw.pop("cost", None)
    if not raw:
        return None
    prompt = raw.pop("input_tokens", raw.pop("prompt_tokens", raw.pop("prompt", None)))
    completion = raw.pop("output_tokens", raw.pop("completion_tokens", raw.pop("completion", None)))
    total = raw.pop("total_tokens", raw.pop("total", None))
    usage: dict[str, int] = {}
    if prompt is not None:
        usage["input"] = _count(prompt, "input tokens")
    if completion is not None:
        usage["output"] = _count(completion, "output tokens")
    if total is not None:
        usage["total"] = _count(total, "total tokens")
    for key, value in raw.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            usage[key.removeprefix("details.")] = _count(value, key)
    return usage or None


def _costs(attrs: dict[str, Any]) -> dict[str, Any] | None:
    explicit = _json_or_raw(attrs.get("langfuse.observation.cost_details"))
    if isinstance(explicit, dict):
        return explicit  # checked as an SDK's costDetails is
    total = _first(attrs, "gen_ai.usage.cost", "llm.cost.total")
    return {"total": float(total)} if isinstance(total, int | float) else None


def _level(attrs: dict[str, Any], status: dict[str, Any]) -> str:
    given = str(attrs.get("langfuse.observation.level") or "").upper()
    given = LEVEL_ALIASES.get(given, given)
    if given in ("DEBUG", "DEFAULT", "WARNING", "ERROR"):
        return given
    return "ERROR" if str(status.get("code")) in ("2", "STATUS_CODE_ERROR") else "DEFAULT"


def _metadata(attrs: dict[str, Any], scope: str) -> dict[str, Any]:
    meta = _json_or_raw(attrs.get(f"langfuse.{scope}.metadata"))
    result = dict(meta) if isinstance(meta, dict) else {}
    result.update(_prefixed(attrs, f"langfuse.{scope}.metadata."))
    return result


def _tags(value: Any) -> list[str] | None:
    value = _json_or_raw(value)
    if value is None:
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    return [t.strip() for t in str(value).split(",") if t.strip()]


TRACE_KEYS = (
    "langfuse.trace.name",
    "langfuse.user.id",
    "user.id",
    "langfuse.session.id",
    "session.id",
    "langfuse.trace.tags",
    "langfuse.trace.public",
    "langfuse.trace.input",
    "langfuse.trace.output",
    "langfuse.trace.metadata",
)


def _environment(attrs: dict[str, Any], resource: dict[str, Any]) -> str | None:
    for key in ("langfuse.environment", "deployment.environment.name", "deployment.environment"):
        value = attrs.get(key) or resource.get(key)
        if value:
            return str(value)
    return None


def _span_events(
    span: dict[str, Any], resource: dict[str, Any], scope: dict[str, Any], from_protobuf: bool
) -> list[dict[str, Any]]:
    if not isinstance(span, dict):
        raise SpanRejected("a span must be an object")
    attrs = _attributes(span.get("attributes"))
    trace_id = _hex_id(span.get("traceId"), from_protobuf=from_protobuf, length=16, what="traceId")
    span_id = _hex_id(span.get("spanId"), from_protobuf=from_protobuf, length=8, what="spanId")
    parent = span.get("parentSpanId")
    parent_id = _hex_id(parent, from_protobuf=from_protobuf, length=8, what="parentSpanId") if parent else None
    start = _nanos_iso(span.get("startTimeUnixNano"), "startTimeUnixNano")
    end = _nanos_iso(span.get("endTimeUnixNano"), "endTimeUnixNano")
    start, end = start or end or datetime.now(UTC).isoformat(), end or start
    environment = _environment(attrs, resource)
    version = _text(_first(attrs, "langfuse.version") or resource.get("service.version"))
    release = _text(_first(attrs, "langfuse.release") or resource.get("langfuse.release"))
    kind = _obs_type(attrs)
    status = span.get("status") or {}
    if not isinstance(status, dict):
        raise SpanRejected("status must be an object")
    observation: dict[str, Any] = {
        "id": span_id,
        "traceId": trace_id,
        "parentObservationId": parent_id,
        "name": _text(span.get("name")) or "",
        "startTime": start,
        "endTime": end,
        "level": _level(attrs, status),
        "statusMessage": _text(_first(attrs, "langfuse.observation.status_message") or status.get("message")),
        "input": _json_or_raw(_first(attrs, "langfuse.observation.input", "input.value", "gen_ai.prompt")),
        "output": _json_or_raw(_first(attrs, "langfuse.observation.output", "output.value", "gen_ai.completion")),
        "metadata": {
            **_metadata(attrs, "observation"),
            "resourceAttributes": resource,
            "scope": {"name": scope.get("name"), "version": scope.get("version")},
        },
        "environment": environment,
        "version": version,
    }
    if kind not in ("span", "event"):
        params = _json_or_raw(attrs.get("langfuse.observation.model.parameters"))
        if not isinstance(params, dict):
            params = {k: v for k, v in _prefixed(attrs, "gen_ai.request.").items() if k != "model"} or None
        observation.update(
            {
                "model": _text(_first(attrs, *MODEL_KEYS)),
                "modelParameters": params,
                "usageDetails": _usage(attrs),
                "costDetails": _costs(attrs),
                "completionStartTime": _json_or_raw(attrs.get("langfuse.observation.completion_start_time")),
            }
        )
        prompt_name = _first(attrs, "langfuse.observation.prompt.name", "langfuse.prompt.name")
        prompt_version = _first(attrs, "langfuse.observation.prompt.version", "langfuse.prompt.version")
        if kind == "generation" and prompt_name and prompt_version is not None:
            version_number = _count(prompt_version, "langfuse.observation.prompt.version")
            observation.update({"promptName": _text(prompt_name), "promptVersion": version_number})
    observation = {k: v for k, v in observation.items() if v is not None}
    events = [{"id": f"otel-{span_id}", "timestamp": start, "type": f"{kind}-create", "body": observation}]

    is_root = not parent_id or str(attrs.get("langfuse.internal.as_root")).lower() == "true"
    if is_root or any(k in attrs for k in TRACE_KEYS) or any(k.startswith("langfuse.trace.metadata") for k in attrs):
        trace: dict[str, Any] = {
            "id": trace_id,
            "timestamp": start,
            "name": _text(_first(attrs, "langfuse.trace.name") or (span.get("name") if is_root else None)),
            "userId": _text(_first(attrs, "langfuse.user.id", "user.id")),
            "sessionId": _text(_first(attrs, "langfuse.session.id", "session.id", "gen_ai.conversation.id")),
            "tags": _tags(_first(attrs, "langfuse.trace.tags", "langfuse.tags")),
            "metadata": _metadata(attrs, "trace") or None,
            "environment": environment,
            "version": version,
            "release": release,
        }
        public = _first(attrs, "langfuse.trace.public", "langfuse.public")
        if public is not None:
            trace["public"] = public is True or str(public).lower() == "true"
        trace_input = _json_or_raw(attrs.get("langfuse.trace.input"))
        trace_output = _json_or_raw(attrs.get("langfuse.trace.output"))
        if trace_input is None and is_root:
            trace_input = observation.get("input")
        if trace_output is None and is_root:
            trace_output = observation.get("output")
        trace.update({"input": trace_input, "output": trace_output})
        events.append(
            {
                "id": f"otel-{span_id}-trace",
                "timestamp": start,
                "type": "trace-create",
                "body": {k: v for k, v in trace.items() if v is not None},
            }
        )
    return events


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtelRejected(f"{what} must be an array")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OtelRejected(f"{what} must be an object")
    return value


def spans_to_events(request: dict[str, Any], *, from_protobuf: bool) -> MappedSpans:
    """Map every span; a span that cannot be mapped is rejected alone (its reason is kept), a request
    whose structure is not OTLP's raises OtelRejected. Blocking and CPU-bound: run it in a thread."""
    mapped = MappedSpans()
    traces_with_body: set[str] = set()
    seen_traces: dict[str, str] = {}
    for i, resource_span in enumerate(_list(request.get("resourceSpans"), "resourceSpans")):
        resource_span = _object(resource_span, f"resourceSpans[{i}]")
        try:
            resource = _attributes(_object(resource_span.get("resource"), "resource").get("attributes"))
        except SpanRejected as exc:
            raise OtelRejected(f"resourceSpans[{i}].resource: {exc}") from None
        for j, scope_span in enumerate(_list(resource_span.get("scopeSpans"), "scopeSpans")):
            scope_span = _object(scope_span, f"scopeSpans[{j}]")
            scope = _object(scope_span.get("scope"), "scope")
            spans = scope_span.get("spans") or []
            if not isinstance(spans, list):
                raise OtelRejected("spans must be an array (is this an OTLP logs payload sent to /v1/traces?)")
            for span in spans:
                mapped.spans += 1
                try:
                    events = _span_events(span, resource, scope, from_protobuf)
                except (SpanRejected, RecursionError) as exc:
                    mapped.rejected.append(str(exc) if isinstance(exc, SpanRejected) else "nested too deeply")
                    continue
                for event in events:
                    mapped.events.append(event)
                    if event["type"] == "trace-create":
                        traces_with_body.add(event["body"]["id"])
                    else:
                        seen_traces.setdefault(event["body"]["traceId"], event["timestamp"])
    # Every trace gets a row even if this export holds only its child spans (a shallow trace event).
    for trace_id, start in seen_traces.items():
        if trace_id not in traces_with_body:
            mapped.events.append(
                {
                    "id": f"otel-trace-{trace_id}-shallow",
                    "timestamp": start,
                    "type": "trace-create",
                    "body": {"id": trace_id, "timestamp": start},
                }
            )
    return mapped


def map_request(body: bytes, content_type: str) -> MappedSpans:
    """Decode and map a whole OTLP request (blocking; run it in a thread). Any shape we cannot read is
    OtelRejected, never an unexpected exception."""
    decoded = decode_body(body, content_type)
    try:
        return spans_to_events(decoded, from_protobuf="protobuf" in content_type)
    except RecursionError:
        raise OtelRejected("the request is nested too deeply") from None
