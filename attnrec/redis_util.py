"""Redis clients built from :class:`Settings`, the one place that knows how to connect.

URL (``redis://``, ``rediss://`` for TLS, ``unix://``), ACL user, password and timeouts come
from the settings; the asyncio client serves the worker and the dashboard, the blocking one
the tools (bench, tests).
"""

from __future__ import annotations

from typing import Any

from attnrec.settings import Settings

__all__ = ["redis_client", "redis_sync"]


def _options(s: Settings, timeout_s: float | None) -> dict[str, Any]:
    t = s.redis_timeout_s if timeout_s is None else timeout_s
    return {
        "username": s.redis_username,
        "password": s.redis_password.get_secret_value() if s.redis_password else None,
        "socket_timeout": t,
        "socket_connect_timeout": t,
    }


def redis_client(s: Settings, *, timeout_s: float | None = None) -> Any:
    """An asyncio ``redis.asyncio.Redis`` (health-checked connections)."""
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(s.redis_url, health_check_interval=10, **_options(s, timeout_s))


def redis_sync(s: Settings, *, timeout_s: float | None = None) -> Any:
    """A blocking ``redis.Redis``."""
    import redis

    return redis.Redis.from_url(s.redis_url, **_options(s, timeout_s))
