"""Read back through the current SDK's API clients; print the parsed models as JSON."""

import json
import os
import sys

from langfuse import Langfuse

lf = Langfuse(public_key=os.environ["PK"], secret_key=os.environ["SK"], base_url=os.environ["BASE_URL"])
trace_id = sys.argv[1]
observations = lf.api.observations.get_many(trace_id=trace_id, fields="core,basic,usage,model", limit=50)
scores = lf.api.scores.get_many(trace_id=trace_id)
projects = lf.api.projects.get()
print(
    json.dumps(
        {
            "observations": [
                {
                    "id": o.id,
                    "type": o.type,
                    "name": o.name,
                    "parent": o.parent_observation_id,
                    "usage": o.usage_details,
                    "model": o.model,
                    "start": o.start_time.isoformat(),
                }
                for o in observations.data
            ],
            "scores": [
                {
                    "id": s.id,
                    "name": s.name,
                    "value": s.value,
                    "dataType": s.data_type,
                    "subject": s.subject.id if s.subject else None,
                }
                for s in scores.data
            ],
            "project": projects.data[0].id,
        }
    )
)
