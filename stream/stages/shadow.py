"""Shadow scoring: a candidate version scores the serving model's rows off the hot path.

The candidate (``attnrec models shadow VERSION``: the registry's ``SHADOW`` pointer, loaded and
checked by the model watcher like a promotion) scores the rows of a ``SHADOW_FRACTION`` of users
(a stable hash: every event of theirs, so an incremental candidate's caches stay in step), after
the batch's recommendations are handed to the producer and stored, in a child process of the worker that
runs only on CPU time nothing else wants (Linux ``SCHED_IDLE``; elsewhere nice +10), one batch
at a time and in order (so an incremental candidate's
caches stay in step, as the serving ones do); a batch that finds ``max_pending`` batches already
queued is not shadowed (counted as ``busy``), so a candidate slower than the stream costs a
bounded queue, never work in front of the serving path. A process, not a thread: the shadow's
Python work (inputs, lists, caches) in a thread of the worker held the interpreter lock the
event loop needed at every await, and moved the serving p99 at 1,000 events/s by +38 %
(docs/BENCHMARKS.md, "Shadow scoring").
Its lists are never published. What is kept, per candidate version:

- overlap@10 with the serving model's list for the same user and trigger;
- the online HR@10 / NDCG@10 of its list (source ``shadow``) and, on exactly the same triggers,
  of the serving model's (source ``shadow-base``), scored on the user's next event by
  :class:`attnrec.stream.stages.online.OnlineEval` like every other source: the pair the promotion gate
  compares;
- the candidate's scoring time per batch.

The candidate sees each row's window as the serving rows hold it (an incremental model's cached
user: its newest ``max_len`` events), with the same exclusions: the user's recent items and the
policy's blocked items (cool-downs are not applied to shadow lists). An incremental candidate
keeps its own per-user key/value caches (``CACHE_MB`` more memory at most) and scores a user
with one new event since its last shadowed batch by its step graph, like the serving path; the
others go through its full graph over the window (a user whose history is longer than the
window the serving rows hold gets a cache built from that window). Such a user in step is sent
only its new event, not its window; one whose cache the process has evicted meanwhile is
reported back (counted ``lost``, not scored) and sent whole the next time.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import pickle
import struct
import sys
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.model import LoadedModel
from .candidate import shadow_process
from .interleave import unit_hash

__all__ = ["ShadowResult", "Shadow"]

log = logging.getLogger(__name__)


@dataclass
class ShadowResult:
    version: str  # the candidate's
    lists: dict[str, tuple[str, list[str], list[str]]]  # user -> (trigger event id, candidate's list, serving list)
    ms: float  # the candidate's scoring time for the batch
    rows: dict[str, int] = field(default_factory=dict)  # rows scored per graph: step (from a cache), full



class Shadow:
    """The candidate model, the shadow process that scores with it, and its finished results
    (drained by the event loop). The pipe to the process is non-blocking and served by the
    event loop itself (no threads in the worker: a thread handing work to a process still
    needs the interpreter lock the event loop needs)."""

    def __init__(self, fraction: float, *, k: int, exclude_seen: bool, exclude_window: int,
                 cache_bytes: int = 256 * 2**20, cache_dtype: str = "float32", max_pending: int = 16) -> None:
        self.fraction = fraction
        self._args = (k, exclude_seen, exclude_window, cache_bytes, cache_dtype)
        self.model: LoadedModel | None = None
        self.max_pending = max_pending  # batches queued for the shadow process at most
        self._pending = 0
        self._proc: Any = None
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wbuf = bytearray()  # framed messages not yet written to the pipe
        self._rbuf = bytearray()
        self._writing = False
        self._blocked: frozenset[str] | None = None  # the blocked items the process has
        self.done: deque[ShadowResult] = deque()
        # user -> the Redis #seq its cache in the process is at once the batches sent are scored
        # (least recently sent first): a user in step is sent only its new event, not its window
        self._sent: OrderedDict[str, int] = OrderedDict()
        self._room = sys.maxsize  # users the process's caches held at its last answer, once full
        self.event_rows = 0  # rows sent as their new event only (the others with their windows)

    # ------------------------------------------------------------------ the process and its pipe
    def _start(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        self._stop_io()
        ctx = mp.get_context("spawn")  # never fork a process with threads and an event loop
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=shadow_process, args=(child, *self._args), name="attnrec-shadow", daemon=True)
        self._proc.start()
        child.close()
        os.set_blocking(parent.fileno(), False)
        self._conn, self._loop = parent, None
        self._wbuf.clear()
        self._rbuf.clear()
        self._blocked, self._pending = None, 0
        self._sent.clear()

    def _attach(self) -> None:
        """Serve the pipe from the running event loop (once per loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not in the loop yet: the messages wait in the buffer
        if loop is not self._loop and self._conn is not None:
            self._loop = loop
            loop.add_reader(self._conn.fileno(), self._on_readable)

    def _send(self, msg: Any) -> None:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        self._wbuf += struct.pack("!i", len(data)) + data  # multiprocessing.Connection's framing
        self._attach()
        self._flush()

    def _flush(self) -> None:
        if self._conn is None:
            return
        fd = self._conn.fileno()
        while self._wbuf:
            try:
                n = os.write(fd, self._wbuf)
            except BlockingIOError:
                break
            except OSError as exc:
                self._gone(f"shadow process gone: {exc}")
                return
            del self._wbuf[:n]
        want = bool(self._wbuf) and self._loop is not None
        if want != self._writing and self._loop is not None:
            if want:
                self._loop.add_writer(fd, self._flush)
            else:
                self._loop.remove_writer(fd)
            self._writing = want

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._conn.fileno(), 1 << 20)
        except BlockingIOError:
            return
        except OSError as exc:
            self._gone(f"shadow process gone: {exc}")
            return
        if not chunk:
            self._gone("shadow process ended")
            return
        self._rbuf += chunk
        while len(self._rbuf) >= 4:
            (n,) = struct.unpack("!i", self._rbuf[:4])
            if len(self._rbuf) < 4 + n:
                break
            msg = pickle.loads(self._rbuf[4 : 4 + n])
            del self._rbuf[: 4 + n]
            self._handle(msg)

    def _handle(self, msg: Any) -> None:
        if msg[0] == "loaded":
            if msg[2]:
                log.error("the shadow process could not load its model: %s", msg[2])
            return
        _, version, lists, ms, counts, lost, cached = msg
        for u in lost:  # the process no longer had their caches: send their whole windows again
            self._sent.pop(u, None)
        # once the process's caches are full (they evict least recently used first, as this
        # mirror does) holding as many users keeps mostly the same ones; a user sent its new
        # event whose cache was evicted all the same is reported back (``lost``: not scored) and
        # sent whole next time
        self._room = cached if cached >= 0 else sys.maxsize
        if version is not None:
            self.done.append(ShadowResult(version, lists, ms, counts))
        self._pending = max(0, self._pending - 1)

    def _stop_io(self) -> None:
        if self._loop is not None and self._conn is not None:
            fd = self._conn.fileno()
            self._loop.remove_reader(fd)
            if self._writing:
                self._loop.remove_writer(fd)
        self._loop, self._writing = None, False

    def _gone(self, why: str) -> None:
        log.error("%s; shadow scoring stops until the next shadow version", why)
        self._stop_io()
        self._pending = 0
        self._sent.clear()
        self.model = None

    # ------------------------------------------------------------------ the worker's side
    def set_model(self, m: LoadedModel | None) -> None:
        old = self.model.version if self.model is not None else None
        self.model = m
        if m is not None:
            if m.path is None:
                raise ValueError(f"model {m.version} has no registry directory to shadow it from")
            self._start()
            self._sent.clear()  # a new model: the process's caches start over
            self._send(("model", str(m.path)))
            log.info("shadow scoring with %s (%.0f%% of users, in process %s)", m.version, 100 * self.fraction,
                     self._proc.pid)
        elif old is not None:
            log.info("shadow scoring of %s stopped", old)

    def submit(self, rows: Mapping[str, tuple[str, Sequence[bytes], list[str], int, int]], blocked: frozenset[str]) -> str:
        """Queue ``rows`` (user -> (trigger event id, window newest first, serving list, Redis
        ``#seq``, new events in the batch)) of the sampled users for the shadow process; returns
        ``scored``, ``busy``, ``fraction`` (no sampled user in the batch) or ``off``."""
        if self.model is None or not rows:
            return "off"
        if self.fraction < 1.0:  # a stable share of users, every event of theirs: their caches stay in step
            rows = {u: r for u, r in rows.items() if unit_hash("shadow|" + u) < self.fraction}
            if not rows:
                return "fraction"
        if self._pending >= self.max_pending:
            return "busy"
        self._pending += 1
        send_blocked = None if blocked is self._blocked else blocked
        self._blocked = blocked
        self._send(("batch", self._rows(rows), send_blocked))
        return "scored"

    def _rows(self, rows: Mapping[str, tuple[str, Sequence[bytes], list[str], int, int]]
              ) -> dict[str, tuple[str, list[bytes], list[str], int, int, bool]]:
        """The message's rows: (trigger, entries, serving list, #seq, new events, only the new
        event?). An incremental candidate's users in step (one new event, their cache one
        behind) get only that event: a window is ~50 entries to pickle, write and read per row,
        about as much as the rest of the worker's side of the shadow."""
        assert self.model is not None
        sent, inc, out = self._sent, self.model.incremental, {}
        for u, (tag, window, serving, seq, new) in rows.items():
            delta = inc and new == 1 and bool(window) and sent.get(u) == seq - 1
            out[u] = (tag, list(window[:1] if delta else window), serving, seq, new, delta)
            self.event_rows += delta
            if inc:
                sent[u] = seq
                sent.move_to_end(u)
        while len(sent) > self._room:
            sent.popitem(last=False)
        return out

    @property
    def idle(self) -> bool:
        """Nothing queued or scoring."""
        return self._pending == 0

    def drain(self) -> list[ShadowResult]:
        out = []
        while self.done:
            out.append(self.done.popleft())
        return out

    def close(self) -> None:
        if self._proc is None:
            return
        self._stop_io()
        self._conn.close()  # the process sees the end of its pipe and exits
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
        self._proc = self._conn = None
