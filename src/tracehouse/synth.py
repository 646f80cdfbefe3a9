"""Synthetic LLM traffic: realistic traces sent through the public ingestion endpoint.

Each trace has a root span, nested retrieval and tool spans, one or more generations with token
usage and cost, a score, and belongs to a session, a user and an environment. Inputs and outputs
have a configurable size. Used as a demo (`tracehouse synth`) and as the load of `bench/ingest.py`.
"""

from __future__ import annotations

import asyncio
import base64
import random
import statistics
import string
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from tracehouse.timefmt import api_time

MODELS = [("gpt-4o-mini", 0.15e-6, 0.6e-6), ("gpt-4o", 2.5e-6, 10e-6), ("claude-sonnet", 3e-6, 15e-6)]
ENVIRONMENTS = ["production", "staging", "dev"]
TOOLS = ["search", "calculator", "crm_lookup", "weather"]


@dataclass(frozen=True)
class SynthConfig:
    traces: int = 1000
    spans_per_trace: int = 4
    payload_bytes: int = 300
    batch_events: int = 100
    sessions: int = 50
    users: int = 200
    seed: int = 42


@dataclass
class SynthStats:
    events: int = 0
    batches: int = 0
    rejected: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0


def _text(rng: random.Random, size: int) -> str:
    words = []
    length = 0
    while length < size:
        word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9)))
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def trace_events(rng: random.Random, config: SynthConfig, now: datetime) -> list[dict[str, Any]]:
    """One trace's events: trace, nested spans/generations (create + update), a score."""
    trace_id = str(uuid.UUID(int=rng.getrandbits(128)))
    start = now - timedelta(milliseconds=rng.randint(0, 60_000))
    env = rng.choice(ENVIRONMENTS)
    half = max(1, config.payload_bytes // 2)

    def envelope(kind: str, body: dict[str, Any], at: datetime) -> dict[str, Any]:
        return {"id": str(uuid.UUID(int=rng.getrandbits(128))), "timestamp": api_time(at), "type": kind, "body": body}

    events = [
        envelope(
            "trace-create",
            {
                "id": trace_id,
                "name": rng.choice(["chat", "rag-answer", "agent-run", "summarize"]),
                "timestamp": api_time(start),
                "userId": f"user-{rng.randrange(config.users)}",
                "sessionId": f"session-{rng.randrange(config.sessions)}",
                "environment": env,
                "tags": rng.sample(["beta", "mobile", "web", "eu", "us"], 2),
                "metadata": {"plan": rng.choice(["free", "pro", "team"]), "region": rng.choice(["eu", "us"])},
                "input": {"question": _text(rng, half)},
                "release": "1.4.2",
                "version": "v3",
            },
            start,
        )
    ]
    root_id = str(uuid.UUID(int=rng.getrandbits(128)))
    events.append(
        envelope(
            "span-create",
            {"id": root_id, "traceId": trace_id, "name": "handle", "environment": env, "startTime": api_time(start)},
            start,
        )
    )
    cursor = start
    for i in range(max(0, config.spans_per_trace - 1)):
        obs_id = str(uuid.UUID(int=rng.getrandbits(128)))
        begin = cursor + timedelta(milliseconds=rng.randint(1, 50))
        end = begin + timedelta(milliseconds=rng.randint(20, 1500))
        if i % 2 == 0:
            model, price_in, price_out = rng.choice(MODELS)
            tokens_in, tokens_out = rng.randint(50, 2000), rng.randint(10, 600)
            events.append(
                envelope(
                    "generation-create",
                    {
                        "id": obs_id,
                        "traceId": trace_id,
                        "parentObservationId": root_id,
                        "name": f"llm-{i}",
                        "environment": env,
                        "startTime": api_time(begin),
                        "model": model,
                        "modelParameters": {"temperature": round(rng.random(), 2)},
                        "input": [{"role": "user", "content": _text(rng, half)}],
                    },
                    begin,
                )
            )
            events.append(
                envelope(
                    "generation-update",
                    {
                        "id": obs_id,
                        "traceId": trace_id,
                        "endTime": api_time(end),
                        "completionStartTime": api_time(begin),
                        "output": {"role": "assistant", "content": _text(rng, half)},
                        "usageDetails": {"input": tokens_in, "output": tokens_out},
                        "costDetails": {"input": tokens_in * price_in, "output": tokens_out * price_out},
                    },
                    end,
                )
            )
        else:
            kind = rng.choice(["tool", "retriever"])
            events.append(
                envelope(
                    f"{kind}-create",
                    {
                        "id": obs_id,
                        "traceId": trace_id,
                        "parentObservationId": root_id,
                        "environment": env,
                        "name": rng.choice(TOOLS),
                        "startTime": api_time(begin),
                        "endTime": api_time(end),
                        "input": {"query": _text(rng, half // 2)},
                        "output": {"result": _text(rng, half // 2)},
                    },
                    begin,
                )
            )
        cursor = end
    events.append(
        envelope(
            "span-update",
            {"id": root_id, "traceId": trace_id, "endTime": api_time(cursor), "output": {"status": "ok"}},
            cursor,
        )
    )
    events.append(envelope("trace-create", {"id": trace_id, "output": {"answer": _text(rng, half)}}, cursor))
    events.append(
        envelope(
            "score-create",
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "traceId": trace_id,
                "name": "user-feedback",
                "value": rng.choice([0, 1]),
                "dataType": "BOOLEAN",
                "environment": env,
            },
            cursor,
        )
    )
    return events


def events_per_trace(spans_per_trace: int) -> int:
    observations = sum(2 if i % 2 == 0 else 1 for i in range(max(0, spans_per_trace - 1)))
    return 2 + observations + 3  # trace + root span, the rest, root update + trace update + score


def batches(config: SynthConfig, now: datetime | None = None) -> Iterator[list[dict[str, Any]]]:
    """Batches of about `batch_events` events; a trace's events are never split across batches."""
    rng = random.Random(config.seed)
    moment = now or datetime.now(UTC)
    current: list[dict[str, Any]] = []
    for _ in range(config.traces):
        current.extend(trace_events(rng, config, moment))
        if len(current) >= config.batch_events:
            yield current
            current = []
    if current:
        yield current


def prepare(config: SynthConfig) -> list[tuple[int, bytes]]:
    """Every request body, generated and serialized up front: (events, JSON bytes)."""
    return [(len(batch), orjson.dumps({"batch": batch})) for batch in batches(config)]


async def send(
    base_url: str,
    public_key: str,
    secret_key: str,
    config: SynthConfig,
    *,
    concurrency: int = 8,
    on_batch: Callable[[int], None] | None = None,
    prepared: list[tuple[int, bytes]] | None = None,
) -> SynthStats:
    """POST every batch to /api/public/ingestion with `concurrency` requests in flight.

    With `prepared` bodies (see `prepare`) the generator's own CPU stays out of the measurement."""
    token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "x-langfuse-sdk-name": "tracehouse-synth"}
    stats = SynthStats()
    headers["content-type"] = "application/json"
    pending: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(maxsize=concurrency * 2)

    async def worker(client: httpx.AsyncClient) -> None:
        while (item := await pending.get()) is not None:
            count, body = item
            started = time.perf_counter()
            response = await client.post("/api/public/ingestion", content=body)
            stats.latencies_ms.append((time.perf_counter() - started) * 1000)
            if response.status_code != 207:
                raise RuntimeError(f"ingestion answered {response.status_code}: {response.text[:300]}")
            stats.rejected += len(response.json().get("errors", []))
            stats.events += count
            stats.batches += 1
            if on_batch:
                on_batch(count)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60, limits=limits) as client:
        workers = [asyncio.create_task(worker(client)) for _ in range(concurrency)]
        bodies = (
            prepared
            if prepared is not None
            else ((len(batch), orjson.dumps({"batch": batch})) for batch in batches(config))
        )
        for item in bodies:
            await pending.put(item)
        for _ in workers:
            await pending.put(None)
        await asyncio.gather(*workers)
    return stats
