"""Ingestion end to end, in-process: HTTP -> raw batch -> queue -> merge -> verified ClickHouse rows."""

import asyncio
import dataclasses
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pyarrow as pa
import pytest

from helpers import rows_of, start_ingestion, until
from tracehouse.capabilities import QUEUES
from tracehouse.clickhouse import ClickHouseError, ClickHouseErrorKind, Workload
from tracehouse.ingestion.service import list_dead_letters, replay_dead_letters
from tracehouse.ingestion.worker import EntityLocks
from tracehouse.queues import QueueProducer
from tracehouse.web.app import create_app


class FaultyInserts:
    """Fault injection around the real engine: the next `fail` inserts into `table` raise, optionally
    after the rows were committed (a timeout that arrives after the write)."""

    def __init__(self, clickhouse, table, fail, *, after_commit=False):
        self._ch, self.table, self.fail, self.after_commit = clickhouse, table, fail, after_commit
        self.inserts = 0

    def __getattr__(self, name):
        return getattr(self._ch, name)

    async def insert_arrow(self, table, data, **kwargs):
        if table == self.table:
            self.inserts += 1
            if self.fail > 0:
                self.fail -= 1
                if self.after_commit:
                    await self._ch.insert_arrow(table, data, **kwargs)
                    raise ClickHouseError("Timeout exceeded: elapsed 30001 ms", ClickHouseErrorKind.TIMEOUT)
                raise ClickHouseError(
                    "Code: 241. DB::Exception: Memory limit (injected)", ClickHouseErrorKind.MEMORY_LIMIT
                )
        return await self._ch.insert_arrow(table, data, **kwargs)


def ts(seconds=0):
    return (datetime(2026, 11, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def ev(kind, body, seconds=0, event_id=None):
    return {"id": event_id or str(uuid.uuid4()), "timestamp": ts(seconds), "type": kind, "body": body}


async def _post(app, path, headers, payload):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post(path, headers=headers, content=json.dumps(payload))


async def test_batch_is_merged_into_finalrows_of(services, project):
    project_id, headers = project
    app = create_app(services)
    batch = [
        # The update arrives first and in an earlier batch position: merge order follows timestamps.
        ev(
            "span-update",
            {"id": "s1", "traceId": "t1", "endTime": ts(5), "output": {"answer": 42}, "metadata": {"step": "done"}},
            seconds=5,
        ),
        ev(
            "trace-create",
            {
                "id": "t1",
                "name": "chat",
                "userId": "u1",
                "sessionId": "sess1",
                "tags": ["b", "a"],
                "metadata": {"k": "v", "n": 1},
                "input": "hi",
                "environment": "Langfuse-Prod",
                "release": "r1",
            },
            seconds=0,
        ),
        ev(
            "span-create",
            {
                "id": "s1",
                "traceId": "t1",
                "name": "retrieve",
                "startTime": ts(1),
                "metadata": {"step": "start", "source": "kb"},
            },
            seconds=1,
        ),
        ev(
            "generation-create",
            {
                "id": "g1",
                "traceId": "t1",
                "parentObservationId": "s1",
                "name": "llm",
                "model": "gpt-4o",
                "startTime": ts(2),
                "endTime": ts(3),
                "modelParameters": {"temperature": 0.2},
                "usageDetails": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                "costDetails": {"input": 0.001, "output": 0.002},
            },
            seconds=2,
        ),
        ev("score-create", {"id": "sc1", "traceId": "t1", "name": "quality", "value": 0.9}, seconds=6),
        ev("trace-create", {"id": "t1", "tags": ["c"], "output": "bye"}, seconds=7),
    ]
    runner = await start_ingestion(services)
    try:
        response = await _post(app, "/api/public/ingestion", headers, {"batch": batch})
        assert response.status_code == 207
        assert response.json() == {"successes": [{"id": e["id"], "status": 201} for e in batch], "errors": []}
        traces = await until(lambda: rows_of(services, "traces", project_id))
        scores = await until(lambda: rows_of(services, "scores", project_id))
    finally:
        await runner.shutdown(10)
    observations = await rows_of(services, "observations", project_id)
    trace = traces[0]
    assert (trace["id"], trace["name"], trace["user_id"], trace["session_id"], trace["release"]) == (
        "t1",
        "chat",
        "u1",
        "sess1",
        "r1",
    )
    assert trace["tags"] == ["a", "b", "c"] and trace["environment"] == "prod"
    assert dict(trace["metadata"]) == {"k": "v", "n": "1"}
    assert (trace["input"], trace["output"]) == ("hi", "bye")
    by_id = {o["id"]: o for o in observations}
    span, gen = by_id["s1"], by_id["g1"]
    assert (span["type"], span["name"], span["trace_id"]) == ("SPAN", "retrieve", "t1")
    assert span["start_time"].isoformat().startswith("2026-11-01T12:00:01")
    assert span["end_time"].isoformat().startswith("2026-11-01T12:00:05")
    assert dict(span["metadata"]) == {"step": "done", "source": "kb"}
    assert json.loads(span["output"]) == {"answer": 42}
    assert (gen["type"], gen["parent_observation_id"], gen["provided_model_name"]) == ("GENERATION", "s1", "gpt-4o")
    assert dict(gen["usage_details"]) == {"input": 10, "output": 5, "total": 15}
    assert float(gen["total_cost"]) == pytest.approx(0.003)
    assert json.loads(gen["model_parameters"]) == {"temperature": 0.2}
    score = scores[0]
    assert (score["id"], score["name"], score["value"], score["trace_id"], score["data_type"]) == (
        "sc1",
        "quality",
        0.9,
        "t1",
        "NUMERIC",
    )
    assert (score["ingestion_sdk_name"], score["ingestion_sdk_version"]) == ("python", "2.60.10")
    sample = services.metrics.registry.get_sample_value
    assert sample("ingestion_events_total", {"status": "accepted"}) == len(batch)
    assert sample("ingestion_rows_written_total", {"table": "observations"}) >= 2


async def test_malformed_events_fail_alone(services, project):
    project_id, headers = project
    app = create_app(services)
    good = ev("trace-create", {"id": "ok-trace", "name": "fine"})
    batch = [
        good,
        {"id": "no-body-id", "timestamp": ts(), "type": "trace-create", "body": {"name": "x"}},
        {"id": "bad-time", "timestamp": "yesterday", "type": "trace-create", "body": {"id": "t2"}},
        {"id": "bad-type", "timestamp": ts(), "type": "trace-explode", "body": {"id": "t3"}},
        {"id": "bad-level", "timestamp": ts(), "type": "span-create", "body": {"id": "s", "level": "LOUD"}},
        {
            "id": "bad-score",
            "timestamp": ts(),
            "type": "score-create",
            "body": {"name": "n", "value": 2, "dataType": "BOOLEAN", "traceId": "t"},
        },
        "not an object",
        {"id": "log", "timestamp": ts(), "type": "sdk-log", "body": {"log": "hello"}},
    ]
    runner = await start_ingestion(services)
    try:
        response = await _post(app, "/api/public/ingestion", headers, {"batch": batch})
        await until(lambda: rows_of(services, "traces", project_id))
    finally:
        await runner.shutdown(10)
    body = response.json()
    assert response.status_code == 207
    assert body["successes"] == [{"id": good["id"], "status": 201}]
    errors = {e["id"]: e for e in body["errors"]}
    assert set(errors) == {"no-body-id", "bad-time", "bad-type", "bad-level", "bad-score", "unknown"}
    assert all(e["status"] == 400 and e["message"] == "Invalid request data" for e in errors.values())
    assert "body.id" in errors["no-body-id"]["error"]
    assert "time zone" in errors["bad-time"]["error"] or "timestamp" in errors["bad-time"]["error"]
    assert "unknown event type" in errors["bad-type"]["error"]
    assert "level" in errors["bad-level"]["error"]
    assert "BOOLEAN" in errors["bad-score"]["error"]
    assert [r["id"] for r in await rows_of(services, "traces", project_id)] == ["ok-trace"]


async def test_request_level_errors(services, project):
    _, headers = project
    app = create_app(services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        not_json = await client.post("/api/public/ingestion", headers=headers, content=b"{nope")
        no_batch = await client.post("/api/public/ingestion", headers=headers, json={"events": []})
        too_big = await client.post(
            "/api/public/ingestion", headers=headers, content=json.dumps({"batch": [{"x": "y" * 5_000_000}]})
        )
        unauth = await client.post("/api/public/ingestion", json={"batch": []})
        big_event = await client.post(
            "/api/public/ingestion",
            headers=headers,
            content=json.dumps({"batch": [ev("trace-create", {"id": "huge", "input": "z" * 1_200_000})]}),
        )
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    assert no_batch.status_code == 400 and no_batch.json()["error"] == "batch: expected an array of events"
    assert no_batch.json()["parameter"] == "batch"
    assert too_big.status_code == 413 and "4.5 MB" in too_big.json()["error"]
    assert unauth.status_code == 401
    assert big_event.status_code == 207 and big_event.json()["errors"][0]["status"] == 413


async def test_scores_endpoint_single_and_array(services, project):
    project_id, headers = project
    app = create_app(services)
    runner = await start_ingestion(services)
    try:
        single = await _post(app, "/api/public/scores", headers, {"traceId": "t1", "name": "helpful", "value": 1})
        array_ok = await _post(
            app,
            "/api/public/scores",
            headers,
            [
                {"id": "a1", "traceId": "t1", "name": "tone", "value": "polite", "dataType": "CATEGORICAL"},
                {"id": "a2", "sessionId": "s1", "name": "flag", "value": 1, "dataType": "BOOLEAN"},
            ],
        )
        partial = await _post(
            app,
            "/api/public/scores",
            headers,
            [{"id": "a3", "traceId": "t1", "name": "len", "value": 3}, {"id": "a4", "name": "no-target", "value": 3}],
        )
        bad_single = await _post(app, "/api/public/scores", headers, {"name": "x", "value": 1})
        rows = await until(lambda: _has(services, "scores", project_id, 4))
    finally:
        await runner.shutdown(10)
    assert single.status_code == 200 and uuid.UUID(single.json()["id"])
    assert array_ok.status_code == 202 and array_ok.json() == {"message": "Accepted"}
    assert partial.status_code == 207
    assert partial.json()["accepted"] == 1 and partial.json()["rejected"] == 1
    assert partial.json()["errors"][0]["id"] == "a4"
    assert bad_single.status_code == 400 and "traceId" in bad_single.json()["error"]
    by_id = {r["id"]: r for r in rows}
    assert (by_id["a1"]["string_value"], by_id["a1"]["value"]) == ("polite", 0.0)
    assert (by_id["a2"]["string_value"], by_id["a2"]["session_id"]) == ("True", "s1")


async def _has(services, table, project_id, n):
    rows = await rows_of(services, table, project_id)
    return rows if len(rows) >= n else None


async def test_insert_failures_are_retried_then_succeed(services, project):
    project_id, headers = project
    faulty = FaultyInserts(services.clickhouse, "traces", fail=2)
    runner = await start_ingestion(services, faulty)
    try:
        await _post(
            create_app(services),
            "/api/public/ingestion",
            headers,
            {"batch": [ev("trace-create", {"id": "retry-me", "name": "r"})]},
        )
        rows = await until(lambda: rows_of(services, "traces", project_id))
    finally:
        await runner.shutdown(10)
    assert [r["id"] for r in rows] == ["retry-me"]
    assert faulty.inserts == 3 and faulty.fail == 0


async def test_timeout_after_commit_is_not_written_twice(services, project):
    project_id, headers = project
    faulty = FaultyInserts(services.clickhouse, "traces", fail=1, after_commit=True)
    runner = await start_ingestion(services, faulty)
    try:
        await _post(
            create_app(services),
            "/api/public/ingestion",
            headers,
            {"batch": [ev("trace-create", {"id": "once", "name": "r"})]},
        )
        await until(lambda: rows_of(services, "traces", project_id))
        await asyncio.sleep(0.5)
    finally:
        await runner.shutdown(10)
    raw = await services.clickhouse.query(
        "SELECT count() AS n FROM traces WHERE project_id = {p:String}",
        {"p": project_id},
        workload=Workload.INTERACTIVE,
    )
    assert faulty.inserts == 1, "the committed insert must be detected, not repeated"
    assert raw[0]["n"] == 1


class MiscountedInserts(FaultyInserts):
    """Fault injection around the real engine: inserts into `table` answer that no row was written (a
    proxy that dropped ClickHouse's summary header), and with `lose` they also write nothing."""

    def __init__(self, clickhouse, table, *, lose=False):
        super().__init__(clickhouse, table, fail=0)
        self.lose = lose

    async def insert_arrow(self, table, data, **kwargs):
        if table != self.table:
            return await super().insert_arrow(table, data, **kwargs)
        self.inserts += 1
        if not self.lose:
            await self._ch.insert_arrow(table, data, **kwargs)
        return 0


def _verifications(metrics) -> float:
    return metrics.registry.get_sample_value("ingestion_verify_seconds_count") or 0.0


async def test_the_writer_trusts_the_servers_row_count_and_reads_back_only_when_it_falls_short(services, project):
    from tracehouse.ingestion.writer import ClickHouseWriter, WriteFailed
    from tracehouse.metrics import Metrics

    project_id, _ = project

    def rows(ids):
        return [{"id": i, "project_id": project_id, "timestamp": datetime(2026, 11, 1, tzinfo=UTC)} for i in ids]

    async def write(clickhouse, ids):
        metrics = Metrics()
        writer = ClickHouseWriter(clickhouse, batch_size=100, interval_ms=20, metrics=metrics)
        try:
            await writer.write("traces", rows(ids))
        finally:
            await writer.close()
        return _verifications(metrics)

    # The server counted every row: no read-back query.
    assert await write(services.clickhouse, ["counted-1", "counted-2"]) == 0
    # It answered 0 rows but wrote them: the writer reads them back and is satisfied.
    assert await write(MiscountedInserts(services.clickhouse, "traces"), ["recounted-1", "recounted-2"]) == 1
    # It answered 0 rows and wrote nothing: the job fails instead of being acknowledged.
    with pytest.raises(WriteFailed, match="not found on verification"):
        await write(MiscountedInserts(services.clickhouse, "traces", lose=True), ["lost-1"])
    stored = await services.clickhouse.query(
        "SELECT id FROM traces FINAL WHERE project_id = {p:String} ORDER BY id",
        {"p": project_id},
        workload=Workload.INTERACTIVE,
    )
    assert [r["id"] for r in stored] == ["counted-1", "counted-2", "recounted-1", "recounted-2"]


async def test_exhausted_writes_are_dead_lettered_and_replay_restores_them(services, project):
    project_id, headers = project
    # Fail every insert into observations for longer than the job's attempts.
    faulty = FaultyInserts(services.clickhouse, "observations", fail=10_000)
    fast = {
        name: dataclasses.replace(
            spec, job_options={**spec.job_options, "attempts": 2, "backoff": {"type": "fixed", "delay": 50}}
        )
        for name, spec in QUEUES.items()
    }
    producer = QueueProducer(services.redis_connection, fast, prefix=services.settings.redis_key_prefix)
    app = create_app(dataclasses.replace(services, producer=producer))
    runner = await start_ingestion(services, faulty)
    try:
        await _post(
            app,
            "/api/public/ingestion",
            headers,
            {
                "batch": [
                    ev("trace-create", {"id": "dl-trace"}),
                    ev("span-create", {"id": "dl-span", "traceId": "dl-trace"}),
                ]
            },
        )
        letters = await until(
            lambda: asyncio.to_thread(
                lambda: [d for d in list_dead_letters(services.metadata) if d.project_id == project_id] or None
            )
        )
    finally:
        await runner.shutdown(10)
    assert {(d.table_name, d.entity_id) for d in letters} == {("traces", "dl-trace"), ("observations", "dl-span")}
    assert all(d.attempts == 2 and "Memory limit" in d.last_error for d in letters)
    assert (
        services.metrics.registry.get_sample_value("ingestion_rows_dead_lettered_total", {"table": "observations"})
        == 1.0
    )
    assert await rows_of(services, "observations", project_id) == []

    # The fault is gone; a replay re-runs the raw batch and the rows appear.
    runner = await start_ingestion(services)
    try:
        assert await replay_dead_letters(services.metadata, producer) == 1
        rows = await until(lambda: rows_of(services, "observations", project_id))
    finally:
        await runner.shutdown(10)
        await producer.close()
    assert [r["id"] for r in rows] == ["dl-span"]
    assert not [d for d in list_dead_letters(services.metadata) if d.project_id == project_id]


async def test_entity_locks_last_while_held_and_free_soon_after_a_holder_dies(services):
    prefix = f"{services.settings.redis_key_prefix}:locks-test"
    holder = EntityLocks(services.redis, prefix, ttl_ms=300, wait_s=0.5)
    other = EntityLocks(services.redis, prefix, ttl_ms=300, wait_s=0.5)
    async with holder.hold(["p:trace:a"]):
        await asyncio.sleep(1.2)  # four TTLs: only the holder's extensions keep the lock
        with pytest.raises(TimeoutError, match="entities busy"):
            async with other.hold(["p:trace:a"]):
                pass
    # A killed worker's lock: set once, never extended, never released.
    await services.redis.set(f"{prefix}:tracehouse:lock:p:trace:b", "dead-worker", px=300)
    started = time.monotonic()
    async with other.hold(["p:trace:b"]):
        waited = time.monotonic() - started
    assert 0.1 < waited < 0.5, waited


class HangingInserts(FaultyInserts):
    """Fault injection around the real engine: inserts into `table` wait until released (a stuck write)."""

    def __init__(self, clickhouse, table):
        super().__init__(clickhouse, table, fail=0)
        self.release = asyncio.Event()

    async def insert_arrow(self, table, data, **kwargs):
        if table == self.table:
            await self.release.wait()
        return await super().insert_arrow(table, data, **kwargs)


async def test_a_batch_that_stalls_too_often_is_dead_lettered(services, project):
    """bullmq fails a job whose lock lapsed more than `max_stalled_count` times without running our
    processor; the batch must still land in the dead letters, where it can be replayed."""
    project_id, headers = project
    changes = {"queue_lock_duration_ms": 1000, "queue_stalled_interval_ms": 300}
    services = dataclasses.replace(services, settings=services.settings.model_copy(update=changes))
    hanging = HangingInserts(services.clickhouse, "observations")
    runner = await start_ingestion(services, hanging)
    queue = f"{services.settings.redis_key_prefix}:ingestion-queue"
    try:
        await _post(
            create_app(services),
            "/api/public/ingestion",
            headers,
            {"batch": [ev("span-create", {"id": "stuck-span", "traceId": "stuck-trace"})]},
        )

        async def lose_locks_until_dead_lettered():
            # Every lock lapses (a process starved past its lock): delete it whenever a run holds one.
            for job_id in await services.redis.lrange(f"{queue}:active", 0, -1):
                await services.redis.delete(f"{queue}:{job_id}:lock")
            letters = await asyncio.to_thread(list_dead_letters, services.metadata)
            return [d for d in letters if d.project_id == project_id] or None

        letters = await until(lose_locks_until_dead_lettered, timeout=60)
    finally:
        hanging.release.set()
        await runner.shutdown(10)
    assert [(d.table_name, d.entity_id) for d in letters] == [("observations", "stuck-span")]
    assert "stalled more than allowable limit" in letters[0].last_error


async def test_concurrent_batches_for_one_entity_keep_every_update(services, project):
    project_id, headers = project
    app = create_app(services)
    runner = await start_ingestion(services)
    try:
        batches = [
            [ev("trace-create", {"id": "shared", "metadata": {f"k{i}": str(i)}, "tags": [f"t{i}"]}, seconds=i)]
            for i in range(12)
        ]
        await asyncio.gather(*(_post(app, "/api/public/ingestion", headers, {"batch": b}) for b in batches))
        row = await until(lambda: _with_tags(services, project_id, 12))
    finally:
        await runner.shutdown(10)
    assert dict(row["metadata"]) == {f"k{i}": str(i) for i in range(12)}


async def _with_tags(services, project_id, n):
    rows = await rows_of(services, "traces", project_id)
    return rows[0] if rows and len(rows[0]["tags"]) == n else None


async def test_history_reads_of_concurrent_jobs_share_one_query(services, project):
    """Jobs waiting at the same moment get their own entities' events from one event-log query."""
    from tracehouse.ingestion.service import HistoryReader

    project_id, _ = project
    now = datetime.now(UTC)
    await services.clickhouse.insert_arrow(
        "ingestion_event_log",
        pa.Table.from_pylist(
            [
                {
                    "project_id": project_id,
                    "entity": "trace",
                    "entity_id": f"h{i}",
                    "event_id": f"e{i}",
                    "event_type": "trace-create",
                    "event_time": now,
                    "body": json.dumps({"id": f"h{i}"}),
                    "batch_key": "k",
                    "received_at": now,
                    "event_ts": now,
                }
                for i in range(6)
            ]
        ),
        workload=Workload.INGESTION,
    )

    class Counting:
        def __init__(self, inner):
            self.inner, self.queries = inner, 0

        async def query(self, *args, **kwargs):
            self.queries += 1
            return await self.inner.query(*args, **kwargs)

    counting = Counting(services.clickhouse)
    reader = HistoryReader(counting)
    results = await asyncio.gather(
        *(reader.read({(project_id, "trace", f"h{i}"), (project_id, "trace", "none")}) for i in range(6))
    )
    assert counting.queries == 1
    assert [[r["event_id"] for r in rows] for rows in results] == [[f"e{i}"] for i in range(6)]

    class Failing:
        async def query(self, *args, **kwargs):
            raise ClickHouseError("Code: 241. memory limit exceeded", ClickHouseErrorKind.MEMORY_LIMIT)

    failing = HistoryReader(Failing())
    outcomes = await asyncio.gather(
        *(failing.read({(project_id, "trace", "x")}) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, ClickHouseError) for o in outcomes)  # every waiting job fails (and is retried)
