"""``attnrec stack``: Apache Kafka (KRaft) and Redis as background processes on loopback, one
of each or, with ``--brokers 3 --redis-cluster``, a 3-broker Kafka cluster and a Redis Cluster.

- :mod:`.local` — :class:`LocalStack` (all servers under one root), ``attnrec stack up|down|status``;
- :mod:`.kafka_broker` — the brokers: their jars, configuration, listeners, start, stop, pause;
- :mod:`.redis_server` — Redis with AOF on;
- :mod:`.redis_cluster` — the Redis Cluster: six nodes, who is master of what;
- :mod:`.processes` — free ports, pid files, stopping a server;
- :mod:`.settings` — :class:`StackSettings`, the local stack's ports and paths.
"""

from .local import LocalStack, cmd_stack, local_stack
from .processes import REPO_ROOT, free_port

__all__ = ["LocalStack", "local_stack", "cmd_stack", "free_port", "REPO_ROOT"]
