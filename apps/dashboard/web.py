"""The dashboard's aiohttp app: one HTML page, its static files, and three JSON endpoints.

- ``GET /``                  the page (``?user=<id>`` opens the lookup for that user)
- ``GET /api/summary``       everything the page shows except the lookup (see :class:`Collector`)
- ``GET /api/user/{user_id}`` a user's recent buffer (Redis) and latest recommendation
- ``GET /healthz``           liveness (open even with a token: orchestrator probes carry none)
- ``GET /schemas/<file>``     a topic's JSON Schema from the package, e.g. ``recs.v1.json`` (read-only)
- ``/static/...``            the page's JS/CSS and the vendored uPlot (no internet needed)

Bound to loopback, it is open. Bound anywhere else it requires ``ATTNREC_API_TOKEN`` on every
request but ``/healthz``: ``Authorization: Bearer <token>``, or the ``attnrec_token`` cookie that
``/?token=<token>`` sets once (HttpOnly, SameSite=Strict) so a browser can use the page.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from attnrec import schemas
from attnrec.errors import AttnrecError, ConfigError
from attnrec.redis_util import redis_client
from attnrec.settings import Settings

from ...stream.core.buffer import RedisBuffers
from ...stream.stages.online import ONLINE_KEY, comparisons, series, totals
from ...stream.stages.trending import Trending
from .collector import Collector, CollectorConfig
from .figures import explain

__all__ = ["create_dashboard_app", "is_loopback", "run_dashboard"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "attnrec_token"
_REGISTRY_TTL_S = 3.0
_MAX_USER_ID = 256

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_middleware(token: str) -> Any:
    want = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        got = request.headers.get("Authorization", "")
        bearer = got[7:].encode() if got.startswith("Bearer ") else b""
        cookie = request.cookies.get(COOKIE, "").encode()
        query = request.query.get("token", "").encode()
        if request.path == "/healthz" or hmac.compare_digest(bearer, want) or hmac.compare_digest(cookie, want):
            return await handler(request)  # /healthz stays open: probes carry no token, and it tells nothing
        if query and hmac.compare_digest(query, want) and request.path == "/":
            # a browser's first visit: keep the token in a cookie and drop it from the URL
            rest = {k: v for k, v in request.query.items() if k != "token"}
            resp = web.HTTPFound(str(request.rel_url.with_query(rest)))
            resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
            raise resp
        return web.json_response({"error": "unauthorized: bearer token required"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="attnrec"'})  # fmt: skip

    return check


_LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


@web.middleware
async def _loopback_host_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bound to loopback there is no token, so refuse requests for any other host name: a web
    page elsewhere cannot DNS-rebind its own name to 127.0.0.1 and read the dashboard."""
    host = (request.host or "").lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if name not in _LOCAL_NAMES and host not in _LOCAL_NAMES:
        return web.json_response({"error": f"host {host!r} refused: the dashboard answers loopback names only"}, status=403)
    return await handler(request)


class _RegistryView:
    """Serving version, published versions and promotion history, re-read every few seconds."""

    def __init__(self, root: Path) -> None:
        from attnrec.registry import Registry

        self.reg = Registry(root)
        self._at = 0.0
        self._cached: dict[str, Any] = {}

    def read(self) -> dict[str, Any]:
        if time.monotonic() - self._at < _REGISTRY_TTL_S:
            return self._cached
        try:
            versions = self.reg.versions()
            history = self.reg.history()
            current = self.reg.current_version()
            metrics: dict[str, Any] = {}
            for v in versions[:20]:
                try:
                    m = self.reg.read_manifest(v["version"]).get("metrics") or {}
                except AttnrecError:
                    m = {}
                metrics[v["version"]] = _flat_metrics(m)
            out = {"root": str(self.reg.root), "current": current, "versions": versions[:20],
                   "history": history[-30:][::-1], "metrics": metrics, "error": None}  # fmt: skip
        except Exception as exc:
            out = {"root": str(self.reg.root), "current": None, "versions": [], "history": [], "metrics": {},
                   "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
        self._cached, self._at = out, time.monotonic()
        return out


def _flat_metrics(m: dict[str, Any]) -> dict[str, float]:
    """``{"validation": {"metrics": {"ndcg@10": ..}}, "test": {...}}`` -> ``{"validation ndcg@10": ..}``."""
    out: dict[str, float] = {}
    for split, block in m.items():
        if isinstance(block, dict):
            inner = block.get("metrics", block)
            if isinstance(inner, dict):
                for k, v in inner.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and "@" in k:
                        out[f"{split} {k}"] = float(v)
        elif isinstance(block, (int, float)) and not isinstance(block, bool) and "@" in split:
            out[split] = float(block)
    return out


def create_dashboard_app(settings: Settings, *, host: str = "127.0.0.1", collector: Collector | None = None,
                         config: CollectorConfig | None = None) -> web.Application:  # fmt: skip
    """The app; starts its collector and Redis client on startup, stops them on cleanup."""
    token = settings.api_token.get_secret_value() if settings.api_token else None
    middlewares: list[Any]
    if is_loopback(host):
        middlewares = [_loopback_host_only]
    elif token:
        middlewares = [_token_middleware(token)]
    else:
        raise ConfigError(f"dashboard host {host} is not loopback: set ATTNREC_API_TOKEN so the page requires a bearer token")
    app = web.Application(middlewares=middlewares)
    coll = collector or Collector(settings, config)
    registry = _RegistryView(settings.registry_dir)
    state: dict[str, Any] = {}

    async def on_startup(app: web.Application) -> None:
        coll.start()
        client = redis_client(settings)
        state["redis"] = client
        state["trending"] = Trending(client, settings.trending_window_s)
        state["policy"] = settings.policy_name
        state["buffers"] = RedisBuffers(client, max_len=settings.buffer_len)

    async def on_cleanup(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, coll.stop)
        await state["redis"].aclose()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "dashboard" / "index.html", headers={"Cache-Control": "no-store"})

    async def summary(request: web.Request) -> web.StreamResponse:
        snap = coll.snapshot()
        snap["model"] = await asyncio.get_running_loop().run_in_executor(None, registry.read)
        snap["quality"] = await _quality(state)
        return web.Response(
            body=orjson.dumps(snap), content_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def user(request: web.Request) -> web.StreamResponse:
        uid = request.match_info["user_id"]
        if not uid or len(uid.encode()) > _MAX_USER_ID:
            return web.json_response({"error": "user_id must be 1..256 bytes"}, status=400)
        buffers: RedisBuffers = state["buffers"]
        try:
            buf = await buffers.get_buffer(uid, 50)
            raw = await buffers.get_recs(uid)
        except AttnrecError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        rec = orjson.loads(raw) if raw else None
        body = {
            "user_id": uid,
            "found": bool(buf) or rec is not None,
            "recent": [{"ts": e.ts, "event_type": e.event_type, "item_id": e.item_id} for e in buf],
            "rec": rec,
            "explanations": explain(rec.get("because") or []) if rec else [],
        }
        return web.Response(
            body=orjson.dumps(body), content_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def healthz(request: web.Request) -> web.StreamResponse:
        # liveness only, and public (orchestrator probes carry no token): no sampled data or
        # error texts here — those are on /api/summary, behind the token
        snap = coll.snapshot()
        return web.json_response({"ok": True, "last_sample": snap["last_sample"]})

    app.router.add_get("/", index)
    app.router.add_get("/api/summary", summary)
    app.router.add_get("/api/user/{user_id}", user)
    app.router.add_get("/healthz", healthz)

    async def schema(request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        if name not in schemas.files():
            return web.json_response({"error": f"no schema {name[:64]!r}: one of {', '.join(schemas.files())}"}, status=404)
        return web.FileResponse(schemas.DIR / name, headers={"Content-Type": "application/schema+json"})

    app.router.add_get("/schemas/{file}", schema)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app["collector"] = coll
    return app


async def _quality(state: dict[str, Any]) -> dict[str, Any]:
    """The stream's own view of its recommendations (written by the workers to Redis): online
    HR@10 / NDCG@10 per source and version, and trending now."""
    key = ONLINE_KEY + state["policy"]
    now_min = int(time.time() // 60)
    minutes = list(range(now_min - _SERIES_MINUTES + 1, now_min + 1))
    try:
        online = totals(await state["redis"].hgetall(key))
        async with state["redis"].pipeline(transaction=False) as pipe:
            for m in minutes:
                pipe.hgetall(f"{key}:{m}")
            per_minute = await pipe.execute()
        trending = await state["trending"].top(n=10, now_ms=int(time.time() * 1000))
    except Exception as exc:  # Redis trouble: the rest of the page still renders
        return {"error": f"{type(exc).__name__}: {exc}", "online": [], "trending": [], "rollout": [], "series": {}}
    return {"policy": state["policy"], "online": online, "rollout": comparisons(online),
            "series": series([60 * m for m in minutes], per_minute),
            "trending": [{"item_id": i, "score": round(s, 1)} for i, s in trending]}


#: Minutes of online HR@10 the dashboard charts.
_SERIES_MINUTES = 60


def run_dashboard(settings: Settings, *, host: str, port: int, config: CollectorConfig | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    # kafka-python cannot decode faust's member metadata and warns on every describe: not ours to fix
    logging.getLogger("kafka.admin._groups").setLevel(logging.ERROR)
    app = create_dashboard_app(settings, host=host, config=config)
    log.info("dashboard on http://%s:%d (kafka %s, group %s, registry %s)", host, port, settings.kafka_bootstrap,
             settings.group_id, settings.registry_dir)  # fmt: skip
    web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True)
