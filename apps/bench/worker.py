"""The worker under test: ``attnrec worker`` as a subprocess, its readiness and its metrics.

The worker runs as its own process (``python -m attnrec.apps worker``), configured only through
its environment (:func:`settings_env`: every field of the base settings as ``ATTNREC_<FIELD>``), so the
bench measures exactly what a deployment runs. Baselines are the same command with other
settings: ``ATTNREC_BATCH_SIZE=1``, or ``ATTNREC_SCORER=torch`` (the exported graph in torch
eager mode; the worker command builds that scorer itself). The process gets its own process
group so that stopping it also stops anything it started.

:class:`WorkerHandle` is also the test suite's worker subprocess (``url``, ``get``,
``wait_ready``, ``tail``, ``kill``, ``terminate``). A :class:`Session` is a worker plus the
topics, users and pre-filled buffers one configuration is benchmarked with.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnrec.errors import AttnrecError, ConfigError
from attnrec.settings import Settings, env_name

from .load import bench_users, cleanup_users, prefill

__all__ = ["AGENTS", "settings_env", "WorkerHandle", "wait_ready", "scrape", "api_token", "Session", "open_session",
           "quiesce"]

log = logging.getLogger(__name__)

#: What a handle can run: the worker (``attnrec worker``), or the framework's floor, the null
#: agent (:mod:`attnrec.apps.bench.null_agent`; no Redis, no model).
AGENTS = {"worker": "attnrec.apps", "null": "attnrec.apps.bench.null_agent", "plain": "attnrec.apps.bench.plain_agent"}


def settings_env(s: Settings, cls: type[Settings] | None = None) -> dict[str, str]:
    """``ATTNREC_*`` environment reproducing ``s`` in a subprocess (unset fields are left out):
    the fields of ``cls`` (default: all of ``s``'s class; a worker needs the base's only)."""
    env: dict[str, str] = {}
    for name in (cls or type(s)).model_fields:
        v = getattr(s, name)
        if v is None:
            continue
        if hasattr(v, "get_secret_value"):
            v = v.get_secret_value()
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (list, tuple)):  # pydantic-settings reads complex fields as JSON
            v = json.dumps([str(x) for x in v])
        env[env_name(name)] = str(v)
    return env


def _worker_module(src: Path) -> str:
    """The module that runs ``worker`` in the source tree ``src``: ``attnrec.apps`` since the
    folders install under one name, ``apps`` before that, ``attnrec`` before the apps layer."""
    main = src / "apps" / "__main__.py"
    if main.is_file():
        pyproject = src / "pyproject.toml"
        one_name = pyproject.is_file() and '"attnrec.apps"' in pyproject.read_text()  # package-dir (imports may be relative)
        return "attnrec.apps" if one_name or "attnrec.apps" in main.read_text() else "apps"
    return "attnrec"


class WorkerHandle:
    """An ``attnrec worker`` subprocess on a free port of 127.0.0.1, logging to
    ``log_dir/<name>-<port>.log``.

    ``env_extra`` is applied last (over the settings' environment); ``src`` runs the worker from
    another source tree (e.g. a ``git archive`` of a commit) on ``PYTHONPATH``.
    """

    def __init__(self, s: Settings, log_dir: Path, *, name: str | None = None, env_extra: dict[str, str] | None = None,
                 src: Path | None = None, agent: str = "worker") -> None:  # fmt: skip
        from ..stack import REPO_ROOT, free_port

        self.s = s
        self.port = free_port()
        name = self.name = name or (f"worker-{s.scorer}-B{s.batch_size}" if agent == "worker" else f"{agent}-B{s.batch_size}")
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"{name}-{self.port}.log"
        env = dict(os.environ)
        env.update(settings_env(s, Settings))  # the worker's own settings, not the tool's
        env[env_name("web_port")] = str(self.port)
        env[env_name("web_host")] = "127.0.0.1"
        module = AGENTS["worker"]
        if src is not None:
            env["PYTHONPATH"] = str(src)
            module = _worker_module(src)
            if s.scorer == "torch" and not (src / "exporter" / "eager.py").is_file():
                raise ConfigError(f"the worker source {src} has no ATTNREC_SCORER=torch (exporter/eager.py)")
        env.update(env_extra or {})
        if agent not in AGENTS:
            raise ConfigError(f"unknown agent {agent!r}: one of {', '.join(AGENTS)}")
        cmd = [sys.executable, "-m", module, "worker"] if agent == "worker" else [sys.executable, "-m", AGENTS[agent]]
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(cmd, env=env, cwd=src or REPO_ROOT,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.log

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """``(status, body)`` of a GET; an HTTP error status is returned, not raised."""
        req = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_ready(self, timeout: float = 300.0) -> dict[str, Any]:
        """The ``/readyz`` body once it answers 200 (a model loaded, partitions assigned);
        AttnrecError with the log's tail when the worker exits or the time is up."""
        return wait_ready(self.url("/readyz"), timeout, self)

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the worker's process group."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s; the exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def stop(self, timeout: float = 30.0) -> None:
        self.terminate(timeout)


def wait_ready(url: str, timeout: float, handle: WorkerHandle | None = None) -> dict[str, Any]:
    """Poll a ``/readyz`` URL until it answers 200; its JSON body."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if handle is not None and handle.proc.poll() is not None:
            raise AttnrecError(f"worker exited with {handle.proc.returncode}:\n{handle.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                body = json.loads(r.read())
                if r.status == 200:
                    return body  # type: ignore[no-any-return]
        except urllib.error.HTTPError as e:
            last = e.read()
        except OSError as e:
            last = e
        time.sleep(0.3)
    raise AttnrecError(f"worker at {url} not ready within {timeout:.0f}s (last {last!r})"
                       + (f":\n{handle.tail()}" if handle else ""))  # fmt: skip


#: Counters :func:`scrape` also keeps per label set (``name{labels}`` -> value).
_BY_LABEL = frozenset({"attnrec_shadow_batches_total", "attnrec_shadow_rows_total"})


def scrape(url: str, token: str | None = None) -> dict[str, float]:
    """Samples of a Prometheus text page (``name`` -> value), summed over labels, and each
    histogram bucket (and each of a few counters' label sets) apart (``name_bucket{le="16.0"}`` -> value); empty when the page cannot be
    read. ``token``: the worker's API token (off-loopback workers require it)."""
    out: dict[str, float] = {}
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            text = r.read().decode()
    except OSError as exc:
        log.warning("cannot scrape %s: %s", url, exc)
        return out
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        full, _, val = line.rpartition(" ")
        name = full.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(val)
            if name.endswith("_bucket") or name in _BY_LABEL:
                out[full] = float(val)
        except ValueError:
            pass
    return out


def api_token(s: Settings) -> str | None:
    """The bearer token a worker started with ``s`` requires on ``/metrics`` (None: none)."""
    return s.api_token.get_secret_value() if s.api_token else None


@dataclass
class Session:
    """A worker (ours or an existing one) plus the settings and users it is benchmarked with."""

    s: Settings
    items: list[str]
    users: list[str]
    prefix: str
    info: dict[str, Any]
    worker: WorkerHandle | None = None
    metrics_url: str | None = None
    worker_pid: int | None = None

    def close(self, keep_state: bool = False) -> None:
        if self.worker is not None:
            self.worker.stop()
        if not keep_state:
            try:
                cleanup_users(self.s, self.prefix)
            except Exception as exc:
                log.warning("could not clean up bench keys: %s", exc)


def open_session(base: Settings, *, registry: Path, items: list[str], n_users: int, log_dir: Path, catalog_items: int,
                 max_len: int, start_worker: bool = True, metrics_url: str | None = None, worker_pid: int | None = None,
                 prefill_len: int = -1, worker_src: Path | None = None, agent: str = "worker") -> Session:  # fmt: skip
    """Topics, pre-filled users and (``start_worker``) a worker for one configuration; the worker's
    batch size and scorer are ``base``'s. Without ``start_worker`` the settings' own topics and
    the running worker at ``metrics_url`` / ``worker_pid`` are measured."""
    from attnrec.kafka_util import ensure_topics

    tag = uuid.uuid4().hex[:6]
    if start_worker:
        s = base.model_copy(update={
            "clicks_topic": f"bench-{tag}-clicks", "recs_topic": f"bench-{tag}-recs",
            "dlq_topic": f"bench-{tag}-clicks.dlq", "updates_topic": f"bench-{tag}-model-updates",
            "group_id": f"attnrec-bench-{tag}", "registry": registry, "timing_headers": True,
        })  # fmt: skip
    else:
        s = base
    # the broker stamps each record with its append time: the hop breakdown reads it
    ensure_topics(s, configs={"message.timestamp.type": "LogAppendTime"} if start_worker else None)
    prefix = f"bench-{tag}-"
    users = bench_users(prefix, n_users)
    t0 = time.monotonic()
    fill = s.buffer_len if prefill_len < 0 else min(prefill_len, s.buffer_len)
    if fill:
        prefill(s, users, items, fill)
        log.info("pre-filled %d users x %d entries in %.1fs", n_users, fill, time.monotonic() - t0)
    info: dict[str, Any] = {"catalog_items": catalog_items, "max_len": max_len, "scorer": s.scorer,
                            "registry": str(registry), "prefill": fill, "buffer_len": s.buffer_len}  # fmt: skip
    if not start_worker:
        return Session(s, items, users, prefix, info, None, metrics_url, worker_pid)
    w = WorkerHandle(s, log_dir, src=worker_src, agent=agent)
    info["agent"] = agent
    if worker_src is not None:
        info["worker_src"] = str(worker_src)
    try:
        ready = w.wait_ready()
    except BaseException:
        w.stop()
        raise
    info["model_version"] = ready.get("model_version")
    return Session(s, items, users, prefix, info, w, w.url("/metrics"), w.pid)


def quiesce(metrics_url: str | None, timeout: float = 120.0, token: str | None = None) -> float:
    """Wait until the worker has no backlog (lag 0 and no events processed for 2 s), so one
    run's leftovers do not queue in front of the next run's events. Returns the seconds waited."""
    if not metrics_url:
        return 0.0
    t0 = time.monotonic()
    last, stable_since = None, time.monotonic()
    while time.monotonic() - t0 < timeout:
        m = scrape(metrics_url, token)
        done = m.get("attnrec_events_total")
        if done != last:
            last, stable_since = done, time.monotonic()
        elif m.get("attnrec_consumer_lag", 0.0) <= 0 and time.monotonic() - stable_since >= 2.0:
            break
        time.sleep(0.5)
    return round(time.monotonic() - t0, 1)
