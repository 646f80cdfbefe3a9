"""Parse JSON bodies with a Langfuse SDK's own pydantic types; run with PYTHONPATH=<that SDK's dir>.

stdin: [{"type": "<dotted path of an SDK type>", "body": <json>}, ...]
stdout (one JSON line): per item {"type", "ok": true, "parsed": <the parsed value by python field name>}
or {"type", "ok": false, "error": "<the validation error>"}.

Each SDK is parsed the way its client parses answers: the current SDK maps its field aliases first
(`core.pydantic_utilities.parse_obj_as`), the 2.x SDK uses pydantic.v1's `parse_obj_as`. `parsed`
uses python field names, so a field the SDK did not recognise (kept as an extra) is not mistaken for
one it read.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import pydantic
import pydantic.v1

try:
    from langfuse.api.core.pydantic_utilities import parse_obj_as  # current SDK
except ImportError:  # 2.x
    from langfuse.api.core.pydantic_utilities import pydantic_v1

    parse_obj_as = pydantic_v1.parse_obj_as


def sdk_type(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def plain(value: Any) -> Any:
    """The parsed value as JSON-able data keyed by python field names (models of both pydantic lines)."""
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, pydantic.BaseModel):  # current SDK
        return value.model_dump()
    if isinstance(value, pydantic.v1.BaseModel):  # 2.x SDK; its own .dict() would use the aliases
        return pydantic.v1.BaseModel.dict(value)
    return value


def parse(item: dict[str, Any]) -> dict[str, Any]:
    try:
        parsed = parse_obj_as(sdk_type(item["type"]), item["body"])
    except Exception as exc:  # noqa: BLE001 - report any failure to parse as that item's result
        return {"type": item["type"], "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"type": item["type"], "ok": True, "parsed": plain(parsed)}


if __name__ == "__main__":
    items = json.load(sys.stdin)
    print(json.dumps([parse(item) for item in items], default=str))
