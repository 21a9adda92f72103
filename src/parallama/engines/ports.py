"""Free ports on this machine, and who holds a busy one (psutil), so `up` can say so and move on."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class PortHolder:
    """The process listening on a port, when it can be told."""

    pid: int | None
    name: str | None

    def __str__(self) -> str:
        if self.pid is None:
            return "another process (not visible to this user)"
        return f"{self.name or 'a process'} (pid {self.pid})"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind `host:port` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> PortHolder:
    """Which process listens on `port` (any address)."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, PermissionError):
        return PortHolder(None, None)
    for conn in connections:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            if conn.pid is None:
                return PortHolder(None, None)
            try:
                return PortHolder(conn.pid, psutil.Process(conn.pid).name())
            except psutil.Error:
                return PortHolder(conn.pid, None)
    return PortHolder(None, None)
