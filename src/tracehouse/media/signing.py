"""Links tracehouse signs itself: an HMAC-SHA256 over a small JSON grant, with an expiry.

The key is `TRACEHOUSE_URL_SIGNING_SECRET`, or else a random key kept in `<data dir>/url-signing.key`
(created once, readable by its owner only). Every process that serves or hands out the links must
share it: with several hosts, set the secret.

A token is `<base64url(JSON grant)>.<base64url(HMAC)>`. The MAC covers a purpose string too, so a
token signed for one purpose (a media upload) is never accepted for another (a download, or another
capability's links under the same key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tracehouse.settings import Settings

KEY_FILE_NAME = "url-signing.key"


class InvalidToken(Exception):
    """The token is malformed, forged, expired or for something else; the message says which."""


def url_signing_key(settings: Settings) -> bytes:
    """The HMAC key for signed links: the configured secret, or the data dir's persisted random key."""
    if settings.url_signing_secret:
        return settings.url_signing_secret.encode()
    return _persisted_key(settings.data_dir / KEY_FILE_NAME)


def _persisted_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole to a private file, then linked into place: a concurrent first start either
        # wins or reads the winner's complete key, never a half-written one.
        staging = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(32) + "\n")
            with suppress(FileExistsError):  # another process made it first: use theirs
                os.link(staging, path)
        finally:
            staging.unlink()
    key = path.read_text().strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds no usable signing key; delete it to have a new one made")
    return key.encode()


@dataclass(frozen=True)
class MediaGrant:
    """What a signed media link allows: one stored object of one project, for the purpose the token
    was signed for (upload or download)."""

    project_id: str
    media_id: str
    bucket_path: str
    content_type: str
    content_length: int
    sha256_hash: str
    expires_at: float  # unix seconds


class UrlSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, purpose: str, grant: MediaGrant) -> str:
        payload = _b64(json.dumps(asdict(grant), separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{_b64(self._mac(purpose, payload))}"

    def verify(self, purpose: str, token: str, *, now: float | None = None) -> MediaGrant:
        payload, _, signature = token.partition(".")
        if not payload or not signature:
            raise InvalidToken("malformed token")
        try:
            presented = _unb64(signature)
        except ValueError:
            raise InvalidToken("malformed token") from None
        if not hmac.compare_digest(presented, self._mac(purpose, payload)):
            raise InvalidToken("invalid token signature")
        grant = _grant(payload)
        if grant.expires_at <= (time.time() if now is None else now):
            raise InvalidToken("token expired")
        return grant

    def _mac(self, purpose: str, payload: str) -> bytes:
        return hmac.new(self._key, f"tracehouse:{purpose}\n{payload}".encode(), hashlib.sha256).digest()


def _grant(payload: str) -> MediaGrant:
    # Only ever called on a payload this key signed, so a failure here is a bug, not an attack.
    fields: dict[str, Any] = json.loads(_unb64(payload))
    return MediaGrant(**fields)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
