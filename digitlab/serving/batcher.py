"""The micro-batcher: the images of requests that arrive together, predicted in one model call.

How much that buys under load is measured in benchmarks/README.md, "The app under load".
"""

import asyncio

from starlette.concurrency import run_in_threadpool

from digitlab.serving.reader import DigitReader, Reading

BATCH_WINDOW_S = 0.002  # after an image is ready, wait this long for others to predict with it in one call
MAX_BATCH = 128  # images in one model call (each is predicted with its test-time views)


class Batcher:
    """Predicts the images of requests that arrive together in one model call: each waits at most
    `window_s` for others (none when the model is free and none come), and while the model runs, the
    images that arrive meanwhile queue for its next call."""

    def __init__(self, reader: DigitReader, window_s: float = BATCH_WINDOW_S):
        self.reader, self.window_s = reader, window_s
        self.queue: asyncio.Queue | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.model_calls = 0  # for tests and the benchmark: how many batches the model was called on

    async def classify(self, reading: Reading) -> Reading:
        """`reading` with the model's answer, predicted together with whatever else is waiting."""
        if self.loop is not asyncio.get_running_loop():  # the first request, or the app served anew (a test)
            self.loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()
            self.loop.create_task(self._predict_forever(self.queue))
        done = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((reading, done))
        await done
        return reading

    async def _predict_forever(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.window_s
            while len(batch) < MAX_BATCH:
                if queue.empty():
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), left))
                    except TimeoutError:
                        break
                else:
                    batch.append(queue.get_nowait())
            self.model_calls += 1
            try:
                await run_in_threadpool(self.reader.classify, [reading for reading, _ in batch])
            except Exception as error:  # every request of the batch answers 500, and the next batch is tried
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            for _, done in batch:
                if not done.done():  # its client may have gone
                    done.set_result(None)
