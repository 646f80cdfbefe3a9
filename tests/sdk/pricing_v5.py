"""The current `langfuse` SDK against tracehouse's pricing: its models API client, or generations to price.

argv[1] == "models": create, list, get, replace and delete models with `lf.api.models`, and try what
must fail; print each answer as the SDK parsed it (python field names) or the error it raised.
argv[1] == "send": two generations over OpenTelemetry, one with usage and no cost, one with costs;
argv[2] is the model name. Print their ids.
"""

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import pydantic
from langfuse import Langfuse
from langfuse.api.commons.types.pricing_tier_input import PricingTierInput
from langfuse.api.commons.types.pricing_tier_usage_condition_input import PricingTierUsageConditionInput
from langfuse.api.core.api_error import ApiError

lf = Langfuse(
    public_key=os.environ["PK"],
    secret_key=os.environ["SK"],
    base_url=os.environ["BASE_URL"],
    flush_at=50,
    flush_interval=0.5,
)


def dump(value: Any) -> Any:
    """As the SDK parsed it, by python field name (the SDK's own model_dump would use the aliases)."""
    return pydantic.BaseModel.model_dump(value)


def failure(call: Any) -> dict[str, Any]:
    try:
        call()
    except ApiError as exc:
        return {"error": type(exc).__name__, "status": exc.status_code, "body": exc.body}
    return {"error": None}


def models() -> dict[str, Any]:
    models = lf.api.models
    flat = models.create(
        model_name="acme-flat",
        match_pattern="(?i)^acme-flat(-\\d+)?$",
        unit="TOKENS",
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        input_price=0.000002,
        output_price=0.000008,
        tokenizer_id="openai",
        tokenizer_config={"tokensPerMessage": 3},
    )
    tiered = models.create(
        model_name="acme-tiered",
        match_pattern="^acme-tiered$",
        unit="TOKENS",
        pricing_tiers=[
            PricingTierInput(
                name="Standard", is_default=True, priority=0, conditions=[], prices={"input": 1e-6, "output": 2e-6}
            ),
            PricingTierInput(
                name="Large",
                priority=1,
                conditions=[PricingTierUsageConditionInput(usage_detail_pattern="input", operator="gt", value=200000)],
                prices={"input": 3e-6, "output": 4e-6},
            ),
        ],
    )
    listed = models.list(page=1, limit=100)
    all_pages: list[str] = []
    page = 1
    while True:
        answer = models.list(page=page, limit=100)
        all_pages.extend(m.id for m in answer.data)
        if page >= answer.meta.total_pages:
            break
        page += 1
    got = models.get(flat.id)
    replaced = models.upsert(
        flat.id, model_name="acme-flat", match_pattern="(?i)^acme-flat$", unit="TOKENS", total_price=0.00001
    )
    created_by_put = models.upsert(
        "my-own-id", model_name="acme-put", match_pattern="^acme-put$", unit="REQUESTS", total_price=0.01
    )
    default = models.get("gp-openai-gpt-4o-mini")
    deleted = models.delete(created_by_put.id)
    return {
        "flat": dump(flat),
        "tiered": dump(tiered),
        "list_page_1": dump(listed),
        "all_ids": all_pages,
        "got": dump(got),
        "replaced": dump(replaced),
        "created_by_put": dump(created_by_put),
        "default": dump(default),
        "deleted": deleted,  # the client answers None (it does not parse the message)
        "gone": failure(lambda: models.get(created_by_put.id)),
        "delete_default": failure(lambda: models.delete("gp-openai-gpt-4o-mini")),
        "replace_default": failure(
            lambda: models.upsert(
                "gp-openai-gpt-4o-mini", model_name="x", match_pattern="x", unit="TOKENS", input_price=1
            )
        ),
        "bad_regex": failure(
            lambda: models.create(model_name="bad", match_pattern="(unclosed", unit="TOKENS", input_price=1)
        ),
        "duplicate_name": failure(
            lambda: models.create(model_name="acme-tiered", match_pattern="x", unit="TOKENS", input_price=1)
        ),
    }


def send(model: str) -> dict[str, Any]:
    with lf.start_as_current_observation(name="priced", as_type="span") as root:
        with lf.start_as_current_observation(name="inferred", as_type="generation", model=model) as gen:
            gen.update(output="ok", usage_details={"input": 1234, "output": 567})
            inferred = gen.id
        with lf.start_as_current_observation(name="sent", as_type="generation", model=model) as gen:
            gen.update(usage_details={"input": 10, "output": 5}, cost_details={"input": 0.5, "output": 0.25})
            sent = gen.id
        trace_id = root.trace_id
    lf.flush()
    return {"trace_id": trace_id, "inferred": inferred, "sent": sent}


result = models() if sys.argv[1] == "models" else send(sys.argv[2])
lf.shutdown()
print(json.dumps(result, default=str))
