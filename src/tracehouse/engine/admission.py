"""Admission by workload class: background queries wait while interactive ones run.

ClickHouse's `priority` pauses lower-priority queries only inside one server's scheduler, and chDB
honours it loosely, so the engine also enforces it at the door: a query whose effective priority
is lower than interactive (`priority` > 1: the ingestion and export profiles) starts only when no
interactive query is running or waiting for a slot, or after `max_wait_s` at the latest, so a busy
dashboard delays background work but never starves it. A query already running is not paused.
`max_wait_s` 0 turns the gate off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

INTERACTIVE_PRIORITY = 1  # ClickHouse: 1 is the highest priority, 0 means no priority at all
# Measured on the production topology in bench/isolation.py's setup (2 cores, 1M traces, 1,000
# events/s): reads' p95 during ingestion x3.8-4.3 of idle without the gate, x2.0-2.8 with it.
DEFAULT_MAX_WAIT_MS = 2000


def is_background(settings: dict[str, str]) -> bool:
    try:
        return int(settings.get("priority") or 0) > INTERACTIVE_PRIORITY
    except ValueError:
        return False


class Admission:
    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s
        self._interactive = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self.waited = 0  # background queries that had to wait (for the engine's log and tests)

    @property
    def interactive(self) -> int:
        return self._interactive

    @asynccontextmanager
    async def admit(self, background: bool) -> AsyncIterator[float]:
        """Hold a place for one query; yields how long it waited (seconds)."""
        if background:
            yield await self._wait_for_quiet()
            return
        self._interactive += 1
        self._quiet.clear()
        try:
            yield 0.0
        finally:
            self._interactive -= 1
            if self._interactive == 0:
                self._quiet.set()

    async def _wait_for_quiet(self) -> float:
        if self.max_wait_s <= 0 or self._quiet.is_set():
            return 0.0
        self.waited += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        with contextlib.suppress(TimeoutError):  # admitted anyway: delayed, never starved
            await asyncio.wait_for(self._quiet.wait(), self.max_wait_s)
        return loop.time() - started
