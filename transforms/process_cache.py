"""Models shared within a worker process: one per config, or a pool of them.

Beam may run several DoFn instances of a stage on threads of one SDK worker process (several worker
threads with DirectRunner's multi_threading mode, several bundles at once on Dataflow). Models
whose runtime runs calls in parallel on its own (torch, CTranslate2 with several workers) are held
once per process (`process_model`). Engines that serve one call at a time (RapidOCR keeps per-call
state on shared objects) are pooled (`pooled_model`): a caller takes a free copy, or loads a new one
when every copy is busy, so the process holds as many copies as it ever ran calls at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Callable, Hashable, Iterator, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
_MODELS: dict[tuple[str, Hashable], object] = {}
_POOLS: dict[tuple[str, Hashable], list] = {}
_POOL_SIZES: dict[tuple[str, Hashable], int] = {}
_LOCK = threading.Lock()


def process_model(kind: str, config: Hashable, load: Callable[[], T]) -> T:
    """The process's model of `kind` for `config`, loaded by `load()` on first use."""
    key = (kind, config)
    with _LOCK:
        if key not in _MODELS:
            started = time.perf_counter()
            _MODELS[key] = load()
            logger.info("%s model loaded in %.1f s (once for this process)", kind, time.perf_counter() - started)
        return _MODELS[key]  # type: ignore[return-value]


@contextlib.contextmanager
def pooled_model(kind: str, config: Hashable, load: Callable[[], T]) -> Iterator[T]:
    """A copy of the model of `kind` for `config` that no other thread uses until the block ends."""
    key = (kind, config)
    with _LOCK:
        free = _POOLS.setdefault(key, [])
        model = free.pop() if free else None
        if model is None:
            _POOL_SIZES[key] = _POOL_SIZES.get(key, 0) + 1
            copy = _POOL_SIZES[key]
    if model is None:
        started = time.perf_counter()
        try:
            model = load()
        except BaseException:
            with _LOCK:
                _POOL_SIZES[key] -= 1
            raise
        logger.info("%s model copy %d loaded in %.1f s (one per concurrent caller in this process)",
                    kind, copy, time.perf_counter() - started)
    try:
        yield model
    finally:
        with _LOCK:
            _POOLS[key].append(model)


def pool_size(kind: str, config: Hashable) -> int:
    """How many copies `pooled_model` has loaded for (kind, config) in this process."""
    with _LOCK:
        return _POOL_SIZES.get((kind, config), 0)
