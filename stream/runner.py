"""Run the faust worker for ``attnrec worker``."""

from __future__ import annotations

import logging

from attnrec.kafka_util import ensure_topics
from attnrec.settings import Settings

from .core.model import SessionFactory

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


def run_worker(settings: Settings, *, session_factory: SessionFactory | None = None) -> None:
    """Create missing topics, build the app and run it until SIGTERM/SIGINT.
    ``session_factory``: see :func:`attnrec.stream.app.create_app`."""
    import faust

    from .app import create_app

    ensure_topics(settings)
    app = create_app(settings, session_factory=session_factory)
    log.info(
        "worker starting: kafka=%s redis=%s registry=%s group=%s B=%d W=%.1fms web=%s:%d",
        settings.kafka_bootstrap, _safe_url(settings.redis_url), settings.registry_dir, settings.group_id,
        settings.batch_size, settings.batch_wait_ms, settings.web_host, settings.web_port,
    )  # fmt: skip
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def _safe_url(url: str) -> str:
    """A URL with any password masked, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://***@{host}"
    return url
