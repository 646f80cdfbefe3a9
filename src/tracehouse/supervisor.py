"""`tracehouse serve`: the whole system as separate child processes, kept alive and stopped together.

The embedded default runs the same topology as production: an engine process that owns the chDB
directory and speaks ClickHouse's HTTP protocol, `web`, an ingestion worker and an export worker
(plus the embedded Redis). Separate processes mean separate GILs and event loops, so a burst of
ingestion cannot slow the web process's reads, and the OS can schedule each role at its own
priority.

- A child that exits unexpectedly is restarted with exponential backoff (logged `child_restarted`);
  the backoff resets once a child has stayed up for a while.
- One Ctrl-C (SIGINT) or SIGTERM stops every child within seconds: the web and workers first (they
  finish or hand back their jobs), then the engine.
- Children ask the kernel to kill them when the supervisor dies (PR_SET_PDEATHSIG with SIGKILL), so
  even a SIGKILLed supervisor leaves no orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from tracehouse.logging import get_logger

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # SIGKILL, not SIGTERM: without the supervisor nobody orders the shutdown (workers before the engine
    # they write to), so the children end as the supervisor did, and stalled-job recovery takes over.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgid(0, 0)  # its own process group: a terminal's Ctrl-C reaches the supervisor only


@dataclass(frozen=True)
class ChildSpec:
    name: str
    args: tuple[str, ...]  # the `tracehouse` sub-command and its options
    env: Mapping[str, str]
    stop_last: bool = False  # stopped after every other child (the engine the others still talk to)


@dataclass
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None  # when a crashed child is due to start again
    backoff_s: float = 1.0


@dataclass
class Supervisor:
    """Starts children in order, restarts the ones that crash, stops them in reverse order."""

    max_backoff_s: float = 30.0
    stable_after_s: float = 60.0  # up this long: the next crash starts the backoff over
    poll_s: float = 0.2
    _children: list[_Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._log = get_logger("tracehouse.supervisor")

    def start(self, spec: ChildSpec) -> subprocess.Popen[bytes]:
        child = _Child(spec)
        self._children.append(child)
        self._spawn(child)
        assert child.process is not None
        return child.process

    def alive(self, name: str) -> bool:
        return name in self.pids()

    def pids(self) -> dict[str, int]:
        return {c.spec.name: c.process.pid for c in self._children if c.process and c.process.poll() is None}

    def _spawn(self, child: _Child) -> None:
        spec = child.spec

        child.process = subprocess.Popen(  # noqa: S603 - our own interpreter and sub-commands
            [sys.executable, "-m", "tracehouse", *spec.args],
            env={**os.environ, **spec.env},
            stdout=sys.stderr,  # the supervisor's stdout is the banner; children log to stderr
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl must run in the child before exec
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        self._log.info("child_started", child=spec.name, pid=child.process.pid)

    async def watch(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: restart children that exit, with backoff."""
        while not stop.is_set():
            now = time.monotonic()
            for child in self._children:
                self._check(child, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_s)

    def _check(self, child: _Child, now: float) -> None:
        process = child.process
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
                self._log.warning(
                    "child_restarted",
                    child=child.spec.name,
                    restarts=child.restarts,
                    pid=child.process.pid if child.process else None,
                )
            return
        if process is None or process.poll() is None:
            return
        if now - child.started_at >= self.stable_after_s:
            child.backoff_s = 1.0
        child.restart_at = now + child.backoff_s
        self._log.error("child_exited", child=child.spec.name, code=process.returncode, restart_in_s=child.backoff_s)
        child.backoff_s = min(child.backoff_s * 2, self.max_backoff_s)

    def stop(self, timeout_s: float) -> None:
        """SIGTERM every child at once, except those that stop last, then those; each phase waits up to
        `timeout_s` and SIGKILLs what is left. Blocking."""
        for child in self._children:
            child.restart_at = None
        for last in (False, True):
            phase = [c for c in self._children if c.spec.stop_last is last and c.process and c.process.poll() is None]
            for child in phase:
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            for child in phase:
                assert child.process is not None
                try:
                    child.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._log.warning("child_killed", child=child.spec.name, after_s=timeout_s)
                    child.process.kill()
                    child.process.wait(5)
                self._log.info("child_stopped", child=child.spec.name, code=child.process.returncode)
