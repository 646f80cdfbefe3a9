"""Which model prices a generation, which tier applies, and what the usage costs: Langfuse's rules.

- **Model** (Langfuse's `findModelInPostgres`): the generation's model name is matched against each
  model's `matchPattern` with PostgreSQL's `name ~ match_pattern`, a case-sensitive regex search, so a
  pattern is case-insensitive when it says so (`(?i)^gpt-4o$`, as Langfuse's defaults and docs do).
  A project's own models come first (`ORDER BY project_id ASC`, defaults have none); among matches
  the newest `startDate` wins, models without one last (`start_date DESC NULLS LAST`); Langfuse does
  not compare it with the generation's start time, so neither do we. Ties, which Langfuse leaves to
  the database, go to the newest created, then the smallest id. No project model matching, the
  default models are asked (`defaults.py`).
- **Tier** (`matchPricingTier`): only when there are usage details; the non-default tiers in
  ascending priority, the first whose conditions all hold, else the default tier. A usage condition
  sums the usage values whose keys match its pattern; an attribute condition wants a top-level model
  parameter or metadata key to hold one of its values exactly.
- **Costs** (`calculateUsageCosts`): if the client sent any cost, nothing is inferred: the sent costs
  are kept, and `total` is the sent total, or input + output when those are all that was sent. Else
  each usage key with a price of exactly that key costs units x price. Either way `total` is added
  to the cost details when it is known and missing (the sum of the others when computed).

Regex searches carry a timeout (a catastrophic pattern then fails to match, never stalls ingestion),
and names longer than `MODEL_NAME_MAX` are never matched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

import regex

from tracehouse.logging import get_logger
from tracehouse.pricing.defaults import DefaultModels
from tracehouse.pricing.models import (
    MODEL_NAME_MAX,
    AttributeRule,
    ModelDef,
    PricedUsage,
    PricingTierAttributeSource,
    PricingTierOperator,
    TierDef,
    UsageRule,
)

SEARCH_TIMEOUT_S = 0.01
MEMO_MAX = 10_000  # distinct model names remembered per project snapshot
_log = get_logger("tracehouse.pricing")

_COMPARE = {
    PricingTierOperator.GT: lambda a, b: a > b,
    PricingTierOperator.GTE: lambda a, b: a >= b,
    PricingTierOperator.LT: lambda a, b: a < b,
    PricingTierOperator.LTE: lambda a, b: a <= b,
    PricingTierOperator.EQ: lambda a, b: a == b,
    PricingTierOperator.NEQ: lambda a, b: a != b,
}


def searches(pattern: regex.Pattern[str], text: str) -> bool:
    try:
        return pattern.search(text, timeout=SEARCH_TIMEOUT_S) is not None
    except TimeoutError:
        _log.warning("pricing_regex_timeout", pattern=pattern.pattern[:200], text=text[:200])
        return False


def _newest_first(model: ModelDef) -> tuple[bool, float, float, str]:
    start = model.start_date.timestamp() if model.start_date is not None else 0.0
    return (model.start_date is None, -start, -model.created_at.timestamp(), model.id)


class ProjectModels:
    """One project's models at one moment (immutable), plus a memo of the names already matched."""

    def __init__(self, own: Iterable[tuple[ModelDef, regex.Pattern[str]]], defaults: DefaultModels) -> None:
        self._own = sorted(own, key=lambda pair: _newest_first(pair[0]))
        self._defaults = defaults
        self._by_id = {model.id: model for model, _ in self._own}
        self._memo: dict[str, ModelDef | None] = {}

    @property
    def defaults(self) -> DefaultModels:
        return self._defaults

    def by_id(self, model_id: str) -> ModelDef | None:
        return self._by_id.get(model_id) or self._defaults.by_id.get(model_id)

    def find(self, model_name: str | None) -> ModelDef | None:
        if not model_name or len(model_name) > MODEL_NAME_MAX:
            return None
        if model_name in self._memo:
            return self._memo[model_name]
        found = next((model for model, pattern in self._own if searches(pattern, model_name)), None)
        if found is None:
            found = self._defaults.find(model_name)
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()  # a flood of distinct names costs lookups, never memory
        self._memo[model_name] = found
        return found


def _holds(
    rule: UsageRule | AttributeRule, usage: Mapping[str, int], attributes: Mapping[str, Mapping[str, str]]
) -> bool:
    if isinstance(rule, AttributeRule):
        values = attributes.get(rule.source.value, {})
        return rule.key in values and values[rule.key] in rule.values
    total = sum(units for key, units in usage.items() if searches(rule.pattern, key))
    return bool(_COMPARE[rule.operator](total, rule.value))


def match_tier(
    model: ModelDef, usage: Mapping[str, int], attributes: Mapping[str, Mapping[str, str]]
) -> TierDef | None:
    if not model.tiers or not usage:
        return None
    for tier in model.conditional_tiers:
        if tier.rules and all(_holds(rule, usage, attributes) for rule in tier.rules):
            return tier
    return model.default_tier


def _sent_costs(sent: Mapping[str, float]) -> tuple[dict[str, Decimal], Decimal | None]:
    costs = {key: Decimal(str(value)) for key, value in sent.items()}
    total = costs.get("total")
    if total is None and set(costs) <= {"input", "output"}:
        total = costs.get("input", Decimal(0)) + costs.get("output", Decimal(0))
    return costs, total


def price_usage(
    model: ModelDef | None,
    usage: Mapping[str, int],
    sent_costs: Mapping[str, float],
    *,
    model_parameters: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> PricedUsage:
    """The model, tier and costs of one observation (`usage` already has its `total`)."""
    attributes = {
        PricingTierAttributeSource.MODEL_PARAMETERS.value: model_parameters or {},
        PricingTierAttributeSource.METADATA.value: metadata or {},
    }
    tier = match_tier(model, usage, attributes) if model is not None else None
    if sent_costs:
        costs, total = _sent_costs(sent_costs)
    else:
        prices: Mapping[str, Decimal] = tier.prices if tier is not None else {}
        costs = {key: prices[key] * units for key, units in usage.items() if key in prices}
        total = costs.get("total")
        if total is None and costs:
            total = sum(costs.values(), Decimal(0))
    if total is not None and "total" not in costs:
        costs["total"] = total
    return PricedUsage(
        internal_model_id=None if model is None else model.id,
        usage_pricing_tier_id=None if tier is None else tier.id,
        usage_pricing_tier_name=None if tier is None else tier.name,
        cost_details={key: float(value) for key, value in costs.items()},
        total_cost=None if total is None else float(total),
    )
