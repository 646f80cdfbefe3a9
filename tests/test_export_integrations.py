"""Blob-storage integration management: Langfuse's API shape, scoping, encrypted secrets."""

import base64
import dataclasses
import uuid

import httpx
import pytest
from sqlalchemy import text

from tracehouse.errors import ConfigError
from tracehouse.export.crypto import SecretBox
from tracehouse.export.integrations import check_secrets_readable, delete_integration, list_integrations
from tracehouse.metadata import create_api_key, create_project
from tracehouse.web.app import create_app

KEY = "ab" * 32
OTHER_KEY = "cd" * 32


@pytest.fixture
def app_and_auth(services):
    settings = services.settings.model_copy(update={"encryption_key": KEY, "admin_api_key": "admin-secret"})
    svc = dataclasses.replace(services, settings=settings)
    project = create_project(svc.metadata, "exp", project_id=f"exp-{uuid.uuid4().hex[:8]}")
    key = create_api_key(svc.metadata, project.id, salt=settings.salt)
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()}
    yield create_app(svc), svc, project.id, auth
    # Leave no encrypted secrets behind: later test modules open the same metadata DB without a key.
    for row in list_integrations(svc.metadata, None):
        delete_integration(svc.metadata, row.project_id)


def _body(project_id, **overrides):
    body = {
        "projectId": project_id,
        "type": "S3_COMPATIBLE",
        "bucketName": "exports",
        # A public address (never contacted): a project key may not name a loopback endpoint.
        "endpoint": "http://8.8.8.8:9000",
        "region": "us-east-1",
        "accessKeyId": "AKIA-TEST",
        "secretAccessKey": "very-secret-value",
        "prefix": "langfuse/",
        "exportFrequency": "hourly",
        "enabled": True,
        "forcePathStyle": True,
        "fileType": "PARQUET",
        "exportMode": "FULL_HISTORY",
    }
    return {**body, **overrides}


async def _call(app, method, path, headers, json=None):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.request(method, path, headers=headers, json=json)


async def test_upsert_list_status_delete_and_secret_never_returned(app_and_auth):
    app, svc, project_id, auth = app_and_auth
    created = await _call(app, "PUT", "/api/public/integrations/blob-storage", auth, _body(project_id))
    assert created.status_code == 200, created.text
    view = created.json()
    assert (view["id"], view["bucketName"], view["exportFrequency"], view["fileType"]) == (
        project_id,
        "exports",
        "hourly",
        "PARQUET",
    )
    assert "very-secret-value" not in created.text and "secretAccessKey" not in view
    listed = (await _call(app, "GET", "/api/public/integrations/blob-storage", auth)).json()
    assert [i["projectId"] for i in listed["data"]] == [project_id]
    assert "very-secret-value" not in str(listed)
    status = (await _call(app, "GET", f"/api/public/integrations/blob-storage/{project_id}", auth)).json()
    assert (status["syncStatus"], status["enabled"]) == ("idle", True)

    # Encrypted at rest: the stored column holds neither the secret nor anything that reveals it.
    with svc.metadata.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT secret_access_key FROM blob_storage_integrations WHERE project_id = :p"), {"p": project_id}
        ).scalar_one()
    assert stored.startswith("v1:") and "very-secret-value" not in stored
    assert SecretBox(KEY).decrypt(stored) == "very-secret-value"

    updated = await _call(
        app,
        "PUT",
        "/api/public/integrations/blob-storage",
        auth,
        _body(project_id, exportFrequency="every_15_minutes", enabled=False, fileType="JSONL"),
    )
    assert updated.json()["exportFrequency"] == "every_15_minutes" and updated.json()["enabled"] is False
    status = (await _call(app, "GET", f"/api/public/integrations/blob-storage/{project_id}", auth)).json()
    assert status["syncStatus"] == "disabled"
    deleted = await _call(app, "DELETE", f"/api/public/integrations/blob-storage/{project_id}", auth)
    assert deleted.status_code == 200
    again = await _call(app, "DELETE", f"/api/public/integrations/blob-storage/{project_id}", auth)
    assert again.status_code == 404


async def test_scope_project_key_versus_admin_key(app_and_auth, services):
    app, svc, project_id, auth = app_and_auth
    other = create_project(svc.metadata, "other", project_id=f"other-{uuid.uuid4().hex[:8]}")
    denied = await _call(app, "PUT", "/api/public/integrations/blob-storage", auth, _body(other.id))
    assert denied.status_code == 403
    admin = {"Authorization": "Bearer admin-secret"}
    allowed = await _call(app, "PUT", "/api/public/integrations/blob-storage", admin, _body(other.id))
    assert allowed.status_code == 200
    assert (await _call(app, "GET", f"/api/public/integrations/blob-storage/{other.id}", auth)).status_code == 403
    mine = (await _call(app, "GET", "/api/public/integrations/blob-storage", auth)).json()["data"]
    assert other.id not in [i["projectId"] for i in mine]
    everyone = (await _call(app, "GET", "/api/public/integrations/blob-storage", admin)).json()["data"]
    assert other.id in [i["projectId"] for i in everyone]
    assert (await _call(app, "GET", "/api/public/integrations/blob-storage", {})).status_code == 401


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"type": "FTP"}, "type"),
        ({"exportFrequency": "every_minute"}, "exportFrequency"),
        ({"fileType": "JSON"}, "fileType"),
        ({"exportMode": "FROM_CUSTOM_DATE"}, "exportStartDate is required"),
        ({"endpoint": None}, "endpoint is required"),
        ({"prefix": "no-slash"}, "prefix must end with '/'"),
        ({"secretAccessKey": None}, "go together"),
        ({"bucketName": ""}, "bucketName"),
    ],
)
async def test_invalid_integrations_are_400_with_the_reason(app_and_auth, overrides, fragment):
    app, _, project_id, auth = app_and_auth
    response = await _call(app, "PUT", "/api/public/integrations/blob-storage", auth, _body(project_id, **overrides))
    assert response.status_code == 400
    assert fragment in response.json()["error"]


async def test_start_refuses_missing_or_wrong_key_when_secrets_exist(app_and_auth):
    app, svc, project_id, auth = app_and_auth
    stored = await _call(app, "PUT", "/api/public/integrations/blob-storage", auth, _body(project_id))
    assert stored.status_code == 200
    check_secrets_readable(svc.metadata, SecretBox(KEY))  # the right key passes
    with pytest.raises(ConfigError, match="ENCRYPTION_KEY is not set"):
        check_secrets_readable(svc.metadata, SecretBox(None))
    with pytest.raises(ConfigError, match="does not decrypt"):
        check_secrets_readable(svc.metadata, SecretBox(OTHER_KEY))
    # Without a key, storing a secret is refused with a clear message (not a 500).
    keyless = create_app(dataclasses.replace(svc, settings=svc.settings.model_copy(update={"encryption_key": None})))
    refused = await _call(keyless, "PUT", "/api/public/integrations/blob-storage", auth, _body(project_id))
    assert refused.status_code == 422 and "ENCRYPTION_KEY" in refused.json()["message"]
    await _call(app, "DELETE", f"/api/public/integrations/blob-storage/{project_id}", auth)


def test_malformed_encryption_key_fails_settings(monkeypatch):
    from tracehouse.settings import load_settings

    monkeypatch.setenv("ENCRYPTION_KEY", "too-short")
    with pytest.raises(ConfigError, match="ENCRYPTION_KEY"):
        load_settings()


def test_cli_set_list_delete(tmp_path):
    import subprocess
    import sys

    env = {
        "PATH": "/usr/bin:/bin",
        "TRACEHOUSE_DATA_DIR": str(tmp_path / "d"),
        "ENCRYPTION_KEY": KEY,
        "TRACEHOUSE_EXPORT_SECRET_ACCESS_KEY": "cli-secret",
    }

    def run(*args, extra=None):
        return subprocess.run(
            [sys.executable, "-m", "tracehouse", *args],
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("projects", "create", "p", "--id", "cli-p", "--no-with-key").returncode == 0
    made = run(
        "export",
        "integrations",
        "set",
        "--project",
        "cli-p",
        "--type",
        "S3",
        "--bucket",
        "b1",
        "--access-key-id",
        "AK",
        "--prefix",
        "x/",
        "--frequency",
        "daily",
    )
    assert made.returncode == 0, made.stderr
    assert "cli-secret" not in made.stdout
    listed = run("export", "integrations", "list").stdout
    assert "cli-p\tS3\tb1\tx/\tdaily\tPARQUET\tidle" in listed and "cli-secret" not in listed
    bad = run(
        "export",
        "integrations",
        "set",
        "--project",
        "cli-p",
        "--type",
        "S3",
        "--bucket",
        "b1",
        "--frequency",
        "every_minute",
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error: exportFrequency")
    # Secrets exist now: starting without the key is refused in one line.
    refused = run("migrate", extra={"ENCRYPTION_KEY": ""})
    assert refused.returncode == 1 and "ENCRYPTION_KEY is not set" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert run("export", "integrations", "delete", "--project", "cli-p").returncode == 0
    assert run("export", "integrations", "delete", "--project", "cli-p").returncode == 1
