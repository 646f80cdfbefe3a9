"""Blob store against a local folder and against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ACCESS_KEY, REGION, SECRET_KEY
from tracehouse.blobs import BlobNotFound, BlobStore, BlobStoreConfig, SigningUnsupported
from tracehouse.errors import ConfigError, DependencyUnavailable
from tracehouse.settings import BlobBackend, Settings

MiB = 1024 * 1024


def s3_config(endpoint: str, bucket: str, **changes: Any) -> BlobStoreConfig:
    fields: dict[str, Any] = {
        "backend": BlobBackend.S3,
        "bucket": bucket,
        "prefix": "raw/",
        "region": REGION,
        "endpoint": endpoint,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "force_path_style": True,
    }
    fields.update(changes)
    return BlobStoreConfig(**fields)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return BlobStore(BlobStoreConfig(BlobBackend.LOCAL, root=tmp_path / "blobs", prefix="raw/"))
    endpoint = request.getfixturevalue("moto_endpoint")
    return BlobStore(s3_config(endpoint, request.getfixturevalue("bucket")))


def stored_keys(store: BlobStore, s3_client: Any) -> list[str]:
    """Object names as the backend itself sees them (prefix included), bypassing BlobStore."""
    if store.config.backend is BlobBackend.LOCAL:
        assert store.config.root is not None
        root = store.config.root
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    listed = s3_client.list_objects_v2(Bucket=store.config.bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def pending_uploads(store: BlobStore, s3_client: Any) -> list[Any]:
    if store.config.backend is not BlobBackend.S3:
        return []
    return list(s3_client.list_multipart_uploads(Bucket=store.config.bucket).get("Uploads", []))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def blocks(total: int, size: int = MiB) -> Iterator[bytes]:
    seed = os.urandom(size)
    sent = 0
    index = 0
    while sent < total:
        block = (index.to_bytes(8, "big") + seed)[: min(size, total - sent)]
        sent += len(block)
        index += 1
        yield block


# --- round trip ----------------------------------------------------------------------------------
async def test_put_get_head_list_delete(store: BlobStore, s3_client: Any) -> None:
    await store.put("events/a.json", b'{"a":1}', content_type="application/json")
    await store.put("events/b.json", b'{"b":2}')
    await store.put("other/c.bin", b"\x00\x01")

    assert await store.get("events/a.json") == b'{"a":1}'
    assert await store.exists("events/b.json")
    assert not await store.exists("events/zzz.json")

    info = await store.head("events/a.json")
    assert info.key == "events/a.json"
    assert info.size == 7
    assert info.last_modified.tzinfo is not None

    assert [i.key for i in await store.list()] == ["events/a.json", "events/b.json", "other/c.bin"]
    assert [i.key for i in await store.list("events/")] == ["events/a.json", "events/b.json"]
    assert [i.size for i in await store.list("other")] == [2]
    assert await store.list("nothing-here/") == []

    # The configured prefix is applied underneath and hidden from callers.
    assert stored_keys(store, s3_client) == ["raw/events/a.json", "raw/events/b.json", "raw/other/c.bin"]

    if store.config.backend is BlobBackend.S3:
        head = s3_client.head_object(Bucket=store.config.bucket, Key="raw/events/a.json")
        assert head["ContentType"] == "application/json"
        assert info.etag is not None and info.etag.strip('"') == head["ETag"].strip('"')

    await store.delete("events/a.json")
    assert not await store.exists("events/a.json")
    await store.delete("events/a.json")  # already gone: not an error
    assert [i.key for i in await store.list("events/")] == ["events/b.json"]


async def test_missing_key_raises_blob_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound) as caught:
        await store.get("no/such/key")
    assert caught.value.key == "no/such/key"
    assert isinstance(caught.value, LookupError)
    with pytest.raises(BlobNotFound):
        await store.head("no/such/key")


async def test_list_uses_plain_string_prefixes(store: BlobStore) -> None:
    await store.put("logs/2024-01/a", b"1")
    await store.put("logs/2024-02/b", b"2")
    await store.put("logs/2025-01/c", b"3")
    assert [i.key for i in await store.list("logs/2024")] == ["logs/2024-01/a", "logs/2024-02/b"]
    assert [i.key for i in await store.list("logs/2024-0")] == ["logs/2024-01/a", "logs/2024-02/b"]
    assert [i.key for i in await store.list("logs/2025-01/")] == ["logs/2025-01/c"]


async def test_keys_are_normalised(store: BlobStore, s3_client: Any) -> None:
    await store.put("/a//b/", b"x")
    assert await store.get("a/b") == b"x"
    assert stored_keys(store, s3_client) == ["raw/a/b"]
    with pytest.raises(ValueError):
        await store.put("//", b"x")


# --- streaming -----------------------------------------------------------------------------------
async def test_put_stream_from_generator_is_multipart(store: BlobStore, s3_client: Any) -> None:
    total = 20 * MiB + 123
    sent = bytearray()

    def source() -> Iterator[bytes]:
        for block in blocks(total):
            sent.extend(block)
            yield block

    written = await store.put_stream("big/stream.bin", source())
    assert written == total
    assert await store.get("big/stream.bin") == bytes(sent)
    assert (await store.head("big/stream.bin")).size == total

    if store.config.backend is BlobBackend.S3:
        etag = s3_client.head_object(Bucket=store.config.bucket, Key="raw/big/stream.bin")["ETag"]
        parts = int(etag.strip('"').rsplit("-", 1)[1])
        assert parts > 1


async def test_put_stream_from_async_iterable(store: BlobStore, s3_client: Any) -> None:
    sent = bytearray()

    async def source() -> AsyncIterator[bytes]:
        for block in blocks(17 * MiB):
            sent.extend(block)
            await asyncio.sleep(0)
            yield block

    written = await store.put_stream("big/async.bin", source())
    assert written == 17 * MiB
    assert await store.get("big/async.bin") == bytes(sent)
    if store.config.backend is BlobBackend.S3:
        etag = s3_client.head_object(Bucket=store.config.bucket, Key="raw/big/async.bin")["ETag"]
        assert etag.strip('"').endswith(("-2", "-3"))


def sample_table(rows: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array([f"trace-{i:08d}-{os.urandom(8).hex()}" for i in range(rows)]),
            "value": pa.array(range(rows), type=pa.int64()),
            "payload": pa.array([os.urandom(64).hex() for _ in range(rows)]),
        }
    )


async def test_parquet_streams_through_sync_writer(store: BlobStore) -> None:
    table = sample_table(60_000)  # ~12 MB of mostly incompressible text: several 5 MiB parts

    def write() -> int:
        with store.open_sync_writer("exports/table.parquet", part_size=5 * MiB) as sink:
            assert sink.tell() == 0
            with pq.ParquetWriter(sink, table.schema, compression="none") as writer:
                for start in range(0, table.num_rows, 10_000):
                    writer.write_table(table.slice(start, 10_000))
            return sink.tell()

    reported = await asyncio.to_thread(write)
    data = await store.get("exports/table.parquet")
    assert reported == len(data) > 10 * MiB
    back = pq.read_table(pa.BufferReader(data))
    assert back.num_rows == table.num_rows
    assert back.equals(table)
    assert pq.ParquetFile(pa.BufferReader(data)).metadata.num_row_groups == 6


async def test_error_inside_sync_writer_leaves_nothing(store: BlobStore, s3_client: Any) -> None:
    table = sample_table(60_000)

    def write_then_fail() -> None:
        # ParquetWriter still writes its footer as the error passes through; nothing may be committed.
        with (
            store.open_sync_writer("exports/failed.parquet", part_size=5 * MiB) as sink,
            pq.ParquetWriter(sink, table.schema, compression="none") as writer,
        ):
            writer.write_table(table)
            assert sink.tell() > 5 * MiB  # at least one part has gone out already
            raise RuntimeError("export query failed")

    with pytest.raises(RuntimeError, match="export query failed"):
        await asyncio.to_thread(write_then_fail)

    assert not await store.exists("exports/failed.parquet")
    assert stored_keys(store, s3_client) == []
    assert pending_uploads(store, s3_client) == []


async def test_sync_writer_close_does_not_commit_early(store: BlobStore) -> None:
    def write() -> None:
        with store.open_sync_writer("x.bin") as sink:
            assert sink.writable() and not sink.closed
            assert sink.write(b"abc") == 3
            sink.close()
            assert sink.closed
            with pytest.raises(ValueError, match="closed"):
                sink.write(b"more")

    await asyncio.to_thread(write)
    assert await store.get("x.bin") == b"abc"


# --- signing -------------------------------------------------------------------------------------
async def test_presigned_get_returns_the_bytes(moto_endpoint: str, bucket: str) -> None:
    store = BlobStore(s3_config(moto_endpoint, bucket))
    body = os.urandom(4096)
    await store.put("media/file.bin", body)

    url = await store.sign_get_url("media/file.bin", timedelta(minutes=5))
    assert url.startswith(f"{moto_endpoint}/{bucket}/raw/media/file.bin?")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    assert SECRET_KEY not in url
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == body


async def test_virtual_hosted_style_puts_bucket_in_host() -> None:
    # Signing needs no network, so these endpoints are never contacted.
    store = BlobStore(s3_config("http://localhost:9000", "my-bucket", force_path_style=False))
    url = await store.sign_get_url("k.json", timedelta(seconds=60))
    assert url.startswith("http://my-bucket.localhost:9000/raw/k.json?")

    # An IP address cannot carry the bucket as a subdomain, so path style is used regardless.
    store = BlobStore(s3_config("http://127.0.0.1:9000", "my-bucket", force_path_style=False))
    url = await store.sign_get_url("k.json", timedelta(seconds=60))
    assert url.startswith("http://127.0.0.1:9000/my-bucket/raw/k.json?")


async def test_local_store_cannot_sign(tmp_path: Path) -> None:
    store = BlobStore(BlobStoreConfig(BlobBackend.LOCAL, root=tmp_path))
    await store.put("a", b"1")
    with pytest.raises(SigningUnsupported, match="cannot create presigned URLs"):
        await store.sign_get_url("a", timedelta(minutes=1))


def sigv4_query_signature(url: str, method: str, headers: dict[str, str]) -> str:
    """AWS's SigV4 presigned-URL signature, computed here from the specification (moto does not check
    signatures), for the URL's own date, scope and signed headers and the given header values."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "X-Amz-Signature"]
    params = dict(query)
    signed = params["X-Amz-SignedHeaders"].split(";")
    values = {"host": parts.netloc, **{k.lower(): v for k, v in headers.items()}}
    canonical = "\n".join(
        [
            method,
            parts.path,
            "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query)),
            "".join(f"{name}:{values[name].strip()}\n" for name in signed),
            ";".join(signed),
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", params["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + SECRET_KEY).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


async def test_presigned_put_signs_type_length_and_checksum(moto_endpoint: str, bucket: str, s3_client: Any) -> None:
    store = BlobStore(s3_config(moto_endpoint, bucket))
    body = os.urandom(1000)
    checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
    url = await store.sign_put_url(
        "media/a b.png", timedelta(minutes=10), content_type="image/png", content_length=1000, sha256_base64=checksum
    )
    assert url.startswith(f"{moto_endpoint}/{bucket}/raw/media/a%20b.png?")
    params = dict(parse_qsl(urlsplit(url).query))
    assert params["X-Amz-SignedHeaders"] == "content-length;content-type;host;x-amz-checksum-sha256"
    assert params["X-Amz-Expires"] == "600" and SECRET_KEY not in url
    headers = {"Content-Type": "image/png", "Content-Length": "1000", "x-amz-checksum-sha256": checksum}
    assert params["X-Amz-Signature"] == sigv4_query_signature(url, "PUT", headers)
    # Any other type, length or digest is another signature, so S3 refuses it.
    for changed in ({"Content-Type": "text/html"}, {"Content-Length": "1001"}, {"x-amz-checksum-sha256": "x"}):
        assert params["X-Amz-Signature"] != sigv4_query_signature(url, "PUT", {**headers, **changed})

    async with httpx.AsyncClient() as client:
        response = await client.put(
            url, content=body, headers={k: v for k, v in headers.items() if k != "Content-Length"}
        )
    assert response.status_code == 200, response.text
    stored = s3_client.get_object(Bucket=bucket, Key="raw/media/a b.png")
    assert stored["Body"].read() == body and stored["ContentType"] == "image/png"


async def test_local_store_cannot_presign_uploads(tmp_path: Path) -> None:
    store = BlobStore(BlobStoreConfig(BlobBackend.LOCAL, root=tmp_path))
    with pytest.raises(SigningUnsupported, match="cannot create presigned uploads"):
        await store.sign_put_url("a", timedelta(minutes=1), content_type="a/b", content_length=1, sha256_base64="x")


async def test_open_stream_yields_the_bytes_in_chunks(store: BlobStore) -> None:
    body = os.urandom(3 * MiB + 17)
    await store.put("big.bin", body)
    chunks = [chunk async for chunk in await store.open_stream("big.bin", chunk_size=MiB)]
    assert b"".join(chunks) == body and len(chunks) > 1
    with pytest.raises(BlobNotFound):
        await store.open_stream("missing.bin")


# --- reachability --------------------------------------------------------------------------------
async def test_ping_succeeds_when_reachable(store: BlobStore) -> None:
    await store.ping()
    await store.put("k", b"v")
    await store.ping()
    assert await store.exists("k")


async def test_ping_unreachable_endpoint_fails_fast_with_one_line() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = BlobStore(s3_config(endpoint, "th-nowhere"))
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable) as caught:
        await store.ping()
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cannot reach blob store at s3://th-nowhere/raw/")
    assert endpoint in message
    assert caught.value.name == "blob store"


async def test_ping_missing_bucket_fails(moto_endpoint: str) -> None:
    store = BlobStore(s3_config(moto_endpoint, "th-missing-bucket"))
    with pytest.raises(DependencyUnavailable, match="blob store"):
        await store.ping()


# --- configuration -------------------------------------------------------------------------------
def test_from_settings_s3_and_describe_hides_secrets() -> None:
    settings = Settings(
        blob_bucket="langfuse",
        blob_prefix="events/",
        blob_region="eu-west-1",
        blob_endpoint="http://127.0.0.1:9000",
        blob_access_key_id="minio",
        blob_secret_access_key="super-secret",
        blob_force_path_style=True,
    )
    config = BlobStoreConfig.from_settings(settings)
    assert config.backend is BlobBackend.S3
    assert (config.bucket, config.prefix, config.region) == ("langfuse", "events/", "eu-west-1")
    assert config.force_path_style and config.root is None
    assert config.describe() == "s3://langfuse/events/ (endpoint http://127.0.0.1:9000)"
    assert "super-secret" not in config.describe()


def test_from_settings_local_uses_data_dir(tmp_path: Path) -> None:
    config = BlobStoreConfig.from_settings(Settings(data_dir=tmp_path))
    assert config.backend is BlobBackend.LOCAL
    assert config.root == (tmp_path / "blobs").resolve()
    assert config.describe() == (tmp_path / "blobs").resolve().as_uri()
    BlobStore(config)
    assert (tmp_path / "blobs").is_dir()  # created on construction


def test_object_store_backends_need_a_bucket() -> None:
    with pytest.raises(ConfigError, match="LANGFUSE_S3_EVENT_UPLOAD_BUCKET"):
        BlobStoreConfig(BlobBackend.GCS)
    with pytest.raises(ConfigError, match="account name"):
        BlobStoreConfig(BlobBackend.AZURE, bucket="container")


def test_describe_for_gcs_and_azure() -> None:
    gcs = BlobStoreConfig(BlobBackend.GCS, bucket="b", prefix="/p/q", gcs_credentials='{"private_key":"k"}')
    assert gcs.describe() == "gs://b/p/q/"
    azure = BlobStoreConfig(BlobBackend.AZURE, bucket="c", access_key_id="acct", secret_access_key="key==")
    assert azure.describe() == "azure://acct/c/"


def test_unusable_credentials_are_config_errors(tmp_path: Path) -> None:
    # Store construction is offline; bad credentials are reported before any request is made.
    with pytest.raises(ConfigError, match=r"gs://b/.*service account"):
        BlobStore(BlobStoreConfig(BlobBackend.GCS, bucket="b", gcs_credentials=str(tmp_path / "none.json")))

    def azure(secret: str) -> BlobStoreConfig:
        return BlobStoreConfig(BlobBackend.AZURE, bucket="c", access_key_id="acct", secret_access_key=secret)

    with pytest.raises(ConfigError, match=r"azure://acct/c/.*Access Key"):
        BlobStore(azure("no!"))  # not base64
    store = BlobStore(azure("a2V5"))
    assert store.config.describe() == "azure://acct/c/"
