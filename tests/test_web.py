import base64
import dataclasses

import httpx
import pytest
from fastapi import Depends

from tracehouse.auth import ProjectAuth, require_project
from tracehouse.metadata import create_api_key, create_project, revoke_api_key
from tracehouse.queues import redis_client
from tracehouse.runtime import migrate, open_services
from tracehouse.web.app import create_app


@pytest.fixture(scope="module")
async def services(settings):
    opened = await open_services(settings)
    await migrate(opened)
    yield opened
    await opened.close()


def _client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _basic(public: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{public}:{secret}".encode()).decode()}


async def test_health_is_langfuse_shaped(services):
    async with _client(create_app(services)) as client:
        response = await client.get("/api/public/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "OK" and isinstance(body["version"], str)


async def test_ready_checks_every_dependency(services):
    async with _client(create_app(services)) as client:
        response = await client.get("/api/ready")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {
        "clickhouse": "ok",
        "metadata": "ok",
        "redis": "ok",
        "blob_store": "ok",
        "media_store": "ok",
    }


async def test_ready_names_what_is_down(services):
    dead = redis_client("redis://127.0.0.1:1")
    broken = dataclasses.replace(services, redis_url="redis://127.0.0.1:1", redis=dead)
    try:
        async with _client(create_app(broken)) as client:
            response = await client.get("/api/ready")
    finally:
        await dead.aclose()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "Unavailable: redis"
    assert body["checks"]["redis"].startswith("cannot reach Redis at redis://127.0.0.1:1")
    assert body["checks"]["clickhouse"] == "ok"


async def test_metrics_count_requests(services):
    labels = {"method": "GET", "route": "/api/public/health", "status": "200"}
    before = services.metrics.registry.get_sample_value("http_requests_total", labels) or 0.0
    async with _client(create_app(services)) as client:
        await client.get("/api/public/health")
        await client.get("/api/public/health")
        text = (await client.get("/metrics")).text
    assert services.metrics.registry.get_sample_value("http_requests_total", labels) == before + 2
    assert 'http_requests_total{method="GET",route="/api/public/health",status="200"}' in text
    assert "http_request_duration_seconds_bucket" in text


async def test_basic_auth_resolves_the_project_and_rejects_everything_else(services):
    project = create_project(services.metadata, "auth-test")
    key = create_api_key(services.metadata, project.id, salt=services.settings.salt)
    app = create_app(services)

    @app.get("/api/public/whoami")
    async def whoami(auth: ProjectAuth = Depends(require_project)) -> dict[str, str]:
        return {"projectId": auth.project_id}

    async with _client(app) as client:
        ok = await client.get("/api/public/whoami", headers=_basic(key.public_key, key.secret_key))
        wrong = await client.get("/api/public/whoami", headers=_basic(key.public_key, "sk-lf-wrong"))
        missing = await client.get("/api/public/whoami")
        garbage = await client.get("/api/public/whoami", headers={"Authorization": "Basic !!!"})
        bearer = await client.get("/api/public/whoami", headers={"Authorization": "Bearer x"})
    assert ok.status_code == 200 and ok.json() == {"projectId": project.id}
    for response in (wrong, missing, garbage, bearer):
        assert response.status_code == 401
        assert response.json()["error"] == "UnauthorizedError"
        assert response.json()["message"]
    assert wrong.json()["message"].startswith("Invalid credentials")

    # Revocation takes effect once the verifier's cache entry is gone.
    assert revoke_api_key(services.metadata, key.public_key)
    app.state.key_verifier.forget()
    async with _client(app) as client:
        revoked = await client.get("/api/public/whoami", headers=_basic(key.public_key, key.secret_key))
    assert revoked.status_code == 401


async def test_openapi_document_is_served(services):
    async with _client(create_app(services)) as client:
        response = await client.get("/api/public/openapi.json")
    assert response.status_code == 200
    assert "/api/public/health" in response.json()["paths"]


async def test_the_key_cache_is_an_lru_bounded_in_bytes(services):
    from tracehouse.api_common import AuthError
    from tracehouse.auth import KeyVerifier, parse_basic

    project = create_project(services.metadata, "lru-test")
    key = create_api_key(services.metadata, project.id, salt=services.settings.salt)
    verifier = KeyVerifier(services.metadata, salt=services.settings.salt, max_bytes=5_000)
    assert await verifier.verify(key.public_key, key.secret_key) == project.id
    for i in range(100):
        assert await verifier.verify(f"pk-lf-{i}", f"sk-lf-{i}") is None
        assert await verifier.verify(key.public_key, key.secret_key) == project.id  # recently used: kept
    assert 0 < verifier.bytes_used <= 5_000 and len(verifier) < 100
    # Still cached: a revoked key answers until the entry goes (ttl or forget()).
    assert revoke_api_key(services.metadata, key.public_key)
    assert await verifier.verify(key.public_key, key.secret_key) == project.id
    verifier.forget()
    assert await verifier.verify(key.public_key, key.secret_key) is None
    assert len(verifier) == 1  # the revoked pair, cached as invalid

    # Pairs no key could match are neither looked up nor cached.
    for public, secret in (("pk-lf-" + "x" * 300, "sk-lf-y"), ("key", "sk-lf-y"), ("pk-lf-x", "secret")):
        assert await verifier.verify(public, secret) is None
    assert len(verifier) == 1
    for header in ("Basic \xff\xfe", "Basic " + "QUJD" * 300, "Basic 6Trp"):
        with pytest.raises(AuthError):
            parse_basic(header)


async def test_a_json_body_nested_beyond_the_parser_is_400(services):
    """A deeply nested integration body used to answer 500 (the parser's recursion gave out)."""
    app = create_app(services)
    nested = b'{"projectId":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    async with _client(app) as client:
        response = await client.put(
            "/api/public/integrations/blob-storage",
            headers={"Authorization": "Bearer x", "content-type": "application/json"},
            content=nested,
        )
    assert response.status_code in (400, 401), response.text
    settings = services.settings.model_copy(update={"admin_api_key": "admin-secret"})
    admin_app = create_app(dataclasses.replace(services, settings=settings))
    async with _client(admin_app) as client:
        deep = await client.put(
            "/api/public/integrations/blob-storage",
            headers={"Authorization": "Bearer admin-secret", "content-type": "application/json"},
            content=b'{"projectId":' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        )
        unknown_route = await client.get("/api/public/no-such-thing")
    assert deep.status_code == 400 and deep.json()["message"] == "Invalid request data", deep.text
    assert unknown_route.status_code == 404 and unknown_route.json()["error"] == "LangfuseNotFoundError"
