"""Values as settings write them: durations (``10m``, ``250ms``), rates (``1000``, ``max``), boosts,
Redis Cluster URLs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

__all__ = ["parse_boosts", "parse_duration", "parse_rate", "CLUSTER_SCHEMES", "RedisClusterURL", "parse_redis_cluster_url"]

#: URL schemes of a Redis Cluster (``rediss+cluster``: over TLS)
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str | float) -> float:
    """'10m' -> 600.0; '30s', '1.5h', '250ms', '2d' and bare seconds work too."""
    if isinstance(text, (int, float)):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a duration such as 30s, 10m or 1h, got {text!r}")
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[unit]


def parse_rate(text: str | float | None) -> float | None:
    """Events per second: a positive number, or 'max' (None: as fast as possible)."""
    if text is None or str(text).strip().lower() == "max":
        return None
    try:
        r = float(text)
    except ValueError:
        raise ValueError(f"expected a positive number of events/s or 'max', got {text!r}") from None
    if not r > 0:
        raise ValueError(f"expected a positive number of events/s or 'max', got {text!r}")
    return r


def parse_boosts(text: str) -> dict[tuple[str, str], float]:
    """``category:beauty=1.5,item:sku-7=3`` -> {("category", "beauty"): 1.5, ("item", "sku-7"): 3.0}."""
    out: dict[tuple[str, str], float] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        kind, _, rest = part.partition(":")
        name, eq, value = rest.rpartition("=")
        try:
            boost = float(value)
        except ValueError:
            eq = ""
        if kind not in ("category", "item") or not name or not eq or boost != boost:
            raise ValueError(f"expected category:NAME=NUMBER or item:ID=NUMBER, comma-separated; got {part!r}")
        out[(kind, name)] = boost
    return out


@dataclass(frozen=True)
class RedisClusterURL:
    """A Redis Cluster URL, ``redis+cluster://[user[:password]@]host:port[,host:port...][/0][?ssl_ca_certs=FILE]``
    (``rediss+cluster://`` over TLS): the nodes to discover the cluster from (any few; the client
    learns the rest), the credentials if given in the URL."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool
    username: str | None = None
    password: str | None = None
    ssl_ca_certs: str | None = None


def parse_redis_cluster_url(url: str) -> RedisClusterURL:
    """The parts of a cluster URL; ValueError saying what is expected otherwise."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"expected a {' or '.join(s + '://' for s in CLUSTER_SCHEMES)} URL")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError("expected no database or /0 after the nodes (a Redis Cluster has database 0 only)")
    userinfo, at, hosts = netloc.rpartition("@")
    user, _, password = userinfo.partition(":") if at else ("", "", "")
    nodes = []
    for h in hosts.split(","):
        host, colon, port = h.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("expected host:port[,host:port...] (ports 1-65535) after redis+cluster://")
        nodes.append((host.strip("[]"), int(port)))
    params = parse_qs(query)
    unknown = set(params) - {"ssl_ca_certs"}
    if unknown:
        raise ValueError(f"expected no URL option but ssl_ca_certs, not {sorted(unknown)[0]!r}")
    ca = params.get("ssl_ca_certs", [None])[0]
    return RedisClusterURL(tuple(nodes), scheme == "rediss+cluster", unquote(user) or None, unquote(password) or None, ca)
