"""Integration secrets are encrypted at rest with AES-256-GCM under ENCRYPTION_KEY (64 hex chars,
Langfuse's format). Stored form: `v1:` + base64(nonce || ciphertext+tag)."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tracehouse.errors import ConfigError

PREFIX = "v1:"


class SecretBox:
    def __init__(self, hex_key: str | None) -> None:
        self._aead = AESGCM(bytes.fromhex(hex_key)) if hex_key else None

    @property
    def ready(self) -> bool:
        return self._aead is not None

    def _need(self) -> AESGCM:
        if self._aead is None:
            raise ConfigError(
                "ENCRYPTION_KEY is not set: it is needed to store or use integration secrets "
                "(64 hex characters, e.g. `openssl rand -hex 32`)"
            )
        return self._aead

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._need().encrypt(nonce, plaintext.encode(), None)
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, stored: str) -> str:
        raw = base64.b64decode(stored.removeprefix(PREFIX))
        try:
            return self._need().decrypt(raw[:12], raw[12:], None).decode()
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 - InvalidTag: a different key encrypted it
            raise ConfigError(
                "ENCRYPTION_KEY does not decrypt the stored integration secrets (was it changed?)"
            ) from None
