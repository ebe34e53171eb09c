"""AssembleRows: per-video join of everything the stages learnt → table rows.

Consumes VideoInfo, (video_id, FrameFeatures), (video_id, title_emb), (video_id, VideoOcr) and
(video_id, VideoAsr).
Produces `videos`, `frames` and `asr_segments` rows as dicts shaped by `schemas.forward_index`,
and `errors` rows from ErrorRecords. The numeric work lives in `models.pooling`.
A video's row is written once its decode facts and keyframe embeddings are in; OCR and ASR add
columns, and their failures are stage errors on the row. Where a video has both, its OCR lines are
labelled again with the ASR segments as evidence for subtitle vs slide text (`with_speech`; OCR is
read before the speech is known). A transcript whose video then failed to
decode (its audio is transcribed while its frames decode) is dropped: the video is an `errors` row.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np

from models.ocr_domains import DomainConfig
from models.pooling import cosine, pool_video_embedding, topic_coherence
from schemas import forward_index as fi
from schemas.elements import ErrorRecord, StageError, VideoAsr, VideoInfo, VideoOcr
from transforms.ocr import label_with_speech

FRAMES = "frames"
ASR_SEGMENTS = "asr_segments"
_NAMESPACE = "vmm"


@dataclasses.dataclass(frozen=True)
class AssembleConfig:
    embedding_dtype: str = fi.DEFAULT_EMBEDDING_DTYPE
    store_frame_embeddings: bool = False
    passthrough_columns: tuple[str, ...] = ()
    domains: DomainConfig = DomainConfig()  # ReadText's: OCR lines are labelled again with the speech


def stage_error_row(e: StageError) -> dict:
    return {"stage": e.stage, "error_type": e.error_type, "message": e.message}


def error_row(e: ErrorRecord) -> dict:
    return dataclasses.asdict(e)


def _lines(texts) -> str | None:
    return "\n".join(texts) if texts else None


def ocr_columns(ocr: VideoOcr | None) -> dict:
    if ocr is None or all(lines is None for _, lines in ocr.frames):
        return {"ocr_subtitle_text": None, "ocr_overlay_text": None, "ocr_scene_text": None}
    return {
        "ocr_subtitle_text": _lines(ocr.subtitle_lines),
        "ocr_overlay_text": _lines(ocr.overlay_texts),
        "ocr_scene_text": _lines(ocr.scene_texts),
    }


def asr_columns(asr: VideoAsr | None) -> dict:
    result = asr.result if asr is not None else None
    if result is None:
        return {"asr_text": None, "asr_language": None, "asr_language_probability": None, "speech_seconds": None}
    if result.withheld is not None:
        # Speech the model cannot transcribe (an UnsupportedLanguage stage error): how much, but no text.
        return {"asr_text": None, "asr_language": None, "asr_language_probability": None,
                "speech_seconds": result.speech_seconds}
    return {
        "asr_text": result.text,
        "asr_language": result.language,
        "asr_language_probability": result.language_probability,
        "speech_seconds": result.speech_seconds,
    }


def segment_rows(video_id: str, asr: VideoAsr | None) -> list[dict]:
    if asr is None or asr.result is None:
        return []
    return [
        {
            "video_id": video_id,
            "segment_index": i,
            "start_s": seg.start_s,
            "end_s": seg.end_s,
            "text": seg.text,
            "avg_logprob": seg.avg_logprob,
            "no_speech_prob": seg.no_speech_prob,
        }
        for i, seg in enumerate(asr.result.segments)
    ]


def ocr_item_row(item) -> dict:
    return {"text": item.text, "score": item.score, "box": np.asarray(item.box, np.float32), "domain": item.domain}


def video_row(info: VideoInfo, frame_embs: np.ndarray, title_emb: np.ndarray | None, config: AssembleConfig,
              ocr: VideoOcr | None = None, asr: VideoAsr | None = None) -> dict:
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
        **fi.encode_embedding(video_vec, config.embedding_dtype),
        topic_coherence=coherence,
        title_visual_similarity=cosine(title_emb, video_vec) if title_emb is not None else None,
        **ocr_columns(ocr),
        **asr_columns(asr),
    )
    errors = list(req.notes) + list(info.notes)
    if ocr is not None:
        errors += ocr.errors
    if asr is not None and asr.error is not None:
        errors.append(asr.error)
    row["stage_errors"] = [stage_error_row(e) for e in errors]
    return row


def with_speech(info: VideoInfo, ocr: VideoOcr | None, asr: VideoAsr | None,
                domains: DomainConfig = DomainConfig()) -> VideoOcr | None:
    """The video's OCR result with its speech as evidence for subtitle vs slide text (captions follow
    speech), when it has both; else `ocr` as it is."""
    segments = asr.result.segments if asr is not None and asr.result is not None else ()
    if ocr is None or not segments:
        return ocr
    times = {m.frame_index: m.timestamp_s for m in (*info.keyframes, *info.text_frames)}
    return label_with_speech(ocr, times, info.width, info.height, segments, domains)


def _one(values, what: str, video_id: str):
    values = list(values)
    if len(values) > 1:
        raise RuntimeError(f"video {video_id}: {len(values)} {what} results; expected at most one")
    return values[0] if values else None


class _AssembleFn(beam.DoFn):
    def __init__(self, config: AssembleConfig):
        self._config = config
        self._videos = beam.metrics.Metrics.counter(_NAMESPACE, "videos_written")
        self._dropped = beam.metrics.Metrics.counter(_NAMESPACE, "asr_of_failed_videos")

    def process(self, element):
        video_id, grouped = element
        infos = list(grouped["info"])
        if not infos:
            if not any(list(grouped.get(name, ())) for name in ("frames", "title", "ocr")):
                # DecodeVideos hands the audio to ASR before the frames decode; this video then failed
                # to decode and is an `errors` row. Its transcript has no row to go to.
                self._dropped.inc()
                return
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
        title = _one(grouped["title"], "title", video_id)
        ocr = _one(grouped.get("ocr", ()), "OCR", video_id)
        asr = _one(grouped.get("asr", ()), "ASR", video_id)
        ocr = with_speech(info, ocr, asr, self._config.domains)
        yield video_row(info, embs, title, self._config, ocr, asr)
        self._videos.inc()
        ocr_by_index = dict(ocr.frames) if ocr is not None else {}
        rows = [(meta, feat) for meta, feat in zip(info.keyframes, features)]
        rows += [(meta, by_index.get(meta.frame_index)) for meta in info.text_frames]
        rows.sort(key=lambda r: r[0].frame_index)
        for meta, feat in rows:
            lines = ocr_by_index.get(meta.frame_index)
            frame = {
                "video_id": video_id,
                "frame_index": meta.frame_index,
                "timestamp_s": meta.timestamp_s,
                "reason": meta.reason,
                "token": feat.token if feat is not None else None,
                "patch_tokens": feat.patch_tokens.astype(np.int16)
                if feat is not None and feat.patch_tokens is not None else None,
                "ocr": [ocr_item_row(x) for x in lines] if lines is not None else None,
            }
            if self._config.store_frame_embeddings:
                if feat is None:
                    raise RuntimeError(f"video {video_id}: frame {meta.frame_index} has no embedding to store")
                frame.update(fi.encode_embedding(feat.embedding, self._config.embedding_dtype))
            yield beam.pvalue.TaggedOutput(FRAMES, frame)
        for segment in segment_rows(video_id, asr):
            yield beam.pvalue.TaggedOutput(ASR_SEGMENTS, segment)


class AssembleRows(beam.PTransform):
    """{'videos': VideoInfo, 'frames': (id, FrameFeatures), 'titles': (id, emb), 'ocr': (id, VideoOcr),
    'asr': (id, VideoAsr)} → {'videos', 'frames', 'asr_segments'} rows ('ocr' and 'asr' optional)."""

    def __init__(self, config: AssembleConfig):
        super().__init__()
        self._config = config

    def expand(self, inputs):
        infos = inputs["videos"] | "KeyInfo" >> beam.Map(lambda v: (v.request.video_id, v))
        parts = {"info": infos, "frames": inputs["frames"], "title": inputs["titles"]}
        for name in ("ocr", "asr"):
            if name in inputs:
                parts[name] = inputs[name]
        joined = parts | "JoinByVideo" >> beam.CoGroupByKey()
        rows = joined | "Rows" >> beam.ParDo(_AssembleFn(self._config)).with_outputs(FRAMES, ASR_SEGMENTS, main="videos")
        return {"videos": rows.videos, "frames": rows[FRAMES], "asr_segments": rows[ASR_SEGMENTS]}
