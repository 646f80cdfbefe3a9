"""The blob store an integration exports into, and its failures in fixed words."""

from __future__ import annotations

import re
from pathlib import Path

from obstore.exceptions import BaseError as ObstoreError

from tracehouse.blobs import BlobStore
from tracehouse.blobs.store import BlobStoreConfig
from tracehouse.errors import ConfigError, TracehouseError
from tracehouse.export.integrations import Integration
from tracehouse.settings import BlobBackend

_BACKENDS = {
    "S3": BlobBackend.S3,
    "S3_COMPATIBLE": BlobBackend.S3,
    "GOOGLE_CLOUD_STORAGE": BlobBackend.GCS,
    "AZURE_BLOB_STORAGE": BlobBackend.AZURE,
    "LOCAL": BlobBackend.LOCAL,
}


def local_root(integration: Integration, data_dir: Path) -> Path:
    """`<data dir>/exports/<project>/<bucketName>`: an API key can neither point exports at an
    arbitrary path on the server nor into another project's folder."""
    exports = (data_dir / "exports").resolve()
    root = (exports / integration.project_id / integration.bucket_name).resolve()
    if root.parent.parent != exports:
        raise ConfigError(f"export folder of project {integration.project_id} is outside {exports}")
    return root


def destination_config(integration: Integration, data_dir: Path, *, proxy_url: str | None = None) -> BlobStoreConfig:
    backend = _BACKENDS[integration.type]
    local = backend is BlobBackend.LOCAL
    return BlobStoreConfig(
        backend=backend,
        bucket=None if local else integration.bucket_name,
        root=local_root(integration, data_dir) if local else None,
        prefix=integration.prefix,
        region=None if integration.region == "auto" and integration.endpoint else integration.region,
        endpoint=integration.endpoint,
        access_key_id=integration.access_key_id,
        secret_access_key=None if backend is BlobBackend.GCS else integration.secret_access_key,
        force_path_style=integration.force_path_style,
        gcs_credentials=integration.secret_access_key if backend is BlobBackend.GCS else None,
        proxy_url=None if local else proxy_url,
    )


def destination_store(integration: Integration, data_dir: Path, *, proxy_url: str | None = None) -> BlobStore:
    """The integration's store; network destinations talk through `proxy_url` (the egress proxy)."""
    config = destination_config(integration, data_dir, proxy_url=proxy_url)
    if config.root is not None:
        config.root.mkdir(parents=True, exist_ok=True)
    return BlobStore(config)


# --- failures in fixed words ---------------------------------------------------------------------
# A destination is any server a project key named, so what it answers (an error body, a banner, the
# timing of a closed port) must never reach logs, the status API or the queue: export errors from
# the store are reported in this vocabulary only. The status code of an answer is kept; its body
# never is.
BLOCKED = (
    "destination blocked by the egress rule (it must resolve to public internet addresses only, "
    "or be listed in TRACEHOUSE_EXPORT_ALLOWED_DESTINATIONS)"
)
UNREACHABLE = "destination unreachable"
UPLOAD_FAILED = "upload failed"


def refused(status: int) -> str:
    return f"destination refused the request (HTTP {status})"


class DestinationError(TracehouseError):
    """An export's destination failed; the message is one of the fixed phrases above."""


# object_store's error texts (obstore re-raises them, the sync writer as a plain OSError).
_OBJECT_STORE_ERROR = re.compile(
    r"^(Generic \w+ error|Object at location|The operation lacked|Request precondition failure|"
    r"Encountered object with invalid path|Operation not supported|Operation not yet implemented|"
    r"Error joining spawned task|Configuration key)"
)
_STATUS = re.compile(r" - Server returned non-2xx status code: (\d{3})\b")
_UNREACHABLE = re.compile(r"error sending request|connect|timed out|dns error|Connection refused", re.IGNORECASE)


def destination_failure(exc: BaseException, *, blocked: bool = False, unreachable: bool = False) -> str | None:
    """The fixed phrase for a failure of the destination store, or None when `exc` did not come
    from it (a ClickHouse error, a bug, an injected test fault: those keep their own message).

    `blocked`/`unreachable`: the egress proxy refused, or could not reach, the destination during
    this attempt (its own answers would otherwise look like the destination's)."""
    if isinstance(exc, DestinationError):
        return str(exc)
    text = str(exc)
    if not isinstance(exc, ObstoreError) and not (isinstance(exc, OSError) and _OBJECT_STORE_ERROR.match(text)):
        return None
    if blocked:
        return BLOCKED
    if unreachable:
        return UNREACHABLE
    first = text.split("\n", 1)[0]
    status = _STATUS.search(first)
    if status:
        return refused(int(status.group(1)))
    if _UNREACHABLE.search(first.rsplit(" - ", 1)[-1]):
        return UNREACHABLE
    return UPLOAD_FAILED
