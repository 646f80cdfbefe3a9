"""Drive the `langfuse` 2.x SDK (batch ingestion API) against a tracehouse; print what was sent."""

import json
import os
from datetime import UTC, datetime, timedelta

from langfuse import Langfuse

lf = Langfuse(
    public_key=os.environ["PK"],
    secret_key=os.environ["SK"],
    host=os.environ["BASE_URL"],
    flush_at=20,
    flush_interval=0.5,
)
start = datetime(2026, 11, 2, 8, 0, 0, tzinfo=UTC)
trace = lf.trace(
    name="v2-trace",
    user_id="u-2",
    session_id="s-2",
    tags=["legacy"],
    metadata={"plan": "pro"},
    input={"q": "hello"},
    release="2.0",
    version="v7",
    timestamp=start,
)
span = trace.span(name="fetch", start_time=start + timedelta(milliseconds=10), input={"url": "x"})
generation = span.generation(
    name="complete",
    model="gpt-3.5-turbo",
    start_time=start + timedelta(milliseconds=20),
    model_parameters={"max_tokens": 64},
    input="hello",
)
generation.end(
    output="hi there",
    end_time=start + timedelta(milliseconds=900),
    usage={"input": 5, "output": 7, "total": 12, "unit": "TOKENS"},
)
span.end(end_time=start + timedelta(seconds=1), output={"status": 200})
trace.update(output={"a": "hi there"})
trace.score(name="rating", value=4, comment="good")
event = trace.event(name="cache-miss", start_time=start + timedelta(milliseconds=5), metadata={"key": "k1"})
lf.flush()
lf.shutdown()
print(json.dumps({"trace_id": trace.id, "span_id": span.id, "generation_id": generation.id, "event_id": event.id}))
