"""Typed, frozen settings read from the environment (``ATTNREC_<NAME>``).

One settings object per process. Every field names its environment variable in its
description; command-line flags override the environment (the CLI passes them as
keyword arguments). See ``docs/CONFIGURATION.md`` for the full list with defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from attnrec.errors import ConfigError

__all__ = ["Settings", "load_settings", "env_default"]


def env_default(flag: str, default: Any) -> Any:
    """Default for a CLI flag: ``ATTNREC_<FLAG>`` from the environment, else ``default``.

    ``flag`` is the flag name without dashes (``batch-size`` -> ``ATTNREC_BATCH_SIZE``).
    The value is converted to the type of ``default`` when that is int/float/bool.
    """
    name = "ATTNREC_" + flag.replace("-", "_").upper()
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {type(default).__name__}") from None
    return raw


class Settings(BaseSettings):
    """Everything a worker, producer, dashboard or the stack manager needs."""

    model_config = SettingsConfigDict(env_prefix="ATTNREC_", frozen=True, extra="ignore")

    # --- where things live -------------------------------------------------------------------
    home: Path = Field(Path(".attnrec"), description="ATTNREC_HOME: data dir (stack, registry, event log)")
    registry: Path | None = Field(None, description="ATTNREC_REGISTRY: model registry dir (default HOME/registry)")

    # --- Kafka ---------------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="ATTNREC_KAFKA_BOOTSTRAP: host:port[,host:port]")
    clicks_topic: str = Field("clicks", description="ATTNREC_CLICKS_TOPIC: input topic")
    recs_topic: str = Field("recs", description="ATTNREC_RECS_TOPIC: output topic")
    dlq_topic: str = Field("clicks.dlq", description="ATTNREC_DLQ_TOPIC: dead-letter topic")
    updates_topic: str = Field("model-updates", description="ATTNREC_UPDATES_TOPIC: registry notifications")
    partitions: int = Field(8, ge=1, description="ATTNREC_PARTITIONS: partitions when we create topics")
    group_id: str = Field("attnrec-worker", description="ATTNREC_GROUP_ID: consumer group of the workers")
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
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="ATTNREC_REDIS_URL: redis:// or rediss:// URL")
    redis_username: str | None = Field(None, description="ATTNREC_REDIS_USERNAME: ACL user")
    redis_password: SecretStr | None = Field(None, description="ATTNREC_REDIS_PASSWORD: AUTH password (never logged)")
    redis_appendfsync: Literal["everysec", "always"] = Field(
        "everysec", description="ATTNREC_REDIS_APPENDFSYNC: AOF fsync policy of the local stack's Redis (always survives a machine crash, ~12% slower)"
    )
    redis_timeout_s: float = Field(
        5.0, gt=0, description="ATTNREC_REDIS_TIMEOUT_S: socket timeout; a batch's Lua call on a saturated box took 3.6-7 s (docs/BENCHMARKS.md)"
    )

    # --- the worker ----------------------------------------------------------------------------
    batch_size: int = Field(256, ge=1, description="ATTNREC_BATCH_SIZE: max events per batch (B)")
    batch_wait_ms: float = Field(5.0, ge=0, description="ATTNREC_BATCH_WAIT_MS: max wait to fill a batch (W)")
    max_inflight: int = Field(
        4, ge=1, description="ATTNREC_MAX_INFLIGHT: batches whose output may await broker delivery while the next ones are processed"
    )
    top_k: int = Field(10, ge=1, description="ATTNREC_TOP_K: items per recommendation")
    exclude_seen: bool = Field(True, description="ATTNREC_EXCLUDE_SEEN: never recommend items in the buffer")
    exclude_window: int = Field(
        50, ge=0, description="ATTNREC_EXCLUDE_WINDOW: items among the user's last N events are never recommended (up to BUFFER_LEN; each extra event costs a lookup per batch)"
    )
    because_k: int = Field(3, ge=0, description="ATTNREC_BECAUSE_K: past events listed in `because`")
    buffer_len: int = Field(200, ge=1, description="ATTNREC_BUFFER_LEN: events kept per user in Redis")
    buffer_ttl_s: int = Field(30 * 86400, ge=1, description="ATTNREC_BUFFER_TTL_S: buffer TTL, refreshed on write")
    dedupe_window: int = Field(
        64, ge=1, description="ATTNREC_DEDUPE_WINDOW: event_ids remembered per user against producer retries (redeliveries are caught exactly by the offset watermark); 64 measured 9.8 KiB/user against 78.6 at 512 (docs/DEPLOY.md)"
    )
    max_attempts: int = Field(5, ge=1, description="ATTNREC_MAX_ATTEMPTS: tries of a failing batch before isolating poison events")
    retry_max_s: float = Field(5.0, gt=0, description="ATTNREC_RETRY_MAX_S: cap of the exponential backoff")
    ort_threads: int = Field(1, ge=1, description="ATTNREC_ORT_THREADS: onnxruntime intra-op threads")
    reload_poll_s: float = Field(1.0, gt=0, description="ATTNREC_RELOAD_POLL_S: how often to look at CURRENT")
    web_host: str = Field("127.0.0.1", description="ATTNREC_WEB_HOST: worker web bind address")
    web_port: int = Field(6066, ge=0, description="ATTNREC_WEB_PORT: worker web port (lookup, health, metrics)")
    api_token: SecretStr | None = Field(None, description="ATTNREC_API_TOKEN: bearer token required off-loopback")
    log_level: str = Field("INFO", description="ATTNREC_LOG_LEVEL")

    # --- local stack ---------------------------------------------------------------------------
    kafka_port: int = Field(9092, description="ATTNREC_KAFKA_PORT: local broker port (stack up)")
    kafka_controller_port: int = Field(9093, description="ATTNREC_KAFKA_CONTROLLER_PORT: local KRaft controller port")
    redis_port: int = Field(6379, description="ATTNREC_REDIS_PORT: local Redis port (stack up)")
    kafka_home: Path | None = Field(None, description="KAFKA_HOME or ATTNREC_KAFKA_HOME: use an installed Kafka")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for name in ("api_token", "kafka_password", "redis_password"):
            secret = getattr(self, name)
            if secret is not None and not secret.get_secret_value().strip():
                raise ConfigError(f"ATTNREC_{name.upper()} is set but empty (an empty secret is never a credential)")
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_username:
            raise ConfigError("ATTNREC_KAFKA_USERNAME is required with a SASL security protocol")
        if self.web_host not in ("127.0.0.1", "localhost", "::1") and self.api_token is None:
            raise ConfigError(
                f"ATTNREC_WEB_HOST={self.web_host} is not loopback: set ATTNREC_API_TOKEN so the API requires a bearer token"
            )
        return self

    @property
    def registry_dir(self) -> Path:
        return self.registry if self.registry is not None else self.home / "registry"

    @property
    def stack_dir(self) -> Path:
        return self.home / "stack"

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Connection settings in aiokafka/kafka-python keyword form."""
        kw: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            kw["sasl_mechanism"] = self.kafka_sasl_mechanism
            kw["sasl_plain_username"] = self.kafka_username
            kw["sasl_plain_password"] = self.kafka_password.get_secret_value() if self.kafka_password else ""
        return kw


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with CLI overrides (``None`` values are ignored).

    Secrets can also come from files: with ``ATTNREC_SECRETS_DIR=/run/secrets`` a file named
    ``ATTNREC_KAFKA_PASSWORD`` (or any other setting's variable) there supplies that value
    (Docker/Kubernetes secret mounts); the environment wins when both are set.
    """
    clean: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    secrets_dir = os.environ.get("ATTNREC_SECRETS_DIR")
    if secrets_dir:
        if not Path(secrets_dir).is_dir():
            raise ConfigError(f"ATTNREC_SECRETS_DIR={secrets_dir} is not a directory")
        clean["_secrets_dir"] = secrets_dir
    if "kafka_home" not in clean and os.environ.get("KAFKA_HOME") and not os.environ.get("ATTNREC_KAFKA_HOME"):
        clean["kafka_home"] = Path(os.environ["KAFKA_HOME"])
    try:
        return Settings(**clean)
    except ConfigError:
        raise
    except Exception as exc:  # pydantic.ValidationError: make it one of ours
        raise ConfigError(f"invalid settings: {exc}") from None
