"""Pricing's typed boundaries: the models API's requests and responses (named after the current SDK's
types, Langfuse's field names), and the frozen definitions that matching and cost calculation use.

A model definition is a match pattern (a regex over the generation's model name) plus pricing tiers:
one default tier (priority 0, no conditions) and optional conditional tiers, each a full set of
prices per usage key (USD per unit). The flat `inputPrice`/`outputPrice`/`totalPrice` and `prices`
fields of a `Model` are the default tier's prices, as in Langfuse.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, field_validator
from pydantic.alias_generators import to_camel

from tracehouse.timefmt import api_time

# Langfuse's bounds (validation.ts): patterns and keys of tier conditions, tier names and priorities.
CONDITION_PATTERN_MAX = 200
TIER_NAME_MAX = 100
TIER_PRIORITY_MAX = 999
# Ours: Langfuse leaves these to PostgreSQL; a regex engine that backtracks needs bounds.
MATCH_PATTERN_MAX = 1000
MODEL_NAME_MAX = 1000

ApiTime = Annotated[
    datetime, PlainSerializer(api_time, return_type=str), WithJsonSchema({"type": "string", "format": "date-time"})
]


class ModelUsageUnit(enum.StrEnum):
    CHARACTERS = "CHARACTERS"
    TOKENS = "TOKENS"
    MILLISECONDS = "MILLISECONDS"
    SECONDS = "SECONDS"
    IMAGES = "IMAGES"
    REQUESTS = "REQUESTS"


class ModelTokenizerId(enum.StrEnum):
    OPENAI = "openai"
    CLAUDE = "claude"


class PricingTierOperator(enum.StrEnum):
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    EQ = "eq"
    NEQ = "neq"


class PricingTierAttributeSource(enum.StrEnum):
    MODEL_PARAMETERS = "model_parameters"
    METADATA = "metadata"


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


def compile_search(pattern: str, *, ignore_case: bool = False) -> regex.Pattern[str]:
    """Compile a pattern once; `regex` (not `re`) so every search can carry a timeout."""
    return regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)


def _checked_condition_pattern(pattern: str) -> str:
    if not pattern:
        raise ValueError("Pattern cannot be empty")
    if len(pattern) > CONDITION_PATTERN_MAX:
        raise ValueError(f"Pattern exceeds maximum length of {CONDITION_PATTERN_MAX} characters")
    try:
        compile_search(pattern)
    except regex.error as exc:
        raise ValueError(f"Invalid regex syntax: {exc}") from None
    return pattern


class PricingTierUsageCondition(_Camel):
    """Sum the usage details whose keys match `usageDetailPattern`, compare the sum with `value`."""

    usage_detail_pattern: str
    operator: PricingTierOperator
    value: float = Field(ge=0)
    case_sensitive: bool

    _check_pattern = field_validator("usage_detail_pattern")(_checked_condition_pattern)


class PricingTierUsageConditionInput(PricingTierUsageCondition):
    case_sensitive: bool = False


class PricingTierAttributeCondition(_Camel):
    """Match when a top-level model parameter or metadata key holds one of `values` (exactly)."""

    source: PricingTierAttributeSource
    key: str = Field(min_length=1, max_length=CONDITION_PATTERN_MAX)
    operator: Literal["in"] = "in"
    values: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


PricingTierCondition = PricingTierUsageCondition | PricingTierAttributeCondition
PricingTierConditionInput = PricingTierUsageConditionInput | PricingTierAttributeCondition


class PricingTierInput(_Camel):
    name: str = Field(min_length=1, max_length=TIER_NAME_MAX)
    is_default: bool = False
    priority: int = Field(ge=0, le=TIER_PRIORITY_MAX)
    conditions: list[PricingTierConditionInput]
    prices: dict[str, Annotated[float, Field(ge=0)]]

    @field_validator("name", mode="before")
    @classmethod
    def _trimmed(cls, value: Any) -> Any:
        # Langfuse trims before its other checks, so names differing by whitespace are duplicates.
        return value.strip() if isinstance(value, str) else value


class CreateModelRequest(_Camel):
    """POST /api/public/models and PUT /api/public/models/{id} (Langfuse's PostModelsV1Body)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    model_name: str = Field(min_length=1)
    match_pattern: str = Field(min_length=1, max_length=MATCH_PATTERN_MAX)
    start_date: datetime | None = None
    unit: ModelUsageUnit
    input_price: float | None = Field(None, ge=0)
    output_price: float | None = Field(None, ge=0)
    total_price: float | None = Field(None, ge=0)
    pricing_tiers: list[PricingTierInput] | None = None
    tokenizer_id: ModelTokenizerId | None = None
    tokenizer_config: Any = None


class ModelPrice(BaseModel):
    price: float


class PricingTier(_Camel):
    id: str
    name: str
    is_default: bool
    priority: int
    conditions: list[PricingTierCondition]
    prices: dict[str, float]


class Model(_Camel):
    """One model definition as Langfuse's API answers it (the SDK's `Model`)."""

    id: str
    model_name: str
    match_pattern: str
    start_date: ApiTime | None
    input_price: float | None
    output_price: float | None
    total_price: float | None
    unit: ModelUsageUnit | None
    tokenizer_id: str | None
    tokenizer_config: Any
    is_langfuse_managed: bool
    created_at: ApiTime
    prices: dict[str, ModelPrice]
    pricing_tiers: list[PricingTier]


class MetaResponse(_Camel):
    page: int
    limit: int
    total_items: int
    total_pages: int


class PaginatedModels(BaseModel):
    data: list[Model]
    meta: MetaResponse


class DeleteModelResponse(BaseModel):
    message: Literal["Model successfully deleted"] = "Model successfully deleted"


# --- frozen definitions: what matching and cost calculation read ------------------------------------


@dataclass(frozen=True)
class UsageRule:
    pattern: regex.Pattern[str]
    operator: PricingTierOperator
    value: float


@dataclass(frozen=True)
class AttributeRule:
    source: PricingTierAttributeSource
    key: str
    values: frozenset[str]


@dataclass(frozen=True)
class TierDef:
    id: str
    name: str
    is_default: bool
    priority: int
    conditions: tuple[dict[str, Any], ...]  # as stored and answered (Langfuse's JSON shape)
    rules: tuple[UsageRule | AttributeRule, ...]
    prices: dict[str, Decimal] = field(hash=False)  # usage key -> USD per unit


@dataclass(frozen=True)
class ModelDef:
    id: str
    project_id: str | None  # None: a default (managed) model
    model_name: str
    match_pattern: str
    start_date: datetime | None
    unit: str | None
    tokenizer_id: str | None
    tokenizer_config: Any
    created_at: datetime
    tiers: tuple[TierDef, ...]

    @cached_property
    def default_tier(self) -> TierDef | None:
        return next((t for t in self.tiers if t.is_default), None)

    @cached_property
    def conditional_tiers(self) -> tuple[TierDef, ...]:
        """The non-default tiers in the order they are tried (ascending priority)."""
        return tuple(sorted((t for t in self.tiers if not t.is_default), key=lambda t: t.priority))

    @cached_property
    def uses_attributes(self) -> bool:
        """Whether a tier looks at model parameters or metadata (else they need not be prepared)."""
        return any(isinstance(rule, AttributeRule) for tier in self.tiers for rule in tier.rules)


@dataclass(frozen=True)
class PricedUsage:
    """What ingestion stamps on an observation row: the model and tier used, and the costs."""

    internal_model_id: str | None
    usage_pricing_tier_id: str | None
    usage_pricing_tier_name: str | None
    cost_details: dict[str, float]
    total_cost: float | None


@dataclass(frozen=True)
class ModelPrices:
    """A model's default-tier prices, for reads (v1 `inputPrice`..., v2 the same as decimal strings)."""

    model_id: str
    input_price: Decimal | None
    output_price: Decimal | None
    total_price: Decimal | None
