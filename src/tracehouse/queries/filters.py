"""Langfuse's `filter` query parameter: a JSON array of conditions, validated against one route's columns.

Each condition is `{"type", "column", "operator", "value", "key"?}` (Langfuse's `singleFilter`). A
condition that cannot be applied exactly as written is a 400 naming the parameter (`filter`), the
condition's position and its column: an unknown column, a filter type the column does not take, an
operator the type does not have, a value of the wrong type, a missing or superfluous key, a field
Langfuse does not define. Nothing is dropped. The SQL for a valid condition is built in `sql.py`.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from tracehouse.api_common import BadParameter
from tracehouse.queries.models import FILTER_OPERATORS, Conditions, FilterCondition, FilterValue
from tracehouse.queries.sql import FilterColumns
from tracehouse.timefmt import within_datetime64

MAX_CONDITIONS = 50
_FIELDS = frozenset({"type", "column", "operator", "value", "key"})
_KEYED = frozenset({"stringObject", "numberObject", "categoryOptions"})
# Langfuse has these, tracehouse cannot apply them: say why rather than "unknown".
_UNSUPPORTED_TYPES = {
    "positionInTrace": "needs the events table's trace positions, which tracehouse does not keep",
    "booleanObject": "is not supported by tracehouse",
}
_UNSUPPORTED_OPERATORS = {
    "matches": "needs Langfuse's events-table text index; use 'contains'",
}
# Langfuse's legacy spelling of key presence (coerceLegacyEmptyMetadataFilters).
_LEGACY_PRESENCE = frozenset({"contains", "starts with", "ends with"})


def parse_filter(text: str | None, columns: FilterColumns) -> Conditions:
    if text is None or not text.strip():
        return ()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise BadParameter("filter", "is not valid JSON") from None
    if not isinstance(data, list):
        raise BadParameter("filter", "expected a JSON array of filter conditions")
    if len(data) > MAX_CONDITIONS:
        raise BadParameter("filter", f"at most {MAX_CONDITIONS} conditions")
    return tuple(_condition(index, item, columns) for index, item in enumerate(data))


def _fail(index: int, column: Any, message: str) -> BadParameter:
    where = f"condition {index}" + (f" (column '{column}')" if isinstance(column, str) else "")
    return BadParameter("filter", f"{where}: {message}")


def _condition(index: int, item: Any, columns: FilterColumns) -> FilterCondition:
    if not isinstance(item, dict):
        raise _fail(index, None, "expected an object with type, column, operator and value")
    name = item.get("column")
    if extra := sorted(set(item) - _FIELDS):
        raise _fail(index, name, f"unknown field(s) {', '.join(extra)}")
    if not isinstance(name, str):
        raise _fail(index, None, "column: expected a string")
    column = columns.find(name)
    if column is None:
        raise _fail(index, name, f"unknown column; this endpoint filters on {', '.join(columns.ids)}")
    if column.refused is not None:
        raise _fail(index, name, f"cannot be filtered: {column.refused}")
    kind = item.get("type")
    if kind in _UNSUPPORTED_TYPES:
        raise _fail(index, name, f"filter type '{kind}' {_UNSUPPORTED_TYPES[kind]}")
    if kind not in FILTER_OPERATORS:
        raise _fail(index, name, f"type: expected one of {', '.join(FILTER_OPERATORS)}")
    if kind not in column.accepts:
        raise _fail(index, name, f"is a {column.type} column; it takes filter types {', '.join(column.accepts)}")
    operator = item.get("operator")
    if operator in _UNSUPPORTED_OPERATORS:
        raise _fail(index, name, f"operator '{operator}' {_UNSUPPORTED_OPERATORS[operator]}")
    if operator not in FILTER_OPERATORS[kind]:
        raise _fail(index, name, f"operator: a {kind} filter takes {', '.join(FILTER_OPERATORS[kind])}")
    key = _key(index, name, kind, item)
    value = _value(index, name, kind, operator, item)
    if kind == "stringObject" and operator in _LEGACY_PRESENCE and value == "":
        operator = "is set"
    return FilterCondition(column=column.id, type=kind, operator=operator, value=value, key=key)


def _key(index: int, name: str, kind: str, item: dict[str, Any]) -> str | None:
    key = item.get("key")
    if kind not in _KEYED:
        if key is not None:
            raise _fail(index, name, f"key: a {kind} filter takes no key")
        return None
    if not isinstance(key, str) or not key:
        raise _fail(index, name, f"key: a {kind} filter needs the key (a non-empty string)")
    return key


def _value(index: int, name: str, kind: str, operator: str, item: dict[str, Any]) -> FilterValue:
    present, value = "value" in item, item.get("value")

    def wrong(expected: str) -> BadParameter:
        return _fail(index, name, f"value: a {kind} filter takes {expected}, got {json.dumps(value)[:80]}")

    if kind == "null":
        if value not in (None, ""):
            raise wrong('no value (or "")')
        return None
    if kind in ("string", "stringObject"):
        valueless = operator in ("is not empty", "is set", "is not set")
        if valueless and not present:
            return None
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if kind in ("number", "numberObject"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise wrong("a finite number")
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if kind == "datetime":
        return _moment(value, wrong)
    # stringOptions, categoryOptions, arrayOptions
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise wrong("an array of strings")
    if not value and (kind == "stringOptions" or (kind == "arrayOptions" and operator == "any of")):
        raise wrong("a non-empty array of strings")
    return tuple(value)


def _moment(value: Any, wrong: Any) -> datetime:
    expected = "an ISO 8601 date-time with a time zone (e.g. 2026-01-01T00:00:00Z)"
    if not isinstance(value, str):
        raise wrong(expected)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise wrong(expected) from None
    # ClickHouse's DateTime64 covers 1900-2299.
    if moment.tzinfo is None or not within_datetime64(moment):
        raise wrong(expected + " between 1900 and 2299")
    return moment


def describe(columns: FilterColumns) -> str:
    """The grammar of one route's `filter`, for the OpenAPI document."""
    by_type: dict[str, list[str]] = {}
    for column in columns.by_id.values():
        if column.refused is None:
            by_type.setdefault(column.type, []).append(column.id)
    listed = "; ".join(f"{kind}: {', '.join(ids)}" for kind, ids in by_type.items())
    return (
        "JSON array of Langfuse filter conditions {type, column, operator, value, key?}; all must hold. "
        f"Columns by type: {listed}. A condition on a column overrides the simple parameter on that column. "
        "An unknown column, a type the column does not take, an operator or value that does not fit is a 400."
    )
