"""The composition root: build every service from settings, in one place, and close them again.

Modules take their dependencies as arguments; only this file decides which concrete service
(embedded or server) each one gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from tracehouse.blobs import BlobStore, BlobStoreConfig
from tracehouse.clickhouse import ClickHouse, migrate_clickhouse
from tracehouse.errors import DependencyUnavailable, one_line_reason
from tracehouse.logging import get_logger
from tracehouse.media.storage import MediaStore, build_media_store
from tracehouse.metadata import MetadataDB
from tracehouse.metrics import Metrics
from tracehouse.queues import QueueProducer, bullmq_connection, ping_redis, redis_client
from tracehouse.queues.connection import describe as describe_redis
from tracehouse.redis_embedded import EmbeddedRedis
from tracehouse.settings import Settings


@dataclass
class Services:
    settings: Settings
    clickhouse: ClickHouse
    metadata: MetadataDB
    blobs: BlobStore
    redis_url: str
    redis: aioredis.Redis  # plain commands: locks, activity stamps, queue health
    producer: QueueProducer  # adds jobs to any registered queue
    metrics: Metrics
    embedded_redis: EmbeddedRedis | None = None
    media: MediaStore | None = None  # None only where a test builds Services by hand

    @property
    def redis_connection(self) -> dict[str, Any]:
        return bullmq_connection(self.redis_url)

    async def check(self) -> dict[str, str]:
        """Reachability of every dependency: name -> "ok" or a one-line reason."""

        async def probe(name: str, check: Any) -> tuple[str, str]:
            try:
                await asyncio.wait_for(check, timeout=5)
                return name, "ok"
            except DependencyUnavailable as exc:
                return name, str(exc)
            except Exception as exc:  # noqa: BLE001 - any failure is "down" for readiness
                return name, one_line_reason(exc)

        results = await asyncio.gather(
            probe("clickhouse", self.clickhouse.ping()),
            probe("metadata", asyncio.to_thread(self.metadata.ping)),
            probe("redis", ping_redis(self.redis_url, client=self.redis)),
            probe("blob_store", self.blobs.ping()),
            *([probe("media_store", self.media.blobs.ping())] if self.media is not None else []),
        )
        return dict(results)

    async def close(self) -> None:
        await self.producer.close()
        await self.redis.aclose()
        self.clickhouse.close()
        self.metadata.dispose()
        if self.embedded_redis is not None:
            await asyncio.to_thread(self.embedded_redis.stop)


async def open_services(settings: Settings) -> Services:
    """Connect to (or start) every dependency; raise DependencyUnavailable naming the first that fails."""
    log = get_logger("tracehouse.runtime")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cleanups: list[Callable[[], Any]] = []  # undo what was opened if a later step fails
    try:
        embedded_redis = None
        redis_url = settings.redis_url
        if redis_url is None:
            embedded_redis = EmbeddedRedis(settings.data_dir / "redis")
            await asyncio.to_thread(embedded_redis.start)
            cleanups.append(embedded_redis.stop)
            redis_url = embedded_redis.url
        else:
            await ping_redis(redis_url)

        metadata = MetadataDB(settings.metadata_url)
        cleanups.append(metadata.dispose)
        await asyncio.to_thread(metadata.ping)
        await asyncio.to_thread(_check_export_secrets, metadata, settings)

        clickhouse = await asyncio.to_thread(ClickHouse.from_settings, settings)
        cleanups.append(clickhouse.close)
        await clickhouse.ping()

        blobs = BlobStore(BlobStoreConfig.from_settings(settings))
        await blobs.ping()
        media = await asyncio.to_thread(build_media_store, settings)
        await media.blobs.ping()

        redis = redis_client(redis_url)
        cleanups.append(redis.aclose)
        producer = queue_producer(redis_url, settings)
        cleanups.append(producer.close)
    except BaseException:
        for undo in reversed(cleanups):
            await (undo() if asyncio.iscoroutinefunction(undo) else asyncio.to_thread(undo))
        raise
    log.info(
        "services_opened",
        clickhouse=clickhouse.target,
        metadata=metadata.display_url,
        redis=describe_redis(redis_url),
        blob_store=blobs.config.describe(),
    )
    return Services(
        settings=settings,
        clickhouse=clickhouse,
        metadata=metadata,
        blobs=blobs,
        redis_url=redis_url,
        redis=redis,
        producer=producer,
        metrics=Metrics(),
        media=media,
        embedded_redis=embedded_redis,
    )


async def migrate(services: Services) -> dict[str, list[str]]:
    """Bring the metadata DB and ClickHouse schemas up to date (idempotent)."""
    settings = services.settings
    cluster = settings.clickhouse_cluster_name if settings.clickhouse_cluster_enabled else None
    return {
        "metadata": await asyncio.to_thread(services.metadata.migrate),
        "clickhouse": await migrate_clickhouse(services.clickhouse, cluster=cluster),
    }


def queue_producer(redis_url: str, settings: Settings) -> QueueProducer:
    """A producer for one-shot commands that only enqueue (the caller closes it)."""
    return QueueProducer(bullmq_connection(redis_url), queue_registry(), prefix=settings.redis_key_prefix)


def queue_registry() -> dict[str, Any]:
    """Every capability's queues (imported late: capabilities import the infrastructure packages)."""
    from tracehouse.capabilities import QUEUES

    return QUEUES


def _check_export_secrets(metadata: MetadataDB, settings: Settings) -> None:
    """Refuse to start if stored integration secrets cannot be decrypted (missing or wrong key)."""
    from sqlalchemy import inspect

    from tracehouse.export.crypto import SecretBox
    from tracehouse.export.integrations import check_secrets_readable

    if "blob_storage_integrations" not in inspect(metadata.engine).get_table_names():
        return  # not migrated yet
    check_secrets_readable(metadata, SecretBox(settings.encryption_key))
