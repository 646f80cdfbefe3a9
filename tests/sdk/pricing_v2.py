"""The `langfuse` 2.x SDK (batch ingestion API): a generation with usage and no cost; argv[1] is the model."""

import json
import os
import sys

from langfuse import Langfuse

lf = Langfuse(
    public_key=os.environ["PK"],
    secret_key=os.environ["SK"],
    host=os.environ["BASE_URL"],
    flush_at=20,
    flush_interval=0.5,
)
trace = lf.trace(name="v2-priced")
generation = trace.generation(name="complete", model=sys.argv[1], input="hello")
generation.end(output="hi", usage={"input": 4321, "output": 765, "unit": "TOKENS"})
sent = trace.generation(name="sent", model=sys.argv[1], usage={"input": 3, "output": 4, "input_cost": 0.125})
lf.flush()
lf.shutdown()
print(json.dumps({"trace_id": trace.id, "inferred": generation.id, "sent": sent.id}))
