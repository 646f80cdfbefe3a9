"""ClickHouse's error shape: a numeric code, its name, `Code: N. DB::Exception: ...` text, an HTTP status.

Clients classify failures by the code (the `X-ClickHouse-Exception-Code` header) and by the text,
so errors the engine raises itself use ClickHouse's codes and wording, and chDB's own errors pass
through unchanged.
"""

from __future__ import annotations

import re
from http import HTTPStatus

# The codes the engine raises itself (ClickHouse's src/Common/ErrorCodes.cpp numbers).
BAD_ARGUMENTS = 36
NOT_IMPLEMENTED = 48
SYNTAX_ERROR = 62
UNKNOWN_FORMAT = 73
UNKNOWN_SETTING = 115
ABORTED = 236
CANNOT_DECOMPRESS = 271
READONLY = 164
QUOTA_EXCEEDED = 201
TOO_MANY_SIMULTANEOUS_QUERIES = 202
QUERY_IS_TOO_LARGE = 229
INTO_OUTFILE_NOT_ALLOWED = 358
HTTP_LENGTH_REQUIRED = 381
QUERY_WAS_CANCELLED = 394
SETTING_CONSTRAINT_VIOLATION = 452
ACCESS_DENIED = 497
AUTHENTICATION_FAILED = 516
UNKNOWN_EXCEPTION = 1002

_NAMES = {
    BAD_ARGUMENTS: "BAD_ARGUMENTS",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    UNKNOWN_FORMAT: "UNKNOWN_FORMAT",
    UNKNOWN_SETTING: "UNKNOWN_SETTING",
    ABORTED: "ABORTED",
    CANNOT_DECOMPRESS: "CANNOT_DECOMPRESS",
    READONLY: "READONLY",
    QUOTA_EXCEEDED: "QUOTA_EXCEEDED",
    TOO_MANY_SIMULTANEOUS_QUERIES: "TOO_MANY_SIMULTANEOUS_QUERIES",
    QUERY_IS_TOO_LARGE: "QUERY_IS_TOO_LARGE",
    INTO_OUTFILE_NOT_ALLOWED: "INTO_OUTFILE_NOT_ALLOWED",
    HTTP_LENGTH_REQUIRED: "HTTP_LENGTH_REQUIRED",
    QUERY_WAS_CANCELLED: "QUERY_WAS_CANCELLED",
    SETTING_CONSTRAINT_VIOLATION: "SETTING_CONSTRAINT_VIOLATION",
    ACCESS_DENIED: "ACCESS_DENIED",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    UNKNOWN_EXCEPTION: "UNKNOWN_EXCEPTION",
}

# ClickHouse's src/Server/HTTP/exceptionCodeToHTTPStatus.cpp, by error name (numbers come from chDB
# at start-up, see `load_error_names`); every other code is a 500.
_STATUS_BY_NAME: dict[str, HTTPStatus] = {
    "REQUIRED_PASSWORD": HTTPStatus.UNAUTHORIZED,
    **dict.fromkeys(
        ["UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"],
        HTTPStatus.FORBIDDEN,
    ),
    **dict.fromkeys(
        [
            "BAD_ARGUMENTS",
            "CANNOT_COMPILE_REGEXP",
            "CANNOT_PARSE_TEXT",
            "CANNOT_PARSE_ESCAPE_SEQUENCE",
            "CANNOT_PARSE_QUOTED_STRING",
            "CANNOT_PARSE_DATE",
            "CANNOT_PARSE_DATETIME",
            "CANNOT_PARSE_NUMBER",
            "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
            "CANNOT_PARSE_IPV4",
            "CANNOT_PARSE_IPV6",
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
            "CANNOT_PARSE_UUID",
            "DUPLICATE_COLUMN",
            "ILLEGAL_COLUMN",
            "UNKNOWN_ELEMENT_IN_AST",
            "UNKNOWN_TYPE_OF_AST_NODE",
            "THERE_IS_NO_COLUMN",
            "TOO_DEEP_AST",
            "TOO_BIG_AST",
            "UNEXPECTED_AST_STRUCTURE",
            "SYNTAX_ERROR",
            "INCORRECT_DATA",
            "TYPE_MISMATCH",
            "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        ],
        HTTPStatus.BAD_REQUEST,
    ),
    **dict.fromkeys(
        [
            "UNKNOWN_TABLE",
            "UNKNOWN_FUNCTION",
            "UNKNOWN_IDENTIFIER",
            "UNKNOWN_TYPE",
            "UNKNOWN_STORAGE",
            "UNKNOWN_DATABASE",
            "UNKNOWN_SETTING",
            "UNKNOWN_DIRECTION_OF_SORTING",
            "UNKNOWN_AGGREGATE_FUNCTION",
            "UNKNOWN_FORMAT",
            "UNKNOWN_DATABASE_ENGINE",
            "UNKNOWN_TYPE_OF_QUERY",
            "UNKNOWN_ROLE",
        ],
        HTTPStatus.NOT_FOUND,
    ),
    "QUERY_IS_TOO_LARGE": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    "NOT_IMPLEMENTED": HTTPStatus.NOT_IMPLEMENTED,
    "SOCKET_TIMEOUT": HTTPStatus.SERVICE_UNAVAILABLE,
    "CANNOT_OPEN_FILE": HTTPStatus.SERVICE_UNAVAILABLE,
    "HTTP_LENGTH_REQUIRED": HTTPStatus.LENGTH_REQUIRED,
    "TIMEOUT_EXCEEDED": HTTPStatus.REQUEST_TIMEOUT,
    "CANNOT_SCHEDULE_TASK": HTTPStatus.SERVICE_UNAVAILABLE,
    "UNSUPPORTED_MEDIA_TYPE": HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
}

_CODE_RE = re.compile(r"Code:\s*(\d+)")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*$")


class EngineError(Exception):
    """A query failure in ClickHouse's terms. `str()` is the text ClickHouse would send."""

    def __init__(self, code: int, message: str, name: str | None = None) -> None:
        self.code = code
        self.name = name or _NAMES.get(code, "")
        self.message = message
        super().__init__(self.text)

    @property
    def text(self) -> str:
        if self.message.startswith("Code:"):
            return self.message
        suffix = f" ({self.name})" if self.name else ""
        return f"Code: {self.code}. DB::Exception: {self.message}{suffix}"

    def http_status(self, names_by_code: dict[int, str]) -> int:
        name = names_by_code.get(self.code) or self.name
        return int(_STATUS_BY_NAME.get(name, HTTPStatus.INTERNAL_SERVER_ERROR))


def from_chdb(exc: BaseException) -> EngineError:
    """chDB raises RuntimeError with ClickHouse's own text; keep it, and read the code from it."""
    text = str(exc).strip()
    # chDB's streaming wrapper adds its own prefix before ClickHouse's text.
    start = text.find("Code:")
    if start > 0:
        text = text[start:]
    match = _CODE_RE.match(text)
    if not match:
        return EngineError(UNKNOWN_EXCEPTION, text or type(exc).__name__)
    name = _NAME_RE.search(text)
    return EngineError(int(match.group(1)), text, name.group(1) if name else None)


def load_error_names(conn: object) -> dict[int, str]:
    """Every error code chDB knows, by number (ClickHouse's own table, so no list to keep in sync)."""
    sql = (
        "SELECT number, errorCodeToName(toUInt32(number)) AS name FROM numbers(5000) "
        "WHERE name != '' FORMAT TabSeparated"
    )
    raw = conn.query(sql, "TabSeparated").bytes()  # type: ignore[attr-defined]
    names = {}
    for line in raw.decode().splitlines():
        code, _, name = line.partition("\t")
        names[int(code)] = name
    return names
