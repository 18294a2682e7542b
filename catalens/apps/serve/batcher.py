"""Dynamic micro-batching: requests that arrive together run through the model as one batch.

Each request puts its images (uint8, model-sized) on a queue and awaits its own future. One worker takes the first
waiting item, then keeps gathering until the batch holds `max_batch` images or `max_wait_ms` has passed since that
first item, runs the model once in a thread (onnxruntime and PyTorch release the GIL) and hands every request its
own rows. With `max_wait_ms=0` (the default) nothing waits: a batch is what queued while the previous one ran.
With `max_batch=1` there is no queue: each request runs the model itself, as a plain server would.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool


@dataclass
class Pending:
    images: torch.Tensor  # uint8 (n, C, H, W)
    future: asyncio.Future


class MicroBatcher:
    def __init__(self, model, max_batch: int = 16, max_wait_ms: float = 0.0, observe_batch=None, observe_queue=None):
        self.model = model
        self.max_batch, self.max_wait = max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.observe_batch = observe_batch or (lambda size: None)  # metrics hooks
        self.observe_queue = observe_queue or (lambda depth: None)
        self.queue: asyncio.Queue[Pending] | None = None
        self.worker: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return self.max_batch > 1

    async def start(self) -> None:
        if self.enabled and self.worker is None:
            self.queue = asyncio.Queue()
            self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
            self.worker = None

    @property
    def running(self) -> bool:
        return not self.enabled or (self.worker is not None and not self.worker.done())

    async def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """Class probabilities (n, classes) for this request's images."""
        if not self.enabled:
            self.observe_batch(len(images))
            return await run_in_threadpool(self.model.probabilities, images)
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(images, future))
        self.observe_queue(self.queue.qsize())
        return await future

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            batch, size = [first], len(first.images)
            deadline = time.perf_counter() + self.max_wait
            while size < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 and self.queue.empty():
                    break
                try:
                    item = self.queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self.queue.get(),
                                                                                                  remaining)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                batch.append(item)
                size += len(item.images)
            self.observe_queue(self.queue.qsize())
            self.observe_batch(size)
            try:
                images = torch.cat([item.images for item in batch])
                probabilities = await run_in_threadpool(self.model.probabilities, images)
            except Exception as error:  # noqa: BLE001 - every waiting request gets the error, the worker lives on
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            start = 0
            for item in batch:
                if not item.future.done():  # a client that went away has a cancelled future
                    item.future.set_result(probabilities[start:start + len(item.images)])
                start += len(item.images)
