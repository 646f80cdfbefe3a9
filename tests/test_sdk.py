"""The real `langfuse` SDKs from PyPI against a live tracehouse (HTTP on loopback, in-process workers).

Each SDK runs in its own subprocess with its own site dir (`.venv/sdk/<name>`, installed on first
use), so the current major and the 2.x line can both be tested without clashing with our deps.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from conftest import free_port
from tracehouse.clickhouse import Workload
from tracehouse.metadata import create_api_key, create_project
from tracehouse.runtime import migrate, open_services
from tracehouse.settings import WorkerRole
from tracehouse.web.app import create_app
from tracehouse.workers import start_workers

pytestmark = pytest.mark.slow  # SDK subprocesses (and their install on first use)

ROOT = Path(__file__).resolve().parents[1]
SDKS = {"v5": "langfuse==5.0.4", "v2": "langfuse==2.60.10"}


def sdk_dir(name: str) -> Path:
    target = ROOT / ".venv" / "sdk" / name
    if not (target / "langfuse").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), SDKS[name]],
            check=True,
            timeout=600,
        )
    return target


@pytest.fixture(scope="module")
async def live(settings):
    from tracehouse.web.server import build_server

    prefix = f"thtest-sdk-{os.getpid()}"
    services = await open_services(settings.model_copy(update={"redis_key_prefix": prefix}))
    await migrate(services)
    project = create_project(services.metadata, "sdk", project_id=f"sdk-{os.getpid()}-{int(time.time())}")
    key = create_api_key(services.metadata, project.id, salt=services.settings.salt)

    @asynccontextmanager
    async def workers(_app):
        runner = await start_workers(services, WorkerRole.ALL, crons=[])
        try:
            yield
        finally:
            await runner.shutdown(10)

    port = free_port()
    server = build_server(create_app(services, background=workers), services.settings, host="127.0.0.1", port=port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield {
        "url": f"http://127.0.0.1:{port}",
        "project": project.id,
        "pk": key.public_key,
        "sk": key.secret_key,
        "services": services,
    }
    server.should_exit = True
    await task
    await services.close()


async def _run_sdk(live, name: str, script: str, *args: str) -> dict:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(sdk_dir(name)),
        "PK": live["pk"],
        "SK": live["sk"],
        "BASE_URL": live["url"],
        "OTEL_SDK_DISABLED": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("sdk") / script),
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def _query(services, sql, params):
    return await services.clickhouse.query(sql, params, workload=Workload.INTERACTIVE)


async def _wait_rows(services, table, where, params, n, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        rows = await _query(services, f"SELECT * FROM {table} FINAL WHERE {where} ORDER BY id", params)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def test_current_sdk_spans_and_scores(live):
    sent = await _run_sdk(live, "v5", "send_v5.py")
    services, p = live["services"], {"p": live["project"], "t": sent["trace_id"]}
    observations = await _wait_rows(services, "observations", "project_id = {p:String} AND trace_id = {t:String}", p, 3)
    traces = await _wait_rows(services, "traces", "project_id = {p:String} AND id = {t:String}", p, 1)
    scores = await _wait_rows(services, "scores", "project_id = {p:String} AND trace_id = {t:String}", p, 2)
    by_id = {o["id"]: o for o in observations}
    assert set(by_id) == {sent["root_id"], sent["generation_id"], sent["tool_id"]}
    root, gen, tool = by_id[sent["root_id"]], by_id[sent["generation_id"]], by_id[sent["tool_id"]]
    assert (root["type"], root["name"], root["parent_observation_id"]) == ("SPAN", "handle-request", None)
    assert (gen["type"], gen["parent_observation_id"], gen["provided_model_name"]) == (
        "GENERATION",
        sent["root_id"],
        "gpt-4o-mini",
    )
    assert (tool["type"], tool["parent_observation_id"]) == ("TOOL", sent["root_id"])
    assert dict(gen["usage_details"]) == {"input": 12, "output": 3, "total": 15}
    assert float(gen["total_cost"]) == pytest.approx(0.0018)
    assert gen["output"] == "4" and json.loads(gen["model_parameters"]) == {"temperature": 0.1}
    assert json.loads(root["input"]) == {"question": "2+2?"} and json.loads(root["output"]) == {"answer": 4}
    assert dict(root["metadata"]).get("customer") == "acme"  # the SDK's JSON-encoded "\"acme\"" decoded
    assert root["environment"] == "staging"
    assert gen["end_time"] >= gen["start_time"] >= root["start_time"]
    trace = traces[0]
    assert (trace["name"], trace["user_id"], trace["session_id"]) == ("qa", "user-7", "session-9")
    assert trace["tags"] == ["sdk", "v5"] and trace["environment"] == "staging"
    by_name = {s["name"]: s for s in scores}
    assert (by_name["correct"]["value"], by_name["correct"]["comment"]) == (1.0, "checked")
    assert (by_name["tone"]["string_value"], by_name["tone"]["observation_id"]) == ("friendly", sent["generation_id"])


async def test_sdk_2x_batch_ingestion(live):
    sent = await _run_sdk(live, "v2", "send_v2.py")
    services, p = live["services"], {"p": live["project"], "t": sent["trace_id"]}
    observations = await _wait_rows(services, "observations", "project_id = {p:String} AND trace_id = {t:String}", p, 3)
    traces = await _wait_rows(
        services, "traces", "project_id = {p:String} AND id = {t:String} AND output IS NOT NULL", p, 1
    )
    scores = await _wait_rows(services, "scores", "project_id = {p:String} AND trace_id = {t:String}", p, 1)
    trace = traces[0]
    assert (trace["name"], trace["user_id"], trace["session_id"], trace["release"], trace["version"]) == (
        "v2-trace",
        "u-2",
        "s-2",
        "2.0",
        "v7",
    )
    assert trace["tags"] == ["legacy"] and dict(trace["metadata"]) == {"plan": "pro"}
    assert json.loads(trace["input"]) == {"q": "hello"} and json.loads(trace["output"]) == {"a": "hi there"}
    assert trace["timestamp"].isoformat().startswith("2026-11-02T08:00:00")
    by_id = {o["id"]: o for o in observations}
    span, gen, event = by_id[sent["span_id"]], by_id[sent["generation_id"]], by_id[sent["event_id"]]
    assert (span["type"], span["name"], json.loads(span["output"])) == ("SPAN", "fetch", {"status": 200})
    assert (gen["type"], gen["parent_observation_id"], gen["provided_model_name"]) == (
        "GENERATION",
        sent["span_id"],
        "gpt-3.5-turbo",
    )
    assert dict(gen["usage_details"]) == {"input": 5, "output": 7, "total": 12}
    assert gen["output"] == "hi there"
    assert gen["start_time"].isoformat().startswith("2026-11-02T08:00:00.020")
    assert gen["end_time"].isoformat().startswith("2026-11-02T08:00:00.900")
    assert (event["type"], dict(event["metadata"])) == ("EVENT", {"key": "k1"})
    assert (scores[0]["name"], scores[0]["value"], scores[0]["comment"]) == ("rating", 4.0, "good")


async def test_current_sdk_reads_back_what_it_sent(live):
    sent = await _run_sdk(live, "v5", "send_v5.py")
    services, p = live["services"], {"p": live["project"], "t": sent["trace_id"]}
    await _wait_rows(services, "scores", "project_id = {p:String} AND trace_id = {t:String}", p, 2)
    await _wait_rows(services, "observations", "project_id = {p:String} AND trace_id = {t:String}", p, 3)
    read = await _run_sdk(live, "v5", "read_v5.py", sent["trace_id"])
    by_id = {o["id"]: o for o in read["observations"]}
    assert set(by_id) == {sent["root_id"], sent["generation_id"], sent["tool_id"]}
    gen = by_id[sent["generation_id"]]
    assert (gen["type"], gen["name"], gen["parent"], gen["model"]) == (
        "GENERATION",
        "llm-call",
        sent["root_id"],
        "gpt-4o-mini",
    )
    assert gen["usage"] == {"input": 12, "output": 3, "total": 15}
    scores = {s["name"]: s for s in read["scores"]}
    assert (scores["correct"]["value"], scores["correct"]["dataType"]) == (1.0, "NUMERIC")
    assert (scores["tone"]["value"], scores["tone"]["subject"]) == ("friendly", sent["generation_id"])
    assert read["project"] == live["project"]


async def test_sdk_2x_fetches_what_it_sent(live):
    sent = await _run_sdk(live, "v2", "send_v2.py")
    services, p = live["services"], {"p": live["project"], "t": sent["trace_id"]}
    await _wait_rows(services, "scores", "project_id = {p:String} AND trace_id = {t:String}", p, 1)
    await _wait_rows(services, "traces", "project_id = {p:String} AND id = {t:String} AND output IS NOT NULL", p, 1)
    read = await _run_sdk(live, "v2", "read_v2.py", sent["trace_id"])
    trace = read["trace"]
    assert (trace["id"], trace["name"], trace["userId"], trace["tags"]) == (
        sent["trace_id"],
        "v2-trace",
        "u-2",
        ["legacy"],
    )
    assert trace["observations"] == sorted([sent["span_id"], sent["generation_id"], sent["event_id"]])
    assert trace["scores"] == ["rating"] and trace["output"] == {"a": "hi there"}
    assert sent["trace_id"] in read["traces"]
    assert sorted(map(tuple, read["observations"])) == sorted(
        [(sent["span_id"], "SPAN"), (sent["generation_id"], "GENERATION"), (sent["event_id"], "EVENT")]
    )
    assert "s-2" in read["sessions"]
