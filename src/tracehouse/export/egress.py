"""Where exports may connect: the egress rule, and the proxy that enforces it at connect time.

Export destinations are configured through the API, so a project key chooses the address the server
uploads to. Left alone, that is server-side request forgery: signed PUTs to the cloud metadata
service, to Redis on loopback, to anything on the private network. The rule below refuses every
destination that is not on the public internet, unless an operator listed it in
`TRACEHOUSE_EXPORT_ALLOWED_DESTINATIONS` (and only the admin key may save such an endpoint).

Checking the endpoint when it is saved is not enough: a name can resolve to a public address then
and to 127.0.0.1 a minute later (DNS rebinding), and the blob client (obstore, in Rust) resolves and
connects on its own. So every destination store is given `proxy_url` pointing at `EgressProxy`, a
small forward proxy on loopback that resolves the host itself, checks every address, and connects
to a checked address (never resolving again). Refusals are one fixed 403, answered before any
connection attempt, so whether an internal port is open can never be observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tracehouse.errors import ConfigError
from tracehouse.logging import get_logger

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]

ALLOWLIST_SETTING = "TRACEHOUSE_EXPORT_ALLOWED_DESTINATIONS"

# Cloud metadata and platform services: refused even when an allowlist entry covers them.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS VPC DNS
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public address, reachable only from inside Azure)
        "192.0.0.192",  # Oracle Cloud
    )
)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64, Teredo), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _unwrap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        return _embedded_ipv4(address) or address
    return address


def is_metadata(address: IPAddress) -> bool:
    return address in METADATA_ADDRESSES or _unwrap(address) in METADATA_ADDRESSES


def is_public(address: IPAddress) -> bool:
    """A unicast address on the public internet: not loopback, private, CGNAT, link-local,
    unique-local, site-local, unspecified, multicast, reserved or documentation, nor an IPv6 form
    (mapped, 6to4, NAT64, Teredo) of such an IPv4 address, nor a metadata address."""
    address = _unwrap(address)
    if is_metadata(address):
        return False
    if isinstance(address, ipaddress.IPv6Address) and (address.is_site_local or address.scope_id):
        return False
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_private
        and not address.is_link_local
        and not address.is_loopback
        and not address.is_unspecified
    )


@dataclass(frozen=True)
class _Entry:
    """One allowlist entry: a host name or a network, optionally with a port."""

    host: str | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None

    def matches(self, host: str, port: int, address: IPAddress) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == _normal_host(host)
        assert self.network is not None
        return address in self.network or _unwrap(address) in self.network


def _parse_entry(text: str) -> _Entry:
    try:
        return _Entry(None, ipaddress.ip_network(text.strip("[]"), strict=False), None)
    except ValueError:
        pass
    host, port = text, None
    if text.startswith("["):  # [v6]:port
        inner, _, rest = text[1:].partition("]")
        host, port_text = inner, rest.removeprefix(":")
        port = int(port_text) if port_text.isdigit() else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text.isdigit():
            raise ValueError(text)
        port = int(port_text)
    if port is not None and not 0 < port < 65536:
        raise ValueError(text)
    try:
        return _Entry(None, ipaddress.ip_network(host, strict=False), port)
    except ValueError:
        pass
    name = _normal_host(host)
    if not name or any(c in name for c in "/@ \t\\?#"):
        raise ValueError(text)
    return _Entry(name, None, port)


class EgressRule:
    """Public internet addresses are allowed; anything else only when the allowlist covers it;
    cloud metadata addresses and names never."""

    def __init__(self, allowed: str | Iterable[str] = "") -> None:
        items = allowed.split(",") if isinstance(allowed, str) else list(allowed)
        entries = []
        for item in (i.strip() for i in items):
            if not item:
                continue
            try:
                entries.append(_parse_entry(item))
            except ValueError:
                raise ConfigError(
                    f"{ALLOWLIST_SETTING}: {item!r} is not a host, host:port, IP address or CIDR"
                ) from None
        self._entries = tuple(entries)

    @staticmethod
    def refuses_name(host: str) -> bool:
        """Refused by name alone (a cloud metadata service), before any resolution."""
        return _normal_host(host) in METADATA_NAMES

    def allowlisted(self, host: str, port: int, address: IPAddress) -> bool:
        return any(e.matches(host, port, address) for e in self._entries)

    def permits(self, host: str, port: int, addresses: list[IPAddress], *, internal: bool = True) -> bool:
        """May a connection to `host:port` go to these (resolved) addresses? Every one must pass:
        the connection may end up on any of them. `internal=False` ignores the allowlist (what a
        project key may save)."""
        if not addresses or self.refuses_name(host):
            return False
        for address in addresses:
            if is_metadata(address):
                return False
            if is_public(address):
                continue
            if not (internal and self.allowlisted(host, port, address)):
                return False
        return True


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve_host(host: str, port: int, *, timeout_s: float = 5.0) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal is itself); [] when it does not resolve."""
    literal = ip_literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), timeout_s
        )
    except (OSError, TimeoutError, UnicodeError):
        return []
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in found:
            found.append(address)
    return found


# --- the proxy ----------------------------------------------------------------------------------
BLOCKED_BODY = b"tracehouse egress proxy: destination blocked by the egress rule\n"
_ANSWERS = {
    400: (b"Bad Request", b"tracehouse egress proxy: malformed request\n"),
    403: (b"Forbidden", BLOCKED_BODY),
    502: (b"Bad Gateway", b"tracehouse egress proxy: destination unreachable\n"),
    503: (b"Service Unavailable", b"tracehouse egress proxy: too many connections\n"),
}
# Hop-by-hop headers a proxy must not forward (RFC 9110 7.6.1), plus the proxy's own.
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"te", b"trailer", b"upgrade"}
)
_CHUNK = 64 * 1024


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _authority(text: str, default_port: int | None) -> tuple[str, int]:
    """`host:port`, `[v6]:port` (or without the port when there is a default) -> (host, port)."""
    parts = urlsplit("//" + text)
    host, port = parts.hostname, parts.port if parts.port is not None else default_port
    if not host or port is None or not 0 < port < 65536 or parts.username is not None or parts.path:
        raise ValueError(text)
    return host, port


class EgressProxy:
    """A forward proxy on 127.0.0.1 (a random port) for the destination stores of exports.

    - `CONNECT host:port` (https): resolve, check every address, connect to a checked one, answer
      200 and pipe bytes both ways (TLS stays end to end).
    - `PUT http://host:port/path HTTP/1.1` (absolute form, what a client sends a proxy for http://):
      the same check, then the request goes out in origin form with `Connection: close`, and the
      response comes back with `Connection: close` (one request per connection, so a kept-alive
      connection can never carry a request to another host).

    Bounded: header size, connect timeout, idle timeout, concurrent connections; `close()` ends all.
    `blocked` and `unreachable` count refusals, so the export job can report them in fixed words.
    """

    def __init__(
        self,
        rule: EgressRule,
        *,
        resolve: Resolve = resolve_host,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 120.0,
        max_connections: int = 64,
        max_header_bytes: int = 32 * 1024,
        internal: bool = False,
    ) -> None:
        self._rule = rule
        self._internal = internal  # may the allowlist be used (only for an endpoint the admin saved)
        self._resolve = resolve
        self._connect_timeout_s = connect_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._max_connections = max_connections
        self._max_header_bytes = max_header_bytes
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._log = get_logger("tracehouse.export.egress")
        self.url = ""
        self.blocked = 0
        self.unreachable = 0

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=self._max_header_bytes)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> EgressProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- one client connection -----------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._exchange(reader, writer)
        except asyncio.CancelledError:
            pass  # close(): end quietly (asyncio logs a cancelled connection handler as an error)
        finally:
            self._handlers.discard(task)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            if len(self._handlers) > self._max_connections:
                raise _Refused(503)
            target, forward = await self._read_request(reader)
            upstream_reader, upstream = await self._open(*target)
            if forward is None:
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                await writer.drain()
            else:
                upstream.write(forward)
            await self._pipe_both(reader, writer, upstream_reader, upstream, rewrite=forward is not None)
        except _Refused as refused:
            await self._answer(reader, writer, refused.status)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # a peer went away or stalled: just close both sides
        finally:
            for stream in (upstream, writer):
                if stream is not None:
                    stream.close()
            for stream in (upstream, writer):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        await stream.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[tuple[str, int], bytes | None]:
        """Parse the request head; return the (host, port) to reach and, for plain http, the head
        to send upstream (None for CONNECT)."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._connect_timeout_s)
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            raise _Refused(400) from None
        lines = head[:-4].split(b"\r\n")
        try:
            method, target, version = lines[0].decode("ascii").split(" ")
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
            if method == "CONNECT":
                return _authority(target, None), None
            url = urlsplit(target)
            if url.scheme != "http":
                raise ValueError(target)
            host, port = _authority(url.netloc, 80)
        except (ValueError, UnicodeDecodeError):
            raise _Refused(400) from None
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        headers = [h for h in lines[1:] if h.split(b":", 1)[0].strip().lower() not in _HOP_BY_HOP]
        if not any(h.split(b":", 1)[0].strip().lower() == b"host" for h in headers):
            headers.insert(0, b"Host: " + url.netloc.encode("ascii"))
        request_line = f"{method} {path} {version}".encode("ascii")
        return (host, port), b"\r\n".join([request_line, *headers, b"Connection: close", b"", b""])

    async def _open(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve once, check every address, connect to a checked address (never re-resolving)."""
        addresses = [] if self._rule.refuses_name(host) else await self._resolve(host, port)
        if not self._rule.permits(host, port, addresses, internal=self._internal):
            self.blocked += 1
            self._log.warning("blob_export_egress_blocked", host=host, port=port)
            raise _Refused(403)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout_s
        for address in addresses:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(str(address), port, limit=_CHUNK), max(0.1, deadline - loop.time())
                )
            except (OSError, TimeoutError):
                continue
        self.unreachable += 1
        raise _Refused(502)

    async def _pipe_both(
        self,
        client_reader: asyncio.StreamReader,
        client: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        *,
        rewrite: bool,
    ) -> None:
        """Copy both ways until the destination is done (or the connection idles out)."""
        loop = asyncio.get_running_loop()
        last_activity = [loop.time()]

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while True:
                try:
                    chunk = await asyncio.wait_for(src.read(_CHUNK), self._idle_timeout_s)
                except TimeoutError:
                    if loop.time() - last_activity[0] < self._idle_timeout_s:
                        continue  # the other direction is busy (a long upload): not idle
                    raise
                if not chunk:
                    return
                last_activity[0] = loop.time()
                dst.write(chunk)
                await dst.drain()

        async def downstream() -> None:
            if rewrite:  # the response head gets `Connection: close`, then the body passes through
                head = await asyncio.wait_for(upstream_reader.readuntil(b"\r\n\r\n"), self._idle_timeout_s)
                lines = head[:-4].split(b"\r\n")
                kept = [h for h in lines[1:] if h.split(b":", 1)[0].strip().lower() not in _HOP_BY_HOP]
                client.write(b"\r\n".join([lines[0], *kept, b"Connection: close", b"", b""]))
            await copy(upstream_reader, client)

        async def upstream_direction() -> None:
            await copy(client_reader, upstream)
            if upstream.can_write_eof():
                upstream.write_eof()  # the client is done sending; the destination may still answer

        up = asyncio.ensure_future(upstream_direction())
        try:
            await downstream()  # the destination closing (or answering in full) ends the exchange
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            pass
        finally:
            up.cancel()
            await asyncio.gather(up, return_exceptions=True)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int) -> None:
        """A fixed answer, then a short lingering close: discard what the client is still sending
        (a request body), so that closing does not reset the connection before it read the answer."""
        reason, body = _ANSWERS[status]
        try:
            writer.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (status, reason, len(body), body)
            )
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            deadline = asyncio.get_running_loop().time() + 2.0
            for _ in range(256):  # at most 16 MiB
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or not await asyncio.wait_for(reader.read(_CHUNK), remaining):
                    break
        except (OSError, TimeoutError):
            pass
