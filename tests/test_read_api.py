"""The public read API over data that went through the real ingestion pipeline."""

import base64
import dataclasses
import json
import uuid
from typing import Any

import httpx
import pytest

from helpers import rows_of, start_ingestion, until
from tracehouse.clickhouse import ClickHouse, Workload, WorkloadSettings
from tracehouse.web.app import create_app


def ev(kind, body, ts="2026-11-01T12:00:00.000Z"):
    return {"id": str(uuid.uuid4()), "timestamp": ts, "type": kind, "body": body}


def t(minute, second=0):
    return f"2026-11-01T12:{minute:02d}:{second:02d}.000Z"


@pytest.fixture
async def loaded(services, project):
    """Project A with 5 traces (observations, scores, sessions), project B with one trace."""
    project_id, headers = project
    other = dataclasses.replace
    batch = []
    for i in range(5):
        trace_id = f"tr-{i}"
        batch += [
            ev(
                "trace-create",
                {
                    "id": trace_id,
                    "name": "chat" if i % 2 == 0 else "search",
                    "userId": f"u{i % 2}",
                    "sessionId": f"sess-{i % 3}",
                    "tags": ["a", "b"] if i < 3 else ["a"],
                    "environment": "prod" if i != 4 else "dev",
                    "release": "r1",
                    "version": f"v{i}",
                    "timestamp": t(i),
                    "input": {"q": i},
                    "output": "ok",
                    "metadata": {"k": "v"},
                },
                t(i),
            ),
            ev(
                "span-create",
                {"id": f"sp-{i}", "traceId": trace_id, "name": "root", "startTime": t(i), "endTime": t(i, 2)},
                t(i),
            ),
            ev(
                "generation-create",
                {
                    "id": f"gen-{i}",
                    "traceId": trace_id,
                    "parentObservationId": f"sp-{i}",
                    "name": "llm",
                    "model": "gpt-4o",
                    "startTime": t(i, 1),
                    "endTime": t(i, 5),
                    "completionStartTime": t(i, 2),
                    "level": "ERROR" if i == 1 else "DEFAULT",
                    "usageDetails": {"input": 10, "output": 5},
                    "costDetails": {"input": 0.01, "output": 0.02},
                },
                t(i, 1),
            ),
            ev("score-create", {"id": f"sc-{i}", "traceId": trace_id, "name": "quality", "value": i / 10}, t(i, 6)),
        ]
    batch.append(
        ev(
            "score-create",
            {"id": "sc-text", "traceId": "tr-0", "name": "note", "value": "fine", "dataType": "TEXT"},
            t(0, 7),
        )
    )
    app = create_app(services)
    runner = await start_ingestion(services)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            response = await client.post("/api/public/ingestion", headers=headers, json={"batch": batch})
            assert response.status_code == 207 and not response.json()["errors"]
        await until(lambda: _count(services, "scores", project_id, 6))
        await until(lambda: _count(services, "observations", project_id, 10))
    finally:
        await runner.shutdown(10)
    del other
    return project_id, headers, app


async def _count(services, table, project_id, n):
    return len(await rows_of(services, table, project_id)) >= n


async def _get(app, headers, path, **params):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.get(path, headers=headers, params=params)


async def test_traces_list_filters_order_and_pages(loaded):
    _, headers, app = loaded
    everything = (await _get(app, headers, "/api/public/traces")).json()
    assert [d["id"] for d in everything["data"]] == ["tr-4", "tr-3", "tr-2", "tr-1", "tr-0"]
    assert everything["meta"] == {"page": 1, "limit": 50, "totalItems": 5, "totalPages": 1}
    first = everything["data"][-1]
    assert first["input"] == {"q": 0} and first["output"] == "ok" and first["metadata"] == {"k": "v"}
    assert first["observations"] and sorted(first["observations"]) == ["gen-0", "sp-0"]
    assert sorted(first["scores"]) == ["sc-0", "sc-text"]
    assert first["latency"] == 5.0 and first["totalCost"] == pytest.approx(0.03)
    assert first["timestamp"] == "2026-11-01T12:00:00.000Z" and first["externalId"] is None

    async def ids(**params):
        response = await _get(app, headers, "/api/public/traces", **params)
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["data"]]

    assert await ids(userId="u1") == ["tr-3", "tr-1"]
    assert await ids(name="search") == ["tr-3", "tr-1"]
    assert await ids(sessionId="sess-0") == ["tr-3", "tr-0"]
    assert await ids(tags=["a", "b"]) == ["tr-2", "tr-1", "tr-0"]
    assert await ids(tags="a,b") == ["tr-2", "tr-1", "tr-0"]
    assert await ids(environment="dev") == ["tr-4"]
    assert await ids(environment=["dev", "prod"]) == ["tr-4", "tr-3", "tr-2", "tr-1", "tr-0"]
    assert await ids(version="v2") == ["tr-2"]
    assert await ids(release="r1", fromTimestamp=t(1), toTimestamp=t(3)) == ["tr-2", "tr-1"]
    assert await ids(orderBy="timestamp.asc") == ["tr-0", "tr-1", "tr-2", "tr-3", "tr-4"]
    assert await ids(orderBy="name.asc", limit=2) == ["tr-0", "tr-2"]
    last = (await _get(app, headers, "/api/public/traces", limit=2, page=3)).json()
    assert [d["id"] for d in last["data"]] == ["tr-0"] and last["meta"]["totalPages"] == 3
    empty = (await _get(app, headers, "/api/public/traces", limit=2, page=9)).json()
    assert empty["data"] == [] and empty["meta"]["totalItems"] == 5
    core = (await _get(app, headers, "/api/public/traces", fields="core")).json()["data"][0]
    assert core["input"] is None and core["observations"] == [] and core["latency"] == -1


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"page": 0}, "page"),
        ({"orderBy": "secret.desc"}, "orderBy"),
        ({"fromTimestamp": "2026-11-01T00:00:00"}, "fromTimestamp"),
    ],
)
async def test_invalid_parameters_answer_400_naming_them(loaded, params, parameter):
    _, headers, app = loaded
    response = await _get(app, headers, "/api/public/traces", **params)
    assert response.status_code == 400 and response.json()["parameter"] == parameter


def _cursor(moment: str, row_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"t": moment, "id": row_id}).encode()).decode()


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/api/public/observations", {"type": "NOPE"}, "type"),
        ("/api/public/v2/observations", {"level": "LOUD"}, "level"),
        ("/api/public/v2/observations", {"limit": 1001}, "limit"),
        ("/api/public/scores", {"source": "HUMAN"}, "source"),
        ("/api/public/v2/scores", {"dataType": "NUMBER"}, "dataType"),
        ("/api/public/v3/scores", {"dataType": "NUMERIC,NUMBER"}, "dataType"),
        ("/api/public/v3/scores", {"source": "API,HUMAN"}, "source"),
        ("/api/public/v3/scores", {"cursor": _cursor("not a time", "x")}, "cursor"),
        ("/api/public/v3/scores", {"cursor": _cursor("9999-01-01 00:00:00.000", "x")}, "cursor"),
    ],
)
async def test_enum_and_cursor_parameters_answer_400_naming_them(
    services: Any, project: tuple[str, dict[str, str]], path: str, params: dict[str, Any], parameter: str
) -> None:
    _, headers = project
    response = await _get(create_app(services), headers, path, **params)
    assert response.status_code == 400 and response.json()["parameter"] == parameter, response.text


async def test_trace_by_id_observations_scores_and_isolation(loaded, services):
    project_id, headers, app = loaded
    trace = (await _get(app, headers, "/api/public/traces/tr-1")).json()
    assert {o["id"] for o in trace["observations"]} == {"sp-1", "gen-1"}
    gen = next(o for o in trace["observations"] if o["id"] == "gen-1")
    assert (gen["type"], gen["level"], gen["model"], gen["parentObservationId"]) == (
        "GENERATION",
        "ERROR",
        "gpt-4o",
        "sp-1",
    )
    assert gen["usage"] == {"unit": "TOKENS", "input": 10, "output": 5, "total": 15}
    assert gen["latency"] == 4.0 and gen["timeToFirstToken"] == 1.0
    assert gen["calculatedTotalCost"] == pytest.approx(0.03)
    assert [s["id"] for s in trace["scores"]] == ["sc-1"]
    assert trace["latency"] == 5.0
    assert (await _get(app, headers, "/api/public/traces/nope")).status_code == 404

    # Another project's key sees none of it.
    from tracehouse.metadata import create_api_key, create_project

    other = create_project(services.metadata, "other", project_id=f"o-{uuid.uuid4().hex[:8]}")
    key = create_api_key(services.metadata, other.id, salt=services.settings.salt)
    other_headers = {
        "Authorization": "Basic " + base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()
    }
    assert (await _get(app, other_headers, "/api/public/traces/tr-1")).status_code == 404
    assert (await _get(app, other_headers, "/api/public/traces")).json()["data"] == []
    assert (await _get(app, other_headers, "/api/public/observations/gen-1")).status_code == 404
    assert (await _get(app, other_headers, "/api/public/scores")).json()["data"] == []
    assert (await _get(app, other_headers, "/api/public/sessions")).json()["data"] == []
    projects = (await _get(app, other_headers, "/api/public/projects")).json()
    assert projects["data"][0]["id"] == other.id


async def test_observations_and_scores_and_sessions(loaded):
    _, headers, app = loaded

    async def ids(path, **params):
        response = await _get(app, headers, path, **params)
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["data"]]

    assert await ids("/api/public/observations", type="GENERATION", limit=2) == ["gen-4", "gen-3"]
    assert await ids("/api/public/observations", traceId="tr-2") == ["gen-2", "sp-2"]
    assert await ids("/api/public/observations", level="ERROR") == ["gen-1"]
    assert await ids("/api/public/observations", userId="u1", type="SPAN") == ["sp-3", "sp-1"]
    assert await ids("/api/public/observations", parentObservationId="sp-0") == ["gen-0"]
    assert await ids("/api/public/observations", environment="dev") == []  # observations were sent without one
    assert await ids("/api/public/observations", name="root", limit=2) == ["sp-4", "sp-3"]
    assert await ids("/api/public/observations", type="SPAN", fromStartTime=t(1), toStartTime=t(3)) == ["sp-2", "sp-1"]
    assert await ids("/api/public/observations", version="nope") == []
    assert await ids("/api/public/scores", traceId="tr-0") == ["sc-text", "sc-0"]
    assert await ids("/api/public/scores", fromTimestamp=t(3), name="quality") == ["sc-4", "sc-3"]
    assert await ids("/api/public/v2/scores", source="API", dataType="NUMERIC", limit=1) == ["sc-4"]
    assert (await _get(app, headers, "/api/public/observations", type="NOPE")).status_code == 400
    single = (await _get(app, headers, "/api/public/observations/gen-0")).json()
    assert single["usageDetails"] == {"input": 10, "output": 5, "total": 15}

    assert await ids("/api/public/scores", name="quality", limit=3) == ["sc-4", "sc-3", "sc-2"]
    v2 = (await _get(app, headers, "/api/public/v2/scores", userId="u0", name="quality")).json()
    assert [d["id"] for d in v2["data"]] == ["sc-4", "sc-2", "sc-0"]
    assert v2["data"][0]["trace"] == {"userId": "u0", "tags": ["a"], "environment": "dev", "sessionId": "sess-1"}
    text = (await _get(app, headers, "/api/public/v2/scores", dataType="TEXT")).json()["data"][0]
    assert text["stringValue"] == "fine" and "value" not in text
    assert await ids("/api/public/v2/scores", scoreIds="sc-1,sc-2") == ["sc-2", "sc-1"]
    v1 = (await _get(app, headers, "/api/public/scores", traceId="tr-0", dataType="NUMERIC")).json()["data"]
    assert v1[0]["trace"] == {"userId": "u0", "tags": ["a", "b"], "environment": "prod", "sessionId": "sess-0"}

    sessions = (await _get(app, headers, "/api/public/sessions")).json()
    assert [s["id"] for s in sessions["data"]] == ["sess-2", "sess-1", "sess-0"]  # first trace, newest first
    assert sessions["meta"]["totalItems"] == 3
    middle = (await _get(app, headers, "/api/public/sessions", limit=1, page=2)).json()
    assert [s["id"] for s in middle["data"]] == ["sess-1"] and middle["meta"]["totalItems"] == 3
    past = (await _get(app, headers, "/api/public/sessions", limit=2, page=5)).json()
    assert past["data"] == [] and past["meta"] == {"page": 5, "limit": 2, "totalItems": 3, "totalPages": 2}
    assert (await _get(app, headers, "/api/public/sessions", environment="none")).json()["meta"]["totalItems"] == 0
    assert await ids("/api/public/sessions", environment="dev") == ["sess-1"]
    assert await ids("/api/public/sessions", fromTimestamp=t(1), toTimestamp=t(2)) == ["sess-1"]
    one = (await _get(app, headers, "/api/public/sessions/sess-1")).json()
    assert [tr["id"] for tr in one["traces"]] == ["tr-1", "tr-4"]
    assert (await _get(app, headers, "/api/public/sessions/none")).status_code == 404


async def test_delete_removes_trace_observations_and_scores(loaded, services):
    project_id, headers, app = loaded
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        one = await client.delete("/api/public/traces/tr-0", headers=headers)
        missing = await client.delete("/api/public/traces/nope", headers=headers)
        bulk = await client.request(
            "DELETE", "/api/public/traces", headers=headers, json={"traceIds": ["tr-1", "tr-2"]}
        )
        empty = await client.request("DELETE", "/api/public/traces", headers=headers, json={"traceIds": []})
    assert one.status_code == 200 and missing.status_code == 404 and bulk.status_code == 200
    assert empty.status_code == 400 and empty.json()["parameter"] == "traceIds"
    remaining = [d["id"] for d in (await _get(app, headers, "/api/public/traces")).json()["data"]]
    assert remaining == ["tr-4", "tr-3"]
    gone = (await _get(app, headers, "/api/public/observations", traceId="tr-0")).json()
    assert gone["data"] == [] and gone["meta"]["totalItems"] == 0
    assert (await _get(app, headers, "/api/public/observations/gen-1")).status_code == 404
    assert {r["trace_id"] for r in await rows_of(services, "observations", project_id)} == {"tr-3", "tr-4"}
    assert {r["trace_id"] for r in await rows_of(services, "scores", project_id)} == {"tr-3", "tr-4"}
    # Deletes are new versions (tombstones), so an export sees them.
    tombstones = await services.clickhouse.query(
        "SELECT count() AS n FROM traces WHERE project_id = {p:String} AND is_deleted = 1",
        {"p": project_id},
        workload=Workload.INTERACTIVE,
    )
    assert tombstones[0]["n"] == 3


async def test_memory_cap_answers_503_json(loaded, services):
    _, headers, _ = loaded
    tight = dataclasses.replace(services.clickhouse._classes[Workload.INTERACTIVE], max_memory_usage=1)
    classes = {**services.clickhouse._classes, Workload.INTERACTIVE: tight}
    capped = ClickHouse({w: services.clickhouse.backend(w) for w in Workload}, classes)
    app = create_app(dataclasses.replace(services, clickhouse=capped))
    response = await _get(app, headers, "/api/public/traces")
    assert response.status_code == 503
    assert response.json()["error"] == "QueryTooLarge"
    assert isinstance(WorkloadSettings, type) and json.dumps(response.json())


async def test_cursor_pagination_v2_observations_and_v3_scores(loaded):
    _, headers, app = loaded
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, "fields": "core,basic,usage,metrics"} | ({"cursor": cursor} if cursor else {})
        body = (await _get(app, headers, "/api/public/v2/observations", **params)).json()
        seen += body["data"]
        pages += 1
        cursor = body["meta"].get("cursor")
        if not cursor:
            break
    assert pages == 4 and len(seen) == 10 and len({o["id"] for o in seen}) == 10
    assert [o["id"] for o in seen[:2]] == ["gen-4", "sp-4"]
    gen = next(o for o in seen if o["id"] == "gen-0")
    assert gen["usageDetails"] == {"input": 10, "output": 5, "total": 15} and gen["latency"] == 4.0
    assert "input" not in gen  # the io group was not requested
    roots = (await _get(app, headers, "/api/public/v2/observations", isRootObservation="true")).json()
    assert sorted(o["id"] for o in roots["data"]) == [f"sp-{i}" for i in range(5)]
    bad = await _get(app, headers, "/api/public/v2/observations", cursor="garbage!")
    assert bad.status_code == 400 and bad.json()["parameter"] == "cursor"

    scores = (await _get(app, headers, "/api/public/v3/scores", limit=4)).json()
    assert len(scores["data"]) == 4 and scores["meta"]["limit"] == 4 and scores["meta"]["cursor"]
    rest = (await _get(app, headers, "/api/public/v3/scores", limit=4, cursor=scores["meta"]["cursor"])).json()
    assert len(rest["data"]) == 2 and "cursor" not in rest["meta"]
    by_id = {s["id"]: s for s in scores["data"] + rest["data"]}
    assert by_id["sc-text"]["value"] == "fine" and by_id["sc-text"]["dataType"] == "TEXT"
    assert by_id["sc-3"]["value"] == 0.3 and by_id["sc-3"]["subject"] == {"kind": "trace", "id": "tr-3"}


def test_engine_limits_map_to_clear_json_errors():
    from tracehouse.clickhouse import ClickHouseError, ClickHouseErrorKind
    from tracehouse.web.errors import clickhouse_error_body

    timeout = clickhouse_error_body(ClickHouseError("Code: 159. Timeout exceeded", ClickHouseErrorKind.TIMEOUT))
    overcommit = clickhouse_error_body(ClickHouseError("Code: 241. OvercommitTracker", ClickHouseErrorKind.OVERCOMMIT))
    assert timeout[0] == 504 and timeout[1]["error"] == "QueryTimeout"
    assert overcommit[0] == 503 and overcommit[1]["error"] == "QueryTooLarge"
