"""One model per worker process: a cache keyed by the model's (frozen) config.

Beam may run several DoFn instances of a stage on threads of one SDK worker process; they all get
the same loaded model from here, so a process never holds two copies (CTranslate2 and ONNX Runtime
run their own thread pools: a second copy would only fight the first for the same cores).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Hashable, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
_MODELS: dict[tuple[str, Hashable], object] = {}
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
