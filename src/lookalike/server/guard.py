"""Transport guards: the Host-header check (DNS rebinding) and a deadline for request headers."""

from __future__ import annotations

import ipaddress
import json

from uvicorn.protocols.http.h11_impl import H11Protocol

# A connection must finish its request headers within this many seconds of opening (or of its
# previous response), else it is closed: slow-header clients ("slowloris") cannot pin file
# descriptors. Each open connection costs one descriptor and ~10 KB.
HEADER_TIMEOUT_S = 10.0

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """``Host`` header values a server bound to ``host:port`` answers; None: any (wildcard bind).

    A loopback bind answers only ``127.0.0.1``, ``localhost`` and ``[::1]`` with the port, so a
    page on another origin whose name re-resolves to 127.0.0.1 (DNS rebinding) gets 400. Any
    other bind answers the bound name. Without a port in the header, only port 80 matches.
    """
    if host in WILDCARD_HOSTS:
        return None
    if is_loopback(host):
        names = set(LOOPBACK_NAMES)
    else:
        try:
            names = {f"[{host}]" if ipaddress.ip_address(host.strip("[]")).version == 6 else host}
        except ValueError:
            names = {host.lower()}
    allowed = {f"{n}:{port}" for n in names}
    if port == 80:
        allowed |= names
    return allowed


class HostCheck:
    """ASGI middleware: 400 for a request whose ``Host`` header is not one of ``allowed``."""

    def __init__(self, app, allowed: set[str]):
        self.app = app
        self.allowed = {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        """Answer 400 or pass the request on."""
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1").lower() for k, v in scope["headers"] if k == b"host"), None)
            if host not in self.allowed:
                body = json.dumps({"detail": f"Host header {host!r} is not this server's address; use one of "
                                             f"{sorted(self.allowed)}."}).encode()
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for the request headers.

    uvicorn closes idle keep-alive connections, but not one that opens and never finishes its
    headers (nor a keep-alive connection that starts a request and stalls).
    """

    header_timeout = HEADER_TIMEOUT_S

    def connection_made(self, transport):
        """Start the header deadline of a new connection."""
        super().connection_made(transport)
        self._header_deadline = self.loop.call_later(self.header_timeout, self._header_timeout)

    def on_response_complete(self):
        """Start the deadline again for the next request on a kept-alive connection."""
        super().on_response_complete()
        self._cancel_deadline()
        if not self.transport.is_closing():
            self._header_deadline = self.loop.call_later(self.header_timeout, self._header_timeout)

    def connection_lost(self, exc):
        """Drop the deadline with the connection."""
        self._cancel_deadline()
        super().connection_lost(exc)

    def _cancel_deadline(self):
        handle = getattr(self, "_header_deadline", None)
        if handle is not None:
            handle.cancel()
            self._header_deadline = None

    def _header_timeout(self):
        self._header_deadline = None
        waiting = self.cycle is None or self.cycle.response_complete  # no request is being answered
        if waiting and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float) -> type[GuardedH11Protocol]:
    """The guarded protocol class with another header deadline (tests use short ones)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": float(seconds)})
