"""Langfuse's enumerations, defined once for ingestion, reads and exports."""

from __future__ import annotations

from enum import StrEnum


class ObservationType(StrEnum):
    SPAN = "SPAN"
    GENERATION = "GENERATION"
    EVENT = "EVENT"
    AGENT = "AGENT"
    TOOL = "TOOL"
    CHAIN = "CHAIN"
    RETRIEVER = "RETRIEVER"
    EVALUATOR = "EVALUATOR"
    EMBEDDING = "EMBEDDING"
    GUARDRAIL = "GUARDRAIL"


class ObservationLevel(StrEnum):
    DEBUG = "DEBUG"
    DEFAULT = "DEFAULT"
    WARNING = "WARNING"
    ERROR = "ERROR"


class ScoreSource(StrEnum):
    API = "API"
    EVAL = "EVAL"
    ANNOTATION = "ANNOTATION"


class ScoreDataType(StrEnum):
    NUMERIC = "NUMERIC"
    CATEGORICAL = "CATEGORICAL"
    BOOLEAN = "BOOLEAN"
    CORRECTION = "CORRECTION"
    TEXT = "TEXT"


def names(enum: type[StrEnum]) -> str:
    """`A, B, C` for error messages."""
    return ", ".join(member.value for member in enum)
