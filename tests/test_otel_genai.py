"""GenAI prompts and completions over OTLP, as real Langfuse clients see them.

Spans are made with the real opentelemetry-sdk and sent to a real tracehouse server on loopback (ingestion
workers running) two ways: the official OTLP/HTTP exporter (protobuf, gzip) and OTLP/JSON. The Python
SDK's exporter speaks protobuf only, so the JSON body is built from the same spans: the exporter's own
encoder gives the ExportTraceServiceRequest, protobuf's JSON mapping renders it, and the ids are turned
from base64 (protobuf's JSON rule for bytes) into the hex OTLP/JSON requires, enums into integers.

Each observation is read back with `GET /api/public/observations/{id}` and parsed with the Langfuse 2.x
SDK's own `ObservationsView` (that client's `fetch_observation`), then compared field by field with what
the spans carried. Instrumentation packages from PyPI (opentelemetry-instrumentation-openai-v2,
openinference-instrumentation-openai) run around a real `openai` client whose HTTP transport answers in
process (httpx2.MockTransport): no network.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import openai
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, Tracer
from opentelemetry.util.types import AttributeValue

from conftest import server_thread
from helpers import start_ingestion, until
from test_sdk_types import sdk_parse
from tracehouse.ingestion.otel import map_request

pytestmark = pytest.mark.slow  # the 2.x SDK parses in a subprocess

OBSERVATION_VIEW = "langfuse.api.resources.commons.types.observations_view.ObservationsView"
TRACE_VIEW = "langfuse.api.resources.commons.types.trace_with_full_details.TraceWithFullDetails"
TRANSPORTS = ["protobuf", "json"]


@dataclass
class Live:
    url: str
    headers: dict[str, str]


@pytest.fixture
async def live(base_services: Any, services: Any, key_prefix: str, project: tuple[str, dict[str, str]]) -> Any:
    """A tracehouse server on loopback (own thread) and ingestion workers on this test's loop."""
    _, headers = project
    runner = await start_ingestion(services)
    try:
        with server_thread(base_services, key_prefix) as url:
            yield Live(url, {"Authorization": headers["Authorization"]})
    finally:
        await runner.shutdown(10)


class Spans:
    """A tracer provider whose finished spans are kept, to be sent by either transport."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "genai-test"}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))

    def tracer(self, scope: str = "genai-test") -> Tracer:
        return self.provider.get_tracer(scope, "1.0")

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.memory.get_finished_spans()

    def close(self) -> None:
        self.provider.shutdown()


@pytest.fixture
def spans() -> Iterator[Spans]:
    made = Spans()
    yield made
    made.close()


def _hex_ids(node: Any) -> Any:
    """Protobuf's JSON mapping writes bytes as base64; OTLP/JSON wants trace and span ids in hex."""
    if isinstance(node, list):
        return [_hex_ids(item) for item in node]
    if not isinstance(node, dict):
        return node
    ids = ("traceId", "spanId", "parentSpanId")
    return {k: base64.b64decode(v).hex() if k in ids and v else _hex_ids(v) for k, v in node.items()}


def otlp_json(finished: tuple[ReadableSpan, ...]) -> bytes:
    request = MessageToDict(encode_spans(finished), use_integers_for_enums=True)
    return json.dumps(_hex_ids(request)).encode()


async def send(live: Live, finished: tuple[ReadableSpan, ...], transport: str) -> None:
    endpoint = f"{live.url}/api/public/otel/v1/traces"
    if transport == "protobuf":
        exporter = OTLPSpanExporter(endpoint=endpoint, headers=live.headers, compression=Compression.Gzip)
        try:
            result = await asyncio.to_thread(exporter.export, finished)
        finally:
            exporter.shutdown()
        assert result is SpanExportResult.SUCCESS
        return
    async with httpx.AsyncClient() as client:
        response = await client.post(
            endpoint,
            content=otlp_json(finished),
            headers={**live.headers, "content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    assert "rejectedSpans" not in response.text, response.text


def span_id(span: Span | ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return format(context.span_id, "016x")


async def read(live: Live, kind: str, entity_id: str) -> dict[str, Any]:
    """GET the entity once ingested, parsed by the 2.x SDK's own type (python field names)."""
    path = {"observation": "observations", "trace": "traces"}[kind]
    async with httpx.AsyncClient(base_url=live.url, headers=live.headers) as client:

        async def stored() -> Any:
            response = await client.get(f"/api/public/{path}/{entity_id}")
            return response.json() if response.status_code == 200 else None

        body = await until(stored, timeout=60)
    (parsed,) = await sdk_parse("v2", [(OBSERVATION_VIEW if kind == "observation" else TRACE_VIEW, body)])
    return parsed


async def sent_and_read(live: Live, spans: Spans, transport: str) -> dict[str, dict[str, Any]]:
    finished = spans.finished()
    await send(live, finished, transport)
    return {span_id(s): await read(live, "observation", span_id(s)) for s in finished}


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested messages as the flat `prefix.0.role` attributes instrumentations such as OpenLLMetry write."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    return {key: leaf for k, v in items for key, leaf in flatten(f"{prefix}.{k}", v).items()}


def text(value: Any) -> str:
    return json.dumps(value)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- (a) flattened gen_ai.prompt.N.* / gen_ai.completion.N.* --------------------------------------
PROMPT = [
    {"role": "system", "content": "Answer with a number."},
    {"role": "user", "content": "What is 2+2?"},
    {
        "role": "assistant",
        "content": "Let me compute.",
        "tool_calls": [{"id": "call_1", "name": "calc", "arguments": '{"expr": "2+2"}'}],
    },
    {"role": "tool", "content": "4", "tool_call_id": "call_1"},
]
COMPLETION = [{"role": "assistant", "content": "4", "finish_reason": "stop"}]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_flattened_prompt_and_completion_attributes(live: Live, spans: Spans, transport: str) -> None:
    with spans.tracer().start_as_current_span("chat gpt-4o") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 31,
                "gen_ai.usage.output_tokens": 1,
                **flatten("gen_ai.prompt", PROMPT),
                **flatten("gen_ai.completion", COMPLETION),
                # Past the rebuild's bounds: not placed in the input, but kept among the attributes.
                "gen_ai.prompt.20000.content": "too far",
            }
        )
    (observation,) = (await sent_and_read(live, spans, transport)).values()
    assert observation["type"] == "GENERATION" and observation["model"] == "gpt-4o"
    assert observation["input"] == PROMPT
    assert observation["output"] == COMPLETION
    assert observation["usage_details"] == {"input": 31, "output": 1, "total": 32}
    attributes = observation["metadata"]["attributes"]
    assert attributes["gen_ai.prompt.20000.content"] == "too far"
    assert not any(key.startswith("gen_ai.prompt.0") for key in attributes)  # what was used is not repeated


# --- (b) span events gen_ai.{system,user,assistant,tool}.message and gen_ai.choice ---------------
MESSAGE_EVENTS: list[tuple[str, dict[str, AttributeValue]]] = [
    ("gen_ai.system.message", {"gen_ai.system": "openai", "content": "Answer with a number."}),
    ("gen_ai.user.message", {"gen_ai.system": "openai", "content": "What is 2+2?"}),
    (
        "gen_ai.assistant.message",
        {"gen_ai.system": "openai", "tool_calls": text([{"id": "call_1", "function": {"name": "calc"}}])},
    ),
    ("gen_ai.tool.message", {"gen_ai.system": "openai", "content": "4", "id": "call_1"}),
]
CHOICE: dict[str, AttributeValue] = {
    "gen_ai.system": "openai",
    "index": 0,
    "finish_reason": "stop",
    "message": text({"content": "4"}),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_message_and_choice_span_events(live: Live, spans: Spans, transport: str) -> None:
    with spans.tracer().start_as_current_span("chat") as span:
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"})
        for name, attributes in MESSAGE_EVENTS:
            span.add_event(name, attributes)
        span.add_event("gen_ai.choice", CHOICE)
    (observation,) = (await sent_and_read(live, spans, transport)).values()
    roles = [name.removeprefix("gen_ai.").removesuffix(".message") for name, _ in MESSAGE_EVENTS]
    assert observation["input"] == [
        {"role": role, **attrs} for role, (_, attrs) in zip(roles, MESSAGE_EVENTS, strict=True)
    ]
    assert observation["output"] == CHOICE  # one choice is the output itself, several a list


async def test_several_choices_are_a_list(live: Live, spans: Spans) -> None:
    choices: list[dict[str, AttributeValue]] = [
        {"index": i, "finish_reason": "stop", "message": text({"content": str(i)})} for i in range(2)
    ]
    with spans.tracer().start_as_current_span("chat") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.add_event("gen_ai.user.message", {"content": "two answers"})
        for choice in choices:
            span.add_event("gen_ai.choice", choice)
    (observation,) = (await sent_and_read(live, spans, "json")).values()
    assert observation["input"] == [{"role": "user", "content": "two answers"}]
    assert observation["output"] == choices


# --- (c) gen_ai.input.messages / gen_ai.output.messages / gen_ai.system_instructions --------------
INPUT_MESSAGES = [
    {"role": "user", "parts": [{"type": "text", "content": "What is 2+2?"}]},
    {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "calc", "arguments": {"e": "2+2"}}]},
    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "4"}]},
]
OUTPUT_MESSAGES = [{"role": "assistant", "parts": [{"type": "text", "content": "4"}], "finish_reason": "stop"}]
INSTRUCTIONS = [{"type": "text", "content": "Answer with a number."}, {"type": "text", "content": "Be brief."}]
SYSTEM = {"role": "system", "content": "Answer with a number.\nBe brief."}  # text parts joined, as Langfuse


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_input_and_output_messages_attributes(live: Live, spans: Spans, transport: str) -> None:
    with spans.tracer().start_as_current_span("chat") as with_instructions:
        with_instructions.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.input.messages": text(INPUT_MESSAGES),
                "gen_ai.output.messages": text(OUTPUT_MESSAGES),
                "gen_ai.system_instructions": text(INSTRUCTIONS),
            }
        )
    own_system = [{"role": "system", "parts": [{"type": "text", "content": "Mine."}]}, *INPUT_MESSAGES]
    with spans.tracer().start_as_current_span("chat") as already_has_system:
        already_has_system.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.input.messages": text(own_system),
                "gen_ai.system_instructions": text(INSTRUCTIONS),
            }
        )
    read_back = await sent_and_read(live, spans, transport)
    first, second = read_back[span_id(with_instructions)], read_back[span_id(already_has_system)]
    assert first["input"] == [SYSTEM, *INPUT_MESSAGES]
    assert first["output"] == OUTPUT_MESSAGES
    assert "gen_ai.system_instructions" not in first["metadata"]["attributes"]
    # The input has its own system message: nothing is prepended, and the instructions are not lost.
    assert second["input"] == own_system and second["output"] is None
    assert json.loads(second["metadata"]["attributes"]["gen_ai.system_instructions"]) == INSTRUCTIONS


# --- (d) the gen_ai.client.inference.operation.details event -------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_inference_operation_details_event(live: Live, spans: Spans, transport: str) -> None:
    structured = [{"role": "system", "parts": [{"type": "text", "content": "You are terse."}]}]
    with spans.tracer().start_as_current_span("chat") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                # A lower-precedence form on the same span: the event wins, as in Langfuse.
                "gen_ai.prompt.0.content": "not this",
            }
        )
        span.add_event(
            "gen_ai.client.inference.operation.details",
            {
                "gen_ai.input.messages": text(INPUT_MESSAGES),
                "gen_ai.output.messages": text(OUTPUT_MESSAGES),
                "gen_ai.system_instructions": text(structured),
            },
        )
    (observation,) = (await sent_and_read(live, spans, transport)).values()
    assert observation["model"] == "gpt-4o-2024-08-06"
    assert observation["input"] == [*structured, *INPUT_MESSAGES]  # structured instructions kept whole
    assert observation["output"] == OUTPUT_MESSAGES


# --- OpenInference ---------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_openinference_attributes(live: Live, spans: Spans, transport: str) -> None:
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    invocation = {"temperature": 0.2, "max_tokens": 50, "stop": ["\n"], "response_format": {"type": "text"}}
    common = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-mini",
        "llm.invocation_parameters": text(invocation),
        "llm.token_count.prompt": 9,
        "llm.token_count.completion": 3,
        "llm.token_count.total": 12,
        **flatten("llm.input_messages", [{"message": {"role": "user", "content": "Hi"}}]),
        **flatten("llm.output_messages", [{"message": {"role": "assistant", "content": "Hello!"}}]),
    }
    with spans.tracer("openinference.instrumentation.openai").start_as_current_span("ChatCompletion") as valued:
        valued.set_attributes(
            {
                **common,
                "input.value": text(request),
                "input.mime_type": "application/json",
                "output.value": "Hello!",
                "output.mime_type": "text/plain",
            }
        )
    with spans.tracer("openinference.instrumentation.openai").start_as_current_span("ChatCompletion") as messages:
        messages.set_attributes(common)
    read_back = await sent_and_read(live, spans, transport)
    first, second = read_back[span_id(valued)], read_back[span_id(messages)]
    # Langfuse takes input.value/output.value before the message attributes.
    assert (first["input"], first["output"]) == (request, "Hello!")
    assert second["input"] == [{"message": {"role": "user", "content": "Hi"}}]
    assert second["output"] == [{"message": {"role": "assistant", "content": "Hello!"}}]
    for observation in (first, second):
        assert observation["type"] == "GENERATION" and observation["model"] == "gpt-4o-mini"
        assert observation["usage_details"] == {"input": 9, "output": 3, "total": 12}
        # Model parameters are strings or numbers, the rest JSON text, as Langfuse stores them; the 2.x
        # SDK's MapValue (str, int, bool, list of str) then reads a float as text.
        assert observation["model_parameters"] == {
            "temperature": "0.2",
            "max_tokens": 50,
            "stop": compact(["\n"]),
            "response_format": compact({"type": "text"}),
        }


# --- Vercel AI SDK ----------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_vercel_ai_sdk_spans(live: Live, spans: Spans, transport: str) -> None:
    prompt = {"system": "Answer with a number.", "prompt": "What is 2+2?"}
    messages = [{"role": "system", "content": prompt["system"]}, {"role": "user", "content": prompt["prompt"]}]
    tool_calls = [{"toolCallType": "function", "toolCallId": "c1", "toolName": "calc", "args": '{"e":"2+2"}'}]
    tracer = spans.tracer("ai")  # the AI SDK's instrumentation scope
    telemetry = {"ai.telemetry.functionId": "answer", "ai.model.id": "gpt-4o", "ai.model.provider": "openai.chat"}
    with tracer.start_as_current_span("ai.generateText") as top:
        top.set_attributes(
            {
                **telemetry,
                "operation.name": "ai.generateText answer",
                "ai.operationId": "ai.generateText",
                "ai.prompt": text(prompt),
                "ai.response.text": "4",
                "ai.usage.promptTokens": 20,
                "ai.usage.completionTokens": 5,
                "ai.telemetry.metadata.team": "core",
            }
        )
        with tracer.start_as_current_span("ai.generateText.doGenerate") as model_call:
            model_call.set_attributes(
                {
                    **telemetry,
                    "operation.name": "ai.generateText.doGenerate answer",
                    "ai.operationId": "ai.generateText.doGenerate",
                    "ai.prompt.messages": text(messages),
                    "ai.response.text": "",
                    "ai.response.toolCalls": text(tool_calls),
                    "ai.usage.inputTokens": 20,  # AI SDK 5 names, no gen_ai.usage.*
                    "ai.usage.outputTokens": 5,
                    "ai.usage.totalTokens": 25,
                    "ai.settings.maxRetries": 2,
                    "ai.settings.topP": 0.9,
                    "gen_ai.request.temperature": 0.3,
                    "gen_ai.response.finish_reasons": ["tool-calls"],
                }
            )
        with tracer.start_as_current_span("ai.toolCall") as tool:
            tool.set_attributes(
                {
                    "operation.name": "ai.toolCall",
                    "ai.operationId": "ai.toolCall",
                    "ai.toolCall.name": "calc",
                    "ai.toolCall.args": '{"e":"2+2"}',
                    "ai.toolCall.result": "4",
                }
            )
    read_back = await sent_and_read(live, spans, transport)
    top_level, generation, tool_call = (read_back[span_id(s)] for s in (top, model_call, tool))
    assert (top_level["type"], top_level["name"]) == ("SPAN", "answer:ai.generateText")
    assert (top_level["input"], top_level["output"]) == (prompt, 4)  # "4" is JSON text, read back as Langfuse does
    assert top_level["metadata"]["team"] == "core"
    assert (generation["type"], generation["name"], generation["model"]) == (
        "GENERATION",
        "answer:ai.generateText.doGenerate",
        "gpt-4o",
    )
    assert generation["input"] == messages
    # Langfuse's shape when the response has text and tool calls: one assistant message, the calls as sent.
    assert generation["output"] == {"role": "assistant", "content": "", "tool_calls": text(tool_calls)}
    assert generation["usage_details"] == {"input": 20, "output": 5, "total": 25}
    assert generation["model_parameters"] == {
        "maxRetries": "2",
        "topP": "0.9",
        "temperature": "0.3",
        "finishReason": "tool-calls",
        "system": "openai.chat",
    }
    assert (tool_call["type"], tool_call["name"], tool_call["input"], tool_call["output"]) == (
        "TOOL",
        "calc",
        {"e": "2+2"},
        4,
    )


# --- langfuse.experiment.* ---------------------------------------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_experiment_attributes_are_kept_on_observation_and_trace(
    live: Live, spans: Spans, transport: str
) -> None:
    experiment = {
        "langfuse.experiment.id": "exp-" + uuid.uuid4().hex[:8],
        "langfuse.experiment.name": "prompt v2 vs v1",
        "langfuse.experiment.description": "shorter system prompt",
        "langfuse.experiment.dataset.id": "ds-1",
        "langfuse.experiment.item.id": "item-7",
        "langfuse.experiment.item.version": "2026-11-03T09:00:00.000Z",
        "langfuse.experiment.item.root_observation_id": "will-be-the-root",
        "langfuse.experiment.item.expected_output": text({"answer": 4}),
        "langfuse.experiment.metadata": text({"owner": "ml", "round": 2}),
        "langfuse.experiment.metadata.extra": text("flag"),
        "langfuse.experiment.item.metadata": text({"difficulty": "easy"}),
    }
    tracer = spans.tracer("langfuse-sdk")
    with tracer.start_as_current_span("experiment-item-run") as root:
        root.set_attributes({**experiment, "langfuse.observation.input": text({"q": "2+2"})})
        with tracer.start_as_current_span("task") as child:
            child.set_attributes({"langfuse.experiment.id": experiment["langfuse.experiment.id"]})
    read_back = await sent_and_read(live, spans, transport)
    expected = {
        **{k: v for k, v in experiment.items() if "metadata" not in k and "expected_output" not in k},
        "langfuse.experiment.item.expected_output": {"answer": 4},
        "langfuse.experiment.metadata": {"owner": "ml", "round": 2, "extra": "flag"},
        "langfuse.experiment.item.metadata": {"difficulty": "easy"},
    }
    root_metadata = read_back[span_id(root)]["metadata"]
    assert {k: v for k, v in root_metadata.items() if k.startswith("langfuse.experiment.")} == expected
    assert read_back[span_id(child)]["metadata"]["langfuse.experiment.id"] == experiment["langfuse.experiment.id"]
    context = root.get_span_context()
    assert context is not None
    trace = await read(live, "trace", format(context.trace_id, "032x"))
    assert {k: v for k, v in trace["metadata"].items() if k.startswith("langfuse.experiment.")} == expected


# --- instrumentation packages around a real openai client, HTTP answered in process ----------------
COMPLETION_BODY: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_793_000_000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Four."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
}
ASKED = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is 2+2?"}]


def ask_openai() -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/chat/completions"
        return httpx2.Response(200, json=COMPLETION_BODY)

    with httpx2.Client(transport=httpx2.MockTransport(answer)) as http_client:
        client = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", http_client=http_client)
        client.chat.completions.create(model="gpt-4o-mini", messages=ASKED, temperature=0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_opentelemetry_openai_v2_instrumentation(
    live: Live, spans: Spans, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    # The latest GenAI conventions with content on the span: gen_ai.input/output.messages (form (c)).
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=spans.provider)
    try:
        ask_openai()
    finally:
        instrumentor.uninstrument()
    (span,) = spans.finished()
    assert span.attributes is not None
    (observation,) = (await sent_and_read(live, spans, transport)).values()
    assert observation["type"] == "GENERATION"
    assert observation["model"] == COMPLETION_BODY["model"]
    assert observation["usage_details"] == {"input": 14, "output": 2, "total": 16}
    assert observation["input"] == json.loads(str(span.attributes["gen_ai.input.messages"]))
    assert observation["output"] == json.loads(str(span.attributes["gen_ai.output.messages"]))
    # ... which is what went to OpenAI and what it answered, message by message.
    stored = [(m["role"], [p["content"] for p in m["parts"]]) for m in observation["input"]]
    assert stored == [(m["role"], [m["content"]]) for m in ASKED]
    (answer,) = observation["output"]
    assert (answer["role"], answer["parts"][0]["content"], answer["finish_reason"]) == ("assistant", "Four.", "stop")
    assert observation["model_parameters"]["temperature"] == "0.1"  # a float, read as text by the 2.x SDK


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_openinference_openai_instrumentation(live: Live, spans: Spans, transport: str) -> None:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=spans.provider)
    try:
        ask_openai()
    finally:
        instrumentor.uninstrument()
    (observation,) = (await sent_and_read(live, spans, transport)).values()
    assert observation["type"] == "GENERATION"
    assert observation["model"] == COMPLETION_BODY["model"]
    assert observation["usage_details"] == {"input": 14, "output": 2, "total": 16}
    # input.value / output.value are the request and response bodies (JSON by their mime types).
    assert observation["input"]["messages"] == ASKED
    assert observation["output"]["choices"][0]["message"] == COMPLETION_BODY["choices"][0]["message"]
    assert observation["model_parameters"] == {"model": "gpt-4o-mini", "temperature": "0.1"}  # invocation_parameters


# --- hardening: a span whose GenAI parts cannot be read is rejected alone --------------------------
def test_malformed_events_reject_only_their_span() -> None:
    def span(n: int, **extra: Any) -> dict[str, Any]:
        return {"traceId": "ab" * 16, "spanId": f"{n:016x}", "name": "chat", **extra}

    bad_attribute = [{"name": "gen_ai.user.message", "attributes": [{"key": 1, "value": {"stringValue": "x"}}]}]
    spans = [
        span(1, events={"name": "gen_ai.choice"}),
        span(2, events=["not an event"]),
        span(3, events=[{"name": 7}]),
        span(4, events=bad_attribute),
        span(5, events=[{"name": "exception", "attributes": "unread"}]),  # an event no mapping reads is left alone
        span(6, events=[{"name": "gen_ai.choice", "timeUnixNano": "1", "attributes": []}]),
    ]
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
    mapped = map_request(body, "application/json")
    assert mapped.rejected == [
        "events must be an array",
        "each span event must be an object",
        "a span event's name must be a string",
        "each attribute must be an object with a string key",
    ]
    observations = [e["body"] for e in mapped.events if e["type"] != "trace-create"]
    assert [o["id"] for o in observations] == [f"{5:016x}", f"{6:016x}"]
    assert observations[1]["output"] == {}  # the choice's (empty) attributes, as Langfuse; merge stores no I/O for it
