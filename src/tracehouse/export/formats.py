"""Turning a stream of Arrow record batches into one export file: Parquet, JSONL or CSV.

Everything here is blocking and runs in a worker thread. Memory stays bounded by one record batch
(plus a Parquet row group): batches are written as they arrive and never collected.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, BinaryIO, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


@dataclass(frozen=True)
class FileFormat:
    file_type: str  # PARQUET | JSONL | CSV (Langfuse's names)
    compressed: bool  # gzip for JSONL/CSV; Parquet compresses its pages with zstd instead

    @property
    def extension(self) -> str:
        base = {"PARQUET": "parquet", "JSONL": "jsonl", "CSV": "csv"}[self.file_type]
        return base + (".gz" if self.gzipped else "")

    @property
    def gzipped(self) -> bool:
        return self.compressed and self.file_type != "PARQUET"

    @property
    def content_type(self) -> str:
        if self.gzipped:
            return "application/gzip"
        return {
            "PARQUET": "application/vnd.apache.parquet",
            "JSONL": "application/x-ndjson",
            "CSV": "text/csv; charset=utf-8",
        }[self.file_type]


@dataclass(frozen=True)
class WrittenFile:
    rows: int
    size_bytes: int
    sha256: str


class Writable(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> int: ...


class HashingSink:
    """A write-only file object that checksums and counts what passes through to `target`."""

    def __init__(self, target: Writable) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self._hash.update(view)
        self._target.write(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True  # the blob writer commits when its own context ends, not here

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def write_batches(
    batches: Iterator[pa.RecordBatch],
    open_target: Callable[[], AbstractContextManager[Writable]],
    fmt: FileFormat,
    *,
    row_group_rows: int,
) -> WrittenFile | None:
    """Write every non-empty batch into one file, opened on the first row; None when there were no rows.

    An empty window therefore leaves no file at all (rather than a header-only file a reader might
    reject). If anything raises, the target's context aborts the upload and nothing is committed.
    """
    with ExitStack() as stack:
        encoder: _Encoder | None = None
        sink: HashingSink | None = None
        rows = 0
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if encoder is None:
                sink = HashingSink(stack.enter_context(open_target()))
                encoder = _encoder(fmt, sink, batch.schema, row_group_rows)
            encoder.write(batch)
            rows += batch.num_rows
        if encoder is None or sink is None:
            return None
        encoder.close()
        return WrittenFile(rows, sink.size, sink.sha256)


class _Encoder(Protocol):
    def write(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...


def _encoder(fmt: FileFormat, sink: HashingSink, schema: pa.Schema, row_group_rows: int) -> _Encoder:
    if fmt.file_type == "PARQUET":
        return _ParquetEncoder(sink, schema, row_group_rows)
    out: Any = gzip.GzipFile(fileobj=sink, mode="wb", mtime=0) if fmt.gzipped else sink
    if fmt.file_type == "JSONL":
        return _JsonlEncoder(out)
    return _CsvEncoder(out, schema)


class _ParquetEncoder:
    def __init__(self, sink: HashingSink, schema: pa.Schema, row_group_rows: int) -> None:
        self._writer = pq.ParquetWriter(sink, schema, compression="zstd")
        self._rows = row_group_rows

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch, row_group_size=self._rows)

    def close(self) -> None:
        self._writer.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot encode {type(value).__name__}")


class _JsonlEncoder:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, batch: pa.RecordBatch) -> None:
        rows = batch.to_pylist(maps_as_pydicts="strict")
        lines = [orjson.dumps(row, default=_json_default, option=orjson.OPT_UTC_Z) for row in rows]
        self._out.write(b"\n".join(lines) + b"\n")

    def close(self) -> None:
        if isinstance(self._out, gzip.GzipFile):
            self._out.close()


class _CsvEncoder:
    """CSV has no maps or lists: those columns are written as JSON text."""

    def __init__(self, out: BinaryIO, schema: pa.Schema) -> None:
        self._out = out
        self._nested = [i for i, f in enumerate(schema) if pa.types.is_nested(f.type)]
        self._writer: pacsv.CSVWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        for i in self._nested:
            values = batch.column(i).to_pylist(maps_as_pydicts="strict")
            text = pa.array(
                [None if v is None else orjson.dumps(v, default=_json_default).decode() for v in values], pa.string()
            )
            batch = batch.set_column(i, batch.schema.field(i).name, text)
        if self._writer is None:
            self._writer = pacsv.CSVWriter(self._out, batch.schema)
        self._writer.write_batch(batch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if isinstance(self._out, gzip.GzipFile):
            self._out.close()


def read_id_versions(data: bytes, file_type: str, gzipped: bool) -> tuple[list[str], list[int]]:
    """(ids, event_ts in epoch ms) of an export file, for verification."""
    if gzipped:
        data = gzip.decompress(data)
    if file_type == "PARQUET":
        table = pq.read_table(io.BytesIO(data), columns=["id", "event_ts"])
    elif file_type == "CSV":
        table = pacsv.read_csv(
            io.BytesIO(data),
            convert_options=pacsv.ConvertOptions(
                include_columns=["id", "event_ts"], column_types={"id": pa.string(), "event_ts": pa.string()}
            ),
        )
    else:
        rows = [orjson.loads(line) for line in data.splitlines() if line]
        table = pa.table({"id": [r["id"] for r in rows], "event_ts": [r["event_ts"] for r in rows]})
    stamps = table.column("event_ts")
    if pa.types.is_timestamp(stamps.type):
        millis = pc.cast(pc.cast(stamps, pa.timestamp("ms", tz="UTC")), pa.int64()).to_pylist()
    else:  # text formats: ISO 8601 as written by orjson or Arrow's CSV writer
        millis = [_text_ms(str(value)) for value in stamps.to_pylist()]
    return table.column("id").to_pylist(), millis


def _text_ms(text: str) -> int:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return round(parsed.timestamp() * 1000)
