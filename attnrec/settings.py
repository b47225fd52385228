"""The settings every attnrec process shares, read from the environment (``ATTNREC_<NAME>``).

One typed, frozen settings object per process. :class:`Settings` holds what the worker and
the services around it need: where things live, Kafka, Redis, the worker, the web API and
logging. Each tool's options live with the tool, in a subclass: the local stack
(``attnrec.apps.stack.settings``), replay and demo (``attnrec.apps.settings``), training and
evaluation (``attnrec.training.settings``), export, the registry and the periodic trainer
(``attnrec.exporter.settings``), the dashboard and the benchmark (``settings`` of
``attnrec.apps.dashboard`` / ``attnrec.apps.bench``). A command builds its own class (the
``Command`` entries of :mod:`attnrec.apps.cli`), so a worker never holds a tool's fields.

A field ``name`` is the variable ``ATTNREC_`` + ``name`` in capitals (each description starts
with it); a command-line flag, where a command has one, overrides the environment. Each class
names the sections its own fields are listed under (:attr:`Settings.sections`);
``docs/CONFIGURATION.md`` is generated from all the classes (``python deploy/gen_config_doc.py``).

Everything is validated when the object is built: a bad value raises :class:`ConfigError`
with one line naming the variable (and the flag it came from), the value and what is
expected. Secrets are :class:`SecretStr` (never printed); they can also come from files in
``ATTNREC_SECRETS_DIR``.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from attnrec.errors import ConfigError
from attnrec.units import (
    CLUSTER_SCHEMES,
    RedisClusterURL,
    parse_boosts,
    parse_duration,
    parse_rate,
    parse_redis_cluster_url,
)

__all__ = ["Settings", "ENV_PREFIX", "OTHER_VARIABLES", "env_name", "load_settings", "parse_duration", "parse_rate",
           "is_secret", "RedisClusterURL", "parse_redis_cluster_url", "CLUSTER_SCHEMES"]

ENV_PREFIX = "ATTNREC_"
#: ``ATTNREC_*`` variables read outside the settings classes (docs/CONFIGURATION.md lists them too).
OTHER_VARIABLES: dict[str, str] = {
    "ATTNREC_SECRETS_DIR": "a directory of files named after settings' variables, each holding that setting's value (Docker/Kubernetes secret mounts); the environment wins when both are set",
    "ATTNREC_DATA_DIR": "the public datasets (Beauty, ML-1M) the test suite and make bench-quality (training/bench_quality.sh) read (default ../shared/data)",
    "ATTNREC_IMAGE_TAG": "docker compose: the tag of the attnrec images (deploy/compose)",
    "ATTNREC_SKIP_CHROMIUM": "1: make's system set-up does not install Chromium (only the dashboard's browser test needs it)",
    "ATTNREC_RELIABILITY_JSON": "the fault tests write their figures (docs/RELIABILITY.md) to this file",
    "ATTNREC_LIVE_CATALOG_TEST_S": "seconds the availability test streams clicks and status changes (default 40; 600 is the 10-minute acceptance run)",
    "ATTNREC_UPDATE_DOCS": "1: the dashboard's browser test refreshes docs/img/dashboard.png",
}
log = logging.getLogger(__name__)
S = TypeVar("S", bound="Settings")

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return ENV_PREFIX + field.upper()


def is_secret(cls: type[BaseSettings], field: str) -> bool:
    """Whether ``field`` of ``cls`` holds a secret (a :class:`SecretStr`: never printed)."""
    return "SecretStr" in str(cls.model_fields[field].annotation)


class Settings(BaseSettings):
    """What the worker and every other process need: where things live, Kafka, Redis, the
    worker, the web API and logging. Tools subclass it with their own fields."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid", validate_default=True)

    #: Section headings of ``docs/CONFIGURATION.md`` for the fields this class adds, keyed by
    #: the first field of each section (a subclass names its own).
    sections: ClassVar[dict[str, str]] = {
        "home": "Where things live",
        "kafka_bootstrap": "Kafka",
        "redis_url": "Redis",
        "batch_size": "The worker",
        "web_host": "Web API and logging",
    }

    # --- where things live -------------------------------------------------------------------
    home: Path = Field(Path(".attnrec"), description="ATTNREC_HOME: data dir (stack, registry, event log, bench cache)")
    registry: Path | None = Field(None, description="ATTNREC_REGISTRY: model registry dir (default HOME/registry)")

    # --- Kafka ---------------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="ATTNREC_KAFKA_BOOTSTRAP: host:port[,host:port]")
    clicks_topic: str = Field("clicks", description="ATTNREC_CLICKS_TOPIC: input topic")
    recs_topic: str = Field("recs", description="ATTNREC_RECS_TOPIC: output topic")
    dlq_topic: str = Field("clicks.dlq", description="ATTNREC_DLQ_TOPIC: dead-letter topic")
    updates_topic: str = Field("model-updates", description="ATTNREC_UPDATES_TOPIC: registry notifications")
    catalog_topic: str = Field("catalog", description="ATTNREC_CATALOG_TOPIC: room/item status events (live, ended, on_shelf, off_shelf, stock), read with CATALOG")
    partitions: int = Field(8, ge=1, description="ATTNREC_PARTITIONS: partitions when we create topics")
    replication_factor: int | None = Field(
        None, ge=1, description="ATTNREC_REPLICATION_FACTOR: replicas of each topic we create (unset: the brokers' default.replication.factor; 3 on a production cluster)"
    )
    min_insync_replicas: int | None = Field(
        None, ge=1, description="ATTNREC_MIN_INSYNC_REPLICAS: min.insync.replicas of each topic we create (unset: the brokers' default; 2 with 3 replicas: a write is acknowledged once two brokers have it)"
    )
    group_id: str = Field("attnrec-worker", min_length=1, description="ATTNREC_GROUP_ID: consumer group of the workers")
    kafka_session_timeout_s: float = Field(
        10.0, gt=0, description="ATTNREC_KAFKA_SESSION_TIMEOUT_S: a dead worker's partitions move after this long"
    )
    kafka_heartbeat_s: float = Field(3.0, gt=0, description="ATTNREC_KAFKA_HEARTBEAT_S: consumer heartbeat interval")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="ATTNREC_KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="ATTNREC_KAFKA_SASL_MECHANISM"
    )
    kafka_username: str | None = Field(None, description="ATTNREC_KAFKA_USERNAME: SASL user")
    kafka_password: SecretStr | None = Field(None, description="ATTNREC_KAFKA_PASSWORD: SASL password (never logged)")
    kafka_ssl_cafile: Path | None = Field(None, description="ATTNREC_KAFKA_SSL_CAFILE: CA bundle for TLS")

    # --- Redis ---------------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="ATTNREC_REDIS_URL: redis://, rediss:// or unix:// URL of one Redis, or redis+cluster://host:port[,host:port...] (rediss+cluster:// for TLS) of a Redis Cluster: a few of its nodes, the client discovers the rest")
    redis_username: str | None = Field(None, description="ATTNREC_REDIS_USERNAME: ACL user")
    redis_password: SecretStr | None = Field(None, description="ATTNREC_REDIS_PASSWORD: AUTH password (never logged)")
    redis_empty_ok: bool = Field(
        False, description="ATTNREC_REDIS_EMPTY_OK: a worker that finds Redis without attnrec's state while the consumer group has committed offsets (the buffers were lost) starts over with empty buffers instead of pausing"
    )
    redis_wait_replicas: int = Field(
        0, ge=0, description="ATTNREC_REDIS_WAIT_REPLICAS: a batch's Redis writes count as done (and its offsets may commit) only once this many replicas of every master written have them (WAIT): a failover then loses nothing committed, and a master without a live replica pauses the workers; 0 = off: replication is asynchronous, and a failover that lost acknowledged writes pauses the workers with the partitions to replay"
    )
    redis_wait_timeout_ms: int = Field(
        1000, ge=1, description="ATTNREC_REDIS_WAIT_TIMEOUT_MS: how long a batch waits for its replicas (REDIS_WAIT_REPLICAS) before it is retried"
    )
    redis_timeout_s: float = Field(
        5.0, gt=0, description="ATTNREC_REDIS_TIMEOUT_S: socket timeout; a batch's Lua call on a saturated box took 3.6-7 s (docs/BENCHMARKS.md)"
    )

    # --- the worker ----------------------------------------------------------------------------
    batch_size: int = Field(256, ge=1, description="ATTNREC_BATCH_SIZE: max events per batch (B)")
    batch_wait_ms: float = Field(
        0.0, ge=0, description="ATTNREC_BATCH_WAIT_MS: extra wait for a partial batch to fill (W); 0 = none: an event is processed at once when the worker is idle, and batches grow with the backlog up to BATCH_SIZE"
    )
    processing_guarantee: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once", description="ATTNREC_PROCESSING_GUARANTEE: exactly_once: batches' recommendations, dead letters and input offsets in Kafka transactions fenced by the consumer group (KIP-447) (consumers read recs with isolation.level=read_committed and see each trigger's recommendation once); at_least_once: plain produce, offsets committed after delivery (lower latency; a crash can repeat recommendations)"
    )
    transaction_timeout_s: float = Field(
        60.0, gt=0, description="ATTNREC_TRANSACTION_TIMEOUT_S: the broker aborts a transaction left open this long (a worker that died mid-batch)"
    )
    producer_linger_ms: float = Field(
        0.0, ge=0, description="ATTNREC_PRODUCER_LINGER_MS: how long the output producer waits to fill a request; 0 = none: records batch only while a request is in flight"
    )
    timing_headers: bool = Field(
        False, description="ATTNREC_TIMING_HEADERS: each recommendation carries an attnrec-timing header with its trigger's milestones (broker append, received, batch start, Redis done, model done, sent), for the benchmark's hop breakdown"
    )
    max_inflight: int = Field(
        4, ge=1, description="ATTNREC_MAX_INFLIGHT: batches whose output may await broker delivery while the next ones are processed"
    )
    top_k: int = Field(10, ge=1, description="ATTNREC_TOP_K: items per recommendation (and K of an exported graph's top-K)")
    exclude_seen: bool = Field(True, description="ATTNREC_EXCLUDE_SEEN: never recommend items in the buffer")
    exclude_window: int = Field(
        50, ge=0, description="ATTNREC_EXCLUDE_WINDOW: items among the user's last N events are never recommended (up to BUFFER_LEN; each extra event costs a lookup per batch)"
    )
    catalog: bool = Field(
        False, description="ATTNREC_CATALOG: consume CATALOG_TOPIC into the availability state shared in Redis; recommendations never hold an item whose last status is ended, off_shelf or stock 0"
    )
    repeat_cooldown_s: float = Field(
        0.0, ge=0, description="ATTNREC_REPEAT_COOLDOWN_S: with EXCLUDE_SEEN=false (live streams: repeats allowed), an item the user interacted with in the last N seconds of stream time is not recommended (0 = no cool-down)"
    )
    negative_cooldown_s: float = Field(
        600.0, ge=0, description="ATTNREC_NEGATIVE_COOLDOWN_S: an item the user skipped (a view shorter than 2 s) or was shown without clicking (impression) is not recommended for N seconds of stream time, unless a positive event on it came later (0 = off)"
    )
    deny_items: str = Field("", description="ATTNREC_DENY_ITEMS: comma-separated item ids never recommended")
    allow_categories: str = Field("", description="ATTNREC_ALLOW_CATEGORIES: comma-separated categories; when set, an item whose catalog category is known and not listed is never recommended")
    deny_categories: str = Field("", description="ATTNREC_DENY_CATEGORIES: comma-separated categories never recommended (categories come from catalog events)")
    boosts: str = Field(
        "", description="ATTNREC_BOOSTS: score boosts added to the model's candidates, e.g. category:beauty=1.5,item:sku-7=3 (they reorder the graph's top-K: export with a larger --top-k than served for room)"
    )
    policy_name: str = Field("default", min_length=1, max_length=64, description="ATTNREC_POLICY_NAME: the label of this deployment's policy in the online-evaluation metrics")
    trending_window_s: float = Field(
        1800.0, gt=0, description="ATTNREC_TRENDING_WINDOW_S: the trending-now window: per-item event counts (gift/purchase weigh more) of the last N seconds, the cold-start fallback"
    )
    trending: bool = Field(
        True, description="ATTNREC_TRENDING: keep trending now (weighted event counts of the last TRENDING_WINDOW_S, written to Redis once a second) and give a user the model cannot personalise its top items instead of the static popularity list"
    )
    online_eval: bool = Field(
        True, description="ATTNREC_ONLINE_EVAL: prequential evaluation: whether each user's next event hits the top-10 emitted for them (model, trending-now and the static list), per model version and policy, in /metrics"
    )
    shadow_fraction: float = Field(1.0, ge=0, le=1, description="ATTNREC_SHADOW_FRACTION: share of users (a stable hash; all their events) the shadow version (attnrec models shadow VERSION) scores beside the serving one, off the hot path")
    interleave_fraction: float = Field(0.0, ge=0, le=1, description="ATTNREC_INTERLEAVE_FRACTION: share of users (a stable hash) whose published list team-draft interleaves the serving and the shadow version (0 = off; needs a shadow version)")
    because_k: int = Field(3, ge=0, description="ATTNREC_BECAUSE_K: past events listed in `because`")
    buffer_len: int = Field(200, ge=1, description="ATTNREC_BUFFER_LEN: events kept per user in Redis")
    buffer_ttl_s: int = Field(30 * 86400, ge=1, description="ATTNREC_BUFFER_TTL_S: buffer TTL, refreshed on write")
    dedupe_window: int = Field(
        64, ge=1, description="ATTNREC_DEDUPE_WINDOW: event_ids remembered per user against producer retries (redeliveries are caught exactly by the offset watermark); 64 measured 9.8 KiB/user against 78.6 at 512 (docs/DEPLOY.md)"
    )
    max_attempts: int = Field(5, ge=1, description="ATTNREC_MAX_ATTEMPTS: tries of a failing batch before isolating poison events")
    retry_max_s: float = Field(5.0, gt=0, description="ATTNREC_RETRY_MAX_S: cap of the exponential backoff")
    ort_threads: int = Field(1, ge=1, description="ATTNREC_ORT_THREADS: onnxruntime intra-op threads")
    scorer: Literal["onnx", "torch"] = Field(
        "onnx", description="ATTNREC_SCORER: onnx (onnxruntime, the product) or torch (the exported graph in torch eager mode over the manifest's checkpoint; a benchmark baseline, needs torch)"
    )
    reload_poll_s: float = Field(1.0, gt=0, description="ATTNREC_RELOAD_POLL_S: how often to look at CURRENT; an idle worker swaps to a model found as often")
    cache_mb: float = Field(
        512.0, gt=0, description="ATTNREC_CACHE_MB: memory for the per-user key/value caches of an incremental model (least recently used out first); a user without one is scored by the full graph"
    )
    cache_dtype: Literal["float32", "float16"] = Field(
        "float32", description="ATTNREC_CACHE_DTYPE: how cached keys/values are stored; float16 halves the memory but moves scores by more than the parity tolerance (docs/BENCHMARKS.md)"
    )

    # --- web API and logging -------------------------------------------------------------------
    web_host: str = Field("127.0.0.1", min_length=1, description="ATTNREC_WEB_HOST: worker web bind address")
    web_port: int = Field(6066, ge=1, le=65535, description="ATTNREC_WEB_PORT: worker web port (lookup, health, metrics)")
    api_token: SecretStr | None = Field(None, description="ATTNREC_API_TOKEN: bearer token required off-loopback")
    log_level: str = Field("INFO", description="ATTNREC_LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL")
    quiet: bool = Field(False, description="ATTNREC_QUIET: no progress bars (the tools: train, eval, replay, bench)")

    # ------------------------------------------------------------------------------ validation
    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        hosts = [h.strip() for h in v.split(",")]
        for h in hosts:
            host, _, port = h.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError("expected host:port[,host:port] with ports 1-65535")
        return ",".join(hosts)

    @field_validator("clicks_topic", "recs_topic", "dlq_topic", "updates_topic", "catalog_topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not _TOPIC.match(v) or v in (".", ".."):
            raise ValueError("expected a Kafka topic name: 1-249 of the characters a-z A-Z 0-9 . _ -")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if v.partition("://")[0] in CLUSTER_SCHEMES:
            parse_redis_cluster_url(v)
            return v
        u = urlsplit(v)
        if u.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("expected a redis://, rediss:// or unix:// URL, or redis+cluster://host:port[,host:port...]")
        if u.scheme != "unix" and not u.hostname:
            raise ValueError(f"expected a host in the {u.scheme}:// URL")
        if u.scheme == "unix" and not u.path:
            raise ValueError("expected a socket path in the unix:// URL")
        try:
            if u.port is not None and not 1 <= u.port <= 65535:
                raise ValueError
        except ValueError:
            raise ValueError("expected a port 1-65535 in the URL") from None
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.upper() not in _LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}")
        return v.upper()

    @field_validator("boosts")
    @classmethod
    def _boosts(cls, v: str) -> str:
        parse_boosts(v)
        return v

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in type(self).model_fields:
            secret = getattr(self, name)
            if is_secret(type(self), name) and secret is not None and not secret.get_secret_value().strip():
                raise ConfigError(f"{env_name(name)} is set but empty (an empty secret is never a credential)")
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_username:
            raise ConfigError("ATTNREC_KAFKA_USERNAME is required with a SASL security protocol")
        if self.redis_wait_replicas and self.redis_wait_timeout_ms >= self.redis_timeout_s * 1000:
            raise ConfigError(f"ATTNREC_REDIS_WAIT_TIMEOUT_MS={self.redis_wait_timeout_ms} must be below "
                              f"ATTNREC_REDIS_TIMEOUT_S={self.redis_timeout_s} (a WAIT would outlast the socket)")
        if (self.replication_factor and self.min_insync_replicas
                and self.min_insync_replicas > self.replication_factor):
            raise ConfigError(f"ATTNREC_MIN_INSYNC_REPLICAS={self.min_insync_replicas} is above "
                              f"ATTNREC_REPLICATION_FACTOR={self.replication_factor}: no write could be acknowledged")
        if self.web_host not in ("127.0.0.1", "localhost", "::1") and self.api_token is None:
            raise ConfigError(
                f"ATTNREC_WEB_HOST={self.web_host} is not loopback: set ATTNREC_API_TOKEN so the API requires a bearer token"
            )
        return self

    # ------------------------------------------------------------------------------ derived
    @property
    def redis_is_cluster(self) -> bool:
        """Whether ``redis_url`` names a Redis Cluster (``redis+cluster://``)."""
        return self.redis_url.partition("://")[0] in CLUSTER_SCHEMES

    @property
    def registry_dir(self) -> Path:
        return self.registry if self.registry is not None else self.home / "registry"

    @classmethod
    def variables(cls) -> set[str]:
        """The ``ATTNREC_*`` variables this class reads."""
        return {env_name(f) for f in cls.model_fields}

    @classmethod
    def from_settings(cls, s: Settings, **updates: Any) -> Self:
        """This class built from another settings object (e.g. the demo's training settings
        from the demo's): the fields both have keep ``s``'s values, ``updates`` replace some,
        the others are read from the environment as usual, and everything is checked again."""
        shared = {name: getattr(s, name) for name in cls.model_fields if name in type(s).model_fields}
        return _build(cls, {**shared, **updates}, {})


def _describe(cls: type[Settings], err: Mapping[str, Any], flags: Mapping[str, str]) -> str:
    """One error of a ValidationError as ``VARIABLE (--flag)='value': what is expected``."""
    field = str(err["loc"][0]) if err.get("loc") else ""
    where = env_name(field) if field else "settings"
    if field in flags:
        where += f" ({flags[field]})"
    value = err.get("input")
    shown = "(secret)" if field in cls.model_fields and is_secret(cls, field) else repr(value)
    if field == "redis_url" and isinstance(value, str):  # a URL may carry a password: never shown
        shown = repr(re.sub(r"(://[^:@/]*:)[^@/]*@", r"\1***@", value))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"{field!r} is not a setting"
    expected = {
        "int_parsing": "an integer", "int_from_float": "an integer", "float_parsing": "a number",
        "bool_parsing": "true or false (also 1/0, yes/no, on/off)",
        "greater_than_equal": f"a number >= {ctx.get('ge')}", "greater_than": f"a number > {ctx.get('gt')}",
        "less_than_equal": f"a number <= {ctx.get('le')}", "less_than": f"a number < {ctx.get('lt')}",
        "string_too_short": "a non-empty value", "literal_error": f"one of {ctx.get('expected', '')}".replace("'", ""),
    }.get(kind)
    if expected is None:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ").removeprefix("Input should be ")
        expected = msg.removeprefix("expected ")
    return f"{where}={shown}: expected {expected}"


def _build(cls: type[S], values: dict[str, Any], flags: Mapping[str, str]) -> S:
    try:
        return cls(**values)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(cls, e, flags) for e in exc.errors())) from None


def load_settings(cls: type[S] = Settings, flags: Mapping[str, str] | None = None,  # type: ignore[assignment]
                  known: Iterable[str] | None = None, **overrides: Any) -> S:
    """``cls`` from the environment, with command-line overrides (``None`` values are ignored).

    ``flags`` names the flag each override came from (field -> ``--flag``), for the error
    message; ``known`` are the variables of every settings class (a variable none of them
    reads is logged as a likely typo; default: ``cls``'s). Secrets can also come from files:
    with ``ATTNREC_SECRETS_DIR=/run/secrets`` a file named ``ATTNREC_KAFKA_PASSWORD`` (or any
    other setting's variable) there supplies that value (Docker/Kubernetes secret mounts); the
    environment wins when both are set.
    """
    clean: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    secrets_dir = os.environ.get("ATTNREC_SECRETS_DIR")
    if secrets_dir:
        if not Path(secrets_dir).is_dir():
            raise ConfigError(f"ATTNREC_SECRETS_DIR={secrets_dir!r}: expected a directory")
        clean["_secrets_dir"] = secrets_dir
    _warn_unknown(os.environ, set(known) if known is not None else cls.variables())
    return _build(cls, clean, flags or {})


def _warn_unknown(environ: Mapping[str, str], known: set[str]) -> None:
    """Log each ``ATTNREC_*`` variable that is no setting (a typo would otherwise be ignored)."""
    known = known | set(OTHER_VARIABLES)
    for name in sorted(n for n in environ if n.startswith(ENV_PREFIX) and n not in known):
        close = difflib.get_close_matches(name, known, n=1)
        log.warning("%s is not an attnrec setting%s; it is ignored", name, f" (did you mean {close[0]}?)" if close else "")
