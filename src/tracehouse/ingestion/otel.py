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
MODEL_KEYS = (  # any of these makes a span a generation (Langfuse's model-based type rule)
    "langfuse.observation.model.name",
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.response.model",
    "llm.model_name",
    "model",
)
# The model name also reads the Vercel AI SDK's `ai.model.id`, which alone does not make a generation
# (a top-level `ai.generateText` span carries it too; its `doGenerate` child is the generation).
MODEL_NAME_KEYS = (*MODEL_KEYS[:2], "ai.model.id", *MODEL_KEYS[2:])
VERCEL_GENERATIONS = (
    "ai.generateText.doGenerate",
    "ai.streamText.doStream",
    "ai.generateObject.doGenerate",
    "ai.streamObject.doStream",
)
VERCEL_EMBEDDINGS = ("ai.embedMany.doEmbed", "ai.embed.doEmbed")
VERCEL_TOKENS = {  # AI SDK 4 names, then AI SDK 5 names
    "input": ("ai.usage.promptTokens", "ai.usage.inputTokens"),
    "output": ("ai.usage.completionTokens", "ai.usage.outputTokens"),
}
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
    if (kind := _vercel_kind(attrs)) is not None:
        return kind
    if attrs.get("gen_ai.tool.name") or attrs.get("gen_ai.tool.call.id"):
        return "tool"
    if _first(attrs, *MODEL_KEYS):
        return "generation"
    return "span"


def _vercel_operation(attrs: dict[str, Any], operations: tuple[str, ...]) -> bool:
    # The AI SDK may append the function id to `operation.name` ("ai.embed my-fn"); `ai.operationId` is exact.
    name, operation_id = str(attrs.get("operation.name") or ""), attrs.get("ai.operationId")
    return any(name.startswith(op) for op in operations) or operation_id in operations


def _vercel_kind(attrs: dict[str, Any]) -> str | None:
    """Vercel AI SDK spans: model calls with model information are generations/embeddings, tool calls tools."""
    has_model = _first(attrs, "langfuse.observation.model.name", "ai.model.id", *MODEL_KEYS[1:3]) is not None
    if has_model and _vercel_operation(attrs, VERCEL_GENERATIONS):
        return "generation"
    if has_model and _vercel_operation(attrs, VERCEL_EMBEDDINGS):
        return "embedding"
    if _vercel_operation(attrs, ("ai.toolCall",)):
        return "tool"
    return None


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise SpanRejected(f"{what} must be a token count")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise SpanRejected(f"{what} must be a token count, not {str(value)[:30]!r}") from None


def _vercel_usage(attrs: dict[str, Any]) -> dict[str, int] | None:
    """AI SDK model-call spans: `gen_ai.usage.*` first (as Langfuse reads them), then the SDK's own
    `ai.usage.*` names (v4 promptTokens/completionTokens, v5 inputTokens/outputTokens). Cached input and
    reasoning tokens are split out of input and output, as Langfuse does."""
    counts = {
        "input": _first(attrs, "gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens", *VERCEL_TOKENS["input"]),
        "output": _first(
            attrs, "gen_ai.usage.completion_tokens", "gen_ai.usage.output_tokens", *VERCEL_TOKENS["output"]
        ),
        "total": _first(attrs, "ai.usage.tokens", "ai.usage.totalTokens"),
        "input_cached_tokens": attrs.get("ai.usage.cachedInputTokens"),
        "output_reasoning_tokens": attrs.get("ai.usage.reasoningTokens"),
    }
    usage = {key: _count(_json_or_raw(value), f"{key} tokens") for key, value in counts.items() if value is not None}
    if "input" in usage:
        usage["input"] = max(0, usage["input"] - usage.get("input_cached_tokens", 0))
    if "output" in usage:
        usage["output"] = max(0, usage["output"] - usage.get("output_reasoning_tokens", 0))
    return usage or None


def _usage(attrs: dict[str, Any], scope_name: str) -> dict[str, Any] | None:
    explicit = _json_or_raw(attrs.get("langfuse.observation.usage_details"))
    if isinstance(explicit, dict):
        return explicit  # checked as an SDK's usageDetails is
    if scope_name == "ai":
        return _vercel_usage(attrs)
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
    # The AI SDK's telemetry metadata, as Langfuse: its userId, sessionId and tags fill the trace instead.
    telemetry = _prefixed(attrs, "ai.telemetry.metadata.")
    result.update({k: v for k, v in telemetry.items() if k not in VERCEL_TRACE_KEYS})
    return result


def _tags(value: Any) -> list[str] | None:
    value = _json_or_raw(value)
    if value is None:
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    return [t.strip() for t in str(value).split(",") if t.strip()]


# --- input and output --------------------------------------------------------------------------
# Where prompts and completions live, in Langfuse's order of precedence (its OtelIngestionProcessor's
# extractInputAndOutput): the first source that yields an input or an output gives both.
IO_KEYS = frozenset(
    {
        "langfuse.trace.input",
        "langfuse.trace.output",
        "langfuse.observation.input",
        "langfuse.observation.output",
        "ai.prompt.messages",
        "ai.prompt",
        "ai.toolCall.args",
        "ai.response.text",
        "ai.result.text",
        "ai.toolCall.result",
        "ai.response.object",
        "ai.result.object",
        "ai.response.toolCalls",
        "ai.result.toolCalls",
        "mlflow.spanInputs",
        "mlflow.spanOutputs",
        "traceloop.entity.input",
        "traceloop.entity.output",
        "input.value",
        "output.value",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
    }
)
FLATTENED_IO = ("gen_ai.prompt", "gen_ai.completion", "llm.input_messages", "llm.output_messages")
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
OPERATION_DETAILS = "gen_ai.client.inference.operation.details"
VERCEL_OUTPUTS = (
    "ai.result.text",
    "ai.toolCall.result",
    "ai.response.object",
    "ai.result.object",
    "ai.response.toolCalls",
    "ai.result.toolCalls",
)
PAIRED_IO = (("mlflow.spanInputs", "mlflow.spanOutputs"), ("traceloop.entity.input", "traceloop.entity.output"))
# Bounds on rebuilding flattened attributes, as Langfuse's: `gen_ai.prompt.9999.content` alone would build
# 10,000 slots. A key past them stays among the span's attributes instead.
MAX_REBUILT_SLOTS = 10_001
MAX_REBUILT_DEPTH = 64


@dataclass
class SpanIO:
    input: Any = None
    output: Any = None
    kept: set[str] = field(default_factory=set)  # recognised I/O keys not used (left in metadata.attributes)
    instructions_used: bool = False


@dataclass
class _Node:
    """A container a rebuild creates; its kind is fixed by the path that made it, as in Langfuse."""

    is_array: bool
    children: dict[Any, Any] = field(default_factory=dict)  # _Node or _Leaf by segment (int for arrays)
    length: int = 0  # an array's highest index + 1


@dataclass(frozen=True)
class _Leaf:
    value: Any


def _given(value: Any) -> bool:
    return value is not None and value != ""


def _index(segment: str) -> int | None:
    if segment.isdecimal() and segment.isascii() and (segment == "0" or segment[0] != "0"):
        return int(segment)
    return None


def _key(node: _Node, segment: str) -> Any:
    if not node.is_array:
        return segment or None
    index = _index(segment)
    return index if index is not None and index < MAX_REBUILT_SLOTS else None


def _slots_needed(root: _Node, path: list[str]) -> int | None:
    """The array slots placing a value at `path` adds, or None when it cannot go there: a conflict with an
    earlier key (earlier keys win, as in Langfuse), a key an array cannot hold, or an empty segment."""
    node, added = root, 0
    for depth, segment in enumerate(path):
        key = _key(node, segment)
        if key is None:
            return None
        if node.is_array:
            added += max(0, key + 1 - node.length)
        existing = node.children.get(key)
        if depth == len(path) - 1:
            return None if existing is not None else added
        if isinstance(existing, _Leaf):
            return None
        if existing is None:  # the rest of the path makes new containers; an index segment sits in an array
            for rest in path[depth + 1 :]:
                index = _index(rest)
                if not rest or (index is not None and index >= MAX_REBUILT_SLOTS):
                    return None
                added += 0 if index is None else index + 1
            return added
        node = existing
    return added


def _place(root: _Node, path: list[str], value: Any, spent: list[int]) -> bool:
    needed = _slots_needed(root, path) if len(path) <= MAX_REBUILT_DEPTH else None
    if needed is None or spent[0] + needed > MAX_REBUILT_SLOTS:
        return False
    spent[0] += needed
    node = root
    for depth, segment in enumerate(path):
        key = _key(node, segment)
        if node.is_array:
            node.length = max(node.length, key + 1)
        if depth == len(path) - 1:
            node.children[key] = _Leaf(value)
        elif key not in node.children:
            node.children[key] = _Node(is_array=_index(path[depth + 1]) is not None)
        node = node.children[key]
    return True


def _plain(node: Any) -> Any:
    if isinstance(node, _Leaf):
        return node.value
    if node.is_array:
        return [_plain(node.children[i]) if i in node.children else None for i in range(node.length)]
    return {key: _plain(child) for key, child in node.children.items()}


def _rebuild(attrs: dict[str, Any], prefix: str, io: SpanIO) -> Any:
    """`gen_ai.prompt.0.role` / `llm.input_messages.0.message.content` style keys back into messages
    (`[{role, content}]`); a single `gen_ai.prompt` attribute is taken as it is. Keys that cannot be placed
    are kept as attributes."""
    if _given(attrs.get(prefix)):
        return _json_or_raw(attrs[prefix])
    paths = {key: key[len(prefix) + 1 :].split(".") for key in attrs if key.startswith(prefix + ".")}
    root = _Node(is_array=any(len(path) > 1 and _index(path[0]) is not None for path in paths.values()))
    spent = [0]
    for key, path in paths.items():
        if not _place(root, path, attrs[key], spent):
            io.kept.add(key)
    return _plain(root) or None


def _named_events(span: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, raw attributes) of the span's events, in the order sent; OTLP JSON and MessageToDict of the
    protobuf both use `name`, `attributes` and `timeUnixNano`. Attributes are read only where used."""
    events = span.get("events")
    if events is None:
        return []
    if not isinstance(events, list):
        raise SpanRejected("events must be an array")
    named = []
    for event in events:
        if not isinstance(event, dict):
            raise SpanRejected("each span event must be an object")
        name = event.get("name", "")
        if not isinstance(name, str):
            raise SpanRejected("a span event's name must be a string")
        named.append((name, event.get("attributes")))
    return named


def _system_messages(value: Any) -> list[dict[str, Any]]:
    """`gen_ai.system_instructions` as system messages, as Langfuse reads its two shapes: structured
    messages (`[{role, parts}]`, kept one by one) or text parts (`[{type, content}]`, joined by newlines)."""
    value = _json_or_raw(value)
    if isinstance(value, str):
        return [{"role": "system", "content": value}] if value else []
    if not isinstance(value, list):
        return []
    structured = [entry for entry in value if isinstance(entry, dict) and isinstance(entry.get("parts"), list)]
    if structured and not any(isinstance(entry, dict) and isinstance(entry.get("content"), str) for entry in value):
        return [{**entry, "role": entry.get("role") or "system"} for entry in structured]
    texts: list[str] = []
    for entry in value:
        if isinstance(entry, str):
            texts.append(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("content"), str):
            texts.append(entry["content"])
        elif isinstance(entry, dict) and isinstance(entry.get("parts"), list):
            texts += [p["content"] for p in entry["parts"] if isinstance(p, dict) and isinstance(p.get("content"), str)]
    texts = [text for text in texts if text]
    return [{"role": "system", "content": "\n".join(texts)}] if texts else []


def _genai_messages(attrs: dict[str, Any], io: SpanIO | None) -> tuple[Any, Any] | None:
    """`gen_ai.input.messages` / `gen_ai.output.messages` (system instructions first, unless the input has a
    system message already), else `gen_ai.tool.call.arguments` / `.result`. `io` is given for span attributes."""
    given, output = _json_or_raw(attrs.get("gen_ai.input.messages")), _json_or_raw(attrs.get("gen_ai.output.messages"))
    system = _system_messages(attrs.get("gen_ai.system_instructions"))
    if isinstance(given, list) and system and not any(isinstance(m, dict) and m.get("role") == "system" for m in given):
        given = [*system, *given]
        if io is not None:
            io.instructions_used = True
    if _given(given) or _given(output):
        return given, output
    arguments, result = attrs.get("gen_ai.tool.call.arguments"), attrs.get("gen_ai.tool.call.result")
    if _given(arguments) or _given(result):
        return _json_or_raw(arguments), _json_or_raw(result)
    return None


def _vercel_io(attrs: dict[str, Any], io: SpanIO) -> tuple[Any, Any]:
    given = next((attrs[k] for k in ("ai.prompt.messages", "ai.prompt", "ai.toolCall.args") if k in attrs), None)
    if "ai.response.text" in attrs and "ai.response.toolCalls" in attrs:
        # Langfuse's shape: one assistant message; the tool calls stay the JSON text the SDK sent.
        output: Any = {
            "role": "assistant",
            "content": attrs["ai.response.text"],
            "tool_calls": attrs["ai.response.toolCalls"],
        }
    elif _given(attrs.get("ai.response.text")):
        output = attrs["ai.response.text"]
    else:
        output = next((attrs[k] for k in VERCEL_OUTPUTS if k in attrs), None)
    given, output = _json_or_raw(given), _json_or_raw(output)
    if given is None or output is None:  # AI SDK 5 telemetry may carry the GenAI message attributes instead
        fallback = _genai_messages(attrs, io) or (None, None)
        given, output = given if given is not None else fallback[0], output if output is not None else fallback[1]
    return given, output


def _typed_value(attrs: dict[str, Any], key: str) -> Any:
    """OpenInference `input.value` / `output.value`: JSON when its `*.mime_type` says so, text when it says
    text/plain, otherwise decoded if it is JSON text (as every other attribute)."""
    value = attrs.get(key)
    mime = str(attrs.get(key.replace(".value", ".mime_type")) or "")
    if not isinstance(value, str) or "text/plain" in mime:
        return value
    if "json" in mime:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return _json_or_raw(value)


def _event_io(events: list[tuple[str, Any]]) -> tuple[Any, Any] | None:
    for name, raw in events:
        if name == OPERATION_DETAILS and (found := _genai_messages(_attributes(raw), None)) is not None:
            return found
    inputs = [{"role": MESSAGE_EVENTS[name], **_attributes(raw)} for name, raw in events if name in MESSAGE_EVENTS]
    choices = [_attributes(raw) for name, raw in events if name == "gen_ai.choice"]
    if inputs or choices:
        return inputs or None, (choices[0] if len(choices) == 1 else choices or None)
    prompt = next((_attributes(raw) for name, raw in events if name == "gen_ai.content.prompt"), None)
    completion = next((_attributes(raw) for name, raw in events if name == "gen_ai.content.completion"), None)
    if prompt is not None or completion is not None:  # Semantic Kernel's older events
        prompt, completion = prompt or {}, completion or {}
        return (
            _json_or_raw(prompt["gen_ai.prompt"]) if _given(prompt.get("gen_ai.prompt")) else prompt,
            _json_or_raw(completion["gen_ai.completion"])
            if _given(completion.get("gen_ai.completion"))
            else completion,
        )
    return None


def _span_io(attrs: dict[str, Any], events: list[tuple[str, Any]], scope_name: str) -> SpanIO:
    io = SpanIO()
    io.input, io.output = _pick_io(attrs, events, scope_name, io)
    if _given(attrs.get("gen_ai.system_instructions")) and not io.instructions_used:
        io.kept.add("gen_ai.system_instructions")  # not prepended to any input: it stays an attribute
    return io


def _pick_io(attrs: dict[str, Any], events: list[tuple[str, Any]], scope_name: str, io: SpanIO) -> tuple[Any, Any]:
    given, output = attrs.get("langfuse.observation.input"), attrs.get("langfuse.observation.output")
    if given is not None or output is not None:
        return _json_or_raw(given), _json_or_raw(output)
    if scope_name == "ai":
        return _vercel_io(attrs, io)
    if (found := _event_io(events)) is not None:
        return found
    for input_key, output_key in (*PAIRED_IO, ("input.value", "output.value")):
        if _given(attrs.get(input_key)) or _given(attrs.get(output_key)):
            return _typed_value(attrs, input_key), _typed_value(attrs, output_key)
    for input_prefix, output_prefix in (FLATTENED_IO[:2], FLATTENED_IO[2:]):
        if any(key == p or key.startswith(p + ".") for key in attrs for p in (input_prefix, output_prefix)):
            return _rebuild(attrs, input_prefix, io), _rebuild(attrs, output_prefix, io)
    return _genai_messages(attrs, io) or (None, None)


def _is_io_key(key: str) -> bool:
    return key in IO_KEYS or any(key == p or key.startswith(p + ".") for p in FLATTENED_IO)


# --- names, parameters, experiments, remaining attributes ---------------------------------------
VERCEL_PARAMETERS = (  # Langfuse's model parameters for AI SDK spans: name, attributes in order
    ("maxSteps", ("ai.settings.maxSteps",)),
    ("toolChoice", ("ai.prompt.toolChoice",)),
    ("maxTokens", ("gen_ai.request.max_tokens",)),
    ("finishReason", ("gen_ai.response.finish_reasons", "gen_ai.finishReason")),
    ("system", ("gen_ai.system", "ai.model.provider")),
    ("maxRetries", ("ai.settings.maxRetries",)),
    ("mode", ("ai.settings.mode",)),
    ("temperature", ("gen_ai.request.temperature",)),
    ("service_tier", ("gen_ai.request.service_tier",)),
)
EXPERIMENT_PREFIX = "langfuse.experiment."
EXPERIMENT_OBJECTS = ("langfuse.experiment.item.metadata", "langfuse.experiment.metadata")
EXPERIMENT_JSON = (*EXPERIMENT_OBJECTS, "langfuse.experiment.item.expected_output")
METADATA_PREFIXES = ("langfuse.trace.metadata", "langfuse.observation.metadata", "ai.telemetry.metadata")
VERCEL_TRACE_KEYS = {"userId", "sessionId", "tags", "langfusePrompt"}  # ai.telemetry.metadata.* with a meaning


def _name(span_name: Any, attrs: dict[str, Any]) -> str:
    """Langfuse's observation name: the GenAI tool name, Logfire's message, the AI SDK's tool name or
    `<functionId>:<operationId>`, else the span name."""
    for key in ("gen_ai.tool.name", "logfire.msg"):
        if attrs.get(key):
            return str(_text(attrs[key]))
    if "ai.toolCall.name" in attrs:
        return _text(attrs["ai.toolCall.name"]) or ""
    if "ai.operationId" in attrs:
        function_id = attrs.get("ai.telemetry.functionId")
        return (f"{_text(function_id)}:" if function_id else "") + (_text(attrs["ai.operationId"]) or "")
    return _text(span_name) or ""


def _js_text(value: Any) -> str:
    """A value as JavaScript's toString writes it (Langfuse's AI SDK parameters): lists comma-joined."""
    if isinstance(value, list):
        return ",".join(_js_text(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(_text(value))


def _sanitized(params: dict[str, Any]) -> dict[str, Any]:
    """Model parameters are strings or numbers (the SDKs' MapValue); anything else becomes JSON text."""
    return {
        str(k): v if isinstance(v, str | int | float) and not isinstance(v, bool) else _text(v)
        for k, v in params.items()
    }


def _model_parameters(attrs: dict[str, Any], scope_name: str) -> dict[str, Any] | None:
    explicit = _json_or_raw(attrs.get("langfuse.observation.model.parameters"))
    explicit = explicit if isinstance(explicit, dict) else None
    if scope_name == "ai":
        params = {}
        for name, keys in VERCEL_PARAMETERS:
            if (key := next((k for k in keys if attrs.get(k) is not None), None)) is not None:
                params[name] = _js_text(attrs[key])
        for setting, value in _prefixed(attrs, "ai.settings.").items():  # every other call setting, too
            params.setdefault(setting, _js_text(value))
        return {**params, **(explicit or {})} or None
    if explicit is not None:
        return explicit
    invocation = _json_or_raw(attrs.get("llm.invocation_parameters"))
    if isinstance(invocation, dict):
        return _sanitized(invocation) or None
    prefixed = {**_prefixed(attrs, "gen_ai.request."), **_prefixed(attrs, "llm.invocation_parameters.")}
    return _sanitized({k: v for k, v in prefixed.items() if k != "model"}) or None


def _experiment(attrs: dict[str, Any]) -> dict[str, Any]:
    """`langfuse.experiment.*` under their own attribute names, as reserved top-level metadata keys: ids and
    names as text, metadata objects (the JSON attribute merged with its `.<key>` attributes) and the expected
    output decoded. One Map key per field keeps each filterable (`metadata['langfuse.experiment.id']`)."""
    found: dict[str, Any] = {}
    nested: list[tuple[str, str, Any]] = []
    for key, value in attrs.items():
        if not key.startswith(EXPERIMENT_PREFIX):
            continue
        parent = next((obj for obj in EXPERIMENT_OBJECTS if key.startswith(obj + ".")), None)
        if parent is not None:
            nested.append((parent, key, value))
        else:
            found[key] = _json_or_raw(value) if key in EXPERIMENT_JSON else _text(value)
    for parent, key, value in nested:
        target = found.setdefault(parent, {})
        if isinstance(target, dict):
            target[key[len(parent) + 1 :]] = _json_or_raw(value)
        else:  # the object attribute was not an object: keep both rather than drop either
            found[key] = _json_or_raw(value)
    return found


def _remaining_attributes(attrs: dict[str, Any], io: SpanIO) -> dict[str, str]:
    """Span attributes no field took, as text (Langfuse's `metadata.attributes` for non-Langfuse-SDK spans)."""
    return {
        key: value if isinstance(value, str) else "null" if value is None else str(_text(value))
        for key, value in attrs.items()
        if (not _is_io_key(key) or key in io.kept)
        and not key.startswith(METADATA_PREFIXES)
        and not key.startswith(EXPERIMENT_PREFIX)
    }


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
    "ai.telemetry.metadata.userId",
    "ai.telemetry.metadata.sessionId",
    "ai.telemetry.metadata.tags",
)


def _environment(attrs: dict[str, Any], resource: dict[str, Any]) -> str | None:
    for key in ("langfuse.environment", "deployment.environment.name", "deployment.environment"):
        value = attrs.get(key) or resource.get(key)
        if value:
            return str(value)
    return None


@dataclass(frozen=True)
class _SpanContext:
    """What a span's observation and trace events share."""

    attrs: dict[str, Any]
    trace_id: str
    span_id: str
    parent_id: str | None
    start: str
    name: str
    environment: str | None
    version: str | None
    io: SpanIO
    experiment: dict[str, Any]


def _span_events(
    span: dict[str, Any], resource: dict[str, Any], scope: dict[str, Any], from_protobuf: bool
) -> list[dict[str, Any]]:
    if not isinstance(span, dict):
        raise SpanRejected("a span must be an object")
    attrs = _attributes(span.get("attributes"))
    scope_name = name if isinstance(name := scope.get("name"), str) else ""
    parent = span.get("parentSpanId")
    start = _nanos_iso(span.get("startTimeUnixNano"), "startTimeUnixNano")
    end = _nanos_iso(span.get("endTimeUnixNano"), "endTimeUnixNano")
    start, end = start or end or datetime.now(UTC).isoformat(), end or start
    context = _SpanContext(
        attrs=attrs,
        trace_id=_hex_id(span.get("traceId"), from_protobuf=from_protobuf, length=16, what="traceId"),
        span_id=_hex_id(span.get("spanId"), from_protobuf=from_protobuf, length=8, what="spanId"),
        parent_id=_hex_id(parent, from_protobuf=from_protobuf, length=8, what="parentSpanId") if parent else None,
        start=start,
        name=_name(span.get("name"), attrs),
        environment=_environment(attrs, resource),
        version=_text(_first(attrs, "langfuse.version") or resource.get("service.version")),
        io=_span_io(attrs, _named_events(span), scope_name),
        experiment=_experiment(attrs),
    )
    status = span.get("status") or {}
    if not isinstance(status, dict):
        raise SpanRejected("status must be an object")
    kind = _obs_type(attrs)
    metadata = {**_metadata(attrs, "observation"), **context.experiment}
    if not scope_name.startswith("langfuse-sdk"):  # as Langfuse: other instrumentations keep what no field took
        metadata["attributes"] = _remaining_attributes(attrs, context.io)
    observation: dict[str, Any] = {
        "id": context.span_id,
        "traceId": context.trace_id,
        "parentObservationId": context.parent_id,
        "name": context.name,
        "startTime": start,
        "endTime": end,
        "level": _level(attrs, status),
        "statusMessage": _text(_first(attrs, "langfuse.observation.status_message") or status.get("message")),
        "input": context.io.input,
        "output": context.io.output,
        "metadata": {
            **metadata,
            "resourceAttributes": resource,
            "scope": {"name": scope.get("name"), "version": scope.get("version")},
        },
        "environment": context.environment,
        "version": context.version,
    }
    if kind not in ("span", "event"):
        observation.update(_generation_fields(attrs, kind, scope_name))
    observation = {k: v for k, v in observation.items() if v is not None}
    events = [{"id": f"otel-{context.span_id}", "timestamp": start, "type": f"{kind}-create", "body": observation}]
    if (trace := _trace_event(context, resource)) is not None:
        events.append(trace)
    return events


def _generation_fields(attrs: dict[str, Any], kind: str, scope_name: str) -> dict[str, Any]:
    fields = {
        "model": _text(_first(attrs, *MODEL_NAME_KEYS)),
        "modelParameters": _model_parameters(attrs, scope_name),
        "usageDetails": _usage(attrs, scope_name),
        "costDetails": _costs(attrs),
        "completionStartTime": _json_or_raw(attrs.get("langfuse.observation.completion_start_time")),
    }
    prompt_name = _first(attrs, "langfuse.observation.prompt.name", "langfuse.prompt.name")
    prompt_version = _first(attrs, "langfuse.observation.prompt.version", "langfuse.prompt.version")
    if kind == "generation" and prompt_name and prompt_version is not None:
        version_number = _count(prompt_version, "langfuse.observation.prompt.version")
        fields.update({"promptName": _text(prompt_name), "promptVersion": version_number})
    return fields


def _trace_event(context: _SpanContext, resource: dict[str, Any]) -> dict[str, Any] | None:
    """A trace event for a root span or a span carrying trace-level attributes (else None)."""
    attrs = context.attrs
    is_root = not context.parent_id or str(attrs.get("langfuse.internal.as_root")).lower() == "true"
    if not (
        is_root or any(k in attrs for k in TRACE_KEYS) or any(k.startswith("langfuse.trace.metadata") for k in attrs)
    ):
        return None
    # The experiment item's root span names the experiment for its trace too.
    metadata = {**_metadata(attrs, "trace"), **(context.experiment if is_root else {})}
    trace: dict[str, Any] = {
        "id": context.trace_id,
        "timestamp": context.start,
        "name": _text(_first(attrs, "langfuse.trace.name")) or (context.name if is_root else None),
        "userId": _text(_first(attrs, "langfuse.user.id", "user.id", "ai.telemetry.metadata.userId")),
        "sessionId": _text(
            _first(
                attrs, "langfuse.session.id", "session.id", "gen_ai.conversation.id", "ai.telemetry.metadata.sessionId"
            )
        ),
        "tags": _tags(_first(attrs, "langfuse.trace.tags", "langfuse.tags", "ai.telemetry.metadata.tags")),
        "metadata": metadata or None,
        "environment": context.environment,
        "version": context.version,
        "release": _text(_first(attrs, "langfuse.release") or resource.get("langfuse.release")),
    }
    public = _first(attrs, "langfuse.trace.public", "langfuse.public")
    if public is not None:
        trace["public"] = public is True or str(public).lower() == "true"
    trace_input = _json_or_raw(attrs.get("langfuse.trace.input"))
    trace_output = _json_or_raw(attrs.get("langfuse.trace.output"))
    if trace_input is None and is_root:
        trace_input = context.io.input
    if trace_output is None and is_root:
        trace_output = context.io.output
    trace.update({"input": trace_input, "output": trace_output})
    return {
        "id": f"otel-{context.span_id}-trace",
        "timestamp": context.start,
        "type": "trace-create",
        "body": {k: v for k, v in trace.items() if v is not None},
    }


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
