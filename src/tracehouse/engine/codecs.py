"""HTTP body compression as ClickHouse negotiates it.

Responses: compressed when the client sends `Accept-Encoding` and `enable_http_compression=1`;
ClickHouse picks by its own preference order (zstd, br, lz4, gzip, deflate, xz, bz2), not the
client's, and skips encodings with q=0. clickhouse-connect sends `lz4,zstd,br,gzip,deflate` with
`enable_http_compression=1` for Native queries (its Arrow and command calls ask for none).
Requests: the body is decoded by its `Content-Encoding` (clickhouse-connect's `insert` sends lz4).
Every encoder flushes per chunk, so a streamed result can be decoded as it arrives.
"""

from __future__ import annotations

import bz2
import lzma
import sys
import zlib
from collections.abc import Callable
from typing import Any, Protocol

import lz4.frame

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from tracehouse.engine import errors
from tracehouse.engine.errors import EngineError

try:
    import brotli  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # optional, as in ClickHouse builds without it
    brotli = None

_ZLIB_DECOMPRESS = type(zlib.decompressobj())
PREFERENCE = ("zstd", "br", "lz4", "gzip", "deflate", "xz", "bz2")
# At most this much decoded output per step, so a small compressed body cannot inflate in one go.
DECODE_STEP = 1 << 20


class Encoder(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class Decoder(Protocol):
    def decompress(self, data: bytes) -> list[bytes]: ...
    def finish(self) -> list[bytes]: ...


def supported() -> tuple[str, ...]:
    return tuple(name for name in PREFERENCE if name != "br" or brotli is not None)


def choose_encoding(accept_encoding: str) -> str | None:
    """ClickHouse's chooseHTTPCompressionMethod: server order, q=0 refuses, `*` stands for the rest."""
    accepted: dict[str, float] = {}
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if name:
            accepted[name.strip().lower()] = quality
    wildcard = accepted.get("*", 0.0) > 0
    for name in supported():
        given = accepted.get(name)
        if (given is not None and given > 0) or (given is None and wildcard):
            return name
    return None


class _ZlibEncoder:
    def __init__(self, wbits: int, level: int) -> None:
        self._c = zlib.compressobj(level, zlib.DEFLATED, wbits)

    def compress(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._c.flush(zlib.Z_FINISH)


class _ZstdEncoder:
    def __init__(self) -> None:
        self._c = zstd.ZstdCompressor()

    def compress(self, data: bytes) -> bytes:
        return self._c.compress(data, zstd.ZstdCompressor.FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self._c.flush(zstd.ZstdCompressor.FLUSH_FRAME)


class _Lz4Encoder:
    def __init__(self) -> None:
        self._c = lz4.frame.LZ4FrameCompressor(auto_flush=True)
        self._header: bytes | None = self._c.begin()

    def compress(self, data: bytes) -> bytes:
        out = self._c.compress(data)
        if self._header is not None:
            out, self._header = self._header + out, None
        return out

    def finish(self) -> bytes:
        head, self._header = self._header or b"", None
        return head + self._c.flush()


class _StdlibEncoder:
    """xz, bz2 and brotli: no per-chunk flush worth having for these rarely used encodings."""

    def __init__(self, compressor: Any) -> None:
        self._c = compressor

    def compress(self, data: bytes) -> bytes:
        return bytes(self._c.compress(data) or b"")

    def finish(self) -> bytes:
        return bytes(self._c.flush() if hasattr(self._c, "flush") else self._c.finish())


def encoder(name: str, zlib_level: int = 3) -> Encoder:
    makers: dict[str, Callable[[], Encoder]] = {
        "gzip": lambda: _ZlibEncoder(31, zlib_level),
        "deflate": lambda: _ZlibEncoder(15, zlib_level),
        "zstd": _ZstdEncoder,
        "lz4": _Lz4Encoder,
        "xz": lambda: _StdlibEncoder(lzma.LZMACompressor(format=lzma.FORMAT_XZ)),
        "bz2": lambda: _StdlibEncoder(bz2.BZ2Compressor()),
    }
    if brotli is not None:
        makers["br"] = lambda: _StdlibEncoder(brotli.Compressor())
    return makers[name]()


class _StepDecoder:
    """Wraps a decompressor that takes max_length (zlib, zstd, lz4, lzma, bz2) into bounded steps."""

    def __init__(self, make: Callable[[], Any], name: str) -> None:
        self._make = make
        self._d = make()
        self._name = name

    def decompress(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pending = data
        try:
            while True:
                if self._at_eof():
                    pending = self._unused() + pending
                    if not pending:
                        return out
                    self._d = self._make()  # concatenated members (gzip, zstd and lz4 frames)
                piece = self._step(pending)
                pending = b""
                if piece:
                    out.append(piece)
                if self._at_eof():
                    continue
                if self._needs_input() or not piece:
                    return out
        except (zlib.error, zstd.ZstdError, lzma.LZMAError, OSError, RuntimeError, EOFError) as exc:
            raise EngineError(errors.CANNOT_DECOMPRESS, f"Cannot decompress {self._name} request body: {exc}") from None

    def finish(self) -> list[bytes]:
        if not self._at_eof() and self._started:
            raise EngineError(errors.CANNOT_DECOMPRESS, f"Cannot decompress {self._name} request body: it is truncated")
        return []

    _started = False

    def _step(self, data: bytes) -> bytes:
        self._started = True
        d = self._d
        if isinstance(d, _ZLIB_DECOMPRESS):
            return bytes(d.decompress(d.unconsumed_tail + data, DECODE_STEP))
        return bytes(d.decompress(data, DECODE_STEP))

    def _needs_input(self) -> bool:
        d = self._d
        if isinstance(d, _ZLIB_DECOMPRESS):
            return not d.unconsumed_tail
        return bool(getattr(d, "needs_input", True))

    def _at_eof(self) -> bool:
        return bool(getattr(self._d, "eof", False))

    def _unused(self) -> bytes:
        return bytes(getattr(self._d, "unused_data", None) or b"")


class _WholeDecoder:
    """brotli's decoder has no bounded step; it is optional and rarely used."""

    def __init__(self, decompressor: Any) -> None:
        self._d = decompressor

    def decompress(self, data: bytes) -> list[bytes]:
        try:
            return [self._d.process(data)]
        except Exception as exc:  # noqa: BLE001 - brotli.error
            raise EngineError(errors.CANNOT_DECOMPRESS, f"Cannot decompress br request body: {exc}") from None

    def finish(self) -> list[bytes]:
        return []


class _Identity:
    def decompress(self, data: bytes) -> list[bytes]:
        return [data] if data else []

    def finish(self) -> list[bytes]:
        return []


def decoder(content_encoding: str) -> Decoder:
    name = content_encoding.strip().lower()
    makers: dict[str, Callable[[], Any]] = {
        "gzip": lambda: zlib.decompressobj(31),
        "x-gzip": lambda: zlib.decompressobj(31),
        "deflate": lambda: zlib.decompressobj(15),
        "zstd": zstd.ZstdDecompressor,
        "lz4": lz4.frame.LZ4FrameDecompressor,
        "xz": lzma.LZMADecompressor,
        "bz2": bz2.BZ2Decompressor,
    }
    if name in ("", "identity", "none"):
        return _Identity()
    if name == "br" and brotli is not None:
        return _WholeDecoder(brotli.Decompressor())
    if name not in makers:
        raise EngineError(errors.BAD_ARGUMENTS, f"Unknown compression method '{content_encoding}'")
    return _StepDecoder(makers[name], name)
