"""`attnrec dashboard` end to end, in Debian's headless Chromium.

A worker and the dashboard run as subprocesses against the real stack while events are
replayed; Chromium loads the page (driven over the DevTools protocol, so one browser makes
both reads and the screenshot) and the test reads what a person would see: figures, charts,
the live feed with its explanations and the user lookup.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from attnrec.apps.stack import free_port
from attnrec.stream.core.buffer import user_keys
from attnrec.stream.core.entries import decode_entry

from attnrec.errors import ConfigError
from attnrec.events import ClickEvent
from attnrec.kafka_util import ensure_topics
from attnrec.redis_util import redis_sync
from attnrec.registry import Registry
from attnrec.settings import Settings
from tests.feeding import Feeder, Raw
from tests.helpers import REPO, WorkerProc, env_for, republish, settings_for

pytestmark = pytest.mark.timeout(170)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1400,1900",
]  # fmt: skip
DOCS_IMG = REPO / "docs" / "img" / "dashboard.png"

# What the page shows, read from the DOM the way the test asserts on it.
READ_JS = """JSON.stringify((() => {
  const v = (id) => { const e = document.getElementById(id); return e && e.dataset.value !== "" ? Number(e.dataset.value) : null; };
  return {
    status: document.getElementById("status").textContent,
    events_total: v("events-total"), recs_total: v("recs-total"),
    events_per_s: v("events-per-s"), recs_per_s: v("recs-per-s"),
    p50: v("latency-p50"), p99: v("latency-p99"), dead_total: v("dead-total"), lag: v("lag-total"),
    workers: v("workers"),
    model: document.getElementById("model-current").textContent,
    serving: document.getElementById("model-serving").textContent,
    history_rows: document.querySelectorAll("#history-table tbody tr").length,
    charts: document.querySelectorAll(".uplot canvas").length,
    feed: [...document.querySelectorAll("#feed li.rec")].map((li) => ({
      user: li.dataset.user, because: [...li.querySelectorAll(".because")].map((e) => e.textContent)})),
    dead: [...document.querySelectorAll("#dead-table td.err")].map((e) => e.textContent),
    owners: [...document.querySelectorAll("#lag-table tbody tr")].map((tr) => tr.children[4] ? tr.children[4].textContent : ""),
    lookup_user: document.getElementById("lookup").dataset.user,
    lookup_items: document.querySelectorAll("#lookup-items li").length,
    lookup_recent: [...document.querySelectorAll("#lookup-recent tbody tr")].map((tr) => tr.children[2].textContent),
    quality: [...document.querySelectorAll("#quality-table tbody tr")].map((tr) => [...tr.children].map((td) => td.textContent)),
    trending: document.querySelectorAll("#trending li:not(.muted)").length,
    rollout: [...document.querySelectorAll("#rollout-table tbody tr")].map((tr) => [...tr.children].map((td) => td.textContent)),
  };
})())"""


def dash_events(items: list[str]) -> Callable[[int], ClickEvent | Raw]:
    """The dashboard's load, message by message: click events of 20 users over ``items``, and
    now and then a malformed message (the dead letters the page shows)."""
    types = ["view", "click", "cart", "purchase", "like"]

    def make(n: int) -> ClickEvent | Raw:
        if n % 100 == 99:
            return Raw(b"{not json", key=b"broken")
        u = f"dash-user-{n % 20}"
        item = items[(n * 7 + n // 20) % len(items)]
        kind = types[(n + n // 20) % len(types)]
        return ClickEvent(uuid.uuid4().hex, u, item, kind, int(time.time() * 1000))

    return make


class DashboardProc:
    """`attnrec dashboard` as a subprocess."""

    def __init__(self, s: Settings, home: Path, *, host: str = "127.0.0.1", extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = home / f"dashboard-{self.port}.log"
        env = env_for(s, home)
        env.update({"ATTNREC_DASHBOARD_PORT": str(self.port), "ATTNREC_DASHBOARD_HOST": host, "ATTNREC_LATENCY_WINDOW_S": "30"})
        env.update(extra_env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "attnrec.apps", "dashboard"], env=env, cwd=REPO,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_up(self, timeout: float = 30.0, headers: dict[str, str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dashboard exited {self.proc.returncode}:\n{self.tail()}"
            try:
                if self.get("/healthz", headers)[0] in (200, 401):
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"dashboard not up in {timeout}s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class Chromium:
    """Headless Chromium with the DevTools protocol on a free port (one page)."""

    def __init__(self, profile: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        self.log = profile.parent / "chromium.log"
        self.proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self._id = 0

    def _port(self, timeout: float = 60.0) -> int:
        f = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"chromium exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
            if f.exists() and f.read_text().strip():
                return int(f.read_text().split()[0])
            time.sleep(0.2)
        raise AssertionError("chromium did not open its DevTools port")

    async def connect(self, session: aiohttp.ClientSession) -> None:
        port = self._port()
        deadline = time.monotonic() + 30
        while True:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
                pages = [t for t in await r.json(content_type=None) if t.get("type") == "page"]
            if pages or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert pages, "chromium has no page target"
        self.ws = await session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=64 * 2**20)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        my = self._id
        await self.ws.send_json({"id": my, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 60)
            if msg.get("id") == my:
                assert "error" not in msg, f"{method}: {msg['error']}"
                return msg.get("result", {})

    async def read(self) -> dict[str, Any] | None:
        """The page's figures; None while the page is still loading (the script throws)."""
        r = await self.call("Runtime.evaluate", expression=READ_JS, returnByValue=True)
        if "exceptionDetails" in r or "value" not in r.get("result", {}):
            return None
        return json.loads(r["result"]["value"])  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


async def _until(chrome: Chromium, cond: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    page: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        page = await chrome.read()
        if page is not None and cond(page):
            return page
        await asyncio.sleep(0.5)
    raise AssertionError(f"page never showed {what}; last read: {json.dumps(page)[:3000]}")


def _ready(p: dict[str, Any]) -> bool:
    return bool(
        p["events_total"] and p["recs_total"] and p["events_per_s"] and p["recs_per_s"] and p["p50"] is not None
        and p["p99"] and any(f["because"] for f in p["feed"]) and p["lookup_items"] > 0 and p["dead"]
        and p["workers"]  # the group is described every 1-5 s: the first look may predate the workers' join
    )  # fmt: skip


@pytest.mark.integration
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (deploy/setup-system.sh installs it)")
def test_dashboard_in_headless_chromium(stack: Any, names: dict[str, str], registry_with_model: Path, tmp_path: Path) -> None:
    reg_dir = tmp_path / "registry"
    shutil.copytree(registry_with_model, reg_dir)  # the test promotes a second version
    s = settings_for(stack, names, reg_dir, reload_poll_s=0.3, interleave_fraction=0.5)
    ensure_topics(s)
    reg = Registry(reg_dir)
    version = reg.current_version()
    assert version is not None
    items = [str(i) for i in reg.read_manifest(version)["popularity"]][:40]
    w = WorkerProc(s, tmp_path)
    w2 = WorkerProc(s, tmp_path, name="worker2")  # the page is built from Kafka, so it shows both
    dash = DashboardProc(s, tmp_path)
    feeder = Feeder(s)
    chrome: Chromium | None = None
    try:
        w.wait_ready()
        w2.wait_ready()
        dash.wait_up()
        assert dash.get("/api/summary", {"Host": "rebound.example:80"})[0] == 403, "loopback dashboard answered a foreign Host"
        feeder.start(rate=60, make=dash_events(items))
        target = "dash-user-7"
        # the lookup needs the user's first recommendation stored; the page polls on its own after that
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not redis_sync(s).exists(user_keys(target)[3]):
            time.sleep(0.5)
        chrome = Chromium(tmp_path / "chromium-profile")

        async def drive() -> tuple[dict[str, Any], dict[str, Any], bytes]:
            assert chrome is not None
            async with aiohttp.ClientSession() as session:
                await chrome.connect(session)
                await chrome.call("Page.enable")
                await chrome.call("Page.navigate", url=dash.url(f"/?user={target}"))
                first = await _until(chrome, _ready, 75, "non-zero figures, explained recommendations and the lookup")
                # promote a new version (same weights) while the page is open: workers hot-reload it
                v2 = republish(reg, version)
                reg.promote(v2, reason="test: hot reload while the dashboard is open")
                v3 = republish(reg, version)  # and a candidate, shadow-scored and interleaved for half the users
                reg.set_shadow(v3, reason="test: roll-out panel")
                second = await _until(
                    chrome,
                    lambda p: _ready(p) and p["events_total"] > first["events_total"] and p["recs_total"] > first["recs_total"]
                    and p["model"] == v2 and p["history_rows"] >= 2 and v2 in p["serving"]
                    and p["workers"] == 2 and len(set(p["owners"])) == 2
                    and any(r[0] == "model" and int(r[2]) > 0 for r in p["quality"]) and p["trending"] > 0
                    and any(r[0] == v3 and int(r[1]) > 0 and " of " in r[5] for r in p["rollout"]),
                    60, "figures that change, the new model serving and the candidate compared",
                )  # fmt: skip
                size = (await chrome.call("Page.getLayoutMetrics"))["cssContentSize"]
                clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1}
                shot = await chrome.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
                await chrome.ws.close()
                return first, second, base64.b64decode(shot["data"])

        first, second, png = asyncio.run(drive())
        v2 = reg.current_version()
    finally:
        feeder.close()
        if chrome is not None:
            chrome.close()
        dash.stop()
        w2.terminate()
        w.terminate()

    (tmp_path / "dashboard.png").write_bytes(png)
    assert png.startswith(b"\x89PNG") and len(png) > 20_000, "screenshot is not a rendered page"
    if os.environ.get("ATTNREC_UPDATE_DOCS") == "1":  # refresh the docs' screenshot on request only
        DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
        DOCS_IMG.write_bytes(png)

    for page in (first, second):
        assert page["status"].startswith("live"), page["status"]
        for k in ("events_total", "recs_total", "events_per_s", "recs_per_s", "p99", "workers"):
            assert page[k] and page[k] > 0, (k, page)
        assert page["p50"] is not None and page["p50"] >= 0
        assert page["charts"] >= 5, "uPlot did not draw the five charts"
        assert page["history_rows"] >= 1 and page["model"] in (version, v2)
        assert any("not JSON" in e for e in page["dead"]), page["dead"]
    assert second["events_total"] > first["events_total"] and second["recs_total"] > first["recs_total"]
    # online quality per source and version (the workers' own prequential counters) and trending now
    sources = {r[0] for r in second["quality"]}
    assert {"model", "trending", "static"} <= sources, second["quality"]
    assert all(0.0 <= float(r[3]) <= 1.0 for r in second["quality"] if r[3] != "–"), second["quality"]
    assert second["trending"] > 0
    # the roll-out panel: the shadowed candidate against the serving model, and its interleaving
    v3 = reg.shadow_version()
    (row,) = [r for r in second["rollout"] if r[0] == v3]
    shadow_ndcg, serving_ndcg = (float(x) for x in row[2].split(" / "))
    assert int(row[1]) > 0 and 0 <= shadow_ndcg <= 1 and 0 <= serving_ndcg <= 1, row
    assert float(row[4]) > 0.5, f"the same weights should mostly agree: {row}"
    assert " of " in row[5] and "[" in row[5], row
    assert first["model"] == version and second["model"] == v2 != version and second["history_rows"] >= 2
    # the live feed: recommendations of the replayed users, explained in words
    explained = [f for f in second["feed"] if f["because"]]
    assert explained, second["feed"]
    for f in explained:
        assert f["user"].startswith("dash-user-")
        for line in f["because"]:
            assert line.startswith("because you ") and " — weight 0." in line, line
    # the lookup shows the asked-for user, with that user's own recent items (Redis, newest first)
    assert second["lookup_user"] == target
    assert second["lookup_recent"] and set(second["lookup_recent"]) <= {e.item_id for e in feeder.sent_by_user()[target]}
    r = redis_sync(s)
    newest = [decode_entry(x).item_id for x in r.lrange(user_keys(target)[0], 0, 200)]
    assert set(second["lookup_recent"]) <= set(newest), "lookup rows are not this user's buffer"


@pytest.mark.integration
def test_dashboard_off_loopback_requires_token(stack: Any, names: dict[str, str], registry_with_model: Path, tmp_path: Path) -> None:
    s = settings_for(stack, names, registry_with_model)
    from attnrec.apps.dashboard.web import create_dashboard_app

    with pytest.raises(ConfigError, match="not loopback"):
        create_dashboard_app(s, host="0.0.0.0")
    token = uuid.uuid4().hex
    dash = DashboardProc(s, tmp_path, host="0.0.0.0", extra_env={"ATTNREC_API_TOKEN": token})
    try:
        dash.wait_up()
        for path in ("/", "/api/summary", "/api/user/u1", "/static/dashboard/dashboard.js"):
            code, body = dash.get(path)
            assert code == 401, (path, code, body[:200])
            assert dash.get(path, {"Authorization": "Bearer wrong"})[0] == 401
        # liveness stays open for orchestrator probes, and says nothing but that it is alive
        code, body = dash.get("/healthz")
        assert code == 200 and set(json.loads(body)) == {"ok", "last_sample"}, body[:200]
        code, body = dash.get("/api/summary", {"Authorization": f"Bearer {token}"})
        assert code == 200 and "figures" in json.loads(body)
        assert dash.get("/", {"Authorization": f"Bearer {token}"})[0] == 200
        # a browser: /?token=... sets an HttpOnly cookie and redirects to the clean URL
        req = urllib.request.Request(dash.url(f"/?token={token}&user=u1"))
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(req, timeout=5) as resp:
            assert resp.status == 200 and resp.url.endswith("/?user=u1"), resp.url
        with opener.open(dash.url("/api/summary"), timeout=5) as resp:
            assert resp.status == 200
    finally:
        dash.stop()
    # no token configured: the command refuses to start off-loopback
    env = env_for(s, tmp_path)
    env.pop("ATTNREC_API_TOKEN", None)
    env.update({"ATTNREC_DASHBOARD_HOST": "0.0.0.0", "ATTNREC_DASHBOARD_PORT": str(free_port())})
    out = subprocess.run([sys.executable, "-m", "attnrec.apps", "dashboard"], env=env, cwd=REPO, capture_output=True, timeout=60)
    assert out.returncode == 2 and b"ATTNREC_API_TOKEN" in out.stderr, out.stderr[-2000:]


def test_explanations_and_percentiles() -> None:
    from attnrec.apps.dashboard.figures import explain, percentile

    assert explain([{"item_id": "X", "event_type": "purchase", "weight": 0.4123}, {"item_id": "Y", "event_type": "other", "weight": 0.2}]) == [
        "because you bought X — weight 0.41",
        "because you interacted with Y — weight 0.20",
    ]
    assert percentile([], 50) is None
    vals = [float(i) for i in range(1, 101)]
    assert percentile(vals, 50) == 50.0 and percentile(vals, 99) == 99.0 and percentile(vals, 100) == 100.0
