"""Output formats: which can be streamed, and how chDB's streamed chunks become one response.

chDB's streaming query formats every chunk as a complete output: a TSVWithNames chunk repeats the
header, an ArrowStream chunk is a whole stream (schema, batches, end marker), a Parquet chunk a whole
file. Concatenated, those are not the format a ClickHouse server sends. So:
- row formats without a header (Native, TSV, CSV, JSONEachRow, RowBinary, ...) are concatenated;
- *WithNames[AndTypes] formats keep the first chunk's header and drop it from the others;
- ArrowStream keeps the first schema, drops the later schemas and every end marker, and ends once;
- every other format (JSON, Arrow, Parquet, Pretty, ...) is not streamed: chDB builds it whole.
"""

from __future__ import annotations

import struct

_CONCATENATED = {
    "native",
    "tabseparated",
    "tsv",
    "tabseparatedraw",
    "tsvraw",
    "csv",
    "jsoneachrow",
    "jsonlines",
    "ndjson",
    "jsonstringseachrow",
    "jsoncompacteachrow",
    "jsoncompactstringseachrow",
    "rowbinary",
    "lineasstring",
    "rawblob",
    "tskv",
    "null",
}
# Header lines (text formats) or header string lists (RowBinary) each chunk repeats.
_TEXT_HEADERS = {
    "tabseparatedwithnames": 1,
    "tsvwithnames": 1,
    "tabseparatedrawwithnames": 1,
    "tsvrawwithnames": 1,
    "tabseparatedwithnamesandtypes": 2,
    "tsvwithnamesandtypes": 2,
    "tabseparatedrawwithnamesandtypes": 2,
    "tsvrawwithnamesandtypes": 2,
    "csvwithnames": 1,
    "csvwithnamesandtypes": 2,
    "jsoncompacteachrowwithnames": 1,
    "jsoncompacteachrowwithnamesandtypes": 2,
    "jsoncompactstringseachrowwithnames": 1,
    "jsoncompactstringseachrowwithnamesandtypes": 2,
}
_BINARY_HEADERS = {"rowbinarywithnames": 1, "rowbinarywithnamesandtypes": 2}
_ARROW_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"

_BINARY = {
    "native",
    "rowbinary",
    "rowbinarywithnames",
    "rowbinarywithnamesandtypes",
    "arrow",
    "arrowstream",
    "parquet",
    "orc",
    "avro",
    "msgpack",
    "protobuf",
    "protobufsingle",
    "capnproto",
    "rawblob",
    "npy",
    "bson",
}
_CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "csvwithnames": "text/csv; charset=UTF-8; header=present",
    "json": "application/json; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
    "xml": "application/xml; charset=UTF-8",
}


def streamable(fmt: str) -> bool:
    name = fmt.lower()
    return name in _CONCATENATED or name in _TEXT_HEADERS or name in _BINARY_HEADERS or name == "arrowstream"


def content_type(fmt: str) -> str:
    name = fmt.lower()
    if name in _CONTENT_TYPES:
        return _CONTENT_TYPES[name]
    if name in _BINARY:
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


class Stitcher:
    """Turns chDB's self-contained chunks into one continuous output of the format."""

    def __init__(self, fmt: str) -> None:
        self._name = fmt.lower()
        self._first = True

    def feed(self, chunk: bytes) -> bytes:
        first, self._first = self._first, False
        if self._name == "arrowstream":
            return _arrow_chunk(chunk, first)
        if first or not chunk:
            return chunk
        if self._name in _TEXT_HEADERS:
            return chunk[_text_header_length(chunk, _TEXT_HEADERS[self._name], self._name.startswith("csv")) :]
        if self._name in _BINARY_HEADERS:
            return chunk[_rowbinary_header_length(chunk, _BINARY_HEADERS[self._name]) :]
        return chunk

    def finish(self) -> bytes:
        if self._name == "arrowstream" and not self._first:
            return _ARROW_EOS
        return b""


def _arrow_chunk(chunk: bytes, first: bool) -> bytes:
    """Arrow IPC stream: [schema message][record batch messages...][end-of-stream marker]."""
    body = chunk[: -len(_ARROW_EOS)] if chunk.endswith(_ARROW_EOS) else chunk
    if first or not body:
        return body
    return body[_arrow_message_length(body) :]


def _arrow_message_length(data: bytes) -> int:
    """Length of the first IPC message: continuation marker, metadata length, metadata, body."""
    if len(data) < 8 or data[:4] != b"\xff\xff\xff\xff":
        raise ValueError("chDB returned an ArrowStream chunk without a schema message")
    (metadata_length,) = struct.unpack_from("<i", data, 4)
    # A schema message carries no body; its metadata is padded to 8 bytes already.
    return 8 + metadata_length


def _text_header_length(chunk: bytes, lines: int, quoted: bool) -> int:
    """Bytes of the first `lines` lines; CSV names may hold newlines inside quotes."""
    pos, in_quotes = 0, False
    for _ in range(lines):
        while pos < len(chunk):
            char = chunk[pos]
            pos += 1
            if quoted and char == 0x22:  # '"' ("" inside quotes toggles twice, which is right)
                in_quotes = not in_quotes
            elif char == 0x0A and not in_quotes:
                break
    return pos


def _rowbinary_header_length(chunk: bytes, lists: int) -> int:
    """RowBinaryWithNames[AndTypes]: a varint column count, then that many strings per list."""
    count, pos = _varint(chunk, 0)
    for _ in range(count * lists):
        length, pos = _varint(chunk, pos)
        pos += length
    return pos


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
