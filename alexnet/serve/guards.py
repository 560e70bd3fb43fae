"""What ``alexnet serve`` refuses before a request reaches its routes: a ``Host`` header that names none of the
server's own names (DNS rebinding: a page on another site made to talk to a server bound to 127.0.0.1), and a
client that sends its request line and headers too slowly (the connection is closed after ``--read-timeout``);
and, when the server stops, a connection whose request has not arrived yet is given a moment for it."""
from __future__ import annotations

import asyncio
import json

try:                                              # uvicorn's "auto": httptools when installed, h11 otherwise
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as BaseProtocol
except ImportError:
    from uvicorn.protocols.http.h11_impl import H11Protocol as BaseProtocol

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
SHUTDOWN_GRACE_S = 2.0      # at shutdown, how long a connection with no request yet may take to send it


def host_name(header: str) -> str:
    """``[::1]:8000`` -> ``::1``, ``LocalHost.:80`` -> ``localhost``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") <= 1 else header


def allowed_names(bound: str) -> frozenset[str] | None:
    """The Host names a server bound to ``bound`` answers; None (any) for a wildcard address (0.0.0.0, ::)."""
    if bound.strip() in WILDCARDS:
        return None
    return LOOPBACK_NAMES | {host_name(bound if not bound.count(":") > 1 else f"[{bound}]")}


class HostCheck:
    """ASGI middleware: a request whose Host is not one of ``names`` gets a JSON 400 (no Host: answered)."""

    def __init__(self, app, names: frozenset[str] | None) -> None:
        self.app, self.names = app, names

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.names is not None:
            header = dict(scope["headers"]).get(b"host")
            if header is not None and host_name(header.decode("latin-1")) not in self.names:
                message = (f"the Host header {header.decode('latin-1')!r} is not a name of this server (it answers "
                           f"{', '.join(sorted(self.names))}); start it with --host NAME to serve under another name")
                body = json.dumps({"error": message, "status": 400}).encode()
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class TimedProtocol(BaseProtocol):
    """uvicorn's HTTP protocol, closing a connection whose first request's headers are not in after ``timeout``
    seconds (uvicorn's own keep-alive timeout covers the wait between requests). At shutdown, a connection with
    no request yet is not closed at once, as uvicorn's is: its request may be on its way (the kernel accepted
    the connection), so it has SHUTDOWN_GRACE_S (at most ``timeout``) to arrive, and is answered, then closed."""

    timeout = 30.0                   # set from --read-timeout in each server process
    stopping = False                 # the server is shutting down: answer the request that comes, then close

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.header_timer = asyncio.get_running_loop().call_later(self.timeout, self.headers_late)

    def headers_late(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.logger.info("closed a connection that sent no complete request headers in %g s", self.timeout)
            self.transport.close()

    def shutdown(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.stopping = True
            self.loop.call_later(min(self.timeout, SHUTDOWN_GRACE_S), self.no_request_at_shutdown)
            return
        super().shutdown()                     # a request under way finishes; an idle keep-alive one is closed

    def no_request_at_shutdown(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            super().shutdown()                 # closed, as uvicorn closes a connection that sent nothing

    def handle_events(self) -> None:
        super().handle_events()
        if self.stopping and self.cycle is not None:
            self.cycle.keep_alive = False      # answered with Connection: close

    def connection_lost(self, exc) -> None:
        self.header_timer.cancel()
        super().connection_lost(exc)
