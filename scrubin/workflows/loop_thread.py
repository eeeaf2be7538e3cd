"""An asyncio loop on a thread of its own, for workflows whose frame loop owns the caller's
thread (``scrubin surgeon``, the demo's mentoring step): WebRTC, gRPC and the server run on it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class LoopThread:
    """An asyncio loop running on its own daemon thread until :meth:`stop`."""

    def __init__(self, name: str = "station-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Any, timeout: float | None = None) -> Any:
        """Run ``coro`` on the loop and wait for its result (``TimeoutError`` after
        ``timeout`` s)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @staticmethod
    async def _cancel_pending() -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Cancel the tasks still pending (as ``asyncio.run`` does: a task left pending on a
        closed loop is torn down by the garbage collector later, its ``finally`` blocks
        failing with 'Event loop is closed'), then stop and close the loop."""
        if self.thread.is_alive() and not self.loop.is_closed():
            try:
                self.call(self._cancel_pending(), 5)
            except (TimeoutError, RuntimeError):
                pass  # a task that ignores its cancellation: stop anyway
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()
