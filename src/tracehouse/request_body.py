"""Reading a request body within limits: its size, the time it may take, and what gzip may expand to.

A route that reads its body itself calls `read_body` instead of `await request.body()`, which reads
any size at any speed and leaves decompression to the caller. `read_body`:

- answers 413 (`PayloadTooLarge`) before reading a byte when Content-Length is over the limit, and
  as soon as the running count of a chunked body passes it (the rest is never read: the server
  then closes the connection, see `tracehouse.web.server`);
- answers 408 (`RequestTimeout`) when the body is not complete within `timeout_s`;
- inflates gzip bodies as they arrive, in a small thread pool of its own (a bomb costs at most the
  decompressed limit in memory and never blocks the event loop or the threads other requests use),
  and answers 413 as soon as the output passes `decompress_limit`, 400 for corrupt or truncated gzip;
- turns a client that goes away mid-body into `ClientDisconnected`, which the web app answers with
  nothing and logs at info (`client_disconnected`), not as an error.

Limits are stated in messages in human terms: "request body is larger than 4.5 MB (4500000 bytes)".
"""

from __future__ import annotations

import asyncio
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing

from starlette.requests import ClientDisconnect, Request

from tracehouse.api_common import ApiError, BadRequest, PayloadTooLarge

GZIP_MAGIC = b"\x1f\x8b"
# Compressed bytes handed to a decompression thread at a time: large enough that a 10 MB body is a
# few dozen hand-offs, small enough that a bomb is caught within one step of passing the limit.
INFLATE_STEP_BYTES = 256 * 1024
# Decompression runs here, not in the default executor, so a burst of bombs queues behind itself
# instead of taking the threads that database and ClickHouse calls (and key lookups) run in.
INFLATE_PIECE_BYTES = 1024 * 1024  # decompressed bytes per zlib call
_INFLATE_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tracehouse-inflate")


class RequestTimeout(ApiError):
    """The request body did not arrive within the body timeout."""

    status = 408
    error = "RequestTimeoutError"


class ClientDisconnected(ClientDisconnect):
    """The client went away before its body was complete: there is no one to answer.

    A subclass of starlette's `ClientDisconnect`, so one handler covers both (the web app's logs it
    at info as `client_disconnected`)."""


def human_bytes(n: int) -> str:
    """4500000 -> "4.5 MB", 10000000 -> "10 MB", 1536 -> "1.54 kB" (decimal units, as limits are set)."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n} bytes"


def too_large(what: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{what} is larger than {human_bytes(limit)} ({limit} bytes)")


async def read_body(
    request: Request,
    *,
    limit: int,
    timeout_s: float,
    decompress_limit: int | None = None,
    detect_gzip: bool = False,
) -> bytes:
    """The request body, read within limits; decompressed when gzip and the caller accepts gzip.

    - `limit`: most bytes on the wire (compressed size for a gzip body). Content-Length over it is
      a 413 before anything is read; a chunked body is a 413 as soon as it passes it.
    - `timeout_s`: the whole body must arrive within this long from the call, else 408.
    - `decompress_limit`: None means the caller takes the body as sent (no decoding; a gzip body
      stays gzip). A number means gzip is accepted: `Content-Encoding: gzip` (or `x-gzip`), and with
      `detect_gzip=True` also a body that starts with the gzip magic bytes whatever its headers, is
      inflated; more output than `decompress_limit` is a 413, corrupt or truncated gzip a 400, any
      other Content-Encoding than gzip/identity a 400.

    Raises `PayloadTooLarge` (413), `RequestTimeout` (408), `BadRequest` (400) or
    `ClientDisconnected`. Afterwards `await request.body()` returns the same (decoded) bytes, so
    code that looks at the body again does not read the stream twice.
    """
    declared = _content_length(request)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"request body is larger than {human_bytes(limit)} ({limit} bytes): Content-Length is {declared}"
        )
    encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
    if decompress_limit is not None and encoding not in ("identity", "gzip", "x-gzip"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r}: send gzip or an uncompressed body")
    # None = not decided yet (waiting for the first two bytes to look for the gzip magic).
    inflater: _Inflater | None = None
    gzipped: bool | None = None
    if decompress_limit is None:
        gzipped = False
    elif encoding != "identity":
        gzipped = True
    elif not detect_gzip:
        gzipped = False

    parts: list[bytes] = []  # raw body, or compressed input not yet handed to the inflater
    pending = 0
    received = 0
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            async with aclosing(request.stream()) as stream:
                async for chunk in stream:
                    received += len(chunk)
                    if received > limit:
                        raise too_large("request body", limit)
                    parts.append(chunk)
                    pending += len(chunk)
                    if gzipped is None and pending >= len(GZIP_MAGIC):
                        gzipped = b"".join(parts).startswith(GZIP_MAGIC)
                    if gzipped and pending >= INFLATE_STEP_BYTES:
                        inflater = inflater or _Inflater(decompress_limit or 0)
                        await loop.run_in_executor(_INFLATE_POOL, inflater.feed, b"".join(parts))
                        parts, pending = [], 0
            if gzipped is None:  # fewer than two bytes: cannot be gzip
                gzipped = False
            if gzipped and (inflater is not None or pending):
                inflater = inflater or _Inflater(decompress_limit or 0)
                body = await loop.run_in_executor(_INFLATE_POOL, inflater.finish, b"".join(parts))
            else:
                body = b"".join(parts)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise RequestTimeout(f"request body was not received within {timeout_s:g} s") from None
    except ClientDisconnect:
        raise ClientDisconnected() from None
    request._body = body
    return body


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        raise BadRequest(f"Content-Length {value[:40]!r} is not a number of bytes")
    return int(value)


class _Inflater:
    """Streaming gzip (one or more members) with the output capped at `limit`. Runs in a thread:
    zlib releases the GIL while it inflates."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._out: list[bytes] = []
        self._stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> None:
        try:
            while True:
                # Output in pieces, never past one byte over the limit: a bomb stops here, whatever
                # it holds, having cost the limit in memory (not twice that in one buffer).
                piece = min(self._limit - self._size + 1, INFLATE_PIECE_BYTES)
                out = self._stream.decompress(data, piece)
                self._size += len(out)
                if self._size > self._limit:
                    self._out.clear()
                    raise too_large("decompressed request body", self._limit)
                if out:
                    self._out.append(out)
                if self._stream.eof:  # a member ended; what follows must be another member
                    data = self._stream.unused_data
                    if not data:
                        return
                    self._stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                    continue
                data = self._stream.unconsumed_tail
                if not data and len(out) < piece:
                    return  # input used up and no output held back
        except zlib.error as exc:
            raise BadRequest(f"body is not valid gzip: {exc}") from None

    def finish(self, data: bytes) -> bytes:
        self.feed(data)
        if not self._stream.eof:
            raise BadRequest("body is not valid gzip: it ends before the end of the compressed stream")
        body = b"".join(self._out)
        self._out.clear()
        return body
