"""`vmm train-codebook`: learn a visual dictionary (faiss k-means) from videos or from an index.

    python -m pipelines.train_codebook --input videos.jsonl --output dict/ --k 8192 --level frame
    python -m pipelines.train_codebook --input out/ --output dict/ --k 8192 --level frame   # reuse
        an index written with --store-frame-embeddings (no decoding, no CLIP)
    python -m pipelines.train_codebook --input videos.jsonl --output patch_dict/ --k 8192 --level patch

Vectors: frame embeddings (CLIP joint space) or patch embeddings (vision-transformer output
tokens projected into the joint space, see models.clip). The training sample is a deterministic
bottom-n sample over the whole PCollection: every vector gets a key from a hash of
(video_id, frame_index, patch), and the n smallest keys are kept (a combiner, so it is parallel
and bounded: n = k x --points-per-centroid, at most --max-train-vectors). Same inputs, same
sample, same seed, same dictionary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from models import clip as clip_models
from models.codebook import MAX_K, CodebookError, train_codebook
from pipelines.extract import ExtractOptions, build_config, setup_logging
from transforms.decode import DecodeVideos
from transforms.embed import EmbedFrames
from transforms.read_manifest import ReadManifest

logger = logging.getLogger(__name__)


class TrainCodebookOptions(PipelineOptions):
    """Flags of `vmm train-codebook`; --input, --output and the CLIP/decode flags are extract's."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--k", type=int, default=8192, help="dictionary entries (<= 32767: ids are int16)")
        parser.add_argument("--level", default="frame", choices=["frame", "patch"])
        parser.add_argument("--iterations", type=int, default=20, help="k-means iterations")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--points-per-centroid", dest="points_per_centroid", type=int, default=256,
                            help="training vectors sampled per entry (faiss' own default cap)")
        parser.add_argument("--min-points-per-centroid", dest="min_points_per_centroid", type=int, default=39,
                            help="refuse to train with fewer vectors per entry than this")
        parser.add_argument("--max-train-vectors", dest="max_train_vectors", type=int, default=1_000_000)


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    k: int
    level: str
    iterations: int
    seed: int
    sample_size: int
    min_points_per_centroid: int
    clip_model: str
    clip_weights: str
    output: str


def sample_key(video_id: str, frame_index: int, patch: int = -1) -> int:
    """The vector's place in the deterministic bottom-n sample."""
    digest = hashlib.blake2b(f"{video_id}\x00{frame_index}\x00{patch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _frame_vectors(element, level: str):
    video_id, features = element
    if level == "frame":
        yield sample_key(video_id, features.frame_index), features.embedding
    else:
        for j, vec in enumerate(features.patches):
            yield sample_key(video_id, features.frame_index, j), vec


def _index_vectors(row):
    yield sample_key(row["video_id"], row["frame_index"]), np.asarray(row["embedding"], np.float32)


def _train(sampled, spec: TrainSpec):
    """Runs once, on the whole sample: k-means, then the dictionary is written to spec.output."""
    ordered = sorted(sampled, key=lambda kv: kv[0])
    vectors = np.stack([v for _, v in ordered]).astype(np.float32)
    book = train_codebook(
        vectors, spec.k, level=spec.level, clip_model=spec.clip_model, clip_weights=spec.clip_weights,
        iterations=spec.iterations, seed=spec.seed, min_points_per_centroid=spec.min_points_per_centroid,
    )
    book.save(spec.output)
    yield book.info


def _index_source(input_spec: str) -> dict | None:
    """The metadata of an index written with --store-frame-embeddings, if --input is one."""
    frames = os.path.join(input_spec, "frames")
    if not os.path.isdir(frames):
        return None
    files = sorted(f for f in os.listdir(frames) if f.endswith(".parquet"))
    if not files:
        return None
    schema = pq.read_schema(os.path.join(frames, files[0]))
    if "embedding" not in schema.names:
        raise ValueError(f"{input_spec} is an index without frame embeddings: extract it with --store-frame-embeddings")
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    return {"pattern": os.path.join(frames, "*.parquet"), "clip_model": meta["vmm.clip_model"],
            "clip_weights": meta["vmm.clip_weights"]}


def run(argv: list[str] | None = None) -> int:
    options = PipelineOptions(argv)
    opts = options.view_as(ExtractOptions)
    t = options.view_as(TrainCodebookOptions)
    try:
        if not 2 <= t.k <= MAX_K:
            raise CodebookError(f"--k must be between 2 and {MAX_K} (ids are stored as int16), got {t.k}")
        if not opts.output:
            raise ValueError("--output (the dictionary directory) is required")
        index = _index_source(opts.input) if opts.input and os.path.isdir(opts.input) else None
        if index is not None and t.level == "patch":
            raise ValueError("an index stores no patch embeddings: train --level patch from videos")
        if index is None:
            config = build_config(options)
            model, weights = config.clip.model_name, config.clip_weights
            if t.level == "patch" and not clip_models.has_patch_tokens(model):
                raise ValueError(f"--level patch needs a vision transformer; {model} has no patch tokens")
        else:
            model, weights = index["clip_model"], index["clip_weights"]
    except (ValueError, CodebookError, clip_models.WeightsUnavailable) as e:
        print(f"vmm train-codebook: {e}", file=sys.stderr)
        return 2
    spec = TrainSpec(
        k=t.k, level=t.level, iterations=t.iterations, seed=t.seed,
        sample_size=min(t.k * t.points_per_centroid, t.max_train_vectors),
        min_points_per_centroid=t.min_points_per_centroid, clip_model=model, clip_weights=weights,
        output=opts.output,
    )
    p = beam.Pipeline(options=options)
    if index is not None:
        vectors = (
            p
            | "ReadIndex" >> beam.io.ReadFromParquet(index["pattern"], columns=["video_id", "frame_index", "embedding"])
            | "Vectors" >> beam.FlatMap(_index_vectors)
        )
    else:
        manifest = p | "ReadManifest" >> ReadManifest(config.manifest, list(config.manifest_files))
        decoded = manifest["requests"] | "DecodeVideos" >> DecodeVideos(config.decode, config.progress)
        embedded = decoded["frames"] | "EmbedFrames" >> EmbedFrames(
            config.clip, batch_size=config.clip_batch_size, with_patches=t.level == "patch",
            titles=False,  # a dictionary learns from frames only
        )
        vectors = embedded["frames"] | "Vectors" >> beam.FlatMap(_frame_vectors, t.level)
    (
        vectors
        | "Sample" >> beam.combiners.Top.Of(spec.sample_size, key=lambda kv: kv[0], reverse=True)
        | "KMeans" >> beam.FlatMap(_train, spec)
    )
    try:
        p.run().wait_until_finish()
    except Exception as e:  # noqa: BLE001 -- runners wrap worker errors; surface a refusal cleanly
        if "CodebookError" in repr(e) or isinstance(e, CodebookError):
            print(f"vmm train-codebook: {e}", file=sys.stderr)
            return 2
        raise
    with open(os.path.join(spec.output, "codebook.json")) as f:
        info = json.load(f)
    print(f"visual dictionary {spec.output}: k={info['k']} dim={info['dim']} level={info['level']} "
          f"train_vectors={info['train_vectors']} id={info['sha256'][:16]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    from pipelines.process_exit import exit_process

    exit_process(main)
