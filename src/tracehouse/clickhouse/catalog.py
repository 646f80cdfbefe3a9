"""The ClickHouse tables as the migrations create them: columns, types, sort keys, version columns.

This is the one place a table's shape is stated in Python. The ingestion writer derives its Arrow
schemas and verification keys from it, the export its column lists and read order; the test suite
compares it with `system.columns` and `system.tables` after migrating, so a migration that changes
a table without changing this file (or the reverse) fails.

Types are spelled as `system.columns` spells them (`Decimal64(12)` is `Decimal(18, 12)`), sort keys
as `system.tables.sorting_key` does. Each column's value domain (what a Python value must satisfy
to be stored exactly) is derived from its type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

import pyarrow as pa


class Kind(StrEnum):
    STRING = "string"
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    DECIMAL = "decimal"
    DATETIME = "datetime"
    ARRAY = "array"
    MAP = "map"


@dataclass(frozen=True)
class ValueDomain:
    """The values a column can hold, in Python terms. Bounds are inclusive; None means unbounded."""

    kind: Kind
    nullable: bool = False
    minimum: int | Decimal | datetime | None = None
    maximum: int | Decimal | datetime | None = None
    scale: int | None = None  # digits kept after the (decimal or seconds) point: Decimal and DateTime64
    key: ValueDomain | None = None  # a map's keys
    element: ValueDomain | None = None  # an array's elements, a map's values


@dataclass(frozen=True)
class Column:
    name: str
    ch_type: str
    domain: ValueDomain = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Derived once, when the catalog is built: validation on the ingestion path only reads it.
        object.__setattr__(self, "domain", value_domain(self.ch_type))


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    sorting_key: tuple[str, ...]  # expressions, in order
    version_column: str  # the ReplacingMergeTree version: the newest row per key wins
    is_deleted_column: str | None  # the engine's is-deleted flag, when it has one

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name!r}")

    def columns_named(self, names: Iterable[str]) -> tuple[Column, ...]:
        """The named columns in the order given; an unknown name raises KeyError."""
        return tuple(self.column(name) for name in names)

    def writable_domain(self, name: str) -> ValueDomain:
        """The values of a column that can be written *and found again*: a time column in the sort key as
        `toDate(column)` must also fit ClickHouse's `Date` (1970-01-01 .. 2149-06-06), or the row lands
        under a clamped key and its verification (which looks rows up by key) never finds it."""
        domain = self.column(name).domain
        if f"toDate({name})" not in self.sorting_key:
            return domain
        date = value_domain("Date")
        assert isinstance(domain.minimum, datetime) and isinstance(date.minimum, datetime)
        assert isinstance(domain.maximum, datetime) and isinstance(date.maximum, datetime)
        return replace(domain, minimum=max(domain.minimum, date.minimum), maximum=min(domain.maximum, date.maximum))


# --- ClickHouse types ------------------------------------------------------------------------

_TYPE = re.compile(r"(\w+)(?:\((.*)\))?", re.DOTALL)
_INTEGER = re.compile(r"(U?)Int(8|16|32|64)")

# ClickHouse documents DateTime64's range as 1900-01-01 .. 2299-12-31 and does not reject values
# outside it reliably, so callers must check these bounds themselves.
_DATETIME64_FIRST = datetime(1900, 1, 1, tzinfo=UTC)
_DATETIME64_LAST_SECOND = datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC)
_DATE_FIRST = datetime(1970, 1, 1, tzinfo=UTC)
_DATE_LAST = datetime(2149, 6, 6, 23, 59, 59, 999000, tzinfo=UTC)  # the last instant whose day a Date holds

_ARROW_SCALARS: dict[str, pa.DataType] = {
    "String": pa.string(),
    "Bool": pa.bool_(),
    "Float64": pa.float64(),
    "UInt8": pa.uint8(),
    "UInt16": pa.uint16(),
    "UInt64": pa.uint64(),
    "Int64": pa.int64(),
}
_ARROW_TIME_UNITS = {0: "s", 3: "ms", 6: "us", 9: "ns"}


def split_type(ch_type: str) -> tuple[str, list[str]]:
    """`Map(LowCardinality(String), UInt64)` -> ("Map", ["LowCardinality(String)", "UInt64"])."""
    match = _TYPE.fullmatch(ch_type.strip())
    if match is None:
        raise ValueError(f"not a ClickHouse type: {ch_type!r}")
    head, inner = match.group(1), match.group(2)
    if inner is None:
        return head, []
    args, depth, start = [], 0, 0
    for i, char in enumerate(inner):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            args.append(inner[start:i].strip())
            start = i + 1
    args.append(inner[start:].strip())
    return head, args


def value_domain(ch_type: str) -> ValueDomain:
    head, args = split_type(ch_type)
    if head == "Nullable":
        return replace(value_domain(args[0]), nullable=True)
    if head == "LowCardinality":  # a storage choice: same values as the inner type
        return value_domain(args[0])
    if head == "String":
        return ValueDomain(Kind.STRING)
    if head == "Bool":
        return ValueDomain(Kind.BOOL)
    if head == "Float64":
        return ValueDomain(Kind.FLOAT)
    if integer := _INTEGER.fullmatch(head):
        return _integer_domain(signed=not integer.group(1), bits=int(integer.group(2)))
    if head == "Decimal":
        return _decimal_domain(precision=int(args[0]), scale=int(args[1]))
    if head == "DateTime64":
        return _datetime64_domain(precision=int(args[0]))
    if head == "Date":  # days since 1970-01-01 in a UInt16
        return ValueDomain(Kind.DATETIME, minimum=_DATE_FIRST, maximum=_DATE_LAST, scale=0)
    if head == "Array":
        return ValueDomain(Kind.ARRAY, element=value_domain(args[0]))
    if head == "Map":
        return ValueDomain(Kind.MAP, key=value_domain(args[0]), element=value_domain(args[1]))
    raise ValueError(f"no value domain for ClickHouse type {ch_type!r}")


def _integer_domain(*, signed: bool, bits: int) -> ValueDomain:
    if signed:
        return ValueDomain(Kind.INT, minimum=-(2 ** (bits - 1)), maximum=2 ** (bits - 1) - 1)
    return ValueDomain(Kind.INT, minimum=0, maximum=2**bits - 1)


def _decimal_domain(*, precision: int, scale: int) -> ValueDomain:
    largest = Decimal(10**precision - 1).scaleb(-scale)  # Decimal(18, 12): 999999.999999999999
    return ValueDomain(Kind.DECIMAL, minimum=-largest, maximum=largest, scale=scale)


def _datetime64_domain(*, precision: int) -> ValueDomain:
    # Python datetimes stop at microseconds, so the last representable instant is taken at that grain.
    tick_us = 10 ** (6 - min(precision, 6))
    latest = _DATETIME64_LAST_SECOND.replace(microsecond=1_000_000 - tick_us)
    return ValueDomain(Kind.DATETIME, minimum=_DATETIME64_FIRST, maximum=latest, scale=precision)


def arrow_type(ch_type: str) -> pa.DataType:
    """The Arrow type that inserts into (and reads back from) a column of `ch_type` unchanged."""
    head, args = split_type(ch_type)
    if head in ("Nullable", "LowCardinality"):  # Arrow fields are nullable; dictionary encoding is ClickHouse's
        return arrow_type(args[0])
    if head in _ARROW_SCALARS:
        return _ARROW_SCALARS[head]
    if head == "Decimal":
        return pa.decimal128(int(args[0]), int(args[1]))
    if head == "DateTime64":
        # DateTime64 stores UTC epoch ticks; a column's time zone only changes how it is rendered.
        return pa.timestamp(_ARROW_TIME_UNITS[int(args[0])], tz="UTC")
    if head == "Array":
        return pa.list_(arrow_type(args[0]))
    if head == "Map":
        return pa.map_(arrow_type(args[0]), arrow_type(args[1]))
    raise ValueError(f"no Arrow type for ClickHouse type {ch_type!r}")


# --- the tables ------------------------------------------------------------------------------


def _columns(*pairs: tuple[str, str]) -> tuple[Column, ...]:
    return tuple(Column(name, ch_type) for name, ch_type in pairs)


_STR = "String"
_NSTR = "Nullable(String)"
_LC = "LowCardinality(String)"
_TS = "DateTime64(3)"
_STR_MAP = "Map(LowCardinality(String), String)"
_DEC = "Decimal(18, 12)"

TRACES = Table(
    "traces",
    _columns(
        ("id", _STR),
        ("timestamp", _TS),
        ("name", _STR),
        ("user_id", _NSTR),
        ("metadata", _STR_MAP),
        ("release", _NSTR),
        ("version", _NSTR),
        ("project_id", _STR),
        ("environment", _LC),
        ("public", "Bool"),
        ("bookmarked", "Bool"),
        ("tags", "Array(String)"),
        ("input", _NSTR),
        ("output", _NSTR),
        ("session_id", _NSTR),
        ("created_at", _TS),
        ("updated_at", _TS),
        ("event_ts", _TS),
        ("is_deleted", "UInt8"),
    ),
    sorting_key=("project_id", "toDate(timestamp)", "id"),
    version_column="event_ts",
    is_deleted_column="is_deleted",
)

OBSERVATIONS = Table(
    "observations",
    _columns(
        ("id", _STR),
        ("trace_id", _STR),
        ("project_id", _STR),
        ("environment", _LC),
        ("type", _LC),
        ("parent_observation_id", _NSTR),
        ("start_time", _TS),
        ("end_time", f"Nullable({_TS})"),
        ("name", _STR),
        ("metadata", _STR_MAP),
        ("level", _LC),
        ("status_message", _NSTR),
        ("version", _NSTR),
        ("input", _NSTR),
        ("output", _NSTR),
        ("provided_model_name", _NSTR),
        ("internal_model_id", _NSTR),
        ("model_parameters", _NSTR),
        ("provided_usage_details", "Map(LowCardinality(String), UInt64)"),
        ("usage_details", "Map(LowCardinality(String), UInt64)"),
        ("provided_cost_details", f"Map(LowCardinality(String), {_DEC})"),
        ("cost_details", f"Map(LowCardinality(String), {_DEC})"),
        ("total_cost", f"Nullable({_DEC})"),
        ("completion_start_time", f"Nullable({_TS})"),
        ("prompt_id", _NSTR),
        ("prompt_name", _NSTR),
        ("prompt_version", "Nullable(UInt16)"),
        ("created_at", _TS),
        ("updated_at", _TS),
        ("event_ts", _TS),
        ("is_deleted", "UInt8"),
        ("usage_pricing_tier_id", _NSTR),
        ("usage_pricing_tier_name", _NSTR),
        ("tool_definitions", "Map(String, String)"),
        ("tool_calls", "Array(String)"),
        ("tool_call_names", "Array(String)"),
    ),
    sorting_key=("project_id", "type", "toDate(start_time)", "id"),
    version_column="event_ts",
    is_deleted_column="is_deleted",
)

SCORES = Table(
    "scores",
    _columns(
        ("id", _STR),
        ("timestamp", _TS),
        ("project_id", _STR),
        ("environment", _LC),
        ("trace_id", _NSTR),
        ("session_id", _NSTR),
        ("dataset_run_id", _NSTR),
        ("observation_id", _NSTR),
        ("name", _STR),
        ("value", "Float64"),
        ("source", _STR),
        ("comment", _NSTR),
        ("metadata", _STR_MAP),
        ("author_user_id", _NSTR),
        ("config_id", _NSTR),
        ("data_type", _STR),
        ("string_value", _NSTR),
        ("queue_id", _NSTR),
        ("created_at", _TS),
        ("updated_at", _TS),
        ("event_ts", _TS),
        ("is_deleted", "UInt8"),
        ("execution_trace_id", _NSTR),
        ("long_string_value", _STR),
        ("ingestion_api_key", _STR),
        ("ingestion_sdk_name", _LC),
        ("ingestion_sdk_version", _LC),
    ),
    sorting_key=("project_id", "toDate(timestamp)", "name", "id"),
    version_column="event_ts",
    is_deleted_column="is_deleted",
)

INGESTION_EVENT_LOG = Table(
    "ingestion_event_log",
    _columns(
        ("project_id", _STR),
        ("entity", _LC),
        ("entity_id", _STR),
        ("event_id", _STR),
        ("event_type", _LC),
        ("event_time", _TS),
        ("body", _STR),
        ("batch_key", _STR),
        ("received_at", _TS),
        ("event_ts", _TS),
    ),
    sorting_key=("project_id", "entity", "entity_id", "event_id"),
    version_column="event_ts",
    is_deleted_column=None,  # an event is never deleted, only superseded by its retry
)

BLOB_STORAGE_FILE_LOG = Table(
    "blob_storage_file_log",
    _columns(
        ("id", _STR),
        ("project_id", _STR),
        ("entity_type", _STR),
        ("entity_id", _STR),
        ("event_id", _STR),
        ("bucket_name", _STR),
        ("bucket_path", _STR),
        ("created_at", _TS),
        ("updated_at", _TS),
        ("event_ts", _TS),
        ("is_deleted", "UInt8"),
    ),
    sorting_key=("project_id", "entity_type", "entity_id", "event_id"),
    version_column="event_ts",
    is_deleted_column="is_deleted",
)

TABLES: Mapping[str, Table] = {
    t.name: t for t in (TRACES, OBSERVATIONS, SCORES, INGESTION_EVENT_LOG, BLOB_STORAGE_FILE_LOG)
}


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no catalogued ClickHouse table {name!r}") from None
