"""``attnrec demo --scenario live``: live-stream commerce end to end on the local stack.

1. start Kafka (KRaft) + Redis;
2. generate one live-commerce world (:mod:`attnrec.training.sim.live`): rooms going live and ending,
   products on and off the shelf and selling out, viewers with favourite streamers, planted
   rules (a gift in a room is followed by a purchase of its products, ...);
3. train an attention model on the world's past clicks, export and promote it;
4. start a worker that reads the catalog topic (availability), allows repeats, and evaluates
   itself online; replay the future — clicks and status changes — with a 10x burst;
5. print the online HR@10 / NDCG@10 of the model against trending-now and the static list (the
   same events, measured by the worker), the burst's lag and p99 latency, and the availability
   check: recommendations of an item that was unavailable when they were emitted.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnrec.events import CatalogEvent, ClickEvent
from attnrec.kafka_util import ensure_topics

from .bench.worker import scrape
from .demo_kit import fresh_ids, say, start_worker, stop_worker, train_and_export, wait_ready, write_jsonl
from .replay import RecsTracker, produce_live
from .settings import DemoSettings
from .stack import free_port, local_stack

__all__ = ["Sizes", "live_demo", "run_live_demo", "online_table", "histogram_quantiles"]



@dataclass(frozen=True)
class Sizes:
    """The demo's world: clicks to train on, the replay's base rate and its burst."""

    n_train: int = 60_000
    base_rate: float = 100.0  # events/s outside the burst
    burst_factor: float = 10.0
    pre_s: float = 30.0  # seconds before the burst
    burst_s: float = 60.0
    post_s: float = 45.0  # seconds after it
_SAMPLE = re.compile(r'^attnrec_online_(events|hits|ndcg)_total\{(.*?)\} ([0-9.e+-]+)$', re.M)


def online_table(metrics_text: str) -> dict[tuple[str, str], dict[str, float]]:
    """(source, version) -> {events, hits, ndcg} from a worker's /metrics text."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for kind, labels, value in _SAMPLE.findall(metrics_text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        out.setdefault((lab["source"], lab["version"]), {"events": 0.0, "hits": 0.0, "ndcg": 0.0})[kind] += float(value)
    return out


def histogram_quantiles(metrics_text: str, name: str, qs: tuple[float, ...]) -> list[float]:
    """Upper bucket bounds holding the quantiles ``qs`` of a Prometheus histogram (inf: beyond)."""
    buckets = sorted((float(le), float(v)) for le, v in
                     re.findall(rf'^{name}_bucket{{le="([^"]+)"}} ([0-9.e+-]+)$', metrics_text, re.M))
    total = buckets[-1][1] if buckets else 0.0
    return [next((le for le, c in buckets if c >= q * total), float("inf")) if total else float("nan") for q in qs]


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def run_live_demo(s: DemoSettings) -> int:
    """``attnrec demo --scenario live``: exit 0 when recommendations came out and none held an
    item unavailable for more than a second, and every user's last click was answered."""
    summary = live_demo(s)
    return 0 if summary["recs"] > 0 and summary["late"] == 0 and summary["missing"] == 0 else 1


def live_demo(s: DemoSettings, z: Sizes = Sizes()) -> dict[str, Any]:
    """The whole demo; prints as it goes and returns the summary's figures."""
    from ..training.sim.availability import AvailabilityLog
    from ..training.sim.live import generate_live

    t_start = time.monotonic()
    home = s.home.resolve()
    work = home / "demo-live"
    work.mkdir(parents=True, exist_ok=True)
    s = s.model_copy(update={"catalog": True})
    st = local_stack(s)
    say(f"starting the local stack (Kafka KRaft on {st.bootstrap}, Redis on 127.0.0.1:{st.redis_port}) under {st.root}")
    st.up()
    ensure_topics(s)

    # --- one world: train on its past, replay its future with a burst ------------------------
    past_s = z.n_train / z.base_rate
    n_future = int(z.base_rate * (z.pre_s + z.burst_factor * z.burst_s + z.post_s))
    say(f"generating a live-commerce world: {z.n_train + n_future:,} clicks and their rooms' and products' status changes "
         f"(planted: gift -> the room's products, video -> the streamer's room, purchase -> its companion)")
    world = list(generate_live(z.n_train + n_future, seed=11, rate=z.base_rate, burst_at_s=past_s + z.pre_s,
                               burst_s=z.burst_s, burst_factor=z.burst_factor))
    world = fresh_ids(world)  # a second demo on the same stack must not resend the seeded ids
    clicks = [ev for ev in world if isinstance(ev, ClickEvent)]
    split_ts = clicks[z.n_train].ts
    past = [ev for ev in clicks if ev.ts < split_ts]
    future = [ev for ev in world if ev.ts >= split_ts]
    snapshot = AvailabilityLog(ev for ev in world if isinstance(ev, CatalogEvent) and ev.ts < split_ts)
    # the state at the split, as status events at its time, then the future's changes
    opening = [CatalogEvent(f"open-{i}", item, "off_shelf" if item in snapshot.unavailable() else "on_shelf", split_ts)
               for i, item in enumerate(sorted(snapshot.items()))]
    train_file = write_jsonl(work / "train.jsonl", past)
    registry = s.registry_dir.resolve()
    say(f"training an attention model for up to {s.demo_train_seconds:.0f}s on {len(past):,} past clicks, then export → ONNX → registry")
    v1, man1 = train_and_export(s, train_file, work / f"ckpt-{int(time.time())}", registry, force=True)
    val = (man1.get("metrics") or {}).get("val", {})
    print(f"    model {v1}: offline validation NDCG@10 {val.get('ndcg@10', float('nan')):.4f}, HR@10 {val.get('hr@10', float('nan')):.4f}")

    port = free_port()
    env = dict(os.environ, ATTNREC_HOME=str(home), ATTNREC_REGISTRY=str(registry), ATTNREC_WEB_PORT=str(port),
               ATTNREC_KAFKA_BOOTSTRAP=st.bootstrap, ATTNREC_REDIS_URL=st.redis_url, ATTNREC_CATALOG="true",
               ATTNREC_CATALOG_TOPIC=s.catalog_topic, ATTNREC_EXCLUDE_SEEN="false", ATTNREC_POLICY_NAME="live-demo",
               ATTNREC_TRENDING_WINDOW_S="300")  # fmt: skip
    logf = work / "worker.log"
    say(f"starting the worker: catalog on, repeats allowed, online evaluation (log {logf}, API http://127.0.0.1:{port})")
    proc = start_worker(env, logf)
    avail = AvailabilityLog()
    checked, in_flight, late = [0], [], []
    lock = threading.Lock()

    def on_rec(rec: dict[str, Any]) -> None:
        with lock:
            for it in rec["items"]:
                checked[0] += 1
                since = avail.unavailable_since(it["item_id"], rec["emitted_ts"])
                if since is not None:
                    if rec["emitted_ts"] - since > 1000:
                        late.append(it["item_id"])
                    else:
                        in_flight.append(rec["emitted_ts"] - since)

    def on_send(ev: Any) -> None:
        if isinstance(ev, CatalogEvent):
            with lock:
                avail.apply(ev)

    lags: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample_lag() -> None:
        while not stop.is_set():
            m = scrape(f"http://127.0.0.1:{port}/metrics")  # {} when the page cannot be read: no sample
            if m:
                lags.append((time.monotonic(), int(m.get("attnrec_consumer_lag", 0))))
            stop.wait(0.5)

    try:
        wait_ready(port, proc, logf)
        tracker = RecsTracker(s, on_rec=on_rec).start()
        sampler = threading.Thread(target=sample_lag, daemon=True)
        sampler.start()
        say(f"replaying {sum(isinstance(e, ClickEvent) for e in future):,} clicks and "
             f"{sum(isinstance(e, CatalogEvent) for e in future):,} status changes: {z.base_rate:.0f}/s, "
             f"a {z.burst_factor:.0f}x burst for {z.burst_s:.0f}s after {z.pre_s:.0f}s, then {z.post_s:.0f}s more")
        t0 = time.monotonic()
        sent_at: dict[str, float] = {}
        n_clicks, n_cat = produce_live(s, [*opening, *future], tracker=tracker, on_send=on_send, sent_at=sent_at)
        burst = (t0 + z.pre_s, t0 + z.pre_s + z.burst_s)
        last = {ev.user_id: ev.event_id for ev in future if isinstance(ev, ClickEvent)}  # each user's last click
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(e in tracker.triggers_seen for e in last.values()):
            time.sleep(0.5)
        missing = sum(e not in tracker.triggers_seen for e in last.values())
        time.sleep(2.0)
        stop.set()
        tracker.stop()
        text = _metrics(port)
    finally:
        stop.set()
        stop_worker(proc)
        if not s.demo_keep_stack:
            st.down()

    # --- what it showed ------------------------------------------------------------------------
    say("summary")
    print(f"    events in          {n_clicks:,} clicks, {n_cat:,} status changes; recommendations {tracker.received:,} "
          f"(duplicates {tracker.duplicates}); users whose last click has no recommendation: {missing} of {len(last):,}")
    table = online_table(text)
    model_rows = {v: r for (src, v), r in table.items() if src == "model" and r["events"]}
    print("    online, the user's next choice in the top-10 shown (measured by the worker on the same events):")
    for (src, v), r in sorted(table.items(), key=lambda x: -x[1]["events"]):
        if r["events"]:
            print(f"      {src:<9} {v:<24} HR@10 {r['hits'] / r['events']:.4f}  NDCG@10 {r['ndcg'] / r['events']:.4f}  "
                  f"({int(r['events']):,} events)")
    tr = table.get(("trending", "trending"), {"events": 0.0, "hits": 0.0})
    served = [r for v, r in model_rows.items() if v != "fallback"]
    ratio = None
    if served and tr["events"] and tr["hits"]:
        m_hr = sum(r["hits"] for r in served) / sum(r["events"] for r in served)
        ratio = m_hr / (tr["hits"] / tr["events"])
        print(f"    model / trending   HR@10 ×{ratio:.2f}")
    pre = [lag for t, lag in lags if burst[0] - 10 <= t < burst[0]]
    during = [lag for t, lag in lags if burst[0] <= t < burst[1]]
    level = max(pre) if pre else 0
    back = next((t - burst[1] for t, lag in lags if t >= burst[1] and lag <= max(level, 10)), None)
    lat = [ms for eid, ms in tracker.latency_by_trigger.items() if burst[0] <= sent_at.get(eid, 0) < burst[1]]
    print(f"    burst ×{z.burst_factor:.0f} for {z.burst_s:.0f}s: consumer lag before {level}, peak {max(during, default=0)}, "
          f"back to its level {f'{back:.1f} s after the burst' if back is not None else 'NOT within the run'}; "
          f"p99 latency in the burst {np.percentile(lat, 99) if lat else float('nan'):.0f} ms (n={len(lat):,})")
    applied = histogram_quantiles(text, "attnrec_catalog_delay_ms", (0.5, 0.99))
    print(f"    availability       {checked[0]:,} recommended items checked against the status log: {len(late)} unavailable "
          f"for more than 1 s when emitted; {len(in_flight)} within the second of a change (in flight; at most "
          f"{max(in_flight, default=0)} ms after it); status changes applied p50 ≤ {applied[0]:g} ms, p99 ≤ {applied[1]:g} ms "
          f"after their event")
    print(f"    total time         {time.monotonic() - t_start:.0f}s" + ("" if s.demo_keep_stack else "; stack stopped"))
    return {"recs": tracker.received, "duplicates": tracker.duplicates, "missing": missing, "users": len(last), "online": {f"{k[0]}|{k[1]}": v for k, v in table.items()},
            "model_over_trending": ratio, "lag_before": level, "lag_peak": max(during, default=0), "lag_back_s": back,
            "burst_p99_ms": float(np.percentile(lat, 99)) if lat else None, "checked": checked[0], "late": len(late),
            "in_flight": len(in_flight), "seconds": time.monotonic() - t_start}
