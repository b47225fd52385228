"""``attnrec stack``: single-node Apache Kafka (KRaft) and Redis as background processes.

- :mod:`.local` — :class:`LocalStack` (both servers under one root), ``attnrec stack up|down|status``;
- :mod:`.kafka_broker` — the broker: its jars, configuration, listeners, start and stop;
- :mod:`.redis_server` — Redis with AOF on;
- :mod:`.processes` — free ports, pid files, stopping a server;
- :mod:`.settings` — :class:`StackSettings`, the local stack's ports and paths.
"""

from .local import LocalStack, cmd_stack, local_stack
from .processes import REPO_ROOT, free_port

__all__ = ["LocalStack", "local_stack", "cmd_stack", "free_port", "REPO_ROOT"]
