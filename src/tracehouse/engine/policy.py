"""How a user's profile and a request's settings combine into the settings a query runs with.

ClickHouse applies a profile's settings as defaults that the client may override, and enforces
`<constraints>` (min/max/readonly/const) on every change, whether it comes as a URL parameter, a
`SETTINGS` clause or a `SET`: an out-of-range change is error 452, and with `readonly=1` any change
is error 164. The engine does exactly that, and adds one rule of its own for resource limits, so a
client can make its own query stricter but never looser than its profile:

- limits where 0 means unlimited (`max_memory_usage`, `max_execution_time`, `max_threads`, rows and
  bytes caps): the smaller non-zero of the profile's and the client's value wins;
- `priority` (0 = priorities not used, 1 is the highest, larger runs later): a client may lower its
  own priority (a larger number) but not raise it or opt out with 0, so when the profile sets one
  the larger non-zero value wins; a profile without a priority leaves the client's choice alone;
- `os_thread_priority` (a nice value: larger yields the CPU): the larger value wins.

On a real ClickHouse server the same users file gives the same ceilings only through
`<constraints>` (where a looser value is an error instead of being tightened), so the shipped
file states both: the profile value and a constraint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from tracehouse.engine import errors
from tracehouse.engine.errors import EngineError
from tracehouse.engine.sqltext import Assignment, setting_value
from tracehouse.engine.users import Profile

SMALLER_NONZERO_WINS = frozenset(
    {
        "max_memory_usage",
        "max_memory_usage_for_user",
        "max_execution_time",
        "max_estimated_execution_time",
        "max_threads",
        "max_rows_to_read",
        "max_bytes_to_read",
        "max_result_rows",
        "max_result_bytes",
        "max_rows_to_sort",
        "max_bytes_to_sort",
        "max_rows_to_group_by",
        "max_rows_in_set",
        "max_bytes_in_set",
        "max_rows_in_join",
        "max_bytes_in_join",
        "max_rows_to_transfer",
        "max_bytes_to_transfer",
        "max_concurrent_queries_for_user",
        "max_temporary_data_on_disk_size_for_query",
    }
)
LARGER_WINS = frozenset({"priority", "os_thread_priority"})


def setting_number(value: str | None) -> float | None:
    """A setting's numeric value; None for text such as 'auto' (which, for max_threads, means unset)."""
    if value is None:
        return None
    text = value.strip().strip("'")
    try:
        number = float(text)
    except ValueError:
        if text.lower() in ("true", "false"):
            return 1.0 if text.lower() == "true" else 0.0
        return None
    return number if math.isfinite(number) else None


def stricter(name: str, profile_value: str | None, client_value: str) -> str:
    """The value a query runs with when both the profile and the client set `name`."""
    if profile_value is None:
        return client_value
    theirs, ours = setting_number(client_value), setting_number(profile_value)
    if ours is None:
        return client_value
    if name in SMALLER_NONZERO_WINS:
        if theirs is None or theirs <= 0:  # unlimited, 'auto' or nonsense: the profile's limit stays
            return profile_value
        if ours <= 0:
            return client_value
        return client_value if theirs < ours else profile_value
    if name == "priority":
        if ours <= 0:
            return client_value
        return client_value if theirs is not None and theirs > ours else profile_value
    if name == "os_thread_priority":
        return client_value if theirs is not None and theirs > ours else profile_value
    return client_value


def check_changes(profile: Profile, changes: Mapping[str, str], defaults: Mapping[str, str]) -> None:
    """ClickHouse's SettingsConstraints::check for each change a request makes."""
    readonly = int(setting_number(profile.settings.get("readonly")) or 0)
    for name, value in changes.items():
        current = profile.settings.get(name, defaults.get(name))
        unchanged = current is not None and _same(current, value)
        constraint = profile.constraints.get(name)
        if name == "profile":
            raise EngineError(errors.ACCESS_DENIED, "Changing the settings profile is not allowed for HTTP users")
        if readonly == 1 and not unchanged and not (constraint and constraint.changeable_in_readonly):
            raise EngineError(errors.READONLY, f"Cannot modify '{name}' setting in readonly mode")
        if name == "readonly" and readonly and not unchanged:
            raise EngineError(errors.READONLY, "Cannot modify 'readonly' setting in readonly mode")
        if constraint is None:
            continue
        if constraint.fixed and not unchanged:
            raise EngineError(errors.SETTING_CONSTRAINT_VIOLATION, f"Setting {name} should not be changed")
        number = setting_number(value)
        if constraint.min is not None and number is not None and number < (setting_number(constraint.min) or 0):
            raise EngineError(
                errors.SETTING_CONSTRAINT_VIOLATION, f"Setting {name} shouldn't be less than {constraint.min}"
            )
        if constraint.max is not None and number is not None and number > (setting_number(constraint.max) or 0):
            raise EngineError(
                errors.SETTING_CONSTRAINT_VIOLATION, f"Setting {name} shouldn't be greater than {constraint.max}"
            )


def _same(a: str, b: str) -> bool:
    na, nb = setting_number(a), setting_number(b)
    if na is not None and nb is not None:
        return na == nb
    return a.strip().strip("'") == b.strip().strip("'")


def merge(profile: Profile, client: Mapping[str, str]) -> dict[str, str]:
    """The session settings for a request: the profile's, overridden by the client's, limits tightened."""
    merged = dict(profile.settings)
    for name, value in client.items():
        merged[name] = stricter(name, profile.settings.get(name), value)
    return merged


def tighten_assignments(sql: str, assignments: list[Assignment], profile: Profile) -> tuple[str, dict[str, str]]:
    """Rewrite `SETTINGS` values in the SQL that are looser than the profile's; return the SQL and
    the values each clause ends up with (for the query log)."""
    replacements: list[tuple[int, int, str]] = []
    applied: dict[str, str] = {}
    for item in assignments:
        value = setting_value(item.value)
        wanted = stricter(item.name, profile.settings.get(item.name), value) if _is_limit(item.name) else value
        applied[item.name] = wanted
        if wanted != value:
            # The SQL is latin-1 text of UTF-8 bytes (see sqltext); keep the replacement in that form.
            replacements.append((item.start, item.end, _literal(wanted).encode().decode("latin-1")))
    for start, end, text in sorted(replacements, reverse=True):
        sql = sql[:start] + text + sql[end:]
    return sql, applied


def _is_limit(name: str) -> bool:
    return name in SMALLER_NONZERO_WINS or name in LARGER_WINS


def _literal(value: str) -> str:
    return value if setting_number(value) is not None else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
