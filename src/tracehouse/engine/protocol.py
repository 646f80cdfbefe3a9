"""HTTP primitives in ClickHouse's terms: credentials, parameters, the request body, the response.

Kept apart from the query pipeline so each side reads simply: `Request` knows how ClickHouse reads
a request (credentials from X-ClickHouse-User/Key, Basic auth or user/password parameters, never two
at once; the query from the `query` parameter plus the body), `Responder` how it answers (status and
headers fixed by the first byte, optional compression, an error either as a status or, once data is
on its way, as ClickHouse's tagged exception block inside the body).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.policy
import secrets
from collections.abc import AsyncIterator
from email.message import Message
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

from tracehouse.engine import codecs, errors
from tracehouse.engine.errors import EngineError

Scope = dict[str, Any]
Receive = Any
Send = Any


class ClientGone(Exception):
    """The client closed the connection."""


class Request:
    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        raw_query = scope.get("query_string", b"").decode("latin-1")
        # ClickHouse reads the last value of a repeated parameter.
        self.params: dict[str, str] = dict(parse_qsl(raw_query, keep_blank_values=True, encoding="utf-8"))
        self.headers: dict[str, str] = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        self.client_ip: str | None = client[0] if client else None
        self.body_done = self.method in ("GET", "HEAD")
        self.disconnected = False

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def credentials(self) -> tuple[str, str]:
        """(user, password) the way ClickHouse's authenticateUserByHTTP finds them."""
        header_user = self.header("x-clickhouse-user")
        header_key = self.header("x-clickhouse-key")
        authorization = self.header("authorization")
        param_user = self.params.get("user")
        param_password = self.params.get("password")
        using_headers = bool(header_user or header_key)
        using_params = param_user is not None or param_password is not None
        if sum((using_headers, bool(authorization), using_params)) > 1:
            raise EngineError(
                errors.AUTHENTICATION_FAILED,
                "Invalid authentication: it is not allowed to use more than one of Authorization header, "
                "X-ClickHouse HTTP headers and user/password parameters simultaneously",
            )
        if using_headers:
            return header_user or "default", header_key
        if authorization:
            return _basic(authorization)
        return param_user or "default", param_password or ""

    async def raw_chunks(self) -> AsyncIterator[bytes]:
        """The request body as it arrives (still content-encoded)."""
        while not self.body_done:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self.body_done = True
                raise ClientGone
            body = message.get("body", b"")
            self.body_done = not message.get("more_body", False)
            if body:
                yield body

    async def body_chunks(self) -> AsyncIterator[bytes]:
        """The request body decoded (Content-Encoding), in bounded pieces."""
        if self.params.get("decompress", "0") not in ("0", "", "false"):
            raise EngineError(
                errors.NOT_IMPLEMENTED,
                "decompress=1 (ClickHouse's internal block compression) is not supported by the tracehouse "
                "engine; send the body with Content-Encoding (gzip, zstd, lz4, ...) instead",
            )
        decoder = codecs.decoder(self.header("content-encoding"))
        async for raw in self.raw_chunks():
            for piece in decoder.decompress(raw):
                yield piece
        for piece in decoder.finish():
            yield piece

    async def form_fields(self, limit: int = 64 * 1024 * 1024) -> dict[str, str] | None:
        """The fields of a multipart/form-data body (None for any other body). clickhouse-connect sends
        the query and its `param_*` values this way when they would make the URL too long, as
        ClickHouse's HTTP interface accepts."""
        content_type = self.header("content-type")
        if not content_type.lower().startswith("multipart/form-data"):
            return None
        body = bytearray()
        async for piece in self.body_chunks():
            body += piece
            if len(body) > limit:
                raise EngineError(errors.BAD_ARGUMENTS, f"multipart/form-data body over {limit} bytes")
        if len(body) > _FORM_INLINE_BYTES:  # a long IN list: parse beside the loop, not on it
            return await asyncio.to_thread(_form_fields, content_type, bytes(body))
        return _form_fields(content_type, bytes(body))

    async def wait_disconnect(self) -> None:
        """Return when the client closes the connection (call only once the body has been read)."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                return


def _basic(authorization: str) -> tuple[str, str]:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise EngineError(errors.AUTHENTICATION_FAILED, f"Unsupported authorization scheme: {scheme}")
    try:
        user, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise EngineError(errors.AUTHENTICATION_FAILED, "Invalid Basic authorization header") from None
    return user or "default", password


class Responder:
    """One response. Headers go out with the first body bytes; afterwards an error can only be
    written into the body, in ClickHouse's tagged form (X-ClickHouse-Exception-Tag)."""

    def __init__(self, send: Send, *, head: bool, base_headers: list[tuple[str, str]]) -> None:
        self._send = send
        self._head = head
        self._base = base_headers
        self.started = False
        self.finished = False
        self._encoder: codecs.Encoder | None = None
        self.exception_tag = secrets.token_hex(8)
        self.bytes_sent = 0

    async def start(
        self, status: int, headers: list[tuple[str, str]], *, encoding: str | None, zlib_level: int = 3
    ) -> None:
        all_headers = self._base + headers
        if encoding:
            self._encoder = codecs.encoder(encoding, zlib_level)
            all_headers.append(("content-encoding", encoding))
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in all_headers],
            }
        )
        self.started = True

    async def write(self, data: bytes) -> None:
        if self._encoder is not None:
            data = self._encoder.compress(data)
        if data and not self._head:
            self.bytes_sent += len(data)
            await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self) -> None:
        if self.finished:
            return
        tail = self._encoder.finish() if self._encoder is not None else b""
        await self._send({"type": "http.response.body", "body": b"" if self._head else tail, "more_body": False})
        self.finished = True

    async def whole(self, status: int, headers: list[tuple[str, str]], body: bytes, *, encoding: str | None) -> None:
        """A complete response in one go (with Content-Length)."""
        if encoding:
            enc = codecs.encoder(encoding)
            body = enc.compress(body) + enc.finish()
            headers = [*headers, ("content-encoding", encoding)]
        await self.start(status, [*headers, ("content-length", str(len(body)))], encoding=None)
        self.bytes_sent = len(body)
        await self._send({"type": "http.response.body", "body": b"" if self._head else body, "more_body": False})
        self.finished = True

    async def error(self, exc: EngineError, status: int, *, close: bool) -> None:
        """Before any byte: ClickHouse's error response. After: the tagged block, then the end."""
        text = exc.text.encode("utf-8", "replace")
        if not self.started:
            headers = [("x-clickhouse-exception-code", str(exc.code)), ("content-type", "text/plain; charset=UTF-8")]
            if close:
                headers.append(("connection", "close"))
            await self.whole(status, headers, text + b"\n", encoding=None)
            return
        if self.finished:
            return
        tag = self.exception_tag.encode()
        block = b"__exception__\r\n" + tag + b"\r\n" + text + b"\n" + str(len(text)).encode() + b" " + tag
        await self.write(block + b"\r\n__exception__\r\n")
        await self.end()


_FORM_INLINE_BYTES = 64 * 1024


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    # compat32: the HTTP policy builds a header object per header (~9x slower), and the engine
    # parses a form for every query with bound parameters.
    message = BytesParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise EngineError(errors.BAD_ARGUMENTS, "malformed multipart/form-data body")
    fields = {}
    for part in message.get_payload():
        if not isinstance(part, Message):
            continue
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload.decode("utf-8")
    return fields
