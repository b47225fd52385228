"""Training under jemalloc: ``ATTNREC_TRAIN_ALLOCATOR``.

A training step allocates and frees the same large tensors every batch. glibc's malloc hands
big blocks back to the kernel on ``free`` and takes fresh ones on the next ``malloc``, which the
kernel must zero: on Beauty a third of a step's CPU was system time. jemalloc told to keep its
freed memory (``dirty_decay_ms:-1,muzzy_decay_ms:-1``) reuses the blocks instead; the figures
are identical and the step cheaper (docs/BENCHMARKS.md, "Training under jemalloc").

An allocator is chosen when a process starts, so a training command that is not yet running
under it starts itself again (:func:`reexec`) with ``LD_PRELOAD`` and ``MALLOC_CONF`` set; the
library is Debian's ``libjemalloc2`` (redis-server depends on it). Only a command started from
the shell is restarted: called in-process (tests, notebooks), it runs under whatever allocator
it has. Torch-free.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from attnrec.errors import ConfigError

__all__ = ["JEMALLOC_CONF", "find_jemalloc", "allocator_env", "reexec"]

log = logging.getLogger(__name__)

#: Where Debian and other distributions install jemalloc's shared library.
JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2",
)
#: Keep freed pages for reuse (never decay them back to the kernel).
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def find_jemalloc(paths: tuple[str, ...] = JEMALLOC_PATHS) -> str | None:
    """The first jemalloc library among ``paths`` that exists, or None."""
    return next((p for p in paths if os.path.isfile(p)), None)


def allocator_env(choice: str, env: Mapping[str, str], library: str | None) -> dict[str, str] | None:
    """The environment to restart under for ``choice`` (auto, jemalloc, system), or None when
    the process should run as it is: ``system``, jemalloc already preloaded, or (auto) no
    library found. ``jemalloc`` without a library is a :class:`ConfigError`."""
    if choice == "system":
        return None
    if "jemalloc" in env.get("LD_PRELOAD", ""):
        log.debug("running under %s", env["LD_PRELOAD"])
        return None
    if library is None:
        if choice == "jemalloc":
            raise ConfigError(f"ATTNREC_TRAIN_ALLOCATOR=jemalloc: no jemalloc library in {', '.join(JEMALLOC_PATHS)} "
                              "(Debian: apt-get install libjemalloc2)")
        return None
    preload = " ".join(p for p in (library, env.get("LD_PRELOAD", "")) if p)
    return {**env, "LD_PRELOAD": preload, "MALLOC_CONF": env.get("MALLOC_CONF") or JEMALLOC_CONF}


def reexec(choice: str, argv: list[str]) -> None:
    """Replace this process with ``attnrec ARGV`` under jemalloc when :func:`allocator_env` says
    so; otherwise return."""
    env = allocator_env(choice, os.environ, find_jemalloc())
    if env is None:
        return
    log.debug("restarting under %s (MALLOC_CONF=%s)", env["LD_PRELOAD"], env["MALLOC_CONF"])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "attnrec.apps.cli", *argv], env)
