"""ClickHouse quotas: per user, resources used per fixed time interval.

As in ClickHouse, intervals are aligned to the epoch (no randomize), `queries` is counted when a
query starts and every other resource when it ends; a query is refused (QUOTA_EXCEEDED, code 201)
once any resource of any interval has reached its maximum.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from tracehouse.engine import errors
from tracehouse.engine.errors import EngineError
from tracehouse.engine.users import User


class QuotaTracker:
    def __init__(self, clock: object = time.time) -> None:
        self._clock = clock
        self._used: dict[tuple[str, int], tuple[int, dict[str, float]]] = {}
        self._lock = threading.Lock()

    def start(self, user: User, *, kind: str) -> None:
        """Count one query of `kind` ('select', 'insert' or other), or refuse it."""
        if user.quota is None:
            return
        now = self._now()
        with self._lock:
            for interval in user.quota.intervals:
                used = self._window(user.name, interval.duration_s, now)
                for resource, limit in interval.limits.items():
                    if used.get(resource, 0.0) >= limit:
                        raise self._exceeded(user, interval.duration_s, resource, used[resource], limit, now)
            for interval in user.quota.intervals:
                used = self._window(user.name, interval.duration_s, now)
                used["queries"] = used.get("queries", 0.0) + 1
                if kind in ("select", "insert"):
                    used[f"query_{kind}s"] = used.get(f"query_{kind}s", 0.0) + 1

    def finish(self, user: User, usage: Mapping[str, float]) -> None:
        """Add what a finished (or failed) query used: errors, rows, bytes, execution_time (s)."""
        if user.quota is None:
            return
        now = self._now()
        with self._lock:
            for interval in user.quota.intervals:
                used = self._window(user.name, interval.duration_s, now)
                for resource, amount in usage.items():
                    used[resource] = used.get(resource, 0.0) + amount

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def _window(self, user: str, duration: int, now: float) -> dict[str, float]:
        index = int(now // duration)
        key = (user, duration)
        current = self._used.get(key)
        if current is None or current[0] != index:
            current = (index, {})
            self._used[key] = current
        return current[1]

    def _exceeded(self, user: User, duration: int, resource: str, used: float, limit: float, now: float) -> EngineError:
        ends = datetime.fromtimestamp((int(now // duration) + 1) * duration, UTC).strftime("%Y-%m-%d %H:%M:%S")
        quota = user.quota.name if user.quota else ""
        return EngineError(
            errors.QUOTA_EXCEEDED,
            f"Quota for user `{user.name}` for {duration}s has been exceeded: {resource} = {used:g}/{limit:g}. "
            f"Interval will end at {ends}. Name of quota template: `{quota}`",
        )
