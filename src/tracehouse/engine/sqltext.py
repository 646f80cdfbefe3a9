"""Just enough of ClickHouse's SQL lexer to serve a query over HTTP.

The engine needs, before chDB sees a statement: where an INSERT's inline data starts (ClickHouse
sends `INSERT ... FORMAT X` and the data in one body), the output format (for the
`X-ClickHouse-Format` header and for stitching streamed chunks), every `SETTINGS` clause and `SET`
assignment (profile limits and constraints apply to them too, as in ClickHouse), and whether the
statement reaches outside the database (local files, Python objects: chDB runs as
clickhouse-local, which allows both; a ClickHouse server does not).

Text is scanned as latin-1, so character offsets are byte offsets of the request body.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

# Whitespace, comments, literals and quoted identifiers: what must never be mistaken for keywords.
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<line_comment>(?:--|\#)[^\n]*)
  | (?P<block_comment>/\*)
  | (?P<string>'(?:[^'\\]|\\.|'')*')
  | (?P<quoted>`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
  | (?P<heredoc>\$[A-Za-z0-9_]*\$)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_UNTERMINATED = {"'", "`", '"'}

# Table functions and functions that read or write the engine host's files or Python objects.
# A ClickHouse server confines these to user_files_path or has no such function; chDB does neither.
DENIED_CALLS = frozenset({"file", "filecluster", "filesystem", "python", "arrowstream", "executable", "executablepool"})
READ_ONLY_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"})
STREAMED_KEYWORDS = frozenset({"SELECT", "WITH"})


class Incomplete(Exception):
    """The text ends inside a token: more of the request body is needed to decide."""


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "ident" else ""


@dataclass(frozen=True)
class Assignment:
    """`name = value` in a SETTINGS clause or a SET statement; the value's span allows rewriting it."""

    name: str
    value: str
    start: int
    end: int


@dataclass
class Statement:
    keyword: str = ""  # the first keyword, upper-case ("" for an empty query)
    insert_format: str | None = None  # an INSERT with inline data: its input format
    data_start: int | None = None  # ...and the offset where the data begins
    insert_end: int | None = None  # ...and where its SQL ends (before FORMAT/VALUES, as chDB wants it)
    output_format: str | None = None  # FORMAT clause of any other statement
    assignments: list[Assignment] = field(default_factory=list)
    denied: str | None = None  # a reason to refuse the statement
    temporary_table: bool = False  # creates or drops a session's temporary table

    @property
    def read_only(self) -> bool:
        return self.keyword in READ_ONLY_KEYWORDS

    @property
    def changes_session(self) -> bool:
        """SET/USE and temporary tables change a chDB connection's session beyond this request."""
        return self.keyword in {"SET", "USE"} or self.temporary_table


def tokens(text: str, start: int = 0, *, final: bool = True) -> Iterator[Token]:
    """Significant tokens (no whitespace or comments). Raises Incomplete at an unfinished token."""
    pos, end = start, len(text)
    while pos < end:
        match = _TOKEN.match(text, pos)
        assert match is not None  # the last alternative matches any character
        kind = match.lastgroup or "punct"
        if kind == "block_comment":
            pos = _skip_block_comment(text, pos, final=final)
            continue
        if kind == "heredoc":
            close = text.find(match.group(), match.end())
            if close < 0:
                raise Incomplete
            yield Token("string", text[pos : close + len(match.group())], pos, close + len(match.group()))
            pos = close + len(match.group())
            continue
        if kind == "punct" and match.group() in _UNTERMINATED:
            raise Incomplete
        if kind == "line_comment" and match.end() == end and not final:
            raise Incomplete
        if kind not in ("ws", "line_comment"):
            yield Token(kind, match.group(), pos, match.end())
        pos = match.end()


def _skip_block_comment(text: str, pos: int, *, final: bool) -> int:
    """ClickHouse nests /* */ comments."""
    depth, i = 0, pos
    while i < len(text) - 1:
        pair = text[i : i + 2]
        if pair == "/*":
            depth, i = depth + 1, i + 2
        elif pair == "*/":
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    if final:
        return len(text)
    raise Incomplete


def analyze(text: str, *, final: bool = True) -> Statement:
    """Read one statement's structure. With final=False, raises Incomplete while an INSERT's
    header (everything before its data) is not complete yet."""
    stmt = Statement()
    scanner = _Scanner(text, final=final)
    first = scanner.next_significant()
    while first is not None and first.text == "(":
        first = scanner.next_significant()
    if first is None:
        return stmt
    stmt.keyword = first.upper
    if stmt.keyword == "INSERT":
        _scan_insert(scanner, stmt)
        return stmt
    _scan_statement(scanner, stmt, first)
    return stmt


class _Scanner:
    def __init__(self, text: str, *, final: bool) -> None:
        self.text = text
        self.final = final
        self._tokens = tokens(text, final=final)
        self._peeked: list[Token] = []
        self.previous: Token | None = None
        self.depth = 0

    def next_significant(self) -> Token | None:
        token = self._peeked.pop() if self._peeked else next(self._tokens, None)
        if token is not None:
            if token.text in "([{" and token.kind == "punct":
                self.depth += 1
            elif token.text in ")]}" and token.kind == "punct":
                self.depth -= 1
        self.previous = token
        return token

    def peek(self) -> Token | None:
        if not self._peeked:
            token = next(self._tokens, None)
            if token is None:
                return None
            self._peeked.append(token)
        return self._peeked[-1]


def _scan_statement(scanner: _Scanner, stmt: Statement, first: Token) -> None:
    keyword = stmt.keyword
    if keyword == "SET":
        stmt.assignments.extend(_assignments(scanner))
    if keyword == "SYSTEM":
        nxt = scanner.peek()
        if nxt is not None and nxt.upper in {"SHUTDOWN", "KILL"}:
            stmt.denied = "SYSTEM SHUTDOWN and SYSTEM KILL stop the engine process; stop the engine instead"
    previous: Token | None = first
    while (token := scanner.next_significant()) is not None:
        _check_token(scanner, stmt, token, previous)
        previous = token


def _check_token(scanner: _Scanner, stmt: Statement, token: Token, previous: Token | None) -> None:
    upper = token.upper
    if not upper:
        return
    after_dot = previous is not None and previous.text == "."
    nxt = scanner.peek()
    if upper.lower() in DENIED_CALLS and nxt is not None and nxt.text == "(" and not after_dot:
        stmt.denied = f"the function {token.text}() reads or writes the engine host's files or Python objects"
    elif upper == "SETTINGS" and not after_dot and nxt is not None and nxt.kind == "ident":
        stmt.assignments.extend(_assignments(scanner))
    elif upper == "TEMPORARY" and previous is not None and previous.upper in {"CREATE", "DROP"}:
        stmt.temporary_table = True
    elif upper in {"OUTFILE", "INFILE"} and previous is not None and previous.upper in {"INTO", "FROM"}:
        stmt.denied = f"{previous.upper} {upper} is not allowed over HTTP"
    elif upper == "FORMAT" and scanner.depth == 0 and nxt is not None and nxt.kind in ("ident", "quoted"):
        stmt.output_format = _unquote(nxt.text)


def _scan_insert(scanner: _Scanner, stmt: Statement) -> None:
    previous: Token | None = None
    while (token := scanner.next_significant()) is not None:
        upper = token.upper
        if scanner.depth == 0 and upper == "VALUES":
            stmt.insert_format, stmt.data_start, stmt.insert_end = "Values", token.end, token.start
            return
        if scanner.depth == 0 and upper == "FORMAT":
            name = scanner.next_significant()
            if name is None:
                if not scanner.final:
                    raise Incomplete
                return
            stmt.insert_format = _unquote(name.text)
            stmt.data_start = _data_start(scanner.text, name.end, final=scanner.final)
            stmt.insert_end = token.start
            return
        _check_token(scanner, stmt, token, previous)
        previous = token


def _data_start(text: str, pos: int, *, final: bool) -> int:
    """ClickHouse: data starts after the first newline, if there is one, else after the whitespace."""
    while pos < len(text) and text[pos] in " \t\r\n\f\v":
        if text[pos] == "\n":
            return pos + 1
        pos += 1
    if pos == len(text) and not final:
        raise Incomplete  # the newline (or the data) may still be on its way
    return pos


def _assignments(scanner: _Scanner) -> Iterator[Assignment]:
    """`name = value [, name = value ...]`; stops at anything else."""
    while True:
        name = scanner.peek()
        if name is None or name.kind != "ident":
            return
        scanner.next_significant()
        equals = scanner.next_significant()
        if equals is None or equals.text != "=":
            return
        value = _value(scanner)
        if value is None:
            return
        start, end = value
        yield Assignment(name.text, scanner.text[start:end], start, end)
        comma = scanner.peek()
        if comma is None or comma.text != ",":
            return
        scanner.next_significant()


def _value(scanner: _Scanner) -> tuple[int, int] | None:
    first = scanner.next_significant()
    if first is None:
        return None
    start = first.start
    if first.text in "+-" and first.kind == "punct":
        number = scanner.next_significant()
        return (start, number.end) if number is not None else None
    if first.text in "([{" and first.kind == "punct":
        depth = scanner.depth - 1
        last = first
        while scanner.depth > depth:
            token = scanner.next_significant()
            if token is None:
                return None
            last = token
        return start, last.end
    return start, first.end


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] in "`\"'" and text[-1] == text[0]:
        return text[1:-1]
    return text


def setting_value(text: str) -> str:
    """A SETTINGS value as the plain string a URL parameter would carry ('abc' -> abc)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return text[1:-1].replace("''", "'").replace("\\'", "'").replace("\\\\", "\\")
    return text
