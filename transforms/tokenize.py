"""TokenizeFrames: frame (and patch) embeddings → int16 ids of their nearest visual-dictionary entries.

Consumes (video_id, FrameFeatures) straight from the CLIP stage (no embedding is recomputed).
Produces the same with `token` / `patch_tokens` set and the patch embeddings dropped, so only
ids travel on to the per-video join. Dictionaries are loaded once per worker process
(`shared.Shared`) and searched in batches with faiss (models.codebook).
"""

from __future__ import annotations

import dataclasses
import logging

import apache_beam as beam
import numpy as np
from apache_beam.utils import shared

from models.codebook import Codebook
from schemas.elements import FrameFeatures
from transforms.files import localize

logger = logging.getLogger(__name__)

_NAMESPACE = "vmm"


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
    codebook: str | None = None  # directory of the frame-level dictionary
    patch_codebook: str | None = None  # directory of the patch-level dictionary
    batch_size: int = 256


class _Loaded:
    """Holder for shared.Shared (it needs a weak-referenceable object)."""

    def __init__(self, frame: Codebook | None, patch: Codebook | None):
        self.frame, self.patch = frame, patch


class _TokenizeFn(beam.DoFn):
    def __init__(self, config: TokenizeConfig, handle: shared.Shared):
        self._config = config
        self._handle = handle
        self._tokens = beam.metrics.Metrics.counter(_NAMESPACE, "frame_tokens")
        self._patch_tokens = beam.metrics.Metrics.counter(_NAMESPACE, "patch_tokens")
        self._loaded: _Loaded | None = None

    def setup(self):
        cfg = self._config

        def load():
            frame = Codebook.load(localize(cfg.codebook)) if cfg.codebook else None
            patch = Codebook.load(localize(cfg.patch_codebook)) if cfg.patch_codebook else None
            logger.info("loaded visual dictionaries frame=%s patch=%s", frame, patch)
            return _Loaded(frame, patch)

        key = f"{cfg.codebook}|{cfg.patch_codebook}"
        self._loaded = self._handle.acquire(load, tag=key)

    def process(self, batch):
        frame_book, patch_book = self._loaded.frame, self._loaded.patch
        tokens = None
        if frame_book is not None:
            tokens = frame_book.assign(np.stack([f.embedding for _, f in batch]))
            self._tokens.inc(len(tokens))
        patch_ids = None
        if patch_book is not None:
            missing = [vid for vid, f in batch if f.patches is None]
            if missing:
                raise RuntimeError(f"videos {missing[:3]}: patch embeddings missing although a patch dictionary is set")
            sizes = [f.patches.shape[0] for _, f in batch]
            flat = patch_book.assign(np.concatenate([f.patches for _, f in batch]))
            patch_ids = np.split(flat, np.cumsum(sizes)[:-1])
            self._patch_tokens.inc(len(flat))
        for i, (video_id, f) in enumerate(batch):
            yield video_id, FrameFeatures(
                f.frame_index,
                f.embedding,
                None,
                int(tokens[i]) if tokens is not None else None,
                patch_ids[i] if patch_ids is not None else None,
            )


class TokenizeFrames(beam.PTransform):
    """(video_id, FrameFeatures) → (video_id, FrameFeatures with token / patch_tokens)."""

    def __init__(self, config: TokenizeConfig):
        super().__init__()
        self._config = config

    def expand(self, frames):
        if not (self._config.codebook or self._config.patch_codebook):
            return frames
        return (
            frames
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._config.batch_size)
            | "Assign" >> beam.ParDo(_TokenizeFn(self._config, shared.Shared()))
        )
