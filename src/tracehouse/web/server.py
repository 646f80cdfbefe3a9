"""The HTTP server: uvicorn plus the connection limits uvicorn does not have.

uvicorn's h11 protocol has a keep-alive timeout (armed only after a response, and reset by any
byte), but no timeout for reading request headers or a request body and no cap on connections per
client: a client sending one header byte every few seconds, or a body at 1 byte/s, holds a
connection and its task for as long as it likes, and one address can open thousands of them.
`build_server` gives uvicorn (as `http=`) a subclass of its h11 protocol that:

- closes a connection whose request headers are not complete within `http_header_timeout_s` of the
  connection opening or of the previous response finishing (idle keep-alive connections included);
- closes a connection whose request body is not complete within `http_body_timeout_s` (plus a
  second's grace, so `tracehouse.request_body.read_body`, which starts its own clock a little
  later, is the one that answers 408; this backstop covers routes that read bodies any other way);
- refuses (closes at once) a new connection from an address that already has
  `http_max_connections_per_client` open (0 = no limit);
- answers with `Connection: close`, and closes, when it answers before a request body of more
  than `DRAIN_MAX_BYTES` (or a chunked one) arrived (a 413 on Content-Length, a 401 before the
  body, a 408): otherwise uvicorn would keep reading and discarding the rest of a body of any size
  to keep the connection alive.

Request headers are bounded by `MAX_HEADER_BYTES` (h11 answers 400 beyond it).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import get_remote_addr

from tracehouse.logging import get_logger

if TYPE_CHECKING:
    import asyncio

    from uvicorn.config import LifespanType

    from tracehouse.settings import Settings

# All request headers together (h11's incomplete-event bound; Node's default too). Langfuse
# clients send well under 2 kB; more is a 400 from h11 before the app sees anything.
MAX_HEADER_BYTES = 16 * 1024
# Idle time before a kept-alive connection is closed: uvicorn's and Node's default. A proxy in front
# should close idle upstream connections sooner (the header timeout closes them at the latest).
KEEP_ALIVE_S = 5
BODY_TIMEOUT_GRACE_S = 1.0
# Answered before its body arrived, a request declaring at most this much is read to its end (and
# dropped) so the connection can be kept alive; a larger or chunked one closes the connection.
DRAIN_MAX_BYTES = 64 * 1024
LOG_EVERY_S = 10.0


class QuietServer(uvicorn.Server):
    """uvicorn re-raises the stop signal after shutting down, which would kill the process before
    our own cleanup (closing chDB, stopping the embedded Redis) runs. We handle SIGTERM/SIGINT on
    the loop ourselves instead."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_server(
    app: Any,
    settings: Settings,
    *,
    host: str,
    port: int,
    lifespan: LifespanType = "on",
    timeout_graceful_shutdown: int | None = 5,
) -> QuietServer:
    """A uvicorn server for `app` with the limits in `settings` (see the module docstring)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=limited_protocol(
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s + BODY_TIMEOUT_GRACE_S,
            max_per_client=settings.http_max_connections_per_client,
        ),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=KEEP_ALIVE_S,
        log_level="warning",
        lifespan=lifespan,
        access_log=False,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
    )
    return QuietServer(config)


class _Tally:
    """Closed and refused connections, logged at most once per LOG_EVERY_S (a flood is one line)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.logged_at = 0.0

    def note(self, reason: str, client: str | None) -> None:
        self.counts[reason] += 1
        now = time.monotonic()
        if now - self.logged_at >= LOG_EVERY_S:
            get_logger("tracehouse.http").info("http_connections_closed", last_client=client, **self.counts)
            self.counts.clear()
            self.logged_at = now


def limited_protocol(*, header_timeout_s: float, body_timeout_s: float, max_per_client: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with header/body timeouts and a per-client connection cap. Each call
    makes a class of its own, so each server counts its own connections."""
    open_by_client: Counter[str] = Counter()
    tally = _Tally()

    class LimitedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._host: str | None = None  # set once the connection is counted
            self._refused = False
            self._timer: asyncio.TimerHandle | None = None
            self._timing: Any = None  # the h11 state the timer runs for (IDLE or SEND_BODY)
            app = self.app

            async def close_when_answering_early(scope: Any, receive: Any, send: Any) -> None:
                async def send_with_close(message: Any) -> None:
                    if message["type"] == "http.response.start" and self._unread_body_is_large():
                        headers = list(message.get("headers", []))
                        if (b"connection", b"close") not in headers:
                            message = {**message, "headers": [*headers, (b"connection", b"close")]}
                    await send(message)

                await app(scope, receive, send_with_close)

            self.app = close_when_answering_early

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            remote = get_remote_addr(transport)
            host = remote[0] if remote else None
            if host is not None and max_per_client and open_by_client[host] >= max_per_client:
                self._refused = True
                tally.note("too_many_connections", host)
                transport.close()
                return
            if host is not None:
                open_by_client[host] += 1
                self._host = host
            super().connection_made(transport)
            self._sync_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._cancel_timer()
            super().connection_lost(exc)
            if self._host is not None:
                open_by_client[self._host] -= 1
                if open_by_client[self._host] <= 0:
                    del open_by_client[self._host]
                self._host = None

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._sync_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._sync_timer()

        def _unread_body_is_large(self) -> bool:
            """Answering before the body is in: a small declared rest is read and dropped (the
            connection stays alive, as uvicorn does); a large or chunked one is not read at all."""
            if self.conn.their_state is not h11.SEND_BODY:
                return False
            length = next((value for name, value in self.headers if name == b"content-length"), None)
            return length is None or not length.isdigit() or int(length) > DRAIN_MAX_BYTES

        # -- one timer: headers while h11 waits for a request, body while it receives one --------
        def _sync_timer(self) -> None:
            state = self.conn.their_state
            wanted = state if state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing() else None
            if wanted is self._timing:
                return
            self._cancel_timer()
            if wanted is not None:
                delay = header_timeout_s if wanted is h11.IDLE else body_timeout_s
                self._timer = self.loop.call_later(delay, self._expired, wanted)
                self._timing = wanted

        def _cancel_timer(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._timing = None

        def _expired(self, state: Any) -> None:
            self._timer = None
            self._timing = None
            if self.conn.their_state is not state or self.transport.is_closing():
                return
            tally.note("header_timeout" if state is h11.IDLE else "body_timeout", self._host)
            # A request in progress sees a disconnect (its body read fails quietly).
            self.transport.close()

    return LimitedH11Protocol
