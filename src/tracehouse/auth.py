"""Who is calling: project keys (HTTP Basic, as Langfuse) and the admin key (Bearer).

Verified keys are cached briefly in memory so a busy ingestion endpoint costs one database lookup
per key per minute, not one per request. A revoked key stops working within the cache TTL.
Every comparison of a presented secret is constant-time.

The cache holds a keyed digest of each (public key, secret key) pair, never the secret, in an LRU
bounded in bytes (`TRACEHOUSE_AUTH_CACHE_MAX_BYTES`), so a flood of made-up keys costs a bounded
amount of memory. Headers and keys that no key could match (too long, wrong prefix, not base64,
not ASCII) are answered 401 without a database lookup or a cache entry.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass

from fastapi import Request

from tracehouse.api_common import AuthError, Forbidden
from tracehouse.metadata import PUBLIC_KEY_PREFIX, SECRET_KEY_PREFIX, MetadataDB, verify_api_key

# Langfuse keys are "pk-lf-"/"sk-lf-" plus a uuid (42 characters); 256 leaves room for chosen ones.
MAX_KEY_CHARS = 256
# "Basic " + base64 of two such keys and a colon, with room to spare.
MAX_AUTHORIZATION_CHARS = 1024
# What one cache entry costs beyond the sizes of its objects: its slot in the dict's tables and
# its node in the LRU order (about 100 bytes each in CPython 3.11), rounded up.
_ENTRY_OVERHEAD_BYTES = 256


@dataclass(frozen=True)
class ProjectAuth:
    project_id: str
    public_key: str


@dataclass(frozen=True)
class Access:
    """The admin key (every project) or one project's key."""

    project_id: str | None  # None = admin

    @property
    def is_admin(self) -> bool:
        return self.project_id is None

    def check(self, project_id: str, what: str = "project") -> None:
        """Raise 403 unless this caller may act on `project_id`'s resource."""
        if self.project_id is not None and self.project_id != project_id:
            raise Forbidden(f"this key cannot manage {what} {project_id}")


class KeyVerifier:
    """Key pair -> project id (None: no such valid key), cached for `ttl_s` in at most `max_bytes`."""

    def __init__(self, metadata: MetadataDB, *, salt: str, ttl_s: float = 60.0, max_bytes: int = 4_000_000) -> None:
        self._metadata = metadata
        self._salt = salt
        self._ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.bytes_used = 0
        # Keyed per process, so digests say nothing outside it and cannot be precomputed.
        self._digest_key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, tuple[float, str | None, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    async def verify(self, public_key: str, secret_key: str) -> str | None:
        if not _plausible(public_key, secret_key):
            return None  # no key could match: no lookup, nothing cached
        digest = self._digest(public_key, secret_key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(digest)
            return hit[1]
        project_id = await asyncio.to_thread(verify_api_key, self._metadata, public_key, secret_key, salt=self._salt)
        self._store(digest, time.monotonic() + self._ttl_s, project_id)
        return project_id

    def forget(self) -> None:
        self._cache.clear()
        self.bytes_used = 0

    def _digest(self, public_key: str, secret_key: str) -> bytes:
        public = public_key.encode("utf-8", "surrogateescape")
        secret = secret_key.encode("utf-8", "surrogateescape")
        # Length-prefixed, so no two different pairs give the same input.
        message = len(public).to_bytes(4, "big") + public + secret
        return hashlib.blake2b(message, key=self._digest_key, digest_size=32).digest()

    def _store(self, digest: bytes, expires: float, project_id: str | None) -> None:
        old = self._cache.pop(digest, None)
        if old is not None:
            self.bytes_used -= old[2]
        cost = (
            sys.getsizeof(digest)
            + sys.getsizeof((expires, project_id, 0))
            + sys.getsizeof(expires)
            + (sys.getsizeof(project_id) if project_id is not None else 0)
            + _ENTRY_OVERHEAD_BYTES
        )
        if cost > self.max_bytes:
            return
        while self._cache and self.bytes_used + cost > self.max_bytes:
            _, evicted = self._cache.popitem(last=False)
            self.bytes_used -= evicted[2]
        self._cache[digest] = (expires, project_id, cost)
        self.bytes_used += cost


def _plausible(public_key: str, secret_key: str) -> bool:
    """Could this pair be a key at all? Every key tracehouse stores has these prefixes (enforced when
    it is created) and is far shorter than MAX_KEY_CHARS."""
    return (
        len(public_key) <= MAX_KEY_CHARS
        and len(secret_key) <= MAX_KEY_CHARS
        and public_key.startswith(PUBLIC_KEY_PREFIX)
        and secret_key.startswith(SECRET_KEY_PREFIX)
    )


def parse_basic(header: str | None) -> tuple[str, str]:
    if not header:
        raise AuthError("No authorization header")
    if len(header) > MAX_AUTHORIZATION_CHARS:
        raise AuthError(f"Invalid authorization header: longer than {MAX_AUTHORIZATION_CHARS} characters")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise AuthError("Invalid authorization header: expected Basic auth with public and secret key")
    try:
        # Non-ASCII (header bytes arrive as latin-1 text) is a ValueError, bad base64 binascii.Error
        # (a ValueError too), bad UTF-8 UnicodeDecodeError (also one).
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:
        raise AuthError("Invalid authorization header: not valid base64") from None
    public_key, sep, secret_key = decoded.partition(":")
    if not sep or not public_key or not secret_key:
        raise AuthError("Invalid authorization header: expected publicKey:secretKey")
    return public_key, secret_key


def is_admin(request: Request) -> bool:
    """The request carries `Authorization: Bearer $ADMIN_API_KEY` (and an admin key is configured)."""
    admin_key = request.app.state.services.settings.admin_api_key
    if not admin_key:
        return False
    presented = request.headers.get("authorization", "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(presented, f"Bearer {admin_key}".encode())


async def require_project(request: Request) -> ProjectAuth:
    """FastAPI dependency for every project-scoped route."""
    public_key, secret_key = parse_basic(request.headers.get("authorization"))
    verifier: KeyVerifier = request.app.state.key_verifier
    project_id = await verifier.verify(public_key, secret_key)
    if project_id is None:
        raise AuthError("Invalid credentials. Confirm that you've configured the correct host.")
    return ProjectAuth(project_id=project_id, public_key=public_key)


async def require_admin_or_project(request: Request) -> Access:
    """FastAPI dependency for resources an admin may manage for any project and a project key for its own."""
    if is_admin(request):
        return Access(project_id=None)
    return Access(project_id=(await require_project(request)).project_id)
