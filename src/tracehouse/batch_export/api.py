"""The batch export API (project key), plus the local store's signed download route.

`POST /api/public/batch-exports` validates the request as the read API validates its list
parameters (a bad filter is a 400 naming `filter.<parameter>`), stores the record and enqueues its
one job, answering 202 with the id. The download route takes no key: the signed token in the link
is the authorization (one file, expiring), as a presigned S3 URL is.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from tracehouse.api_common import MAX_JSON_BODY_BYTES, Forbidden, NotFound, error_responses, get_services
from tracehouse.auth import ProjectAuth, require_project
from tracehouse.batch_export.models import (
    BatchExports,
    BatchExportView,
    CreateBatchExportRequest,
    CreatedBatchExport,
    Status,
)
from tracehouse.batch_export.service import create_export, get_record, list_exports, request_cancel
from tracehouse.batch_export.storage import DOWNLOAD_PURPOSE, ExportStore, build_export_store
from tracehouse.blobs import BlobNotFound
from tracehouse.media.signing import InvalidToken
from tracehouse.queries.api import _page, known_parameters
from tracehouse.runtime import Services

router = APIRouter(tags=["batch exports"])


async def export_store(request: Request) -> ExportStore:
    """The export store, built once per app (blocking: it may create the folder and signing key)."""
    store: ExportStore | None = getattr(request.app.state, "batch_export_store", None)
    if store is None:
        services: Services = request.app.state.services
        store = await asyncio.to_thread(build_export_store, services.settings)
        request.app.state.batch_export_store = store
    return store


@router.post(
    "/api/public/batch-exports",
    status_code=202,
    response_model=CreatedBatchExport,
    responses=error_responses(400, 401, 403, 413, 503),
    max_body_size=MAX_JSON_BODY_BYTES,
)
async def create(
    body: CreateBatchExportRequest,
    auth: ProjectAuth = Depends(require_project),
    services: Services = Depends(get_services),
) -> CreatedBatchExport:
    """Queue an export of the rows the table's list route returns for `filter`, as of now."""
    return await create_export(
        metadata=services.metadata,
        producer=services.producer,
        settings=services.settings,
        project_id=auth.project_id,
        body=body,
    )


@router.get(
    "/api/public/batch-exports",
    response_model=BatchExports,
    responses=error_responses(400, 401),
    dependencies=[Depends(known_parameters)],
)
async def list_all(
    auth: ProjectAuth = Depends(require_project),
    services: Services = Depends(get_services),
    page: int = 1,
    limit: int = 50,
) -> BatchExports:
    """The project's exports, newest first."""
    return await list_exports(services.metadata, auth.project_id, _page(page, limit))


@router.get(
    "/api/public/batch-exports/{export_id}", response_model=BatchExportView, responses=error_responses(401, 404)
)
async def show(
    export_id: str, auth: ProjectAuth = Depends(require_project), services: Services = Depends(get_services)
) -> BatchExportView:
    """Status, rows written so far and the total once counted, the link and its expiry, or the error."""
    record = await asyncio.to_thread(get_record, services.metadata, export_id, auth.project_id)
    if record is None:
        raise NotFound(f"Batch export {export_id} not found")
    return record.view()


@router.post(
    "/api/public/batch-exports/{export_id}/cancel",
    response_model=BatchExportView,
    responses=error_responses(400, 401, 404),
)
async def cancel(
    export_id: str, auth: ProjectAuth = Depends(require_project), services: Services = Depends(get_services)
) -> BatchExportView:
    """Stop a queued or running export: a running one aborts its upload and leaves no file."""
    ttl = timedelta(hours=services.settings.batch_export_link_expiration_hours)
    record = await asyncio.to_thread(
        request_cancel, services.metadata, auth.project_id, export_id, datetime.now(UTC), ttl
    )
    return record.view()


@router.get(
    "/api/public/batch-exports/{export_id}/download",
    response_class=StreamingResponse,
    response_model=None,
    responses={200: {"description": "The export file"}, **error_responses(400, 403, 404)},
)
async def download(
    export_id: str,
    token: str = Query(description="The signed token from the download link", max_length=8192),
    services: Services = Depends(get_services),
    store: ExportStore = Depends(export_store),
) -> StreamingResponse:
    """The local store's download link, as the export's `url` hands it out."""
    if not store.is_local:
        raise NotFound("exports are stored in the S3 bucket: download them through their presigned URL")
    try:
        grant = store.signer.verify(DOWNLOAD_PURPOSE, token)
    except InvalidToken as exc:
        raise Forbidden(f"this download link is not valid: {exc}") from None
    if grant.media_id != export_id:
        raise Forbidden("this download link is for another export")
    record = await asyncio.to_thread(get_record, services.metadata, export_id, grant.project_id)
    if record is None or record.status is not Status.COMPLETED or record.object_key != grant.bucket_path:
        raise NotFound(f"Batch export {export_id} has no file (expired, or exported again)")
    try:
        chunks = await store.blobs.open_stream(grant.bucket_path)
    except BlobNotFound:
        raise NotFound(f"the file of batch export {export_id} is missing from the export store") from None
    filename = grant.bucket_path.rsplit("/", 1)[-1]
    headers = {
        "Content-Length": str(grant.content_length),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }
    return StreamingResponse(chunks, media_type=grant.content_type, headers=headers)
