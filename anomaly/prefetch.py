"""Producing an iterator's items ahead, in a background thread (detection parses the next block meanwhile)."""

from __future__ import annotations

from typing import Iterator


class Prefetch:
    """Produce `items` in a background thread, `depth` ahead, from the moment it is made (detection starts
    reading while torch is imported): pandas parses the next block (without the GIL) while the caller scores
    and writes the current one. `close()` stops the thread."""

    def __init__(self, items: Iterator, depth: int = 1):
        import queue
        import threading

        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.done = object()
        self.items = items
        threading.Thread(target=self._produce, daemon=True, name="prefetch").start()

    def _produce(self) -> None:
        import queue

        def put(entry) -> bool:
            while not self.stop.is_set():
                try:
                    self.queue.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for item in self.items:
                if not put((item, None)):
                    return
            put((self.done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((self.done, exc))

    def __iter__(self) -> Iterator:
        while True:
            item, exc = self.queue.get()
            if item is self.done:
                if exc is not None:
                    raise exc
                return
            yield item

    def close(self) -> None:
        self.stop.set()
