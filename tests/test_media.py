"""Media uploads (Langfuse's media API): upload URLs with sha256 deduplication, the local store's signed
upload and download routes, presigned S3 PUT/GET on moto, limits, isolation, and the real current SDK
uploading images and resolving its media references against a live server, on both stores."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import os
import secrets
import stat
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from conftest import ACCESS_KEY, REGION, SECRET_KEY, free_port
from helpers import rows_of, start_ingestion, until
from test_sdk import sdk_dir
from tracehouse.api_common import NotFound
from tracehouse.media.models import GetMediaUploadUrlRequest
from tracehouse.media.service import create_upload_url, get_media, media_id_for, receive_upload
from tracehouse.media.signing import UrlSigner, url_signing_key
from tracehouse.media.storage import DOWNLOAD_PURPOSE, UPLOAD_PURPOSE, MediaStore, build_media_store
from tracehouse.media.tables import Media, ObservationMedia, TraceMedia
from tracehouse.metadata import MetadataDB, create_api_key, create_project
from tracehouse.web.app import create_app
from tracehouse.web.server import build_server

SDK_SCRIPT = Path(__file__).with_name("sdk") / "media_v5.py"


# --- helpers -------------------------------------------------------------------------------------
def png(width: int = 3, height: int = 2) -> bytes:
    """A valid PNG of random colours, so every call gives new content (and a new sha256)."""
    rows = b"".join(b"\x00" + secrets.token_bytes(3 * width) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def upload_request(data: bytes, **changes: Any) -> dict[str, Any]:
    body = {
        "traceId": "trace-1",
        "observationId": "obs-1",
        "contentType": "image/png",
        "contentLength": len(data),
        "sha256Hash": sha256_b64(data),
        "field": "input",
    }
    body.update(changes)
    return body


def put_headers(data: bytes, content_type: str = "image/png") -> dict[str, str]:
    # What the SDK sends on its PUT (media_manager._process_upload_media_job).
    return {"Content-Type": content_type, "x-amz-checksum-sha256": sha256_b64(data), "x-ms-blob-type": "BlockBlob"}


def local_files(services: Any, project_id: str) -> dict[str, bytes]:
    """Every file the local media folder holds for the project (staging files included), by name."""
    folder = services.settings.data_dir.resolve() / "media" / project_id
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def second_project(services: Any) -> tuple[str, dict[str, str]]:
    created = create_project(services.metadata, "other", project_id=f"p-{secrets.token_hex(5)}")
    key = create_api_key(services.metadata, created.id, salt=services.settings.salt)
    token = base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()
    return created.id, {"Authorization": f"Basic {token}"}


def media_row(services: Any, project_id: str, media_id: str) -> Media | None:
    with services.metadata.session() as session:
        return session.get(Media, (project_id, media_id))


@asynccontextmanager
async def media_client(services: Any, **settings_changes: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The web app, called in process."""
    settings = services.settings.model_copy(update=settings_changes)
    app = create_app(dataclasses.replace(services, settings=settings, media=build_media_store(settings)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client, app


async def post_media(client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/public/media", json=body, headers=headers)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def upload_and_report(client: httpx.AsyncClient, headers: dict[str, str], data: bytes, **changes: Any) -> str:
    """POST, PUT the bytes to the upload URL, PATCH the outcome: what the SDK does. Returns the media id."""
    answer = await post_media(client, headers, upload_request(data, **changes))
    content_type = changes.get("contentType", "image/png")
    put = await client.put(answer["uploadUrl"], content=data, headers=put_headers(data, content_type))
    assert put.status_code == 200, put.text
    patch = await client.patch(
        f"/api/public/media/{answer['mediaId']}",
        json={"uploadedAt": "2026-12-01T10:00:00.000Z", "uploadHttpStatus": 200, "uploadHttpError": put.text},
        headers=headers,
    )
    assert patch.status_code == 204, patch.text
    media_id: str = answer["mediaId"]
    return media_id


def s3_media_settings(moto_endpoint: str, bucket: str, prefix: str = "") -> dict[str, Any]:
    return {
        "media_bucket": bucket,
        "media_prefix": prefix,
        "media_endpoint": moto_endpoint,
        "media_region": REGION,
        "media_access_key_id": ACCESS_KEY,
        "media_secret_access_key": SECRET_KEY,
        "media_force_path_style": True,
    }


# --- upload URLs, the local routes, GET and PATCH --------------------------------------------------
async def test_local_upload_download_round_trip(services: Any, project: tuple[str, dict[str, str]]) -> None:
    project_id, headers = project
    data = png()
    async with media_client(services) as (client, _app):
        answer = await post_media(client, headers, upload_request(data))
        media_id = answer["mediaId"]
        assert media_id == media_id_for(sha256_b64(data))
        upload_url = urlsplit(answer["uploadUrl"])
        assert (upload_url.scheme, upload_url.netloc) == ("http", "127.0.0.1:3000")  # settings.base_url
        assert upload_url.path == f"/api/public/media/{media_id}/upload"

        pending = await client.get(f"/api/public/media/{media_id}", headers=headers)
        assert (pending.status_code, pending.json()["message"]) == (404, "Media not yet uploaded")

        put = await client.put(answer["uploadUrl"], content=data, headers=put_headers(data))
        assert put.status_code == 200, put.text
        assert put.json()["mediaId"] == media_id and put.json()["contentLength"] == len(data)
        assert local_files(services, project_id) == {f"{media_id}.png": data}

        got = await client.get(f"/api/public/media/{media_id}", headers=headers)
        assert got.status_code == 200, got.text
        record = got.json()
        assert (record["mediaId"], record["contentType"], record["contentLength"]) == (media_id, "image/png", len(data))
        assert record["uploadedAt"].endswith("Z")
        expiry = datetime.fromisoformat(record["urlExpiry"].replace("Z", "+00:00")).timestamp()
        assert abs(expiry - (time.time() + services.settings.media_download_url_expiry_seconds)) < 30
        download = await client.get(record["url"])
        assert download.status_code == 200
        assert download.content == data
        assert download.headers["content-type"] == "image/png"
        assert download.headers["x-content-type-options"] == "nosniff"

    links = rows(services.metadata, ObservationMedia, project_id)
    assert [(r.trace_id, r.observation_id, r.media_id, r.field) for r in links] == [
        ("trace-1", "obs-1", media_id, "input")
    ]


def rows(metadata: MetadataDB, table: Any, project_id: str) -> list[Any]:
    with metadata.session() as session:
        return list(session.execute(sa.select(table).where(table.project_id == project_id)).scalars())


async def test_dedup_by_sha256_links_every_use(services: Any, project: tuple[str, dict[str, str]]) -> None:
    project_id, headers = project
    data = png()
    async with media_client(services) as (client, _app):
        # Not uploaded yet: a second request gets an upload URL again (nothing to deduplicate against).
        first = await post_media(client, headers, upload_request(data))
        again = await post_media(client, headers, upload_request(data, observationId=None, traceId="trace-2"))
        assert again["mediaId"] == first["mediaId"] and again["uploadUrl"] is not None

        media_id = await upload_and_report(client, headers, data)
        deduped = await post_media(client, headers, upload_request(data, observationId="obs-9", field="output"))
        assert deduped == {"mediaId": media_id, "uploadUrl": None}
        on_trace = await post_media(client, headers, upload_request(data, observationId=None, traceId="trace-3"))
        assert on_trace == {"mediaId": media_id, "uploadUrl": None}

        # The same bytes labelled with another content type are another object: a new upload.
        as_jpeg = await post_media(client, headers, upload_request(data, contentType="image/jpeg"))
        assert as_jpeg["mediaId"] == media_id and as_jpeg["uploadUrl"] is not None
        assert (await client.get(f"/api/public/media/{media_id}", headers=headers)).status_code == 404
        # A link signed for the old object name no longer uploads anything.
        stale = await client.put(first["uploadUrl"], content=data, headers=put_headers(data))
        assert stale.status_code == 404
        await client.put(as_jpeg["uploadUrl"], content=data, headers=put_headers(data, "image/jpeg"))
        record = (await client.get(f"/api/public/media/{media_id}", headers=headers)).json()
        assert record["contentType"] == "image/jpeg"

    observation_links = {
        (r.trace_id, r.observation_id, r.field) for r in rows(services.metadata, ObservationMedia, project_id)
    }
    assert observation_links == {("trace-1", "obs-1", "input"), ("trace-1", "obs-9", "output")}
    assert {(r.trace_id, r.field) for r in rows(services.metadata, TraceMedia, project_id)} == {
        ("trace-2", "input"),
        ("trace-3", "input"),
    }
    assert len(rows(services.metadata, Media, project_id)) == 1


async def test_download_of_bytes_missing_from_the_store_is_404(
    services: Any, project: tuple[str, dict[str, str]]
) -> None:
    project_id, headers = project
    data = png()
    async with media_client(services) as (client, _app):
        media_id = await upload_and_report(client, headers, data)
        url = (await client.get(f"/api/public/media/{media_id}", headers=headers)).json()["url"]
        (services.settings.data_dir.resolve() / "media" / project_id / f"{media_id}.png").unlink()
        response = await client.get(url)
    assert response.status_code == 404
    assert response.json()["message"] == f"the bytes of media {media_id} are missing from the media store"


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"contentType": "image/x-unknown"}, "contentType"),
        ({"contentType": None}, "contentType"),
        ({"contentLength": 0}, "contentLength"),
        ({"contentLength": "12"}, "contentLength"),
        ({"sha256Hash": "abc"}, "sha256Hash"),
        ({"sha256Hash": "!" * 43 + "="}, "sha256Hash"),
        ({"field": "body"}, "field"),
        ({"traceId": None}, "traceId"),
        ({"datasetId": "ds-1", "datasetItemId": "item-1"}, "datasetId"),
        ({"datasetItemId": "item-1"}, "datasetItemId"),
    ],
)
async def test_bad_upload_requests_are_400_naming_the_field(
    services: Any, project: tuple[str, dict[str, str]], changes: dict[str, Any], parameter: str
) -> None:
    project_id, headers = project
    async with media_client(services) as (client, _app):
        response = await client.post("/api/public/media", json=upload_request(png(), **changes), headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == parameter
    assert rows(services.metadata, Media, project_id) == []


async def test_content_length_limit(services: Any, project: tuple[str, dict[str, str]]) -> None:
    project_id, headers = project
    data = png()
    async with media_client(services, media_max_content_length=len(data) - 1) as (client, _app):
        response = await client.post("/api/public/media", json=upload_request(data), headers=headers)
        assert response.status_code == 400
        assert response.json()["parameter"] == "contentLength"
        assert "LANGFUSE_S3_MEDIA_MAX_CONTENT_LENGTH" in response.json()["error"]
    async with media_client(services, media_max_content_length=len(data)) as (client, _app):
        await post_media(client, headers, upload_request(data))
    assert len(rows(services.metadata, Media, project_id)) == 1


async def test_wrong_bytes_are_refused_and_nothing_is_stored(
    services: Any, project: tuple[str, dict[str, str]]
) -> None:
    project_id, headers = project
    data = png()
    other = bytearray(data)
    other[-13] ^= 0xFF  # same length, another digest
    async with media_client(services) as (client, _app):
        url = (await post_media(client, headers, upload_request(data)))["uploadUrl"]
        media_id = media_id_for(sha256_b64(data))
        refused = [
            (await client.put(url, content=bytes(other), headers=put_headers(data)), "SHA-256"),
            (await client.put(url, content=data, headers=put_headers(data, "image/jpeg")), "Content-Type"),
            (await client.put(url, content=data + b"x", headers=put_headers(data)), "Content-Length"),
            (await client.put(url, content=data[:-1], headers=put_headers(data)), "Content-Length"),
            (
                await client.put(url, content=data, headers={**put_headers(data), "x-amz-checksum-sha256": "x"}),
                "x-amz-checksum-sha256",
            ),
        ]
        for response, named in refused:
            assert response.status_code == 400, response.text
            assert named in response.text
        assert local_files(services, project_id) == {}
        row = media_row(services, project_id, media_id)
        assert row is not None
        assert (row.upload_http_status, row.upload_http_error) == (400, "SHA-256 hash does not match signed upload")
        failed = await client.get(f"/api/public/media/{media_id}", headers=headers)
        assert failed.status_code == 404 and "failed with status 400" in failed.json()["message"]

        assert (await client.put(url, content=data, headers=put_headers(data))).status_code == 200
        # A bad attempt after a good one stores nothing and leaves the good upload standing.
        assert (await client.put(url, content=bytes(other), headers=put_headers(data))).status_code == 400
        assert local_files(services, project_id) == {f"{media_id}.png": data}
        assert (await client.get(f"/api/public/media/{media_id}", headers=headers)).status_code == 200


async def test_expired_and_forged_tokens_are_403(services: Any, project: tuple[str, dict[str, str]]) -> None:
    project_id, headers = project
    data = png()
    async with media_client(services) as (client, app):
        media_id = await upload_and_report(client, headers, data)
        download_url = (await client.get(f"/api/public/media/{media_id}", headers=headers)).json()["url"]
        store: MediaStore = app.state.services.media
        upload_url = (await post_media(client, headers, upload_request(png())))["uploadUrl"]

        def with_token(url: str, token: str) -> str:
            return url.split("?", 1)[0] + "?token=" + token

        token = parse_qs(urlsplit(download_url).query)["token"][0]
        payload, signature = token.split(".")
        grant = store.signer.verify(DOWNLOAD_PURPOSE, token)
        expired = store.signer.sign(DOWNLOAD_PURPOSE, dataclasses.replace(grant, expires_at=time.time() - 1))
        other_key = UrlSigner(b"another key, not this server's").sign(DOWNLOAD_PURPOSE, grant)
        forged_payload = store.signer.sign(DOWNLOAD_PURPOSE, dataclasses.replace(grant, content_length=1)).split(".")[0]
        flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
        as_upload = store.signer.sign(UPLOAD_PURPOSE, grant)
        for bad in (expired, other_key, f"{forged_payload}.{signature}", f"{payload}.{flipped}", as_upload, "x.y"):
            response = await client.get(with_token(download_url, bad))
            assert response.status_code == 403, (bad, response.text)
            assert response.json()["error"] == "ForbiddenError"
        # A valid token on another media id's path, and a download token on the upload route.
        assert (await client.get(download_url.replace(media_id, media_id_for(sha256_b64(png()))))).status_code == 403
        put = await client.put(with_token(upload_url, token), content=data, headers=put_headers(data))
        assert put.status_code == 403
        upload_token = parse_qs(urlsplit(upload_url).query)["token"][0]
        upload_grant = store.signer.verify(UPLOAD_PURPOSE, upload_token)
        stale = store.signer.sign(UPLOAD_PURPOSE, dataclasses.replace(upload_grant, expires_at=time.time() - 1))
        assert (
            await client.put(with_token(upload_url, stale), content=data, headers=put_headers(data))
        ).status_code == 403
        assert (await client.get(download_url)).content == data  # the real link still works
    assert set(local_files(services, project_id)) == {f"{media_id}.png"}


async def test_another_projects_media_is_not_found(services: Any, project: tuple[str, dict[str, str]]) -> None:
    project_id, headers = project
    other_id, other_headers = second_project(services)
    data = png()
    async with media_client(services) as (client, _app):
        media_id = await upload_and_report(client, headers, data)
        assert (await client.get(f"/api/public/media/{media_id}", headers=other_headers)).status_code == 404
        patch = await client.patch(
            f"/api/public/media/{media_id}",
            json={"uploadedAt": "2026-12-01T10:00:00Z", "uploadHttpStatus": 500, "uploadHttpError": "x"},
            headers=other_headers,
        )
        assert patch.status_code == 404
        # The other project uploading the same bytes is not deduplicated against this one.
        theirs = await post_media(client, other_headers, upload_request(data))
        assert theirs["mediaId"] == media_id and theirs["uploadUrl"] is not None
        assert (await client.get(f"/api/public/media/{media_id}", headers=headers)).status_code == 200
        unauthenticated = await client.get(f"/api/public/media/{media_id}")
        assert unauthenticated.status_code == 401
    assert local_files(services, other_id) == {}


async def test_patch_records_the_outcome_and_checks_success_claims(
    services: Any, project: tuple[str, dict[str, str]]
) -> None:
    project_id, headers = project
    data = png()
    async with media_client(services) as (client, _app):
        media_id = (await post_media(client, headers, upload_request(data)))["mediaId"]
        claim = {"uploadedAt": "2026-12-01T10:00:00Z", "uploadHttpStatus": 200, "uploadHttpError": None}
        lie = await client.patch(f"/api/public/media/{media_id}", json=claim, headers=headers)
        assert lie.status_code == 400 and lie.json()["parameter"] == "uploadHttpStatus"
        assert media_row(services, project_id, media_id).upload_http_status is None  # type: ignore[union-attr]

        failure = {"uploadedAt": "2026-12-01T10:00:01Z", "uploadHttpStatus": 503, "uploadHttpError": "Slow Down"}
        assert (await client.patch(f"/api/public/media/{media_id}", json=failure, headers=headers)).status_code == 204
        got = await client.get(f"/api/public/media/{media_id}", headers=headers)
        assert got.status_code == 404
        assert got.json()["message"] == "Media upload failed with status 503: Slow Down"
        bad_status = await client.patch(
            f"/api/public/media/{media_id}", json={**failure, "uploadHttpStatus": 42}, headers=headers
        )
        assert bad_status.status_code == 400 and bad_status.json()["parameter"] == "uploadHttpStatus"
        missing = await client.patch("/api/public/media/no-such-media", json=failure, headers=headers)
        assert missing.status_code == 404


async def test_s3_presigned_put_and_get(
    services: Any, project: tuple[str, dict[str, str]], moto_endpoint: str, bucket: str, s3_client: Any
) -> None:
    project_id, headers = project
    data = png()
    settings = s3_media_settings(moto_endpoint, bucket, prefix="media/")
    async with media_client(services, **settings) as (client, _app):
        answer = await post_media(client, headers, upload_request(data))
        media_id = answer["mediaId"]
        upload_url = urlsplit(answer["uploadUrl"])
        assert f"{upload_url.scheme}://{upload_url.netloc}" == moto_endpoint
        assert upload_url.path == f"/{bucket}/media/{project_id}/{media_id}.png"
        signed = parse_qs(upload_url.query)["X-Amz-SignedHeaders"][0].split(";")
        assert signed == ["content-length", "content-type", "host", "x-amz-checksum-sha256"]
        # The local routes are not in use with a bucket.
        assert (await client.put(f"/api/public/media/{media_id}/upload?token=x.y", content=data)).status_code == 404

        async with httpx.AsyncClient() as outside:  # the client's own PUT, straight to the bucket
            put = await outside.put(answer["uploadUrl"], content=data, headers=put_headers(data))
            assert put.status_code == 200, put.text
            stored = s3_client.get_object(Bucket=bucket, Key=f"media/{project_id}/{media_id}.png")
            assert stored["Body"].read() == data and stored["ContentType"] == "image/png"

            report = {"uploadedAt": "2026-12-01T10:00:00Z", "uploadHttpStatus": 200, "uploadHttpError": ""}
            assert (
                await client.patch(f"/api/public/media/{media_id}", json=report, headers=headers)
            ).status_code == 204
            record = (await client.get(f"/api/public/media/{media_id}", headers=headers)).json()
            assert record["url"].startswith(f"{moto_endpoint}/{bucket}/media/{project_id}/{media_id}.png?")
            assert "X-Amz-Signature=" in record["url"]
            download = await outside.get(record["url"])
            assert download.status_code == 200 and download.content == data
        row = media_row(services, project_id, media_id)
        assert row is not None and (row.bucket_name, row.bucket_path) == (bucket, f"media/{project_id}/{media_id}.png")
        deduped = await post_media(client, headers, upload_request(data, traceId="trace-2"))
        assert deduped == {"mediaId": media_id, "uploadUrl": None}


async def test_records_and_links_on_the_metadata_backend(metadata_url: str, settings: Any, tmp_path: Path) -> None:
    """The upserts and links on PostgreSQL too (when CI gives one): racing first requests make one
    record, repeated links stay one row, and another content type resets the upload state."""
    db = MetadataDB(metadata_url)
    try:
        await asyncio.to_thread(db.migrate)
        project_id = create_project(db, "media", project_id=f"p-{secrets.token_hex(5)}").id
        store = build_media_store(settings.model_copy(update={"data_dir": tmp_path, "url_signing_secret": "k" * 32}))
        data = png()
        request = GetMediaUploadUrlRequest.model_validate(upload_request(data))
        answers = await asyncio.gather(*(create_upload_url(db, store, project_id, request) for _ in range(6)))
        assert {a.media_id for a in answers} == {media_id_for(sha256_b64(data))}
        assert all(a.upload_url is not None for a in answers)

        token = parse_qs(urlsplit(answers[0].upload_url or "").query)["token"][0]
        grant = store.signer.verify(UPLOAD_PURPOSE, token)

        async def body() -> AsyncIterator[bytes]:
            yield data[:10]
            yield data[10:]

        headers = {"content-length": str(len(data)), "content-type": "image/png"}
        await receive_upload(db, store, grant, headers, body())
        again = await create_upload_url(db, store, project_id, request)
        assert again.upload_url is None
        record = await get_media(db, store, project_id, again.media_id)
        assert (record.content_type, record.content_length) == ("image/png", len(data))

        as_pdf = GetMediaUploadUrlRequest.model_validate(upload_request(data, contentType="application/pdf"))
        assert (await create_upload_url(db, store, project_id, as_pdf)).upload_url is not None
        with pytest.raises(NotFound, match="not yet uploaded"):
            await get_media(db, store, project_id, again.media_id)
        assert [r.field for r in rows(db, ObservationMedia, project_id)] == ["input"]
        assert len(rows(db, Media, project_id)) == 1
    finally:
        db.dispose()


# --- the signing key ------------------------------------------------------------------------------
def test_signing_key_is_made_once_and_kept_private(settings: Any, tmp_path: Path) -> None:
    local = settings.model_copy(update={"data_dir": tmp_path / "data", "url_signing_secret": None})
    first = url_signing_key(local)
    key_file = tmp_path / "data" / "url-signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert url_signing_key(local) == first and len(first) >= 32
    assert [p.name for p in key_file.parent.iterdir()] == ["url-signing.key"]  # no staging file left
    configured = local.model_copy(update={"url_signing_secret": "from-the-environment"})
    assert url_signing_key(configured) == b"from-the-environment"
    key_file.write_text("short\n")
    with pytest.raises(ValueError, match="no usable signing key"):
        url_signing_key(local)


# --- the real SDK against a live server ------------------------------------------------------------
@asynccontextmanager
async def live_server(services: Any, **settings_changes: Any) -> AsyncIterator[str]:
    """tracehouse on a loopback port with the media router and ingestion workers; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = services.settings.model_copy(update={"public_url": url, **settings_changes})
    live = dataclasses.replace(services, settings=settings, media=build_media_store(settings))
    app = create_app(live)
    server = build_server(app, settings, host="127.0.0.1", port=port)
    runner = await start_ingestion(live)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task
            await asyncio.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        await task
        await runner.shutdown(10)


async def run_sdk(url: str, headers: dict[str, str], *args: str, images: tuple[bytes, bytes]) -> dict[str, Any]:
    public_key, secret_key = base64.b64decode(headers["Authorization"].split()[1]).decode().split(":", 1)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(sdk_dir("v5")),
        "PK": public_key,
        "SK": secret_key,
        "BASE_URL": url,
        "IMAGE_A": base64.b64encode(images[0]).decode(),
        "IMAGE_B": base64.b64encode(images[1]).decode(),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SDK_SCRIPT), *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert result["errors"] == [], result["errors"]
    return result


def reference(media_id: str, source: str) -> str:
    return f"@@@langfuseMedia:type=image/png|id={media_id}|source={source}@@@"


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def sdk_round_trip(services: Any, project: tuple[str, dict[str, str]], stored: Any, **settings: Any) -> None:
    """The SDK sends a generation with two images, tracehouse stores the bytes (`stored(project_id,
    media_id) -> bytes`), and the SDK resolves its references back to the same bytes."""
    project_id, headers = project
    image_a, image_b = png(4, 4), png(5, 3)
    id_a, id_b = media_id_for(sha256_b64(image_a)), media_id_for(sha256_b64(image_b))
    async with live_server(services, **settings) as url:
        sent = await run_sdk(url, headers, "send", images=(image_a, image_b))
        assert stored(project_id, id_a) == image_a
        assert stored(project_id, id_b) == image_b

        async def generation() -> Any:
            found = await rows_of(services, "observations", project_id, f"id = '{sent['generation_id']}'")
            return found[0] if found and found[0]["output"] else None

        row = await until(generation, timeout=60)
        assert reference(id_a, "base64_data_uri") in row["input"]
        assert base64.b64encode(image_a).decode() not in row["input"]
        assert json.loads(row["output"]) == {"caption": "a small square", "thumbnail": reference(id_b, "bytes")}

        read = await run_sdk(url, headers, "read", sent["trace_id"], sent["generation_id"], images=(image_a, image_b))
    question = as_json(read["resolved"]["input"])[0]["content"]
    assert question[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(image_a).decode()
    assert as_json(read["resolved"]["output"]) == {
        "caption": "a small square",
        "thumbnail": "data:image/png;base64," + base64.b64encode(image_b).decode(),
    }
    assert set(read["media"]) == {id_a, id_b}
    for media_id, image in ((id_a, image_a), (id_b, image_b)):
        media = read["media"][media_id]
        assert (media["content_type"], media["content_length"]) == ("image/png", len(image))
        assert (media["download_status"], media["download_content_type"]) == (200, "image/png")
        assert base64.b64decode(media["download_base64"]) == image
    links = {(r.observation_id, r.media_id, r.field) for r in rows(services.metadata, ObservationMedia, project_id)}
    assert links == {(sent["generation_id"], id_a, "input"), (sent["generation_id"], id_b, "output")}


@pytest.mark.slow
async def test_sdk_media_on_the_local_store(services: Any, project: tuple[str, dict[str, str]]) -> None:
    def stored(project_id: str, media_id: str) -> bytes:
        return local_files(services, project_id)[f"{media_id}.png"]

    await sdk_round_trip(services, project, stored)


@pytest.mark.slow
async def test_sdk_media_on_s3(
    services: Any, project: tuple[str, dict[str, str]], moto_endpoint: str, bucket: str, s3_client: Any
) -> None:
    def stored(project_id: str, media_id: str) -> bytes:
        body: bytes = s3_client.get_object(Bucket=bucket, Key=f"sdk/{project_id}/{media_id}.png")["Body"].read()
        return body

    await sdk_round_trip(services, project, stored, **s3_media_settings(moto_endpoint, bucket, prefix="sdk/"))
