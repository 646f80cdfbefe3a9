"""Redis connection options for bullmq, with the workarounds our evaluation found necessary.

redis-py 8 changed the default socket timeout from None to 5 s; bullmq's blocking BZPOPMIN then
times out and retries silently, stalling limiters and global concurrency for minutes. Every
connection we hand to bullmq therefore sets `socket_timeout=None` explicitly.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis

from tracehouse.errors import DependencyUnavailable, one_line_reason


def bullmq_connection(url: str) -> dict[str, Any]:
    """Translate a redis://, rediss:// or unix:// URL into bullmq's connection dict."""
    parts = urlsplit(url)
    opts: dict[str, Any] = {"socket_timeout": None}
    if parts.scheme == "unix":
        opts["unix_socket_path"] = parts.path
        # bullmq's defaults add host/port; a unix socket connection ignores them.
        return opts
    opts["host"] = parts.hostname or "127.0.0.1"
    opts["port"] = parts.port or 6379
    if parts.username:
        opts["username"] = unquote(parts.username)
    if parts.password:
        opts["password"] = unquote(parts.password)
    db = parts.path.strip("/")
    opts["db"] = int(db) if db.isdigit() else 0
    if parts.scheme == "rediss":
        opts["ssl"] = True
    return opts


def describe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return url
    host = f"{parts.hostname}:{parts.port or 6379}"
    return f"{parts.scheme}://{host}{parts.path}"


def redis_client(url: str) -> aioredis.Redis:
    """A plain asyncio Redis client (for health checks and our own keys), same connection rules."""
    opts = bullmq_connection(url)
    opts["socket_connect_timeout"] = 5
    return aioredis.Redis(decode_responses=True, **opts)


async def ping_redis(url: str, *, client: aioredis.Redis | None = None) -> None:
    """Raise DependencyUnavailable unless Redis answers PING (on `client` if given, else a new one)."""
    own = client is None
    client = client if client is not None else redis_client(url)
    try:
        client_ok = await client.ping()
        if not client_ok:
            raise ConnectionError("PING was not answered")
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        reason = one_line_reason(exc)
        raise DependencyUnavailable("Redis", describe(url), reason) from None
    finally:
        if own:
            await client.aclose()
