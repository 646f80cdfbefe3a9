"""Property tests of everything that parses client input: whatever arrives, the answer is a clear
4xx (or a rejected event or span), never a 5xx or an unexpected exception, and valid siblings survive.

Example counts are bounded so `make test` stays fast; set TRACEHOUSE_FUZZ_EXAMPLES (e.g. 5000) to hunt.
"""

import base64
import json
import os
import uuid

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from conftest import server_thread
from tracehouse.ingestion.models import RejectedEvent, validate_event
from tracehouse.ingestion.otel import OtelRejected, map_request
from tracehouse.ingestion.service import check_events
from tracehouse.queries.models import Cursor

EXAMPLES = int(os.environ.get("TRACEHOUSE_FUZZ_EXAMPLES", "150"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
HTTP = settings(
    max_examples=max(30, EXAMPLES // 5), deadline=None, suppress_health_check=list(HealthCheck), database=None
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),  # JSON has neither
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)

# Field names the event bodies know, so the fuzzer reaches the field checks, not only "unknown field".
BODY_KEYS = [
    "id",
    "traceId",
    "name",
    "timestamp",
    "startTime",
    "endTime",
    "completionStartTime",
    "userId",
    "sessionId",
    "metadata",
    "tags",
    "public",
    "input",
    "output",
    "level",
    "usage",
    "usageDetails",
    "costDetails",
    "promptName",
    "promptVersion",
    "environment",
    "value",
    "dataType",
    "modelParameters",
    "parentObservationId",
    "statusMessage",
    "version",
    "release",
    "model",
    "observationId",
]
EVENT_TYPES = [
    "trace-create",
    "span-create",
    "span-update",
    "generation-create",
    "generation-update",
    "event-create",
    "score-create",
    "observation-create",
    "sdk-log",
    "agent-create",
    "nonsense",
]
timestamps = st.one_of(st.datetimes().map(lambda d: d.isoformat()), json_values)
bodies = st.dictionaries(st.sampled_from(BODY_KEYS), json_values, max_size=8).map(
    lambda body: {**body, "id": body.get("id", "x")}
)
events = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "id": st.one_of(st.text(max_size=10), json_values),
            "timestamp": timestamps,
            "type": st.sampled_from(EVENT_TYPES),
            "body": st.one_of(bodies, json_values),
        }
    ),
)


@FAST
@given(raw=events)
def test_an_event_is_accepted_normalized_or_rejected_with_a_reason(raw):
    try:
        normalized = validate_event(raw)
    except RejectedEvent as rejected:
        assert rejected.status in (400, 413) and rejected.error
        return
    if normalized is None:  # sdk-log
        return
    # What was accepted validates again unchanged: the worker re-checks logged events when merging.
    again = validate_event({k: normalized[k] for k in ("id", "timestamp", "type", "body")})
    assert again == normalized


@FAST
@given(batch=st.lists(events, max_size=6))
def test_a_batch_is_checked_event_by_event(batch):
    checked = check_events(batch, max_event_bytes=1_000_000)
    assert len(checked.successes) + len(checked.errors) + len(checked.logs) == len(batch)
    assert len(checked.events) == len(checked.successes)
    for encoded in checked.events:
        orjson.loads(encoded)


# --- OTel ----------------------------------------------------------------------------------------
any_values = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "stringValue": json_values,
            "intValue": json_values,
            "doubleValue": json_values,
            "boolValue": json_values,
        },
    ),
    lambda inner: st.fixed_dictionaries(
        {},
        optional={
            "arrayValue": st.fixed_dictionaries({"values": st.lists(inner, max_size=3)}),
            "kvlistValue": st.fixed_dictionaries(
                {"values": st.lists(st.fixed_dictionaries({"key": st.text(max_size=6), "value": inner}), max_size=3)}
            ),
        },
    ),
    max_leaves=8,
)
otel_spans = st.fixed_dictionaries(
    {},
    optional={
        "traceId": st.one_of(st.just("ab" * 16), st.text(max_size=40), json_values),
        "spanId": st.one_of(st.just("cd" * 8), st.text(max_size=20), json_values),
        "parentSpanId": st.one_of(st.just("ef" * 8), json_values),
        "name": json_values,
        "startTimeUnixNano": st.one_of(st.integers(min_value=-(2**65), max_value=2**65).map(str), json_values),
        "endTimeUnixNano": st.one_of(st.integers(min_value=0, max_value=2**64).map(str), json_values),
        "attributes": st.one_of(
            st.lists(st.fixed_dictionaries({"key": st.text(max_size=30), "value": any_values}), max_size=4),
            json_values,
        ),
        "status": json_values,
    },
)
otel_requests = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "resourceSpans": st.lists(
                st.fixed_dictionaries(
                    {
                        "scopeSpans": st.lists(
                            st.fixed_dictionaries({"spans": st.lists(otel_spans, max_size=3)}), max_size=2
                        )
                    },
                    optional={
                        "resource": st.one_of(
                            json_values,
                            st.fixed_dictionaries(
                                {
                                    "attributes": st.lists(
                                        st.fixed_dictionaries({"key": st.text(max_size=10), "value": any_values}),
                                        max_size=3,
                                    )
                                }
                            ),
                        )
                    },
                ),
                max_size=2,
            )
        }
    ),
)


@FAST
@given(request=otel_requests)
def test_otel_json_maps_or_rejects_cleanly(request):
    body = json.dumps(request).encode()
    try:
        mapped = map_request(body, "application/json")
    except OtelRejected as exc:
        assert str(exc)
        return
    assert len(mapped.rejected) <= mapped.spans
    for event in mapped.events:  # whatever mapped is either valid or rejected with a reason
        try:
            validate_event(event)
        except RejectedEvent as rejected:
            assert rejected.error


def _valid_protobuf() -> bytes:
    span = Span(
        trace_id=uuid.uuid4().bytes,
        span_id=uuid.uuid4().bytes[:8],
        name="s",
        start_time_unix_nano=1_793_000_000_000_000_000,
    )
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])
    return request.SerializeToString()


VALID_PROTOBUF = _valid_protobuf()


@FAST
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.lists(st.tuples(st.integers(0, len(VALID_PROTOBUF) - 1), st.integers(0, 255)), min_size=1, max_size=6).map(
            lambda flips: _flip(VALID_PROTOBUF, flips)
        ),
    )
)
def test_otel_protobuf_maps_or_rejects_cleanly(data):
    try:
        mapped = map_request(data, "application/x-protobuf")
    except OtelRejected as exc:
        assert str(exc)
        return
    assert len(mapped.rejected) <= mapped.spans


def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    mutated = bytearray(data)
    for position, value in flips:
        mutated[position] = value
    return bytes(mutated)


@FAST
@given(
    text=st.one_of(
        st.text(max_size=60), json_values.map(lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).decode())
    )
)
def test_the_cursor_decoder_answers_a_position_or_none(text):
    decoded = Cursor.decode(text)
    assert decoded is None or isinstance(decoded, Cursor)


# --- through HTTP: no 5xx, and the valid sibling survives --------------------------------------


def _sibling():
    return {
        "id": str(uuid.uuid4()),
        "timestamp": "2026-11-01T12:00:00Z",
        "type": "trace-create",
        "body": {"id": f"sibling-{uuid.uuid4().hex[:8]}"},
    }


def test_ingestion_endpoints_never_answer_5xx_and_keep_valid_siblings(base_services, project, key_prefix):
    """Against a real server on loopback (its own event loop), with a blocking client per example."""
    _, headers = project
    with server_thread(base_services, key_prefix) as url, httpx.Client(base_url=url, headers=headers) as client:

        @HTTP
        @given(batch=st.lists(events, max_size=4), score=json_values, cursor=st.text(max_size=40))
        def check(batch, score, cursor):
            sibling = _sibling()
            ingested = client.post("/api/public/ingestion", content=json.dumps({"batch": [*batch, sibling]}))
            assert ingested.status_code == 207, ingested.text
            assert {"id": sibling["id"], "status": 201} in ingested.json()["successes"]
            scored = client.post("/api/public/scores", content=json.dumps(score))
            assert scored.status_code < 500, scored.text
            paged = client.get("/api/public/v2/observations", params={"cursor": cursor})
            assert paged.status_code in (200, 400), paged.text

        check()
