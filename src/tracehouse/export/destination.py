"""The blob store an integration exports into."""

from __future__ import annotations

from pathlib import Path

from tracehouse.blobs import BlobStore
from tracehouse.blobs.store import BlobStoreConfig
from tracehouse.export.integrations import Integration
from tracehouse.settings import BlobBackend

_BACKENDS = {
    "S3": BlobBackend.S3,
    "S3_COMPATIBLE": BlobBackend.S3,
    "GOOGLE_CLOUD_STORAGE": BlobBackend.GCS,
    "AZURE_BLOB_STORAGE": BlobBackend.AZURE,
    "LOCAL": BlobBackend.LOCAL,
}


def destination_config(integration: Integration, data_dir: Path) -> BlobStoreConfig:
    backend = _BACKENDS[integration.type]
    local = backend is BlobBackend.LOCAL
    return BlobStoreConfig(
        backend=backend,
        bucket=None if local else integration.bucket_name,
        # A local destination is a folder under <data dir>/exports: an API key cannot point exports
        # at an arbitrary path on the server.
        root=(data_dir / "exports" / integration.bucket_name).resolve() if local else None,
        prefix=integration.prefix,
        region=None if integration.region == "auto" and integration.endpoint else integration.region,
        endpoint=integration.endpoint,
        access_key_id=integration.access_key_id,
        secret_access_key=None if backend is BlobBackend.GCS else integration.secret_access_key,
        force_path_style=integration.force_path_style,
        gcs_credentials=integration.secret_access_key if backend is BlobBackend.GCS else None,
    )


def destination_store(integration: Integration, data_dir: Path) -> BlobStore:
    config = destination_config(integration, data_dir)
    if config.root is not None:
        config.root.mkdir(parents=True, exist_ok=True)
    return BlobStore(config)
