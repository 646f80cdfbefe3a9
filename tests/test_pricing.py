"""Model prices: the models API (Langfuse's shapes, the current SDK's client), how a model is chosen,
tiers and usage keys, computed and sent costs on the ingested rows, and the defaults from genai-prices.

Expected prices come from genai-prices' own calculator (`genai_prices.calc_price`), never from the
mapping under test; costs are checked on the rows the ingestion worker wrote to ClickHouse.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import httpx
import pytest
import sqlalchemy as sa

from conftest import server_thread
from helpers import rows_of, start_ingestion, until
from test_sdk import sdk_dir
from tracehouse.metadata import create_api_key, create_project
from tracehouse.pricing.api import router
from tracehouse.pricing.defaults import default_models
from tracehouse.pricing.matching import price_usage
from tracehouse.pricing.service import PricingService, pricing_service
from tracehouse.web.app import create_app

SCRIPT = Path(__file__).with_name("sdk") / "pricing_v5.py"
TWELVE = Decimal("0.000000000001")


def per_token(model: str, **usage: int) -> genai_prices.types.PriceCalculation:
    return genai_prices.calc_price(genai_prices.Usage(**usage), model)


def q12(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(TWELVE)


@pytest.fixture
async def api(services: Any, project: Any) -> Any:
    app = create_app(services)
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        client.headers.update(project[1])
        yield client


def flat_body(name: str, pattern: str, **extra: Any) -> dict[str, Any]:
    return {
        "modelName": name,
        "matchPattern": pattern,
        "unit": "TOKENS",
        "inputPrice": 1e-6,
        "outputPrice": 2e-6,
    } | extra


def generation(gen_id: str, model: str, **body: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": "generation-create",
        "timestamp": datetime.now(UTC).isoformat(),
        "body": {"id": gen_id, "traceId": f"t-{gen_id}", "name": "llm", "model": model, **body},
    }


async def ingest(services: Any, api: Any, project_id: str, events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Send the events, let a real ingestion worker write them, answer the stored rows by id."""
    answer = await api.post("/api/public/ingestion", json={"batch": events})
    assert answer.status_code == 207 and not answer.json()["errors"], answer.text
    ids = [e["body"]["id"] for e in events]
    runner = await start_ingestion(services)
    try:
        rows = await until(
            lambda: rows_of_ids(services, project_id, ids),
            timeout=60,
        )
    finally:
        await runner.shutdown(10)
    return rows


async def rows_of_ids(services: Any, project_id: str, ids: list[str]) -> dict[str, dict[str, Any]] | None:
    rows = {r["id"]: r for r in await rows_of(services, "observations", project_id)}
    return rows if set(ids) <= set(rows) else None


# --- the models API (fast, over HTTP on the app) ---------------------------------------------------


async def test_create_get_list_replace_delete_in_langfuse_shapes(api: Any) -> None:
    sent = flat_body("acme", "(?i)^acme$", startDate="2026-03-01T00:00:00.000Z", tokenizerId="claude")
    created = (await api.post("/api/public/models", json=sent)).json()
    assert {k: created[k] for k in ("modelName", "matchPattern", "startDate", "unit", "tokenizerId")} == {
        "modelName": "acme",
        "matchPattern": "(?i)^acme$",
        "startDate": "2026-03-01T00:00:00.000Z",
        "unit": "TOKENS",
        "tokenizerId": "claude",
    }
    assert (created["inputPrice"], created["outputPrice"], created["totalPrice"]) == (1e-6, 2e-6, None)
    assert created["prices"] == {"input": {"price": 1e-6}, "output": {"price": 2e-6}}
    assert created["isLangfuseManaged"] is False
    assert created["pricingTiers"] == [
        {
            "id": f"{created['id']}_tier_default",
            "name": "Standard",
            "isDefault": True,
            "priority": 0,
            "conditions": [],
            "prices": {"input": 1e-6, "output": 2e-6},
        }
    ]
    assert (await api.get(f"/api/public/models/{created['id']}")).json() == created

    page = (await api.get("/api/public/models", params={"limit": 100})).json()
    assert page["meta"]["page"] == 1 and page["meta"]["limit"] == 100
    total = page["meta"]["totalItems"]
    assert total == 1 + len(default_models().models) and page["meta"]["totalPages"] == -(-total // 100)
    names = [m["modelName"] for m in page["data"]]
    assert names == sorted(names)  # Langfuse's order: modelName first

    replaced = (await api.put(f"/api/public/models/{created['id']}", json=flat_body("acme", "^acme$"))).json()
    assert (replaced["id"], replaced["matchPattern"], replaced["startDate"]) == (created["id"], "^acme$", None)
    deleted = await api.delete(f"/api/public/models/{created['id']}")
    assert deleted.json() == {"message": "Model successfully deleted"}
    assert (await api.get(f"/api/public/models/{created['id']}")).status_code == 404


async def test_bad_bodies_answer_400_naming_the_field(api: Any) -> None:
    cases = [
        (flat_body("a", "(unclosed"), "matchPattern"),
        (flat_body("a", "x", totalPrice=1e-6), "totalPrice"),
        ({"modelName": "a", "matchPattern": "x", "unit": "TOKENS"}, "pricingTiers"),
        (
            flat_body(
                "a",
                "x",
                pricingTiers=[
                    {"name": "S", "isDefault": True, "priority": 0, "conditions": [], "prices": {"input": 1}}
                ],
            ),
            "pricingTiers",
        ),
        (
            {
                "modelName": "a",
                "matchPattern": "x",
                "unit": "TOKENS",
                "pricingTiers": [{"name": "S", "priority": 0, "conditions": [], "prices": {"input": 1}}],
            },
            "pricingTiers",
        ),
        (flat_body("a", "x", unit="PARSECS"), "unit"),
        (flat_body("a", "x", inputPrice=-1), "inputPrice"),
    ]
    for body, field in cases:
        answer = await api.post("/api/public/models", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert field in answer.text, (field, answer.text)
    tier = {"name": "Big", "priority": 1, "prices": {"input": 2}}
    default = {"name": "S", "isDefault": True, "priority": 0, "conditions": [], "prices": {"input": 1}}
    bad_condition = {"usageDetailPattern": "(unclosed", "operator": "gt", "value": 1}
    for tiers in (
        [default, {**tier, "conditions": [bad_condition]}],
        [default, {**tier, "conditions": []}],  # a conditional tier needs a condition
        [default, {**tier, "priority": 0, "conditions": [{**bad_condition, "usageDetailPattern": "input"}]}],
        [default, {**tier, "prices": {"output": 2}, "conditions": [{**bad_condition, "usageDetailPattern": "input"}]}],
    ):
        body = {"modelName": "t", "matchPattern": "t", "unit": "TOKENS", "pricingTiers": tiers}
        answer = await api.post("/api/public/models", json=body)
        assert answer.status_code == 400 and "pricingTiers" in answer.text, answer.text


async def test_defaults_are_read_only_and_other_projects_models_invisible(services: Any, api: Any) -> None:
    default_id = default_models().find("gpt-4o-mini").id  # type: ignore[union-attr]
    got = (await api.get(f"/api/public/models/{default_id}")).json()
    assert got["isLangfuseManaged"] is True and got["modelName"] == "gpt-4o-mini"
    assert (await api.delete(f"/api/public/models/{default_id}")).status_code == 404
    assert (await api.put(f"/api/public/models/{default_id}", json=flat_body("x", "x"))).status_code == 404

    other = create_project(services.metadata, "other", project_id=f"p-{uuid.uuid4().hex[:10]}")
    key = create_api_key(services.metadata, other.id, salt=services.settings.salt)
    theirs_headers = {
        "Authorization": "Basic " + base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()
    }
    theirs = (await api.post("/api/public/models", json=flat_body("theirs", "^theirs$"), headers=theirs_headers)).json()
    assert (await api.get(f"/api/public/models/{theirs['id']}")).status_code == 404
    assert (await api.delete(f"/api/public/models/{theirs['id']}")).status_code == 404
    assert (await api.put(f"/api/public/models/{theirs['id']}", json=flat_body("mine", "x"))).status_code == 404
    assert (
        await api.post("/api/public/models", json=flat_body("theirs", "^x$"))
    ).status_code == 200  # names per project
    assert (await api.post("/api/public/models", json=flat_body("theirs", "^y$"))).status_code == 400


# --- how a model is chosen -------------------------------------------------------------------------


async def view_with(services: Any, api: Any, project_id: str, *bodies: dict[str, Any]) -> tuple[Any, list[str]]:
    ids = []
    for body in bodies:
        answer = await api.post("/api/public/models", json=body)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["id"])
    return await pricing_service(services.metadata).for_project(project_id), ids


async def test_project_model_beats_the_default_with_the_same_pattern(services: Any, api: Any, project: Any) -> None:
    default = default_models().find("gpt-4o-mini")
    assert default is not None and default.id == "gp-openai-gpt-4o-mini"
    view, (mine,) = await view_with(services, api, project[0], flat_body("my-4o-mini", default.match_pattern))
    assert view.find("gpt-4o-mini").id == mine
    gpt_4o = default_models().find("gpt-4o")
    assert gpt_4o is not None and view.find("gpt-4o").id == gpt_4o.id  # other names still use the defaults


async def test_newest_start_date_wins_and_none_comes_last(services: Any, api: Any, project: Any) -> None:
    view, (undated, old, new) = await view_with(
        services,
        api,
        project[0],
        flat_body("undated", "^acme"),
        flat_body("old", "^acme", startDate="2025-01-01T00:00:00Z"),
        flat_body("new", "^acme-", startDate="2027-06-01T00:00:00Z"),  # after now: Langfuse does not compare
    )
    assert view.find("acme-1").id == new
    assert view.find("acme").id == old  # "new" does not match, the dated one beats the undated


async def test_patterns_are_case_sensitive_unless_they_say_so(services: Any, api: Any, project: Any) -> None:
    view, (loose, strict) = await view_with(
        services, api, project[0], flat_body("loose", "(?i)^loose-model$"), flat_body("strict", "^strict-model$")
    )
    assert view.find("LOOSE-Model").id == loose
    assert view.find("strict-model").id == strict
    assert view.find("STRICT-MODEL") is None  # PostgreSQL's `~`, as Langfuse matches


async def test_a_catastrophic_pattern_neither_matches_nor_stalls(services: Any, api: Any, project: Any) -> None:
    view, _ = await view_with(services, api, project[0], flat_body("evil", "^(a+)+$"))
    started = time.monotonic()
    assert view.find("a" * 40 + "!") is None
    assert time.monotonic() - started < 1.0
    assert view.find("a" * 5000) is None  # longer than any model name is matched


async def test_project_models_are_cached_and_writes_refresh_them(services: Any, api: Any, project: Any) -> None:
    pricing = PricingService(services.metadata, ttl_s=3600)
    queries: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("SELECT models.id"):  # loading a project's models (not the API's checks)
            queries.append(statement)

    sa.event.listen(services.metadata.engine, "before_cursor_execute", count)
    try:
        first = await pricing.for_project(project[0])
        for _ in range(50):
            assert await pricing.for_project(project[0]) is first
        assert len(queries) == 1
        await api.post("/api/public/models", json=flat_body("late", "^late$"))
        assert (await pricing.for_project(project[0])).find("late") is None  # another service: TTL-stale
        pricing.invalidate(project[0])
        assert (await pricing.for_project(project[0])).find("late") is not None
        assert len(queries) == 2
    finally:
        sa.event.remove(services.metadata.engine, "before_cursor_execute", count)


# --- tiers, usage keys and costs on ingested rows --------------------------------------------------


TIERED = {
    "modelName": "tiered",
    "matchPattern": "^tiered$",
    "unit": "TOKENS",
    "pricingTiers": [
        {
            "name": "Standard",
            "isDefault": True,
            "priority": 0,
            "conditions": [],
            "prices": {"input": 1e-6, "output": 2e-6},
        },
        {
            "name": "Priority",
            "priority": 1,
            "conditions": [{"source": "model_parameters", "key": "service_tier", "values": ["priority"]}],
            "prices": {"input": 5e-6, "output": 6e-6},
        },
        {
            "name": "Large",
            "priority": 2,
            "conditions": [{"usageDetailPattern": "^input", "operator": "gt", "value": 200000}],
            "prices": {"input": 3e-6, "output": 4e-6},
        },
    ],
}


async def test_tiers_by_usage_threshold_and_attribute(services: Any, api: Any, project: Any) -> None:
    project_id = project[0]
    model = (await api.post("/api/public/models", json=TIERED)).json()
    tiers = {t["name"]: t["id"] for t in model["pricingTiers"]}
    rows = await ingest(
        services,
        api,
        project_id,
        [
            generation("small", "tiered", usageDetails={"input": 1000, "output": 10}),
            # 150k + 60k cached: the condition sums every key matching ^input
            generation("large", "tiered", usageDetails={"input": 150000, "input_cached_tokens": 60000, "output": 10}),
            generation(
                "prio",
                "tiered",
                usageDetails={"input": 300000, "output": 10},
                modelParameters={"service_tier": "priority"},
            ),
            generation("empty", "tiered"),
        ],
    )
    expected = {
        "small": ("Standard", {"input": 1000 * 1e-6, "output": 10 * 2e-6}),
        "large": ("Large", {"input": 150000 * 3e-6, "output": 10 * 4e-6}),
        "prio": ("Priority", {"input": 300000 * 5e-6, "output": 10 * 6e-6}),
    }
    for gen_id, (tier, costs) in expected.items():
        row = rows[gen_id]
        assert (row["internal_model_id"], row["usage_pricing_tier_name"], row["usage_pricing_tier_id"]) == (
            model["id"],
            tier,
            tiers[tier],
        )
        want = {k: q12(v) for k, v in costs.items()} | {"total": q12(sum(costs.values()))}
        assert dict(rows[gen_id]["cost_details"]) == want, gen_id
        assert q12(row["total_cost"]) == want["total"]
    # No usage: the model is known, no tier applies, nothing costs anything (as in Langfuse).
    assert (rows["empty"]["internal_model_id"], rows["empty"]["usage_pricing_tier_id"]) == (model["id"], None)
    assert dict(rows["empty"]["cost_details"]) == {} and rows["empty"]["total_cost"] is None


async def test_usage_keys_are_priced_by_exact_key_and_sent_costs_win(services: Any, api: Any, project: Any) -> None:
    project_id = project[0]
    model = (
        await api.post(
            "/api/public/models",
            json={
                "modelName": "keys",
                "matchPattern": "^keys$",
                "unit": "TOKENS",
                "pricingTiers": [
                    {
                        "name": "S",
                        "isDefault": True,
                        "priority": 0,
                        "conditions": [],
                        "prices": {"input": 1e-6, "input_cached_tokens": 1e-7},
                    }
                ],
            },
        )
    ).json()
    rows = await ingest(
        services,
        api,
        project_id,
        [
            generation(
                "exact", "keys", usageDetails={"input": 100, "input_cached_tokens": 50, "Input": 7, "output": 9}
            ),
            generation("sent-io", "keys", usageDetails={"input": 100}, costDetails={"input": 0.5, "output": 0.25}),
            generation("sent-one", "keys", usageDetails={"input": 100}, costDetails={"output": 0.125}),
            generation("sent-other", "keys", usageDetails={"input": 100}, costDetails={"input": 0.5, "cache": 0.5}),
            generation("sent-total", "keys", usageDetails={"input": 100}, costDetails={"input": 0.5, "total": 2.0}),
        ],
    )
    exact = rows["exact"]
    assert dict(exact["cost_details"]) == {
        "input": q12(100 * 1e-6),
        "input_cached_tokens": q12(50 * 1e-7),
        "total": q12(100 * 1e-6 + 50 * 1e-7),
    }
    assert dict(exact["provided_cost_details"]) == {}
    # Sent costs: kept as sent (no inference), `total` from total, else input + output only.
    for gen_id, sent, total in (
        ("sent-io", {"input": 0.5, "output": 0.25}, 0.75),
        ("sent-one", {"output": 0.125}, 0.125),
        ("sent-other", {"input": 0.5, "cache": 0.5}, None),
        ("sent-total", {"input": 0.5, "total": 2.0}, 2.0),
    ):
        row = rows[gen_id]
        assert dict(row["provided_cost_details"]) == {k: q12(v) for k, v in sent.items()}, gen_id
        with_total = sent if total is None else {**sent, "total": total}
        assert dict(row["cost_details"]) == {k: q12(v) for k, v in with_total.items()}, gen_id
        assert (row["total_cost"] is None) if total is None else (q12(row["total_cost"]) == q12(total)), gen_id
        assert row["internal_model_id"] == model["id"]


async def test_default_prices_match_genai_prices(services: Any, api: Any, project: Any) -> None:
    """Defaults priced on ingestion equal genai-prices' own calculation, tier thresholds included."""
    rows = await ingest(
        services,
        api,
        project[0],
        [
            generation("mini", "gpt-4o-mini", usageDetails={"input": 1234, "output": 567}),
            generation("sonnet-small", "claude-sonnet-4-5", usageDetails={"input": 1000, "output": 100}),
            generation("sonnet-large", "claude-sonnet-4-5", usageDetails={"input": 250_000, "output": 100}),
            generation("unknown", "no-such-model-anywhere", usageDetails={"input": 1}),
        ],
    )
    for gen_id, model, (inp, out) in (
        ("mini", "gpt-4o-mini", (1234, 567)),
        ("sonnet-small", "claude-sonnet-4-5", (1000, 100)),
        ("sonnet-large", "claude-sonnet-4-5", (250_000, 100)),
    ):
        price = per_token(model, input_tokens=inp, output_tokens=out)
        row = rows[gen_id]
        assert dict(row["cost_details"]) == {
            "input": q12(price.input_price),
            "output": q12(price.output_price),
            "total": q12(price.total_price),
        }, gen_id
        assert q12(row["total_cost"]) == q12(price.total_price)
        assert row["internal_model_id"] == f"gp-{price.provider.id}-{price.model.id}"
    assert rows["sonnet-large"]["usage_pricing_tier_id"] == "gp-anthropic-claude-sonnet-4-5_tier_200000"
    assert rows["sonnet-small"]["usage_pricing_tier_name"] == "Standard"
    assert rows["unknown"]["internal_model_id"] is None and dict(rows["unknown"]["cost_details"]) == {}


def test_default_cache_and_reasoning_keys_take_genai_prices_unit_prices() -> None:
    """OpenAI-shaped usage as ingestion normalizes it (input minus cached, output minus reasoning)."""
    model = default_models().find("gpt-4o-mini")
    assert model is not None
    priced = price_usage(
        model,
        {"input": 700, "input_cached_tokens": 300, "output": 80, "output_reasoning_tokens": 20, "total": 1100},
        {},
    )
    expected = per_token("gpt-4o-mini", input_tokens=1000, cache_read_tokens=300, output_tokens=100)
    assert q12(priced.total_cost) == q12(expected.total_price)
    assert set(priced.cost_details) == {"input", "input_cached_tokens", "output", "output_reasoning_tokens", "total"}


async def test_prices_for_reads(services: Any, api: Any, project: Any) -> None:
    mine = (await api.post("/api/public/models", json=flat_body("read", "^read$"))).json()
    pricing = pricing_service(services.metadata)
    prices = await pricing.prices_for(project[0], [mine["id"], "gp-openai-gpt-4o-mini", "gone", None])
    assert set(prices) == {mine["id"], "gp-openai-gpt-4o-mini"}
    assert (prices[mine["id"]].input_price, prices[mine["id"]].output_price) == (
        Decimal("0.000001"),
        Decimal("0.000002"),
    )
    expected = per_token("gpt-4o-mini", input_tokens=1_000_000, output_tokens=1_000_000)
    default = prices["gp-openai-gpt-4o-mini"]
    assert (default.input_price * 1_000_000, default.output_price * 1_000_000) == (  # type: ignore[operator]
        expected.input_price,
        expected.output_price,
    )
    assert default.total_price is None


# --- the current SDK's models client, over a real server -------------------------------------------


@pytest.mark.slow
async def test_the_current_sdk_client_manages_models(base_services: Any, key_prefix: str, project: Any) -> None:
    _, headers = project
    public, secret = base64.b64decode(headers["Authorization"].split()[1]).decode().split(":")
    with server_thread(base_services, key_prefix, on_app=lambda app: app.include_router(router)) as url:
        site = await asyncio.to_thread(sdk_dir, "v5")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "models",
            env={
                "PATH": os.environ.get("PATH", ""),
                "PYTHONPATH": str(site),
                "PK": public,
                "SK": secret,
                "BASE_URL": url,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-3000:]
    got = json.loads(out.decode().strip().splitlines()[-1])

    flat, tiered = got["flat"], got["tiered"]
    assert (flat["model_name"], flat["match_pattern"], flat["unit"]) == (
        "acme-flat",
        "(?i)^acme-flat(-\\d+)?$",
        "TOKENS",
    )
    assert datetime.fromisoformat(flat["start_date"]) == datetime(2026, 1, 1, tzinfo=UTC)
    assert (flat["input_price"], flat["output_price"], flat["total_price"]) == (0.000002, 0.000008, None)
    assert (flat["tokenizer_id"], flat["tokenizer_config"]) == ("openai", {"tokensPerMessage": 3})
    assert flat["prices"] == {"input": {"price": 0.000002}, "output": {"price": 0.000008}}
    assert flat["is_langfuse_managed"] is False
    standard, large = tiered["pricing_tiers"]
    assert (standard["is_default"], standard["prices"]) == (True, {"input": 1e-6, "output": 2e-6})
    assert (large["name"], large["priority"], large["prices"]) == ("Large", 1, {"input": 3e-6, "output": 4e-6})
    assert large["conditions"] == [
        {"usage_detail_pattern": "input", "operator": "gt", "value": 200000.0, "case_sensitive": False}
    ]
    assert got["got"] == flat
    replaced = got["replaced"]
    assert (replaced["id"], replaced["match_pattern"], replaced["total_price"], replaced["input_price"]) == (
        flat["id"],
        "(?i)^acme-flat$",
        0.00001,
        None,
    )
    assert got["created_by_put"]["id"] == "my-own-id" and got["created_by_put"]["unit"] == "REQUESTS"
    assert got["deleted"] is None
    assert got["gone"]["status"] == 404 and got["delete_default"]["status"] == 404
    assert got["replace_default"]["status"] == 404
    assert got["bad_regex"]["status"] == 400 and got["duplicate_name"]["status"] == 400
    assert got["default"]["is_langfuse_managed"] is True and got["default"]["model_name"] == "gpt-4o-mini"
    expected = per_token("gpt-4o-mini", input_tokens=1_000_000, output_tokens=1_000_000)
    assert got["default"]["input_price"] * 1_000_000 == pytest.approx(float(expected.input_price))
    listed = got["list_page_1"]
    assert listed["meta"]["total_items"] == len(got["all_ids"]) == len(set(got["all_ids"]))
    assert {flat["id"], tiered["id"], "gp-openai-gpt-4o-mini"} <= set(got["all_ids"])


def test_the_default_tier_condition_counts_exactly_the_input_keys() -> None:
    from genai_prices.data_units import unit_data

    from tracehouse.pricing.defaults import INPUT_SUM_PATTERN, USAGE_KEYS

    pattern = re.compile(INPUT_SUM_PATTERN)
    for key, unit in USAGE_KEYS.items():
        is_input = unit_data[unit]["dimensions"]["direction"] == "input"
        assert bool(pattern.search(key)) == is_input, key
    assert len(INPUT_SUM_PATTERN) <= 200
