"""``attnrec bench``: end-to-end throughput and latency of the streaming worker.

One run::

    generator (this process) --clicks--> worker (subprocess) --recs--> tracker (this process)

The generator produces synthetic click events (users and items drawn from the served
model's own vocabulary, so every event is scored, none falls back) at ``--rate`` events/s
for ``--duration`` seconds; ``--rate max`` sends as fast as it can while keeping at most
``--max-inflight`` events unanswered (a closed loop: the backlog, and so the latency at
saturation, stays bounded and the figure is the worker's throughput, not the broker's
disk). A tracker thread consumes ``recs`` (and ``clicks.dlq``) and matches them to events.

Accounting (why a rec "covers" several events). The worker emits one recommendation per
user per batch, after all that user's events in the batch were applied; its
``trigger_event_id`` is the user's last event in the batch. Events of one user are
produced in order to one partition and processed in order, so a rec for user ``u`` whose
trigger is ``u``'s k-th event reflects events 1..k. The tracker therefore keeps, per user,
the list of produced events in send order and a pointer to the first uncovered one; a rec
with trigger k covers every still-uncovered event up to and including k, and each covered
event's latency is (rec arrival - that event's own produce time). So an event folded into a
later event's batch is charged its full wait, not the trigger's. A rec whose trigger was
already seen is a duplicate (DESIGN.md: consumers dedupe by trigger_event_id). A dead
letter whose raw bytes carry an event_id covers that event too (counted apart). ``lost`` =
events neither covered nor dead-lettered when the drain timeout expires.

Throughput = events covered inside the measured window (whoever produced them: at saturation
the worker is still working through warm-up events) / (window opening -> last covering rec).
Events produced during ``--warmup`` seconds count for ``lost`` but not for latency. The worker's
own count (``attnrec_events_total`` over the window) is reported beside it.

The per-event stage breakdown comes from the worker's Prometheus histograms (``/metrics``,
diffed across the measured window); worker CPU and RSS from psutil; Redis bytes per user
from ``MEMORY USAGE`` of a sample of the bench users' keys. Users' buffers are pre-filled
to ``buffer_len`` entries (steady state: the model sees full ``max_len`` windows).

Baselines in the same run (``--baselines``): the same worker with ``ATTNREC_BATCH_SIZE=1``
(one Lua call and one ONNX run per event), and the worker with a torch-eager scorer (this
module's :class:`TorchEagerSession` injected in place of the onnxruntime session; the rest
of the worker is unchanged). ``--sweep`` runs the matrix of ``make bench``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from attnrec.errors import AttnrecError, ConfigError
from attnrec.settings import Settings, env_default, load_settings

__all__ = [
    "add_bench_parser",
    "RunConfig",
    "EventSource",
    "CoverageTracker",
    "WorkerHandle",
    "TorchEagerSession",
    "run_once",
    "generator_ceiling",
    "run_sweep",
    "torch_worker_main",
]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SPREAD_WARN = 0.15
EVENT_TYPES = ("view", "view", "view", "click", "click", "like", "cart", "purchase", "gift", "share")


# --------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class RunConfig:
    """One measured run. ``rate`` None = max (closed loop bounded by ``max_inflight``)."""

    rate: float | None = 1000.0
    duration_s: float = 10.0
    warmup_s: float = 2.0
    users: int = 2000
    max_inflight: int = 2000
    drain_timeout_s: float = 120.0
    drain_stall_s: float = 15.0
    seed: int = 7
    label: str = ""


# --------------------------------------------------------------------------------- events
class EventSource:
    """Synthetic click events over a given item vocabulary, pre-serialised in chunks.

    Item popularity is Zipf-like (p ~ 1 / (rank + 10)), users uniform; event ids are unique
    per source. Yields ``(event_id, user_id, key, value)``.
    """

    def __init__(self, items: Sequence[str], users: Sequence[str], seed: int = 7, chunk: int = 8192) -> None:
        self.items = list(items)
        self.users = list(users)
        self.rng = np.random.default_rng(seed)
        w = 1.0 / (np.arange(len(self.items)) + 10.0)
        self.p = w / w.sum()
        self.chunk = chunk
        self.tag = uuid.uuid4().hex[:10]
        self.n = 0

    def _chunk(self) -> list[tuple[str, str, bytes, bytes]]:
        k = self.chunk
        it = self.rng.choice(len(self.items), size=k, p=self.p)
        us = self.rng.integers(0, len(self.users), size=k)
        ty = self.rng.integers(0, len(EVENT_TYPES), size=k)
        now = int(time.time() * 1000)
        out = []
        for j in range(k):
            eid = f"b{self.tag}-{self.n + j}"
            user = self.users[int(us[j])]
            value = orjson.dumps({"event_id": eid, "user_id": user, "item_id": self.items[int(it[j])],
                                  "event_type": EVENT_TYPES[int(ty[j])], "ts": now + j // 50,
                                  "context": {"session_id": "bench"}})  # fmt: skip
            out.append((eid, user, user.encode(), value))
        self.n += k
        return out

    def __iter__(self) -> Iterator[tuple[str, str, bytes, bytes]]:
        while True:
            yield from self._chunk()


def bench_users(prefix: str, n: int) -> list[str]:
    return [f"{prefix}u{i}" for i in range(n)]


# --------------------------------------------------------------------------------- tracker
class CoverageTracker:
    """Consumes ``recs`` and the dead-letter topic; attributes each rec to the events it covers.

    The producer calls :meth:`sent` just before sending each event. See the module docstring
    for the accounting.
    """

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._lock = threading.Lock()
        self.by_user: dict[str, list[tuple[str, float, bool]]] = {}  # user -> [(event_id, t_sent, measured)]
        self.index: dict[str, tuple[str, int]] = {}  # event_id -> (user, position)
        self.ptr: dict[str, int] = {}
        self.triggers: set[str] = set()
        self.latencies: list[float] = []  # ms, measured events only
        self.n_sent = 0
        self.n_covered = 0
        self.n_dead = 0
        self.duplicates = 0
        self.unmatched = 0  # recs for triggers we did not send (other traffic)
        self.stale = 0  # recs whose trigger was already covered by a later rec (should be 0)
        self.fallbacks = 0
        self.recs = 0
        self.first_measured_sent: float | None = None
        self.last_measured_cover: float | None = None
        self.n_measured = 0
        self.n_measured_covered = 0
        self.t_measure: float | None = None  # set by the producer when the measured window opens
        self.window_covered = 0  # events (measured or not) covered at or after t_measure
        self.last_cover: float | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._t = threading.Thread(target=self._run, name="bench-tracker", daemon=True)

    # producer side ---------------------------------------------------------------------------
    def sent(self, event_id: str, user: str, t: float, measured: bool) -> None:
        lst = self.by_user.get(user)
        if lst is None:
            lst = self.by_user[user] = []
            self.ptr[user] = 0
        self.index[event_id] = (user, len(lst))
        lst.append((event_id, t, measured))
        self.n_sent += 1
        if measured:
            self.n_measured += 1
            if self.first_measured_sent is None:
                self.first_measured_sent = t

    @property
    def done(self) -> int:
        return self.n_covered + self.n_dead

    # consumer side ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> CoverageTracker:
        self._t.start()
        if not self._ready.wait(timeout):
            raise AttnrecError("the recs tracker could not join its topics in time")
        if self._error is not None:
            raise AttnrecError(f"recs tracker failed: {self._error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join(10)

    def _run(self) -> None:
        from kafka import TopicPartition

        from attnrec.kafka_util import make_consumer

        try:
            # min_bytes=1: a fetch returns as soon as a rec exists; max_wait only paces idle polling
            c = make_consumer(self.s, group_id=None, auto_offset_reset="latest", fetch_max_wait_ms=100, fetch_min_bytes=1)
            tps = []
            deadline = time.monotonic() + 30
            for topic in (self.s.recs_topic, self.s.dlq_topic):
                parts = None
                while not parts and time.monotonic() < deadline:
                    parts = c.partitions_for_topic(topic)
                    if not parts:
                        time.sleep(0.2)
                tps += [TopicPartition(topic, p) for p in sorted(parts or ())]
            c.assign(tps)
            c.seek_to_end()
            for tp in tps:
                c.position(tp)
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                batch = c.poll(timeout_ms=50, max_records=10000)
                now = time.perf_counter()
                for tp, msgs in batch.items():
                    dead = tp.topic == self.s.dlq_topic
                    for m in msgs:
                        if dead:
                            self._on_dead(m.value)
                        else:
                            self._on_rec(orjson.loads(m.value), now)
        finally:
            c.close()

    def _on_rec(self, rec: dict[str, Any], now: float) -> None:
        self.recs += 1
        trig = rec.get("trigger_event_id")
        if rec.get("fallback"):
            self.fallbacks += 1
        if trig in self.triggers:
            self.duplicates += 1
            return
        self.triggers.add(trig)
        where = self.index.get(trig)
        if where is None:
            self.unmatched += 1
            return
        user, k = where
        lst, start = self.by_user[user], self.ptr[user]
        if k < start:
            self.stale += 1
            return
        for j in range(start, k + 1):
            _, t_sent, measured = lst[j]
            if measured:
                self.latencies.append(1000.0 * (now - t_sent))
                self.n_measured_covered += 1
                self.last_measured_cover = now
        self.ptr[user] = k + 1
        self.n_covered += k + 1 - start
        if self.t_measure is not None and now >= self.t_measure:
            self.window_covered += k + 1 - start
            self.last_cover = now

    def _on_dead(self, raw_env: bytes) -> None:
        try:
            env = orjson.loads(raw_env)
            ev = orjson.loads(base64.b64decode(env["raw"]))
            eid = ev["event_id"]
        except Exception:
            return
        if eid in self.index:
            self.n_dead += 1  # the event is accounted for (not lost); it is not "covered"

    def lost(self) -> int:
        return max(0, self.n_sent - self.n_covered - self.n_dead)


# --------------------------------------------------------------------------------- worker
def settings_env(s: Settings) -> dict[str, str]:
    """``ATTNREC_*`` environment reproducing ``s`` in a subprocess."""
    env: dict[str, str] = {}
    for name in type(s).model_fields:
        v = getattr(s, name)
        if v is None:
            continue
        if hasattr(v, "get_secret_value"):
            v = v.get_secret_value()
        if isinstance(v, bool):
            v = "true" if v else "false"
        env["ATTNREC_" + name.upper()] = str(v)
    return env


class WorkerHandle:
    """An ``attnrec worker`` subprocess (``scorer="torch"``: with :class:`TorchEagerSession`)."""

    def __init__(self, s: Settings, log_dir: Path, *, scorer: str = "onnx", src: Path | None = None) -> None:
        from attnrec.stack import free_port

        self.s = s
        self.scorer = scorer
        self.port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"worker-{scorer}-B{s.batch_size}-{self.port}.log"
        env = dict(os.environ)
        env.update(settings_env(s))
        env["ATTNREC_WEB_PORT"] = str(self.port)
        env["ATTNREC_WEB_HOST"] = "127.0.0.1"
        if src is not None:  # run the worker from another source tree (e.g. a `git archive` of a commit)
            env["PYTHONPATH"] = str(src)
        if scorer == "onnx":
            cmd = [sys.executable, "-m", "attnrec", "worker"]
        elif scorer == "torch":
            cmd = [sys.executable, "-c", "from attnrec.bench import torch_worker_main; torch_worker_main()"]
        else:
            raise ConfigError(f"unknown scorer {scorer!r}: onnx or torch")
        self.proc = subprocess.Popen(cmd, env=env, cwd=src or REPO, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 300.0) -> dict[str, Any]:
        return wait_ready(self.url("/readyz"), timeout, self)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def wait_ready(url: str, timeout: float, handle: WorkerHandle | None = None) -> dict[str, Any]:
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


def scrape(url: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page (``name`` -> value), summed over labels."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            text = r.read().decode()
    except OSError as exc:
        log.warning("cannot scrape %s: %s", url, exc)
        return out
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name, _, val = line.rpartition(" ")
        name = name.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(val)
        except ValueError:
            pass
    return out


class TorchEagerSession:
    """Stands in for an ``onnxruntime.InferenceSession``: the exporter's ``ServingGraph``
    (model + exclusion + top-K, the very module that was exported) run in torch eager mode."""

    def __init__(self, checkpoint_dir: str | Path, top_k: int, threads: int = 1) -> None:
        import torch

        from exporter.export import ServingGraph, load_checkpoint

        torch.set_num_threads(threads)
        self.torch = torch
        ck = load_checkpoint(checkpoint_dir)
        self.graph = ServingGraph(ck.model.eval(), top_k).eval()

    def run(self, names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        t = self.torch
        with t.inference_mode():
            out = self.graph(*(t.from_numpy(feeds[k]) for k in ("items", "types", "gaps", "exclude")))
        by = dict(zip(("top_items", "top_scores", "attn"), out, strict=True))
        return [by[n].numpy() for n in names]


def torch_worker_main() -> None:
    """``attnrec worker`` with torch eager in place of onnxruntime (bench baseline only).

    The model is still loaded and checked from the registry as usual; its session is then
    replaced by a :class:`TorchEagerSession` over the checkpoint the manifest names.
    """
    import stream.model as sm

    original = sm.load_model

    def load_model(vdir: Path, *, threads: int = 1) -> Any:
        m = original(vdir, threads=threads)
        ckpt = m.manifest.get("checkpoint")
        if not ckpt or not Path(ckpt).is_dir():
            raise sm.ModelCheckError(f"torch scorer: checkpoint {ckpt!r} of {m.version} is not available")
        m.session = TorchEagerSession(ckpt, m.top_k, threads)
        log.info("torch-eager scorer in place of onnxruntime for %s", m.version)
        return m

    sm.load_model = load_model  # type: ignore[assignment]
    from attnrec.cli import main

    raise SystemExit(main(["worker"]))


# --------------------------------------------------------------------------------- models
def ensure_model(cache: Path, n_items: int, max_len: int, *, d_model: int = 64, n_blocks: int = 2) -> tuple[Path, list[str]]:
    """A registry holding a promoted random-weight model of this shape (built once, cached)."""
    root = (cache / "models" / f"n{n_items}-L{max_len}-d{d_model}-b{n_blocks}").resolve()
    reg = root / "registry"
    if not (reg / "CURRENT").is_file():
        from exporter.export import export_checkpoint
        from exporter.testing import write_random_checkpoint

        t0 = time.monotonic()
        log.info("building a random-weight model: %d items, max_len %d (cached in %s)", n_items, max_len, root)
        ckpt = write_random_checkpoint(root / "ckpt", n_items=n_items + 2, max_len=max_len, d_model=d_model,
                                       n_blocks=n_blocks, n_samples=16)  # fmt: skip
        export_checkpoint(ckpt, reg, promote=True, force=True)
        log.info("model ready in %.0fs", time.monotonic() - t0)
    from exporter.registry import Registry

    r = Registry(reg)
    v = r.current_version()
    vocab = json.loads((root / "ckpt" / "vocab.json").read_text())["items"]
    assert v is not None, f"no promoted version in {reg}"
    return reg, [str(x) for x in vocab]


# --------------------------------------------------------------------------------- redis
def _redis(s: Settings) -> Any:
    import redis

    return redis.Redis.from_url(s.redis_url, username=s.redis_username,
                                password=s.redis_password.get_secret_value() if s.redis_password else None)  # fmt: skip


def prefill(s: Settings, users: Sequence[str], items: Sequence[str], length: int, seed: int = 1) -> None:
    """Fill each user's buffer to ``length`` entries (the worker's encoding), unless it is."""
    from stream.buffer import user_keys

    r = _redis(s)
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1000) - 3_600_000
    p = r.pipeline(transaction=False)
    for n, u in enumerate(users, start=1):
        picks = rng.integers(0, len(items), size=length)
        entries = [f"{now + j * 1000}|view|{items[int(i)]}" for j, i in enumerate(picks)]
        key = user_keys(u)[0]
        p.delete(key)
        p.lpush(key, *entries)  # newest first after LPUSH of oldest-first entries
        p.expire(key, s.buffer_ttl_s)
        if n % 200 == 0:
            p.execute()
    p.execute()


def redis_bytes_per_user(s: Settings, users: Sequence[str], sample: int = 200) -> float | None:
    from stream.buffer import user_keys

    r = _redis(s)
    picked = list(users)[:: max(1, len(users) // sample)][:sample]
    p = r.pipeline(transaction=False)
    for u in picked:
        for k in user_keys(u):
            p.memory_usage(k, samples=0)
    try:
        vals = p.execute()
    except Exception as exc:
        log.warning("MEMORY USAGE unavailable: %s", exc)
        return None
    return float(sum(v or 0 for v in vals)) / max(1, len(picked))


def cleanup_users(s: Settings, prefix: str) -> int:
    """Delete the bench users' keys (``{u:<prefix>*}``); returns how many."""
    r = _redis(s)
    n = 0
    batch: list[bytes] = []
    for k in r.scan_iter(match="{u:" + prefix + "*", count=2000):
        batch.append(k)
        if len(batch) >= 1000:
            n += r.unlink(*batch)
            batch = []
    if batch:
        n += r.unlink(*batch)
    return n


# --------------------------------------------------------------------------------- one run
def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _pct(xs: np.ndarray, q: float) -> float:
    return round(float(np.percentile(xs, q)), 2) if len(xs) else 0.0


def _cpu_s(proc: Any) -> float:
    try:
        t = proc.cpu_times()
        return float(t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0))
    except Exception:
        return 0.0


def stack_procs(s: Settings) -> dict[str, Any]:
    """psutil handles of the local stack's Kafka and Redis (from their pid files), when running here."""
    import psutil

    out: dict[str, Any] = {}
    for name in ("kafka", "redis"):
        try:
            pid = int((s.stack_dir / f"{name}.pid").read_text().strip())
            out[name] = psutil.Process(pid)
        except (OSError, ValueError, psutil.Error):
            pass
    return out


def run_once(s: Settings, cfg: RunConfig, *, items: Sequence[str], users: Sequence[str], worker_pid: int | None = None,
             metrics_url: str | None = None, progress: bool = True, model_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Drive one load level against a worker already consuming ``s.clicks_topic``."""
    import psutil
    from tqdm import tqdm

    from attnrec.kafka_util import make_producer

    tracker = CoverageTracker(s).start()
    wproc = psutil.Process(worker_pid) if worker_pid else None
    others = stack_procs(s)
    oc0: dict[str, float] = {}
    me = psutil.Process()
    src = iter(EventSource(items, users, seed=cfg.seed))
    producer = make_producer(s)
    load_before = _loadavg()
    m0: dict[str, float] = {}
    cpu0 = me0 = 0.0
    rss_max = 0
    total = int(cfg.rate * (cfg.warmup_s + cfg.duration_s)) if cfg.rate else None
    bar = tqdm(total=total, unit="ev", desc=cfg.label or "bench", mininterval=0.5, disable=not progress, leave=False)
    t_start = time.perf_counter()
    t_measure = t_start + cfg.warmup_s
    t_end = t_measure + cfg.duration_s
    measuring = cfg.warmup_s <= 0
    overloaded = False
    tm0 = t_measure
    backlog_cap = max(cfg.max_inflight, int(2 * (cfg.rate or 0)))  # paced: stop once 2 s behind
    n = 0
    try:
        if measuring:
            tracker.t_measure = tm0 = time.perf_counter()
            m0 = scrape(metrics_url) if metrics_url else {}
            cpu0, me0 = (_cpu_s(wproc) if wproc else 0.0), _cpu_s(me)
            oc0 = {k: _cpu_s(p) for k, p in others.items()}
        while True:
            now = time.perf_counter()
            if now >= t_end:
                break
            if not measuring and now >= t_measure:
                measuring = True
                tracker.t_measure = tm0 = time.perf_counter()
                m0 = scrape(metrics_url) if metrics_url else {}
                cpu0, me0 = (_cpu_s(wproc) if wproc else 0.0), _cpu_s(me)
                oc0 = {k: _cpu_s(p) for k, p in others.items()}
            if cfg.rate:
                if n - tracker.done > backlog_cap:
                    overloaded = True  # far beyond capacity: stop offering, the point is saturated
                    break
                ahead = (n + 1) / cfg.rate - (now - t_start)
                if ahead > 0.0005:
                    time.sleep(ahead)
            elif n - tracker.done >= cfg.max_inflight:
                time.sleep(0.001)
                continue
            eid, user, key, value = next(src)
            tracker.sent(eid, user, time.perf_counter(), measuring)
            producer.send(s.clicks_topic, key=key, value=value)
            n += 1
            if n % 200 == 0:
                bar.update(200)
                if n % 2000 == 0:
                    bar.set_postfix(done=tracker.done, refresh=False)
                    if wproc is not None:
                        try:
                            rss_max = max(rss_max, wproc.memory_info().rss)
                        except psutil.Error:
                            pass
        t_sent = time.perf_counter()
        producer.flush(60)
        # drain: wait until every event is covered or dead-lettered, as long as the worker
        # makes progress (no new answer for drain_stall_s, or drain_timeout_s in all: stop)
        deadline = time.monotonic() + cfg.drain_timeout_s
        last_done, last_change = tracker.done, time.monotonic()
        while tracker.done < tracker.n_sent and time.monotonic() < deadline:
            if wproc is not None and not wproc.is_running():
                raise AttnrecError("the worker died during the run")
            time.sleep(0.02)
            if tracker.done != last_done:
                last_done, last_change = tracker.done, time.monotonic()
            elif time.monotonic() - last_change > cfg.drain_stall_s:
                break
        bar.update(n % 200)
    finally:
        bar.close()
        producer.close(10)
        tracker.stop()
    m1 = scrape(metrics_url) if metrics_url else {}
    tm1 = time.perf_counter()
    cpu1, me1 = (_cpu_s(wproc) if wproc else 0.0), _cpu_s(me)
    oc1 = {k: _cpu_s(p) for k, p in others.items()}
    if wproc is not None:
        try:
            rss_max = max(rss_max, wproc.memory_info().rss)
        except psutil.Error:
            pass
    lat = np.asarray(tracker.latencies, dtype=np.float64)
    # throughput: every event covered inside the measured window (the worker's rate, whoever
    # produced the event) over the window from its opening to the last covering rec
    t0 = tracker.t_measure or tm0
    t1 = tracker.last_cover or t0
    span = max(1e-9, t1 - t0)
    n_meas = tracker.n_measured_covered
    n_win = tracker.window_covered
    d = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in set(m1) | set(m0)}
    ev_done = d.get("attnrec_events_total", 0.0)
    batches = d.get("attnrec_batch_size_count", 0.0)
    stages: dict[str, float] | None = None
    if ev_done > 0:
        stages = {st: round(1000.0 * d.get(f"attnrec_{st}_ms_sum", 0.0) / ev_done, 1) for st in ("redis", "model", "produce")}
        if wproc is not None:
            stages["worker_cpu"] = round(1e6 * (cpu1 - cpu0) / ev_done, 1)
    window = max(1e-9, tm1 - tm0)  # between the two /metrics scrapes
    res: dict[str, Any] = {
        "label": cfg.label,
        "events": n_meas,
        "duration_s": round(span, 3),
        "events_per_s": round(n_win / span, 1) if n_win else 0.0,
        "events_covered_in_window": n_win,
        "worker_events_per_s": round(ev_done / window, 1) if ev_done else None,
        "offered_rate": cfg.rate if cfg.rate else round(tracker.n_sent / max(1e-9, t_sent - t_start), 1),
        "rate_mode": "paced" if cfg.rate else f"max (closed loop, <= {cfg.max_inflight} in flight)",
        "saturated": bool(overloaded or (cfg.rate is not None and n_win / span < 0.9 * cfg.rate)),
        "overloaded_stop": overloaded,
        "latency_ms": {"p50": _pct(lat, 50), "p95": _pct(lat, 95), "p99": _pct(lat, 99),
                       "max": round(float(lat.max()), 2) if len(lat) else 0.0,
                       "mean": round(float(lat.mean()), 2) if len(lat) else 0.0},  # fmt: skip
        "catalog_items": (model_info or {}).get("catalog_items"),
        "max_len": (model_info or {}).get("max_len"),
        "workers": 1,
        "lost": tracker.lost(),
        "duplicates": tracker.duplicates,
        "produced": tracker.n_sent,
        "dead_letters": tracker.n_dead,
        "fallback_recs": tracker.fallbacks,
        "recs": tracker.recs,
        "stale_recs": tracker.stale,
        "unmatched_recs": tracker.unmatched,
        "batch_size": s.batch_size,
        "batch_wait_ms": s.batch_wait_ms,
        "worker_settings": {k: getattr(s, k) for k in ("batch_size", "batch_wait_ms", "buffer_len", "redis_timeout_s",
                                                       "ort_threads", "partitions", "top_k", "exclude_seen")},
        "mean_batch": round(ev_done / batches, 1) if batches else None,
        "stage_us_per_event": stages,
        "worker_cpu_cores": round((cpu1 - cpu0) / window, 2) if wproc is not None else None,
        "worker_rss_mb": round(rss_max / 2**20, 1) if rss_max else None,
        "generator_cpu_cores": round((me1 - me0) / window, 2),
        # CPU per event of everything on the box that serves this run (worker, Kafka, Redis, generator+tracker)
        "cpu_us_per_event": ({"worker": round(1e6 * (cpu1 - cpu0) / ev_done, 1) if wproc is not None else None,
                              **{k: round(1e6 * (oc1[k] - oc0.get(k, oc1[k])) / ev_done, 1) for k in oc1},
                              "generator": round(1e6 * (me1 - me0) / ev_done, 1)} if ev_done else None),  # fmt: skip
        "redis_bytes_per_user": redis_bytes_per_user(s, users),
        "users": len(users),
        "load_avg_before": load_before,
        "load_avg_after": _loadavg(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    res.update({k: v for k, v in (model_info or {}).items() if k not in res})
    return res


def generator_ceiling(s: Settings, seconds: float = 5.0, items: Sequence[str] | None = None) -> dict[str, Any]:
    """The load generator alone: events/s it produces (and the broker acks) at max rate."""
    import psutil

    from attnrec.kafka_util import ensure_topics, make_producer

    topic = f"bench-gen-{uuid.uuid4().hex[:8]}"
    ensure_topics(s, [topic])
    src = iter(EventSource(items or [f"item-{i}" for i in range(2, 12_002)], bench_users("gen-", 5000)))
    p = make_producer(s)
    me = psutil.Process()
    c0, t0, n = _cpu_s(me), time.perf_counter(), 0
    try:
        while time.perf_counter() - t0 < seconds:
            for _ in range(500):
                eid, user, key, value = next(src)
                p.send(topic, key=key, value=value)
            n += 500
        p.flush(60)
    finally:
        p.close(10)
    wall = time.perf_counter() - t0
    try:
        from attnrec.kafka_util import admin_client

        a = admin_client(s)
        a.delete_topics([topic])
        a.close()
    except Exception:
        pass
    return {"events": n, "seconds": round(wall, 2), "events_per_s": round(n / wall, 1),
            "cpu_cores": round((_cpu_s(me) - c0) / wall, 2), "load_avg": _loadavg()}  # fmt: skip


# --------------------------------------------------------------------------------- stage profile
def stage_profile(s: Settings, registry: Path, items: Sequence[str], users: Sequence[str], *, batch_size: int,
                  events: int = 4096, scorer: str = "onnx", warm: bool = True) -> dict[str, Any]:  # fmt: skip
    """Where the time goes per event, in process: the worker's own steps, in the worker's
    order (``stream.app.Processor._process_once`` as of this commit: parse -> one Lua call -> build inputs ->
    one model run -> recommendations -> JSON -> store latest recs), each timed apart, against
    the real Redis and model. Kafka consume/produce are not in it (see the end-to-end runs).
    ``warm``: the steady state of a serving worker, whose entry memo knows the users' older
    events; False measures a cold start (every entry parsed).
    """
    import asyncio

    from stream.app import redis_client
    from stream.buffer import RedisBuffers, user_keys
    from stream.logic import RawRecord, build_inputs, parse_records, recommend
    from stream.model import load_model, read_current

    v = read_current(registry)
    assert v is not None, f"no promoted model in {registry}"
    model = load_model(registry / v, threads=s.ort_threads)
    if scorer == "torch":
        model.session = TorchEagerSession(model.manifest["checkpoint"], model.top_k, s.ort_threads)  # type: ignore[assignment]
    src = iter(EventSource(items, users, seed=11))
    recs = []
    for off in range(events + batch_size):
        _, user, key, value = next(src)
        recs.append(RawRecord(s.clicks_topic, hash(user) % s.partitions, off, key, value))
    batches = [recs[i : i + batch_size] for i in range(0, len(recs), batch_size)]
    names = ("parse", "redis", "inputs", "model", "recommend", "serialize", "store_recs")
    window = model.max_len + 1  # what the worker asks Redis for (stream/app.py)
    ret = max(window, s.exclude_window if s.exclude_seen else 0)
    acc = dict.fromkeys(names, 0.0)
    cpu_acc = dict.fromkeys(names, 0.0)

    async def go() -> int:
        bufs = RedisBuffers(redis_client(s.model_copy(update={"redis_timeout_s": 120.0})), max_len=s.buffer_len, ttl_s=s.buffer_ttl_s, dedupe_window=s.dedupe_window)
        if warm:
            # steady state: a serving worker has parsed a returning user's older entries in
            # earlier batches (stream.logic.EntryTable); prime that memo with every buffer
            for i in range(0, len(users), 500):
                async with bufs.r.pipeline(transaction=False) as p:
                    for u in users[i : i + 500]:
                        p.lrange(user_keys(u)[0], 0, ret - 1)
                    got = await p.execute()
                build_inputs(model, dict(zip(users[i : i + 500], got, strict=True)), users[i : i + 500])
        n = 0
        for bi, batch in enumerate(batches):
            t, c = [time.perf_counter()], [time.thread_time()]

            def mark(t: list[float] = t, c: list[float] = c) -> None:
                t.append(time.perf_counter())
                c.append(time.thread_time())

            parsed = parse_records(batch)
            mark()
            res = await bufs.apply(parsed.events, return_len=ret)
            mark()
            triggers = {ev.user_id: ev for ev, _, _ in parsed.events}
            inputs = build_inputs(model, res.raw, res.users, exclude_seen=s.exclude_seen, exclude_window=s.exclude_window)
            mark()
            outputs = model.run(inputs.items, inputs.types, inputs.gaps, inputs.exclude) if inputs.users else None
            mark()
            out = recommend(model, res.users, res.raw, triggers, top_k=s.top_k, because_k=s.because_k,
                            exclude_seen=s.exclude_seen, outputs=outputs, inputs=inputs)  # fmt: skip
            mark()
            payloads = {r.user_id: r.to_json() for r in out}
            mark()
            await bufs.store_recs(payloads)
            mark()
            if bi == 0:
                continue  # warm-up batch
            n += len(batch)
            for k, name in enumerate(names):
                acc[name] += t[k + 1] - t[k]
                cpu_acc[name] += c[k + 1] - c[k]
        await bufs.r.aclose()
        return n

    c0 = time.process_time()
    n = asyncio.run(go())
    cpu = time.process_time() - c0
    per = {k: round(1e6 * v / max(1, n), 1) for k, v in acc.items()}
    per["total"] = round(sum(per.values()), 1)
    cpu_per = {k: round(1e6 * v / max(1, n), 1) for k, v in cpu_acc.items()}
    cpu_per["total"] = round(sum(cpu_per.values()), 1)
    return {"batch_size": batch_size, "scorer": scorer, "warm": warm, "events": n, "us_per_event": per, "cpu_us_per_event": cpu_per,
            "process_cpu_us_per_event": round(1e6 * cpu / max(1, n), 1), "load_avg": _loadavg()}  # fmt: skip


# --------------------------------------------------------------------------------- a worker session
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


def open_session(base: Settings, *, registry: Path, items: list[str], n_users: int, batch_size: int, scorer: str,
                 log_dir: Path, catalog_items: int, max_len: int, start_worker: bool = True,
                 metrics_url: str | None = None, worker_pid: int | None = None, prefill_len: int = -1,
                 worker_src: Path | None = None) -> Session:
    from attnrec.kafka_util import ensure_topics

    tag = uuid.uuid4().hex[:6]
    if start_worker:
        s = base.model_copy(update={
            "clicks_topic": f"bench-{tag}-clicks", "recs_topic": f"bench-{tag}-recs", "dlq_topic": f"bench-{tag}-clicks.dlq",
            "updates_topic": f"bench-{tag}-model-updates", "group_id": f"attnrec-bench-{tag}",
            "registry": registry, "batch_size": batch_size,
        })  # fmt: skip
    else:
        s = base
    ensure_topics(s)
    prefix = f"bench-{tag}-"
    users = bench_users(prefix, n_users)
    t0 = time.monotonic()
    fill = s.buffer_len if prefill_len < 0 else min(prefill_len, s.buffer_len)
    if fill:
        prefill(s, users, items, fill)
        log.info("pre-filled %d users x %d entries in %.1fs", n_users, fill, time.monotonic() - t0)
    info = {"catalog_items": catalog_items, "max_len": max_len, "scorer": scorer, "registry": str(registry),
            "prefill": fill, "buffer_len": s.buffer_len}
    if not start_worker:
        return Session(s, items, users, prefix, info, None, metrics_url, worker_pid)
    w = WorkerHandle(s, log_dir, scorer=scorer, src=worker_src)
    if worker_src is not None:
        info["worker_src"] = str(worker_src)
    try:
        ready = w.wait_ready()
    except BaseException:
        w.stop()
        raise
    info["model_version"] = ready.get("model_version")
    return Session(s, items, users, prefix, info, w, w.url("/metrics"), w.pid)


def quiesce(metrics_url: str | None, timeout: float = 120.0) -> float:
    """Wait until the worker has no backlog (lag 0 and no events processed for 2 s), so one
    run's leftovers do not queue in front of the next run's events. Returns the seconds waited."""
    if not metrics_url:
        return 0.0
    t0 = time.monotonic()
    last, stable_since = None, time.monotonic()
    while time.monotonic() - t0 < timeout:
        m = scrape(metrics_url)
        done = m.get("attnrec_events_total")
        if done != last:
            last, stable_since = done, time.monotonic()
        elif m.get("attnrec_consumer_lag", 0.0) <= 0 and time.monotonic() - stable_since >= 2.0:
            break
        time.sleep(0.5)
    return round(time.monotonic() - t0, 1)


def run_repeated(sess: Session, cfg: RunConfig, repeats: int, progress: bool) -> list[dict[str, Any]]:
    out = []
    for r in range(repeats):
        waited = quiesce(sess.metrics_url)
        if waited > 5:
            log.info("waited %.0fs for the worker to finish the previous run's backlog", waited)
        c = replace(cfg, seed=cfg.seed + r, label=f"{cfg.label} #{r + 1}")
        res = run_once(sess.s, c, items=sess.items, users=sess.users, worker_pid=sess.worker_pid,
                       metrics_url=sess.metrics_url, progress=progress, model_info=sess.info)  # fmt: skip
        res["repeat"] = r + 1
        res["quiesce_wait_s"] = waited
        log.info("%s: %.0f ev/s, p50 %.1f p99 %.1f ms, lost %d, dup %d, load %s", c.label, res["events_per_s"],
                 res["latency_ms"]["p50"], res["latency_ms"]["p99"], res["lost"], res["duplicates"], res["load_avg_after"])
        out.append(res)
        if sess.worker is not None and sess.worker.proc.poll() is not None:
            raise AttnrecError(f"worker exited:\n{sess.worker.tail()}")
    return out


# --------------------------------------------------------------------------------- aggregation
SUMMARY_KEYS = ("events_per_s", "p50", "p95", "p99", "max")


def _get(r: dict[str, Any], k: str) -> float:
    return float(r["latency_ms"][k] if k in ("p50", "p95", "p99", "max") else r[k])


def _worker_eps(r: dict[str, Any]) -> float | None:
    """The worker's own events/s; for older JSON derived from its CPU cores / CPU per event."""
    if r.get("worker_events_per_s"):
        return float(r["worker_events_per_s"])
    st = r.get("stage_us_per_event") or {}
    if r.get("worker_cpu_cores") and st.get("worker_cpu"):
        return 1e6 * float(r["worker_cpu_cores"]) / float(st["worker_cpu"])
    return None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min, max of each figure over repeats; a warning when the spread exceeds 15%."""
    out: dict[str, Any] = {"n": len(runs), "warnings": []}
    for k in SUMMARY_KEYS:
        xs = [_get(r, k) for r in runs]
        med = statistics.median(xs)
        out[k] = {"median": round(med, 2), "min": round(min(xs), 2), "max": round(max(xs), 2)}
        spread = (max(xs) - min(xs)) / med if med else 0.0
        out[k]["spread"] = round(spread, 3)
        if len(xs) > 1 and spread > SPREAD_WARN and k != "max":
            out["warnings"].append(f"{k} spread {100 * spread:.0f}% > {100 * SPREAD_WARN:.0f}%")
    for k in ("lost", "duplicates"):
        out[k] = int(sum(r[k] for r in runs))
    out["saturated"] = any(r.get("saturated") for r in runs)
    wev = [_worker_eps(r) for r in runs]
    wev = [x for x in wev if x]
    if wev:
        out["worker_events_per_s"] = round(statistics.median(wev), 1)
    for k in ("offered_rate", "catalog_items", "max_len", "batch_size", "scorer", "mean_batch", "worker_cpu_cores",
              "worker_rss_mb", "redis_bytes_per_user", "generator_cpu_cores"):
        vals = [r.get(k) for r in runs if r.get(k) is not None]
        if vals:
            out[k] = statistics.median(vals) if isinstance(vals[0], (int, float)) else vals[0]
    cu = [r["cpu_us_per_event"] for r in runs if r.get("cpu_us_per_event")]
    if cu:
        out["cpu_us_per_event"] = {k: round(statistics.median(x[k] for x in cu if x.get(k) is not None), 1)
                                   for k in cu[0] if any(x.get(k) is not None for x in cu)}  # fmt: skip
    st = [r["stage_us_per_event"] for r in runs if r.get("stage_us_per_event")]
    if st:
        out["stage_us_per_event"] = {k: round(statistics.median(x.get(k, 0.0) for x in st), 1) for k in st[0]}
    out["load_avg"] = [r["load_avg_after"][0] for r in runs if r.get("load_avg_after")]
    return out


def merge_reports(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Several sweep reports as one: runs and stage profiles concatenated; an error row is dropped
    when a later report measured that shape."""
    if len(reps) == 1:
        return reps[0]
    out = dict(reps[0])
    out["runs"] = [r for rep in reps for r in rep.get("runs", [])]
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}  # a later profile of the same step replaces an earlier one
    for rep in reps:
        for sp in rep.get("stage_profiles", []):
            latest[(sp["scorer"], sp["batch_size"], sp.get("catalog_items"), sp.get("max_len"))] = sp
    out["stage_profiles"] = list(latest.values())
    measured = {(r.get("catalog_items"), r.get("max_len")) for r in out["runs"]}
    out["summaries"] = [x for rep in reps for x in rep.get("summaries", [])
                        if "error" not in x or (x.get("catalog_items"), x.get("max_len")) not in measured]  # fmt: skip
    out["finished_at"] = max(rep.get("finished_at", "") for rep in reps)
    out["command"] = " ; ".join(rep.get("command", "") for rep in reps if rep.get("command"))
    out["parts"] = [{k: rep.get(k) for k in ("started_at", "finished_at", "command", "generator_alone")} for rep in reps]
    return out


def resummarise(rep: dict[str, Any]) -> dict[str, Any]:
    """Recompute the summaries of a report from its runs (grouped by label without ``#n``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rep.get("runs", []):
        groups.setdefault(r["label"].rsplit(" #", 1)[0], []).append(r)
    if not groups:
        return rep
    sums = []
    for label, runs in groups.items():
        sm = summarise(runs)
        sm["label"] = label
        sm["rate_label"] = label.rsplit("@", 1)[-1]
        sm["scorer"] = runs[0].get("scorer", sm.get("scorer"))
        for k in ("batch_size", "catalog_items", "max_len"):
            sm[k] = runs[0].get(k)
        sums.append(sm)
    sums += [x for x in rep.get("summaries", []) if "error" in x]
    return {**rep, "summaries": sums}


def _fmt(v: dict[str, Any], digits: int = 0) -> str:
    f = f"{{:.{digits}f}}"
    return f"{f.format(v['median'])} ({f.format(v['min'])}–{f.format(v['max'])})"


def markdown_rows(summaries: list[dict[str, Any]]) -> str:
    head = ("| scorer | B | items | L | offered ev/s | sustained ev/s | worker ev/s | p50 ms | p95 ms | p99 ms | lost | dup | "
            "mean batch | worker CPU µs/ev | worker wall µs/ev redis / model / produce | box CPU µs/ev kafka / redis / generator | "
            "RSS MB | Redis B/user | load | notes |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")  # fmt: skip
    lines = []
    for sm in summaries:
        st = sm.get("stage_us_per_event") or {}
        stages = (f"{st.get('worker_cpu', 0):.0f} | {st.get('redis', 0):.0f} / {st.get('model', 0):.0f} / "
                  f"{st.get('produce', 0):.0f}") if st else "– | –"
        cu = sm.get("cpu_us_per_event") or {}
        box = " / ".join(f"{cu[k]:.0f}" if cu.get(k) is not None else "–" for k in ("kafka", "redis", "generator")) if cu else "–"
        notes = list(sm.get("warnings", []))
        if sm.get("saturated"):
            notes.insert(0, "saturated")
        rate = sm.get("rate_label") or sm.get("offered_rate")
        load = ", ".join(f"{x:.1f}" for x in sm.get("load_avg", []))
        lines.append(
            f"| {sm.get('scorer', '')} | {sm.get('batch_size', '')} | {sm.get('catalog_items', ''):,} | {sm.get('max_len', '')} | "
            f"{rate} | {_fmt(sm['events_per_s'])} | {sm.get('worker_events_per_s') or 0:.0f} | {_fmt(sm['p50'], 1)} | {_fmt(sm['p95'], 1)} | {_fmt(sm['p99'], 1)} | "
            f"{sm['lost']} | {sm['duplicates']} | {sm.get('mean_batch', '–')} | {stages} | {box} | {sm.get('worker_rss_mb', '–')} | "
            f"{sm.get('redis_bytes_per_user') or 0:,.0f} | {load} | {'; '.join(notes)} |"
        )
    return head + "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    import psutil

    commit = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "stream", "attnrec"], cwd=REPO, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        commit += " (stream/ or attnrec/ modified)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu_model": model, "cores": os.cpu_count(), "git": commit, "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}  # fmt: skip


# --------------------------------------------------------------------------------- sweep
@dataclass
class SweepPlan:
    catalogs: tuple[int, ...] = (3_000, 12_000, 100_000, 1_000_000)
    lengths: tuple[int, ...] = (50, 200)
    ladder: tuple[float | None, ...] = (100, 300, 1000, 2000, 3000, None)  # None = max
    short_ladder: tuple[float | None, ...] = (1000, None)  # other shapes: what fits the time
    key: tuple[int, int] = (12_000, 50)
    repeats: int = 3
    duration_s: float = 8.0
    warmup_s: float = 2.0
    baselines: bool = True
    drain_timeout_s: float = 60.0
    stages: bool = True
    stages_only: bool = False
    key_runs: bool = True  # False: only the other shapes (e.g. to fill in what a sweep could not run)
    shapes: list[tuple[int, int]] = field(default_factory=list)

    def all_shapes(self) -> list[tuple[int, int]]:
        return self.shapes or [(c, L) for c in self.catalogs for L in self.lengths]


def _rate_label(rate: float | None) -> str:
    return "max" if rate is None else f"{rate:g}"


def run_sweep(base: Settings, plan: SweepPlan, *, cache: Path, users: int, progress: bool,
              out_dir: Path, worker_src: Path | None = None) -> dict[str, Any]:  # fmt: skip
    machine = machine_info()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    gen = generator_ceiling(base, 5.0)
    log.info("generator alone: %.0f events/s (%.2f cores)", gen["events_per_s"], gen["cpu_cores"])
    groups: list[dict[str, Any]] = []

    def session_runs(n_items: int, L: int, scorer: str, B: int, ladder: Sequence[float | None]) -> None:
        reg, items = ensure_model(cache, n_items, L)
        sess = open_session(base, registry=reg, items=items, n_users=users, batch_size=B, scorer=scorer,
                            log_dir=cache / "logs", catalog_items=n_items, max_len=L, worker_src=worker_src)  # fmt: skip
        try:
            for rate in ladder:
                cfg = RunConfig(rate=rate, duration_s=plan.duration_s, warmup_s=plan.warmup_s,
                                drain_timeout_s=plan.drain_timeout_s, label=f"{scorer} B={B} {n_items} L={L} @{_rate_label(rate)}")  # fmt: skip
                runs = run_repeated(sess, cfg, plan.repeats, progress)
                sm = summarise(runs)
                sm["rate_label"] = _rate_label(rate)
                sm["scorer"], sm["batch_size"], sm["catalog_items"], sm["max_len"] = scorer, B, n_items, L
                for w in sm["warnings"]:
                    log.warning("%s: %s", cfg.label, w)
                groups.append({"summary": sm, "runs": runs})
                _write_partial(out_dir, machine, gen, groups, started)
        finally:
            sess.close()

    key = plan.key
    if plan.stages_only:
        plan.key_runs = plan.baselines = False
    if plan.key_runs:
        session_runs(key[0], key[1], "onnx", 256, plan.ladder)
    if plan.baselines and plan.key_runs:
        session_runs(key[0], key[1], "onnx", 1, plan.short_ladder)
        session_runs(key[0], key[1], "torch", 256, plan.short_ladder)
    for n_items, L in plan.all_shapes():
        if (n_items, L) == key or plan.stages_only:
            continue
        try:
            session_runs(n_items, L, "onnx", 256, plan.short_ladder)
        except (AttnrecError, OSError, MemoryError) as exc:
            log.error("shape %d items, L=%d failed: %s", n_items, L, exc)
            groups.append({"summary": {"scorer": "onnx", "catalog_items": n_items, "max_len": L, "error": _short(exc)}, "runs": []})
    stages: list[dict[str, Any]] = []

    def profile_stages() -> None:
        reg, items = ensure_model(cache, *key)
        us = bench_users("bench-stages-", users)
        prefill(base, us, items, base.buffer_len)
        try:
            for scorer, B in (("onnx", 256), ("onnx", 1), ("torch", 256)):
                sp = stage_profile(base, reg, items, us, batch_size=B, events=4096 if B > 1 else 512, scorer=scorer)
                sp.update({"catalog_items": key[0], "max_len": key[1]})
                log.info("stage profile %s B=%d: %s", scorer, B, sp["us_per_event"])
                stages.append(sp)
            for n_items, L in plan.all_shapes():  # how the cost grows with catalogue and length
                if (n_items, L) == key:
                    continue
                try:
                    reg, items = ensure_model(cache, n_items, L)
                    sp = stage_profile(base, reg, items, us, batch_size=256, events=2048)
                except (AttnrecError, OSError, MemoryError, AssertionError) as exc:
                    log.error("stage profile of %d items, L=%d failed: %s", n_items, L, exc)
                    continue
                sp.update({"catalog_items": n_items, "max_len": L})
                log.info("stage profile onnx %d items L=%d: %s", n_items, L, sp["us_per_event"])
                stages.append(sp)
        finally:
            cleanup_users(base, "bench-stages-")
    if plan.stages:  # last: it needs every shape's model, and it is the cheap part
        profile_stages()
    rep = _report(machine, gen, groups, started)
    rep["stage_profiles"] = stages
    return rep


def _short(exc: BaseException) -> str:
    """The last meaningful line of an error (a worker's traceback tail ends with the cause)."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return (lines[0] if len(lines) == 1 else f"{lines[0][:80]} ... {lines[-1]}")[:300] if lines else type(exc).__name__


def _report(machine: dict[str, Any], gen: dict[str, Any], groups: list[dict[str, Any]], started: str) -> dict[str, Any]:
    # the headline (DESIGN.md's bench --json fields): 12k items, L=50, batched, max rate
    head = next((g for g in groups if g["summary"].get("rate_label") == "max" and g["summary"].get("scorer") == "onnx"
                 and g["summary"].get("batch_size") != 1), groups[0] if groups else None)  # fmt: skip
    rep: dict[str, Any] = {}
    if head and head["runs"]:
        sm = head["summary"]
        med_run = sorted(head["runs"], key=lambda r: r["events_per_s"])[len(head["runs"]) // 2]
        rep.update({k: med_run[k] for k in ("events", "duration_s", "events_per_s", "offered_rate", "latency_ms",
                                            "catalog_items", "max_len", "workers")})  # fmt: skip
        rep["lost"] = sm["lost"]
        rep["duplicates"] = sm["duplicates"]
    rep.update({"kind": "sweep", "started_at": started,
                "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "machine": machine, "generator_alone": gen,
                "summaries": [g["summary"] for g in groups], "runs": [r for g in groups for r in g["runs"]]})  # fmt: skip
    return rep


def _write_partial(out_dir: Path, machine: dict[str, Any], gen: dict[str, Any], groups: list[dict[str, Any]], started: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.partial.json").write_text(json.dumps(_report(machine, gen, groups, started), indent=1))


def plot(report: dict[str, Any], path: Path) -> Path | None:
    """Left: p50 (dashed) and p99 latency against offered load, one line per configuration.
    Right: the worker's throughput at ``--rate max`` per configuration (median, min-max bars)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no plot")
        return None
    series: dict[str, list[dict[str, Any]]] = {}
    for sm in report.get("summaries", []):
        if "events_per_s" not in sm:
            continue
        name = f"{sm['scorer']} B={sm['batch_size']} {sm['catalog_items'] // 1000:,}k L={sm['max_len']}"
        series.setdefault(name, []).append(sm)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [3, 2]})
    for name, sms in series.items():
        sms = sorted(sms, key=lambda x: float(x.get("offered_rate") or 0))
        xs = [float(x.get("offered_rate") or 0) for x in sms]
        (line,) = ax.plot(xs, [x["p99"]["median"] for x in sms], marker="o", label=name)
        ax.plot(xs, [x["p50"]["median"] for x in sms], marker=".", linestyle="--", color=line.get_color())
        ax.fill_between(xs, [x["p99"]["min"] for x in sms], [x["p99"]["max"] for x in sms], color=line.get_color(), alpha=0.12)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered events/s (paced; for 'max' the rate the closed loop achieved)")
    ax.set_ylabel("produce → recommendation latency, ms (p99 solid, p50 dashed)")
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.axhline(10, color="grey", linewidth=0.8, linestyle=":")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    names, med, lo, hi = [], [], [], []
    for name, sms in series.items():
        top = [x for x in sms if x.get("rate_label") == "max"]
        if not top:
            continue
        runs = [r for r in report.get("runs", []) if r.get("label", "").rsplit(" #", 1)[0] == top[0].get("label")]
        vals = [v for v in (_worker_eps(r) for r in runs) if v] or [top[0]["events_per_s"]["median"]]
        la = top[0].get("load_avg") or []
        names.append(f"{name}  (load {statistics.median(la):.0f})" if la else name)
        med.append(statistics.median(vals))
        lo.append(statistics.median(vals) - min(vals))
        hi.append(max(vals) - statistics.median(vals))
    bx.barh(range(len(names)), med, xerr=[lo, hi], color="tab:blue", alpha=0.7)
    bx.set_yticks(range(len(names)))
    bx.set_yticklabels(names, fontsize=8)
    bx.invert_yaxis()
    bx.set_xlabel("worker events/s at --rate max (median, min–max)")
    bx.grid(True, axis="x", alpha=0.3)
    m = report.get("machine", {})
    loads = [x for sm in report.get("summaries", []) for x in sm.get("load_avg", [])]
    load = f", load avg {min(loads):.0f}–{max(loads):.0f}" if loads else ""
    fig.suptitle(f"attnrec bench — one worker, Kafka + Redis + generator on {m.get('cores')} cores ({m.get('cpu_model', '')}), "
                 f"{report.get('started_at', '')[:16]} UTC{load}", fontsize=10)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


SECTION = "## End-to-end throughput and latency"


def update_benchmarks_md(md: Path, body: str) -> None:
    """Replace (or append) this module's section of docs/BENCHMARKS.md; other sections stay."""
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    block = f"{SECTION}\n\n{body.rstrip()}\n"
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + block + ("\n" + text[nxt + 1 :] if nxt != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + block
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)


# --------------------------------------------------------------------------------- CLI
def _rate(v: str) -> float | None:
    if str(v).strip().lower() == "max":
        return None
    try:
        r = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rate must be a number or 'max', got {v!r}") from None
    if r <= 0:
        raise argparse.ArgumentTypeError("--rate must be positive")
    return r


def add_bench_parser(subparsers: Any) -> None:
    e = env_default
    sp = subparsers.add_parser("bench", help="end-to-end throughput/latency benchmark against the stack")
    sp.add_argument("--rate", type=_rate, default=_rate(str(e("rate", "1000"))), help="offered events/s or 'max' (ATTNREC_RATE, 1000)")
    sp.add_argument("--duration", type=float, default=e("duration", 10.0), help="measured seconds (ATTNREC_DURATION, 10)")
    sp.add_argument("--warmup", type=float, default=e("warmup", 2.0), help="unmeasured seconds first (ATTNREC_WARMUP, 2)")
    sp.add_argument("--repeats", type=int, default=e("repeats", 1), help="runs per figure; median/min/max (ATTNREC_REPEATS, 1; sweep 3)")
    sp.add_argument("--users", type=int, default=e("users", 2000), help="distinct users, buffers pre-filled (ATTNREC_USERS, 2000)")
    sp.add_argument("--max-inflight", type=int, default=e("max-inflight", 2000), help="backlog bound at --rate max (ATTNREC_MAX_INFLIGHT)")
    sp.add_argument("--drain-timeout", type=float, default=e("drain-timeout", 120.0),
                    help="max wait for late recs; stops earlier after 15 s without progress (ATTNREC_DRAIN_TIMEOUT)")
    sp.add_argument("--prefill", type=int, default=e("prefill", -1),
                    help="entries pre-filled per user buffer; -1 = the worker's buffer_len (steady state) (ATTNREC_PREFILL)")
    sp.add_argument("--catalog", type=int, default=e("catalog", 12_000), help="items of the random-weight model (ATTNREC_CATALOG, 12000)")
    sp.add_argument("--max-len", type=int, default=e("max-len", 50), help="model max_len (ATTNREC_MAX_LEN, 50)")
    sp.add_argument("--d-model", type=int, default=e("d-model", 64), help="random model width (ATTNREC_D_MODEL, 64)")
    sp.add_argument("--blocks", type=int, default=e("blocks", 2), help="random model blocks (ATTNREC_BLOCKS, 2)")
    sp.add_argument("--model", choices=["random", "registry"], default=e("model", "random"),
                    help="random: a cached random-weight model of --catalog/--max-len; registry: the settings' registry (ATTNREC_MODEL)")
    sp.add_argument("--batch-size", type=int, default=e("batch-size", 256), help="worker batch size B (ATTNREC_BATCH_SIZE, 256)")
    sp.add_argument("--scorer", choices=["onnx", "torch"], default=e("scorer", "onnx"), help="worker scorer (ATTNREC_SCORER, onnx)")
    sp.add_argument("--baselines", action="store_true", default=e("baselines", False),
                    help="also run B=1 and the torch-eager scorer at the same rate (ATTNREC_BASELINES)")
    sp.add_argument("--no-worker", action="store_true", default=e("no-worker", False),
                    help="use a running worker on the settings' topics (ATTNREC_NO_WORKER)")
    sp.add_argument("--metrics-url", default=e("metrics-url", None), help="with --no-worker: its /metrics URL (ATTNREC_METRICS_URL)")
    sp.add_argument("--worker-pid", type=int, default=e("worker-pid", 0) or None, help="with --no-worker: its pid for CPU/RSS (ATTNREC_WORKER_PID)")
    sp.add_argument("--worker-src", type=Path, default=e("worker-src", None),
                    help="run the worker from this source tree, e.g. a `git archive` of a commit (ATTNREC_WORKER_SRC)")
    sp.add_argument("--start-stack", action="store_true", default=e("start-stack", False), help="start the local stack (and stop it after) (ATTNREC_START_STACK)")
    sp.add_argument("--generator-only", action="store_true", default=e("generator-only", False), help="measure the load generator alone (ATTNREC_GENERATOR_ONLY)")
    sp.add_argument("--sweep", action="store_true", default=e("sweep", False), help="the make-bench matrix (ATTNREC_SWEEP)")
    sp.add_argument("--sweep-shapes", default=e("sweep-shapes", ""), help="sweep only these ITEMSxL, e.g. 3000x50,100000x50 (ATTNREC_SWEEP_SHAPES)")
    sp.add_argument("--sweep-ladder", default=e("sweep-ladder", "100,300,1000,2000,3000,max"),
                    help="offered rates for the key shape (ATTNREC_SWEEP_LADDER)")
    sp.add_argument("--sweep-short-ladder", default=e("sweep-short-ladder", "1000,max"),
                    help="offered rates for baselines and other shapes (ATTNREC_SWEEP_SHORT_LADDER)")
    sp.add_argument("--no-md", action="store_true", default=e("no-md", False), help="sweep: do not touch BENCHMARKS.md")
    sp.add_argument("--shapes-only", action="store_true", default=e("shapes-only", False),
                    help="sweep: only the --sweep-shapes other than 12000x50, no key ladder or baselines (ATTNREC_SHAPES_ONLY)")
    sp.add_argument("--stages-only", action="store_true", default=e("stages-only", False),
                    help="sweep: only the in-process stage profiles (ATTNREC_STAGES_ONLY)")
    sp.add_argument("--no-stages", action="store_true", default=e("no-stages", False), help="skip the in-process stage profile")
    sp.add_argument("--no-baselines-in-sweep", action="store_true", default=e("no-baselines-in-sweep", False), help="(ATTNREC_NO_BASELINES_IN_SWEEP)")
    sp.add_argument("--out-dir", type=Path, default=Path(e("out-dir", "docs/bench")), help="PNG/JSON dir of --sweep (ATTNREC_OUT_DIR)")
    sp.add_argument("--benchmarks-md", type=Path, default=Path(e("benchmarks-md", "docs/BENCHMARKS.md")), help="(ATTNREC_BENCHMARKS_MD)")
    sp.add_argument("--cache", type=Path, default=None, help="models and logs (ATTNREC_CACHE, HOME/bench)")
    sp.add_argument("--keep-state", action="store_true", default=e("keep-state", False), help="keep the bench users' Redis keys")
    sp.add_argument("--json", type=Path, default=e("json", None), help="write the report here (ATTNREC_JSON)")
    sp.add_argument("--render", type=Path, nargs="+", default=None,
                    help="re-render the plot and the BENCHMARKS.md section from sweep JSONs (runs merged, first file's machine)")
    sp.add_argument("--render-key", type=Path, default=None, help="with --render: a later sweep JSON shown as the key figures")
    sp.add_argument("--quiet", action="store_true", default=e("quiet", False), help="no progress bar")
    sp.add_argument("--home", type=Path, default=None)
    sp.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    s = load_settings(home=args.home)
    stack = None
    if args.start_stack:
        from attnrec.cli import _stack

        stack = _stack(s)
        stack.up()
        s = s.model_copy(update={"kafka_bootstrap": stack.bootstrap, "redis_url": stack.redis_url})
    cache = (args.cache or Path(os.environ.get("ATTNREC_CACHE", s.home / "bench"))).resolve()
    try:
        report = _bench(args, s, cache)
    finally:
        if stack is not None:
            stack.down()
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(_headline(report))
    return 0


def _headline(rep: dict[str, Any]) -> str:
    if "generator_alone" in rep and "events_per_s" not in rep:
        g = rep["generator_alone"]
        return f"generator alone: {g['events_per_s']:.0f} events/s ({g['cpu_cores']} cores)"
    lat = rep.get("latency_ms", {})
    return (f"{rep.get('events_per_s', 0):.0f} events/s sustained (offered {rep.get('offered_rate')}), latency p50 "
            f"{lat.get('p50')} p95 {lat.get('p95')} p99 {lat.get('p99')} max {lat.get('max')} ms, lost {rep.get('lost')}, "
            f"duplicates {rep.get('duplicates')}")  # fmt: skip


def _bench(args: argparse.Namespace, s: Settings, cache: Path) -> dict[str, Any]:
    progress = not args.quiet and sys.stderr.isatty()
    if args.generator_only:
        return {"generator_alone": generator_ceiling(s, args.duration), "machine": machine_info()}
    if args.render:
        rep = resummarise(merge_reports([json.loads(p.read_text()) for p in args.render]))
        key = resummarise(json.loads(args.render_key.read_text())) if args.render_key else None
        png = plot(rep, args.out_dir / "latency_vs_load.png")
        rep["plot"] = str(png) if png else None
        notes = args.out_dir / "notes.md"  # hand-written findings, kept next to the data
        body = benchmarks_section(rep, rep.get("command", ""), key)
        if notes.is_file():
            body += "\n" + notes.read_text()
        update_benchmarks_md(args.benchmarks_md, body)
        return rep
    if args.sweep:
        plan = SweepPlan(repeats=max(3, args.repeats), duration_s=args.duration, warmup_s=args.warmup,
                         baselines=not args.no_baselines_in_sweep, stages=not args.no_stages,
                         ladder=tuple(_rate(x) for x in args.sweep_ladder.split(",")),
                         short_ladder=tuple(_rate(x) for x in args.sweep_short_ladder.split(",")),
                         drain_timeout_s=args.drain_timeout, key_runs=not args.shapes_only,
                         stages_only=args.stages_only)  # fmt: skip
        if args.sweep_shapes:
            plan.shapes = [(int(a), int(b)) for a, b in (x.lower().split("x") for x in args.sweep_shapes.split(","))]
        rep = run_sweep(s, plan, cache=cache, users=args.users, progress=progress, out_dir=args.out_dir,
                        worker_src=args.worker_src)  # fmt: skip
        rep["command"] = " ".join(["attnrec"] + sys.argv[1:])
        png = plot(rep, args.out_dir / "latency_vs_load.png")
        rep["plot"] = str(png) if png else None
        (args.out_dir / "bench.json").write_text(json.dumps(rep, indent=1))
        if not args.no_md:
            update_benchmarks_md(args.benchmarks_md, benchmarks_section(rep, rep["command"]))
        return rep
    # one configuration (plus its baselines), repeated
    if args.model == "registry" or args.no_worker:
        from stream.model import read_current

        reg = s.registry_dir
        v = read_current(reg)
        if v is None:
            raise ConfigError(f"no promoted model in {reg}")
        from exporter.registry import load_items

        man = json.loads((reg / v / "manifest.json").read_text())
        items, n_items, L = [str(x) for x in load_items(reg / v, man)], int(man["n_items"]) - 2, int(man["max_len"])
    else:
        reg, items = ensure_model(cache, args.catalog, args.max_len, d_model=args.d_model, n_blocks=args.blocks)
        n_items, L = args.catalog, args.max_len
    cfg = RunConfig(rate=args.rate, duration_s=args.duration, warmup_s=args.warmup, users=args.users,
                    max_inflight=args.max_inflight, drain_timeout_s=args.drain_timeout)  # fmt: skip
    variants = [(args.scorer, args.batch_size)]
    if args.baselines:
        variants += [v for v in (("onnx", 1), ("torch", args.batch_size)) if v not in variants]
    groups = []
    for scorer, B in variants:
        sess = open_session(s, registry=reg, items=items, n_users=args.users, batch_size=B, scorer=scorer,
                            log_dir=cache / "logs", catalog_items=n_items, max_len=L, start_worker=not args.no_worker,
                            metrics_url=args.metrics_url, worker_pid=args.worker_pid, prefill_len=args.prefill,
                            worker_src=args.worker_src)  # fmt: skip
        try:
            c = replace(cfg, label=f"{scorer} B={B} @{_rate_label(args.rate)}")
            runs = run_repeated(sess, c, args.repeats, progress)
        finally:
            sess.close(args.keep_state)
        sm = summarise(runs)
        sm["rate_label"] = _rate_label(args.rate)
        groups.append({"summary": sm, "runs": runs})
    head = groups[0]
    med = sorted(head["runs"], key=lambda r: r["events_per_s"])[len(head["runs"]) // 2]
    rep = dict(med)
    rep["lost"] = head["summary"]["lost"]
    rep["duplicates"] = head["summary"]["duplicates"]
    rep["machine"] = machine_info()
    rep["summaries"] = [g["summary"] for g in groups]
    rep["runs"] = [r for g in groups for r in g["runs"]]
    if len(groups) > 1:
        base_eps = head["summary"]["events_per_s"]["median"]
        rep["ratios"] = {f"{g['summary']['scorer']} B={g['summary']['batch_size']}":
                         round(base_eps / max(1e-9, g["summary"]["events_per_s"]["median"]), 2) for g in groups[1:]}  # fmt: skip
    for w in head["summary"]["warnings"]:
        log.warning("%s", w)
    return rep


METHOD_MD = """\
How it is measured (`attnrec/bench.py`; rerun with `make bench`):

- One worker (`attnrec worker` as a subprocess, B=256, W=5 ms unless stated), Kafka (KRaft, one broker) and Redis
  (AOF everysec) as local processes, and the load generator + recommendation tracker (one Python process, kafka-python)
  all on the same 2-core box. Models are random-weight AttnRec (2 blocks, d=64, 1 head, event types and time gaps)
  exported through the normal exporter path (parity gate, registry, load checks); speed does not depend on the weights.
- Events: users drawn uniformly from `--users` (2,000), items Zipf-like from the model's own vocabulary (so every
  event is scored; `fallback_recs` is 0). Every user's buffer is pre-filled to `buffer_len` (200) entries first: the
  steady state of an active user, where the model sees full `max_len` windows.
- Offered rate: paced (`--rate N`), or `max` = closed loop keeping at most `--max-inflight` events unanswered
  (so the figure is the worker's throughput and the latency at saturation stays bounded). A paced run that falls
  2 s behind stops offering and is marked *saturated*.
- Latency = produce time of an event -> arrival of the recommendation that covers it at a `recs` consumer.
  The worker emits one recommendation per user per batch (trigger = the user's last event in the batch); a rec
  with trigger = the user's k-th event covers all of that user's still-uncovered events up to k, and each is charged
  its own wait. A rec whose trigger was already seen is a duplicate. `lost` = events with neither a covering rec nor a
  dead letter when the drain ends (no progress for 15 s, or `--drain-timeout`); in a saturated run these are
  backlog the worker had not reached yet, not dropped messages.
- Sustained events/s = events covered in the measured window / (window opening -> last covering rec); `worker ev/s`
  is the worker's own count over the same window (`attnrec_events_total`). The first `--warmup` s are not measured.
- Per-stage worker time comes from the worker's own Prometheus histograms (diffed over the run); worker CPU and RSS
  from psutil; Redis bytes/user from `MEMORY USAGE` of the bench users' four keys.
- Baselines in the same sweep: B=1 (one Lua call, one ONNX run and one awaited produce per event) and a torch-eager
  scorer (the exporter's `ServingGraph` in `torch.inference_mode`, injected in place of the onnxruntime session).
"""


def _key_table(key: dict[str, Any]) -> list[str]:
    m = key.get("machine", {})
    sums = [x for x in key.get("summaries", []) if "events_per_s" in x]
    out = [f"### Key figures, measured last ({key.get('started_at', '')} → {key.get('finished_at', '')} UTC)", "",
           f"Command: `{key.get('command', '')}`; {m.get('cores')} cores ({m.get('cpu_model')}). "
           f"Load generator alone: {key.get('generator_alone', {}).get('events_per_s', 0):,.0f} events/s.", "",
           markdown_rows(sums)]  # fmt: skip
    ratios = []
    by = {(x["scorer"], x["batch_size"], x.get("rate_label")): x for x in sums}
    for rate in ("max", "1000"):
        base = by.get(("onnx", 256, rate))
        for other in (("onnx", 1, rate), ("torch", 256, rate)):
            o = by.get(other)
            if base and o and o["events_per_s"]["median"] > 0:
                ratios.append(f"at {rate}: ONNX B=256 / {other[0]} B={other[1]} = "
                              f"{base['events_per_s']['median'] / o['events_per_s']['median']:.1f}x events/s")  # fmt: skip
    if ratios:
        out += ["Ratios (same run, same box): " + "; ".join(ratios) + ".", ""]
    return out


def benchmarks_section(rep: dict[str, Any], command: str, key: dict[str, Any] | None = None) -> str:
    m = rep.get("machine", {})
    g = rep.get("generator_alone", {})
    sums = [x for x in rep.get("summaries", []) if "events_per_s" in x]
    errs = [x for x in rep.get("summaries", []) if "error" in x]
    lines = [METHOD_MD]
    if key:
        lines += _key_table(key)
    lines += [
        f"### Sweep ({rep.get('started_at', '')} → {rep.get('finished_at', '')} UTC)",
        "",
        f"{m.get('cores')} cores ({m.get('cpu_model')}), {m.get('memory_gb')} GB. Command: "
        f"`{(rep.get('parts') or [{}])[0].get('command') or command}`. "
        "Raw data: `docs/bench/bench.json`; plot: `docs/bench/latency_vs_load.png`.",
        "",
        f"Load generator alone at the start: {g.get('events_per_s', 0):,.0f} events/s ({g.get('cpu_cores')} cores, "
        f"load {', '.join(str(x) for x in g.get('load_avg', []))}).",
        "",
    ]
    for part in rep.get("parts", [])[1:]:
        pg = part.get("generator_alone") or {}
        lines += [f"Plus `{part.get('command', '')}` ({part.get('started_at', '')} → {part.get('finished_at', '')}); "
                  f"generator alone then: {pg.get('events_per_s', 0):,.0f} events/s.", ""]  # fmt: skip
    lines += [
        "Each figure: median (min–max) of the repeats; notes flag a spread above 15%. `load` is the 1-minute load",
        "average after each repeat: the box is shared, so a load far above 2 means every figure of that row is contended.",
        "",
        markdown_rows(sums),
    ]
    if rep.get("stage_profiles"):
        lines += ["Where the time goes, per event, in process — the worker's own steps in its order against the real Redis",
                  "and model, Kafka excluded (`stage_profile`). Each cell: CPU µs of this thread (robust to a busy box) / wall µs",
                  "(includes waiting for Redis and for the CPU):", "",
                  "| scorer | B | items | L | parse | redis (1 Lua call) | build inputs | model | recommend | JSON | store recs | total | load |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for sp in rep["stage_profiles"]:
            u, c = sp["us_per_event"], sp.get("cpu_us_per_event", {})
            cells = " | ".join(f"{c.get(k, 0):.0f} / {u[k]:.0f}" for k in ("parse", "redis", "inputs", "model", "recommend",
                                                                          "serialize", "store_recs", "total"))  # fmt: skip
            lines.append(f"| {sp['scorer']} | {sp['batch_size']} | {sp['catalog_items']:,} | {sp['max_len']} | {cells} | "
                         f"{sp['load_avg'][0] if sp['load_avg'] else ''} |")  # fmt: skip
        lines.append("")
    if errs:
        lines.append("Not measured end to end: " + "; ".join(
            f"{e['catalog_items']:,} items L={e['max_len']}: {_short(Exception(e['error']))}" for e in errs) + ".")
    return "\n".join(lines)
