"""Blob storage (local folder, S3, GCS, Azure) behind one small async API."""

from tracehouse.blobs.store import (
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobStoreConfig,
    SigningUnsupported,
    SyncBlobWriter,
)

__all__ = [
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreConfig",
    "SigningUnsupported",
    "SyncBlobWriter",
]
