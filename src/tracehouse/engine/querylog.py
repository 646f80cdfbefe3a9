"""The engine's query log: who ran which query with which settings, and how it ended.

chDB's own `system.query_log` (enabled by the engine's config) has ClickHouse's counters but always
shows chDB's single `default` user; so every query also sets `log_comment` to a JSON object naming
the engine's user and query id, and this log keeps the engine's view: user, profile, the settings
the query ran with (after the profile and the stricter-limit rule), duration, rows and outcome.
The last `capacity` entries are kept in memory and served at `GET /engine/query_log`.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class QueryLogEntry:
    query_id: str
    user: str
    profile: str
    query: str
    started_at: float  # unix seconds
    settings: dict[str, str] = field(default_factory=dict)  # what the query ran with
    client_settings: dict[str, str] = field(default_factory=dict)  # what the request asked for
    status: str = "running"  # running, finished, error, cancelled
    duration_ms: float = 0.0
    result_rows: int = 0
    result_bytes: int = 0
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    exception_code: int = 0
    exception: str = ""
    cancel_reason: str = ""  # e.g. "client disconnected", "engine shutdown"
    admission_wait_ms: float = 0.0  # a background query held back while interactive ones ran


class QueryLog:
    def __init__(self, capacity: int = 10_000) -> None:
        self._entries: deque[QueryLogEntry] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, entry: QueryLogEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def select(self, filters: Mapping[str, str], limit: int) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._entries)
        rows = [asdict(e) for e in reversed(entries)]
        for key, wanted in filters.items():
            rows = [row for row in rows if str(row.get(key)) == wanted]
        return rows[:limit]


def json_lines(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(json.dumps(row, separators=(",", ":")).encode() + b"\n" for row in rows)
