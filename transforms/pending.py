"""PendingResults: work a DoFn runs on threads of its own, handed on in the order it came.

A DoFn fused after the decoder must not hold the stage's thread while a model works (it would hold
up the next videos' decoding). It submits the work to its own threads and hands the results on
later -- from a later `process` call once they are done, at the latest from `finish_bundle` --
each with its own element's window and timestamp. A weight bound (seconds of audio, frames to
read) makes `process` wait on the oldest entry beyond it, so memory stays bounded. No models here.
"""

from __future__ import annotations

import collections
from concurrent.futures import Future
from typing import Any, Iterator

from apache_beam.utils.windowed_value import WindowedValue


class PendingResults:
    def __init__(self, max_weight: float):
        self._max_weight = max_weight
        self._queue: collections.deque = collections.deque()
        self._weight = 0.0

    def clear(self) -> None:
        """Forgets what a failed bundle left."""
        self._queue.clear()
        self._weight = 0.0

    def add(self, key: Any, futures: list[Future], weight: float, window, timestamp) -> None:
        self._queue.append((key, futures, weight, window, timestamp))
        self._weight += weight

    def ready(self) -> Iterator[tuple[Any, list, Any]]:
        """(key, results, wrap) of the oldest entries that are done, or over the weight bound;
        `wrap(value)` gives the WindowedValue to hand on."""
        while self._queue and (all(f.done() for f in self._queue[0][1]) or self._weight > self._max_weight):
            yield self._pop()

    def drain(self) -> Iterator[tuple[Any, list, Any]]:
        """Every entry, waiting for each (for `finish_bundle`)."""
        while self._queue:
            yield self._pop()

    def _pop(self):
        key, futures, weight, window, timestamp = self._queue.popleft()
        self._weight -= weight
        results = [f.result() for f in futures]
        return key, results, lambda value: WindowedValue(value, timestamp, (window,))
