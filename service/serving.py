"""Serving the API on one port from N processes, each with its own listening socket.

uvicorn's `--workers` shares one listening socket among its processes, and whichever process is
in `accept()` first takes the connection: with keep-alive clients (pollers, dashboards, a load
balancer's pool) nearly every connection lands in one process while the others idle. Here each
process binds its own socket to the port with SO_REUSEPORT, and the kernel spreads new
connections over them by a hash of the client's address. uvicorn's supervisor still starts,
health-checks and restarts the processes and handles signals.

The supervisor keeps one bound, non-listening socket on the port: it fails fast when the port is
taken and keeps it reserved while a process restarts; the kernel routes connections only to the
listening sockets. Linux accepts a SO_REUSEPORT bind only from the same user, so no other user's
process can join the group.
"""
from __future__ import annotations

import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess


def reuseport_socket(host: str, port: int, backlog: int | None) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT; listening when `backlog` is given."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if backlog is not None:
        sock.listen(backlog)
        sock.set_inheritable(True)
    return sock


class OwnListener:
    """Stands in for the shared socket handed to each uvicorn process: unpickled in the process
    (spawn), it becomes that process's own listening SO_REUSEPORT socket."""

    def __init__(self, host: str, port: int, backlog: int):
        self.address = (host, port, backlog)

    def __reduce__(self):
        return reuseport_socket, self.address


def serve(app: str, *, host: str, port: int, workers: int, **options: Any) -> None:
    """Run `app` (an import string of an app factory) on host:port in `workers` processes."""
    if workers <= 1:
        uvicorn.run(app, factory=True, host=host, port=port, **options)
        return
    reserved = reuseport_socket(host, port, backlog=None)
    port = reserved.getsockname()[1]  # port 0: the one the kernel chose, for every process
    config = uvicorn.Config(app, factory=True, host=host, port=port, workers=workers, **options)
    try:
        Multiprocess(config, sockets=[OwnListener(host, port, config.backlog)]).run()
    finally:
        reserved.close()
