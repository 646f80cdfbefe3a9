"""Scores by id, score deletes and v3's parameters, through a running server and the real SDKs.

Scores go through the real pipeline (the batch ingestion API, and the current SDK's score batch
endpoint); each answer is parsed with the SDK's own type and compared with what was sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from conftest import prefixed, server_thread
from helpers import rows_of, start_ingestion, until
from test_sdk import sdk_dir
from test_sdk_types import V2, V5, sdk_parse
from tracehouse.clickhouse import Workload
from tracehouse.metadata import create_api_key, create_project
from tracehouse.queues import bullmq_connection


def at(minute: int, second: int = 0) -> str:
    return f"2026-12-02T08:{minute:02d}:{second:02d}.000Z"


TRACES: list[dict[str, Any]] = [
    {"id": "t-1", "name": "qa", "userId": "u-1", "sessionId": "sess-1", "tags": ["y", "x"], "environment": "prod"}
    | {"timestamp": at(0)},
    {"id": "t-2", "name": "chat", "userId": "u-2", "tags": ["y"], "environment": "dev", "timestamp": at(1)},
]
GENERATION = {"id": "o-1", "traceId": "t-1", "name": "llm", "startTime": at(0, 1), "environment": "prod"}
SCORES: list[dict[str, Any]] = [
    {"id": "n-1", "traceId": "t-1", "name": "accuracy", "value": 0.8, "comment": "fine", "configId": "cfg-a"}
    | {"environment": "prod", "metadata": {"run": "r"}},
    {"id": "n-2", "traceId": "t-1", "observationId": "o-1", "name": "accuracy", "value": 0.2, "queueId": "q-a"}
    | {"environment": "prod"},
    {"id": "n-3", "traceId": "t-2", "name": "accuracy", "value": 1.5, "configId": "cfg-b", "environment": "dev"},
    {"id": "b-1", "traceId": "t-2", "name": "safe", "value": 1, "dataType": "BOOLEAN", "source": "EVAL"}
    | {"environment": "dev"},
    {"id": "b-2", "traceId": "t-1", "name": "safe", "value": 0, "dataType": "BOOLEAN", "environment": "prod"},
    {"id": "c-1", "traceId": "t-1", "name": "tone", "value": "good", "dataType": "CATEGORICAL", "environment": "prod"},
    {"id": "c-2", "traceId": "t-2", "name": "tone", "value": "bad", "dataType": "CATEGORICAL", "environment": "dev"},
    {"id": "x-1", "traceId": "t-2", "name": "note", "value": "free text", "dataType": "TEXT", "environment": "dev"},
    {"id": "k-1", "traceId": "t-1", "name": "output", "value": "better output", "dataType": "CORRECTION"}
    | {"environment": "prod"},
    {"id": "ss-1", "sessionId": "sess-9", "name": "accuracy", "value": 0.4, "environment": "prod"},
    {"id": "r-1", "datasetRunId": "run-7", "name": "accuracy", "value": 0.6, "environment": "prod"},
]
BY_ID = {score["id"]: score for score in SCORES}
TRACE_OF = {trace["id"]: trace for trace in TRACES}


def kind(score: dict[str, Any]) -> str:
    return str(score.get("dataType", "NUMERIC"))


def batch() -> list[dict[str, Any]]:
    def event(kind: str, body: dict[str, Any], ts: str) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "timestamp": ts, "type": kind, "body": body}

    return (
        [event("trace-create", trace, trace["timestamp"]) for trace in TRACES]
        + [event("generation-create", GENERATION, GENERATION["startTime"])]
        + [event("score-create", score, at(5, index)) for index, score in enumerate(SCORES)]
    )


@dataclass(frozen=True)
class Project:
    project_id: str
    public_key: str
    secret_key: str
    headers: dict[str, str]


@dataclass(frozen=True)
class World:
    url: str
    main: Project
    other: Project  # a second project: deletes happen here, and its key must not reach `main`
    services: Any


def new_project(base_services: Any, name: str) -> Project:
    project = create_project(base_services.metadata, name, project_id=f"{name}-{secrets.token_hex(5)}")
    key = create_api_key(base_services.metadata, project.id, salt=base_services.settings.salt)
    token = base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()
    return Project(project.id, key.public_key, key.secret_key, {"Authorization": f"Basic {token}"})


@pytest.fixture(scope="module")
async def world(base_services: Any, redis_url: str) -> AsyncIterator[World]:
    prefix = f"thtest-scores-{secrets.token_hex(4)}"
    services, close = prefixed(base_services, prefix)
    main, other = new_project(base_services, "scores"), new_project(base_services, "scoresdel")
    runner = await start_ingestion(services)
    try:
        with server_thread(base_services, prefix) as url:
            async with httpx.AsyncClient(base_url=url, headers=main.headers, timeout=30) as client:
                response = await client.post("/api/public/ingestion", json={"batch": batch()})
            assert response.status_code == 207 and not response.json()["errors"], response.text

            async def stored() -> bool:
                return len(await rows_of(services, "scores", main.project_id)) == len(SCORES)

            await until(stored, timeout=60)
            yield World(url, main, other, services)
    finally:
        await runner.shutdown(10)
        await close()
        client_ = redis.Redis(**bullmq_connection(redis_url))
        if keys := list(client_.scan_iter(f"{prefix}:*", count=1000)):
            client_.delete(*keys)
        client_.close()


async def call(world: World, method: str, path: str, project: Project | None = None, **params: Any) -> httpx.Response:
    headers = (project or world.main).headers
    async with httpx.AsyncClient(base_url=world.url, headers=headers, timeout=30) as client:
        return await client.request(method, f"/api/public/{path}", params=params)


async def ids_of(world: World, path: str, **params: Any) -> list[str]:
    response = await call(world, "GET", path, **params)
    assert response.status_code == 200, response.text
    return sorted(item["id"] for item in response.json()["data"])


def want(test: Any) -> list[str]:
    return sorted(score["id"] for score in SCORES if test(score))


async def run_sdk(world: World, sdk: str, project: Project, script: str, *args: str, tmp_path: Path) -> Any:
    path = tmp_path / f"script_{sdk}_{uuid.uuid4().hex[:6]}.py"
    path.write_text(script)
    site = await asyncio.to_thread(sdk_dir, sdk)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site), "PK": project.public_key}
    env |= {"SK": project.secret_key, "BASE_URL": world.url, "OTEL_SDK_DISABLED": "false"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(path), *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


# --- by id --------------------------------------------------------------------------------------
def assert_same_score(parsed: dict[str, Any], sent: dict[str, Any]) -> None:
    """A score parsed by an SDK (python field names) against the score-create body sent."""
    expected_name = "output" if kind(sent) == "CORRECTION" else sent["name"]
    assert (parsed["id"], parsed["name"], parsed["data_type"], parsed["environment"]) == (
        sent["id"],
        expected_name,
        kind(sent),
        sent["environment"],
    )
    for field, key in (
        ("trace_id", "traceId"),
        ("observation_id", "observationId"),
        ("session_id", "sessionId"),
        ("dataset_run_id", "datasetRunId"),
        ("comment", "comment"),
        ("config_id", "configId"),
        ("queue_id", "queueId"),
    ):
        assert parsed.get(field) == sent.get(key), field
    assert parsed["source"] == sent.get("source", "API")
    if kind(sent) == "NUMERIC":
        assert parsed["value"] == sent["value"] and parsed.get("string_value") is None
    elif kind(sent) == "BOOLEAN":
        assert (parsed["value"], parsed["string_value"]) == (sent["value"], "True" if sent["value"] else "False")
    else:  # the label or text is the string value
        assert parsed["string_value"] == sent["value"]


def sent_trace(score: dict[str, Any]) -> dict[str, Any] | None:
    trace = TRACE_OF.get(score.get("traceId", ""))
    if trace is None:
        return None
    return {
        "userId": trace["userId"],
        "tags": sorted(trace["tags"]),
        "environment": trace["environment"],
        "sessionId": trace.get("sessionId"),
    }


@pytest.mark.slow
async def test_v2_score_by_id_is_the_score_with_its_trace(world: World) -> None:
    answers = {}
    for score in SCORES:
        response = await call(world, "GET", f"v2/scores/{score['id']}")
        assert response.status_code == 200, response.text
        answers[score["id"]] = response.json()
    parsed = await sdk_parse("v5", [(V5 + "commons.types.score.Score", body) for body in answers.values()])
    for score, body, score_parsed in zip(SCORES, answers.values(), parsed, strict=True):
        assert_same_score(score_parsed, score)
        assert body["trace"] == sent_trace(score), score["id"]
        assert ("value" in body) == (kind(score) != "TEXT")  # a TEXT score has no value
    assert answers["n-1"]["metadata"] == {"run": "r"}
    for missing in ("nope", "n-1/extra"):
        response = await call(world, "GET", f"v2/scores/{missing}")
        assert response.status_code == 404 and response.json()["error"] == "LangfuseNotFoundError"
    assert (await call(world, "GET", "v2/scores/n-1", project=world.other)).status_code == 404


@pytest.mark.slow
async def test_v1_score_by_id_serves_trace_scores_as_the_2x_sdk_reads_them(world: World, tmp_path: Path) -> None:
    listable = ["n-1", "n-2", "b-1", "c-2"]
    bodies = [(await call(world, "GET", f"scores/{score_id}")).json() for score_id in listable]
    parsed = await sdk_parse("v2", [(V2 + "commons.types.score.Score", body) for body in bodies])
    for score_id, score_parsed in zip(listable, parsed, strict=True):
        assert_same_score(score_parsed, BY_ID[score_id])
    # v1 is about trace scores: a session or dataset-run score, or a correction, is not found there.
    for score_id in ("ss-1", "r-1", "k-1", "nope"):
        assert (await call(world, "GET", f"scores/{score_id}")).status_code == 404, score_id
    ran = await run_sdk(world, "v2", world.main, SDK_2X_SCRIPT, tmp_path=tmp_path)
    assert_same_score(ran["by_id"], BY_ID["n-1"])
    on_trace = {"NUMERIC", "BOOLEAN", "CATEGORICAL"}
    assert ran["of_user"] == want(lambda s: s.get("traceId") == "t-1" and kind(s) in on_trace)
    assert ran["at_least"] == want(lambda s: kind(s) in ("NUMERIC", "BOOLEAN") and "traceId" in s and s["value"] >= 0.5)
    assert ran["tagged"] == want(lambda s: s.get("traceId") == "t-1" and kind(s) == "NUMERIC")
    assert ran["users"] == ["u-1"]  # the v1 list returns each score's trace, parsed by the 2.x type


SDK_2X_SCRIPT = r"""
import json, os
from langfuse import Langfuse

lf = Langfuse(public_key=os.environ["PK"], secret_key=os.environ["SK"], host=os.environ["BASE_URL"])
by_id = lf.client.score.get_by_id("n-1")
of_user = lf.client.score.get(user_id="u-1", limit=50).data
at_least = lf.client.score.get(operator=">=", value=0.5, limit=50).data
tagged = lf.client.score.get(trace_tags=["x"], data_type="NUMERIC", limit=50).data
fields = ("id", "name", "data_type", "environment", "trace_id", "observation_id", "comment", "config_id", "queue_id",
          "source", "value", "string_value")
print(json.dumps({
    "by_id": {f: getattr(by_id, f, None) for f in fields} | {"session_id": None, "dataset_run_id": None},
    "of_user": sorted(s.id for s in of_user if s.data_type != "TEXT"),
    "at_least": sorted(s.id for s in at_least),
    "tagged": sorted(s.id for s in tagged),
    "users": sorted({s.trace.user_id for s in of_user}),
}))
"""


# --- deletes ------------------------------------------------------------------------------------
SDK_V5_DELETE_SCRIPT = r"""
import json, os, sys
from langfuse import Langfuse
from langfuse.api.commons.errors.not_found_error import NotFoundError
from langfuse.api.scores.types.create_score_request import CreateScoreRequest

lf = Langfuse(public_key=os.environ["PK"], secret_key=os.environ["SK"], base_url=os.environ["BASE_URL"])
stage, ids = sys.argv[1], sys.argv[2:]
if stage == "create":
    all_good = lf.api.scores.create(request=[
        CreateScoreRequest(id=ids[0], name="del", value=0.5, session_id="sess-del", environment="sdk"),
        CreateScoreRequest(id=ids[1], name="del", value="yes", data_type="CATEGORICAL", trace_id="t-del"),
    ])
    partly = lf.api.scores.create(request=[
        CreateScoreRequest(id=ids[2], name="del", value=1, data_type="BOOLEAN", trace_id="t-del"),
        CreateScoreRequest(id="bad-" + ids[2], name="del", value=7, data_type="BOOLEAN", trace_id="t-del"),
    ])
    print(json.dumps({
        "all_good": [type(all_good).__name__, getattr(all_good, "message", None)],
        "partly": [type(partly).__name__, partly.accepted, partly.rejected, [e.message for e in partly.errors]],
    }))
else:
    lf.api.scores.delete(ids[0])
    try:
        lf.api.scores.delete(ids[0])
        again = "deleted twice"
    except NotFoundError:
        again = "404"
    print(json.dumps({"again": again}))
"""


async def _versions(world: World, score_id: str) -> list[dict[str, Any]]:
    return await world.services.clickhouse.query(
        "SELECT is_deleted, event_ts, value, name FROM scores WHERE project_id = {p:String} AND id = {id:String} "
        "ORDER BY event_ts",
        {"p": world.other.project_id, "id": score_id},
        workload=Workload.INTERACTIVE,
    )


@pytest.mark.slow
async def test_delete_writes_a_tombstone_and_the_score_is_gone(world: World, tmp_path: Path) -> None:
    ids = [f"del-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    created = await run_sdk(world, "v5", world.other, SDK_V5_DELETE_SCRIPT, "create", *ids, tmp_path=tmp_path)
    # The SDK reads both batch answers with its own types: 202 Accepted, and 207 with counts.
    assert created["all_good"] == ["CreateScoreBatchResponse", "Accepted"]
    assert created["partly"][:3] == ["CreateScoreBatchResults", 1, 1] and len(created["partly"][3]) == 1

    async def arrived() -> bool:
        return len(await rows_of(world.services, "scores", world.other.project_id)) >= 3

    await until(arrived, timeout=60)
    before = await _versions(world, ids[0])
    assert [(r["is_deleted"], r["value"], r["name"]) for r in before] == [(0, 0.5, "del")]

    # Another project's key can neither read nor delete it.
    assert (await call(world, "GET", f"v2/scores/{ids[0]}")).status_code == 404
    assert (await call(world, "DELETE", f"scores/{ids[0]}")).status_code == 404
    assert (await call(world, "GET", f"v2/scores/{ids[0]}", project=world.other)).status_code == 200

    deleted = await run_sdk(world, "v5", world.other, SDK_V5_DELETE_SCRIPT, "delete", ids[0], tmp_path=tmp_path)
    assert deleted == {"again": "404"}
    over_http = await call(world, "DELETE", f"scores/{ids[1]}", project=world.other)
    assert over_http.status_code == 200 and over_http.json() == {"message": "Score deleted successfully"}

    for score_id in ids[:2]:
        assert (await call(world, "GET", f"v2/scores/{score_id}", project=world.other)).status_code == 404
        assert (await call(world, "GET", f"scores/{score_id}", project=world.other)).status_code == 404
    listed = await call(world, "GET", "v3/scores", project=world.other, name="del")
    assert sorted(s["id"] for s in listed.json()["data"]) == [ids[2]]
    v2_listed = await call(world, "GET", "v2/scores", project=world.other)
    assert [s["id"] for s in v2_listed.json()["data"]] == [ids[2]]
    # The tombstone is a newer version of the whole row, so an export sees the delete. (A background
    # merge may already have dropped the older version, never the newest.)
    newest = (await _versions(world, ids[0]))[-1]
    assert (newest["is_deleted"], newest["value"], newest["name"]) == (1, 0.5, "del")
    assert newest["event_ts"] > before[0]["event_ts"]
    assert await rows_of(world.services, "scores", world.other.project_id, f"id = '{ids[0]}'") == []
    # The main project's scores are untouched.
    assert len(await rows_of(world.services, "scores", world.main.project_id)) == len(SCORES)
    assert (await call(world, "DELETE", "scores/never-was", project=world.other)).status_code == 404


# --- v3 parameters ------------------------------------------------------------------------------
NUMERIC_ONES = {"NUMERIC"}


@pytest.mark.parametrize(
    ("params", "test"),
    [
        ({"dataType": "NUMERIC", "value": "0.8,1.5"}, lambda s: kind(s) == "NUMERIC" and s["value"] in (0.8, 1.5)),
        ({"dataType": "boolean", "value": "true"}, lambda s: kind(s) == "BOOLEAN" and s["value"] == 1),
        ({"dataType": "BOOLEAN", "value": "false"}, lambda s: kind(s) == "BOOLEAN" and s["value"] == 0),
        ({"dataType": "CATEGORICAL", "value": "bad"}, lambda s: kind(s) == "CATEGORICAL" and s["value"] == "bad"),
        ({"dataType": "NUMERIC", "valueMin": "0.4"}, lambda s: kind(s) == "NUMERIC" and s["value"] >= 0.4),
        ({"dataType": "NUMERIC", "valueMax": "0.4"}, lambda s: kind(s) == "NUMERIC" and s["value"] <= 0.4),
        (
            {"dataType": "numeric", "valueMin": "0.3", "valueMax": "0.8"},
            lambda s: kind(s) == "NUMERIC" and 0.3 <= s["value"] <= 0.8,
        ),
        ({"configId": "cfg-a,cfg-b"}, lambda s: s.get("configId") in ("cfg-a", "cfg-b")),
        ({"queueId": "q-a"}, lambda s: s.get("queueId") == "q-a"),
        ({"authorUserId": "someone"}, lambda s: False),  # ingestion records no author
        ({"experimentId": "run-7"}, lambda s: s.get("datasetRunId") == "run-7"),
        ({"source": "eval"}, lambda s: s.get("source") == "EVAL"),
        ({"traceId": "t-1", "observationId": "o-1"}, lambda s: s.get("observationId") == "o-1"),
        ({"dataType": "text,correction"}, lambda s: kind(s) in ("TEXT", "CORRECTION")),
    ],
)
async def test_v3_filters(world: World, params: dict[str, Any], test: Any) -> None:
    assert await ids_of(world, "v3/scores", **params) == want(test)


async def test_v3_field_groups(world: World) -> None:
    core = (await call(world, "GET", "v3/scores", fields="core", id="n-1,n-2")).json()["data"]
    details = (await call(world, "GET", "v3/scores", fields="details", id="n-1")).json()["data"]
    rest = (await call(world, "GET", "v3/scores", fields="subject,annotation", id="n-2")).json()["data"]
    every = (await call(world, "GET", "v3/scores", id="n-2")).json()["data"]
    core_keys = {"id", "projectId", "name", "source", "timestamp", "environment", "createdAt", "updatedAt"}
    core_keys |= {"dataType", "value"}
    assert [set(s) for s in core] == [core_keys, core_keys]
    assert set(details[0]) == core_keys | {"comment", "configId", "metadata"}
    assert (details[0]["comment"], details[0]["configId"], details[0]["metadata"]) == ("fine", "cfg-a", {"run": "r"})
    assert set(rest[0]) == core_keys | {"subject", "authorUserId", "queueId"}
    assert rest[0]["subject"] == {"kind": "observation", "id": "o-1", "traceId": "t-1"}
    assert (rest[0]["queueId"], rest[0]["authorUserId"]) == ("q-a", None)
    assert set(every[0]) == core_keys | {"subject", "authorUserId", "queueId", "comment", "configId", "metadata"}
    parsed = await sdk_parse(
        "v5",
        [
            (V5 + "scores.types.get_scores_v3response.GetScoresV3Response", {"data": core, "meta": {"limit": 50}}),
            (V5 + "scores.types.get_scores_v3response.GetScoresV3Response", {"data": rest, "meta": {"limit": 50}}),
        ],
    )
    assert [(s["id"], s["value"], s["comment"], s["subject"]) for s in parsed[0]["data"]] == [
        ("n-2", 0.2, None, None),
        ("n-1", 0.8, None, None),
    ]
    assert parsed[1]["data"][0]["subject"] == {"kind": "observation", "id": "o-1", "trace_id": "t-1"}


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"value": "0.8"}, "value"),  # no dataType
        ({"value": "0.8", "dataType": "NUMERIC,BOOLEAN"}, "value"),
        ({"value": "good", "dataType": "TEXT"}, "value"),
        ({"value": "yes", "dataType": "BOOLEAN"}, "value"),
        ({"value": "abc", "dataType": "NUMERIC"}, "value"),
        ({"value": "inf", "dataType": "NUMERIC"}, "value"),
        ({"valueMin": "0.1"}, "valueMin"),
        ({"valueMax": "0.1", "dataType": "CATEGORICAL"}, "valueMax"),
        ({"valueMin": "nan", "dataType": "NUMERIC"}, "valueMin"),
        ({"observationId": "o-1"}, "observationId"),
        ({"traceId": "t-1", "sessionId": "sess-1"}, "sessionId"),
        ({"sessionId": "sess-1", "experimentId": "run-7"}, "experimentId"),
        ({"userId": "u-1"}, "userId"),
        ({"traceTags": "x"}, "traceTags"),
        ({"limit": "101"}, "limit"),
        ({"fields": "core,details,bogus"}, "fields"),
        ({"dataType": "NUMBER"}, "dataType"),
        ({"source": "HUMAN"}, "source"),
    ],
)
async def test_v3_parameters_that_do_not_fit_answer_400(world: World, params: dict[str, Any], parameter: str) -> None:
    response = await call(world, "GET", "v3/scores", **params)
    assert response.status_code == 400 and response.json()["parameter"] == parameter, response.text
