"""Media records, upload URLs, upload reports and downloads, with Langfuse's semantics.

- A media id is the first 22 characters of the url-safe base64 SHA-256 (what the SDK computes too,
  and checks against the answer), so the same bytes are one record per project.
- Deduplication: content already uploaded in the project with the same content type answers
  `uploadUrl: null` and its media id; either way the media is linked to the trace or observation field.
- A client reports its upload with PATCH; a success is believed only when the object is in the
  store with the signed length. The local upload route records the outcome itself, after checking
  the bytes against the signed length and SHA-256.

Database calls are blocking and run in threads; storage calls are async.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tracehouse.api_common import BadParameter, BadRequest, NotFound
from tracehouse.blobs import BlobNotFound
from tracehouse.logging import get_logger
from tracehouse.media.models import (
    UPLOADED_STATUSES,
    GetMediaResponse,
    GetMediaUploadUrlRequest,
    GetMediaUploadUrlResponse,
    MediaRecord,
    MediaUploaded,
    PatchMediaBody,
)
from tracehouse.media.signing import MediaGrant
from tracehouse.media.storage import MediaStore
from tracehouse.media.tables import Media, ObservationMedia, TraceMedia
from tracehouse.metadata import MetadataDB

log = get_logger("tracehouse.media")


def media_id_for(sha256_hash: str) -> str:
    """Langfuse's media id: the first 132 bits of the digest, as url-safe base64."""
    return sha256_hash.replace("+", "-").replace("/", "_")[:22]


# --- POST /api/public/media ------------------------------------------------------------------------
def check_upload_request(request: GetMediaUploadUrlRequest, max_content_length: int) -> None:
    if request.dataset_id is not None or request.dataset_item_id is not None:
        parameter = "datasetId" if request.dataset_id is not None else "datasetItemId"
        raise BadParameter(parameter, "dataset item media is not supported: tracehouse has no datasets")
    if request.trace_id is None:
        raise BadParameter("traceId", "required: the trace the media belongs to")
    if request.content_length > max_content_length:
        raise BadParameter(
            "contentLength",
            f"{request.content_length} bytes is more than the {max_content_length} bytes media may have "
            "(LANGFUSE_S3_MEDIA_MAX_CONTENT_LENGTH)",
        )


async def create_upload_url(
    metadata: MetadataDB, store: MediaStore, project_id: str, request: GetMediaUploadUrlRequest
) -> GetMediaUploadUrlResponse:
    existing = await asyncio.to_thread(_find_by_hash, metadata, project_id, request.sha256_hash)
    if existing is not None and existing.uploaded and existing.content_type == request.content_type:
        await asyncio.to_thread(_save, metadata, project_id, request, existing.id, None)
        return GetMediaUploadUrlResponse(upload_url=None, media_id=existing.id)
    media_id = existing.id if existing is not None else media_id_for(request.sha256_hash)
    grant = store.upload_grant(project_id, media_id, request.content_type, request.content_length, request.sha256_hash)
    upload_url = await store.upload_url(grant)
    await asyncio.to_thread(_save, metadata, project_id, request, media_id, (store.bucket_name, grant.bucket_path))
    return GetMediaUploadUrlResponse(upload_url=upload_url, media_id=media_id)


def _save(
    metadata: MetadataDB,
    project_id: str,
    request: GetMediaUploadUrlRequest,
    media_id: str,
    pending_object: tuple[str, str] | None,
) -> None:
    """Store the pending upload (unless deduplicated) and link the media, in one transaction."""
    with metadata.session() as session:
        insert = _insert_for(metadata)
        if pending_object is not None:
            session.execute(_upsert_pending(insert, project_id, request, media_id, *pending_object))
        assert request.trace_id is not None  # check_upload_request ran
        link: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "project_id": project_id,
            "trace_id": request.trace_id,
            "media_id": media_id,
            "field": str(request.field),
            "created_at": datetime.now(UTC),
        }
        if request.observation_id is not None:
            statement = insert(ObservationMedia).values(**link, observation_id=request.observation_id)
        else:
            statement = insert(TraceMedia).values(**link)
        session.execute(statement.on_conflict_do_nothing())


def _upsert_pending(
    insert: Callable[..., Any],
    project_id: str,
    request: GetMediaUploadUrlRequest,
    media_id: str,
    bucket_name: str,
    bucket_path: str,
) -> Any:
    now = datetime.now(UTC)
    statement = insert(Media).values(
        project_id=project_id,
        id=media_id,
        sha256_hash=request.sha256_hash,
        bucket_name=bucket_name,
        bucket_path=bucket_path,
        content_type=str(request.content_type),
        content_length=request.content_length,
        created_at=now,
        updated_at=now,
    )
    new = statement.excluded
    # Another content type is another object name, which is not uploaded yet whatever the old one
    # was (Langfuse keeps the old status and would hand out links to a missing object).
    same_object = sa.and_(Media.bucket_name == new.bucket_name, Media.bucket_path == new.bucket_path)
    return statement.on_conflict_do_update(
        index_elements=[Media.project_id, Media.sha256_hash],
        set_={
            Media.bucket_name: new.bucket_name,
            Media.bucket_path: new.bucket_path,
            Media.content_type: new.content_type,
            Media.content_length: new.content_length,
            Media.updated_at: now,
            Media.uploaded_at: sa.case((same_object, Media.uploaded_at), else_=None),
            Media.upload_http_status: sa.case((same_object, Media.upload_http_status), else_=None),
            Media.upload_http_error: sa.case((same_object, Media.upload_http_error), else_=None),
        },
    )


def _insert_for(metadata: MetadataDB) -> Callable[..., Any]:
    """INSERT with ON CONFLICT for the metadata backend (both dialects spell it the same way)."""
    return postgresql.insert if metadata.dialect == "postgresql" else sqlite.insert


# --- PATCH /api/public/media/{mediaId} -------------------------------------------------------------
async def report_upload(
    metadata: MetadataDB, store: MediaStore, project_id: str, media_id: str, report: PatchMediaBody
) -> None:
    media = await _require(metadata, project_id, media_id)
    if report.upload_http_status in UPLOADED_STATUSES:
        await _check_object_stored(store, media)
    await asyncio.to_thread(
        _set_status,
        metadata,
        media,
        report.uploaded_at,
        report.upload_http_status,
        None if report.upload_http_status in UPLOADED_STATUSES else report.upload_http_error,
    )
    log.info(
        "media_upload_reported",
        project_id=project_id,
        media_id=media_id,
        upload_http_status=report.upload_http_status,
        upload_time_ms=report.upload_time_ms,
    )


async def _check_object_stored(store: MediaStore, media: MediaRecord) -> None:
    _check_same_store(store, media)
    try:
        info = await store.blobs.head(media.bucket_path)
    except BlobNotFound:
        raise BadParameter(
            "uploadHttpStatus", f"reports success, but media {media.id} is not in the media store"
        ) from None
    if info.size != media.content_length:
        raise BadParameter(
            "uploadHttpStatus",
            f"reports success, but the stored object has {info.size} bytes, not {media.content_length}",
        )


# --- GET /api/public/media/{mediaId} ---------------------------------------------------------------
async def get_media(metadata: MetadataDB, store: MediaStore, project_id: str, media_id: str) -> GetMediaResponse:
    media = await _require(metadata, project_id, media_id)
    if media.upload_http_status is None:
        raise NotFound("Media not yet uploaded")
    if not media.uploaded:
        raise NotFound(f"Media upload failed with status {media.upload_http_status}: {media.upload_http_error}")
    _check_same_store(store, media)
    link = await store.download_url(media)
    return GetMediaResponse(
        media_id=media.id,
        content_type=media.content_type,
        content_length=media.content_length,
        uploaded_at=media.uploaded_at,
        url=link.url,
        url_expiry=link.expires_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    )


def _check_same_store(store: MediaStore, media: MediaRecord) -> None:
    if media.bucket_name != store.bucket_name:
        raise NotFound(
            f"media {media.id} was stored in bucket {media.bucket_name!r}, not in the configured media store "
            f"({store.bucket_name!r})"
        )


# --- the local store's signed routes ---------------------------------------------------------------
class UploadRejected(BadRequest):
    """The body is not the content the upload was signed for."""


async def receive_upload(
    metadata: MetadataDB,
    store: MediaStore,
    grant: MediaGrant,
    headers: dict[str, str],
    body: AsyncIterable[bytes],
) -> MediaUploaded:
    """Store the body under the grant's object name if it is exactly the signed content; otherwise
    store nothing, record the failure and answer 400."""
    media = await _granted_media(metadata, grant)
    _check_upload_headers(grant, headers)
    try:
        await store.blobs.put_stream(grant.bucket_path, _verified(body, grant))
    except UploadRejected as rejected:
        await asyncio.to_thread(_set_failed_unless_uploaded, metadata, media, 400, rejected.message)
        log.info("media_upload_rejected", project_id=media.project_id, media_id=media.id, reason=rejected.message)
        raise
    uploaded_at = datetime.now(UTC)
    await asyncio.to_thread(_set_status, metadata, media, uploaded_at, 200, None)
    return MediaUploaded(media_id=media.id, content_length=grant.content_length, uploaded_at=uploaded_at)


def _check_upload_headers(grant: MediaGrant, headers: dict[str, str]) -> None:
    length = headers.get("content-length")
    if length is None or length.strip() != str(grant.content_length):
        raise BadParameter(
            "Content-Length", f"must be {grant.content_length}, the signed length (got {length or 'none'})"
        )
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != grant.content_type:
        raise BadParameter("Content-Type", f"must be {grant.content_type}, the signed type (got {content_type!r})")
    checksum = headers.get("x-amz-checksum-sha256")
    if checksum is not None and checksum.strip() != grant.sha256_hash:
        raise BadParameter("x-amz-checksum-sha256", "differs from the signed SHA-256")


async def _verified(body: AsyncIterable[bytes], grant: MediaGrant) -> AsyncIterator[bytes]:
    """The body, passed on while it is within the signed length; raising at the end (so the upload is
    aborted, not committed) unless its length and SHA-256 are the signed ones."""
    digest = hashlib.sha256()
    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > grant.content_length:
            raise UploadRejected(f"the body is longer than the signed {grant.content_length} bytes")
        digest.update(chunk)
        yield chunk
    if received != grant.content_length:
        raise UploadRejected(f"the body has {received} bytes, not the signed {grant.content_length}")
    if base64.b64encode(digest.digest()).decode() != grant.sha256_hash:
        raise UploadRejected("SHA-256 hash does not match signed upload")


async def open_download(
    metadata: MetadataDB, store: MediaStore, grant: MediaGrant
) -> tuple[MediaRecord, AsyncIterator[bytes]]:
    media = await _granted_media(metadata, grant)
    if not media.uploaded:
        raise NotFound("Media not yet uploaded")
    try:
        return media, await store.blobs.open_stream(media.bucket_path)
    except BlobNotFound:
        raise NotFound(f"the bytes of media {media.id} are missing from the media store") from None


async def _granted_media(metadata: MetadataDB, grant: MediaGrant) -> MediaRecord:
    media = await asyncio.to_thread(_find, metadata, grant.project_id, grant.media_id)
    # A later upload request for other content (another type, so another object) voids older links.
    if media is None or media.bucket_path != grant.bucket_path:
        raise NotFound("Media asset not found")
    return media


# --- rows ----------------------------------------------------------------------------------------
async def _require(metadata: MetadataDB, project_id: str, media_id: str) -> MediaRecord:
    media = await asyncio.to_thread(_find, metadata, project_id, media_id)
    if media is None:
        raise NotFound("Media asset not found")
    return media


def _find(metadata: MetadataDB, project_id: str, media_id: str) -> MediaRecord | None:
    with metadata.session() as session:
        row = session.get(Media, (project_id, media_id))
        return _record(row) if row is not None else None


def _find_by_hash(metadata: MetadataDB, project_id: str, sha256_hash: str) -> MediaRecord | None:
    query = sa.select(Media).where(Media.project_id == project_id, Media.sha256_hash == sha256_hash)
    with metadata.session() as session:
        row = session.execute(query).scalar_one_or_none()
        return _record(row) if row is not None else None


def _set_status(
    metadata: MetadataDB, media: MediaRecord, uploaded_at: datetime, status: int, error: str | None
) -> None:
    values = {"uploaded_at": uploaded_at, "upload_http_status": status, "upload_http_error": error}
    with metadata.session() as session:
        session.execute(_for_object(media).values(**values, updated_at=datetime.now(UTC)))


def _set_failed_unless_uploaded(metadata: MetadataDB, media: MediaRecord, status: int, error: str) -> None:
    # A rejected attempt stored nothing, so an earlier good upload of the same object still stands.
    not_uploaded = sa.or_(Media.upload_http_status.is_(None), Media.upload_http_status.not_in(UPLOADED_STATUSES))
    statement = _for_object(media).where(not_uploaded)
    with metadata.session() as session:
        session.execute(
            statement.values(upload_http_status=status, upload_http_error=error, updated_at=datetime.now(UTC))
        )


def _for_object(media: MediaRecord) -> Any:
    """An UPDATE of this media row while it still names the same object (a later upload request for
    another content type moves it, and then this outcome is not its outcome)."""
    return sa.update(Media).where(
        Media.project_id == media.project_id, Media.id == media.id, Media.bucket_path == media.bucket_path
    )


def _record(row: Media) -> MediaRecord:
    return MediaRecord(
        project_id=row.project_id,
        id=row.id,
        sha256_hash=row.sha256_hash,
        bucket_name=row.bucket_name,
        bucket_path=row.bucket_path,
        content_type=row.content_type,
        content_length=row.content_length,
        uploaded_at=row.uploaded_at,
        upload_http_status=row.upload_http_status,
        upload_http_error=row.upload_http_error,
    )
