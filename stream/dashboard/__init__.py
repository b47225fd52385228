"""``attnrec dashboard``: the ops web page, built from Kafka, Redis and the registry.

See :mod:`stream.dashboard.collector` for where each figure comes from and
:mod:`stream.dashboard.web` for the endpoints and the token rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnrec.settings import env_default

__all__ = ["add_dashboard_parser", "cmd_dashboard"]


def cmd_dashboard(args: argparse.Namespace) -> int:
    from attnrec.settings import load_settings
    from stream.dashboard.collector import CollectorConfig
    from stream.dashboard.web import run_dashboard

    s = load_settings(home=args.home, registry=args.registry, group_id=args.group_id, kafka_bootstrap=args.kafka_bootstrap,
                      redis_url=args.redis_url)  # fmt: skip
    cfg = CollectorConfig(window_s=args.latency_window_s, backfill=args.feed_backfill, join_clicks=args.latency_join)
    run_dashboard(s, host=args.dashboard_host, port=args.dashboard_port, config=cfg)
    return 0


def add_dashboard_parser(subparsers: Any) -> None:
    """Register ``attnrec dashboard``; every flag also reads ``ATTNREC_<FLAG>``."""
    sp = subparsers.add_parser(
        "dashboard", help="ops dashboard web page (throughput, latency, lag, dead letters, models, live feed)"
    )
    sp.add_argument(
        "--dashboard-host",
        "--host",
        dest="dashboard_host",
        default=env_default("dashboard-host", "127.0.0.1"),
        help="bind address (ATTNREC_DASHBOARD_HOST, 127.0.0.1); off-loopback requires ATTNREC_API_TOKEN",
    )
    sp.add_argument(
        "--dashboard-port",
        "--port",
        dest="dashboard_port",
        type=int,
        default=env_default("dashboard-port", 6080),
        help="port (ATTNREC_DASHBOARD_PORT, 6080)",
    )
    sp.add_argument(
        "--latency-window-s",
        type=float,
        default=env_default("latency-window-s", 60.0),
        help="rolling window of latency percentiles, serving versions, dead letters/min (ATTNREC_LATENCY_WINDOW_S, 60)",
    )
    sp.add_argument(
        "--feed-backfill",
        type=int,
        default=env_default("feed-backfill", 20),
        help="recommendations read back per partition at start (ATTNREC_FEED_BACKFILL, 20)",
    )
    sp.add_argument("--latency-join", action=argparse.BooleanOptionalAction, default=env_default("latency-join", True),
                    help="read clicks to measure produce->rec latency by event_id (ATTNREC_LATENCY_JOIN, on); "
                         "off: emitted_ts - event_ts from the recs alone, cheaper at high rates")  # fmt: skip
    sp.add_argument("--group-id", default=None, help="the workers' consumer group (ATTNREC_GROUP_ID, attnrec-worker)")
    sp.add_argument("--kafka-bootstrap", default=None, help="host:port[,host:port] (ATTNREC_KAFKA_BOOTSTRAP)")
    sp.add_argument("--redis-url", default=None, help="redis:// URL (ATTNREC_REDIS_URL)")
    sp.add_argument("--registry", type=Path, default=None, help="model registry (ATTNREC_REGISTRY)")
    sp.add_argument("--home", type=Path, default=None, help="data dir (ATTNREC_HOME)")
    sp.set_defaults(func=cmd_dashboard)
