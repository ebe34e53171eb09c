"""EmbedFrames: keyframes and titles → CLIP embeddings, through Beam's RunInference.

Consumes VideoFrames (a video's uint8 keyframes at the model's input size, and its title).
Produces (video_id, FrameFeatures) per keyframe -- with the patch embeddings [H*W, D] when
`with_patches` -- and (video_id, float32 [D]) per title.
A video's title travels with its keyframes: one input, so the step fuses with whatever produced
them (a Flatten of two inputs is a stage boundary on Beam's portable runners), and one RunInference
step, so each worker process holds one copy of the model.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np


def _skip_unusable_model_manager() -> None:
    """Beam (2.77) imports its optional ModelManager along with RunInference. That module imports
    torch (3.3 s here), then scipy; where scipy is missing the import fails and Beam goes on without
    ModelManager, which vmm does not use. Where scipy is missing, the doomed import is stopped
    before it pays for torch, so the launcher, which runs no model, builds the job 3.3 s sooner
    (workers import torch when CLIP loads). Where scipy is installed, nothing changes."""
    import importlib.util
    import sys

    name = "apache_beam.ml.inference.model_manager"
    if name not in sys.modules and importlib.util.find_spec("scipy") is None:
        sys.modules[name] = None  # type: ignore[assignment]  # its import raises ImportError at once


def _restore_resource_module() -> None:
    """Beam (2.77) imports the `resource` module in the same `try` as ModelManager, so where that
    import fails (no scipy, or stopped above) it sets `resource = None` and logs "Resource module is
    not available for current platform" at every model load, on Linux too. Give it the module back
    where the platform has one."""
    import importlib.util

    from apache_beam.ml.inference import base

    if getattr(base, "resource", True) is None and importlib.util.find_spec("resource") is not None:
        import resource

        base.resource = resource


_skip_unusable_model_manager()
from apache_beam.ml.inference.base import (  # noqa: E402
    KeyedModelHandler, ModelHandler, PredictionResult, RunInference)

_restore_resource_module()

from models.clip import ClipConfig, ClipEncoder
from transforms.process_cache import process_model
from schemas.elements import FrameFeatures, VideoFrames
from transforms.files import localize

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "vmm_clip"


def _load_clip(config: ClipConfig) -> ClipEncoder:
    # A checkpoint in a bucket is copied to this machine first (once per machine).
    return ClipEncoder(dataclasses.replace(config, pretrained=localize(config.pretrained))).load()


def clip_for(config: ClipConfig) -> ClipEncoder:
    """The process's CLIP for `config` (RunInference shares it between its DoFn instances anyway;
    this lets it be loaded ahead, see transforms.process_cache.preload)."""
    return process_model("CLIP", config, lambda: _load_clip(config))


class _ProcessClip:
    """The process's CLIP for a config, loaded on first use. RunInference loads its model in its
    DoFn's setup, and Beam sets up a stage's consumers before its producers: fused after the
    decoder, CLIP would load (torch, open_clip, the weights: seconds) before the decode child even
    starts. With this the first videos decode while the worker's warm-up loads CLIP."""

    def __init__(self, config: ClipConfig):
        self._config = config

    def __getattr__(self, name: str):
        return getattr(clip_for(self._config), name)


class ClipModelHandler(ModelHandler[Any, np.ndarray, ClipEncoder]):
    """Batches of videos' keyframes (VideoFrames) and/or titles (str) → L2-normalised float32 embeddings.

    A VideoFrames' inference is (embeddings [n, D], patch embeddings [n, H*W, D] or None, its title's
    embedding [D] or None); each video is one model call (and its title one more), so its numbers
    never depend on what else shared the batch.
    """

    def __init__(self, config: ClipConfig, *, min_batch_size: int = 1, max_batch_size: int = 32,
                 large_model: bool = False, model_copies: int | None = None, with_patches: bool = False):
        # large_model / model_copies: RunInference then holds the model in a separate process per
        # machine (multi_process_shared) that the SDK worker processes call into, instead of one copy
        # per worker process: what a GPU, or a model too big for N copies in RAM, needs.
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size, large_model=large_model,
                         model_copies=model_copies)
        self._config = config
        self._with_patches = with_patches

    def load_model(self) -> ClipEncoder:
        if self._large_model:
            return _load_clip(self._config)  # one per model_copies slot, in RunInference's model process
        return _ProcessClip(self._config)  # type: ignore[return-value]

    def run_inference(self, batch: Sequence[Any], model: ClipEncoder, inference_args=None) -> Iterable[PredictionResult]:
        out: list[Any] = []
        for x in batch:
            if isinstance(x, VideoFrames):
                images = list(x.images)
                if self._with_patches:
                    embs, patches = model.encode_images_and_patches(images)
                else:
                    embs, patches = model.encode_images(images), None
                out.append((embs, patches, model.encode_texts([x.title])[0] if x.title else None))
            elif isinstance(x, str):
                out.append(model.encode_texts([x])[0])
            else:
                raise TypeError("ClipModelHandler takes VideoFrames and titles (str) only")
        # Pixels are not echoed back (they would double the bytes shuffled downstream): a video's
        # example is its frame indices, in the order of its embeddings.
        return [PredictionResult(x if isinstance(x, str) else x.frame_indices, r) for x, r in zip(batch, out)]

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return sum(
            sum(i.nbytes for i in x.images) + len((x.title or "").encode("utf-8")) if isinstance(x, VideoFrames)
            else len(x.encode("utf-8"))
            for x in batch
        )

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


def _route(keyed_result, tag_titles: str):
    video_id, result = keyed_result
    frame_indices, (embs, patches, title) = result.example, result.inference
    if title is not None:
        yield beam.pvalue.TaggedOutput(tag_titles, (video_id, np.asarray(title, np.float32)))
    for j, frame_index in enumerate(frame_indices):
        yield video_id, FrameFeatures(
            frame_index, np.asarray(embs[j], np.float32), None if patches is None else np.asarray(patches[j], np.float32)
        )


class EmbedFrames(beam.PTransform):
    """VideoFrames → {'frames': (id, FrameFeatures), 'titles': (id, emb)}. `titles=False` leaves titles
    out (a dictionary learns from frames only). Also takes {'frames': VideoFrames}."""

    def __init__(self, config: ClipConfig, batch_size: int = 32, large_model: bool = False,
                 with_patches: bool = False, model_copies: int | None = None, titles: bool = True):
        super().__init__()
        self._titles = titles
        self._handler = KeyedModelHandler(
            ClipModelHandler(config, max_batch_size=batch_size, large_model=large_model, model_copies=model_copies,
                             with_patches=with_patches)
        )

    def expand(self, inputs):
        frames = inputs["frames"] if isinstance(inputs, dict) else inputs
        keep_title = self._titles
        embedded = (
            frames
            | "FrameInputs" >> beam.Map(
                lambda f: (f.video_id, f if keep_title or f.title is None else dataclasses.replace(f, title=None)))
            | "Clip" >> RunInference(self._handler, metrics_namespace=METRICS_NAMESPACE)
            | "Route" >> beam.FlatMap(_route, "titles").with_outputs("titles", main="frames")
        )
        return {"frames": embedded.frames, "titles": embedded.titles}
