"""Dynamic batching for a blocking batch function, formed when the function is free.

Ray Serve's ``@serve.batch`` seals a batch when its wait timer runs out, then the sealed batch
waits for the previous one to finish; requests that arrive meanwhile start the batch after it.
When the model is the slower part, every batch is then about as big as the timer allows, and
small batches cost CPU: a forward pass has a fixed cost, and each batch hands the GIL between
the event loop and the worker thread. Here, as in Triton's dynamic batcher, a batch is formed
when the worker is free: what arrived while it was busy goes into the next batch, up to
``max_size``. Then it waits for the requests the caller said are on their way (``expect``: in the
replica, being parsed and validated), up to ``wait_s``; with none on the way a batch goes at
once. So a lone request is not held, and under load batches fill from requests already in the
replica, not from a timer.

No Ray here: the Serve replica (``serving/app.py``) holds one and awaits ``submit``; tests drive
it directly.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence


class Batcher:
    def __init__(self, fn: Callable[[list], Sequence], max_size: int = 16, wait_s: float = 0.005,
                 on_batch: Callable[[int], None] | None = None, on_loop: Callable[[list], bool] | None = None):
        """``fn``: list of items -> one result per item, in order; it runs in a worker thread,
        one batch at a time, or on the event loop itself for a batch ``on_loop(items)`` says is
        short and keeps the GIL throughout (in a thread it would block the loop as long, and each
        hand-over of the GIL between the two threads costs CPU). ``on_batch(size)`` is called on
        the event loop before each batch."""
        if max_size < 1 or wait_s < 0:
            raise ValueError("max_size must be at least 1 and wait_s at least 0")
        self.fn, self.max_size, self.wait_s, self.on_batch, self.on_loop = fn, max_size, wait_s, on_batch, on_loop
        self._queue: list[tuple[Any, asyncio.Future]] = []
        self.arriving = 0  # items expected: ``expect`` called, neither ``submit`` nor ``unexpect`` yet
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    def expect(self) -> None:
        """An item is on its way: a forming batch waits for it (up to ``wait_s``)."""
        self.arriving += 1

    def unexpect(self) -> None:
        """An expected item will not come (its request was refused before ``submit``)."""
        self.arriving = max(0, self.arriving - 1)
        if self._arrived is not None:
            self._arrived.set()  # a forming batch need not wait for it

    async def submit(self, item: Any, expected: bool = False) -> tuple[Any, int]:
        """(the item's result, the size of the batch it went in); ``expected``: announced by
        ``expect``."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._run())
        if expected:
            self.arriving = max(0, self.arriving - 1)
        future = loop.create_future()
        self._queue.append((item, future))
        self._arrived.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if not self._queue:  # woken by unexpect
                self._arrived.clear()
                continue
            deadline = loop.time() + self.wait_s
            while len(self._queue) < self.max_size and self.arriving > 0:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = [(item, fut) for item, fut in self._queue[: self.max_size] if not fut.done()]
            del self._queue[: self.max_size]
            if self._queue:
                self._arrived.set()  # the rest start the next batch
            else:
                self._arrived.clear()
            if batch:
                await self._process(batch)

    async def _process(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        if self.on_batch is not None:
            self.on_batch(len(batch))
        items = [item for item, _ in batch]
        try:
            if self.on_loop is not None and self.on_loop(items):
                results = self.fn(items)
            else:
                results = await asyncio.to_thread(self.fn, items)
            if len(results) != len(batch):
                raise RuntimeError(f"the batch function gave {len(results)} results for {len(batch)} items")
        except Exception as exc:  # every caller of the batch gets the error; the worker goes on
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(batch, results):
            if not fut.done():
                fut.set_result((result, len(batch)))
