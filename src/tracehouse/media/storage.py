"""Where media bytes live, and the links clients use to put and get them.

With `LANGFUSE_S3_MEDIA_UPLOAD_BUCKET` set, the bucket: clients PUT to a presigned URL that signs the
content type, length and SHA-256, and GET from a presigned URL. Unset, the folder `<data dir>/media`:
clients PUT to and GET from tracehouse's own routes, authorized by a signed, expiring token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from tracehouse.blobs import BlobStore, BlobStoreConfig
from tracehouse.media.models import FILE_EXTENSIONS, MediaContentType, MediaRecord
from tracehouse.media.signing import MediaGrant, UrlSigner, url_signing_key
from tracehouse.settings import BlobBackend, Settings

LOCAL_BUCKET = "local"  # the bucket name media rows record for the local folder (as Langfuse does)
UPLOAD_URL_TTL = timedelta(hours=1)  # Langfuse's presigned upload lifetime
UPLOAD_PURPOSE = "media-upload"
DOWNLOAD_PURPOSE = "media-download"


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: datetime


class MediaStore:
    def __init__(
        self,
        blobs: BlobStore,
        *,
        bucket_name: str,
        prefix: str,
        signer: UrlSigner,
        base_url: str,
        download_ttl: timedelta,
    ) -> None:
        self.blobs = blobs
        self.bucket_name = bucket_name
        self.prefix = prefix
        self.signer = signer
        self.base_url = base_url
        self.download_ttl = download_ttl

    @property
    def is_local(self) -> bool:
        return self.blobs.config.backend is BlobBackend.LOCAL

    def bucket_path(self, project_id: str, media_id: str, content_type: MediaContentType) -> str:
        # Langfuse's object name, prefix included as configured.
        return f"{self.prefix}{project_id}/{media_id}.{FILE_EXTENSIONS[content_type]}"

    async def upload_url(self, grant: MediaGrant) -> str:
        if self.is_local:
            return self._route_url(grant.media_id, "upload", self.signer.sign(UPLOAD_PURPOSE, grant))
        return await self.blobs.sign_put_url(
            grant.bucket_path,
            UPLOAD_URL_TTL,
            content_type=grant.content_type,
            content_length=grant.content_length,
            sha256_base64=grant.sha256_hash,
        )

    async def download_url(self, media: MediaRecord) -> SignedUrl:
        expires_at = datetime.now(UTC) + self.download_ttl
        if not self.is_local:
            return SignedUrl(await self.blobs.sign_get_url(media.bucket_path, self.download_ttl), expires_at)
        grant = MediaGrant(
            project_id=media.project_id,
            media_id=media.id,
            bucket_path=media.bucket_path,
            content_type=media.content_type,
            content_length=media.content_length,
            sha256_hash=media.sha256_hash,
            expires_at=expires_at.timestamp(),
        )
        return SignedUrl(self._route_url(media.id, "download", self.signer.sign(DOWNLOAD_PURPOSE, grant)), expires_at)

    def upload_grant(
        self, project_id: str, media_id: str, content_type: MediaContentType, content_length: int, sha256_hash: str
    ) -> MediaGrant:
        return MediaGrant(
            project_id=project_id,
            media_id=media_id,
            bucket_path=self.bucket_path(project_id, media_id, content_type),
            content_type=str(content_type),
            content_length=content_length,
            sha256_hash=sha256_hash,
            expires_at=time.time() + UPLOAD_URL_TTL.total_seconds(),
        )

    def _route_url(self, media_id: str, action: str, token: str) -> str:
        return f"{self.base_url}/api/public/media/{quote(media_id, safe='')}/{action}?token={token}"


def media_store_config(settings: Settings) -> BlobStoreConfig:
    if settings.media_bucket:
        return BlobStoreConfig(
            backend=BlobBackend.S3,
            bucket=settings.media_bucket,
            region=settings.media_region,
            endpoint=settings.media_endpoint,
            access_key_id=settings.media_access_key_id,
            secret_access_key=settings.media_secret_access_key,
            force_path_style=settings.media_force_path_style,
        )
    return BlobStoreConfig(backend=BlobBackend.LOCAL, root=(settings.data_dir / "media").resolve())


def build_media_store(settings: Settings) -> MediaStore:
    """The media store from settings (blocking: it may create the local folder and the signing key).
    Nothing in it needs closing."""
    return MediaStore(
        BlobStore(media_store_config(settings)),
        bucket_name=settings.media_bucket or LOCAL_BUCKET,
        prefix=settings.media_prefix,
        signer=UrlSigner(url_signing_key(settings)),
        base_url=settings.base_url,
        download_ttl=timedelta(seconds=settings.media_download_url_expiry_seconds),
    )
