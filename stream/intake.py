"""faust's consumer with a cheaper hand-over of each fetched message.

faust's fetch loop hands every message to the app's callback (the conductor, which puts it on
the subscribing streams' queues) through ``Service.wait_first(callback(message),
suspend_flow.wait())``, so that a rebalance can abandon a callback blocked on a full queue.
That creates four tasks per message and cancels three of them: ~90 µs of CPU per event on this
project's 2-core box, at 1,000 events/s a tenth of the worker. Almost every callback finishes
without waiting (the queue has room), so :class:`Consumer` first runs the callback up to its
first suspension on the spot; only one that suspends (a full queue, flow control) goes through
``wait_first`` as before, with the rest of the same coroutine. What happens is the same either way.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from mode.services import WaitResults

__all__ = ["Consumer", "start", "use_lean_consumer"]


def start(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` up to its first suspension: ``(True, its result)`` when it finished (an
    exception it raises propagates), else ``(False, an awaitable that goes on with it)``."""
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, _finish(_rest(coro, yielded))


async def _finish(rest: Any) -> Any:
    return await rest


@types.coroutine
def _rest(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """The rest of a started coroutine, driven by whichever task awaits this: each value it
    yields goes to that task and each answer (or exception, a cancellation included) back to
    it, as ``yield from`` does for a coroutine not yet started."""
    while True:
        try:
            answer = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # thrown in by the task: a cancellation, mostly
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(answer)
            except StopIteration as stop:
                return stop.value


class Consumer(AIOKafkaConsumer):
    """faust's aiokafka consumer; the fetch loop's hand-over of a message costs one call when
    the callback does not wait (see the module's docstring)."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if timeout is None and len(coros) == 2 and _is_suspend_wait(coros[1], self.suspend_flow):
            first, other = coros
            if not (self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set()):
                done, value = start(first)
                if done:
                    other.close()
                    return WaitResults([first], [value], False)
                first = value
            return await super().wait_first(first, other)
        return await super().wait_first(*coros, timeout=timeout)


def _is_suspend_wait(coro: Any, event: Any) -> bool:
    """``coro`` is ``event.wait()``, not started (the fetch loop's second argument)."""
    frame = getattr(coro, "cr_frame", None)
    return frame is not None and coro.cr_code is _WAIT_CODE and frame.f_locals.get("self") is event


_WAIT_CODE = asyncio.Event.wait.__code__  # faust's suspend_flow is an asyncio.Event


def use_lean_consumer(app: Any) -> None:
    """Make ``app`` (a faust app, before its consumer exists) build :class:`Consumer`."""
    app.transport.Consumer = Consumer
