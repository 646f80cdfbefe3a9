"""Langfuse's `filter` parameter and the documented parameters of the read routes, as real clients use
them against a running server (HTTP on loopback, ingestion workers in this process).

The data goes through the real pipeline (`POST /api/public/ingestion`). For every filter type and
operator, on every route that has the column, the ids returned equal the ids this test computes
from what it sent (the `*_view` functions below model what was sent; they never read the server).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
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
from tracehouse.web.app import create_app

View = dict[str, Any]
MISSING = object()


def at(minute: int, second: int = 0) -> str:
    return f"2026-12-01T10:{minute:02d}:{second:02d}.000Z"


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- what is sent -------------------------------------------------------------------------------
TRACES: list[dict[str, Any]] = [
    {
        "id": "t-a",
        "name": "chat",
        "userId": "alice",
        "sessionId": "s-1",
        "tags": ["prod", "beta"],
        "environment": "prod",
        "release": "r1",
        "version": "v1",
        "timestamp": at(0),
        "metadata": {"team": "core", "tier": "gold", "note": "hello world"},
    },
    {
        "id": "t-b",
        "name": "search",
        "userId": "bob",
        "sessionId": "s-1",
        "tags": ["prod"],
        "environment": "prod",
        "release": "r2",
        "version": "v2",
        "timestamp": at(1),
        "metadata": {"team": "growth", "tier": "10"},
    },
    {
        "id": "t-c",
        "name": "chat-v2",
        "userId": "alicia",
        "tags": ["dev"],
        "environment": "dev",
        "version": "v1",
        "timestamp": at(2),
        "metadata": {"team": "core"},
    },
    {"id": "t-d", "name": "search", "sessionId": "s-2", "environment": "prod", "release": "r1", "timestamp": at(3)},
    {
        "id": "t-e",
        "userId": "carol",
        "tags": ["beta"],
        "environment": "dev",
        "timestamp": at(4),
        "metadata": {"tier": "x"},
    },
    {
        "id": "t-f",
        "name": "chat",
        "userId": "bob",
        "sessionId": "s-3",
        "tags": ["prod", "dev"],
        "environment": "staging",
        "release": "r3",
        "version": "v3",
        "timestamp": at(5),
    },
]
LONG_VALUE = "x" * 300  # Langfuse's events table truncates metadata values over 200 characters; we do not
# (event type, body). Model names match no price, so costs are only the ones sent.
OBSERVATIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "span-create",
        {"id": "o-a1", "traceId": "t-a", "name": "root", "startTime": at(0), "endTime": at(0, 10)}
        | {"environment": "prod", "metadata": {"step": "plan", "k": "7"}, "input": {"q": "hello"}, "output": "done"},
    ),
    (
        "generation-create",
        {"id": "o-a2", "traceId": "t-a", "parentObservationId": "o-a1", "name": "llm", "startTime": at(0, 1)}
        | {"endTime": at(0, 4), "completionStartTime": at(0, 2), "model": "acme-large", "level": "WARNING"}
        | {"usageDetails": {"input": 100, "output": 20}, "costDetails": {"input": 0.01, "output": 0.04}}
        | {"statusMessage": "slow answer", "version": "g1", "promptName": "qa", "promptVersion": 2}
        | {"environment": "prod", "output": "the answer"},
    ),
    (
        "event-create",
        {"id": "o-a3", "traceId": "t-a", "parentObservationId": "o-a1", "name": "log", "startTime": at(0, 5)}
        | {"level": "DEBUG", "environment": "prod"},
    ),
    (
        "span-create",
        {"id": "o-b1", "traceId": "t-b", "name": "root", "startTime": at(1), "endTime": at(1, 30)}
        | {"environment": "prod", "level": "ERROR", "statusMessage": "timeout"},
    ),
    (
        "generation-create",
        {"id": "o-b2", "traceId": "t-b", "parentObservationId": "o-b1", "name": "llm", "startTime": at(1, 2)}
        | {"endTime": at(1, 3), "model": "acme-small", "promptName": "qa", "promptVersion": 3}
        | {"usageDetails": {"input": 10, "output": 5}, "costDetails": {"input": 0.001, "output": 0.002}}
        | {"environment": "prod", "metadata": {"k": "12"}},
    ),
    (
        "generation-create",
        {"id": "o-c1", "traceId": "t-c", "name": "llm", "startTime": at(2), "endTime": at(2, 8)}
        | {"completionStartTime": at(2, 1), "model": "acme-xl", "usageDetails": {"input": 50, "output": 50}}
        | {"environment": "dev", "version": "g2", "input": "ping", "output": {"a": 1}},
    ),
    ("span-create", {"id": "o-d1", "traceId": "t-d", "name": "root", "startTime": at(3), "endTime": at(3, 1)}),
    (
        "tool-create",
        {"id": "o-e1", "traceId": "t-e", "name": "calc", "startTime": at(4), "endTime": at(4, 2)}
        | {"environment": "dev", "metadata": {"step": "compute", "blob": LONG_VALUE}},
    ),
    ("span-create", {"id": "o-x1", "traceId": "t-ghost", "name": "orphan", "startTime": at(6), "environment": "prod"}),
]
OBSERVATION_TYPES = {"span-create": "SPAN", "generation-create": "GENERATION", "event-create": "EVENT"} | {
    "tool-create": "TOOL"
}
SCORES: list[dict[str, Any]] = [
    {"id": "s-1", "traceId": "t-a", "name": "quality", "value": 0.9, "comment": "good", "environment": "prod"},
    {"id": "s-2", "traceId": "t-b", "name": "quality", "value": 0.3, "environment": "prod"},
    {"id": "s-3", "traceId": "t-a", "observationId": "o-a2", "name": "quality", "value": 0.5, "environment": "prod"},
    {"id": "s-4", "traceId": "t-a", "name": "tone", "value": "friendly", "dataType": "CATEGORICAL"}
    | {"environment": "prod"},
    {"id": "s-5", "traceId": "t-c", "name": "tone", "value": "rude", "dataType": "CATEGORICAL", "environment": "dev"},
    {"id": "s-6", "traceId": "t-b", "observationId": "o-b2", "name": "safe", "value": 1, "dataType": "BOOLEAN"}
    | {"source": "EVAL", "environment": "prod"},
    {"id": "s-7", "traceId": "t-c", "name": "safe", "value": 0, "dataType": "BOOLEAN", "source": "EVAL"}
    | {"environment": "dev"},
    {"id": "s-8", "traceId": "t-e", "name": "note", "value": "meh", "dataType": "TEXT", "environment": "dev"},
    {"id": "s-9", "sessionId": "s-1", "name": "quality", "value": 0.7, "environment": "prod", "configId": "cfg-1"},
    {"id": "s-10", "datasetRunId": "run-1", "name": "quality", "value": 0.1, "environment": "prod", "queueId": "q-1"},
    {"id": "s-11", "traceId": "t-ghost", "name": "quality", "value": 2, "environment": "prod"},
    {"id": "s-12", "traceId": "t-c", "observationId": "o-c1", "name": "tone", "value": "calm"}
    | {"dataType": "CATEGORICAL", "environment": "dev"},
]
SCORE_TIMES = {score["id"]: at(10, index) for index, score in enumerate(SCORES)}


def batch() -> list[dict[str, Any]]:
    def event(kind: str, body: dict[str, Any], ts: str) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "timestamp": ts, "type": kind, "body": body}

    return (
        [event("trace-create", trace, trace["timestamp"]) for trace in TRACES]
        + [event(kind, body, body["startTime"]) for kind, body in OBSERVATIONS]
        + [event("score-create", score, SCORE_TIMES[score["id"]]) for score in SCORES]
    )


# --- what it means, computed from what was sent -------------------------------------------------
def _seconds(start: str, end: str | None) -> float | None:
    return None if end is None else (moment(end) - moment(start)).total_seconds()


def _keys(values: dict[str, float], needle: str) -> float:
    return sum(v for k, v in values.items() if needle in k)


def observation_view(kind: str, body: dict[str, Any]) -> View:
    usage, costs = body.get("usageDetails", {}), body.get("costDetails", {})
    scores = [s for s in SCORES if s.get("observationId") == body["id"]]
    trace = next((trace_view(t) for t in TRACES if t["id"] == body["traceId"]), None)
    output_tokens, latency = _keys(usage, "output"), _seconds(body["startTime"], body.get("endTime"))
    return {
        "id": body["id"],
        "type": OBSERVATION_TYPES[kind],
        "name": body.get("name", ""),
        "traceId": body["traceId"],
        "start": moment(body["startTime"]),
        "end": moment(body["endTime"]) if "endTime" in body else None,
        "environment": body.get("environment", "default"),
        "level": body.get("level", "DEFAULT"),
        "statusMessage": body.get("statusMessage"),
        "version": body.get("version"),
        "model": body.get("model"),
        "promptName": body.get("promptName"),
        "promptVersion": body.get("promptVersion"),
        "input": body.get("input"),
        "output": body.get("output"),
        "metadata": body.get("metadata", {}),
        "isRoot": "parentObservationId" not in body,
        "latency": latency,
        "ttft": _seconds(body["startTime"], body.get("completionStartTime")),
        "tokensPerSecond": output_tokens / latency if latency else None,
        "inputTokens": _keys(usage, "input"),
        "outputTokens": output_tokens,
        "totalTokens": sum(usage.values()),
        "inputCost": _keys(costs, "input") if any("input" in k for k in costs) else None,
        "outputCost": _keys(costs, "output") if any("output" in k for k in costs) else None,
        "totalCost": sum(costs.values()),
        "numbers": [(s["name"], float(s["value"])) for s in scores if s.get("dataType") in (None, "BOOLEAN")],
        "categories": [f"{s['name']}:{s['value']}" for s in scores if s.get("dataType") == "CATEGORICAL"],
        "trace": trace,
    }


def _level(levels: list[str]) -> str:
    return next((level for level in ("ERROR", "WARNING", "DEFAULT", "DEBUG") if level in levels), "")


def trace_view(trace: dict[str, Any]) -> View:
    bodies = [(kind, body) for kind, body in OBSERVATIONS if body["traceId"] == trace["id"]]
    starts = [moment(body["startTime"]) for _, body in bodies]
    ends = [max(moment(body["startTime"]), moment(body.get("endTime", body["startTime"]))) for _, body in bodies]
    usage = [body.get("usageDetails", {}) for _, body in bodies]
    costs = [body.get("costDetails", {}) for _, body in bodies]
    levels = [body.get("level", "DEFAULT") for _, body in bodies]
    scores = [s for s in SCORES if s.get("traceId") == trace["id"]]
    return {
        "id": trace["id"],
        "name": trace.get("name", ""),
        "userId": trace.get("userId"),
        "sessionId": trace.get("sessionId"),
        "tags": trace.get("tags", []),
        "environment": trace["environment"],
        "release": trace.get("release"),
        "version": trace.get("version"),
        "timestamp": moment(trace["timestamp"]),
        "metadata": trace.get("metadata", {}),
        "latency": (max(ends) - min(starts)).total_seconds() if bodies else 0.0,
        "totalCost": sum(sum(c.values()) for c in costs),
        "inputCost": sum(_keys(c, "input") for c in costs),
        "outputCost": sum(_keys(c, "output") for c in costs),
        "inputTokens": sum(_keys(u, "input") for u in usage),
        "outputTokens": sum(_keys(u, "output") for u in usage),
        "totalTokens": sum(sum(u.values()) for u in usage),
        "counts": {level: levels.count(level) for level in ("ERROR", "WARNING", "DEFAULT", "DEBUG")},
        "level": _level(levels),
        "numbers": [(s["name"], float(s["value"])) for s in scores if s.get("dataType") in (None, "BOOLEAN")],
        "categories": [f"{s['name']}:{s['value']}" for s in scores if s.get("dataType") == "CATEGORICAL"],
    }


def score_view(score: dict[str, Any]) -> View:
    kind = score.get("dataType", "NUMERIC")
    numeric = kind in ("NUMERIC", "BOOLEAN")
    string_value = {"BOOLEAN": "True" if score["value"] == 1 else "False", "NUMERIC": None}.get(kind, score["value"])
    return {
        "id": score["id"],
        "traceId": score.get("traceId"),
        "observationId": score.get("observationId"),
        "sessionId": score.get("sessionId"),
        "name": score["name"],
        "value": float(score["value"]) if numeric else 0.0,
        "source": score.get("source", "API"),
        "comment": score.get("comment"),
        "dataType": kind,
        "stringValue": string_value,
        "environment": score["environment"],
        "timestamp": moment(SCORE_TIMES[score["id"]]),
        "trace": next((trace_view(t) for t in TRACES if t["id"] == score.get("traceId")), None),
    }


TRACE_VIEWS = [trace_view(t) for t in TRACES]
OBSERVATION_VIEWS = [observation_view(kind, body) for kind, body in OBSERVATIONS]
SCORE_VIEWS = [score_view(s) for s in SCORES]


def text(value: Any) -> str | None:
    """How I/O is stored: strings as sent, anything else as JSON."""
    return value if value is None or isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def has(value: Any, test: Callable[[Any], bool]) -> bool:
    """A null value matches no comparison (SQL semantics, as in Langfuse)."""
    return value is not None and test(value)


def trace_has(view: View, test: Callable[[View], bool], missing: View) -> bool:
    """A column of the related trace; a row without a stored trace compares as `missing` (Langfuse's
    LEFT JOIN defaults)."""
    return test(view["trace"] if view["trace"] is not None else missing)


NO_TRACE: View = {"name": "", "userId": None, "sessionId": None, "tags": []}


def c(kind: str, column: str, operator: str, value: Any = MISSING, key: str | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": kind, "column": column, "operator": operator}
    if value is not MISSING:
        condition["value"] = value
    if key is not None:
        condition["key"] = key
    return condition


Case = tuple[str, list[dict[str, Any]], Callable[[View], bool]]

TRACE_CASES: list[Case] = [
    ("string =", [c("string", "userId", "=", "alice")], lambda t: t["userId"] == "alice"),
    ("string contains", [c("string", "userId", "contains", "ali")], lambda t: has(t["userId"], lambda u: "ali" in u)),
    (
        "string does not contain",
        [c("string", "userId", "does not contain", "ali")],
        lambda t: has(t["userId"], lambda u: "ali" not in u),
    ),
    (
        "string starts with",
        [c("string", "User ID", "starts with", "al")],
        lambda t: has(t["userId"], lambda u: u.startswith("al")),
    ),
    (
        "string ends with",
        [c("string", "userId", "ends with", "ob")],
        lambda t: has(t["userId"], lambda u: u.endswith("ob")),
    ),
    ("string is not empty", [c("string", "release", "is not empty")], lambda t: bool(t["release"])),
    ("string = id", [c("string", "id", "=", "t-c")], lambda t: t["id"] == "t-c"),
    (
        "string on an options column",
        [c("string", "Name", "starts with", "chat")],
        lambda t: t["name"].startswith("chat"),
    ),
    (
        "stringOptions any of",
        [c("stringOptions", "name", "any of", ["chat", "search"])],
        lambda t: t["name"] in ("chat", "search"),
    ),
    (
        "stringOptions none of",
        [c("stringOptions", "traceName", "none of", ["chat", "search"])],
        lambda t: t["name"] not in ("chat", "search"),
    ),
    (
        "stringOptions env",
        [c("stringOptions", "environment", "none of", ["prod"])],
        lambda t: t["environment"] != "prod",
    ),
    (
        "arrayOptions any of",
        [c("arrayOptions", "tags", "any of", ["beta", "dev"])],
        lambda t: bool({"beta", "dev"} & set(t["tags"])),
    ),
    ("arrayOptions none of", [c("arrayOptions", "tags", "none of", ["prod"])], lambda t: "prod" not in t["tags"]),
    (
        "arrayOptions all of",
        [c("arrayOptions", "Tags", "all of", ["prod", "beta"])],
        lambda t: {"prod", "beta"} <= set(t["tags"]),
    ),
    ("arrayOptions all of nothing", [c("arrayOptions", "tags", "all of", [])], lambda t: True),
    ("stringOptions on an array", [c("stringOptions", "traceTags", "any of", ["dev"])], lambda t: "dev" in t["tags"]),
    ("datetime >", [c("datetime", "timestamp", ">", at(1))], lambda t: t["timestamp"] > moment(at(1))),
    ("datetime >=", [c("datetime", "timestamp", ">=", at(1))], lambda t: t["timestamp"] >= moment(at(1))),
    (
        "datetime <",
        [c("datetime", "Timestamp", "<", "2026-12-01T11:03:00+01:00")],
        lambda t: t["timestamp"] < moment(at(3)),
    ),
    ("datetime <=", [c("datetime", "timestamp", "<=", at(3))], lambda t: t["timestamp"] <= moment(at(3))),
    ("number latency >=", [c("number", "latency", ">=", 10)], lambda t: t["latency"] >= 10),
    ("number latency <= (no observations is 0)", [c("number", "Latency (s)", "<=", 0)], lambda t: t["latency"] <= 0),
    ("number totalCost >", [c("number", "totalCost", ">", 0.02)], lambda t: t["totalCost"] > 0.02),
    ("number totalCost <", [c("number", "Total Cost ($)", "<", 0.01)], lambda t: t["totalCost"] < 0.01),
    ("number inputCost", [c("number", "inputCost", ">=", 0.01)], lambda t: t["inputCost"] >= 0.01),
    ("number outputCost", [c("number", "outputCost", "<", 0.01)], lambda t: t["outputCost"] < 0.01),
    ("number inputTokens =", [c("number", "inputTokens", "=", 100)], lambda t: t["inputTokens"] == 100),
    ("number outputTokens >", [c("number", "outputTokens", ">", 20)], lambda t: t["outputTokens"] > 20),
    ("number totalTokens", [c("number", "tokens", ">=", 100)], lambda t: t["totalTokens"] >= 100),
    ("number errorCount", [c("number", "errorCount", ">=", 1)], lambda t: t["counts"]["ERROR"] >= 1),
    ("number warningCount", [c("number", "Warning Level Count", "=", 0)], lambda t: t["counts"]["WARNING"] == 0),
    ("number debugCount", [c("number", "debugCount", "=", 1)], lambda t: t["counts"]["DEBUG"] == 1),
    ("number defaultCount", [c("number", "defaultCount", ">", 0)], lambda t: t["counts"]["DEFAULT"] > 0),
    (
        "stringOptions level",
        [c("stringOptions", "level", "any of", ["ERROR", "WARNING"])],
        lambda t: t["level"] in ("ERROR", "WARNING"),
    ),
    (
        "stringOptions level none of",
        [c("stringOptions", "Level", "none of", ["DEFAULT"])],
        lambda t: t["level"] != "DEFAULT",
    ),
    (
        "stringObject =",
        [c("stringObject", "metadata", "=", "core", key="team")],
        lambda t: t["metadata"].get("team") == "core",
    ),
    (
        "stringObject contains",
        [c("stringObject", "Metadata", "contains", "world", key="note")],
        lambda t: "world" in t["metadata"].get("note", ""),
    ),
    (
        "stringObject does not contain (a missing key reads as '')",
        [c("stringObject", "metadata", "does not contain", "row", key="team")],
        lambda t: "row" not in t["metadata"].get("team", ""),
    ),
    (
        "stringObject starts with",
        [c("stringObject", "metadata", "starts with", "1", key="tier")],
        lambda t: t["metadata"].get("tier", "").startswith("1"),
    ),
    (
        "stringObject ends with",
        [c("stringObject", "metadata", "ends with", "world", key="note")],
        lambda t: t["metadata"].get("note", "").endswith("world"),
    ),
    ("stringObject is set", [c("stringObject", "metadata", "is set", key="tier")], lambda t: "tier" in t["metadata"]),
    (
        "stringObject is not set",
        [c("stringObject", "metadata", "is not set", "", key="tier")],
        lambda t: "tier" not in t["metadata"],
    ),
    (
        "stringObject legacy presence",
        [c("stringObject", "metadata", "contains", "", key="team")],
        lambda t: "team" in t["metadata"],
    ),
    (
        "numberObject scores >=",
        [c("numberObject", "Scores", ">=", 0.5, key="quality")],
        lambda t: any(n == "quality" and v >= 0.5 for n, v in t["numbers"]),
    ),
    (
        "numberObject scores <",
        [c("numberObject", "scores_avg", "<", 0.5, key="quality")],
        lambda t: any(n == "quality" and v < 0.5 for n, v in t["numbers"]),
    ),
    (
        "numberObject boolean score",
        [c("numberObject", "scores", "=", 1, key="safe")],
        lambda t: any(n == "safe" and v == 1 for n, v in t["numbers"]),
    ),
    (
        "categoryOptions any of",
        [c("categoryOptions", "score_categories", "any of", ["friendly", "rude"], key="tone")],
        lambda t: bool({"tone:friendly", "tone:rude"} & set(t["categories"])),
    ),
    (
        "categoryOptions none of",
        [c("categoryOptions", "Scores (categorical)", "none of", ["friendly"], key="tone")],
        lambda t: "tone:friendly" not in t["categories"],
    ),
    (
        "stringOptions on categories",
        [c("stringOptions", "score_categories", "any of", ["tone:rude"])],
        lambda t: "tone:rude" in t["categories"],
    ),
    ("boolean = false", [c("boolean", "bookmarked", "=", False)], lambda t: True),  # nothing can bookmark
    ("boolean = true", [c("boolean", "⭐️", "=", True)], lambda t: False),
    ("boolean <> true", [c("boolean", "bookmarked", "<>", True)], lambda t: True),
    ("boolean <> false", [c("boolean", "bookmarked", "<>", False)], lambda t: False),
    ("null is null", [c("null", "userId", "is null", "")], lambda t: t["userId"] is None),
    ("null is not null", [c("null", "sessionId", "is not null")], lambda t: t["sessionId"] is not None),
    ("null name (stored empty)", [c("null", "name", "is null")], lambda t: t["name"] == ""),
    ("null tags", [c("null", "tags", "is null")], lambda t: t["tags"] == []),
    ("null metadata", [c("null", "metadata", "is not null")], lambda t: bool(t["metadata"])),
    ("null release", [c("null", "release", "is null")], lambda t: t["release"] is None),
    (
        "two conditions: all must hold",
        [c("stringOptions", "environment", "any of", ["prod"]), c("arrayOptions", "tags", "any of", ["beta"])],
        lambda t: t["environment"] == "prod" and "beta" in t["tags"],
    ),
]

OBSERVATION_CASES: list[Case] = [
    ("string =", [c("string", "traceId", "=", "t-a")], lambda o: o["traceId"] == "t-a"),
    ("string contains", [c("string", "name", "contains", "oo")], lambda o: "oo" in o["name"]),
    (
        "string does not contain (null excluded)",
        [c("string", "statusMessage", "does not contain", "slow")],
        lambda o: has(o["statusMessage"], lambda m: "slow" not in m),
    ),
    (
        "string starts with",
        [c("string", "version", "starts with", "g")],
        lambda o: has(o["version"], lambda v: v.startswith("g")),
    ),
    (
        "string ends with",
        [c("string", "Status Message", "ends with", "out")],
        lambda o: has(o["statusMessage"], lambda m: m.endswith("out")),
    ),
    ("string is not empty", [c("string", "statusMessage", "is not empty")], lambda o: bool(o["statusMessage"])),
    (
        "string input",
        [c("string", "input", "contains", "hello")],
        lambda o: has(text(o["input"]), lambda i: "hello" in i),
    ),
    ("string output =", [c("string", "output", "=", "the answer")], lambda o: text(o["output"]) == "the answer"),
    ("string id", [c("string", "id", "starts with", "o-b")], lambda o: o["id"].startswith("o-b")),
    ("string on options", [c("string", "Type", "=", "SPAN")], lambda o: o["type"] == "SPAN"),
    (
        "stringOptions type",
        [c("stringOptions", "type", "any of", ["GENERATION", "TOOL"])],
        lambda o: o["type"] in ("GENERATION", "TOOL"),
    ),
    ("stringOptions level", [c("stringOptions", "level", "none of", ["DEFAULT"])], lambda o: o["level"] != "DEFAULT"),
    (
        "stringOptions model",
        [c("stringOptions", "model", "any of", ["acme-large"])],
        lambda o: o["model"] == "acme-large",
    ),
    (
        "stringOptions model none of (null excluded)",
        [c("stringOptions", "providedModelName", "none of", ["acme-large"])],
        lambda o: has(o["model"], lambda m: m != "acme-large"),
    ),
    (
        "stringOptions environment",
        [c("stringOptions", "environment", "any of", ["dev"])],
        lambda o: o["environment"] == "dev",
    ),
    (
        "stringOptions name",
        [c("stringOptions", "Name", "any of", ["llm", "calc"])],
        lambda o: o["name"] in ("llm", "calc"),
    ),
    (
        "arrayOptions trace tags any of",
        [c("arrayOptions", "traceTags", "any of", ["beta"])],
        lambda o: trace_has(o, lambda t: "beta" in t["tags"], NO_TRACE),
    ),
    (
        "arrayOptions trace tags none of",
        [c("arrayOptions", "tags", "none of", ["prod"])],
        lambda o: trace_has(o, lambda t: "prod" not in t["tags"], NO_TRACE),
    ),
    (
        "arrayOptions trace tags all of",
        [c("arrayOptions", "Trace Tags", "all of", ["prod", "beta"])],
        lambda o: trace_has(o, lambda t: {"prod", "beta"} <= set(t["tags"]), NO_TRACE),
    ),
    (
        "stringOptions on trace tags",
        [c("stringOptions", "tags", "any of", ["dev"])],
        lambda o: trace_has(o, lambda t: "dev" in t["tags"], NO_TRACE),
    ),
    (
        "string userId",
        [c("string", "userId", "=", "bob")],
        lambda o: trace_has(o, lambda t: t["userId"] == "bob", NO_TRACE),
    ),
    (
        "string userId does not contain",
        [c("string", "User ID", "does not contain", "ali")],
        lambda o: trace_has(o, lambda t: has(t["userId"], lambda u: "ali" not in u), NO_TRACE),
    ),
    (
        "string sessionId",
        [c("string", "sessionId", "=", "s-1")],
        lambda o: trace_has(o, lambda t: t["sessionId"] == "s-1", NO_TRACE),
    ),
    (
        "stringOptions traceName",
        [c("stringOptions", "traceName", "any of", ["chat"])],
        lambda o: trace_has(o, lambda t: t["name"] == "chat", NO_TRACE),
    ),
    (
        "stringOptions traceName none of",
        [c("stringOptions", "traceName", "none of", ["chat"])],
        lambda o: trace_has(o, lambda t: t["name"] != "chat", NO_TRACE),
    ),
    ("datetime startTime >=", [c("datetime", "startTime", ">=", at(2))], lambda o: o["start"] >= moment(at(2))),
    ("datetime startTime <", [c("datetime", "Start Time", "<", at(1))], lambda o: o["start"] < moment(at(1))),
    (
        "datetime endTime <=",
        [c("datetime", "endTime", "<=", at(1, 3))],
        lambda o: has(o["end"], lambda e: e <= moment(at(1, 3))),
    ),
    (
        "datetime endTime >",
        [c("datetime", "endTime", ">", at(2))],
        lambda o: has(o["end"], lambda e: e > moment(at(2))),
    ),
    ("number latency >", [c("number", "latency", ">", 2)], lambda o: has(o["latency"], lambda v: v > 2)),
    ("number latency =", [c("number", "Latency (s)", "=", 1)], lambda o: has(o["latency"], lambda v: v == 1)),
    ("number timeToFirstToken", [c("number", "timeToFirstToken", "=", 1)], lambda o: has(o["ttft"], lambda v: v == 1)),
    (
        "number tokensPerSecond",
        [c("number", "tokensPerSecond", ">", 6)],
        lambda o: has(o["tokensPerSecond"], lambda v: v > 6),
    ),
    ("number inputTokens", [c("number", "inputTokens", ">=", 50)], lambda o: o["inputTokens"] >= 50),
    ("number outputTokens", [c("number", "outputTokens", "<", 10)], lambda o: o["outputTokens"] < 10),
    ("number totalTokens", [c("number", "totalTokens", "=", 100)], lambda o: o["totalTokens"] == 100),
    ("number Total Tokens", [c("number", "Total Tokens", ">", 100)], lambda o: o["totalTokens"] > 100),
    (
        "number promptVersion",
        [c("number", "promptVersion", "<", 3)],
        lambda o: has(o["promptVersion"], lambda v: v < 3),
    ),
    ("number inputCost", [c("number", "inputCost", "<=", 0.005)], lambda o: has(o["inputCost"], lambda v: v <= 0.005)),
    (
        "number outputCost",
        [c("number", "Output Cost ($)", ">", 0.01)],
        lambda o: has(o["outputCost"], lambda v: v > 0.01),
    ),
    ("number totalCost", [c("number", "totalCost", ">", 0.004)], lambda o: o["totalCost"] > 0.004),
    ("number totalCost = 0", [c("number", "totalCost", "=", 0)], lambda o: o["totalCost"] == 0),
    (
        "stringObject metadata",
        [c("stringObject", "metadata", "=", "7", key="k")],
        lambda o: o["metadata"].get("k") == "7",
    ),
    (
        "stringObject long value",
        [c("stringObject", "metadata", "starts with", "xxx", key="blob")],
        lambda o: o["metadata"].get("blob", "").startswith("xxx"),
    ),
    (
        "numberObject metadata >",
        [c("numberObject", "metadata", ">", 10, key="k")],
        lambda o: has(o["metadata"].get("k"), lambda v: float(v) > 10),
    ),
    (
        "numberObject metadata <=",
        [c("numberObject", "metadata", "<=", 7, key="k")],
        lambda o: has(o["metadata"].get("k"), lambda v: float(v) <= 7),
    ),
    (
        "categoryOptions metadata any of",
        [c("categoryOptions", "metadata", "any of", ["plan", "compute"], key="step")],
        lambda o: o["metadata"].get("step") in ("plan", "compute"),
    ),
    (
        "categoryOptions metadata none of",
        [c("categoryOptions", "metadata", "none of", ["plan"], key="step")],
        lambda o: o["metadata"].get("step") != "plan",
    ),
    (
        "numberObject scores",
        [c("numberObject", "scores_avg", ">", 0.4, key="quality")],
        lambda o: any(n == "quality" and v > 0.4 for n, v in o["numbers"]),
    ),
    (
        "numberObject boolean score",
        [c("numberObject", "Scores", "=", 1, key="safe")],
        lambda o: any(n == "safe" and v == 1 for n, v in o["numbers"]),
    ),
    (
        "categoryOptions scores any of",
        [c("categoryOptions", "score_categories", "any of", ["calm"], key="tone")],
        lambda o: "tone:calm" in o["categories"],
    ),
    (
        "categoryOptions scores none of",
        [c("categoryOptions", "Scores (categorical)", "none of", ["calm"], key="tone")],
        lambda o: "tone:calm" not in o["categories"],
    ),
    ("boolean isRootObservation =", [c("boolean", "isRootObservation", "=", True)], lambda o: o["isRoot"]),
    ("boolean isRootObservation <>", [c("boolean", "isRootObservation", "<>", True)], lambda o: not o["isRoot"]),
    ("null endTime", [c("null", "endTime", "is null", "")], lambda o: o["end"] is None),
    ("null model", [c("null", "model", "is not null")], lambda o: o["model"] is not None),
    ("null promptName", [c("null", "Prompt Name", "is null")], lambda o: o["promptName"] is None),
    (
        "null userId of the trace",
        [c("null", "userId", "is null")],
        lambda o: trace_has(o, lambda t: t["userId"] is None, NO_TRACE),
    ),
    (
        "null traceName",
        [c("null", "Trace Name", "is null")],
        lambda o: trace_has(o, lambda t: t["name"] == "", NO_TRACE),
    ),
    (
        "two conditions",
        [c("string", "type", "=", "GENERATION"), c("number", "latency", ">=", 3)],
        lambda o: o["type"] == "GENERATION" and has(o["latency"], lambda v: v >= 3),
    ),
]

SCORE_CASES: list[Case] = [
    ("string traceId", [c("string", "traceId", "=", "t-a")], lambda s: s["traceId"] == "t-a"),
    ("string id starts with", [c("string", "ID", "starts with", "s-1")], lambda s: s["id"].startswith("s-1")),
    ("string sessionId", [c("string", "sessionId", "=", "s-1")], lambda s: s["sessionId"] == "s-1"),
    (
        "string comment contains",
        [c("string", "comment", "contains", "goo")],
        lambda s: has(s["comment"], lambda m: "goo" in m),
    ),
    (
        "string comment does not contain",
        [c("string", "Comment", "does not contain", "x")],
        lambda s: has(s["comment"], lambda m: "x" not in m),
    ),
    ("string authorUserId", [c("string", "authorUserId", "=", "u-1")], lambda s: False),  # ingestion sets none
    (
        "string observationId ends with",
        [c("string", "observationId", "ends with", "2")],
        lambda s: has(s["observationId"], lambda i: i.endswith("2")),
    ),
    (
        "stringOptions name",
        [c("stringOptions", "name", "any of", ["tone", "safe"])],
        lambda s: s["name"] in ("tone", "safe"),
    ),
    (
        "stringOptions dataType",
        [c("stringOptions", "dataType", "none of", ["NUMERIC"])],
        lambda s: s["dataType"] != "NUMERIC",
    ),
    ("string on dataType", [c("string", "Data Type", "=", "BOOLEAN")], lambda s: s["dataType"] == "BOOLEAN"),
    ("stringOptions source", [c("stringOptions", "source", "any of", ["EVAL"])], lambda s: s["source"] == "EVAL"),
    (
        "stringOptions environment",
        [c("stringOptions", "environment", "any of", ["dev"])],
        lambda s: s["environment"] == "dev",
    ),
    (
        "stringOptions stringValue",
        [c("stringOptions", "stringValue", "any of", ["friendly", "True"])],
        lambda s: s["stringValue"] in ("friendly", "True"),
    ),
    ("number value >=", [c("number", "value", ">=", 0.5)], lambda s: s["value"] >= 0.5),
    ("number value <", [c("number", "Value", "<", 0.2)], lambda s: s["value"] < 0.2),
    ("number value =", [c("number", "value", "=", 0)], lambda s: s["value"] == 0),
    (
        "datetime timestamp >",
        [c("datetime", "timestamp", ">", SCORE_TIMES["s-5"])],
        lambda s: s["timestamp"] > moment(SCORE_TIMES["s-5"]),
    ),
    (
        "datetime timestamp <=",
        [c("datetime", "timestamp", "<=", SCORE_TIMES["s-3"])],
        lambda s: s["timestamp"] <= moment(SCORE_TIMES["s-3"]),
    ),
    (
        "stringOptions userId of the trace",
        [c("stringOptions", "userId", "any of", ["alice"])],
        lambda s: trace_has(s, lambda t: t["userId"] == "alice", NO_TRACE),
    ),
    (
        "stringOptions userId none of",
        [c("stringOptions", "User ID", "none of", ["alice"])],
        lambda s: trace_has(s, lambda t: has(t["userId"], lambda u: u != "alice"), NO_TRACE),
    ),
    (
        "stringOptions traceName",
        [c("stringOptions", "traceName", "any of", ["search"])],
        lambda s: trace_has(s, lambda t: t["name"] == "search", NO_TRACE),
    ),
    (
        "arrayOptions trace tags all of",
        [c("arrayOptions", "traceTags", "all of", ["prod"])],
        lambda s: trace_has(s, lambda t: "prod" in t["tags"], NO_TRACE),
    ),
    (
        "arrayOptions trace tags none of",
        [c("arrayOptions", "Trace Tags", "none of", ["prod"])],
        lambda s: trace_has(s, lambda t: "prod" not in t["tags"], NO_TRACE),
    ),
    (
        "arrayOptions trace tags any of",
        [c("arrayOptions", "trace_tags", "any of", ["beta", "dev"])],
        lambda s: trace_has(s, lambda t: bool({"beta", "dev"} & set(t["tags"])), NO_TRACE),
    ),
    (
        "null traceName",
        [c("null", "traceName", "is null")],
        lambda s: trace_has(s, lambda t: t["name"] == "", NO_TRACE),
    ),
    ("null traceId", [c("null", "traceId", "is null")], lambda s: s["traceId"] is None),
    ("null comment", [c("null", "comment", "is not null", "")], lambda s: s["comment"] is not None),
    (
        "two conditions",
        [c("stringOptions", "name", "any of", ["quality"]), c("number", "value", ">", 0.4)],
        lambda s: s["name"] == "quality" and s["value"] > 0.4,
    ),
]


# --- the running server -------------------------------------------------------------------------
@dataclass(frozen=True)
class World:
    url: str
    headers: dict[str, str]
    project_id: str
    public_key: str
    secret_key: str
    services: Any


async def _everything_stored(services: Any, project_id: str) -> bool:
    counts = [len(await rows_of(services, table, project_id)) for table in ("traces", "observations", "scores")]
    return counts == [len(TRACES), len(OBSERVATIONS), len(SCORES)]


@pytest.fixture(scope="module")
async def world(base_services: Any, redis_url: str) -> AsyncIterator[World]:
    """One project with the data above, a real server on loopback and ingestion workers."""
    prefix = f"thtest-filters-{secrets.token_hex(4)}"
    services, close = prefixed(base_services, prefix)
    project = create_project(base_services.metadata, "filters", project_id=f"flt-{secrets.token_hex(5)}")
    key = create_api_key(base_services.metadata, project.id, salt=base_services.settings.salt)
    token = base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    runner = await start_ingestion(services)
    try:
        with server_thread(base_services, prefix) as url:
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
                response = await client.post("/api/public/ingestion", json={"batch": batch()})
            assert response.status_code == 207 and not response.json()["errors"], response.text
            await until(lambda: _everything_stored(services, project.id), timeout=60)
            yield World(url, headers, project.id, key.public_key, key.secret_key, services)
    finally:
        await runner.shutdown(10)
        await close()
        client_ = redis.Redis(**bullmq_connection(redis_url))
        if keys := list(client_.scan_iter(f"{prefix}:*", count=1000)):
            client_.delete(*keys)
        client_.close()


async def get(world: World, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=world.url, headers=world.headers, timeout=30) as client:
        return await client.get(f"/api/public/{path}", params=params)


async def ids_of(world: World, path: str, **params: Any) -> list[str]:
    response = await get(world, path, **params)
    assert response.status_code == 200, response.text
    return sorted(item["id"] for item in response.json()["data"])


def expected(views: list[View], test: Callable[[View], bool]) -> list[str]:
    return sorted(view["id"] for view in views if test(view))


def _ids(cases: list[Case]) -> list[str]:
    return [name for name, _, _ in cases]


# --- the grammar, route by route ----------------------------------------------------------------
@pytest.mark.parametrize(("name", "conditions", "test"), TRACE_CASES, ids=_ids(TRACE_CASES))
async def test_traces_filter(
    world: World, name: str, conditions: list[dict[str, Any]], test: Callable[[View], bool]
) -> None:
    assert await ids_of(world, "traces", filter=json.dumps(conditions)) == expected(TRACE_VIEWS, test), name


@pytest.mark.parametrize("path", ["observations", "v2/observations"])
@pytest.mark.parametrize(("name", "conditions", "test"), OBSERVATION_CASES, ids=_ids(OBSERVATION_CASES))
async def test_observations_filter(
    world: World, path: str, name: str, conditions: list[dict[str, Any]], test: Callable[[View], bool]
) -> None:
    params = {"filter": json.dumps(conditions)} | ({"limit": 100} if path == "observations" else {"limit": 1000})
    assert await ids_of(world, path, **params) == expected(OBSERVATION_VIEWS, test), name


@pytest.mark.parametrize("path", ["v2/scores", "v3/scores"])
@pytest.mark.parametrize(("name", "conditions", "test"), SCORE_CASES, ids=_ids(SCORE_CASES))
async def test_scores_filter(
    world: World, path: str, name: str, conditions: list[dict[str, Any]], test: Callable[[View], bool]
) -> None:
    assert await ids_of(world, path, filter=json.dumps(conditions), limit=100) == expected(SCORE_VIEWS, test), name


async def test_v1_scores_filter_keeps_to_trace_scores(world: World) -> None:
    conditions = [c("number", "value", ">=", 0.5)]
    want = expected(SCORE_VIEWS, lambda s: s["value"] >= 0.5 and s["traceId"] is not None)
    assert await ids_of(world, "scores", filter=json.dumps(conditions)) == want


async def test_a_filter_overrides_the_simple_parameter_on_its_column(world: World) -> None:
    by_filter = json.dumps([c("string", "userId", "=", "alice")])
    assert await ids_of(world, "traces", userId="bob", filter=by_filter) == ["t-a"]
    # Other simple parameters still apply.
    assert await ids_of(world, "traces", environment="dev", filter=by_filter) == []
    starts = json.dumps([c("datetime", "startTime", ">=", at(2))])
    assert await ids_of(world, "v2/observations", toStartTime=at(1), filter=starts) == ["o-c1", "o-d1", "o-e1", "o-x1"]
    by_trace = json.dumps([c("string", "traceId", "=", "t-b")])
    assert await ids_of(world, "observations", traceId="t-a", filter=by_trace) == ["o-b1", "o-b2"]


ROUTES = ["traces", "observations", "v2/observations", "v2/scores", "v3/scores", "scores"]
STRING_COLUMN = {"traces": "userId", "observations": "name", "v2/observations": "name"}
TIME_COLUMN = {"traces": "timestamp", "observations": "startTime", "v2/observations": "startTime"}


def _bad_filters(path: str) -> list[tuple[Any, str]]:
    """(filter, what the message must name) for one route."""
    text_column = STRING_COLUMN.get(path, "name")
    time_column = TIME_COLUMN.get(path, "timestamp")
    number_column = "value" if "scores" in path else "latency"
    cases: list[tuple[Any, str]] = [
        ([c("string", "nope", "=", "x")], "nope"),
        ([c("number", text_column, ">", 1)], text_column),  # a type the column does not take
        ([c("string", text_column, ">", "x")], text_column),  # an operator the type does not have
        ([c("string", text_column, "matches", "x")], "matches"),
        ([c("number", number_column, ">", "5")], number_column),  # a string for a number
        ([c("number", number_column, ">", True)], number_column),
        ([c("datetime", time_column, ">", "2026-01-01T00:00:00")], time_column),  # no time zone
        ([c("datetime", time_column, ">", 1767225600000)], time_column),
        ([c("stringOptions", text_column, "any of", [])], text_column),
        ([c("stringOptions", text_column, "any of", "x")], text_column),
        ([c("string", text_column, "=", "x", key="k")], text_column),  # a key where none belongs
        ([c("string", text_column, "=", "x") | {"negate": True}], "negate"),
        ([c("positionInTrace", text_column, "=", 1, key="root")], "positionInTrace"),
        ([{"type": "string", "operator": "=", "value": "x"}], "column"),
        ("[{", "JSON"),
        (json.dumps({"type": "string"}), "array"),
        ([c("null", text_column, "is null", "nothing")], text_column),
    ]
    if path in ("traces", "observations", "v2/observations"):
        cases += [
            ([c("stringObject", "metadata", "=", "x")], "metadata"),  # the key is missing
            ([c("boolean", "bookmarked" if path == "traces" else "isRootObservation", "=", "true")], "true"),
        ]
    if path == "traces":
        cases.append(([c("number", "commentCount", ">", 0)], "commentCount"))
    return cases


@pytest.mark.parametrize("path", ROUTES)
async def test_a_filter_that_cannot_be_applied_is_a_400_naming_it(world: World, path: str) -> None:
    for conditions, named in _bad_filters(path):
        text_filter = conditions if isinstance(conditions, str) else json.dumps(conditions)
        response = await get(world, path, filter=text_filter)
        body = response.json()
        assert response.status_code == 400, (path, conditions, response.text)
        assert body["parameter"] == "filter" and named in body["error"], (path, conditions, body)


@pytest.mark.parametrize(
    "path", [*ROUTES, "traces/t-a", "observations/o-a1", "sessions", "sessions/s-1", "projects", "v2/scores/s-1"]
)
async def test_an_unknown_query_parameter_is_a_400_naming_it(world: World, path: str) -> None:
    response = await get(world, path, zzBogus="1")
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == "zzBogus" and "not a parameter" in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("traces", {"useEventsTable": "true"}, "useEventsTable"),
        ("v2/observations", {"useEventsTable": "false"}, "useEventsTable"),
        ("traces/t-a", {"publicKey": "pk-lf-x"}, "publicKey"),
        ("v2/observations", {"parseIoAsJson": "true"}, "parseIoAsJson"),
        ("traces", {"fields": "core,bogus"}, "fields"),
        ("traces/t-a", {"fields": "observation"}, "fields"),
        ("v2/scores", {"fields": "score,traces"}, "fields"),
        ("v2/scores", {"value": "0.5"}, "operator"),
        ("scores", {"operator": ">"}, "value"),
        ("scores", {"value": "0.5", "operator": "~"}, "operator"),
    ],
)
async def test_documented_parameters_we_refuse_answer_400(
    world: World, path: str, params: dict[str, str], parameter: str
) -> None:
    response = await get(world, path, **params)
    assert response.status_code == 400 and response.json()["parameter"] == parameter, response.text


# --- the parameters that were missing -----------------------------------------------------------
async def test_v2_observations_user_and_session_live_on_the_trace(world: World) -> None:
    def on_trace(test: Callable[[View], bool]) -> list[str]:
        return expected(OBSERVATION_VIEWS, lambda o: o["trace"] is not None and test(o["trace"]))

    assert await ids_of(world, "v2/observations", userId="bob") == on_trace(lambda t: t["userId"] == "bob")
    assert await ids_of(world, "v2/observations", sessionId="s-1") == on_trace(lambda t: t["sessionId"] == "s-1")
    both = await ids_of(world, "v2/observations", sessionId="s-1", userId="alice", type="GENERATION")
    assert both == ["o-a2"]
    assert await ids_of(world, "observations", userId="bob") == on_trace(lambda t: t["userId"] == "bob")
    # An empty parentObservationId means "no parent" (as Langfuse's v2).
    assert await ids_of(world, "v2/observations", parentObservationId="") == expected(
        OBSERVATION_VIEWS, lambda o: o["isRoot"]
    )


async def test_v2_observations_io_metadata_and_trace_groups(world: World) -> None:
    groups = "core,basic,io,metadata,trace_context"
    plain = (await get(world, "v2/observations", fields=groups, parseIoAsJson="false", traceId="t-a")).json()
    expanded = (await get(world, "v2/observations", fields=groups, expandMetadata="blob,step", traceId="t-e")).json()
    every = (await get(world, "v2/observations", fields=groups, expandMetadata="*", traceId="t-e")).json()
    by_id = {o["id"]: o for o in plain["data"]}
    assert json.loads(by_id["o-a1"]["input"]) == {"q": "hello"} and by_id["o-a1"]["output"] == "done"  # raw text
    # Metadata is never truncated, with or without expandMetadata.
    for body in (expanded, every):
        assert body["data"][0]["metadata"] == {"step": "compute", "blob": LONG_VALUE}
    sent = TRACES[0]
    for observation in plain["data"]:
        assert (observation["userId"], observation["sessionId"], observation["traceName"]) == (
            sent["userId"],
            sent["sessionId"],
            sent["name"],
        )
        assert (observation["tags"], observation["release"], observation["bookmarked"]) == (
            sorted(sent["tags"]),
            sent["release"],
            False,
        )
    orphan = (await get(world, "v2/observations", fields="core,basic,trace_context", traceId="t-ghost")).json()["data"]
    assert [(o["id"], o["userId"], o["traceName"], o["tags"]) for o in orphan] == [("o-x1", None, None, None)]
    parsed = await sdk_parse("v5", [(V5 + "observations.types.observations_v2response.ObservationsV2Response", plain)])
    assert {o["id"]: o["user_id"] for o in parsed[0]["data"]} == {o["id"]: "alice" for o in plain["data"]}


async def test_trace_by_id_fields(world: World) -> None:
    full = (await get(world, "traces/t-a")).json()
    core = (await get(world, "traces/t-a", fields="core")).json()
    with_observations = (await get(world, "traces/t-a", fields="core,observations")).json()
    with_scores_io = (await get(world, "traces/t-a", fields="scores,io")).json()
    sent_observations = sorted(body["id"] for _, body in OBSERVATIONS if body["traceId"] == "t-a")
    sent_scores = sorted(s["id"] for s in SCORES if s.get("traceId") == "t-a")
    assert sorted(o["id"] for o in full["observations"]) == sent_observations
    assert sorted(s["id"] for s in full["scores"]) == sent_scores
    assert full["metadata"] == TRACES[0]["metadata"] and full["latency"] == TRACE_VIEWS[0]["latency"]
    assert (core["observations"], core["scores"], core["latency"], core["totalCost"]) == ([], [], -1, -1)
    assert (core["input"], core["metadata"], core["id"], core["name"]) == (None, None, "t-a", "chat")
    assert sorted(o["id"] for o in with_observations["observations"]) == sent_observations
    assert with_observations["scores"] == [] and with_observations["latency"] == -1
    assert sorted(s["id"] for s in with_scores_io["scores"]) == sent_scores and with_scores_io["observations"] == []
    assert with_scores_io["metadata"] == TRACES[0]["metadata"]
    kind = V2 + "commons.types.trace_with_full_details.TraceWithFullDetails"
    parsed_full, parsed_core = await sdk_parse("v2", [(kind, full), (kind, core)])
    assert sorted(o["id"] for o in parsed_full["observations"]) == sent_observations
    assert (parsed_core["observations"], parsed_core["scores"], parsed_core["latency"]) == ([], [], -1)


async def test_v1_and_v2_scores_trace_tags_value_and_fields(world: World) -> None:
    tagged = expected(SCORE_VIEWS, lambda s: s["trace"] is not None and "prod" in s["trace"]["tags"])
    assert await ids_of(world, "v2/scores", traceTags="prod") == tagged
    assert await ids_of(world, "v2/scores", traceTags=["prod", "beta"]) == expected(
        SCORE_VIEWS, lambda s: s["trace"] is not None and {"prod", "beta"} <= set(s["trace"]["tags"])
    )
    # With a trace filter, the trace's environment must be one asked for as well (as Langfuse).
    assert await ids_of(world, "v2/scores", traceTags="dev", environment="dev") == expected(
        SCORE_VIEWS,
        lambda s: s["trace"] is not None and "dev" in s["trace"]["tags"] and s["trace"]["environment"] == "dev",
    )
    comparisons: dict[str, Callable[[float], bool]] = {
        ">=": lambda v: v >= 0.5,
        "<": lambda v: v < 0.5,
        "!=": lambda v: v != 0.5,
    }
    for operator, test in comparisons.items():
        want = sorted(s["id"] for s in SCORE_VIEWS if test(s["value"]))
        assert await ids_of(world, "v2/scores", value=0.5, operator=operator) == want, operator
    only_score = (await get(world, "v2/scores", fields="score", traceId="t-a")).json()["data"]
    assert only_score and all(s["trace"] is None for s in only_score)
    with_trace = (await get(world, "scores", fields="score,trace", traceId="t-a")).json()["data"]
    assert {s["trace"]["userId"] for s in with_trace} == {"alice"}


# --- the SDK's batched evaluation reads only what the filter selects -----------------------------
SDK_SCRIPT = r"""
import json, os, sys
from langfuse import Evaluation, EvaluatorInputs, Langfuse

lf = Langfuse(public_key=os.environ["PK"], secret_key=os.environ["SK"], base_url=os.environ["BASE_URL"])
flt, name = sys.argv[1], sys.argv[2]
page = lf.api.observations.get_many(filter=flt, fields="core,basic", limit=1000)

def mapper(*, item):
    return EvaluatorInputs(input=item.input, output=item.output, expected_output=None, metadata={"id": item.id})

def judge(*, input, output, expected_output=None, metadata=None, **_):
    return Evaluation(name=name, value=1.0)

result = lf.run_batched_evaluation(
    mapper=mapper, evaluators=[judge], filter=flt, fields="core,basic", fetch_batch_size=2
)
lf.flush()
lf.shutdown()
print(json.dumps({
    "ids": sorted(o.id for o in page.data),
    "types": sorted({o.type for o in page.data}),
    "fetched": result.total_items_fetched,
    "created": result.total_scores_created,
    "completed": result.completed,
}))
"""


async def run_sdk(world: World, sdk: str, script: str, *args: str, tmp_path: Path) -> Any:
    path = tmp_path / f"script_{sdk}.py"
    path.write_text(script)
    site = await asyncio.to_thread(sdk_dir, sdk)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site), "PK": world.public_key, "SK": world.secret_key}
    env |= {"BASE_URL": world.url, "OTEL_SDK_DISABLED": "false"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(path), *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.slow
async def test_sdk_batched_evaluation_scores_only_matching_observations(world: World, tmp_path: Path) -> None:
    conditions = [c("arrayOptions", "tags", "any of", ["prod"]), c("string", "type", "=", "GENERATION")]
    want = expected(
        OBSERVATION_VIEWS,
        lambda o: o["type"] == "GENERATION" and o["trace"] is not None and "prod" in o["trace"]["tags"],
    )
    assert want == ["o-a2", "o-b2"]  # the data has generations outside the filter too
    name = f"judge-{uuid.uuid4().hex[:8]}"
    ran = await run_sdk(world, "v5", SDK_SCRIPT, json.dumps(conditions), name, tmp_path=tmp_path)
    assert (ran["ids"], ran["types"], ran["fetched"], ran["created"], ran["completed"]) == (
        want,
        ["GENERATION"],
        len(want),
        len(want),
        True,
    )

    async def judged() -> list[dict[str, Any]]:
        rows = await world.services.clickhouse.query(
            "SELECT observation_id, trace_id FROM scores FINAL WHERE project_id = {p:String} AND name = {n:String}",
            {"p": world.project_id, "n": name},
            workload=Workload.INTERACTIVE,
        )
        return rows if len(rows) >= len(want) else []

    scored = await until(judged, timeout=60)
    assert sorted((r["observation_id"], r["trace_id"]) for r in scored) == sorted(
        (o["id"], o["traceId"]) for o in OBSERVATION_VIEWS if o["id"] in want
    )


# --- every parameter an SDK can send is declared ------------------------------------------------
SDK_CLIENTS = {
    "v5": [
        "langfuse/api/observations/raw_client.py",
        "langfuse/api/scores/raw_client.py",
        "langfuse/api/trace/raw_client.py",
    ],
    "v2": [f"langfuse/api/resources/{name}/client.py" for name in ("trace", "observations", "score", "sessions")],
}
_SDK_GET = re.compile(r'request\(\s*f?"(api/public/[^"]+)",\s*method="GET",\s*params=\{(.*?)\n\s*\},', re.DOTALL)


def sdk_query_parameters(sdk: str) -> dict[str, set[str]]:
    """Per GET path (OpenAPI form), the query parameter names the SDK's generated client sends."""
    found: dict[str, set[str]] = {}
    for relative in SDK_CLIENTS[sdk]:
        source = (sdk_dir(sdk) / relative).read_text()
        for path, params in _SDK_GET.findall(source):
            openapi_path = "/" + re.sub(r"\{jsonable_encoder\((\w+)\)\}", r"{\1}", path)
            found.setdefault(openapi_path, set()).update(re.findall(r'^\s*"(\w+)":', params, re.MULTILINE))
    return found


@pytest.mark.slow  # reads the installed SDKs (installing them on first use)
@pytest.mark.parametrize("sdk", ["v5", "v2"])
def test_every_query_parameter_an_sdk_sends_is_declared(services: Any, sdk: str) -> None:
    document = create_app(services).openapi()
    sent = sdk_query_parameters(sdk)
    assert "/api/public/v2/observations" in sent or "/api/public/observations" in sent, sent
    for path, names in sent.items():
        declared = {p["name"] for p in document["paths"][path]["get"].get("parameters", []) if p["in"] == "query"}
        assert names <= declared, (sdk, path, sorted(names - declared))
