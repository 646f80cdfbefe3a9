"""End to end: the `tracehouse` command as an operator runs it, in real subprocesses."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from tracehouse import __version__

pytestmark = pytest.mark.slow  # real `tracehouse` subprocesses

BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TRACEHOUSE_LOG_LEVEL": "info"}


class Proc:
    """A tracehouse subprocess whose output lines are collected as they arrive."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tracehouse", *args],
            env={**BASE_ENV, **env},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            for stream, sink in ((self.popen.stdout, self.out), (self.popen.stderr, self.err))
        ]
        for pump in self._pumps:
            pump.start()

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, where: str = "out", timeout: float = 90) -> str:
        lines = self.out if where == "out" else self.err
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(lines):
                if re.search(pattern, line):
                    return line
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not seen; exit={self.popen.poll()}\nout={self.out}\nerr={self.err[-20:]}")

    def children(self) -> list[int]:
        # Any thread may have started a child (the embedded Redis starts from a worker thread).
        tasks = Path(f"/proc/{self.popen.pid}/task").glob("*/children")
        return [int(pid) for path in tasks for pid in path.read_text().split()]

    def stop(self, sig=signal.SIGINT, timeout: float = 20) -> tuple[int, float]:
        started = time.monotonic()
        self.popen.send_signal(sig)
        code = self.popen.wait(timeout)
        took = time.monotonic() - started
        self._close_pipes()
        return code, took

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._close_pipes()

    def _close_pipes(self):
        for pump in self._pumps:
            pump.join(10)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def _descendants(pid: int) -> list[int]:
    found = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in (int(c) for c in path.read_text().split()):
            found += [child, *_descendants(child)]
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _role_pids(proc: Proc) -> dict[str, int]:
    """The supervised children of `tracehouse serve`, by what they run."""
    roles = {
        "engine": " engine ",
        "web": " web",
        "worker-ingestion": "--role ingestion",
        "worker-export": "--role export",
        "redis": "redis-server",
    }
    found = {}
    for pid in _descendants(proc.popen.pid):
        line = _cmdline(pid) + " "
        for role, needle in roles.items():
            if needle in line:
                found[role] = pid
    return found


def _ingest_and_read_back(base: str, public: str, secret: str) -> dict:
    auth = (public, secret)
    event = {
        "id": "e-1",
        "timestamp": "2026-11-01T12:00:00Z",
        "type": "trace-create",
        "body": {"id": "serve-trace", "name": "through the engine", "userId": "u1"},
    }
    accepted = httpx.post(f"{base}/api/public/ingestion", json={"batch": [event]}, auth=auth, timeout=30)
    assert accepted.status_code == 207 and not accepted.json()["errors"], accepted.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        read = httpx.get(f"{base}/api/public/traces/serve-trace", auth=auth, timeout=30)
        if read.status_code == 200:
            return read.json()
        time.sleep(0.3)
    raise AssertionError("the ingested trace never became readable")


def _worker_roles(proc: Proc) -> set[str]:
    return {json.loads(line)["role"] for line in list(proc.err) if '"worker_started"' in line}


def test_serve_supervises_engine_web_and_workers_and_stops_them_all(tmp_path):
    port = free_port()
    data_dir = tmp_path / "data"
    proc = Proc(["serve", "--port", str(port), "--data-dir", str(data_dir)], {}, tmp_path)
    try:
        proc.wait_for("Press Ctrl-C to stop")
        banner = "\n".join(proc.out)
        assert banner.startswith(f"tracehouse {__version__} is running at http://127.0.0.1:{port}"), banner
        public = re.search(r"LANGFUSE_PUBLIC_KEY=(pk-lf-[0-9a-f-]{36})", banner).group(1)
        secret = re.search(r"LANGFUSE_SECRET_KEY=(sk-lf-[0-9a-f-]{36})", banner).group(1)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/public/health").json()["status"] == "OK"
        ready = httpx.get(f"{base}/api/ready")
        assert ready.status_code == 200, ready.text
        assert "http_requests_total" in httpx.get(f"{base}/metrics").text
        # Separate processes: the engine owns chDB, web and one worker per role talk to it.
        pids = _role_pids(proc)
        assert set(pids) == {"engine", "web", "worker-ingestion", "worker-export", "redis"}, pids
        # Each worker says which role it consumes once its queues run (a loaded machine may see the
        # banner first: the banner waits for web, not for the workers).
        deadline = time.monotonic() + 60
        while (roles := _worker_roles(proc)) != {"ingestion", "export"} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert roles == {"ingestion", "export"}, proc.err[-20:]
        trace = _ingest_and_read_back(base, public, secret)
        assert (trace["name"], trace["userId"]) == ("through the engine", "u1")

        # A crashed child is restarted (with backoff) and the system carries on.
        os.kill(pids["worker-ingestion"], signal.SIGKILL)
        proc.wait_for('"child_restarted"', where="err", timeout=30)
        restarted = _role_pids(proc).get("worker-ingestion")
        assert restarted and restarted != pids["worker-ingestion"]

        everyone = _descendants(proc.popen.pid)
        code, took = proc.stop(signal.SIGINT)
    finally:
        proc.kill()
    assert code in (0, 130), proc.err[-10:]
    assert took < 15
    assert not [pid for pid in everyone if _alive(pid)], "a child process outlived tracehouse"

    # A second start on the same data keeps the project and does not mint or print a new secret.
    proc = Proc(["serve", "--port", str(port), "--data-dir", str(data_dir)], {}, tmp_path)
    try:
        proc.wait_for("Press Ctrl-C to stop")
        banner = "\n".join(proc.out)
        assert f"LANGFUSE_PUBLIC_KEY={public}" in banner
        assert "LANGFUSE_SECRET_KEY=sk-lf-" not in banner
        assert _ingest_and_read_back(f"http://127.0.0.1:{port}", public, secret)["id"] == "serve-trace"

        # SIGKILL of the supervisor itself: every child still goes (the kernel tells them).
        everyone = _descendants(proc.popen.pid)
        assert len(everyone) >= 5
        proc.popen.kill()
        proc.popen.wait(10)
        deadline = time.monotonic() + 20
        while [pid for pid in everyone if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in everyone if _alive(pid)], [_cmdline(p) for p in everyone if _alive(p)]
    finally:
        proc.kill()


def test_serve_single_process_mode_still_serves(tmp_path):
    port = free_port()
    proc = Proc(["serve", "--single-process", "--port", str(port), "--data-dir", str(tmp_path / "d")], {}, tmp_path)
    try:
        proc.wait_for("Press Ctrl-C to stop")
        started = [json.loads(line) for line in proc.err if '"worker_started"' in line]
        assert started and started[0]["role"] == "all"
        assert httpx.get(f"http://127.0.0.1:{port}/api/ready").status_code == 200
        code, took = proc.stop(signal.SIGINT)
    finally:
        proc.kill()
    assert code in (0, 130) and took < 15


def _run(args, env, cwd):
    return subprocess.run(
        [sys.executable, "-m", "tracehouse", *args],
        env={**BASE_ENV, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_headless_init_project_is_idempotent(tmp_path):
    env = {
        "TRACEHOUSE_DATA_DIR": str(tmp_path / "d"),
        "LANGFUSE_INIT_PROJECT_ID": "proj-ci",
        "LANGFUSE_INIT_PROJECT_NAME": "CI project",
        "LANGFUSE_INIT_PROJECT_PUBLIC_KEY": "pk-lf-ci-public",
        "LANGFUSE_INIT_PROJECT_SECRET_KEY": "sk-lf-ci-secret",
    }
    first = _run(["migrate"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "clickhouse: 0001_traces" in first.stdout
    second = _run(["migrate"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "metadata: up to date" in second.stdout and "clickhouse: up to date" in second.stdout
    projects = _run(["projects", "list"], env, tmp_path).stdout.strip().splitlines()
    assert [line.split("\t")[:2] for line in projects] == [["proj-ci", "CI project"]]
    keys = _run(["keys", "list"], env, tmp_path).stdout.strip().splitlines()
    assert len(keys) == 1 and "pk-lf-ci-public" in keys[0] and "sk-lf-ci-secret" not in keys[0]


def test_projects_and_keys_commands(tmp_path):
    env = {"TRACEHOUSE_DATA_DIR": str(tmp_path / "d")}
    created = _run(["projects", "create", "demo", "--id", "demo"], env, tmp_path)
    assert created.returncode == 0, created.stderr
    assert re.search(r"LANGFUSE_SECRET_KEY=sk-lf-", created.stdout)
    key = _run(["keys", "create", "--project", "demo", "--note", "second"], env, tmp_path)
    public = re.search(r"LANGFUSE_PUBLIC_KEY=(\S+)", key.stdout).group(1)
    assert _run(["keys", "revoke", public], env, tmp_path).returncode == 0
    listed = _run(["keys", "list", "--project", "demo"], env, tmp_path).stdout
    states = {line.split("\t")[2]: line.split("\t")[4] for line in listed.strip().splitlines()}
    assert states[public] == "revoked" and list(states.values()).count("active") == 1
    unknown = _run(["keys", "create", "--project", "nope"], env, tmp_path)
    assert unknown.returncode == 1 and unknown.stderr.startswith("error:")
    assert len(unknown.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("role", ["export", "ingestion"])
def test_worker_roles_start_beside_web_on_shared_servers(tmp_path, redis_url, metadata_url, role):
    shared = {"REDIS_URL": redis_url, "DATABASE_URL": metadata_url, "REDIS_KEY_PREFIX": "thtest-cli"}
    port = free_port()
    # chDB allows one process per directory, so each process has its own embedded ClickHouse here.
    web = Proc(["web", "--port", str(port)], {**shared, "TRACEHOUSE_DATA_DIR": str(tmp_path / "web")}, tmp_path)
    health_port = free_port()
    worker = Proc(
        ["worker", "--role", role],
        {**shared, "TRACEHOUSE_DATA_DIR": str(tmp_path / "w"), "TRACEHOUSE_WORKER_PORT": str(health_port)},
        tmp_path,
    )
    try:
        line = worker.wait_for('"worker_started"', where="err")
        started = json.loads(line)
        assert started["role"] == role
        # Export consumes only export queues; the metering cron lives with ingestion.
        assert ("cloud-usage-metering-queue" in started["queues"]) == (role == "ingestion")
        worker.wait_for('"worker_health_listening"', where="err")
        health = httpx.get(f"http://127.0.0.1:{health_port}/api/health")
        assert health.status_code == 200 and health.json()["redis"] is True, health.text
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, web.err[-10:]
            time.sleep(0.2)
        code, took = worker.stop(signal.SIGTERM)
        assert code == 0, worker.err[-10:]
        assert took < 10
        worker.wait_for('"worker_stopped"', where="err", timeout=1)
        code, _ = web.stop(signal.SIGTERM)
        assert code in (0, 130)
    finally:
        web.kill()
        worker.kill()


def test_doctor_reports_dependencies_queues_and_the_settings_each_class_gets(tmp_path):
    env = {
        "TRACEHOUSE_DATA_DIR": str(tmp_path / "d"),
        "LANGFUSE_WORKER_ROLE": "export",
        "TRACEHOUSE_CLICKHOUSE_INTERACTIVE_MAX_THREADS": "1",
    }
    result = _run(["doctor", "--json"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and set(report["dependencies"].values()) == {"ok"}
    assert report["role"] == "export"
    assert set(report["queues"]) == {
        "blobstorage-integration-queue",
        "blobstorage-integration-processing-queue",
        "batch-export-queue",
        "batch-export-cleanup-queue",
    }
    classes = {c["workload"]: c for c in report["classes"]}
    assert set(classes) == {"interactive", "ingestion", "export"}
    assert classes["interactive"]["applied"]["max_threads"] == "1"  # what we set is what the engine applied
    assert classes["export"]["applied"]["max_memory_usage"] == str(classes["export"]["sent"]["max_memory_usage"])
    # On the embedded default every class is the same user: the doctor says so.
    assert any("exports run as the interactive user" in w for w in report["warnings"])

    unreachable = _run(["doctor"], {**env, "REDIS_URL": "redis://127.0.0.1:1"}, tmp_path)
    assert unreachable.returncode == 1 and unreachable.stderr.startswith("error: cannot reach Redis")
