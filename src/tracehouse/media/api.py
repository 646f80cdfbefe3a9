"""Langfuse's media API, plus the local store's signed upload and download routes.

The project routes take the project's key (HTTP Basic). The signed routes take no key: the token in
the URL is the authorization (one action on one object, expiring), as a presigned S3 URL is. They
have Langfuse's paths for its local media storage (`/api/public/media/{mediaId}/upload|download`).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from tracehouse.api_common import MAX_JSON_BODY_BYTES, Forbidden, NotFound, error_responses, get_services
from tracehouse.auth import ProjectAuth, require_project
from tracehouse.media.models import (
    GetMediaResponse,
    GetMediaUploadUrlRequest,
    GetMediaUploadUrlResponse,
    MediaUploaded,
    PatchMediaBody,
)
from tracehouse.media.service import (
    check_upload_request,
    create_upload_url,
    get_media,
    open_download,
    receive_upload,
    report_upload,
)
from tracehouse.media.signing import InvalidToken, MediaGrant
from tracehouse.media.storage import DOWNLOAD_PURPOSE, UPLOAD_PURPOSE, MediaStore, build_media_store
from tracehouse.runtime import Services

router = APIRouter(tags=["media"])

_TOKEN = Query(description="The signed token from the upload or download URL", max_length=8192)


async def media_store(request: Request) -> MediaStore:
    """The media store the composition root opened (built here only for Services made by hand)."""
    services: Services = request.app.state.services
    if services.media is not None:
        return services.media
    store: MediaStore | None = getattr(request.app.state, "media_store", None)
    if store is None:
        store = await asyncio.to_thread(build_media_store, services.settings)
        request.app.state.media_store = store
    return store


@router.post(
    "/api/public/media",
    status_code=201,
    response_model=GetMediaUploadUrlResponse,
    responses=error_responses(400, 401, 413),
    max_body_size=MAX_JSON_BODY_BYTES,
)
async def post_media(
    body: GetMediaUploadUrlRequest,
    auth: ProjectAuth = Depends(require_project),
    services: Services = Depends(get_services),
    store: MediaStore = Depends(media_store),
) -> GetMediaUploadUrlResponse:
    """An upload URL for this content, or `uploadUrl: null` when the project already has it."""
    check_upload_request(body, services.settings.media_max_content_length)
    return await create_upload_url(services.metadata, store, auth.project_id, body)


@router.get("/api/public/media/{media_id}", response_model=GetMediaResponse, responses=error_responses(400, 401, 404))
async def get_media_record(
    media_id: str,
    auth: ProjectAuth = Depends(require_project),
    services: Services = Depends(get_services),
    store: MediaStore = Depends(media_store),
) -> GetMediaResponse:
    """The media's type, size and a download URL that expires at `urlExpiry`."""
    return await get_media(services.metadata, store, auth.project_id, media_id)


@router.patch(
    "/api/public/media/{media_id}",
    status_code=204,
    response_class=Response,
    response_model=None,
    responses=error_responses(400, 401, 404, 413),
    max_body_size=MAX_JSON_BODY_BYTES,
)
async def patch_media(
    media_id: str,
    body: PatchMediaBody,
    auth: ProjectAuth = Depends(require_project),
    services: Services = Depends(get_services),
    store: MediaStore = Depends(media_store),
) -> Response:
    """Record how the client's upload went."""
    await report_upload(services.metadata, store, auth.project_id, media_id, body)
    return Response(status_code=204)


@router.put(
    "/api/public/media/{media_id}/upload",
    response_model=MediaUploaded,
    responses=error_responses(400, 403, 404),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The bytes, with the signed Content-Type and Content-Length",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_media(
    media_id: str,
    request: Request,
    token: str = _TOKEN,
    services: Services = Depends(get_services),
    store: MediaStore = Depends(media_store),
) -> MediaUploaded:
    """The local store's upload: the body must be exactly the signed content, or nothing is stored."""
    grant = _granted(store, UPLOAD_PURPOSE, token, media_id)
    return await receive_upload(services.metadata, store, grant, dict(request.headers), request.stream())


@router.get(
    "/api/public/media/{media_id}/download",
    response_class=StreamingResponse,
    response_model=None,
    responses={
        200: {"description": "The media's bytes", "content": {"application/octet-stream": {}}},
        **error_responses(400, 403, 404),
    },
)
async def download_media(
    media_id: str,
    token: str = _TOKEN,
    services: Services = Depends(get_services),
    store: MediaStore = Depends(media_store),
) -> StreamingResponse:
    """The local store's download link, as GET /api/public/media/{mediaId} hands it out."""
    grant = _granted(store, DOWNLOAD_PURPOSE, token, media_id)
    media, chunks = await open_download(services.metadata, store, grant)
    headers = {
        "Content-Length": str(media.content_length),
        # Uploaded content is served as its own type, never run as a page of this origin.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "private, no-store",
    }
    return StreamingResponse(chunks, media_type=media.content_type, headers=headers)


def _granted(store: MediaStore, purpose: str, token: str, media_id: str) -> MediaGrant:
    if not store.is_local:
        raise NotFound("media are stored in the S3 bucket: upload and download through its presigned URLs")
    try:
        grant = store.signer.verify(purpose, token)
    except InvalidToken as exc:
        raise Forbidden(f"this media link is not valid: {exc}") from None
    if grant.media_id != media_id:
        raise Forbidden("this media link is for another media id")
    return grant
