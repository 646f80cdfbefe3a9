"""Who is calling: project keys (HTTP Basic, as Langfuse) and the admin key (Bearer).

Verified keys are cached briefly in memory so a busy ingestion endpoint costs one database lookup
per key per minute, not one per request. A revoked key stops working within the cache TTL.
Every comparison of a presented secret is constant-time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import time
from dataclasses import dataclass

from fastapi import Request

from tracehouse.api_common import AuthError, Forbidden
from tracehouse.metadata import MetadataDB, verify_api_key


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
    def __init__(self, metadata: MetadataDB, *, salt: str, ttl_s: float = 60.0) -> None:
        self._metadata = metadata
        self._salt = salt
        self._ttl_s = ttl_s
        self._cache: dict[tuple[str, str], tuple[float, str | None]] = {}

    async def verify(self, public_key: str, secret_key: str) -> str | None:
        now = time.monotonic()
        hit = self._cache.get((public_key, secret_key))
        if hit and hit[0] > now:
            return hit[1]
        project_id = await asyncio.to_thread(verify_api_key, self._metadata, public_key, secret_key, salt=self._salt)
        if len(self._cache) > 10_000:  # bound memory under a flood of bad keys
            self._cache.clear()
        self._cache[(public_key, secret_key)] = (now + self._ttl_s, project_id)
        return project_id

    def forget(self) -> None:
        self._cache.clear()


def parse_basic(header: str | None) -> tuple[str, str]:
    if not header:
        raise AuthError("No authorization header")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise AuthError("Invalid authorization header: expected Basic auth with public and secret key")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
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
