"""Models shared within a worker process: one per config, or a pool of them.

Beam may run several DoFn instances of a stage on threads of one SDK worker process (several worker
threads with DirectRunner's multi_threading mode, several bundles at once on Dataflow). Models
whose runtime runs calls in parallel on its own (torch, CTranslate2 with several workers) are held
once per process (`process_model`). Engines that serve one call at a time (RapidOCR keeps per-call
state on shared objects) are pooled (`pooled_model`): a caller takes a free copy, or loads a new one
when every copy is busy, so the process holds as many copies as it ever ran calls at once.

`preload` loads models on a background thread, so that a run whose workers live in the launching
process (DirectRunner in_memory / multi_threading) reads weights while the first videos decode.
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
_KEY_LOCKS: dict[tuple[str, Hashable], threading.Lock] = {}
_LOCK = threading.Lock()


def process_model(kind: str, config: Hashable, load: Callable[[], T]) -> T:
    """The process's model of `kind` for `config`, loaded by `load()` on first use.

    Loads of different models may run at once (one lock per key); callers of the same model wait
    for its one load."""
    key = (kind, config)
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]  # type: ignore[return-value]
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        with _LOCK:
            if key in _MODELS:
                return _MODELS[key]  # type: ignore[return-value]
        started = time.perf_counter()
        model = load()
        logger.info("%s model loaded in %.1f s (once for this process)", kind, time.perf_counter() - started)
        with _LOCK:
            _MODELS[key] = model
        return model


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


def preload(loads: list[Callable[[], object]]) -> threading.Thread:
    """Runs each of `loads` (calls that put a model in this module's caches) on a daemon thread, in
    order. A failure is only logged: the stage that needs the model loads it again and fails there."""

    def run():
        for load in loads:
            try:
                load()
            except Exception as e:  # noqa: BLE001 -- the stage reports it where it matters
                logger.warning("preloading a model failed (the stage will retry): %s: %s", type(e).__name__, e)

    thread = threading.Thread(target=run, name="vmm-preload", daemon=True)
    thread.start()
    return thread
