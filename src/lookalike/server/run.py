"""Run the server: check the port, warn about exposure, and start uvicorn with safe limits."""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

from .. import images
from .app import BODY_TIMEOUT_S, DEFAULT_MAX_UPLOAD, create_app
from .guard import HEADER_TIMEOUT_S, allowed_hosts, is_loopback, with_header_timeout

# Idle keep-alive connections are closed after this many seconds.
KEEP_ALIVE_S = 5
# Connections plus requests in progress; beyond it uvicorn answers 503 at once. Each connection
# costs a file descriptor and ~10 KB; the 32-client load test needs 32.
MAX_CONNECTIONS = 128
# Largest request line + headers h11 buffers before answering 400 (16 KiB, h11's own default).
MAX_HEADER_BYTES = 16 * 1024
# SIGTERM / Ctrl-C: requests in flight get this many seconds, then they are cancelled.
SHUTDOWN_S = 5

EXPOSED_WARNING = """\
WARNING: lookalike is listening on {host}:{port}, which is reachable from other machines.
Anyone who can reach it can see EVERY photo in the collection and its absolute path on this
disk, and make the server work (uploads, duplicate searches); only actions need the token.
Use --host 127.0.0.1 (the default) unless this network is trusted.{extra}"""
TOKEN_ENV = "LOOKALIKE_TOKEN"
# Bytes of randomness in a generated token (43 URL-safe characters).
TOKEN_BYTES = 32


class ServeError(RuntimeError):
    """The server cannot start (e.g. the port is taken); the message is one sentence for the user."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or :class:`ServeError` saying why not."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ServeError(f"Cannot serve on {host!r}: {err.strerror}; give an address such as 127.0.0.1.") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first: "localhost" may list ::1 first
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        if err.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise ServeError(f"Port {port} on {host} is already in use (another lookalike serve?); "
                             f"stop it or choose another with --port.") from None
        raise ServeError(f"Cannot listen on {host}:{port}: {err.strerror or err}.") from None
    sock.set_inheritable(True)
    return sock


def build_config(app, *, header_timeout: float = HEADER_TIMEOUT_S, log_level: str = "warning"):
    """The uvicorn config: h11 with a header deadline, keep-alive and connection caps, 5 s shutdown."""
    import uvicorn

    return uvicorn.Config(app, http=with_header_timeout(header_timeout), lifespan="off", log_level=log_level,
                          timeout_keep_alive=KEEP_ALIVE_S, limit_concurrency=MAX_CONNECTIONS,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_graceful_shutdown=SHUTDOWN_S,
                          server_header=False)


def resolve_token(token: str | None, host: str, read_only: bool) -> tuple[str | None, bool]:
    """The token actions need, and whether it was generated: ``token``, else ``$LOOKALIKE_TOKEN``, else a new one.

    A server reachable from other machines (``host`` not loopback) must be given its token
    (:class:`ServeError` otherwise) unless it is ``read_only``, which needs none.
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < 16:
        raise ServeError(f"The token is {len(token)} characters; use at least 16 (e.g. python -c \"import secrets; "
                         "print(secrets.token_urlsafe())\").")
    if read_only:
        return token, False
    if token is None and not is_loopback(host):
        raise ServeError(f"--host {host} is reachable from other machines: give the token actions need with --token "
                         f"or {TOKEN_ENV}, or add --read-only.")
    if token is None:
        return secrets.token_urlsafe(TOKEN_BYTES), True
    return token, False


def run(db: str | Path, *, host: str = "127.0.0.1", port: int = 8000, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
        max_pixels: int | None = images.DEFAULT_MAX_PIXELS, header_timeout: float = HEADER_TIMEOUT_S,
        body_timeout: float = BODY_TIMEOUT_S, log_level: str = "warning", echo=print, token: str | None = None,
        read_only: bool = False, move_to: str | Path | None = None) -> None:
    """Serve the collection at ``db`` until SIGTERM or Ctrl-C.

    Checks the port first (:class:`ServeError` if taken), warns loudly on ``stderr`` when
    ``host`` is not a loopback address, answers only ``Host`` headers naming the bound address
    (DNS rebinding; a wildcard bind answers any), and runs uvicorn with the limits above.
    Actions (moving duplicates, undo) need ``token`` (see :func:`resolve_token`); the page URL
    printed carries it in its fragment (``#token=...``, never sent to the server or logged).
    """
    import uvicorn

    token, generated = resolve_token(token, host, read_only)
    try:
        from .acting import check_move_to

        check_move_to(db, move_to)
    except ValueError as err:
        raise ServeError(str(err)) from None
    sock = bind(host, port)
    try:
        hosts = allowed_hosts(host, port)
        if not is_loopback(host):
            extra = ("\nThe Host-header check is off for a wildcard address." if hosts is None else "")
            print(EXPOSED_WARNING.format(host=host, port=port, extra=extra), file=sys.stderr, flush=True)
        app = create_app(db, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, allowed_hosts=hosts,
                         body_timeout=body_timeout, token=token, read_only=read_only, move_to=move_to)
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}/"
        echo(f"lookalike serving {db} at {url}  (API docs: /docs; Ctrl-C to stop)")
        if read_only:
            echo("Read-only: actions are off.")
        else:
            moves = f"duplicates are moved to {move_to}" if move_to else "moves are off (no --move-to)"
            echo(f"To act (review duplicates, {moves}), open: {url}#token={token}" if generated else
                 f"Actions need the token you gave: open {url}#token=TOKEN ({moves}).")
        server = uvicorn.Server(build_config(app, header_timeout=header_timeout, log_level=log_level))
        server.run(sockets=[sock])
    finally:
        sock.close()
