"""Read back through the 2.x SDK's fetch_* helpers; print the parsed models as JSON."""

import json
import os
import sys

from langfuse import Langfuse

lf = Langfuse(public_key=os.environ["PK"], secret_key=os.environ["SK"], host=os.environ["BASE_URL"])
trace_id = sys.argv[1]
trace = lf.fetch_trace(trace_id).data
traces = lf.fetch_traces(user_id="u-2", limit=10).data
observations = lf.fetch_observations(trace_id=trace_id).data
sessions = lf.fetch_sessions(limit=50).data
print(
    json.dumps(
        {
            "trace": {
                "id": trace.id,
                "name": trace.name,
                "userId": trace.user_id,
                "tags": trace.tags,
                "observations": sorted(o.id for o in trace.observations),
                "scores": [s.name for s in trace.scores],
                "output": trace.output,
            },
            "traces": [t.id for t in traces],
            "observations": sorted((o.id, o.type) for o in observations),
            "sessions": sorted(s.id for s in sessions),
        }
    )
)
