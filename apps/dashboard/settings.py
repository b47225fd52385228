"""The dashboard's settings (``attnrec dashboard``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from attnrec.settings import Settings

__all__ = ["DashboardSettings"]


class DashboardSettings(Settings):
    """The base settings (Kafka, Redis, the registry, the workers' group and token) plus the page's."""

    sections: ClassVar[dict[str, str]] = {"dashboard_host": "Dashboard (`attnrec dashboard`)"}

    dashboard_host: str = Field("127.0.0.1", min_length=1, description="ATTNREC_DASHBOARD_HOST: bind address; off-loopback requires ATTNREC_API_TOKEN")
    dashboard_port: int = Field(6080, ge=1, le=65535, description="ATTNREC_DASHBOARD_PORT: dashboard port")
    latency_window_s: float = Field(60.0, gt=0, description="ATTNREC_LATENCY_WINDOW_S: rolling window of latency percentiles, serving versions, dead letters/min")
    feed_backfill: int = Field(20, ge=0, description="ATTNREC_FEED_BACKFILL: recommendations read back per partition at start")
    latency_join: bool = Field(True, description="ATTNREC_LATENCY_JOIN: read clicks to measure produce->rec latency by event_id; off: emitted_ts - event_ts from the recs alone, cheaper at high rates")
