"""Drive the current `langfuse` SDK (OpenTelemetry spans + scores) against a tracehouse; print what was sent."""

import json
import os

from langfuse import Langfuse, propagate_attributes

lf = Langfuse(
    public_key=os.environ["PK"],
    secret_key=os.environ["SK"],
    base_url=os.environ["BASE_URL"],
    flush_at=50,
    flush_interval=0.5,
    environment="staging",
)

with lf.start_as_current_observation(
    name="handle-request", as_type="span", input={"question": "2+2?"}, metadata={"customer": "acme"}
) as root:
    with propagate_attributes(user_id="user-7", session_id="session-9", tags=["sdk", "v5"], trace_name="qa"):
        with lf.start_as_current_observation(
            name="llm-call",
            as_type="generation",
            model="gpt-4o-mini",
            input=[{"role": "user", "content": "2+2?"}],
            model_parameters={"temperature": 0.1},
        ) as gen:
            gen.update(
                output="4", usage_details={"input": 12, "output": 3}, cost_details={"input": 0.0012, "output": 0.0006}
            )
            generation_id = gen.id
        with lf.start_as_current_observation(name="lookup", as_type="tool", input={"q": "x"}) as tool:
            tool.update(output={"hits": 1})
            tool_id = tool.id
    root.update(output={"answer": 4})
    trace_id = root.trace_id
    root_id = root.id

lf.create_score(name="correct", value=1.0, trace_id=trace_id, data_type="NUMERIC", comment="checked")
lf.create_score(name="tone", value="friendly", trace_id=trace_id, observation_id=generation_id, data_type="CATEGORICAL")
lf.flush()
lf.shutdown()
print(json.dumps({"trace_id": trace_id, "root_id": root_id, "generation_id": generation_id, "tool_id": tool_id}))
