"""EmbedFrames: keyframes and titles → CLIP embeddings, through Beam's RunInference.

Consumes KeyframeImage (uint8 frames at the model's input size) and VideoInfo (for titles).
Produces (video_id, FrameFeatures) per keyframe -- with the patch embeddings [H*W, D] when
`with_patches` -- and (video_id, float32 [D]) per title.
Frames and titles share one RunInference step, so each worker process holds one copy of the model.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from models.clip import ClipConfig, ClipEncoder
from schemas.elements import FrameFeatures, VideoInfo

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "vmm_clip"
_FRAME, _TITLE = "frame", "title"


class ClipModelHandler(ModelHandler[Any, np.ndarray, ClipEncoder]):
    """Batches of frames (uint8 arrays) and/or titles (str) → L2-normalised float32 embeddings.

    With `with_patches`, a frame's inference is (embedding [D], patch embeddings [H*W, D]).
    """

    def __init__(self, config: ClipConfig, *, min_batch_size: int = 1, max_batch_size: int = 32,
                 large_model: bool = False, with_patches: bool = False):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size, large_model=large_model)
        self._config = config
        self._with_patches = with_patches

    def load_model(self) -> ClipEncoder:
        return ClipEncoder(self._config).load()

    def run_inference(self, batch: Sequence[Any], model: ClipEncoder, inference_args=None) -> Iterable[PredictionResult]:
        out: list[np.ndarray | None] = [None] * len(batch)
        image_pos = [i for i, x in enumerate(batch) if isinstance(x, np.ndarray)]
        text_pos = [i for i, x in enumerate(batch) if isinstance(x, str)]
        if len(image_pos) + len(text_pos) != len(batch):
            raise TypeError("ClipModelHandler takes uint8 frames (numpy arrays) and titles (str) only")
        if image_pos:
            images = [batch[i] for i in image_pos]
            if self._with_patches:
                embs, patches = model.encode_images_and_patches(images)
                for i, emb, patch in zip(image_pos, embs, patches):
                    out[i] = (emb, patch)
            else:
                for i, emb in zip(image_pos, model.encode_images(images)):
                    out[i] = emb
        if text_pos:
            for i, emb in zip(text_pos, model.encode_texts([batch[i] for i in text_pos])):
                out[i] = emb
        # Frames are not echoed back: the example would double the bytes shuffled downstream.
        return [PredictionResult(x if isinstance(x, str) else None, emb) for x, emb in zip(batch, out)]

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return sum(x.nbytes if isinstance(x, np.ndarray) else len(x.encode("utf-8")) for x in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


def _title_input(info: VideoInfo):
    title = info.request.title
    if title and title.strip():
        yield (_TITLE, info.request.video_id, -1), title.strip()


def _route(keyed_result, tag_titles: str):
    (kind, video_id, frame_index), result = keyed_result
    if kind == _TITLE:
        yield beam.pvalue.TaggedOutput(tag_titles, (video_id, np.asarray(result.inference, np.float32)))
    elif isinstance(result.inference, tuple):
        emb, patches = result.inference
        yield video_id, FrameFeatures(frame_index, np.asarray(emb, np.float32), np.asarray(patches, np.float32))
    else:
        yield video_id, FrameFeatures(frame_index, np.asarray(result.inference, np.float32))


class EmbedFrames(beam.PTransform):
    """{'frames': KeyframeImage, 'videos': VideoInfo} → {'frames': (id, FrameFeatures), 'titles': (id, emb)}."""

    def __init__(self, config: ClipConfig, batch_size: int = 32, large_model: bool = False,
                 with_patches: bool = False):
        super().__init__()
        self._handler = KeyedModelHandler(
            ClipModelHandler(config, max_batch_size=batch_size, large_model=large_model, with_patches=with_patches)
        )

    def expand(self, inputs):
        frames = inputs["frames"] | "FrameInputs" >> beam.Map(
            lambda f: ((_FRAME, f.video_id, f.frame_index), f.image)
        )
        titles = inputs["videos"] | "TitleInputs" >> beam.FlatMap(_title_input)
        embedded = (
            (frames, titles)
            | "FramesAndTitles" >> beam.Flatten()
            | "Clip" >> RunInference(self._handler, metrics_namespace=METRICS_NAMESPACE)
            | "Route" >> beam.FlatMap(_route, "titles").with_outputs("titles", main="frames")
        )
        return {"frames": embedded.frames, "titles": embedded.titles}
