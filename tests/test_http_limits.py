"""What one client can make the server hold, against a real server on a loopback port.

Body size, time and gzip limits (`tracehouse.request_body.read_body`), header and body timeouts and
the connection cap per client (`tracehouse.web.server`), the auth cache's byte bound, Authorization
headers no key could match, quiet client disconnects, and keep-alive after an error answer.

Body tests run against two routes: a probe route added for the test that calls `read_body` the way
the ingestion routes do, and the real endpoint.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import select
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog
from fastapi import FastAPI, Request
from structlog.testing import LogCapture

from conftest import server_thread
from tracehouse.request_body import read_body

LIMITS: dict[str, Any] = {
    "ingestion_max_body_bytes": 1_000_000,
    "otel_max_body_bytes": 2_000_000,
    "max_decompressed_bytes": 5_000_000,
    "http_header_timeout_s": 1.0,
    "http_body_timeout_s": 2.0,
    "http_max_connections_per_client": 0,
}
INGESTION = {"probe": "/test/ingestion-body", "endpoint": "/api/public/ingestion"}
OTEL = {"probe": "/test/otel-body", "endpoint": "/api/public/otel/v1/traces"}
TARGETS = ["probe", "endpoint"]


@dataclass
class Live:
    url: str
    app: FastAPI

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80


def _add_probes(app: FastAPI) -> None:
    """The calls ingestion/api.py is to make (see the read_body docstring and the report)."""
    settings = app.state.services.settings

    @app.post("/test/ingestion-body")
    async def ingestion_body(request: Request) -> dict[str, int]:
        body = await read_body(request, limit=settings.ingestion_max_body_bytes, timeout_s=settings.http_body_timeout_s)
        return {"bytes": len(body)}

    @app.post("/test/otel-body")
    async def otel_body(request: Request) -> dict[str, int]:
        body = await read_body(
            request,
            limit=settings.otel_max_body_bytes,
            timeout_s=settings.http_body_timeout_s,
            decompress_limit=settings.max_decompressed_bytes,
            detect_gzip=True,
        )
        return {"bytes": len(body)}


@contextmanager
def serving(base_services: Any, prefix: str, **changes: Any) -> Iterator[Live]:
    apps: list[FastAPI] = []

    def on_app(app: FastAPI) -> None:
        _add_probes(app)
        apps.append(app)

    with server_thread(base_services, prefix, on_app=on_app, **{**LIMITS, **changes}) as url:
        yield Live(url, apps[0])


@pytest.fixture
def live(base_services: Any, key_prefix: str) -> Iterator[Live]:
    with serving(base_services, key_prefix) as server:
        yield server


@pytest.fixture
def auth(project: tuple[str, dict[str, str]]) -> str:
    return project[1]["Authorization"]


# --- raw HTTP over a socket ----------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_answer(sock: socket.socket) -> Answer:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a complete answer: {buffer[:200]!r}")
        buffer += chunk
    raw_head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Answer(int(status_line.split()[1]), headers, rest[:length])


def closes_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection within `seconds` (anything it still sends is read)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class PeakRss:
    """The highest RSS of this process (the server runs in one of its threads) while in the block."""

    def __init__(self) -> None:
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def gzip_of_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(size >> 20)]
    parts.append(packer.flush())
    return b"".join(parts)


# --- body size --------------------------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
def test_content_length_over_the_limit_is_answered_before_the_body_is_sent(live: Live, auth: str, target: str) -> None:
    with socket.create_connection(live.address, timeout=5) as sock:
        headers = {"Authorization": auth, "Content-Type": "application/json", "Content-Length": "5000000"}
        sock.sendall(head("POST", INGESTION[target], headers))
        sock.settimeout(3)
        answer = read_answer(sock)  # no body was sent at all
        assert answer.status == 413, answer.body
        assert "larger than 1 MB (1000000 bytes)" in answer.json()["error"]
        assert answer.headers.get("connection") == "close"
        assert closes_within(sock, 2)


@pytest.mark.parametrize("target", TARGETS)
def test_chunked_body_over_the_limit_is_answered_and_the_rest_is_not_read(live: Live, auth: str, target: str) -> None:
    chunk = b"x" * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    planned = 200 * 1024 * 1024
    sent = 0
    with socket.create_connection(live.address, timeout=5) as sock:
        headers = {"Authorization": auth, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        sock.sendall(head("POST", INGESTION[target], headers))
        started = time.monotonic()
        try:
            while sent < planned:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered (or closed): a polite client stops sending
                sock.sendall(framed)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - started
        sock.settimeout(3)
        answer = read_answer(sock)
    assert answer.status == 413 and "larger than 1 MB (1000000 bytes)" in answer.json()["error"]
    # The server stopped at the limit: what got through is the limit plus socket buffers, not 200 MB.
    assert sent < 40 * 1024 * 1024, f"the client could send {sent} bytes in {elapsed:.2f}s"


# --- gzip ---------------------------------------------------------------------------------------
def _post(live: Live, path: str, body: bytes, headers: dict[str, str], timeout: float = 10) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(*live.address, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None)
    finally:
        conn.close()


@pytest.mark.parametrize("target", TARGETS)
def test_a_gzip_bomb_is_a_413_costs_little_memory_and_blocks_no_one(live: Live, auth: str, target: str) -> None:
    bomb = gzip_of_zeros(50_000_000)  # ~50 kB on the wire, 50 MB inflated; the limit is 5 MB
    headers = {"Authorization": auth, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    with PeakRss() as rss:
        answers = [_post(live, OTEL[target], bomb, headers) for _ in range(3)]
    for status, body in answers:
        assert status == 413, body
        assert "decompressed request body is larger than 5 MB (5000000 bytes)" in body["error"]
    assert rss.growth < 20_000_000, f"RSS grew by {rss.growth / 1e6:.1f} MB for 50 MB bombs (limit 5 MB)"

    # Bombs in flight from four clients; a health check on its own connection stays fast.
    stop = threading.Event()
    statuses: list[int] = []

    def bomber() -> None:
        while not stop.is_set():
            statuses.append(_post(live, OTEL[target], bomb, headers)[0])

    threads = [threading.Thread(target=bomber) for _ in range(4)]
    for thread in threads:
        thread.start()
    latencies = []
    conn = http.client.HTTPConnection(*live.address, timeout=10)
    try:
        for _ in range(20):
            started = time.monotonic()
            conn.request("GET", "/api/public/health")
            response = conn.getresponse()
            response.read()
            latencies.append(time.monotonic() - started)
            assert response.status == 200
            time.sleep(0.02)
    finally:
        conn.close()
        stop.set()
        for thread in threads:
            thread.join()
    assert statuses and set(statuses) == {413}
    assert max(latencies) < 1.0, f"health answered in up to {max(latencies):.2f}s while bombs were inflated"


@pytest.mark.parametrize("target", ["probe", "endpoint"])  # the endpoint already answers 400 itself
def test_truncated_or_corrupt_gzip_is_a_400(live: Live, auth: str, target: str) -> None:
    whole = gzip.compress(json.dumps({"resourceSpans": []}).encode() * 50)
    headers = {"Authorization": auth, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    status, body = _post(live, OTEL[target], whole[:-12], headers)
    assert status == 400 and "not valid gzip" in body["error"], body
    corrupt = whole[:10] + b"\xff" * 20 + whole[30:]
    status, body = _post(live, OTEL[target], corrupt, headers)
    assert status == 400 and "not valid gzip" in body["error"], body


def test_read_body_inflates_gzip_and_names_encodings_it_does_not_take(live: Live) -> None:
    payload = b'{"resourceSpans": []}' * 1000
    packed = gzip.compress(payload) + gzip.compress(payload)  # two members, as gzip allows
    assert _post(live, "/test/otel-body", packed, {"Content-Encoding": "gzip"}) == (200, {"bytes": 2 * len(payload)})
    assert _post(live, "/test/otel-body", gzip.compress(payload), {}) == (200, {"bytes": len(payload)})  # magic bytes
    assert _post(live, "/test/ingestion-body", gzip.compress(payload), {"Content-Encoding": "gzip"})[0] == 200
    status, body = _post(live, "/test/otel-body", payload, {"Content-Encoding": "br"})
    assert status == 400 and "unsupported Content-Encoding 'br'" in body["error"]


# --- timeouts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["probe", "endpoint"])
def test_a_body_sent_at_one_byte_a_second_is_cut_off_after_the_body_timeout(live: Live, auth: str, target: str) -> None:
    with socket.create_connection(live.address, timeout=5) as sock:
        headers = {"Authorization": auth, "Content-Type": "application/json", "Content-Length": "1000"}
        sock.sendall(head("POST", INGESTION[target], headers))
        started = time.monotonic()
        answered = False
        try:
            for _ in range(10):
                sock.sendall(b" ")
                if select.select([sock], [], [], 1.0)[0]:
                    answered = True
                    break
        except (BrokenPipeError, ConnectionResetError):
            answered = True
        elapsed = time.monotonic() - started
        assert answered, "the connection was still open after 10 s"
        assert 1.5 < elapsed < 4.5, elapsed  # body timeout 2 s (+1 s grace at the server)
        try:
            sock.settimeout(2)
            answer = read_answer(sock)
        except ConnectionError:
            assert target == "endpoint"  # the server's backstop closes without an answer
        else:
            assert answer.status == 408 and "not received within 2 s" in answer.json()["message"]


def test_half_sent_headers_are_cut_off_after_the_header_timeout(live: Live) -> None:
    sockets = [socket.create_connection(live.address, timeout=5) for _ in range(20)]
    try:
        for sock in sockets:
            sock.sendall(b"POST /api/public/ingestion HTTP/1.1\r\nHost: test\r\n")
        idle = sockets[0]  # sends nothing more
        started = time.monotonic()
        closed: dict[int, float] = {}
        while len(closed) < len(sockets) and time.monotonic() - started < 5:
            for i, sock in enumerate(sockets):
                if i in closed:
                    continue
                try:
                    if sock is not idle:
                        sock.sendall(b"X")  # one header byte at a time: bytes must not reset the clock
                    if select.select([sock], [], [], 0)[0] and not sock.recv(1):
                        closed[i] = time.monotonic() - started
                except (BrokenPipeError, ConnectionResetError):
                    closed[i] = time.monotonic() - started
            time.sleep(0.1)
        assert len(closed) == len(sockets), f"{len(sockets) - len(closed)} connections still open after 5 s"
        assert min(closed.values()) > 0.7 and max(closed.values()) < 3.0, closed
    finally:
        for sock in sockets:
            sock.close()


def test_an_idle_kept_alive_connection_is_closed(live: Live) -> None:
    with socket.create_connection(live.address, timeout=5) as sock:
        sock.sendall(head("GET", "/api/public/health", {}))
        assert read_answer(sock).status == 200
        assert closes_within(sock, 3)  # header timeout 1 s after the answer


# --- connections per client ----------------------------------------------------------------------
def test_connections_per_client_are_capped(base_services: Any, key_prefix: str) -> None:
    with serving(base_services, key_prefix, http_max_connections_per_client=5, http_header_timeout_s=20) as live:

        def healthy(sock: socket.socket) -> bool:
            try:
                sock.sendall(head("GET", "/api/public/health", {}))
                sock.settimeout(3)
                return read_answer(sock).status == 200
            except (ConnectionError, OSError):
                return False

        first = [socket.create_connection(live.address, timeout=5) for _ in range(5)]
        try:
            assert all(healthy(sock) for sock in first)
            with socket.create_connection(live.address, timeout=5) as sixth:
                assert not healthy(sixth)  # closed without an answer
            first.pop().close()
            time.sleep(0.3)  # the server sees the close
            with socket.create_connection(live.address, timeout=5) as again:
                assert healthy(again)
            assert all(healthy(sock) for sock in first)  # the others were never touched
        finally:
            for sock in first:
                sock.close()


# --- auth ---------------------------------------------------------------------------------------
def _basic(public: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{public}:{secret}".encode()).decode()


def test_a_flood_of_bad_keys_keeps_the_auth_cache_bounded_and_free_of_secrets(
    base_services: Any, key_prefix: str
) -> None:
    bound = 100_000
    with serving(base_services, key_prefix, auth_cache_max_bytes=bound, http_header_timeout_s=20) as live:
        verifier = live.app.state.key_verifier
        secrets_sent = []
        conn = http.client.HTTPConnection(*live.address, timeout=10)
        try:
            for _ in range(2000):
                secret = f"sk-lf-{uuid.uuid4()}"
                secrets_sent.append(secret)
                header = _basic(f"pk-lf-{uuid.uuid4()}", secret)
                conn.request("GET", "/api/public/traces", headers={"Authorization": header})
                response = conn.getresponse()
                response.read()
                assert response.status == 401
            entries = len(verifier)
            # No key could match these: 401 without a lookup or a cache entry.
            for header in (
                _basic("pk-lf-" + "a" * 5000, "sk-lf-b"),
                _basic("not-a-key", "sk-lf-b"),
                "Basic " + "A" * 3000,
            ):
                conn.request("GET", "/api/public/traces", headers={"Authorization": header})
                response = conn.getresponse()
                response.read()
                assert response.status == 401
            assert len(verifier) == entries
        finally:
            conn.close()
        assert 0 < verifier.bytes_used <= bound and 0 < entries < 2000
        stored = b"".join(verifier._cache) + repr(list(verifier._cache.values())).encode()
        assert not [s for s in secrets_sent if s.encode() in stored or s[6:].encode() in stored]


def test_a_non_ascii_authorization_header_is_a_401(live: Live) -> None:
    latin1_keys = base64.b64encode("pk-lf-é:sk-lf-é".encode("latin-1"))  # decodes, but not as UTF-8
    for value in (b"Basic \xff\xfe\xfd", b"Basic " + latin1_keys, b"\xc3\xa9"):
        with socket.create_connection(live.address, timeout=5) as sock:
            sock.sendall(b"GET /api/public/traces HTTP/1.1\r\nHost: test\r\nAuthorization: " + value + b"\r\n\r\n")
            sock.settimeout(5)
            answer = read_answer(sock)
            assert answer.status == 401, (value, answer.body)


# --- disconnects and keep-alive ---------------------------------------------------------------------
@contextmanager
def captured_logs() -> Iterator[tuple[LogCapture, list[logging.LogRecord]]]:
    """structlog events at info and above, and stdlib records (uvicorn's) at warning and above."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.WARNING)
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    old = structlog.get_config()
    capture = LogCapture()
    structlog.configure(processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        yield capture, records
    finally:
        structlog.configure(**old)
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.mark.parametrize("target", ["probe", "endpoint"])
def test_a_client_leaving_mid_body_is_logged_quietly(live: Live, auth: str, target: str) -> None:
    with captured_logs() as (events, records):
        with socket.create_connection(live.address, timeout=5) as sock:
            headers = {"Authorization": auth, "Content-Type": "application/json", "Content-Length": "100000"}
            sock.sendall(head("POST", INGESTION[target], headers) + b'{"batch": [')
            time.sleep(0.3)  # the route is reading the body
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(e["event"] == "client_disconnected" for e in events.entries):
            time.sleep(0.05)
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert not [e for e in events.entries if e["log_level"] in ("error", "critical", "exception")]
    assert any(e["event"] == "client_disconnected" and e["log_level"] == "info" for e in events.entries)


def test_keep_alive_survives_an_error_answer(live: Live, auth: str) -> None:
    conn = http.client.HTTPConnection(*live.address, timeout=10)
    try:
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        conn.request("POST", "/api/public/ingestion", body=b"{nope", headers=headers)
        bad = conn.getresponse()
        assert bad.status == 400 and b"not valid JSON" in bad.read()
        assert conn.sock is not None
        local = conn.sock.getsockname()
        conn.request("POST", "/api/public/ingestion", body=b"{nope", headers={})  # 401, body fully sent
        unauthorized = conn.getresponse()
        unauthorized.read()
        assert unauthorized.status == 401
        conn.request("POST", "/api/public/ingestion", body=json.dumps({"batch": []}), headers=headers)
        good = conn.getresponse()
        assert good.status == 207, good.read()
        good.read()
        assert conn.sock is not None and conn.sock.getsockname() == local  # one connection throughout
    finally:
        conn.close()
