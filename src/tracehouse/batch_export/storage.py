"""Where export files live and the links that download them.

With `LANGFUSE_S3_BATCH_EXPORT_BUCKET` set: that bucket (the operator's own, so no egress rule
applies), multipart uploads in parts of `BATCH_EXPORT_S3_PART_SIZE_MIB`, and presigned GET links
valid `BATCH_EXPORT_DOWNLOAD_LINK_EXPIRATION_HOURS`, signed for
`LANGFUSE_S3_BATCH_EXPORT_EXTERNAL_ENDPOINT` when clients reach the bucket by another address (the
host is part of the signature, so the link is signed for that endpoint rather than rewritten).
Unset: the folder `<data dir>/batch-exports`, served by tracehouse's own download route with a
signed, expiring token (the media capability's signer, under its own purpose).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from tracehouse.batch_export.models import ExportRecord
from tracehouse.blobs import BlobStore, BlobStoreConfig
from tracehouse.blobs.store import MiB
from tracehouse.media.signing import MediaGrant, UrlSigner, url_signing_key
from tracehouse.settings import BlobBackend, Settings

LOCAL_FOLDER = "batch-exports"
DOWNLOAD_PURPOSE = "batch-export-download"


@dataclass(frozen=True)
class StoredFile:
    key: str
    size_bytes: int
    sha256: str
    content_type: str


class ExportStore:
    def __init__(
        self,
        blobs: BlobStore,
        *,
        signer: UrlSigner,
        base_url: str,
        link_ttl: timedelta,
        part_size: int,
        signing: BlobStore | None = None,
    ) -> None:
        """`signing`: the same bucket under the external endpoint, to sign links with (default `blobs`)."""
        self.blobs = blobs
        self.signer = signer
        self.base_url = base_url
        self.link_ttl = link_ttl
        self.part_size = part_size
        self._signing = signing or blobs

    @property
    def is_local(self) -> bool:
        return self.blobs.config.backend is BlobBackend.LOCAL

    @staticmethod
    def object_key(record: ExportRecord) -> str:
        """Langfuse's name, under the project: the same for every attempt of one export, so a retry
        overwrites rather than adds (the prefix is the store's)."""
        created_ms = int(record.created_at.timestamp() * 1000)
        extension = record.format.extension(record.gzipped)
        return f"{record.project_id}/{created_ms}-lf-{record.table}-export-{record.id}.{extension}"

    async def download_url(self, record: ExportRecord, stored: StoredFile, expires_at: datetime) -> str:
        if not self.is_local:
            return await self._signing.sign_get_url(stored.key, max(expires_at - datetime.now(UTC), timedelta(0)))
        grant = MediaGrant(
            project_id=record.project_id,
            media_id=record.id,
            bucket_path=stored.key,
            content_type=stored.content_type,
            content_length=stored.size_bytes,
            sha256_hash=stored.sha256,
            expires_at=expires_at.timestamp(),
        )
        token = self.signer.sign(DOWNLOAD_PURPOSE, grant)
        return f"{self.base_url}/api/public/batch-exports/{quote(record.id, safe='')}/download?token={token}"


def export_store_config(settings: Settings) -> BlobStoreConfig:
    if settings.batch_export_bucket:
        return BlobStoreConfig(
            backend=BlobBackend.S3,
            bucket=settings.batch_export_bucket,
            prefix=settings.batch_export_prefix,
            region=settings.batch_export_region,
            endpoint=settings.batch_export_endpoint,
            access_key_id=settings.batch_export_access_key_id,
            secret_access_key=settings.batch_export_secret_access_key,
            force_path_style=settings.batch_export_force_path_style,
        )
    return BlobStoreConfig(backend=BlobBackend.LOCAL, root=(settings.data_dir / LOCAL_FOLDER).resolve())


def build_export_store(settings: Settings) -> ExportStore:
    """Blocking: it may create the local folder and the signing key. Nothing in it needs closing."""
    config = export_store_config(settings)
    signing = None
    if config.backend is BlobBackend.S3 and settings.batch_export_external_endpoint:
        from dataclasses import replace

        signing = BlobStore(replace(config, endpoint=settings.batch_export_external_endpoint))
    return ExportStore(
        BlobStore(config),
        signer=UrlSigner(url_signing_key(settings)),
        base_url=settings.base_url,
        link_ttl=timedelta(hours=settings.batch_export_link_expiration_hours),
        part_size=settings.batch_export_part_size_mib * MiB,
        signing=signing,
    )
