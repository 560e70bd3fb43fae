"""Micro-batching for ``alexnet serve``: requests that arrive together share one forward pass.

One asyncio task takes the first waiting image, then keeps collecting for up to ``window_s`` seconds or until
``max_batch`` images are in hand, and runs the whole batch as one ``Predictor.topk`` call on its own thread
(the event loop never waits on the network). Each request awaits its own future. ``window_s`` 0 with
``max_batch`` 1 is one request at a time: the baseline the micro-batching is measured against.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

TopK = Callable[[list[np.ndarray], int], list[list[dict]]]      # Predictor.topk


class MicroBatcher:
    """``await submit(image)`` -> its top-k; ``start()`` and ``stop()`` run inside the server's event loop."""

    def __init__(self, topk: TopK, *, k: int, window_s: float, max_batch: int) -> None:
        self.topk, self.k, self.window_s, self.max_batch = topk, k, window_s, max_batch
        self.batches = self.images = self.largest = 0        # what /healthz reports: batching at work
        self.waiting = 0                                      # submitted, not answered yet
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alexnet-infer")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alexnet-batcher")

    async def stop(self) -> None:
        """After the server drained its requests: end the task, then the inference thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():      # none after a drain; never left hanging
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, image: np.ndarray) -> list[dict]:
        if self._queue is None or self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((image, future))
        self.waiting += 1
        try:
            return await future
        finally:
            self.waiting -= 1

    def stats(self) -> dict:
        return {"waiting": self.waiting, "batches": self.batches, "images": self.images, "largest_batch": self.largest,
                "mean_batch": round(self.images / self.batches, 2) if self.batches else 0.0,
                "window_ms": self.window_s * 1000, "max_batch": self.max_batch}

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        """The first waiting request, and those that arrive within the window (at most max_batch)."""
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [(image, future) for image, future in await self._collect() if not future.done()]
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self.topk, [image for image, _ in batch], self.k)
            except Exception as err:                       # every waiting request learns it; the loop goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.batches, self.images = self.batches + 1, self.images + len(batch)
            self.largest = max(self.largest, len(batch))
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
