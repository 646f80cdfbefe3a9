"""Computed costs end to end: the real SDKs send generations with usage and no cost to a live
tracehouse (HTTP on loopback, the real workers), the stored rows carry the cost genai-prices itself
computes for that usage, the model id and `total`; sent costs are kept; an export carries them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest

from conftest import free_port
from export_helpers import BOX, Clock, exported_rows, job, make_integration, run_until_idle
from test_sdk import sdk_dir
from tracehouse.clickhouse import Workload
from tracehouse.export import state
from tracehouse.export.destination import destination_store
from tracehouse.metadata import create_api_key, create_project
from tracehouse.pricing.api import router
from tracehouse.pricing.models import CreateModelRequest
from tracehouse.pricing.service import pricing_service
from tracehouse.runtime import migrate, open_services
from tracehouse.settings import WorkerRole
from tracehouse.web.app import create_app
from tracehouse.workers import start_workers

pytestmark = pytest.mark.slow  # SDK subprocesses and a live server

MODEL = "gpt-4o-mini"
TWELVE = Decimal("0.000000000001")


def q12(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(TWELVE)


def expected_costs(input_tokens: int, output_tokens: int) -> dict[str, Decimal]:
    """genai-prices' own calculation for this usage, the reference the stored row must equal."""
    price = genai_prices.calc_price(genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens), MODEL)
    return {"input": q12(price.input_price), "output": q12(price.output_price), "total": q12(price.total_price)}


@pytest.fixture(scope="module")
async def live(settings: Any) -> Any:
    from tracehouse.web.server import build_server

    services = await open_services(settings.model_copy(update={"redis_key_prefix": f"thtest-price-{os.getpid()}"}))
    await migrate(services)
    project = create_project(services.metadata, "pricing", project_id=f"price-{os.getpid()}-{int(time.time())}")
    key = create_api_key(services.metadata, project.id, salt=services.settings.salt)

    @asynccontextmanager
    async def workers(_app: Any) -> Any:
        runner = await start_workers(services, WorkerRole.INGESTION, crons=[])
        try:
            yield
        finally:
            await runner.shutdown(10)

    app = create_app(services, background=workers)
    app.include_router(router)
    port = free_port()
    server = build_server(app, services.settings, host="127.0.0.1", port=port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield (
        {"url": f"http://127.0.0.1:{port}", "project": project.id, "pk": key.public_key, "sk": key.secret_key},
        services,
    )
    server.should_exit = True
    await task
    await services.close()


async def run_sdk(live: Any, sdk: str, script: str, *args: str) -> dict[str, Any]:
    info, _ = live
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("sdk") / script),
        *args,
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(await asyncio.to_thread(sdk_dir, sdk)),
            "PK": info["pk"],
            "SK": info["sk"],
            "BASE_URL": info["url"],
            "OTEL_SDK_DISABLED": "false",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-3000:]
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def stored(live: Any, ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
    info, services = live
    deadline = time.monotonic() + timeout
    while True:
        rows = await services.clickhouse.query(
            "SELECT * FROM observations FINAL WHERE project_id = {p:String} AND id IN {ids:Array(String)}",
            {"p": info["project"], "ids": ids},
            workload=Workload.INTERACTIVE,
        )
        found = {r["id"]: r for r in rows}
        if set(found) == set(ids) or time.monotonic() > deadline:
            assert set(found) == set(ids), f"rows missing: {set(ids) - set(found)}"
            return found
        await asyncio.sleep(0.2)


def assert_inferred(row: dict[str, Any], input_tokens: int, output_tokens: int) -> None:
    want = expected_costs(input_tokens, output_tokens)
    assert dict(row["usage_details"]) == {
        "input": input_tokens,
        "output": output_tokens,
        "total": input_tokens + output_tokens,
    }
    assert dict(row["cost_details"]) == want
    assert q12(row["total_cost"]) == want["total"]
    assert dict(row["provided_cost_details"]) == {}
    assert (row["internal_model_id"], row["usage_pricing_tier_name"]) == ("gp-openai-gpt-4o-mini", "Standard")
    assert row["usage_pricing_tier_id"] == "gp-openai-gpt-4o-mini_tier_default"


async def test_current_sdk_generation_without_cost_gets_the_default_price(live: Any) -> None:
    sent = await run_sdk(live, "v5", "pricing_v5.py", "send", MODEL)
    rows = await stored(live, [sent["inferred"], sent["sent"]])
    assert_inferred(rows[sent["inferred"]], 1234, 567)
    given = rows[sent["sent"]]
    assert dict(given["provided_cost_details"]) == {"input": q12(0.5), "output": q12(0.25)}
    assert dict(given["cost_details"]) == {"input": q12(0.5), "output": q12(0.25), "total": q12(0.75)}
    assert q12(given["total_cost"]) == q12(0.75)
    assert given["internal_model_id"] == "gp-openai-gpt-4o-mini"  # the model is known even when costs were sent

    # What the read side will show for it: the default's prices per token, as genai-prices has them.
    info, services = live
    prices = await pricing_service(services.metadata).prices_for(info["project"], ["gp-openai-gpt-4o-mini"])
    per_million = genai_prices.calc_price(genai_prices.Usage(input_tokens=10**6, output_tokens=10**6), MODEL)
    model_prices = prices["gp-openai-gpt-4o-mini"]
    assert (model_prices.input_price, model_prices.output_price) == (
        per_million.input_price / 10**6,
        per_million.output_price / 10**6,
    )


async def test_legacy_sdk_generation_without_cost_gets_the_default_price(live: Any) -> None:
    sent = await run_sdk(live, "v2", "pricing_v2.py", MODEL)
    rows = await stored(live, [sent["inferred"], sent["sent"]])
    assert_inferred(rows[sent["inferred"]], 4321, 765)
    given = rows[sent["sent"]]  # only an input cost sent: kept, and it is the total; nothing inferred
    assert dict(given["cost_details"]) == {"input": q12(0.125), "total": q12(0.125)}
    assert dict(given["provided_cost_details"]) == {"input": q12(0.125)}


async def test_a_project_model_prices_later_generations(live: Any) -> None:
    info, services = live
    created = await pricing_service(services.metadata).create_model(
        info["project"],
        CreateModelRequest.model_validate(
            {
                "modelName": "house-mini",
                "matchPattern": "(?i)^house-mini$",
                "unit": "TOKENS",
                "inputPrice": 1e-5,
                "outputPrice": 2e-5,
            }
        ),
    )
    sent = await run_sdk(live, "v5", "pricing_v5.py", "send", "House-Mini")
    row = (await stored(live, [sent["inferred"]]))[sent["inferred"]]
    assert row["internal_model_id"] == created.id
    assert dict(row["cost_details"]) == {
        "input": q12(1234 * 1e-5),
        "output": q12(567 * 2e-5),
        "total": q12(1234 * 1e-5 + 567 * 2e-5),
    }


async def test_an_export_carries_the_computed_cost(live: Any) -> None:
    info, services = live
    sent = await run_sdk(live, "v5", "pricing_v5.py", "send", MODEL)
    await stored(live, [sent["inferred"]])
    make_integration(services.metadata, info["project"])
    clock = Clock(datetime.now(UTC) + timedelta(hours=2))  # windows are whole hours, ending behind the clock
    await run_until_idle(job(services, clock), info["project"])
    integration = state.load_integration(services.metadata, BOX, info["project"])
    assert integration is not None
    exported = await exported_rows(destination_store(integration, services.settings.data_dir), info["project"])
    row = next(r for r in exported["observations"] if r["id"] == sent["inferred"])
    want = expected_costs(1234, 567)
    assert {k: q12(v) for k, v in row["cost_details"]} == want  # Parquet maps read back as (key, value) pairs
    assert q12(row["total_cost"]) == want["total"]
    assert row["provided_model_name"] == MODEL  # the export's columns (Langfuse's list) have no model id
