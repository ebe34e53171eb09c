"""AssembleRows: per-video join of decode facts, frame embeddings and title embedding → table rows.

Consumes VideoInfo, (video_id, FrameFeatures) and (video_id, title_emb).
Produces `videos` rows and `frames` rows as dicts shaped by `schemas.forward_index`, and
`errors` rows from ErrorRecords. The numeric work lives in `models.pooling`.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np

from models.pooling import cosine, pool_video_embedding, topic_coherence
from schemas.elements import ErrorRecord, StageError, VideoInfo

FRAMES = "frames"
_NAMESPACE = "vmm"


@dataclasses.dataclass(frozen=True)
class AssembleConfig:
    embedding_dtype: str = "float16"
    store_frame_embeddings: bool = False
    passthrough_columns: tuple[str, ...] = ()


def stage_error_row(e: StageError) -> dict:
    return {"stage": e.stage, "error_type": e.error_type, "message": e.message}


def error_row(e: ErrorRecord) -> dict:
    return dataclasses.asdict(e)


def video_row(info: VideoInfo, frame_embs: np.ndarray, title_emb: np.ndarray | None, config: AssembleConfig) -> dict:
    """The `videos` row of one decoded video, from its keyframe embeddings in keyframe order."""
    req = info.request
    video_vec = pool_video_embedding(frame_embs)
    coherence = topic_coherence(frame_embs)
    row = {
        "video_id": req.video_id,
        "uri": req.uri,
        "title": req.title,
        "tags": list(req.tags) if req.tags is not None else None,
    }
    extra = dict(req.extra)
    for column in config.passthrough_columns:
        row[column] = extra.get(column)
    row.update(
        duration_s=info.duration_s,
        fps=info.fps,
        width=info.width,
        height=info.height,
        video_codec=info.video_codec,
        has_audio=info.has_audio,
        num_keyframes=len(info.keyframes),
        embedding=video_vec.astype(config.embedding_dtype),
        topic_coherence=coherence,
        title_visual_similarity=cosine(title_emb, video_vec) if title_emb is not None else None,
        stage_errors=[stage_error_row(n) for n in req.notes],
    )
    return row


class _AssembleFn(beam.DoFn):
    def __init__(self, config: AssembleConfig):
        self._config = config
        self._videos = beam.metrics.Metrics.counter(_NAMESPACE, "videos_written")

    def process(self, element):
        video_id, grouped = element
        infos = list(grouped["info"])
        if not infos:
            # Frames without a video would mean the decoder emitted for a video it then dropped.
            raise RuntimeError(f"video {video_id}: embeddings arrived for a video that was not decoded")
        if len(infos) > 1:
            raise RuntimeError(f"video {video_id}: decoded {len(infos)} times; ids must be unique by now")
        info: VideoInfo = infos[0]
        by_index = {f.frame_index: f for f in grouped["frames"]}
        missing = [k.frame_index for k in info.keyframes if k.frame_index not in by_index]
        if missing:
            raise RuntimeError(f"video {video_id}: no embedding for keyframes {missing}")
        features = [by_index[k.frame_index] for k in info.keyframes]
        embs = np.stack([f.embedding for f in features])
        titles = list(grouped["title"])
        yield video_row(info, embs, titles[0] if titles else None, self._config)
        self._videos.inc()
        for meta, feat in zip(info.keyframes, features):
            frame = {
                "video_id": video_id,
                "frame_index": meta.frame_index,
                "timestamp_s": meta.timestamp_s,
                "reason": meta.reason,
                "token": feat.token,
                "patch_tokens": feat.patch_tokens.astype(np.int16) if feat.patch_tokens is not None else None,
            }
            if self._config.store_frame_embeddings:
                frame["embedding"] = feat.embedding.astype(self._config.embedding_dtype)
            yield beam.pvalue.TaggedOutput(FRAMES, frame)


class AssembleRows(beam.PTransform):
    """{'videos': VideoInfo, 'frames': (id, FrameFeatures), 'titles': (id, emb)} → {'videos', 'frames'} rows."""

    def __init__(self, config: AssembleConfig):
        super().__init__()
        self._config = config

    def expand(self, inputs):
        infos = inputs["videos"] | "KeyInfo" >> beam.Map(lambda v: (v.request.video_id, v))
        joined = {"info": infos, "frames": inputs["frames"], "title": inputs["titles"]} | "JoinByVideo" >> beam.CoGroupByKey()
        rows = joined | "Rows" >> beam.ParDo(_AssembleFn(self._config)).with_outputs(FRAMES, main="videos")
        return {"videos": rows.videos, "frames": rows[FRAMES]}
