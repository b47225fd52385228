"""The tests' one producer of click events: :class:`Feeder`.

Every integration test that puts events on the clicks topic does it through a Feeder, which
sends each message keyed by user (``acks=all``, retried across a broker restart) and remembers
what it sent and which events the broker acknowledged. It sends

- events one by one (:meth:`Feeder.send`), or a list and waits for the broker
  (:meth:`Feeder.send_all`);
- messages that are not events — junk bytes, an empty value, a chosen key
  (:meth:`Feeder.send_raw`);
- a stream from a thread at a steady rate (:meth:`Feeder.start`), of ``n`` events or until
  :meth:`Feeder.stop`, made by :meth:`Feeder.make` or by the test's own ``make(k)``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from attnrec.apps.replay import Pacer

from attnrec.events import ClickEvent
from attnrec.kafka_util import make_producer
from attnrec.settings import Settings

__all__ = ["Feeder", "Raw", "T0", "TYPES"]

T0 = 1_764_300_000_000
TYPES = ("view", "click", "like", "cart", "purchase", "gift", "share")
#: Producer options that keep retrying through a broker restart of a few seconds.
DURABLE: dict[str, Any] = dict(retries=2**31 - 1, reconnect_backoff_max_ms=1000, request_timeout_ms=10_000,
                               delivery_timeout_ms=180_000, max_block_ms=180_000)  # fmt: skip


class Raw(NamedTuple):
    """A message that is not an event (``value`` None: an empty message)."""

    value: bytes | None
    key: bytes


class Feeder:
    """Produces to ``s.clicks_topic`` and tracks every event it sent (by ``event_id``, in send
    order), when it was first sent and whether the broker acknowledged it.

    :meth:`make` builds the standard stream: event ``k`` is ``<tag>-e<k>`` of user
    ``<tag>-u<k % n_users>``, an item of ``items``, the type ``TYPES[k % 7]`` and the unique
    ``ts`` ``T0 + k`` (so the ts names the event in a Redis buffer). ``producer_kw`` overrides
    :func:`attnrec.kafka_util.make_producer`'s options (after :data:`DURABLE`).
    """

    def __init__(self, s: Settings, items: list[str] | None = None, *, n_users: int = 40, **producer_kw: Any) -> None:
        self.s = s
        self.items = items or []
        self.n_users = n_users
        self.tag = uuid.uuid4().hex[:6]
        self.events: dict[str, ClickEvent] = {}
        self.sent_at: dict[str, float] = {}
        self.acked: set[str] = set()
        self.failed: dict[str, str] = {}
        self.seq = 0  # events made by make()
        self.error: BaseException | None = None  # what ended the thread of start(), if it failed
        self.lock = threading.Lock()
        self.producer = make_producer(s, **{**DURABLE, **producer_kw})
        self.thread: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> Feeder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ events
    def user(self, i: int) -> str:
        return f"{self.tag}-u{i}"

    def make(self) -> ClickEvent:
        """The next event of the standard stream."""
        k = self.seq
        self.seq += 1
        return ClickEvent(f"{self.tag}-e{k}", self.user(k % self.n_users), self.items[(k * 7) % len(self.items)],
                          TYPES[k % len(TYPES)], T0 + k)  # fmt: skip

    # ------------------------------------------------------------------ sending
    def send(self, ev: ClickEvent, value: bytes | None = None, key: bytes | None = None) -> None:
        """Send ``ev`` (or ``value`` in its place) keyed by its user (or ``key``), and track it."""
        eid = ev.event_id
        with self.lock:
            self.events[eid] = ev
            self.sent_at.setdefault(eid, time.time())
        fut = self.producer.send(self.s.clicks_topic, key=ev.user_id.encode() if key is None else key,
                                 value=value or ev.to_json())  # fmt: skip

        def ok(_: Any) -> None:
            with self.lock:
                self.acked.add(eid)

        def bad(exc: BaseException) -> None:
            with self.lock:
                self.failed[eid] = repr(exc)

        fut.add_callback(ok)
        fut.add_errback(bad)

    def send_raw(self, value: bytes | None, key: bytes) -> None:
        """Send a message that is not an event (not tracked)."""
        self.producer.send(self.s.clicks_topic, key=key, value=value)

    def send_all(self, events: Iterable[ClickEvent | Raw], timeout: float = 60) -> None:
        """Send each message, then wait until the broker has them."""
        for msg in events:
            self._send_one(msg)
        self.flush(timeout)

    def flush(self, timeout: float = 60) -> None:
        self.producer.flush(timeout=timeout)

    def _send_one(self, msg: ClickEvent | Raw) -> None:
        if isinstance(msg, Raw):
            self.send_raw(msg.value, key=msg.key)
        else:
            self.send(msg)

    # ------------------------------------------------------------------ a stream from a thread
    def start(self, n: int | None = None, rate: float = 200.0,
              make: Callable[[int], ClickEvent | Raw] | None = None) -> Feeder:  # fmt: skip
        """Send ``n`` messages (None: until :meth:`stop`) at ``rate``/s from a thread; message
        ``k`` is ``make(k)``, by default :meth:`make`'s next event."""
        self.thread = threading.Thread(target=self._run, args=(n, rate, make), name="feeder", daemon=True)
        self.thread.start()
        return self

    def _run(self, n: int | None, rate: float, make: Callable[[int], ClickEvent | Raw] | None) -> None:
        try:
            pacer = Pacer(rate)
            k = 0
            while (n is None or k < n) and not self._stop.is_set():
                self._send_one(make(k) if make is not None else self.make())
                k += 1
                pacer.tick()
            self.producer.flush(timeout=180)
        except BaseException as exc:  # surfaced by the test (Feeder.error)
            self.error = exc
            raise

    def join(self, timeout: float = 240) -> None:
        """Wait for the thread of :meth:`start` to send its ``n`` messages."""
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "producer did not finish in time"

    def stop(self, timeout: float = 30) -> None:
        """End the stream of :meth:`start` (its messages so far are flushed)."""
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def close(self) -> None:
        self.stop()
        self.producer.close(timeout=10)

    # ------------------------------------------------------------------ what was sent
    def sent_by_user(self) -> dict[str, list[ClickEvent]]:
        """Every event sent, per user, in send order."""
        out: dict[str, list[ClickEvent]] = {}
        with self.lock:
            for ev in self.events.values():
                out.setdefault(ev.user_id, []).append(ev)
        return out

    def expected(self) -> dict[str, list[ClickEvent]]:
        """Acknowledged events per user, in send order."""
        out: dict[str, list[ClickEvent]] = {}
        with self.lock:
            for eid, ev in self.events.items():
                if eid in self.acked:
                    out.setdefault(ev.user_id, []).append(ev)
        return out
