"""Redis clients built from :class:`Settings`, the one place that knows how to connect.

One Redis (``redis://``, ``rediss://`` for TLS, ``unix://``) or a Redis Cluster
(``redis+cluster://host:port[,host:port...]``, ``rediss+cluster://``: redis-py's ``RedisCluster``,
which learns the cluster's nodes and slots from the ones named and follows slots that move).
ACL user, password and timeouts come from the settings (a cluster URL may carry them too). The
asyncio client serves the worker and the dashboard, the blocking one the tools (trainer's gate,
bench, tests). Code that must know which kind it holds asks :func:`is_cluster`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

from attnrec.errors import TransientError
from attnrec.settings import Settings
from attnrec.units import parse_redis_cluster_url

__all__ = ["redis_client", "redis_sync", "is_cluster", "HASH_SLOTS", "key_slot", "slot_tags", "eval_calls",
           "redis_errors", "transient_redis_error"]


def _options(s: Settings, timeout_s: float | None) -> dict[str, Any]:
    t = s.redis_timeout_s if timeout_s is None else timeout_s
    return {
        "username": s.redis_username,
        "password": s.redis_password.get_secret_value() if s.redis_password else None,
        "socket_timeout": t,
        "socket_connect_timeout": t,
    }


def _cluster_options(s: Settings, timeout_s: float | None) -> dict[str, Any]:
    u = parse_redis_cluster_url(s.redis_url)
    opts = _options(s, timeout_s)
    opts["username"] = opts["username"] or u.username
    opts["password"] = opts["password"] or u.password
    if u.tls:
        opts.update(ssl=True, ssl_ca_certs=u.ssl_ca_certs)
    # while a failed master's slots move to its replica, the others are served: the client must
    # start (and re-read the slots) without every slot covered
    opts["require_full_coverage"] = False
    return opts


def is_cluster(client: Any) -> bool:
    """Whether ``client`` (either kind, asyncio or blocking) talks to a Redis Cluster."""
    import redis.asyncio.cluster
    import redis.cluster

    return isinstance(client, (redis.asyncio.cluster.RedisCluster, redis.cluster.RedisCluster))


def redis_client(s: Settings, *, timeout_s: float | None = None) -> Any:
    """An asyncio ``redis.asyncio.Redis`` (health-checked connections), or a
    ``redis.asyncio.RedisCluster`` for a cluster URL."""
    import redis.asyncio as aioredis

    if s.redis_is_cluster:
        from redis.asyncio.cluster import ClusterNode

        nodes = [ClusterNode(h, p) for h, p in parse_redis_cluster_url(s.redis_url).nodes]
        return aioredis.RedisCluster(startup_nodes=nodes, health_check_interval=10, **_cluster_options(s, timeout_s))
    return aioredis.Redis.from_url(s.redis_url, health_check_interval=10, **_options(s, timeout_s))


def redis_sync(s: Settings, *, timeout_s: float | None = None) -> Any:
    """A blocking ``redis.Redis``, or a ``redis.cluster.RedisCluster`` for a cluster URL."""
    import redis

    if s.redis_is_cluster:
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode(h, p) for h, p in parse_redis_cluster_url(s.redis_url).nodes]
        return RedisCluster(startup_nodes=nodes, **_cluster_options(s, timeout_s))
    return redis.Redis.from_url(s.redis_url, **_options(s, timeout_s))


# ------------------------------------------------------------------------------ Redis Cluster slots
#: Redis Cluster's hash slots
HASH_SLOTS = 16384
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def key_slot(key: str | bytes) -> int:
    """The cluster slot of ``key``: CRC16 of its hash tag (the text between the first ``{`` and
    the next ``}``, when not empty), else of the whole key; Redis' own rule."""
    from binascii import crc_hqx

    k = key.encode() if isinstance(key, str) else key
    start = k.find(b"{")
    if start != -1:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1 : end]
    return crc_hqx(k, 0) % HASH_SLOTS


def _base36(i: int) -> str:
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = _B36[r] + out
        if not i:
            return out


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """A hash tag for every slot: ``slot_tags()[s]`` is the first base-36 number (``0``, ``1``,
    .. ``z``, ``10``, ..) whose CRC16 falls in slot ``s`` (at most 4 characters). Keys that must
    live in a given slot — the per-slot state markers — carry ``{<tag>}``. Part of the Redis key
    layout (DESIGN.md): the rule must never change. Computed once, in ~0.25 s."""
    from binascii import crc_hqx

    tags: list[str | None] = [None] * HASH_SLOTS
    left, i = HASH_SLOTS, 0
    while left:
        t = _base36(i)
        s = crc_hqx(t.encode(), 0) % HASH_SLOTS
        if tags[s] is None:
            tags[s] = t
            left -= 1
        i += 1
    return tuple(t for t in tags if t is not None)


async def eval_calls(client: Any, sha: str, script: str, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]],
                     after: Sequence[tuple[Any, ...]] = ()) -> list[Any]:  # fmt: skip
    """Run a Lua script once per ``(keys, args)`` call in one pipeline (a cluster pipeline sends
    each node its calls in one round trip), then the raw commands ``after`` (each
    ``(*args, {"target_nodes": node})`` or plain args) on the same connections. Returns each
    result in order, a failed call's exception in its place. A node that does not know the
    script (a replica promoted since, a restarted server) is taught it and its calls redone."""
    from redis.exceptions import NoScriptError

    results: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for i in todo:
            keys, args = calls[i]
            # (a cluster pipeline refuses its evalsha() method, not the command: routed by its keys)
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        for cmd in after:
            *args, kw = cmd if cmd and isinstance(cmd[-1], dict) else (*cmd, {})
            pipe.execute_command(*args, **kw)
        got = await pipe.execute(raise_on_error=False)
        for i, r in zip(todo, got, strict=False):
            results[i] = r
        tail = got[len(todo):]
        todo = [i for i in todo if isinstance(results[i], NoScriptError)]
        if not todo or attempt:
            return results + list(tail)
        await client.script_load(script)  # a cluster client loads it on every master
    return results


# ------------------------------------------------------------------------------ errors
#: Failures of the connection or of the cluster's routing: the server (or the slot's master)
#: is away for now. A Redis Cluster adds the slot moving (MOVED / ASK beyond the client's own
#: retries, TRYAGAIN during a migration, CLUSTERDOWN / MASTERDOWN during a failover) and the
#: client's own routing trouble (no node serves the slot yet, no startup node answers).
def _transient_types() -> tuple[type[BaseException], ...]:
    import redis.exceptions as rexc

    return (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, rexc.TryAgainError, rexc.ClusterError,
            rexc.AskError, rexc.RedisClusterException, OSError)  # fmt: skip


#: Error replies by which a healthy Redis refuses a command for a while: out of memory under
#: ``noeviction``, a replica during failover, a failed AOF/RDB write, a busy script, cluster
#: resharding. They say nothing about the event, so they must pause the worker (retry), never
#: count towards dead-lettering it as poison. NOPERM/NOAUTH/WRONGPASS are misconfiguration
#: rather than passing trouble, but pausing until an operator fixes the ACL is right:
#: dead-lettering valid events as poison would lose them.
_TRANSIENT_REPLIES = ("OOM", "READONLY", "MISCONF", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN", "TRYAGAIN", "LOADING", "BUSY",
                      "NOPERM", "NOAUTH", "WRONGPASS", "MOVED", "ASK")  # fmt: skip


def transient_redis_error(exc: BaseException) -> bool:
    """Whether a redis-py exception is a passing condition (retry) rather than a bug or a bad
    request (a script's error reply may carry the code after a prefix: "Error running script
    ...: OOM ...")."""
    import redis.exceptions as rexc

    if isinstance(exc, rexc.RedisClusterException) and "blocked" in str(exc):
        return False  # a command a cluster pipeline refuses: a bug, not a passing condition
    if isinstance(exc, _transient_types()):
        return True
    if not isinstance(exc, rexc.ResponseError):
        return False
    msg = str(exc)
    return isinstance(exc, (rexc.OutOfMemoryError, rexc.ReadOnlyError)) or any(
        msg.startswith(code) or f": {code} " in msg or f" -{code} " in msg for code in _TRANSIENT_REPLIES
    )


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """The boundary where redis-py errors become ours: connection trouble, a Redis Cluster's
    moving slots and the replies of a Redis that is up but refusing writes are
    :class:`~attnrec.errors.TransientError` (retry, never dead-letter); any other error
    propagates."""
    try:
        yield
    except BaseException as exc:
        if transient_redis_error(exc):
            raise TransientError(f"redis: {type(exc).__name__}: {exc}") from exc
        raise
