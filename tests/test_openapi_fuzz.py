"""schemathesis generates requests from our OpenAPI document; none may produce a 5xx."""

import base64
import dataclasses
import secrets

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings

from tracehouse.metadata import create_api_key, create_project
from tracehouse.metrics import Metrics
from tracehouse.queues import bullmq_connection
from tracehouse.web.app import create_app

AUTH: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(base_services, redis_url):
    prefix = f"thtest-fuzz-{secrets.token_hex(4)}"
    settings_ = base_services.settings.model_copy(update={"redis_key_prefix": prefix})
    services = dataclasses.replace(base_services, settings=settings_, metrics=Metrics())
    project = create_project(services.metadata, "fuzz", project_id=f"fuzz-{secrets.token_hex(4)}")
    key = create_api_key(services.metadata, project.id, salt=services.settings.salt)
    AUTH["Authorization"] = "Basic " + base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()
    yield schemathesis.openapi.from_asgi("/api/public/openapi.json", create_app(services))
    client = redis.Redis(**bullmq_connection(redis_url))
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_no_request_causes_a_server_error(api_schema):
    # Driven operation by operation (schemathesis' pytest plugin does not load under pytest 9 yet).
    failures, exercised = [], []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        exercised.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call(headers=AUTH)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}: {response.text[:200]}"
                )

        check()
    assert len(exercised) >= 15, exercised
    assert failures == [], "\n".join(failures)
