"""Prometheus metrics of a worker, served on ``/metrics``.

Each worker process has its own registry (so tests can run several apps in one process).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

__all__ = ["WorkerMetrics"]

_MS_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000, 5000)


class WorkerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter("attnrec_events_total", "Click events consumed (valid, incl. duplicates)", registry=r)
        self.events_applied = Counter("attnrec_events_applied_total", "Events newly applied to a buffer", registry=r)
        self.duplicates = Counter("attnrec_events_duplicate_total", "Events skipped as already applied", registry=r)
        self.retries_skipped = Counter("attnrec_events_retry_total",
                                       "Producer retries (an event_id applied before at another offset): no recommendation",
                                       registry=r)
        self.unknown_types = Counter("attnrec_events_unknown_type_total", "Events whose type mapped to 'other'", registry=r)
        self.recs = Counter("attnrec_recs_total", "Recommendations produced", registry=r)
        self.fallbacks = Counter("attnrec_recs_fallback_total", "Recommendations from the popularity fallback", registry=r)
        self.dead = Counter("attnrec_dead_letters_total", "Messages sent to the dead-letter topic", ["reason"], registry=r)
        self.retries = Counter("attnrec_batch_retries_total", "Batch attempts that failed and were retried", ["kind"], registry=r)
        self.state_lost = Gauge("attnrec_redis_state_lost", "1 while Redis holds none of attnrec's state (paused)",
                                registry=r)
        self.lost_writes = Gauge("attnrec_redis_lost_writes", "1 while Redis no longer holds writes it acknowledged to "
                                 "this worker (a failover that lost them: paused until replayed or accepted)", registry=r)
        self.fenced = Counter("attnrec_producers_fenced_total",
                              "Transactions refused because the group moved on from this worker (KIP-447) or the broker "
                              "timed the producer out: aborted, and redone without what is no longer this worker's",
                              registry=r)
        self.transactions = Counter("attnrec_transactions_total",
                                    "Kafka transactions committed (exactly once: the batches that finished while the "
                                    "previous one committed share one)", registry=r)
        self.void_parts = Counter("attnrec_batch_parts_void_total",
                                  "Batch parts (one input partition each) dropped uncommitted: the partition is another "
                                  "worker's (exactly-once)", registry=r)
        self.revoked_events = Counter("attnrec_events_revoked_total",
                                      "Events dropped unprocessed: their partition was revoked (its next owner reads them)",
                                      registry=r)
        self.reloads = Counter("attnrec_model_reloads_total", "Model reload attempts", ["result"], registry=r)
        self.batch_size = Histogram(
            "attnrec_batch_size", "Events per batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r
        )
        self.redis_ms = Histogram("attnrec_redis_ms", "Redis time per batch (ms)", buckets=_MS_BUCKETS, registry=r)
        self.model_ms = Histogram("attnrec_model_ms", "Model time per batch (ms)", buckets=_MS_BUCKETS, registry=r)
        self.produce_ms = Histogram("attnrec_produce_ms", "Produce time per batch (ms)", buckets=_MS_BUCKETS, registry=r)
        self.e2e_ms = Histogram(
            "attnrec_e2e_latency_ms", "Event ts to recommendation emitted (ms)", buckets=_MS_BUCKETS, registry=r
        )
        self.model_info = Info("attnrec_model", "The model version being served", registry=r)
        self.model_loaded = Gauge("attnrec_model_loaded", "1 when a model is loaded", registry=r)
        self.assigned = Gauge("attnrec_assigned_partitions", "Partitions assigned to this worker", registry=r)
        self.lag = Gauge("attnrec_consumer_lag", "Consumer lag per partition", ["partition"], registry=r)
        # incremental models: the per-user key/value cache (stream/cache.py)
        self.cache_hits = Counter("attnrec_cache_hits_total", "Users scored by the step graph from their cache", registry=r)
        self.cache_misses = Counter("attnrec_cache_misses_total", "Users scored by the full graph (no usable cache)",
                                    registry=r)
        self.rows = Counter("attnrec_model_rows_total", "Rows scored, per graph", ["graph"], registry=r)
        self.cache_bytes = Gauge("attnrec_cache_bytes", "Bytes held by the key/value cache", registry=r)
        self.cache_users = Gauge("attnrec_cache_users", "Users with a key/value cache", registry=r)
        # live commerce: availability, online (prequential) evaluation
        self.catalog_events = Counter("attnrec_catalog_events_total", "Catalog status events, by result (applied, stale: "
                                      "older than the status applied, invalid)", ["result"], registry=r)
        self.catalog_unavailable = Gauge("attnrec_catalog_unavailable_items", "Items unavailable now (this worker's view)",
                                         registry=r)
        self.catalog_delay_ms = Histogram("attnrec_catalog_delay_ms", "Catalog event ts to applied in Redis (ms)",
                                          buckets=_MS_BUCKETS, registry=r)
        online = ["source", "version", "policy"]
        self.online_events = Counter("attnrec_online_events_total", "Next events scored against the top-10 a source "
                                     "showed the user (source: model, trending, static)", online, registry=r)
        self.online_hits = Counter("attnrec_online_hits_total", "Next events in the source's top-10 (HR@10 = hits / events)",
                                   online, registry=r)
        self.online_ndcg = Counter("attnrec_online_ndcg_total", "Sum of NDCG@10 of the next events (NDCG@10 = sum / events)",
                                   online, registry=r)
        self.shadow_batches = Counter("attnrec_shadow_batches_total", "Batches offered to the shadow model, by outcome "
                                      "(scored; busy: the previous one still scoring; fraction: not sampled)",
                                      ["outcome"], registry=r)
        self.shadow_overlap = Histogram("attnrec_shadow_overlap", "overlap@10 of the shadow's list with the serving list",
                                        buckets=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), registry=r)
        self.shadow_ms = Histogram("attnrec_shadow_score_ms", "Shadow model's scoring time per batch (ms)",
                                   buckets=_MS_BUCKETS, registry=r)
        self.shadow_rows = Counter("attnrec_shadow_rows_total", "Rows the shadow model scored, per graph (step: from "
                                   "its own key/value cache; full), or lost (sent only a new event, its cache gone)", ["graph"], registry=r)
        self.shadow_info = Gauge("attnrec_shadow_model", "1 for the version being shadow-scored", ["version"], registry=r)
        self.interleaved = Counter("attnrec_interleaved_recs_total", "Recommendations merged by team-draft interleaving",
                                   registry=r)
        self.cache_evictions = Gauge("attnrec_cache_evictions", "Caches evicted (LRU by bytes) since start", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
