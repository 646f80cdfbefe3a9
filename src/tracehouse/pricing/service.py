"""The models API's logic and SQL, and the cached per-project view ingestion and reads price with.

Writes follow Langfuse's public API (`publicApiModelService.ts`): a project's models are its own to
create, replace and delete; default models (from genai-prices, in memory) are visible to every
project and read-only. Ingestion asks `PricingService.for_project` once per job: the project's models
come from the database at most once per `ttl_s` (10 s, Langfuse's local model-match cache) and are
then matched in memory, so no row costs a database call. A write through this process's service
drops its cached view at once; other processes see it within `ttl_s`.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import regex
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from tracehouse.api_common import BadParameter, BadRequest, NotFound
from tracehouse.metadata import MetadataDB
from tracehouse.pricing.defaults import DefaultModels, default_models
from tracehouse.pricing.matching import ProjectModels
from tracehouse.pricing.models import (
    AttributeRule,
    CreateModelRequest,
    MetaResponse,
    Model,
    ModelDef,
    ModelPrice,
    ModelPrices,
    ModelUsageUnit,
    PaginatedModels,
    PricingTier,
    PricingTierAttributeCondition,
    PricingTierAttributeSource,
    PricingTierInput,
    PricingTierOperator,
    PricingTierUsageCondition,
    TierDef,
    UsageRule,
    compile_search,
)
from tracehouse.pricing.tables import ModelRow, PriceRow, PricingTierRow

DEFAULT_TTL_S = 10.0
NOT_FOUND = "No model with this id found."
NOT_DELETABLE = (
    "No model with this id found. Note: You cannot delete built-in models, "
    "override them with a model with the same name."
)


# --- definitions from rows and requests -----------------------------------------------------------


def _rules(conditions: Iterable[dict[str, Any]]) -> tuple[UsageRule | AttributeRule, ...]:
    rules: list[UsageRule | AttributeRule] = []
    for condition in conditions:
        if "source" in condition:
            rules.append(
                AttributeRule(
                    PricingTierAttributeSource(condition["source"]), condition["key"], frozenset(condition["values"])
                )
            )
        else:
            pattern = compile_search(condition["usageDetailPattern"], ignore_case=not condition.get("caseSensitive"))
            rules.append(UsageRule(pattern, PricingTierOperator(condition["operator"]), float(condition["value"])))
    return tuple(rules)


def model_def(row: ModelRow) -> ModelDef:
    tiers = tuple(
        TierDef(
            id=tier.id,
            name=tier.name,
            is_default=tier.is_default,
            priority=tier.priority,
            conditions=tuple(tier.conditions),
            rules=_rules(tier.conditions),
            prices={price.usage_type: Decimal(price.price) for price in tier.prices},
        )
        for tier in sorted(row.tiers, key=lambda t: t.priority)
    )
    return ModelDef(
        id=row.id,
        project_id=row.project_id,
        model_name=row.model_name,
        match_pattern=row.match_pattern,
        start_date=row.start_date,
        unit=row.unit,
        tokenizer_id=row.tokenizer_id,
        tokenizer_config=row.tokenizer_config,
        created_at=row.created_at,
        tiers=tiers,
    )


def _price(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def api_model(model: ModelDef) -> Model:
    """Langfuse's `prismaToApiModelDefinition`: flat prices from the default tier."""
    default = model.default_tier
    flat = default.prices if default is not None else {}
    return Model(
        id=model.id,
        model_name=model.model_name,
        match_pattern=model.match_pattern,
        start_date=model.start_date,
        input_price=_price(flat.get("input")),
        output_price=_price(flat.get("output")),
        total_price=_price(flat.get("total")),
        unit=None if model.unit is None else ModelUsageUnit(model.unit),
        tokenizer_id=model.tokenizer_id,
        tokenizer_config=model.tokenizer_config,
        is_langfuse_managed=model.project_id is None,
        created_at=model.created_at,
        prices={key: ModelPrice(price=float(value)) for key, value in flat.items()},
        pricing_tiers=[
            PricingTier(
                id=tier.id,
                name=tier.name,
                is_default=tier.is_default,
                priority=tier.priority,
                conditions=[_api_condition(c) for c in tier.conditions],
                prices={key: float(value) for key, value in tier.prices.items()},
            )
            for tier in model.tiers
        ],
    )


def _api_condition(condition: dict[str, Any]) -> PricingTierUsageCondition | PricingTierAttributeCondition:
    if "source" in condition:
        return PricingTierAttributeCondition.model_validate(condition)
    return PricingTierUsageCondition.model_validate(condition)


@dataclass(frozen=True)
class TierSpec:
    name: str
    is_default: bool
    priority: int
    conditions: list[dict[str, Any]]
    prices: dict[str, float]


def check_match_pattern(pattern: str) -> None:
    try:
        compile_search(pattern)
    except regex.error as exc:
        raise BadParameter("matchPattern", f"is not a valid regex pattern ({exc})") from None


def _validate_tiers(tiers: list[PricingTierInput]) -> None:
    """Langfuse's `validatePricingTiers`, message for message."""

    def bad(message: str) -> BadParameter:
        return BadParameter("pricingTiers", message)

    defaults = [t for t in tiers if t.is_default]
    if not defaults:
        raise bad("Exactly one pricing tier must have isDefault: true")
    if len(defaults) > 1:
        raise bad(f"Only one pricing tier can have isDefault: true, found {len(defaults)}")
    default = defaults[0]
    if default.priority != 0:
        raise bad("Default pricing tier must have priority: 0")
    if default.conditions:
        raise bad("Default pricing tier must have empty conditions array")
    for tier in tiers:
        if not tier.is_default and not tier.conditions:
            raise bad(f'Non-default pricing tier "{tier.name}" must have at least one condition')
    if len({t.priority for t in tiers}) != len(tiers):
        raise bad("Pricing tier priorities must be unique within a model")
    if len({t.name for t in tiers}) != len(tiers):
        raise bad("Pricing tier names must be unique")
    for tier in tiers:
        if not tier.prices:
            raise bad(f'Pricing tier "{tier.name}" must have at least one price defined')
    keys = sorted(default.prices)
    for tier in tiers:
        if sorted(tier.prices) != keys:
            raise bad(
                f'Pricing tier "{tier.name}" must have the same usage keys as the default tier. '
                f"Expected: [{', '.join(keys)}], Got: [{', '.join(sorted(tier.prices))}]"
            )


def tier_specs(body: CreateModelRequest) -> list[TierSpec]:
    """Validate a create/replace body (Langfuse's PostModelsV1Body rules) into the tiers to store."""
    check_match_pattern(body.match_pattern)
    flat = {"input": body.input_price, "output": body.output_price, "total": body.total_price}
    has_flat = any(v is not None for v in flat.values())
    tiers = body.pricing_tiers or []
    if has_flat and tiers:
        raise BadParameter(
            "pricingTiers",
            "Must provide either flat prices (inputPrice/outputPrice/totalPrice) OR pricingTiers, not both",
        )
    if not has_flat and not tiers:
        raise BadParameter(
            "pricingTiers", "Must provide either flat prices (inputPrice/outputPrice/totalPrice) OR pricingTiers"
        )
    if has_flat:
        if flat["total"] is not None and (flat["input"] is not None or flat["output"] is not None):
            raise BadParameter("totalPrice", "If input and/or output price is set, total price must be null")
        prices = {key: value for key, value in flat.items() if value is not None}
        return [TierSpec("Standard", True, 0, [], prices)]
    _validate_tiers(tiers)
    return [
        TierSpec(t.name, t.is_default, t.priority, [c.model_dump(by_alias=True) for c in t.conditions], t.prices)
        for t in tiers
    ]


def _fill(row: ModelRow, body: CreateModelRequest, specs: list[TierSpec]) -> None:
    row.model_name = body.model_name
    row.match_pattern = body.match_pattern
    row.start_date = body.start_date
    row.unit = body.unit.value
    row.tokenizer_id = None if body.tokenizer_id is None else body.tokenizer_id.value
    row.tokenizer_config = body.tokenizer_config
    row.tiers = [
        PricingTierRow(
            # Langfuse's id for the tier flat prices create; conditional tiers get fresh ids.
            id=f"{row.id}_tier_default" if spec.is_default else uuid.uuid4().hex,
            name=spec.name,
            is_default=spec.is_default,
            priority=spec.priority,
            conditions=spec.conditions,
            prices=[PriceRow(usage_type=key, price=_decimal_text(value)) for key, value in spec.prices.items()],
        )
        for spec in specs
    ]


def _decimal_text(value: float) -> str:
    return format(Decimal(str(value)), "f")


# --- storage (blocking: call in a thread) ---------------------------------------------------------


def _with_tiers() -> Any:
    return selectinload(ModelRow.tiers).selectinload(PricingTierRow.prices)


def load_project_models(metadata: MetadataDB, project_id: str) -> list[ModelDef]:
    with metadata.session() as session:
        rows = session.execute(select(ModelRow).where(ModelRow.project_id == project_id).options(_with_tiers()))
        return [model_def(row) for row in rows.scalars()]


def _name_taken(session: Session, project_id: str, model_name: str, other_than: str | None) -> bool:
    query = select(func.count()).where(ModelRow.project_id == project_id, ModelRow.model_name == model_name)
    if other_than is not None:
        query = query.where(ModelRow.id != other_than)
    return bool(session.execute(query).scalar_one())


def _duplicate(model_name: str) -> BadRequest:
    return BadParameter("modelName", f"Model name '{model_name}' already exists in project")


def store_model(
    metadata: MetadataDB, project_id: str, model_id: str | None, body: CreateModelRequest, specs: list[TierSpec]
) -> ModelDef:
    """Create (model_id None, or an id not yet used) or replace a project model; answer its definition."""
    try:
        with metadata.session() as session:
            row = None if model_id is None else session.get(ModelRow, model_id, options=[_with_tiers()])
            if row is not None and row.project_id != project_id:
                raise NotFound(NOT_FOUND)
            if _name_taken(session, project_id, body.model_name, model_id):
                raise _duplicate(body.model_name)
            if row is None:
                row = ModelRow(id=model_id or uuid.uuid4().hex, project_id=project_id)
                session.add(row)
            else:
                row.tiers = []
                session.flush()  # the old tiers go before the new ones take their priorities
            _fill(row, body, specs)
            session.flush()
            return model_def(row)
    except IntegrityError:  # lost a race: the name (or the id) was taken meanwhile
        raise _duplicate(body.model_name) from None


def remove_model(metadata: MetadataDB, project_id: str, model_id: str) -> bool:
    with metadata.session() as session:
        row = session.get(ModelRow, model_id)
        if row is None or row.project_id != project_id:
            return False
        session.delete(row)
        return True


def read_model(metadata: MetadataDB, project_id: str, model_id: str) -> ModelDef | None:
    with metadata.session() as session:
        row = session.get(ModelRow, model_id, options=[_with_tiers()])
        return None if row is None or row.project_id != project_id else model_def(row)


def _listing_order(model: ModelDef) -> tuple[str, str, bool, float, str]:
    # Langfuse: modelName asc, unit asc, startDate desc nulls last (then id, so pages are stable).
    start = -model.start_date.timestamp() if model.start_date is not None else 0.0
    return (model.model_name, model.unit or "", model.start_date is None, start, model.id)


# --- the service ----------------------------------------------------------------------------------


class PricingService:
    """Models API operations and the cached per-project pricing view."""

    def __init__(
        self, metadata: MetadataDB, *, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._metadata = metadata
        self._ttl_s = ttl_s
        self._clock = clock
        self._views: dict[str, tuple[float, ProjectModels]] = {}
        self._lock = threading.Lock()  # loads run in threads, possibly from more than one event loop
        self._loading: dict[str, threading.Lock] = {}

    # pricing views (hot path)

    async def for_project(self, project_id: str) -> ProjectModels:
        """The project's models and the defaults; from memory unless older than the TTL."""
        cached = self._views.get(project_id)
        if cached is not None and self._clock() - cached[0] < self._ttl_s:
            return cached[1]
        return await asyncio.to_thread(self._refresh, project_id)

    def _refresh(self, project_id: str) -> ProjectModels:
        with self._lock:
            loading = self._loading.setdefault(project_id, threading.Lock())
        with loading:  # one load per project at a time; the others take its result
            cached = self._views.get(project_id)
            if cached is not None and self._clock() - cached[0] < self._ttl_s:
                return cached[1]
            started = self._clock()
            own = [(m, compile_search(m.match_pattern)) for m in load_project_models(self._metadata, project_id)]
            view = ProjectModels(own, default_models())
            self._views[project_id] = (started, view)
            return view

    def invalidate(self, project_id: str) -> None:
        self._views.pop(project_id, None)

    async def prices_for(self, project_id: str, model_ids: Iterable[str | None]) -> dict[str, ModelPrices]:
        """Default-tier prices of the models rows point at (ids no longer defined are left out)."""
        view = await self.for_project(project_id)
        found: dict[str, ModelPrices] = {}
        for model_id in {m for m in model_ids if m}:
            model = view.by_id(model_id)
            if model is None:
                continue
            prices = model.default_tier.prices if model.default_tier is not None else {}
            found[model_id] = ModelPrices(model_id, prices.get("input"), prices.get("output"), prices.get("total"))
        return found

    # the models API

    async def _defaults(self) -> DefaultModels:
        return await asyncio.to_thread(default_models)

    async def list_models(self, project_id: str, page: int, limit: int) -> PaginatedModels:
        own = await asyncio.to_thread(load_project_models, self._metadata, project_id)
        everything = sorted([*own, *(await self._defaults()).models], key=_listing_order)
        chunk = everything[(page - 1) * limit : page * limit]
        return PaginatedModels(
            data=[api_model(m) for m in chunk],
            meta=MetaResponse(
                page=page, limit=limit, total_items=len(everything), total_pages=math.ceil(len(everything) / limit)
            ),
        )

    async def get_model(self, project_id: str, model_id: str) -> Model:
        model = (await self._defaults()).by_id.get(model_id) or await asyncio.to_thread(
            read_model, self._metadata, project_id, model_id
        )
        if model is None:
            raise NotFound(NOT_FOUND)
        return api_model(model)

    async def create_model(self, project_id: str, body: CreateModelRequest) -> Model:
        specs = tier_specs(body)
        model = await asyncio.to_thread(store_model, self._metadata, project_id, None, body, specs)
        self.invalidate(project_id)
        return api_model(model)

    async def upsert_model(self, project_id: str, model_id: str, body: CreateModelRequest) -> Model:
        if model_id in (await self._defaults()).by_id:
            raise NotFound(NOT_FOUND)  # built-in models cannot be modified, as in Langfuse
        specs = tier_specs(body)
        model = await asyncio.to_thread(store_model, self._metadata, project_id, model_id, body, specs)
        self.invalidate(project_id)
        return api_model(model)

    async def delete_model(self, project_id: str, model_id: str) -> None:
        if not await asyncio.to_thread(remove_model, self._metadata, project_id, model_id):
            raise NotFound(NOT_DELETABLE)
        self.invalidate(project_id)


_services: weakref.WeakKeyDictionary[MetadataDB, PricingService] = weakref.WeakKeyDictionary()
_services_lock = threading.Lock()


def pricing_service(metadata: MetadataDB) -> PricingService:
    """The process's one PricingService per metadata database, so API writes reach ingestion's cache."""
    with _services_lock:
        service = _services.get(metadata)
        if service is None:
            service = _services[metadata] = PricingService(metadata)
        return service
