"""``attnrec dashboard``: the ops web page, built from Kafka, Redis and the registry.

See :mod:`attnrec.apps.dashboard.collector` for where each figure comes from and
:mod:`attnrec.apps.dashboard.web` for the endpoints and the token rule.
"""

from __future__ import annotations

from typing import Any

from .settings import DashboardSettings

__all__ = ["cmd_dashboard"]


def cmd_dashboard(s: DashboardSettings, args: Any) -> int:
    """Serve the dashboard on ``DASHBOARD_HOST:DASHBOARD_PORT`` until interrupted."""
    from .collector import CollectorConfig
    from .web import run_dashboard

    cfg = CollectorConfig(window_s=s.latency_window_s, backfill=s.feed_backfill, join_clicks=s.latency_join)
    run_dashboard(s, host=s.dashboard_host, port=s.dashboard_port, config=cfg)
    return 0
