"""Hostile clients against `tracehouse web`: does the server stay flat?

    .venv/bin/python bench/hostile.py [--bomb-mb 1024] [--oversized-mb 400] [--slow-headers 300]
                                      [--slow-bodies 20] [--bad-keys 2000]
                                      [--quick] [--results-dir DIR] [--no-record]

Starts `tracehouse web` as its own process on a scratch data directory (embedded everything) with a
2 s header timeout and a 3 s body timeout (the defaults, 10 s and 60 s, only make the run longer;
the other limits are the defaults: 4.5 MB ingestion bodies, 10 MB OTLP bodies, 50 MB decompressed,
256 connections per client), warms it up with ordinary requests and records the server process's
RSS (VmRSS) and open file descriptors. Then, one after another:

1. gzip bombs: --bomb-mb of zeros gzipped (about 1 MB on the wire per GiB) to the OTLP endpoint,
   3 times, while a health check runs every 50 ms on a connection of its own: the answers, the
   server's peak RSS, the slowest health check;
2. oversized bodies to batch ingestion, --oversized-mb each, one with Content-Length and one
   chunked: the answer and how much the client could send before it (the server stops reading);
3. slowloris headers: --slow-headers connections sending their headers a byte every 0.5 s: how many
   were refused at once (connections per client) and how long until the server closed the rest;
4. slow bodies: --slow-bodies requests sending their body at 1 byte/s: answers and time to close;
5. a flood of --bad-keys requests with distinct made-up key pairs (8 connections), and non-ASCII
   Authorization headers: the answers and requests/s;
6. 50 clients leaving mid-body, and one keep-alive connection that gets a 400 and then a 207.

Then it closes every client, waits 3 s (past the header timeout, so idle connections are gone),
sends the warm-up requests again and records RSS and descriptors once more. Targets: RSS growth
< 5 % and no more sockets open from before the probes to after, and no error line in the server's
log (a client leaving mid-body is an info line, `client_disconnected`). Other descriptors are
recorded by kind, with the files opened meanwhile (chDB opens /proc files for each new pool thread).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from tracehouse.metadata import create_api_key, create_project
from tracehouse.runtime import migrate, open_services
from tracehouse.settings import load_settings

if __package__:  # python -m bench.hostile
    from bench import common
else:  # python bench/hostile.py: bench/ is on sys.path
    import common

HOST = "127.0.0.1"
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0


# --- the server process ------------------------------------------------------------------------
def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def open_files(pid: int) -> Counter[str]:
    paths: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("/"):
                paths[target] += 1
    return paths


def open_fds(pid: int) -> dict[str, int]:
    """Open descriptors by kind (socket, pipe, anon_inode:[eventfd], file, ...) and their total."""
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/"):
            kinds["file"] += 1
        elif target.startswith(("socket:", "pipe:")):
            kinds[target.split(":")[0]] += 1
        else:
            kinds[target] += 1  # anon_inode:[eventfd], anon_inode:[eventpoll], ...
    return {"total": sum(kinds.values()), **dict(sorted(kinds.items()))}


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# --- clients -----------------------------------------------------------------------------------
def basic(public: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{public}:{secret}".encode()).decode()


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def status_of(sock: socket.socket, timeout: float = 5) -> int | None:
    """The status of the answer on `sock`, None when it closes without one."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
    except (TimeoutError, ConnectionError):
        return None
    return int(data.split()[1])


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def ordinary(port: int, auth: str) -> dict[str, int]:
    """The warm-up: one of each ordinary request."""
    batch = {
        "batch": [
            {
                "id": str(uuid.uuid4()),
                "timestamp": "2026-12-01T00:00:00Z",
                "type": "trace-create",
                "body": {"id": str(uuid.uuid4()), "name": "hostile-bench"},
            }
        ]
    }
    json_headers = {"Authorization": auth, "Content-Type": "application/json"}
    otlp = zlib.compress(json.dumps({"resourceSpans": []}).encode(), wbits=16 + zlib.MAX_WBITS)
    return {
        "health": request(port, "GET", "/api/public/health"),
        "ingestion": request(port, "POST", "/api/public/ingestion", json.dumps(batch).encode(), json_headers),
        "otel_gzip": request(
            port, "POST", "/api/public/otel/v1/traces", otlp, {**json_headers, "Content-Encoding": "gzip"}
        ),
        "traces": request(port, "GET", "/api/public/traces?limit=1", headers={"Authorization": auth}),
        "bad_key": request(port, "GET", "/api/public/traces", headers={"Authorization": basic("pk-lf-x", "sk-lf-y")}),
    }


def gzip_of_zeros(size: int) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(size >> 20)]
    parts.append(packer.flush())
    return b"".join(parts)


# --- probes ------------------------------------------------------------------------------------
def probe_bombs(port: int, pid: int, auth: str, bomb_mb: int) -> dict[str, Any]:
    bomb = gzip_of_zeros(bomb_mb << 20)
    headers = {"Authorization": auth, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    stop = threading.Event()
    latencies: list[float] = []

    def health() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            while not stop.is_set():
                started = time.perf_counter()
                conn.request("GET", "/api/public/health")
                conn.getresponse().read()
                latencies.append(time.perf_counter() - started)
                time.sleep(0.05)
        finally:
            conn.close()

    checker = threading.Thread(target=health)
    statuses = []
    started = time.perf_counter()
    with PeakRss(pid) as rss:
        baseline = rss.peak
        checker.start()
        try:
            for _ in range(3):
                statuses.append(request(port, "POST", "/api/public/otel/v1/traces", bomb, headers))
        finally:
            stop.set()
            checker.join()
    return {
        "bomb_wire_bytes": len(bomb),
        "bomb_inflated_bytes": bomb_mb << 20,
        "statuses": statuses,
        "seconds": time.perf_counter() - started,
        "peak_rss_growth_mb": (rss.peak - baseline) / 1e6,
        "slowest_health_ms": max(latencies) * 1000 if latencies else None,
        "health_checks": len(latencies),
    }


def _push_body(port: int, auth: str, size: int, *, chunked: bool) -> dict[str, Any]:
    piece = b"x" * 65536
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(size)}
    headers = {"Authorization": auth, "Content-Type": "application/json", **framing}
    sent = 0
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(head("POST", "/api/public/ingestion", headers))
        try:
            while sent < size:
                if select.select([sock], [], [], 0)[0]:
                    break  # answered (or closed)
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status = status_of(sock)
    return {"status": status, "client_sent_mb": sent / 1e6, "seconds": time.perf_counter() - started}


def probe_oversized(port: int, auth: str, oversized_mb: int) -> dict[str, Any]:
    size = oversized_mb * 1_000_000
    return {
        "content_length": _push_body(port, auth, size, chunked=False),
        "chunked": _push_body(port, auth, size, chunked=True),
    }


def probe_slow_headers(port: int, connections: int) -> dict[str, Any]:
    sockets = []
    for _ in range(connections):
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.setblocking(False)
        sockets.append(sock)
    started = time.perf_counter()
    closed_at: dict[int, float] = {}
    try:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.send(b"POST /api/public/ingestion HTTP/1.1\r\nHost: x\r\n")
        refused_window = 0.3
        while len(closed_at) < len(sockets) and time.perf_counter() - started < HEADER_TIMEOUT_S * 5:
            for i, sock in enumerate(sockets):
                if i in closed_at:
                    continue
                try:
                    sock.send(b"X")
                    if select.select([sock], [], [], 0)[0] and not sock.recv(1):
                        closed_at[i] = time.perf_counter() - started
                except OSError:
                    closed_at[i] = time.perf_counter() - started
            time.sleep(0.5)
        refused = sum(1 for t in closed_at.values() if t < refused_window + 0.5)
        timed_out = [t for t in closed_at.values() if t >= refused_window + 0.5]
    finally:
        for sock in sockets:
            sock.close()
    return {
        "connections": connections,
        "refused_at_once": refused,
        "closed_by_header_timeout": len(timed_out),
        "still_open": connections - len(closed_at),
        "last_closed_s": max(timed_out) if timed_out else None,
    }


def probe_slow_bodies(port: int, auth: str, requests: int) -> dict[str, Any]:
    sockets = [socket.create_connection((HOST, port), timeout=10) for _ in range(requests)]
    headers = {"Authorization": auth, "Content-Type": "application/json", "Content-Length": "10000"}
    started = time.perf_counter()
    answers: Counter[str] = Counter()
    ended: dict[int, float] = {}
    try:
        for sock in sockets:
            sock.sendall(head("POST", "/api/public/ingestion", headers))
        while len(ended) < len(sockets) and time.perf_counter() - started < BODY_TIMEOUT_S * 5:
            for i, sock in enumerate(sockets):
                if i in ended:
                    continue
                try:
                    sock.sendall(b" ")
                except OSError:
                    ended[i] = time.perf_counter() - started
                    answers["reset"] += 1
            readable, _, _ = select.select([s for i, s in enumerate(sockets) if i not in ended], [], [], 1.0)
            for sock in readable:
                i = sockets.index(sock)
                status = status_of(sock, 1)
                answers[str(status) if status else "closed"] += 1
                ended[i] = time.perf_counter() - started
    finally:
        for sock in sockets:
            sock.close()
    return {
        "requests": requests,
        "answers": dict(answers),
        "still_open": requests - len(ended),
        "last_ended_s": max(ended.values()) if ended else None,
    }


def probe_bad_keys(port: int, count: int) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    per_worker = count // 8

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            for _ in range(per_worker):
                header = basic(f"pk-lf-{uuid.uuid4()}", f"sk-lf-{uuid.uuid4()}")
                conn.request("GET", "/api/public/traces", headers={"Authorization": header})
                response = conn.getresponse()
                response.read()
                with lock:
                    statuses[response.status] += 1
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    non_ascii: Counter[int] = Counter()
    for value in (b"Basic \xff\xfe\xfd", b"\xc3\xa9\xc3\xa9", b"Basic " + base64.b64encode(b"pk-lf-\xe9:sk-lf-\xe9")):
        with socket.create_connection((HOST, port), timeout=10) as sock:
            sock.sendall(b"GET /api/public/traces HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n\r\n")
            non_ascii[status_of(sock) or 0] += 1
    return {
        "requests": per_worker * 8,
        "statuses": {str(k): v for k, v in statuses.items()},
        "requests_per_s": per_worker * 8 / seconds,
        "non_ascii_statuses": {str(k): v for k, v in non_ascii.items()},
    }


def probe_disconnects_and_keep_alive(port: int, auth: str) -> dict[str, Any]:
    headers = {"Authorization": auth, "Content-Type": "application/json", "Content-Length": "100000"}
    for _ in range(50):
        with socket.create_connection((HOST, port), timeout=10) as sock:
            sock.sendall(head("POST", "/api/public/ingestion", headers) + b'{"batch": [')
            time.sleep(0.01)
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        json_headers = {"Authorization": auth, "Content-Type": "application/json"}
        conn.request("POST", "/api/public/ingestion", body=b"{nope", headers=json_headers)
        first = conn.getresponse()
        first.read()
        local = conn.sock.getsockname() if conn.sock else None
        conn.request("POST", "/api/public/ingestion", body=b'{"batch": []}', headers=json_headers)
        second = conn.getresponse()
        second.read()
        same = conn.sock is not None and conn.sock.getsockname() == local
    finally:
        conn.close()
    return {"mid_body_disconnects": 50, "keep_alive_statuses": [first.status, second.status], "same_connection": same}


# --- the run -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bomb-mb", type=int, default=1024, help="MiB of zeros in each gzip bomb")
    parser.add_argument("--oversized-mb", type=int, default=400, help="MB of each oversized body")
    parser.add_argument("--slow-headers", type=int, default=300, help="slowloris header connections")
    parser.add_argument("--slow-bodies", type=int, default=20, help="requests sending their body at 1 byte/s")
    parser.add_argument("--bad-keys", type=int, default=2000, help="requests with made-up key pairs")
    parser.add_argument("--port", type=int, default=3919)
    common.add_options(parser)
    args = parser.parse_args()
    common.apply_quick(
        parser, args, {"bomb_mb": 100, "oversized_mb": 50, "slow_headers": 30, "slow_bodies": 5, "bad_keys": 200}
    )
    recorder = common.Recorder("hostile", args)
    scratch = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    try:
        run(args, scratch, recorder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _prepare(data_dir: Path) -> str:
    services = await open_services(load_settings(data_dir=data_dir))
    try:
        await migrate(services)
        project = create_project(services.metadata, "hostile", project_id="bench-hostile")
        key = create_api_key(services.metadata, project.id, salt=services.settings.salt)
    finally:
        await services.close()  # chDB allows one process per data directory: hand it to the server
    return basic(key.public_key, key.secret_key)


def run(args: argparse.Namespace, scratch: Path, recorder: common.Recorder) -> None:
    auth = asyncio.run(_prepare(scratch / "data"))
    env = {
        **os.environ,
        "TRACEHOUSE_DATA_DIR": str(scratch / "data"),
        "TRACEHOUSE_LOG_LEVEL": "info",
        "TRACEHOUSE_WORKER_PORT": "0",
        "TRACEHOUSE_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "TRACEHOUSE_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    log_path = scratch / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "tracehouse", "web", "--port", str(args.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if request(args.port, "GET", "/api/public/health") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"tracehouse web did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        for _ in range(3):
            warm = ordinary(args.port, auth)
        time.sleep(HEADER_TIMEOUT_S + 1)  # idle connections of the warm-up are closed
        files_before = open_files(server.pid)
        before: dict[str, Any] = {"rss_mb": rss_bytes(server.pid) / 1e6, "fds": open_fds(server.pid)}
        print(f"before: RSS {before['rss_mb']:.1f} MB, fds {before['fds']} (warm-up answers {warm})")

        probes: dict[str, Any] = {}
        for name, probe in (
            ("gzip_bombs", lambda: probe_bombs(args.port, server.pid, auth, args.bomb_mb)),
            ("oversized_bodies", lambda: probe_oversized(args.port, auth, args.oversized_mb)),
            ("slow_headers", lambda: probe_slow_headers(args.port, args.slow_headers)),
            ("slow_bodies", lambda: probe_slow_bodies(args.port, auth, args.slow_bodies)),
            ("bad_keys", lambda: probe_bad_keys(args.port, args.bad_keys)),
            ("disconnects_and_keep_alive", lambda: probe_disconnects_and_keep_alive(args.port, auth)),
        ):
            started = time.perf_counter()
            probes[name] = probe()
            probes[name]["rss_mb_after"] = rss_bytes(server.pid) / 1e6
            print(f"{name} ({time.perf_counter() - started:.1f}s): {json.dumps(probes[name])}")

        time.sleep(HEADER_TIMEOUT_S + 1)
        again = ordinary(args.port, auth)
        time.sleep(HEADER_TIMEOUT_S + 1)
        after: dict[str, Any] = {"rss_mb": rss_bytes(server.pid) / 1e6, "fds": open_fds(server.pid)}
        # Which files the server opened meanwhile (sockets would be a connection leak; files are data).
        new_files = sorted(
            p.replace(str(scratch), "<scratch>").replace(f"/proc/{server.pid}/", "/proc/<server>/")
            for p in (open_files(server.pid) - files_before).elements()
        )
        if new_files:
            print(f"files opened since ({len(new_files)}): {new_files[:12]}")
        print(f"after:  RSS {after['rss_mb']:.1f} MB, fds {after['fds']} (ordinary answers {again})")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    lines = log_path.read_text().splitlines()
    error_lines = [line for line in lines if '"level": "error"' in line or line.startswith(("ERROR", "Traceback"))]
    disconnects_logged = sum('"client_disconnected"' in line for line in lines)
    rss_growth = (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"] * 100
    fd_growth = after["fds"]["total"] - before["fds"]["total"]
    socket_growth = after["fds"].get("socket", 0) - before["fds"].get("socket", 0)
    print(
        f"growth: RSS {after['rss_mb'] - before['rss_mb']:+.1f} MB ({rss_growth:+.1f} %), fds {fd_growth:+d} "
        f"(sockets {socket_growth:+d}); "
        f"server error lines {len(error_lines)}, client_disconnected lines {disconnects_logged}"
    )
    for line in error_lines[:5]:
        print(f"  error line: {line[:300]}")
    recorder.write(
        parameters={
            "bomb_mb": args.bomb_mb,
            "oversized_mb": args.oversized_mb,
            "slow_headers": args.slow_headers,
            "slow_bodies": args.slow_bodies,
            "bad_keys": args.bad_keys,
            "header_timeout_s": HEADER_TIMEOUT_S,
            "body_timeout_s": BODY_TIMEOUT_S,
        },
        figures={
            "before": before,
            "after": after,
            "rss_growth_percent": rss_growth,
            "fd_growth": fd_growth,
            "socket_growth": socket_growth,
            "files_opened_since": new_files[:20],
            "server_error_lines": len(error_lines),
            "client_disconnected_lines": disconnects_logged,
            "probes": probes,
        },
        ratios={},
        targets=[
            common.target("hostile: RSS growth after the probes", rss_growth, "<", 5, "%"),
            common.target(
                "hostile: open sockets growth after the probes",
                socket_growth,
                "<=",
                0,
                "sockets",
                "connections left open by the probes (other descriptors are listed in figures: chDB opens "
                "/proc files for each thread its pools start)",
            ),
            common.target("hostile: error lines in the server log", len(error_lines), "<=", 0, "lines"),
        ],
        informational=[
            common.info(
                "hostile: peak RSS growth during gzip bombs",
                probes["gzip_bombs"]["peak_rss_growth_mb"],
                "MB",
                group="gzip bombs",
                series="peak RSS growth",
            ),
            common.info(
                "hostile: slowest health check during gzip bombs",
                probes["gzip_bombs"]["slowest_health_ms"] or 0.0,
                "ms",
                group="gzip bombs",
                series="slowest health check",
            ),
        ],
    )


if __name__ == "__main__":
    main()
