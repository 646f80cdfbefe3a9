"""A batch export's `filter` and `orderBy` -> the read API's query object for its table.

`filter` holds the list route's own parameters, and each is validated and turned into the query
object by the same functions the route uses (`tracehouse.queries.api`), so an export selects exactly
the rows that route returns for those parameters. Parameters that page or shape a response (`page`,
`limit`, `fields`, `cursor`) are not filters: they, and any name the route does not take, are a 400
naming `filter.<name>`. The worker runs this again on the stored request before it reads a row.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tracehouse.api_common import BadParameter
from tracehouse.batch_export.models import TableName
from tracehouse.enums import ObservationLevel, ObservationType, ScoreDataType, ScoreSource
from tracehouse.queries.api import (
    _observation_query,
    _score_query,
    _split,
    _time_range,
    _trace_order,
)
from tracehouse.queries.filters import parse_filter
from tracehouse.queries.models import ObservationQuery, ScoreQuery, SessionQuery, TraceOrder, TraceQuery
from tracehouse.queries.sql import TRACE_COLUMNS

Query = TraceQuery | ObservationQuery | ScoreQuery | SessionQuery
Strings = list[str] | str | None  # repeated or comma-separated, as in a query string
Conditions = str | list[Any] | None  # the JSON text, or the array itself


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    filter: Conditions = None

    def conditions(self) -> str | None:
        return json.dumps(self.filter) if isinstance(self.filter, list) else self.filter


class TraceParameters(_Parameters):
    """GET /api/public/traces."""

    user_id: str | None = Field(None, alias="userId")
    name: str | None = None
    session_id: str | None = Field(None, alias="sessionId")
    from_timestamp: datetime | None = Field(None, alias="fromTimestamp")
    to_timestamp: datetime | None = Field(None, alias="toTimestamp")
    tags: Strings = None
    version: str | None = None
    release: str | None = None
    environment: Strings = None


class ObservationParameters(_Parameters):
    """GET /api/public/observations."""

    name: str | None = None
    type: ObservationType | None = None
    trace_id: str | None = Field(None, alias="traceId")
    level: ObservationLevel | None = None
    parent_observation_id: str | None = Field(None, alias="parentObservationId")
    environment: Strings = None
    from_start_time: datetime | None = Field(None, alias="fromStartTime")
    to_start_time: datetime | None = Field(None, alias="toStartTime")
    version: str | None = None
    user_id: str | None = Field(None, alias="userId")


class ScoreParameters(_Parameters):
    """GET /api/public/v2/scores."""

    name: str | None = None
    source: ScoreSource | None = None
    data_type: ScoreDataType | None = Field(None, alias="dataType")
    trace_id: str | None = Field(None, alias="traceId")
    session_id: str | None = Field(None, alias="sessionId")
    observation_id: str | None = Field(None, alias="observationId")
    config_id: str | None = Field(None, alias="configId")
    queue_id: str | None = Field(None, alias="queueId")
    dataset_run_id: str | None = Field(None, alias="datasetRunId")
    score_ids: str | None = Field(None, alias="scoreIds")
    user_id: str | None = Field(None, alias="userId")
    trace_tags: Strings = Field(None, alias="traceTags")
    environment: Strings = None
    from_timestamp: datetime | None = Field(None, alias="fromTimestamp")
    to_timestamp: datetime | None = Field(None, alias="toTimestamp")
    value: float | None = None
    operator: str | None = None


class SessionParameters(_Parameters):
    """GET /api/public/sessions (which takes no `filter` conditions)."""

    from_timestamp: datetime | None = Field(None, alias="fromTimestamp")
    to_timestamp: datetime | None = Field(None, alias="toTimestamp")
    environment: Strings = None


_PARAMETERS: dict[TableName, type[_Parameters]] = {
    TableName.TRACES: TraceParameters,
    TableName.OBSERVATIONS: ObservationParameters,
    TableName.SCORES: ScoreParameters,
    TableName.SESSIONS: SessionParameters,
}
_NOT_FILTERS = {"page", "limit", "cursor", "fields"}


def parse_query(table: TableName, given: dict[str, Any], order_by: str | None) -> tuple[Query, TraceOrder | None]:
    """The query object (and, for traces, the order) the export runs; BadParameter names what is wrong."""
    parameters = _parameters(table, given)
    if table is not TableName.TRACES and order_by is not None:
        raise BadParameter("orderBy", f"only traces take orderBy; {table} are exported in their list's order")
    try:
        query = _build(parameters)
    except BadParameter as exc:
        raise BadParameter(f"filter.{exc.parameter}", exc.message.partition(": ")[2] or exc.message) from None
    return query, _trace_order(order_by) if table is TableName.TRACES else None


def _parameters(table: TableName, given: dict[str, Any]) -> _Parameters:
    model = _PARAMETERS[table]
    for name in given:
        if name in _NOT_FILTERS:
            raise BadParameter(f"filter.{name}", "pages or shapes a list response; an export holds every matching row")
    if table is TableName.SESSIONS and given.get("filter") not in (None, "", []):
        raise BadParameter("filter.filter", "sessions take no filter conditions (neither does their list route)")
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            takes = ", ".join(sorted(f.alias or n for n, f in model.model_fields.items()))
            raise BadParameter(
                f"filter.{location}", f"not a parameter of the {table} list (it takes {takes})"
            ) from None
        raise BadParameter(f"filter.{location}", str(first["msg"])) from None


def _build(p: _Parameters) -> Query:
    if isinstance(p, TraceParameters):
        return TraceQuery(
            user_id=p.user_id,
            name=p.name,
            session_id=p.session_id,
            version=p.version,
            release=p.release,
            tags=_split(p.tags),
            environments=_split(p.environment),
            timestamp=_time_range(p.from_timestamp, p.to_timestamp, ("fromTimestamp", "toTimestamp")),
            filters=parse_filter(p.conditions(), TRACE_COLUMNS),
        )
    if isinstance(p, ObservationParameters):
        return _observation_query(
            name=p.name,
            type=p.type,
            trace_id=p.trace_id,
            level=p.level,
            parent_observation_id=p.parent_observation_id,
            environment=list(_split(p.environment)) or None,
            from_start_time=p.from_start_time,
            to_start_time=p.to_start_time,
            version=p.version,
            user_id=p.user_id,
            filter=p.conditions(),
        )
    if isinstance(p, ScoreParameters):
        return _score_query(
            name=p.name,
            source=p.source,
            data_type=p.data_type,
            trace_id=p.trace_id,
            session_id=p.session_id,
            observation_id=p.observation_id,
            config_id=p.config_id,
            queue_id=p.queue_id,
            dataset_run_id=p.dataset_run_id,
            score_ids=p.score_ids,
            user_id=p.user_id,
            trace_tags=list(_split(p.trace_tags)) or None,
            environment=list(_split(p.environment)) or None,
            from_timestamp=p.from_timestamp,
            to_timestamp=p.to_timestamp,
            value=p.value,
            operator=p.operator,
            fields=None,
            filter=p.conditions(),
        )
    assert isinstance(p, SessionParameters)
    return SessionQuery(
        environments=_split(p.environment),
        created_at=_time_range(p.from_timestamp, p.to_timestamp, ("fromTimestamp", "toTimestamp")),
    )
