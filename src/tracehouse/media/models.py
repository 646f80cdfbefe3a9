"""Media's typed boundaries: Langfuse's request and response bodies (the current SDK's field names,
`langfuse/api/media/types`), the content types it accepts, and the stored media row."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, field_validator

from tracehouse.timefmt import api_time


class MediaContentType(StrEnum):
    """The MIME types Langfuse accepts (the SDK's `MediaContentType`)."""

    IMAGE_PNG = "image/png"
    IMAGE_JPEG = "image/jpeg"
    IMAGE_JPG = "image/jpg"
    IMAGE_WEBP = "image/webp"
    IMAGE_GIF = "image/gif"
    IMAGE_SVG_XML = "image/svg+xml"
    IMAGE_TIFF = "image/tiff"
    IMAGE_BMP = "image/bmp"
    IMAGE_AVIF = "image/avif"
    IMAGE_HEIC = "image/heic"
    AUDIO_MPEG = "audio/mpeg"
    AUDIO_MP3 = "audio/mp3"
    AUDIO_WAV = "audio/wav"
    AUDIO_OGG = "audio/ogg"
    AUDIO_OGA = "audio/oga"
    AUDIO_AAC = "audio/aac"
    AUDIO_MP4 = "audio/mp4"
    AUDIO_FLAC = "audio/flac"
    AUDIO_OPUS = "audio/opus"
    AUDIO_WEBM = "audio/webm"
    VIDEO_MP4 = "video/mp4"
    VIDEO_WEBM = "video/webm"
    VIDEO_OGG = "video/ogg"
    VIDEO_MPEG = "video/mpeg"
    VIDEO_QUICKTIME = "video/quicktime"
    VIDEO_X_MSVIDEO = "video/x-msvideo"
    VIDEO_X_MATROSKA = "video/x-matroska"
    TEXT_PLAIN = "text/plain"
    TEXT_HTML = "text/html"
    TEXT_CSS = "text/css"
    TEXT_CSV = "text/csv"
    TEXT_MARKDOWN = "text/markdown"
    TEXT_X_PYTHON = "text/x-python"
    APPLICATION_JAVASCRIPT = "application/javascript"
    TEXT_X_TYPESCRIPT = "text/x-typescript"
    APPLICATION_X_YAML = "application/x-yaml"
    APPLICATION_PDF = "application/pdf"
    APPLICATION_MSWORD = "application/msword"
    APPLICATION_MS_EXCEL = "application/vnd.ms-excel"
    APPLICATION_OPENXML_SPREADSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    APPLICATION_ZIP = "application/zip"
    APPLICATION_JSON = "application/json"
    APPLICATION_XML = "application/xml"
    APPLICATION_OCTET_STREAM = "application/octet-stream"
    APPLICATION_OPENXML_WORD = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    APPLICATION_OPENXML_PRESENTATION = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    APPLICATION_RTF = "application/rtf"
    APPLICATION_X_NDJSON = "application/x-ndjson"
    APPLICATION_PARQUET = "application/vnd.apache.parquet"
    APPLICATION_GZIP = "application/gzip"
    APPLICATION_X_TAR = "application/x-tar"
    APPLICATION_X7Z_COMPRESSED = "application/x-7z-compressed"


# The extension Langfuse gives each type in the object name (`<prefix><project>/<mediaId>.<ext>`), so a
# bucket shared with Langfuse holds the same names.
FILE_EXTENSIONS: dict[MediaContentType, str] = {
    MediaContentType.IMAGE_PNG: "png",
    MediaContentType.IMAGE_JPEG: "jpeg",
    MediaContentType.IMAGE_JPG: "jpg",
    MediaContentType.IMAGE_WEBP: "webp",
    MediaContentType.IMAGE_GIF: "gif",
    MediaContentType.IMAGE_SVG_XML: "svg",
    MediaContentType.IMAGE_TIFF: "tiff",
    MediaContentType.IMAGE_BMP: "bmp",
    MediaContentType.IMAGE_AVIF: "avif",
    MediaContentType.IMAGE_HEIC: "heic",
    MediaContentType.AUDIO_MPEG: "mp3",
    MediaContentType.AUDIO_MP3: "mp3",
    MediaContentType.AUDIO_WAV: "wav",
    MediaContentType.AUDIO_OGG: "ogg",
    MediaContentType.AUDIO_OGA: "oga",
    MediaContentType.AUDIO_AAC: "aac",
    MediaContentType.AUDIO_MP4: "m4a",
    MediaContentType.AUDIO_FLAC: "flac",
    MediaContentType.AUDIO_OPUS: "opus",
    MediaContentType.AUDIO_WEBM: "weba",
    MediaContentType.VIDEO_MP4: "mp4",
    MediaContentType.VIDEO_WEBM: "webm",
    MediaContentType.VIDEO_OGG: "ogv",
    MediaContentType.VIDEO_MPEG: "mpeg",
    MediaContentType.VIDEO_QUICKTIME: "mov",
    MediaContentType.VIDEO_X_MSVIDEO: "avi",
    MediaContentType.VIDEO_X_MATROSKA: "mkv",
    MediaContentType.TEXT_PLAIN: "txt",
    MediaContentType.TEXT_HTML: "html",
    MediaContentType.TEXT_CSS: "css",
    MediaContentType.TEXT_CSV: "csv",
    MediaContentType.TEXT_MARKDOWN: "md",
    MediaContentType.TEXT_X_PYTHON: "py",
    MediaContentType.APPLICATION_JAVASCRIPT: "js",
    MediaContentType.TEXT_X_TYPESCRIPT: "ts",
    MediaContentType.APPLICATION_X_YAML: "yaml",
    MediaContentType.APPLICATION_PDF: "pdf",
    MediaContentType.APPLICATION_MSWORD: "doc",
    MediaContentType.APPLICATION_MS_EXCEL: "xls",
    MediaContentType.APPLICATION_OPENXML_SPREADSHEET: "xlsx",
    MediaContentType.APPLICATION_ZIP: "zip",
    MediaContentType.APPLICATION_JSON: "json",
    MediaContentType.APPLICATION_XML: "xml",
    MediaContentType.APPLICATION_OCTET_STREAM: "bin",
    MediaContentType.APPLICATION_OPENXML_WORD: "docx",
    MediaContentType.APPLICATION_OPENXML_PRESENTATION: "pptx",
    MediaContentType.APPLICATION_RTF: "rtf",
    MediaContentType.APPLICATION_X_NDJSON: "jsonl",
    MediaContentType.APPLICATION_PARQUET: "parquet",
    MediaContentType.APPLICATION_GZIP: "gz",
    MediaContentType.APPLICATION_X_TAR: "tar",
    MediaContentType.APPLICATION_X7Z_COMPRESSED: "7z",
}


class MediaField(StrEnum):
    """Where in a trace or observation the media sits."""

    INPUT = "input"
    OUTPUT = "output"
    METADATA = "metadata"


# Upload statuses that mean the bytes are in the store (Langfuse serves media with either).
UPLOADED_STATUSES = frozenset({200, 201})

_SHA256_BASE64 = re.compile(r"^[A-Za-z0-9+/]{43}=$")

# Langfuse's timestamp form, 2026-11-01T12:00:00.000Z (UTC, milliseconds).
ApiTime = Annotated[
    datetime, PlainSerializer(api_time, return_type=str), WithJsonSchema({"type": "string", "format": "date-time"})
]


class GetMediaUploadUrlRequest(BaseModel):
    """The body of POST /api/public/media. Unknown keys are ignored, as Langfuse does, so a newer SDK
    that sends more keeps uploading."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    trace_id: str | None = Field(None, alias="traceId", min_length=1, max_length=800)
    observation_id: str | None = Field(None, alias="observationId", min_length=1, max_length=800)
    # The dataset-item context of the API; tracehouse has no datasets, so a value here is refused.
    dataset_id: str | None = Field(None, alias="datasetId")
    dataset_item_id: str | None = Field(None, alias="datasetItemId")
    content_type: MediaContentType = Field(alias="contentType")
    content_length: int = Field(alias="contentLength", gt=0, strict=True)
    sha256_hash: str = Field(alias="sha256Hash", description="Base64 of the content's SHA-256 digest (44 chars)")
    field: MediaField

    @field_validator("sha256_hash")
    @classmethod
    def _sha256(cls, value: str) -> str:
        try:
            digest = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if not _SHA256_BASE64.match(value) or len(digest) != 32:
            raise ValueError("must be the 44-character base64 encoding of a SHA-256 digest")
        return value


class GetMediaUploadUrlResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    upload_url: str | None = Field(
        alias="uploadUrl", description="Where to PUT the bytes; null when this content is already uploaded"
    )
    media_id: str = Field(alias="mediaId")


class PatchMediaBody(BaseModel):
    """The body of PATCH /api/public/media/{mediaId}: how the client's upload went."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    uploaded_at: datetime = Field(alias="uploadedAt")
    upload_http_status: int = Field(alias="uploadHttpStatus", ge=100, le=599, strict=True)
    upload_http_error: str | None = Field(None, alias="uploadHttpError", max_length=100_000)
    upload_time_ms: float | None = Field(None, alias="uploadTimeMs", ge=0)


class GetMediaResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    media_id: str = Field(alias="mediaId")
    content_type: str = Field(alias="contentType")
    content_length: int = Field(alias="contentLength")
    uploaded_at: ApiTime = Field(alias="uploadedAt")
    url: str = Field(description="A presigned S3 URL, or tracehouse's signed download route for the local store")
    url_expiry: str = Field(alias="urlExpiry", description="When `url` stops working (ISO 8601, UTC)")


class MediaUploaded(BaseModel):
    """What the local upload route answers once the bytes are stored and verified."""

    model_config = ConfigDict(populate_by_name=True)

    media_id: str = Field(alias="mediaId")
    content_length: int = Field(alias="contentLength")
    uploaded_at: ApiTime = Field(alias="uploadedAt")


@dataclass(frozen=True)
class MediaRecord:
    """One stored media row."""

    project_id: str
    id: str
    sha256_hash: str
    bucket_name: str
    bucket_path: str
    content_type: str
    content_length: int
    uploaded_at: datetime | None
    upload_http_status: int | None
    upload_http_error: str | None

    @property
    def uploaded(self) -> bool:
        return self.upload_http_status in UPLOADED_STATUSES and self.uploaded_at is not None
