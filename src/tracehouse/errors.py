"""Errors that the CLI turns into one clear line instead of a traceback."""


class TracehouseError(Exception):
    """Base for errors whose message is meant for the operator as-is."""


class ConfigError(TracehouseError):
    """A setting has an invalid value; the message names the variable and what it accepts."""


class DependencyUnavailable(TracehouseError):
    """A server we depend on (ClickHouse, Redis, PostgreSQL, blob store) cannot be reached."""

    def __init__(self, name: str, target: str, reason: str) -> None:
        self.name = name
        self.target = target
        self.reason = reason
        super().__init__(f"cannot reach {name} at {target}: {reason}")


def one_line_reason(exc: BaseException) -> str:
    """A short single-line reason from an exception whose text may be long or multi-line."""
    import re

    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    errno = re.search(r"\[Errno -?\d+\] [^\"')\]]+", text)
    if errno:
        return errno.group(0).strip()
    return text.splitlines()[0][:300]
