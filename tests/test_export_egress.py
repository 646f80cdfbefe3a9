"""Export egress: destinations outside the public internet are refused when an integration is saved
and again at connect time (the egress proxy), and nothing a destination answers leaks back.

No test lets traffic leave loopback: public addresses only ever come out of a fake resolver, and the
proxy refuses or connects to loopback listeners owned by the test.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import LogCapture

from conftest import ACCESS_KEY, REGION, SECRET_KEY, free_port
from export_helpers import BOX, DAY, HOUR, MINUTE, Clock, config, job, make_integration, run_until_idle, write_rows
from tracehouse.errors import ConfigError
from tracehouse.export import state
from tracehouse.export.destination import (
    BLOCKED,
    DestinationError,
    destination_config,
    destination_failure,
    destination_store,
    refused,
)
from tracehouse.export.egress import BLOCKED_BODY, EgressProxy, EgressRule, IPAddress, is_public, resolve_host
from tracehouse.export.integrations import (
    DestinationRefused,
    IntegrationRequest,
    check_destination,
    delete_integration,
    list_integrations,
    progress_view,
    upsert_integration,
)
from tracehouse.metadata import create_api_key, create_project
from tracehouse.web.app import create_app

KEY = "ab" * 32
ADMIN = {"Authorization": "Bearer admin-secret"}
MARKER = "REMOTE-BODY-MARKER-7f3a"
PUBLIC = ipaddress.ip_address("8.8.8.8")  # only ever returned by fake resolvers; never contacted
LOOPBACK = ipaddress.ip_address("127.0.0.1")


# --- helpers -------------------------------------------------------------------------------------
class Listener:
    """A loopback TCP server owned by the test: counts connections, optionally answers each request
    (after reading its head and body) with `answer`."""

    def __init__(self, answer: bytes | None = None) -> None:
        self.answer = answer
        self.connections = 0
        self.heads: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.answer is not None:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next(
                    (int(h.split(b":", 1)[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")),
                    0,
                )
                if length:
                    await reader.readexactly(length)
                writer.write(self.answer)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            await writer.wait_closed()


def answer(status: str, body: bytes, *extra: bytes) -> bytes:
    headers = [b"HTTP/1.1 " + status.encode(), b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


async def exchange(port: int, request: bytes, *, until_eof: bool = True) -> bytes:
    """Send raw bytes to the proxy; the answer up to EOF (or up to the end of its head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        if until_eof:
            return await asyncio.wait_for(reader.read(), 10)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
        await writer.wait_closed()


def proxy_port(proxy: EgressProxy) -> int:
    return int(proxy.url.rsplit(":", 1)[1])


def fake_resolver(*answers: list[IPAddress]) -> Any:
    """Answers the given address lists in turn (the last one from then on) and counts the calls."""

    async def resolve(host: str, port: int) -> list[IPAddress]:
        resolve.calls.append((host, port))  # type: ignore[attr-defined]
        return answers[min(len(resolve.calls), len(answers)) - 1]  # type: ignore[attr-defined]

    resolve.calls = []  # type: ignore[attr-defined]
    return resolve


@pytest.fixture
def logs() -> Iterator[list[Any]]:
    """Every structlog event at every level, exceptions rendered, while the test runs."""
    previous = structlog.get_config()
    capture = LogCapture()
    structlog.configure(
        processors=[structlog.processors.format_exc_info, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    try:
        yield capture.entries
    finally:
        structlog.configure(**previous)


@pytest.fixture
def api(services: Any) -> Iterator[Any]:
    """(make_app(**settings), services, project id, project-key headers)."""
    base = services.settings.model_copy(update={"encryption_key": KEY, "admin_api_key": "admin-secret"})
    svc = dataclasses.replace(services, settings=base)
    project = create_project(svc.metadata, "egress", project_id=f"eg-{uuid.uuid4().hex[:8]}")
    key = create_api_key(svc.metadata, project.id, salt=base.salt)
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()}

    def make_app(**settings: Any) -> Any:
        return create_app(dataclasses.replace(svc, settings=base.model_copy(update=settings)))

    yield make_app, svc, project.id, auth
    for row in list_integrations(svc.metadata, None):  # leave no encrypted secrets behind
        delete_integration(svc.metadata, row.project_id)


async def put(app: Any, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.put("/api/public/integrations/blob-storage", headers=headers, json=body)


def s3_body(project_id: str, endpoint: str, **overrides: Any) -> dict[str, Any]:
    return {
        "projectId": project_id,
        "type": "S3_COMPATIBLE",
        "bucketName": "exports",
        "endpoint": endpoint,
        "region": "us-east-1",
        "accessKeyId": "AKIA-EGRESS-TEST",
        "secretAccessKey": "egress-secret-value",
        "forcePathStyle": True,
        **overrides,
    }


# --- the rule ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",  # CGNAT
        "169.254.169.254",
        "169.254.1.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.0.192",  # Oracle Cloud metadata, inside a range ipaddress calls global
        "168.63.129.16",  # Azure WireServer: a public address, refused by name of service
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "fec0::1",  # site-local (deprecated), which ipaddress calls global
        "ff02::1",  # multicast, which ipaddress calls global
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",  # NAT64 form of 10.0.0.1
        "2002:a00:1::1",  # 6to4 form of 10.0.0.1
        "2001:db8::1",
    ],
)
def test_rule_refuses_addresses_outside_the_public_internet(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not is_public(ip)
    assert not EgressRule().permits("h", 443, [ip])


def test_rule_allowlist_covers_hosts_ports_ips_and_networks_but_never_metadata() -> None:
    assert is_public(PUBLIC) and is_public(ipaddress.ip_address("2606:4700::1111"))
    assert EgressRule().permits("s3.example.com", 443, [PUBLIC])
    # Every address counts: one internal answer among public ones refuses the host.
    assert not EgressRule().permits("mixed.example", 443, [PUBLIC, ipaddress.ip_address("10.0.0.1")])
    assert not EgressRule().permits("nothing.example", 443, [])  # does not resolve
    rule = EgressRule("minio.internal:9000, 127.0.0.1, 10.1.0.0/16, [::1]:6000, 169.254.0.0/16, metadata")
    ten = ipaddress.ip_address("10.1.2.3")
    assert rule.permits("minio.internal", 9000, [ipaddress.ip_address("10.9.9.9")])
    assert not rule.permits("minio.internal", 9001, [ipaddress.ip_address("10.9.9.9")])
    assert rule.permits("any", 1234, [LOOPBACK]) and rule.permits("any", 1, [ten])
    assert rule.permits("x", 6000, [ipaddress.ip_address("::1")]) and not rule.permits(
        "x", 6001, [ipaddress.ip_address("::1")]
    )
    assert not rule.permits("any", 80, [ipaddress.ip_address("127.0.0.2")])  # 127.0.0.1 is one address
    assert not rule.permits("any", 80, [ipaddress.ip_address("169.254.169.254")])  # metadata: never
    assert not rule.permits("metadata", 80, [ten])  # a metadata name: never
    assert not rule.permits("any", 80, [ten], internal=False)  # what a project key may save
    with pytest.raises(ConfigError, match="TRACEHOUSE_EXPORT_ALLOWED_DESTINATIONS"):
        EgressRule("good.host, bad/entry")


# --- saving an integration -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254",
        "http://10.0.0.1",
        "http://[::1]:6379",
        "http://127.0.0.1:{port}",
        "http://metadata.google.internal",
        "http://localhost:{port}",
    ],
)
async def test_project_key_cannot_name_an_internal_endpoint(api: Any, endpoint: str) -> None:
    make_app, _, project_id, auth = api
    url = endpoint.format(port=free_port())
    # Refused even when the operator allowlisted the host: only the admin key may set one.
    for app in (make_app(), make_app(export_allowed_destinations="127.0.0.1,localhost,::1,10.0.0.0/8")):
        response = await put(app, auth, s3_body(project_id, url))
        assert response.status_code == 400, response.text
        assert response.json()["parameter"] == "endpoint" and "endpoint" in response.json()["error"]
    assert list_integrations(api[1].metadata, project_id) == []


async def test_admin_may_name_an_internal_endpoint_only_when_allowlisted(api: Any) -> None:
    make_app, _, project_id, _ = api
    url = f"http://127.0.0.1:{free_port()}"
    refused_answer = await put(make_app(), ADMIN, s3_body(project_id, url))
    assert refused_answer.status_code == 400 and refused_answer.json()["parameter"] == "endpoint"
    assert "TRACEHOUSE_EXPORT_ALLOWED_DESTINATIONS" in refused_answer.json()["error"]
    allowed = await put(make_app(export_allowed_destinations="127.0.0.1"), ADMIN, s3_body(project_id, url))
    assert allowed.status_code == 200, allowed.text
    # Metadata addresses stay refused, whatever the allowlist says.
    metadata_app = make_app(export_allowed_destinations="169.254.0.0/16")
    again = await put(metadata_app, ADMIN, s3_body(project_id, "http://169.254.169.254"))
    assert again.status_code == 400


async def test_virtual_hosted_bucket_name_is_checked_too() -> None:
    """`bucket.host` is what the store connects to in virtual-hosted style; a wildcard DNS name
    (e.g. <ip>.nip.io) must not slip a loopback address past the check of `host` alone."""

    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [LOOPBACK] if host.startswith("bucket.") else [PUBLIC]

    request = IntegrationRequest.model_validate(
        s3_body("p", "http://wildcard.example", bucketName="bucket", forcePathStyle=False)
    )
    with pytest.raises(DestinationRefused, match="endpoint"):
        await check_destination(request, EgressRule(), admin=False, resolve=resolve)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prefix", "../../etc/"),
        ("prefix", "a/../../b/"),
        ("prefix", "/etc/"),
        ("prefix", "a\\b/"),
        ("bucketName", "."),
        ("bucketName", ".."),
        ("bucketName", "a/b"),
        ("bucketName", "../x"),
        ("bucketName", "a\\b"),
    ],
)
async def test_local_prefix_and_bucket_must_stay_inside_the_project_folder(api: Any, field: str, value: str) -> None:
    make_app, _, project_id, auth = api
    body = {"projectId": project_id, "type": "LOCAL", "bucketName": "out", "prefix": "x/", field: value}
    response = await put(make_app(), auth, body)
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == field and field in response.json()["error"]


async def test_local_folders_are_namespaced_per_project(api: Any, tmp_path: Path) -> None:
    make_app, svc, project_id, auth = api
    response = await put(make_app(), auth, {"projectId": project_id, "type": "LOCAL", "bucketName": "out"})
    assert response.status_code == 200, response.text
    integration = state.load_integration(svc.metadata, BOX, project_id)
    assert integration is not None
    root = destination_config(integration, tmp_path).root
    assert root == (tmp_path / "exports" / project_id / "out").resolve()


async def test_admin_put_for_a_missing_project_is_404_and_logs_no_secret(
    api: Any, logs: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    make_app, _, _, _ = api
    missing = f"missing-{uuid.uuid4().hex[:6]}"
    with caplog.at_level(logging.DEBUG):
        response = await put(make_app(), ADMIN, s3_body(missing, "http://8.8.8.8:9000"))
    assert response.status_code == 404, response.text
    assert missing in response.json()["message"]
    logged = repr(logs) + caplog.text
    assert "Traceback" not in logged
    for secret in ("AKIA-EGRESS-TEST", "egress-secret-value", "v1:"):
        assert secret not in logged and secret not in response.text


# --- connect time: the proxy ---------------------------------------------------------------------
async def test_proxy_answers_alike_for_open_and_closed_internal_ports() -> None:
    async with Listener(answer("200 OK", b"open")) as listener, EgressProxy(EgressRule()) as proxy:
        closed = free_port()
        answers = []
        for port in (listener.port, closed):
            answers.append(await exchange(proxy_port(proxy), f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode()))
            request = f"PUT http://127.0.0.1:{port}/b/k HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            answers.append(await exchange(proxy_port(proxy), (request + "Content-Length: 2\r\n\r\nhi").encode()))
        assert len(set(answers)) == 1, answers
        assert answers[0].startswith(b"HTTP/1.1 403 Forbidden\r\n") and answers[0].endswith(BLOCKED_BODY)
        assert listener.connections == 0 and proxy.blocked == 4


async def test_proxy_checks_every_address_at_connect_time_and_never_resolves_again() -> None:
    """DNS rebinding: public when saved, internal when connecting."""
    request = IntegrationRequest.model_validate(s3_body("p", "http://rebind.example:9000"))
    await check_destination(request, EgressRule(), admin=False, resolve=fake_resolver([PUBLIC]))  # saved fine
    async with Listener() as listener:
        for answers in ([LOOPBACK], [PUBLIC, LOOPBACK], [ipaddress.ip_address("::ffff:127.0.0.1")]):
            resolve = fake_resolver(answers)
            async with EgressProxy(EgressRule(), resolve=resolve) as proxy:
                got = await exchange(
                    proxy_port(proxy), f"CONNECT rebind.example:{listener.port} HTTP/1.1\r\n\r\n".encode()
                )
            assert got.startswith(b"HTTP/1.1 403 ") and listener.connections == 0
        # Allowlisted by name: one resolution, and the connection goes to the address it checked.
        resolve = fake_resolver([LOOPBACK], [PUBLIC])
        async with EgressProxy(EgressRule("store.internal"), internal=True, resolve=resolve) as proxy:
            head = await exchange(
                proxy_port(proxy), f"CONNECT store.internal:{listener.port} HTTP/1.1\r\n\r\n".encode(), until_eof=False
            )
        assert head.startswith(b"HTTP/1.1 200 ") and len(resolve.calls) == 1
        await asyncio.sleep(0.05)
        assert listener.connections == 1


async def test_proxy_tunnels_connect_and_rewrites_plain_http_requests() -> None:
    upstream_answer = answer("200 OK", b"ok", b"Connection: keep-alive", b"Keep-Alive: timeout=5")
    async with Listener(upstream_answer) as listener, EgressProxy(EgressRule("127.0.0.1"), internal=True) as proxy:
        request = (
            f"GET http://127.0.0.1:{listener.port}/b/k?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{listener.port}\r\n"
            "Proxy-Authorization: Basic c2VjcmV0\r\nConnection: keep-alive\r\n\r\n"
        )
        got = await exchange(proxy_port(proxy), request.encode())
        [head] = listener.heads
        lines = head.decode().split("\r\n")
        assert lines[0] == "GET /b/k?x=1 HTTP/1.1" and "Connection: close" in lines
        assert not any(line.lower().startswith(("proxy-authorization", "connection: keep-alive")) for line in lines)
        response_head, _, body = got.partition(b"\r\n\r\n")
        assert response_head.startswith(b"HTTP/1.1 200 OK") and body == b"ok"
        assert b"Connection: close" in response_head and b"keep-alive" not in response_head.lower()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with EgressProxy(EgressRule("127.0.0.1"), internal=True) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(proxy))
            writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
            writer.write(b"tls bytes, opaque to the proxy")
            assert await asyncio.wait_for(reader.read(), 10) == b"tls bytes, opaque to the proxy"
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_proxy_is_bounded_and_closes_everything() -> None:
    async with EgressProxy(EgressRule("127.0.0.1"), internal=True, max_header_bytes=1024) as proxy:
        too_big = b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nX: " + b"a" * 4096 + b"\r\n\r\n"
        assert (await exchange(proxy_port(proxy), too_big)).startswith(b"HTTP/1.1 400 ")
        assert (await exchange(proxy_port(proxy), b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await exchange(proxy_port(proxy), b"GET https://h/ HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    async with Listener() as listener, EgressProxy(EgressRule("127.0.0.1"), internal=True, max_connections=1) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(proxy))
        writer.write(f"CONNECT 127.0.0.1:{listener.port} HTTP/1.1\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        # The one allowed connection is in use: the next is turned away.
        busy = await exchange(proxy_port(proxy), b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
        assert busy.startswith(b"HTTP/1.1 503 ")
        await proxy.close()  # ends the open tunnel too
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await writer.wait_closed()


async def test_no_proxy_environment_does_not_bypass_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    async with Listener(answer("200 OK", b"")) as listener, EgressProxy(EgressRule()) as proxy:
        integration = state_integration("p", f"http://127.0.0.1:{listener.port}")
        store = destination_store(integration, Path("/nonexistent"), proxy_url=proxy.url)
        with pytest.raises(Exception) as raised:
            await store.put("k", b"data")
        assert destination_failure(raised.value, blocked=proxy.blocked > 0) == BLOCKED
        assert listener.connections == 0


def state_integration(project_id: str, endpoint: str) -> Any:
    from tracehouse.export.integrations import Integration

    return Integration(
        project_id=project_id,
        type="S3_COMPATIBLE",
        bucket_name="b",
        endpoint=endpoint,
        region="us-east-1",
        access_key_id="a",
        secret_access_key="s",
        prefix="",
        export_frequency="hourly",
        enabled=True,
        force_path_style=True,
        file_type="JSONL",
        export_mode="FULL_HISTORY",
        export_start_date=None,
        compressed=False,
        last_sync_at=None,
        next_sync_at=None,
    )


# --- the export job --------------------------------------------------------------------------------
def _hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


async def _one_window_project(services: Any, project_id: str, endpoint: str, **fields: Any) -> datetime:
    start = _hour_floor(datetime.now(UTC)) - DAY
    await write_rows(services.clickhouse, "traces", project_id, [{"id": "t1", "event_ts": start + MINUTE}])
    make_integration(  # stored directly: as a row saved before the rule, or a name that rebinds later
        services.metadata,
        project_id,
        exportMode="FROM_CUSTOM_DATE",
        exportStartDate=start.isoformat(),
        **{**s3_body(project_id, endpoint), "fileType": "JSONL", **fields},
    )
    return start


def _last_error(services: Any, project_id: str) -> str | None:
    [row] = list_integrations(services.metadata, project_id)
    return progress_view(row, datetime.now(UTC)).last_error


@pytest.fixture
def no_secrets_left_behind(services: Any) -> Iterator[None]:
    """Later test modules open the same metadata DB without this module's ENCRYPTION_KEY."""
    yield
    for row in list_integrations(services.metadata, None):
        if row.secret_access_key:
            delete_integration(services.metadata, row.project_id)


@pytest.mark.usefixtures("no_secrets_left_behind")
@pytest.mark.parametrize("resolution", ["internal", "rebinding"])
async def test_blocked_destination_never_gets_a_connection(services: Any, project: Any, resolution: str) -> None:
    """A loopback listener as the destination: refused before the job starts ("internal"), or, when
    the name still looked public then, by the proxy at connect time ("rebinding")."""
    project_id, _ = project
    async with Listener(answer("200 OK", b"")) as listener:
        host = "127.0.0.1" if resolution == "internal" else "rebind.example"
        start = await _one_window_project(services, project_id, f"http://{host}:{listener.port}")
        resolve = fake_resolver([LOOPBACK]) if resolution == "internal" else fake_resolver([PUBLIC], [LOOPBACK])
        export = job(
            services,
            Clock(start + HOUR + MINUTE),
            cfg=config(services.settings.data_dir, allowed_destinations=""),
            resolve=resolve,
        )
        with pytest.raises(DestinationError) as raised:
            await export.run(project_id, owner="j")
        assert str(raised.value) == BLOCKED and raised.value.__cause__ is None
        assert listener.connections == 0
        assert _last_error(services, project_id) == f"DestinationError: {BLOCKED}"
        if resolution == "rebinding":
            assert len(resolve.calls) >= 2  # the proxy resolved again, and refused


@pytest.mark.usefixtures("no_secrets_left_behind")
@pytest.mark.parametrize("saved_by_admin", [False, True])
async def test_only_an_endpoint_the_admin_saved_may_reach_an_allowlisted_address(
    services: Any, project: Any, saved_by_admin: bool
) -> None:
    """A project key saves a name that resolves to a public address, then it resolves to an address the
    operator allowlisted for internal stores: the proxy still refuses it, since the allowlist is the
    admin's to use. The same endpoint saved by the admin key reaches the listener."""
    project_id, _ = project
    async with Listener(answer("200 OK", b"")) as listener:
        start = _hour_floor(datetime.now(UTC)) - DAY
        await write_rows(services.clickhouse, "traces", project_id, [{"id": "t1", "event_ts": start + MINUTE}])
        body = {
            **s3_body(project_id, f"http://store.example:{listener.port}"),
            "fileType": "JSONL",
            "exportMode": "FROM_CUSTOM_DATE",
            "exportStartDate": start.isoformat(),
        }
        upsert_integration(
            services.metadata, BOX, IntegrationRequest.model_validate(body), internal_allowed=saved_by_admin
        )
        export = job(
            services,
            Clock(start + HOUR + MINUTE),
            cfg=config(services.settings.data_dir, allowed_destinations="127.0.0.1"),
            resolve=fake_resolver([LOOPBACK]),
        )
        if saved_by_admin:
            with pytest.raises(Exception):  # noqa: B017 - the listener is no S3; that it was reached is the point
                await export.run(project_id, owner="j")
            assert listener.connections >= 1
        else:
            with pytest.raises(DestinationError) as raised:
                await export.run(project_id, owner="j")
            assert str(raised.value) == BLOCKED and listener.connections == 0


@pytest.mark.usefixtures("no_secrets_left_behind")
async def test_full_export_through_the_proxy_to_an_allowlisted_store(
    services: Any, project: Any, moto_endpoint: str, bucket: str, s3_client: Any
) -> None:
    project_id, _ = project
    start = await _one_window_project(
        services,
        project_id,
        moto_endpoint,
        bucketName=bucket,
        region=REGION,
        accessKeyId=ACCESS_KEY,
        secretAccessKey=SECRET_KEY,
        prefix="via-proxy/",
    )

    async def recording(host: str, port: int) -> list[IPAddress]:
        seen.append((host, port))
        return await resolve_host(host, port)

    seen: list[tuple[str, int]] = []
    results = await run_until_idle(job(services, Clock(start + HOUR + MINUTE), resolve=recording), project_id)
    assert results[0]["rows"] == 1 and results[0]["files"] == 1
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="via-proxy/").get("Contents", [])]
    assert any("/traces/" in k for k in keys) and any("/manifests/" in k for k in keys)
    # One check before the job, then the proxy's own for each connection it opened.
    assert len(seen) >= 2 and {h for h, _ in seen} == {"127.0.0.1"}


async def test_a_destination_error_body_never_reaches_logs_status_or_queue(
    api: Any, services: Any, logs: list[Any]
) -> None:
    from tracehouse.export.worker import export_processor
    from tracehouse.queues.runner import JobFailed, instrument

    make_app, svc, project_id, _ = api
    body = f"<Error><Code>AccessDenied</Code><Message>{MARKER} internal detail</Message></Error>".encode()
    async with Listener(answer("403 Forbidden", body, b"Content-Type: application/xml")) as listener:
        start = await _one_window_project(svc, project_id, f"http://127.0.0.1:{listener.port}")
        cfg = config(svc.settings.data_dir, min_window=timedelta(minutes=30))  # allowlists 127.0.0.1
        export = job(svc, Clock(start + HOUR + MINUTE), cfg=cfg)
        queue_log = structlog.get_logger("tracehouse.worker")
        run = instrument("q", export_processor(export), metrics=svc.metrics, activity=None, log=queue_log)
        queued = type("Job", (), {"id": "job-1", "data": {"projectId": project_id}, "attemptsMade": 0})()
        with pytest.raises(JobFailed) as failed:
            await run(queued, "token")
        assert listener.connections >= 1  # it did reach the destination, which answered 403
    expected = refused(403)
    assert str(failed.value) == f"DestinationError: {expected}"
    [queued_failure] = [e for e in logs if e["event"] == "job_failed"]  # the queue runner's log line
    assert queued_failure["error"] == f"DestinationError: {expected}"
    assert "Traceback" in queued_failure["traceback"] and "PermissionDenied" not in queued_failure["traceback"]
    assert MARKER not in repr(logs)
    assert any(e.get("errorMessage") == expected for e in logs if e["event"] == "blob_export_error_splitting")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app()), base_url="http://t") as client:
        status = await client.get("/api/public/integrations/blob-storage/status", headers=ADMIN)
        single = await client.get(f"/api/public/integrations/blob-storage/{project_id}", headers=ADMIN)
    assert MARKER not in status.text and MARKER not in single.text
    [view] = [v for v in status.json()["data"] if v["projectId"] == project_id]
    assert view["lastError"] == f"DestinationError: {expected}"


def test_failure_vocabulary_keeps_status_codes_and_drops_bodies() -> None:
    from obstore.exceptions import GenericError, PermissionDeniedError

    text = (
        "The operation lacked the necessary privileges to complete for path k: Error performing PUT "
        f"http://h/b/k in 1ms - Server returned non-2xx status code: 403 Forbidden: {MARKER}"
    )
    assert destination_failure(PermissionDeniedError(text)) == refused(403)
    assert destination_failure(OSError(text)) == refused(403)  # the sync writer's form
    assert destination_failure(OSError(text), blocked=True) == BLOCKED
    sending = "Generic S3 error: Error performing PUT https://h/b/k in 1ms - HTTP error: error sending request"
    assert destination_failure(GenericError(sending)) == "destination unreachable"
    assert destination_failure(GenericError(f"Generic S3 error: {MARKER}")) == "upload failed"
    # Not the destination's: an injected fault or a query error keeps its own words.
    assert destination_failure(OSError("injected: connection reset during multipart upload")) is None
    assert destination_failure(RuntimeError("Code: 241. MEMORY_LIMIT_EXCEEDED")) is None


@pytest.mark.slow
def test_cli_set_refuses_an_internal_endpoint_unless_allowlisted(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "TRACEHOUSE_DATA_DIR": str(tmp_path / "d"), "ENCRYPTION_KEY": KEY}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tracehouse", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("projects", "create", "p", "--id", "cli-eg", "--no-with-key").returncode == 0
    args = ("export", "integrations", "set", "--project", "cli-eg", "--type", "S3_COMPATIBLE", "--bucket", "b")
    internal = ("--endpoint", f"http://127.0.0.1:{free_port()}", "--force-path-style")
    refused_run = run(*args, *internal)
    assert refused_run.returncode == 1 and refused_run.stderr.startswith("error: endpoint: "), refused_run.stderr
    assert len(refused_run.stderr.strip().splitlines()) == 1
    allowed = run(*args, *internal, TRACEHOUSE_EXPORT_ALLOWED_DESTINATIONS="127.0.0.1")
    assert allowed.returncode == 0, allowed.stderr
    missing = run(*args[:4], "nope", *args[5:], "--endpoint", "http://8.8.8.8:9000")
    assert missing.returncode == 1 and "nope" in missing.stderr and "Traceback" not in missing.stderr
