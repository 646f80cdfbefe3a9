"""Every read route's answer parses as the real Langfuse SDKs' own pydantic types (current and 2.x),
and what the SDK reads back is what was ingested. So do ingestion's 207 body, health, trace deletes
and the blob-storage integration, as far as an SDK has a type for them.

The SDKs are not importable here (their dependencies clash with ours): `tests/sdk/parse_types.py`
parses in a subprocess on the SDK's own site dir and answers the parsed values by python field name.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from helpers import rows_of, start_ingestion, until
from test_sdk import sdk_dir
from tracehouse import __version__
from tracehouse.export.integrations import delete_integration
from tracehouse.web.app import create_app

pytestmark = pytest.mark.slow  # SDK subprocesses (and their install on first use)

PARSE = Path(__file__).with_name("sdk") / "parse_types.py"
V5 = "langfuse.api."  # the current SDK's types
V2 = "langfuse.api.resources."  # the 2.x SDK's types
ALL_V2_GROUPS = "core,basic,time,io,metadata,model,usage,prompt,metrics"


def at(minute: int, second: int = 0) -> str:
    return f"2026-11-03T09:{minute:02d}:{second:02d}.000Z"


def moment(value: str) -> datetime:
    """An SDK-parsed time (`str(datetime)`) or one of ours, as an aware datetime."""
    return datetime.fromisoformat(value).astimezone(UTC)


MAIN_TRACE: dict[str, Any] = {
    "id": "t-main",
    "name": "qa",
    "userId": "user-7",
    "sessionId": "sess-a",
    "tags": ["x", "y"],
    "environment": "staging",
    "release": "1.2",
    "version": "v3",
    "public": True,
    "timestamp": at(1),
    "input": {"question": "2+2?"},
    "output": {"answer": 4},
    "metadata": {"customer": "acme", "n": 3},
}
GENERATION: dict[str, Any] = {
    "id": "o-gen",
    "traceId": "t-main",
    "parentObservationId": "o-root",
    "name": "llm",
    "model": "gpt-4o-mini",
    "modelParameters": {"temperature": 0.1, "max_tokens": 100},
    "startTime": at(1, 1),
    "endTime": at(1, 4),
    "completionStartTime": at(1, 2),
    "level": "WARNING",
    "statusMessage": "slow",
    "version": "g1",
    "environment": "staging",
    "usageDetails": {"input": 12, "output": 3},
    "costDetails": {"input": 0.001, "output": 0.0008},
    "promptName": "p",
    "promptVersion": 2,
    "input": [{"role": "user", "content": "2+2?"}],
    "output": "The answer is 4",
}


def _event(kind: str, body: dict[str, Any], ts: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "timestamp": ts, "type": kind, "body": body}


def _batch() -> list[dict[str, Any]]:
    """Two traces; observations of five kinds; scores of every data type and subject (one on a trace
    that was never sent)."""
    staging = {"environment": "staging"}
    return [
        _event("trace-create", MAIN_TRACE, at(1)),
        _event(
            "span-create",
            {"id": "o-root", "traceId": "t-main", "name": "handle", "startTime": at(1), "endTime": at(1, 9)}
            | {"input": "raw in", "metadata": {"a": [1, 2]}}
            | staging,
            at(1),
        ),
        _event("generation-create", GENERATION, at(1, 1)),
        _event(
            "event-create",
            {"id": "o-event", "traceId": "t-main", "parentObservationId": "o-root", "startTime": at(1, 3)} | staging,
            at(1, 3),
        ),
        _event(
            "tool-create",
            {"id": "o-tool", "traceId": "t-main", "parentObservationId": "o-root", "name": "calc"}
            | {"startTime": at(1, 5), "endTime": at(1, 6)}
            | staging,
            at(1, 5),
        ),
        _event("trace-create", {"id": "t-other", "name": "other", "userId": "user-8", "timestamp": at(2)}, at(2)),
        _event("span-create", {"id": "o-other", "traceId": "t-other", "startTime": at(2)}, at(2)),
        _event(
            "score-create",
            {"id": "s-num", "traceId": "t-main", "name": "correct", "value": 1, "comment": "checked"} | staging,
            at(1, 10),
        ),
        _event(
            "score-create",
            {"id": "s-cat", "traceId": "t-main", "observationId": "o-gen", "name": "tone", "value": "friendly"}
            | {"dataType": "CATEGORICAL"}
            | staging,
            at(1, 11),
        ),
        _event(
            "score-create",
            {"id": "s-bool", "traceId": "t-main", "name": "safe", "value": 1, "dataType": "BOOLEAN", "source": "EVAL"}
            | staging,
            at(1, 12),
        ),
        _event(
            "score-create",
            {"id": "s-text", "traceId": "t-other", "name": "note", "value": "fine", "dataType": "TEXT"},
            at(2, 1),
        ),
        _event(
            "score-create",
            {"id": "s-corr", "traceId": "t-other", "name": "output", "value": "better", "dataType": "CORRECTION"},
            at(2, 2),
        ),
        _event("score-create", {"id": "s-sess", "sessionId": "sess-a", "name": "rating", "value": 0.5}, at(2, 3)),
        _event("score-create", {"id": "s-run", "datasetRunId": "run-1", "name": "run", "value": 0.25}, at(2, 4)),
        _event("score-create", {"id": "s-orphan", "traceId": "t-gone", "name": "orphan", "value": 2}, at(2, 5)),
    ]


@dataclass(frozen=True)
class Loaded:
    app: FastAPI
    headers: dict[str, str]
    project_id: str
    sent: list[dict[str, Any]]
    ingestion_answer: Any  # the 207 body


async def _all_stored(services: Any, project_id: str, sent: list[dict[str, Any]]) -> bool:
    """Every entity sent is in ClickHouse (each was sent in one event)."""
    kinds = [event["type"] for event in sent]
    wanted = {"traces": kinds.count("trace-create"), "scores": kinds.count("score-create")}
    wanted["observations"] = len(kinds) - wanted["traces"] - wanted["scores"]
    stored = {table: len(await rows_of(services, table, project_id)) for table in wanted}
    return stored == wanted


@pytest.fixture
async def loaded(services: Any, project: tuple[str, dict[str, str]]) -> Loaded:
    project_id, headers = project
    app = create_app(services)
    sent = _batch()
    runner = await start_ingestion(services)
    try:
        async with _client(app) as client:
            response = await client.post("/api/public/ingestion", headers=headers, json={"batch": sent})
        assert response.status_code == 207 and not response.json()["errors"], response.text
        await until(lambda: _all_stored(services, project_id, sent))
    finally:
        await runner.shutdown(10)
    return Loaded(app, headers, project_id, sent, response.json())


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def _call(loaded: Loaded, method: str, path: str, *, json_body: Any = None, **params: Any) -> Any:
    async with _client(loaded.app) as client:
        response = await client.request(method, path, headers=loaded.headers, params=params, json=json_body)
    assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


async def sdk_parse(sdk: str, items: list[tuple[str, Any]]) -> list[Any]:
    """Parse each (SDK type, body) with that SDK; fail on any validation error; the parsed values."""
    site = await asyncio.to_thread(sdk_dir, sdk)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PARSE),
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    payload = json.dumps([{"type": kind, "body": body} for kind, body in items]).encode()
    out, err = await asyncio.wait_for(proc.communicate(payload), 120)
    assert proc.returncode == 0, err.decode()[-3000:]
    results = json.loads(out.decode().strip().splitlines()[-1])
    failures = [f"{r['type']}: {r['error']}" for r in results if not r["ok"]]
    assert not failures, f"{sdk} SDK:\n" + "\n\n".join(failures)
    return [r["parsed"] for r in results]


def by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in items}


async def get(loaded: Loaded, path: str, **params: Any) -> Any:
    return await _call(loaded, "GET", f"/api/public/{path}", **params)


# Python field name (as the SDKs parse it) -> the ingested body's key.
TRACE_KEYS = {
    "id": "id",
    "name": "name",
    "user_id": "userId",
    "session_id": "sessionId",
    "tags": "tags",
    "environment": "environment",
    "release": "release",
    "version": "version",
    "public": "public",
    "input": "input",
    "output": "output",
    "metadata": "metadata",
}
GENERATION_KEYS = {
    "id": "id",
    "trace_id": "traceId",
    "parent_observation_id": "parentObservationId",
    "name": "name",
    "model": "model",
    "level": "level",
    "status_message": "statusMessage",
    "version": "version",
    "environment": "environment",
    "input": "input",
    "output": "output",
    "prompt_name": "promptName",
    "prompt_version": "promptVersion",
}


def assert_main_trace(parsed: dict[str, Any]) -> None:
    assert {field: parsed[field] for field in TRACE_KEYS} == {
        field: MAIN_TRACE[key] for field, key in TRACE_KEYS.items()
    }
    assert moment(parsed["timestamp"]) == moment(at(1))


def assert_generation(parsed: dict[str, Any]) -> None:
    """A 2.x ObservationsView of the generation."""
    assert {f: parsed[f] for f in GENERATION_KEYS} == {f: GENERATION[key] for f, key in GENERATION_KEYS.items()}
    assert parsed["type"] == "GENERATION"
    assert [moment(parsed[f]) for f in ("start_time", "end_time", "completion_start_time")] == [
        moment(GENERATION[key]) for key in ("startTime", "endTime", "completionStartTime")
    ]
    assert parsed["usage_details"] == {"input": 12, "output": 3, "total": 15}
    # Sent costs are kept as sent, and Langfuse adds their total.
    assert parsed["cost_details"] == pytest.approx({**GENERATION["costDetails"], "total": 0.0018})
    assert (parsed["usage"]["input"], parsed["usage"]["output"], parsed["usage"]["total"]) == (12, 3, 15)
    assert (parsed["latency"], parsed["time_to_first_token"]) == (3.0, 1.0)
    assert parsed["calculated_total_cost"] == pytest.approx(0.0018)
    # The 2.x type reads model parameters as str | int | bool | list (0.1 becomes "0.1").
    assert parsed["model_parameters"]["max_tokens"] == 100


async def test_traces_observations_and_sessions_parse_as_the_sdk_types(loaded: Loaded) -> None:
    traces, trace, observations, generation, sessions, session = await sdk_parse(
        "v2",
        [
            (V2 + "trace.types.traces.Traces", await get(loaded, "traces")),
            (V2 + "commons.types.trace_with_full_details.TraceWithFullDetails", await get(loaded, "traces/t-main")),
            (V2 + "observations.types.observations_views.ObservationsViews", await get(loaded, "observations")),
            (V2 + "commons.types.observations_view.ObservationsView", await get(loaded, "observations/o-gen")),
            (V2 + "sessions.types.paginated_sessions.PaginatedSessions", await get(loaded, "sessions")),
            (V2 + "commons.types.session_with_traces.SessionWithTraces", await get(loaded, "sessions/sess-a")),
        ],
    )
    v2_response = V5 + "observations.types.observations_v2response.ObservationsV2Response"
    every_group, first_page = await sdk_parse(
        "v5",
        [
            (v2_response, await get(loaded, "v2/observations", fields=ALL_V2_GROUPS)),
            (v2_response, await get(loaded, "v2/observations", limit=2)),
        ],
    )

    listed = by_id(traces["data"])
    assert set(listed) == {"t-main", "t-other"} and traces["meta"]["total_items"] == 2
    for parsed in (listed["t-main"], trace, session["traces"][0]):
        assert_main_trace(parsed)
    assert sorted(listed["t-main"]["observations"]) == ["o-event", "o-gen", "o-root", "o-tool"]
    assert sorted(listed["t-main"]["scores"]) == ["s-bool", "s-cat", "s-num"]
    assert (listed["t-main"]["latency"], listed["t-main"]["total_cost"]) == (9.0, pytest.approx(0.0018))
    assert {o["id"]: o["type"] for o in trace["observations"]} == {
        "o-root": "SPAN",
        "o-gen": "GENERATION",
        "o-event": "EVENT",
        "o-tool": "TOOL",
    }
    assert_generation(by_id(trace["observations"])["o-gen"])
    assert_generation(generation)
    assert {s["id"]: (s["data_type"], s["value"]) for s in trace["scores"]} == {
        "s-num": ("NUMERIC", 1.0),
        "s-cat": ("CATEGORICAL", 0.0),
        "s-bool": ("BOOLEAN", 1.0),
    }
    assert set(by_id(observations["data"])) == {"o-root", "o-gen", "o-event", "o-tool", "o-other"}

    assert [(s["id"], s["environment"]) for s in sessions["data"]] == [("sess-a", "staging")]
    assert moment(sessions["data"][0]["created_at"]) == moment(at(1))
    assert (session["id"], [t["id"] for t in session["traces"]]) == ("sess-a", ["t-main"])

    gen, root = by_id(every_group["data"])["o-gen"], by_id(every_group["data"])["o-root"]
    assert (gen["is_root_observation"], root["is_root_observation"]) == (False, True)
    assert (gen["model"], gen["model_parameters"]) == (GENERATION["model"], GENERATION["modelParameters"])
    assert json.loads(gen["input"]) == GENERATION["input"]  # v2's io is the stored text
    assert (gen["usage_details"], gen["total_cost"]) == ({"input": 12, "output": 3, "total": 15}, pytest.approx(0.0018))
    assert (gen["prompt_name"], gen["prompt_version"], gen["level"]) == ("p", 2, "WARNING")
    assert (gen["latency"], gen["time_to_first_token"]) == (3.0, 1.0)
    assert root["metadata"] == {"a": [1, 2]} and moment(root["end_time"]) == moment(at(1, 9))
    # Default groups (core, basic), newest first, a cursor to the next page.
    assert [(o["id"], o["name"], o["usage_details"]) for o in first_page["data"]] == [
        ("o-other", None, None),
        ("o-tool", "calc", None),
    ]
    assert first_page["meta"]["cursor"]


async def test_scores_of_every_type_and_subject_parse_as_the_sdk_types(loaded: Loaded) -> None:
    v1, v2 = (await get(loaded, "scores"))["data"], (await get(loaded, "v2/scores"))["data"]
    on_traces = (await get(loaded, "traces/t-main"))["scores"] + (await get(loaded, "traces/t-other"))["scores"]
    # The 2.x score union predates TEXT and CORRECTION scores; those are checked with the current SDK.
    of_main, numeric = await sdk_parse(
        "v2",
        [
            (V2 + "score.types.get_scores_response.GetScoresResponse", await get(loaded, "scores", traceId="t-main")),
            (V2 + "score.types.get_scores_response.GetScoresResponse", await get(loaded, "scores", dataType="NUMERIC")),
        ],
    )
    v3, *scores = await sdk_parse(
        "v5",
        [
            (V5 + "scores.types.get_scores_v3response.GetScoresV3Response", await get(loaded, "v3/scores")),
            *[(V5 + "commons.types.score.Score", score) for score in v1 + v2 + on_traces],
        ],
    )

    assert {s["id"] for s in of_main["data"]} == {"s-num", "s-cat", "s-bool"}
    for score in of_main["data"]:
        assert (score["trace"]["user_id"], score["trace"]["tags"], score["trace"]["environment"]) == (
            "user-7",
            ["x", "y"],
            "staging",
        )
    numbers = by_id(numeric["data"])
    assert set(numbers) == {"s-num", "s-orphan"}
    assert (numbers["s-num"]["value"], numbers["s-num"]["comment"], numbers["s-num"]["trace_id"]) == (
        1.0,
        "checked",
        "t-main",
    )
    assert numbers["s-orphan"]["trace"]["user_id"] is None  # its trace was never sent

    assert {s["id"] for s in scores[: len(v1)]} == {"s-num", "s-cat", "s-bool", "s-text", "s-orphan"}
    assert {s["id"] for s in scores[len(v1) : len(v1) + len(v2)]} == {
        "s-num",
        "s-cat",
        "s-bool",
        "s-text",
        "s-orphan",
        "s-sess",
        "s-run",
    }
    every = by_id(scores)
    assert (every["s-text"]["data_type"], every["s-text"]["string_value"]) == ("TEXT", "fine")
    assert "value" not in every["s-text"]  # the current SDK's TEXT score has no value
    assert (every["s-corr"]["data_type"], every["s-corr"]["string_value"]) == ("CORRECTION", "better")
    assert (every["s-cat"]["string_value"], every["s-cat"]["observation_id"]) == ("friendly", "o-gen")
    assert (every["s-bool"]["value"], every["s-bool"]["string_value"], every["s-bool"]["source"]) == (
        1.0,
        "True",
        "EVAL",
    )
    assert (every["s-sess"]["session_id"], every["s-sess"]["trace_id"], every["s-sess"]["value"]) == (
        "sess-a",
        None,
        0.5,
    )
    assert (every["s-run"]["dataset_run_id"], every["s-num"]["environment"]) == ("run-1", "staging")

    typed = by_id(v3["data"])
    assert {i: s["value"] for i, s in typed.items()} == {
        "s-num": 1.0,
        "s-cat": "friendly",
        "s-bool": True,
        "s-text": "fine",
        "s-corr": "better",
        "s-sess": 0.5,
        "s-run": 0.25,
        "s-orphan": 2.0,
    }
    assert typed["s-cat"]["subject"] == {"kind": "observation", "id": "o-gen", "trace_id": "t-main"}
    assert typed["s-num"]["subject"] == {"kind": "trace", "id": "t-main"}
    assert typed["s-sess"]["subject"] == {"kind": "session", "id": "sess-a"}
    assert typed["s-run"]["subject"] is None
    assert (v3["meta"]["limit"], v3["meta"]["cursor"]) == (50, None)


async def test_projects_health_ingestion_deletes_and_integrations_parse_as_the_sdk_types(
    loaded: Loaded, services: Any
) -> None:
    projects = await get(loaded, "projects")
    health = await get(loaded, "health")
    deleted_one = await _call(loaded, "DELETE", "/api/public/traces/t-other")
    deleted_many = await _call(loaded, "DELETE", "/api/public/traces", json_body={"traceIds": ["t-main"]})
    integration = {
        "projectId": loaded.project_id,
        "type": "S3",
        "bucketName": "exports",
        "region": "us-east-1",
        "prefix": "langfuse/",
        "exportFrequency": "daily",
        "fileType": "JSONL",
        "exportMode": "FULL_HISTORY",
    }
    try:
        saved = await _call(loaded, "PUT", "/api/public/integrations/blob-storage", json_body=integration)
        integrations = await get(loaded, "integrations/blob-storage")
    finally:  # later modules share the metadata database; leave no integration behind
        await asyncio.to_thread(delete_integration, services.metadata, loaded.project_id)
    v2_projects, v2_health, ingested, v2_deleted_one, v2_deleted_many = await sdk_parse(
        "v2",
        [
            (V2 + "projects.types.projects.Projects", projects),
            (V2 + "health.types.health_response.HealthResponse", health),
            (V2 + "ingestion.types.ingestion_response.IngestionResponse", loaded.ingestion_answer),
            (V2 + "trace.types.delete_trace_response.DeleteTraceResponse", deleted_one),
            (V2 + "trace.types.delete_trace_response.DeleteTraceResponse", deleted_many),
        ],
    )
    v5_projects, v5_health, v5_deleted_one, v5_deleted_many, v5_saved, v5_integrations = await sdk_parse(
        "v5",
        [
            (V5 + "projects.types.projects.Projects", projects),
            (V5 + "health.types.health_response.HealthResponse", health),
            (V5 + "trace.types.delete_trace_response.DeleteTraceResponse", deleted_one),
            (V5 + "trace.types.delete_trace_response.DeleteTraceResponse", deleted_many),
            (
                V5 + "blob_storage_integrations.types.blob_storage_integration_response.BlobStorageIntegrationResponse",
                saved,
            ),
            (
                V5
                + "blob_storage_integrations.types.blob_storage_integrations_response.BlobStorageIntegrationsResponse",
                integrations,
            ),
        ],
    )

    for parsed in (v2_projects, v5_projects):
        assert [(p["id"], p["name"]) for p in parsed["data"]] == [(loaded.project_id, "test")]
    assert (v5_projects["data"][0]["organization"]["id"], v5_projects["data"][0]["retention_days"]) == ("default", None)
    for parsed in (v2_health, v5_health):
        assert (parsed["status"], parsed["version"]) == ("OK", __version__)
    assert {s["id"] for s in ingested["successes"]} == {event["id"] for event in loaded.sent}
    assert {s["status"] for s in ingested["successes"]} == {201} and ingested["errors"] == []
    for one, many in ((v2_deleted_one, v2_deleted_many), (v5_deleted_one, v5_deleted_many)):
        assert (one["message"], many["message"]) == ("Trace deleted successfully", "Traces deleted successfully")
    assert (v5_saved["project_id"], v5_saved["type"], v5_saved["bucket_name"], v5_saved["file_type"]) == (
        loaded.project_id,
        "S3",
        "exports",
        "JSONL",
    )
    assert (v5_saved["export_frequency"], v5_saved["prefix"], v5_saved["access_key_id"]) == ("daily", "langfuse/", None)
    assert [i["project_id"] for i in v5_integrations["data"]] == [loaded.project_id]
