"""Overlap producing and consuming batches: the next batch is read while one is written.

Producers run in threads; their errors surface in the consumer; if the consumer stops
early, every producer is stopped and joined before control returns (so none touches its
source afterwards)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` as they come, produced ``depth`` ahead in a thread (see ``fan_in``)."""
    return fan_in([items], depth)


def fan_in(producers: list[Iterator[T]], depth: int = 4) -> Iterator[T]:
    """Run each producer in its own thread and yield their items as they arrive. The first
    error stops everything; if the consumer stops early, all producers are stopped and
    joined before this returns."""
    box: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce(items: Iterator[T]) -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(("end", None))
        except BaseException as exc:
            box.put(("error", exc))

    threads = [
        threading.Thread(target=produce, args=(p,), name=f"vigie-reader-{i}", daemon=True)
        for i, p in enumerate(producers)
    ]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            kind, value = box.get()
            if kind == "end":
                running -= 1
            elif kind == "error":
                assert isinstance(value, BaseException)
                raise value
            else:
                yield value  # type: ignore[misc]
    finally:
        stop.set()
        while any(t.is_alive() for t in threads):
            with contextlib.suppress(queue.Empty):
                box.get(timeout=0.1)
        for t in threads:
            t.join()
