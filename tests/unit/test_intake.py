"""The fetch loop's cheaper hand-over (:mod:`attnrec.stream.intake`): a callback that does not
wait finishes on the spot; one that waits goes on, is cancelled or fails exactly as it would as
a task of its own; faust's consumer takes the fast path only for its own hand-over."""

from __future__ import annotations

import asyncio

import pytest
from attnrec.stream.intake import Consumer, _is_suspend_wait, start


def test_a_callback_that_does_not_wait_finishes_on_the_spot() -> None:
    async def main() -> None:
        q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)

        async def put(m: int) -> int:
            await q.put(m)
            return m

        assert start(put(1)) == (True, 1) and q.get_nowait() == 1

        async def bad() -> None:
            raise ValueError("refused")

        with pytest.raises(ValueError, match="refused"):
            start(bad())

    asyncio.run(main())


def test_a_callback_that_waits_goes_on_and_can_be_cancelled() -> None:
    async def main() -> None:
        q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        q.put_nowait(0)
        log: list[str] = []

        async def put(m: int) -> int:
            try:
                await q.put(m)
            except asyncio.CancelledError:
                log.append(f"cancelled {m}")
                raise
            return m

        done, rest = start(put(1))  # the queue is full: it waits
        assert not done
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0.01)
        assert not task.done()
        assert q.get_nowait() == 0  # room: it goes on where it stopped
        assert await task == 1 and q.get_nowait() == 1

        q.put_nowait(0)
        done, rest = start(put(2))
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log == ["cancelled 2"] and q.qsize() == 1

        async def late_failure() -> None:
            await asyncio.sleep(0)
            raise KeyError("late")

        done, rest = start(late_failure())
        with pytest.raises(KeyError, match="late"):
            await rest

    asyncio.run(main())


def test_only_the_fetch_loops_suspend_wait_is_recognised() -> None:
    async def main() -> None:
        ev, other = asyncio.Event(), asyncio.Event()
        mine, theirs, nap = ev.wait(), other.wait(), asyncio.sleep(0)
        assert _is_suspend_wait(mine, ev) and not _is_suspend_wait(theirs, ev) and not _is_suspend_wait(nap, ev)
        for c in (mine, theirs, nap):
            c.close()

    asyncio.run(main())
    assert Consumer.wait_first is not Consumer.__mro__[1].wait_first
