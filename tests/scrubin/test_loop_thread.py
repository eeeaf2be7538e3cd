"""The workflows' asyncio loop thread (``scrubin surgeon``'s station loop, the demo's server
loop): stopping it leaves no task pending on a closed loop."""

from __future__ import annotations

import asyncio

from scrubin.workflows.loop_thread import LoopThread


def test_station_loop_stop_finishes_pending_tasks() -> None:
    """A task still waiting when the surgeon's station loop stops (the recorder's microphone
    tap on a track that never ends) runs its ``finally`` on a live loop, as under
    ``asyncio.run``; left pending on the closed loop, the garbage collector tore it down later
    with 'Event loop is closed' (a CI run's unraisable warning)."""
    lt = LoopThread()
    seen: list[str] = []

    async def waiter(q: asyncio.Queue[int]) -> None:
        try:
            await q.get()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append(f"finally, loop closed: {asyncio.get_running_loop().is_closed()}")

    async def start() -> asyncio.Task[None]:
        return asyncio.ensure_future(waiter(asyncio.Queue()))

    task = lt.call(start(), 5)
    lt.stop()
    assert lt.loop.is_closed() and not lt.thread.is_alive()
    assert task.cancelled()
    assert seen == ["cancelled", "finally, loop closed: False"]
