"""Default (managed) model definitions, built in memory from the genai-prices package's bundled data.

genai-prices (pydantic's maintained price list; the data ships inside the package and is never
fetched at run time here) describes each provider's models with match clauses and prices per
million units. This module turns each (provider, model) into a Langfuse model definition:

- **id**: `gp-<provider>-<model id>`, stable across releases of the package (characters a URL path
  cannot carry become `-`, plus a short hash of the original so two ids never collide).
- **matchPattern**: the match clauses as one case-insensitive regex (informational: default models
  are chosen with genai-prices' own lookup, which also picks the provider, see `DefaultModels.find`).
- **prices**: each price key becomes the Langfuse usage keys tracehouse's ingestion produces for that
  kind of unit (`USAGE_KEYS`), per unit (price / `per`). A usage key the model has no price of its
  own for takes the nearest priced, more general unit's price (reasoning tokens are output tokens,
  cached tokens input tokens), as genai-prices' own leaf decomposition does.
- **tiers**: genai-prices' threshold prices (all tokens at the tier's rate once the prompt's input
  tokens exceed `start`) become conditional tiers `sum(input usage keys) > start`.
- **startDate**: of the price that is active today (date-constrained prices); a price that starts
  later takes over when the defaults are rebuilt on that day.

Left out: prices per time of day (deepseek's off-peak), request-context variants (service tier,
batch processing, ...) and non-token units (web searches, audio hours, pages); a model with no token
price at all is not a default.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.metadata import version
from typing import Any

from genai_prices import types as gp
from genai_prices.data_units import unit_data

from tracehouse.pricing.models import (
    ModelDef,
    ModelUsageUnit,
    PricingTierOperator,
    TierDef,
    UsageRule,
    compile_search,
)

# Langfuse usage key -> the genai-prices unit it counts. Keys are exclusive counts, as tracehouse's
# ingestion writes them: `input` is the prompt minus its detailed parts (cached, audio, ...), and so on.
USAGE_KEYS: dict[str, str] = {
    "input": "input_tokens",
    "input_tokens": "input_tokens",
    "prompt_tokens": "input_tokens",
    "output": "output_tokens",
    "output_tokens": "output_tokens",
    "completion_tokens": "output_tokens",
    "input_cached_tokens": "cache_read_tokens",
    "cache_read_input_tokens": "cache_read_tokens",
    "input_cache_read": "cache_read_tokens",
    "cached_tokens": "cache_read_tokens",
    "cache_creation_input_tokens": "cache_write_tokens",
    "input_cache_creation": "cache_write_tokens",
    "input_cache_write": "cache_write_tokens",
    "input_cache_creation_5m": "cache_write_5m_tokens",
    "ephemeral_5m_input_tokens": "cache_write_5m_tokens",
    "input_cache_creation_1h": "cache_write_1h_tokens",
    "ephemeral_1h_input_tokens": "cache_write_1h_tokens",
    "input_audio_tokens": "input_audio_tokens",
    "audio_input_tokens": "input_audio_tokens",
    "output_audio_tokens": "output_audio_tokens",
    "audio_output_tokens": "output_audio_tokens",
    "input_image_tokens": "input_image_tokens",
    "output_image_tokens": "output_image_tokens",
    "output_reasoning_tokens": "output_reasoning_tokens",
    "output_reasoning": "output_reasoning_tokens",
    "reasoning_tokens": "output_reasoning_tokens",
    "output_accepted_prediction_tokens": "output_tokens",
    "output_rejected_prediction_tokens": "output_tokens",
}
# What genai-prices' tier thresholds count: the prompt's tokens, cached and written ones included, so
# every input-side key above (tests check it against USAGE_KEYS); short enough for Langfuse's 200.
INPUT_SUM_PATTERN = "^(input|prompt_tokens$|cached_tokens$)|input_tokens$"
ID_PREFIX = "gp-"
_PATH_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def default_model_id(provider_id: str, model_id: str) -> str:
    raw = f"{provider_id}-{model_id}"
    safe = _PATH_SAFE.sub("-", raw)
    if safe != raw:
        safe += "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return ID_PREFIX + safe


def match_regex(clause: Any) -> str:
    """genai-prices' match clauses (case-insensitive) as one regex for `(?i)` searching."""
    if isinstance(clause, gp.ClauseEquals):
        return f"^{re.escape(clause.equals)}$"
    if isinstance(clause, gp.ClauseStartsWith):
        return f"^{re.escape(clause.starts_with)}"
    if isinstance(clause, gp.ClauseEndsWith):
        return f"{re.escape(clause.ends_with)}$"
    if isinstance(clause, gp.ClauseContains):
        return re.escape(clause.contains)
    if isinstance(clause, gp.ClauseRegex):
        return f"(?:{clause.regex})"
    if isinstance(clause, gp.ClauseOr):
        return "(?:" + "|".join(match_regex(c) for c in clause.or_) + ")"
    if isinstance(clause, gp.ClauseAnd):
        return "^" + "".join(f"(?=[\\s\\S]*?(?:{match_regex(c)}))" for c in clause.and_)
    raise TypeError(f"unknown genai-prices clause {type(clause).__name__}")


def _active_price(model: gp.ModelInfo, today: date) -> tuple[gp.ModelPrice, date | None]:
    """The price in force today and the day it started (the last active conditional price wins)."""
    if isinstance(model.prices, gp.ModelPrice):
        return model.prices, None
    for conditional in reversed(model.prices):
        constraint = conditional.constraint
        if constraint is None:
            return conditional.prices, None
        if isinstance(constraint, gp.StartDateConstraint) and constraint.start_date <= today:
            return conditional.prices, constraint.start_date
    return model.prices[0].prices, None


def _unit_price(price_key_values: dict[str, Any], unit_key: str) -> tuple[Decimal | gp.TieredPrices, int] | None:
    """The price of the most specific priced unit that contains `unit_key` (itself included)."""
    wanted = unit_data[unit_key]["dimensions"].items()
    best: tuple[int, Decimal | gp.TieredPrices, int] | None = None
    for spec in unit_data.values():
        value = price_key_values.get(spec["price_key"])
        if value is None or not spec["dimensions"].items() <= wanted:
            continue
        rank = len(spec["dimensions"])
        if best is None or rank > best[0]:
            best = (rank, value, int(spec["per"]))
    return None if best is None else (best[1], best[2])


def _at_threshold(value: Decimal | gp.TieredPrices, threshold: int | None) -> Decimal:
    if isinstance(value, Decimal):
        return value
    applicable = value.base
    if threshold is not None:
        for tier in value.tiers:  # sorted by start
            if tier.start <= threshold:
                applicable = tier.price
    return applicable


def _tiers(model_id: str, price: gp.ModelPrice) -> tuple[TierDef, ...]:
    values = {k: v for k, v in price.__dict__.items() if not k.startswith("_") and v is not None}
    per_key = {key: found for key, unit in USAGE_KEYS.items() if (found := _unit_price(values, unit)) is not None}
    if not per_key:
        return ()
    thresholds = sorted(
        {t.start for value, _ in per_key.values() if isinstance(value, gp.TieredPrices) for t in value.tiers},
        reverse=True,  # the highest threshold is tried first
    )

    def prices_at(threshold: int | None) -> dict[str, Decimal]:
        return {key: _at_threshold(value, threshold) / per for key, (value, per) in per_key.items()}

    tiers = [TierDef(f"{model_id}_tier_default", "Standard", True, 0, (), (), prices_at(None))]
    for priority, threshold in enumerate(thresholds, start=1):
        condition = {
            "usageDetailPattern": INPUT_SUM_PATTERN,
            "operator": "gt",
            "value": threshold,
            "caseSensitive": True,
        }
        rule = UsageRule(compile_search(INPUT_SUM_PATTERN), PricingTierOperator.GT, float(threshold))
        tiers.append(
            TierDef(
                f"{model_id}_tier_{threshold}",
                f"Input over {threshold:,} tokens",
                False,
                priority,
                (condition,),
                (rule,),
                prices_at(threshold),
            )
        )
    return tuple(tiers)


@dataclass(frozen=True)
class DefaultModels:
    """Every default model, and the lookup that picks one for a generation's model name."""

    package_version: str
    built_for: date
    models: tuple[ModelDef, ...]
    by_id: dict[str, ModelDef]
    _by_info: dict[int, ModelDef]  # id() of a genai-prices ModelInfo -> its definition
    _providers: tuple[gp.Provider, ...]

    def find(self, model_name: str) -> ModelDef | None:
        """genai-prices' own lookup with no provider given: the first provider whose pattern matches the
        name, then its first matching model (or that of a provider it falls back to)."""
        ref = model_name.lower()
        providers = list(self._providers)
        for provider in providers:
            if provider.model_match is not None and provider.model_match.is_match(ref):
                info = provider.find_model(ref, all_providers=providers)
                return None if info is None else self._by_info.get(id(info))
        return None


def build_defaults(today: date) -> DefaultModels:
    from genai_prices.data import providers  # 1.6 MB of data: imported once, off the event loop

    built_at = datetime.now(UTC)
    models: list[ModelDef] = []
    by_info: dict[int, ModelDef] = {}
    for provider in providers:
        for info in provider.models:
            model_id = default_model_id(provider.id, info.id)
            price, started = _active_price(info, today)
            tiers = _tiers(model_id, price)
            if not tiers:
                continue
            definition = ModelDef(
                id=model_id,
                project_id=None,
                model_name=info.id,
                match_pattern="(?i)" + match_regex(info.match),
                start_date=None if started is None else datetime(started.year, started.month, started.day, tzinfo=UTC),
                unit=ModelUsageUnit.TOKENS.value,
                tokenizer_id=None,
                tokenizer_config=None,
                created_at=built_at,
                tiers=tiers,
            )
            models.append(definition)
            by_info[id(info)] = definition
    by_id = {m.id: m for m in models}
    if len(by_id) != len(models):
        raise RuntimeError("genai-prices yields two default models with the same id")
    return DefaultModels(version("genai-prices"), today, tuple(models), by_id, by_info, tuple(providers))


_current: DefaultModels | None = None
_building = threading.Lock()


def default_models(today: date | None = None) -> DefaultModels:
    """The defaults for today (UTC): built the first time a day asks (blocking: call it in a thread)."""
    global _current
    day = today or datetime.now(UTC).date()
    with _building:
        if _current is None or _current.built_for != day:
            _current = build_defaults(day)
        return _current
