"""``attnrec bench``: end-to-end throughput and latency of the streaming worker, and where its
time goes.

A load generator in this process produces synthetic clicks to a worker subprocess (the real
``attnrec worker``) and a tracker matches the recommendations that come back, against the local
Kafka and Redis. The modules, in the order a run uses them:

- :mod:`.load` — synthetic events, pre-filled user buffers, the generator's own ceiling;
- :mod:`.models` — the served model: a cached random-weight model of a shape, or the registry's;
- :mod:`.worker` — the worker subprocess, its readiness and metrics; a benchmark session;
- :mod:`.tracker` — which events each recommendation covers, and their latencies;
- :mod:`.run` — one measured run, its repeats and their summary;
- :mod:`.stages` — the in-process stage profile of the worker's hot path;
- :mod:`.sweep` — the ``make bench`` matrix;
- :mod:`.report` — machine info, merged reports, the plot and docs/BENCHMARKS.md's section;
- :mod:`.cli` — ``attnrec bench`` itself (:func:`~.cli.cmd_bench`).
"""

__all__: list[str] = []
