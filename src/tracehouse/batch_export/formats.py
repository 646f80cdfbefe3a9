"""Arrow batches of an export -> one file: CSV, JSON (one array), JSONL or Parquet, gzip optional.

Blocking; runs in the export's worker thread. Memory is bounded by one batch (Parquet: one row
group) whatever the export's size: batches are encoded as they arrive and never collected.

Values are the read API's: in JSON and JSONL each row is the API's item (times as
2026-11-01T12:00:00.000Z, input/output and metadata values parsed from their stored JSON text); in
CSV times read the same, input/output are the stored text, and lists and maps are JSON text;
Parquet keeps the typed columns (UTC timestamps, maps, lists) and the stored text.
An export with no rows is a valid empty file: `[]`, a header line, no lines, or a Parquet file
with the schema and no rows.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tracehouse.batch_export.models import FileFormat
from tracehouse.batch_export.sources import Column, Kind
from tracehouse.export.formats import HashingSink

API_TIME = "%Y-%m-%dT%H:%M:%SZ"  # Arrow's %S carries the unit's fraction: 12:00:05.123


class Encoder(Protocol):
    def write(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None:
        """Finish the file (footer, closing bracket, gzip trailer)."""


def open_encoder(
    fmt: FileFormat,
    gzipped: bool,
    target: HashingSink,
    columns: tuple[Column, ...],
    *,
    row_group_rows: int,
    empty_schema: Callable[[], pa.Schema],
) -> Encoder:
    """An encoder writing into `target` (the blob writer). `columns` name and type the output;
    `empty_schema` gives the Parquet schema when no row arrives to take it from."""
    if fmt is FileFormat.PARQUET:
        return ParquetEncoder(target, row_group_rows, empty_schema)
    out: Any = gzip.GzipFile(fileobj=target, mode="wb", mtime=0, compresslevel=6) if gzipped else target
    if fmt is FileFormat.CSV:
        return CsvEncoder(out, columns)
    return JsonEncoder(out, columns, lines=fmt is FileFormat.JSONL)


def named(batch: pa.RecordBatch, columns: tuple[Column, ...]) -> pa.RecordBatch:
    """The query's c0, c1, ... under the API's field names."""
    return batch.rename_columns([c.name for c in columns])


# --- values as the read API gives them ------------------------------------------------------
def parse_json(value: Any) -> Any:
    """The API's parse: JSON text becomes its value, anything else stays as it is."""
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses and Python's json takes (NaN, integers past 64 bits)
            return json.loads(value)
        except ValueError:
            return value


def _times_as_text(batch: pa.RecordBatch, columns: tuple[Column, ...]) -> pa.RecordBatch:
    for i, column in enumerate(columns):
        if column.kind is Kind.TIME:
            batch = batch.set_column(i, column.name, pc.strftime(batch.column(i), format=API_TIME))
    return batch


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class JsonEncoder:
    """JSONL: one API item per line. JSON: one array of them."""

    def __init__(self, out: BinaryIO, columns: tuple[Column, ...], *, lines: bool) -> None:
        self._out = out
        self._columns = columns
        self._lines = lines
        self._parsed = [c.name for c in columns if c.kind is Kind.JSON]
        self._metadata = [c.name for c in columns if c.kind is Kind.METADATA]
        self._first = True

    def write(self, batch: pa.RecordBatch) -> None:
        rows = _times_as_text(batch, self._columns).to_pylist(maps_as_pydicts="strict")
        for row in rows:
            for name in self._parsed:
                row[name] = parse_json(row[name])
            for name in self._metadata:
                row[name] = {key: parse_json(value) for key, value in row[name].items()}
        if not rows:
            return
        if self._lines:
            self._out.write(b"\n".join(orjson.dumps(row) for row in rows) + b"\n")
        else:
            self._out.write((b"[\n" if self._first else b",\n") + b",\n".join(orjson.dumps(row) for row in rows))
        self._first = False

    def close(self) -> None:
        if not self._lines:
            self._out.write(b"[]\n" if self._first else b"\n]\n")
        if isinstance(self._out, gzip.GzipFile):
            self._out.close()


class CsvEncoder:
    """One header line, then one line per row; lists and maps as JSON text (CSV has neither)."""

    def __init__(self, out: BinaryIO, columns: tuple[Column, ...]) -> None:
        self._out = out
        self._columns = columns
        self._writer: pacsv.CSVWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        batch = _times_as_text(batch, self._columns)
        for i, column in enumerate(self._columns):
            field = batch.schema.field(i)
            if column.kind is Kind.METADATA:
                text = self._text(batch.column(i), lambda v: {key: parse_json(value) for key, value in v.items()})
                batch = batch.set_column(i, field.name, text)
            elif pa.types.is_nested(field.type):
                batch = batch.set_column(i, field.name, self._text(batch.column(i), lambda v: v))
        if self._writer is None:
            self._writer = pacsv.CSVWriter(self._out, batch.schema)
        self._writer.write_batch(batch)

    @staticmethod
    def _text(values: pa.Array, present: Callable[[Any], Any]) -> pa.Array:
        return pa.array(
            [None if v is None else _dumps(present(v)) for v in values.to_pylist(maps_as_pydicts="strict")],
            pa.string(),
        )

    def close(self) -> None:
        if self._writer is None:  # no rows: the header alone
            header = pa.schema([(c.name, pa.string()) for c in self._columns])
            self._writer = pacsv.CSVWriter(self._out, header)
        self._writer.close()
        if isinstance(self._out, gzip.GzipFile):
            self._out.close()


class ParquetEncoder:
    """zstd pages; batches are gathered into row groups of `row_group_rows`."""

    def __init__(self, target: HashingSink, row_group_rows: int, empty_schema: Callable[[], pa.Schema]) -> None:
        self._target = target
        self._rows = row_group_rows
        self._empty_schema = empty_schema
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self._rows:
            self._flush()

    def _flush(self) -> None:
        table = pa.Table.from_batches(self._pending)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._target, table.schema, compression="zstd")
        self._writer.write_table(table, row_group_size=max(self._rows, table.num_rows))
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        if self._pending:
            self._flush()
        if self._writer is None:  # no rows: a file with the schema and no row group
            self._writer = pq.ParquetWriter(self._target, self._empty_schema(), compression="zstd")
        self._writer.close()
