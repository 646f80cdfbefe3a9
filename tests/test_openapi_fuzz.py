"""schemathesis generates requests from our OpenAPI document and checks every answer against it.

Each answer must not be a 5xx, must use a status code the document declares for the operation,
must have a declared content type, and its body must match the declared schema.
"""

import base64
import secrets

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import server_thread
from tracehouse.metadata import create_api_key, create_project
from tracehouse.queues import bullmq_connection

pytestmark = pytest.mark.slow  # hundreds of generated requests

AUTH: dict[str, str] = {}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(base_services, redis_url):
    prefix = f"thtest-fuzz-{secrets.token_hex(4)}"
    project = create_project(base_services.metadata, "fuzz", project_id=f"fuzz-{secrets.token_hex(4)}")
    key = create_api_key(base_services.metadata, project.id, salt=base_services.settings.salt)
    AUTH["Authorization"] = "Basic " + base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()
    with server_thread(base_services, prefix) as url:
        yield schemathesis.openapi.from_url(f"{url}/api/public/openapi.json")
    client = redis.Redis(**bullmq_connection(redis_url))
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_every_answer_conforms_to_the_openapi_document(api_schema):
    # Driven operation by operation (schemathesis' pytest plugin does not load under pytest 9 yet).
    failures, exercised = [], []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        exercised.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call(headers=AUTH)
            try:
                case.validate_response(response, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect every failure, report all
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}: {str(exc)[:400]}"
                )

        check()
    assert len(exercised) >= 20, exercised
    assert failures == [], "\n".join(failures[:30])
