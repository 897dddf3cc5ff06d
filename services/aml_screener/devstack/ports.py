"""Free loopback ports for the embedded stack's servers.

The embedded Redis (and anything else the demo or tests start) must never take a fixed port: a developer's own
Redis may already listen on 6379, and parallel test runs must not collide. This module is responsible for
picking ports the kernel considers free.
"""

from __future__ import annotations

import socket

__all__ = ["LOOPBACK", "free_port"]

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now.

    The kernel picks it (bind to port 0) and the probe socket is closed again, so another process could take
    the port before the caller binds it. That window is a few milliseconds; callers that start a server on it
    (``RedisServer``) retry with a new port when the bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
