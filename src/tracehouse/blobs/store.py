"""One small wrapper over obstore for the blob stores we support: a local folder, S3 (and S3-compatible
servers such as MinIO), Google Cloud Storage and Azure Blob Storage.

Keys given to `BlobStore` never include the configured prefix; the store adds it on the way in and
strips it on the way out. Async methods use obstore's native async calls; the only synchronous entry
point is `open_sync_writer`, meant for code (pyarrow) that already runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import AzureStore, GCSStore, LocalStore, S3Store

from tracehouse.errors import ConfigError, DependencyUnavailable, TracehouseError
from tracehouse.settings import BlobBackend, Settings

if TYPE_CHECKING:
    from obstore import WritableFile
    from obstore.store import AzureConfig, ClientConfig, GCSConfig, RetryConfig, S3Config

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MiB

# ping() talks to the store through a second client that gives up quickly, so that a health check
# against a dead endpoint reports within seconds instead of riding obstore's default retry budget.
_PING_CLIENT: ClientConfig = {"connect_timeout": timedelta(seconds=2), "timeout": timedelta(seconds=5)}
_PING_RETRY: RetryConfig = {"max_retries": 1, "retry_timeout": timedelta(seconds=5)}


class BlobNotFound(LookupError):
    """No object exists under the key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"blob not found: {key}")


class SigningUnsupported(TracehouseError):
    """The configured backend cannot produce presigned URLs."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    last_modified: datetime
    etag: str | None


@dataclass(frozen=True)
class BlobStoreConfig:
    backend: BlobBackend
    bucket: str | None = None  # bucket, or container for Azure
    root: Path | None = None  # folder for LOCAL
    prefix: str = ""
    region: str | None = None
    endpoint: str | None = None
    access_key_id: str | None = None  # Azure: storage account name
    secret_access_key: str | None = None  # Azure: account key
    force_path_style: bool = False
    gcs_credentials: str | None = None  # service account JSON text, or a path to it
    proxy_url: str | None = None  # every request goes through this HTTP proxy (exports: the egress proxy)

    def __post_init__(self) -> None:
        if self.backend is BlobBackend.LOCAL:
            if self.root is None:
                raise ConfigError("the local blob store needs a root folder")
        elif not self.bucket:
            raise ConfigError(f"LANGFUSE_S3_EVENT_UPLOAD_BUCKET is required for the {self.backend} blob store")
        if self.backend is BlobBackend.AZURE and not self.access_key_id:
            raise ConfigError("LANGFUSE_S3_EVENT_UPLOAD_ACCESS_KEY_ID (the storage account name) is required for Azure")

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobStoreConfig:
        backend = settings.blob_backend
        local = backend is BlobBackend.LOCAL
        return cls(
            backend=backend,
            bucket=None if local else settings.blob_bucket,
            root=settings.blob_root if local else None,
            prefix=settings.blob_prefix,
            region=settings.blob_region,
            endpoint=settings.blob_endpoint,
            access_key_id=settings.blob_access_key_id,
            secret_access_key=settings.blob_secret_access_key,
            force_path_style=settings.blob_force_path_style,
            gcs_credentials=settings.google_cloud_storage_credentials,
        )

    @property
    def key_prefix(self) -> str:
        """The prefix in normal form: no leading slash, one trailing slash unless empty."""
        parts = [p for p in self.prefix.split("/") if p]
        return "/".join(parts) + "/" if parts else ""

    def describe(self) -> str:
        """Where the blobs live, for logs and error messages. Never includes secrets."""
        prefix = self.key_prefix
        if self.backend is BlobBackend.LOCAL:
            assert self.root is not None
            return Path(self.root).resolve().as_uri() + ("/" + prefix if prefix else "")
        if self.backend is BlobBackend.S3:
            text = f"s3://{self.bucket}/{prefix}"
        elif self.backend is BlobBackend.GCS:
            text = f"gs://{self.bucket}/{prefix}"
        else:
            text = f"azure://{self.access_key_id}/{self.bucket}/{prefix}"
        return f"{text} (endpoint {self.endpoint})" if self.endpoint else text


class BlobStore:
    def __init__(self, config: BlobStoreConfig) -> None:
        self.config = config
        self._prefix = config.key_prefix
        self._store = _build_store(config, None, None)
        self._ping_store: Any = None

    # --- keys ------------------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if not parts:
            raise ValueError(f"invalid blob key {key!r}")
        return self._prefix + "/".join(parts)

    def _info(self, meta: Any) -> BlobInfo:
        path: str = meta["path"]
        return BlobInfo(
            key=path[len(self._prefix) :] if path.startswith(self._prefix) else path,
            size=int(meta["size"]),
            last_modified=meta["last_modified"],
            etag=meta.get("e_tag"),
        )

    # --- async API -------------------------------------------------------------------------------
    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        path = self._path(key)
        # LocalStore refuses attributes outright, so the content type only goes to object stores.
        if content_type and self.config.backend is not BlobBackend.LOCAL:
            await obstore.put_async(self._store, path, data, attributes={"Content-Type": content_type})
        else:
            await obstore.put_async(self._store, path, data)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes] | Iterable[bytes]) -> int:
        """Upload chunks as a multipart upload (parts of DEFAULT_PART_SIZE); return bytes written."""
        path = self._path(key)
        written = 0

        if isinstance(chunks, AsyncIterable):
            source = chunks

            async def counted_async() -> AsyncIterator[bytes]:
                nonlocal written
                async for chunk in source:
                    written += len(chunk)
                    yield chunk

            await obstore.put_async(
                self._store, path, counted_async(), use_multipart=True, chunk_size=DEFAULT_PART_SIZE
            )
            return written

        def counted_sync() -> Iterator[bytes]:
            nonlocal written
            for chunk in chunks:
                written += len(chunk)
                yield chunk

        # A plain iterable may block (file reads, CPU work), so it is drained in a worker thread.
        await asyncio.to_thread(
            obstore.put, self._store, path, counted_sync(), use_multipart=True, chunk_size=DEFAULT_PART_SIZE
        )
        return written

    async def get(self, key: str) -> bytes:
        try:
            result = await obstore.get_async(self._store, self._path(key))
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def head(self, key: str) -> BlobInfo:
        try:
            meta = await obstore.head_async(self._store, self._path(key))
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return self._info(meta)

    async def exists(self, key: str) -> bool:
        try:
            await obstore.head_async(self._store, self._path(key))
        except FileNotFoundError:
            return False
        return True

    async def delete(self, key: str) -> None:
        # The local store, GCS and Azure report a missing key; S3 does not.
        with suppress(FileNotFoundError):
            await obstore.delete_async(self._store, self._path(key))

    async def list(self, prefix: str = "") -> list[BlobInfo]:
        """Every blob whose key starts with `prefix` (a plain string prefix), sorted by key."""
        wanted = self._prefix + prefix.lstrip("/")
        # obstore matches prefixes by whole path segment, so list the enclosing folder and filter.
        folder = wanted[: wanted.rfind("/")] if "/" in wanted else ""
        found: list[BlobInfo] = []
        async for batch in obstore.list(self._store, folder or None, chunk_size=1000):
            found.extend(self._info(meta) for meta in batch if meta["path"].startswith(wanted))
        found.sort(key=lambda info: info.key)
        return found

    async def sign_get_url(self, key: str, expires_in: timedelta) -> str:
        store = self._store
        if not isinstance(store, S3Store | GCSStore | AzureStore):
            raise SigningUnsupported(
                f"the {self.config.backend} blob store ({self.config.describe()}) cannot create presigned "
                "URLs; configure S3, GCS or Azure to hand out download links"
            )
        return await obstore.sign_async(store, "GET", self._path(key), expires_in)

    async def sign_put_url(
        self, key: str, expires_in: timedelta, *, content_type: str, content_length: int, sha256_base64: str
    ) -> str:
        """A presigned S3 PUT that only accepts this content: Content-Type, Content-Length and
        x-amz-checksum-sha256 are signed headers (S3 rejects a body whose digest differs)."""
        store = self._store
        if not isinstance(store, S3Store):
            raise SigningUnsupported(
                f"the {self.config.backend} blob store ({self.config.describe()}) cannot create presigned uploads; "
                "configure S3 for them"
            )
        # obstore signs the host only; the URL it builds (endpoint, addressing style, key encoding) is
        # reused and signed again with the headers, by botocore's SigV4 query signer.
        unsigned = (await obstore.sign_async(store, "PUT", self._path(key), expires_in)).partition("?")[0]
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(content_length),
            "x-amz-checksum-sha256": sha256_base64,
        }
        return await asyncio.to_thread(self._sigv4_query_sign, "PUT", unsigned, headers, expires_in)

    def _sigv4_query_sign(self, method: str, url: str, headers: dict[str, str], expires_in: timedelta) -> str:
        from botocore.auth import S3SigV4QueryAuth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        from botocore.session import get_session

        if self.config.access_key_id and self.config.secret_access_key:
            credentials = Credentials(self.config.access_key_id, self.config.secret_access_key)
        else:  # the environment's chain (variables, profile, instance role), as obstore uses it
            resolved = get_session().get_credentials()
            if resolved is None:
                raise ConfigError(f"no S3 credentials to sign uploads for {self.config.describe()}")
            credentials = resolved.get_frozen_credentials()
        request = AWSRequest(method=method, url=url, headers=headers)
        signer = S3SigV4QueryAuth(
            credentials, "s3", self.config.region or "us-east-1", expires=int(expires_in.total_seconds())
        )
        signer.add_auth(request)
        return str(request.url)

    async def open_stream(self, key: str, *, chunk_size: int = DEFAULT_PART_SIZE) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks, without holding the whole object in memory. The object is
        opened here (a missing key raises BlobNotFound now, not at the first chunk)."""
        try:
            result = await obstore.get_async(self._store, self._path(key))
        except FileNotFoundError:
            raise BlobNotFound(key) from None

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in result.stream(min_chunk_size=chunk_size):
                yield bytes(chunk)

        return chunks()

    async def ping(self) -> None:
        """Check that the store answers (lists at most one object); raise DependencyUnavailable if not."""
        try:
            if self._ping_store is None:
                self._ping_store = _build_store(self.config, _PING_CLIENT, _PING_RETRY)
            stream = obstore.list(self._ping_store, self._prefix.rstrip("/") or None, chunk_size=1)
            async for _ in stream:
                break
        except Exception as exc:
            raise DependencyUnavailable("blob store", self.config.describe(), _reason(exc)) from exc

    # --- sync writer -----------------------------------------------------------------------------
    @contextmanager
    def open_sync_writer(self, key: str, *, part_size: int = DEFAULT_PART_SIZE) -> Iterator[SyncBlobWriter]:
        """A blocking file-like writer that streams into a multipart upload.

        The object appears only when the `with` block ends normally; an exception inside the block
        aborts the upload and leaves nothing behind. Calling `close()` on the writer (as pyarrow may)
        only stops further writes; it does not commit.
        """
        raw = obstore.open_writer(self._store, self._path(key), buffer_size=part_size)
        with raw:
            writer = SyncBlobWriter(raw)
            try:
                yield writer
            finally:
                writer.close()


class SyncBlobWriter:
    """The file-object surface pyarrow needs, over obstore's WritableFile (whose `closed` is a method)."""

    def __init__(self, raw: WritableFile) -> None:
        self._raw = raw
        self._written = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("I/O operation on closed file")
        size = memoryview(data).nbytes
        # Copy: obstore may keep the buffer after write() returns, and pyarrow's writers reuse theirs
        # at once; a view would upload bytes that were overwritten in the meantime.
        self._raw.write(bytes(data))
        self._written += size
        return size

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        # Buffered data is uploaded in full parts and committed when the context exits; an early
        # flush would gain nothing.
        if self._closed:
            raise ValueError("I/O operation on closed file")

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> SyncBlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- helpers -------------------------------------------------------------------------------------
def _build_store(
    config: BlobStoreConfig, client: ClientConfig | None, retry: RetryConfig | None
) -> LocalStore | S3Store | GCSStore | AzureStore:
    options: ClientConfig = client.copy() if client else {}
    if config.endpoint and config.endpoint.startswith("http://"):
        options["allow_http"] = True
    if config.proxy_url:
        options["proxy_url"] = config.proxy_url
    try:
        if config.backend is BlobBackend.LOCAL:
            assert config.root is not None
            return LocalStore(Path(config.root).resolve(), mkdir=True)
        if config.backend is BlobBackend.S3:
            return _s3_store(config, options, retry)
        if config.backend is BlobBackend.GCS:
            gcs: GCSConfig = {}
            if config.endpoint:
                gcs["base_url"] = config.endpoint
            creds = (config.gcs_credentials or "").strip()
            if creds.startswith("{"):
                gcs["service_account_key"] = creds
            elif creds:
                gcs["service_account"] = creds
            return GCSStore(config.bucket, config=gcs, client_options=options, retry_config=retry)
        azure: AzureConfig = {"account_name": config.access_key_id or ""}
        if config.secret_access_key:
            azure["account_key"] = config.secret_access_key
        if config.endpoint:
            azure["endpoint"] = config.endpoint
        return AzureStore(config.bucket, config=azure, client_options=options, retry_config=retry)
    except (ValueError, ObstoreError) as exc:
        raise ConfigError(f"blob store {config.describe()}: {_reason(exc)}") from None


def _s3_store(config: BlobStoreConfig, options: ClientConfig, retry: RetryConfig | None) -> S3Store:
    endpoint = config.endpoint.rstrip("/") if config.endpoint else None
    path_style = config.force_path_style
    if endpoint and not path_style and _is_ip_address(urlsplit(endpoint).hostname or ""):
        path_style = True  # a bucket cannot be a subdomain of an IP address (the AWS SDKs agree)
    s3: S3Config = {"virtual_hosted_style_request": not path_style}
    if config.region:
        s3["region"] = config.region
    if config.access_key_id:
        s3["access_key_id"] = config.access_key_id
    if config.secret_access_key:
        s3["secret_access_key"] = config.secret_access_key
    if endpoint:
        if not path_style:
            # obstore expects a virtual-hosted endpoint to name the bucket already (the AWS SDKs add it).
            parts = urlsplit(endpoint)
            endpoint = urlunsplit(parts._replace(netloc=f"{config.bucket}.{parts.netloc}"))
        s3["endpoint"] = endpoint
    return S3Store(config.bucket, config=s3, client_options=options, retry_config=retry)


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_DEBUG_MESSAGE = re.compile(r'message: "([^"]+)"')


def _reason(exc: BaseException) -> str:
    """One line from an obstore error (their text continues with a multi-line Rust debug dump)."""
    text = str(exc)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    detail = _DEBUG_MESSAGE.search(text)
    if detail and detail.group(1) not in first:
        first = f"{first} ({detail.group(1)})"
    return first
