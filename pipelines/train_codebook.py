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

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from models import clip as clip_models
from models.codebook import MAX_K, train_codebook
from models.errors import CannotStart
from pipelines.options import (
    CLIP, DECODE, RUN, IndexSource, beam_flags, check, main_of, new_pipeline, read_index, run_command, starting)
from schemas.index import IndexReader, file_embeddings
from transforms.decode import DecodeVideos
from transforms.embed import EmbedFrames
from transforms.read_manifest import ReadManifest, resolve_input

logger = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    """The flags of `vmm train-codebook` (see pipelines.options for the shared groups)."""
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", help="videos (a manifest, directory or glob, as vmm extract takes), or a forward "
                                    "index written with --store-frame-embeddings (no decoding, no CLIP; required)")
    io.add_argument("--output", help="the dictionary directory to write (required)")
    kmeans = parser.add_argument_group("dictionary")
    kmeans.add_argument("--k", type=int, default=8192, help=f"dictionary entries (<= {MAX_K}: ids are int16)")
    kmeans.add_argument("--level", default="frame", choices=["frame", "patch"],
                        help="learn from frame embeddings or from the vision transformer's patch tokens")
    kmeans.add_argument("--iterations", type=int, default=20, help="k-means iterations")
    kmeans.add_argument("--seed", type=int, default=0, help="k-means seed")
    kmeans.add_argument("--points-per-centroid", dest="points_per_centroid", type=int, default=256,
                        help="training vectors sampled per entry (as faiss caps them)")
    kmeans.add_argument("--min-points-per-centroid", dest="min_points_per_centroid", type=int, default=39,
                        help="refuse to train with fewer vectors per entry than this")
    kmeans.add_argument("--max-train-vectors", dest="max_train_vectors", type=int, default=1_000_000,
                        help="training sample size at most")
    CLIP.add_arguments(parser)
    DECODE.add_arguments(parser)
    RUN.add_arguments(parser)


class TrainCodebookOptions(PipelineOptions):
    """`vmm train-codebook`'s flags for Beam's parser: `options.view_as(TrainCodebookOptions)`."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_arguments(beam_flags(parser))


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


def _index_vectors(path: str):
    """One committed frames shard's vectors, whatever encoding it holds (schemas.index)."""
    rows, vectors = file_embeddings(path, ["video_id", "frame_index"])
    for video_id, frame_index, vector in zip(rows.column("video_id").to_pylist(),
                                             rows.column("frame_index").to_pylist(), vectors):
        yield sample_key(video_id, frame_index), vector


_SAMPLED = beam.metrics.Metrics.counter("vmm", "codebook_sample_vectors")
_TRAINED = beam.metrics.Metrics.counter("vmm", "codebooks_trained")


def _train(sampled, spec: TrainSpec):
    """Runs once, on the whole sample: k-means, then the dictionary is written to spec.output.

    A sample too small for K x --min-points-per-centroid is not trained; the launcher reads its size
    (the counter) and says which K the data supports (`refusal`), without a worker traceback."""
    ordered = sorted(sampled, key=lambda kv: kv[0])
    _SAMPLED.inc(len(ordered))
    if len(ordered) < spec.k * spec.min_points_per_centroid:
        return
    vectors = np.stack([v for _, v in ordered]).astype(np.float32)
    book = train_codebook(
        vectors, spec.k, level=spec.level, clip_model=spec.clip_model, clip_weights=spec.clip_weights,
        iterations=spec.iterations, seed=spec.seed, min_points_per_centroid=spec.min_points_per_centroid,
    )
    book.save(spec.output)
    _TRAINED.inc()
    yield book.info


def refusal(k: int, min_points_per_centroid: int, sampled: int) -> str:
    """Why K cannot be trained on `sampled` vectors, and the largest K that can."""
    needed = k * min_points_per_centroid
    largest = sampled // min_points_per_centroid
    advice = (f"the largest K the data supports is {largest}" if largest >= 2 else
              "the data is too small for any dictionary (K >= 2) at that setting")
    return (f"--k {k} needs at least {k} x --min-points-per-centroid {min_points_per_centroid} = {needed} "
            f"training vectors, the input gave {sampled}: {advice} (or lower --min-points-per-centroid)")


def _index_source(input_spec: str) -> IndexSource | None:
    """The index at --input (committed runs, any filesystem), if it is one (a written index needs
    --store-frame-embeddings)."""
    if not IndexReader(input_spec).runs:
        return None
    index = read_index(input_spec)
    if not index.frame_embeddings:
        raise ValueError(f"{input_spec} is an index without frame embeddings: extract it with --store-frame-embeddings")
    return index


def execute(args, options: PipelineOptions) -> int:
    """`vmm train-codebook` with its flags parsed (see pipelines.options.run_command)."""
    with starting():
        if not 2 <= args.k <= MAX_K:
            raise ValueError(f"--k must be between 2 and {MAX_K} (ids are stored as int16), got {args.k}")
        check(args.min_points_per_centroid >= 1, "--min-points-per-centroid", ">= 1", args.min_points_per_centroid)
        if not args.output:
            raise ValueError("--output (the dictionary directory) is required")
        if not args.input:
            raise ValueError("--input is required: videos (a manifest, directory or glob) or an index")
        index = _index_source(args.input)
        if index is not None and args.level == "patch":
            raise ValueError("an index stores no patch embeddings: train --level patch from videos")
        if index is None:
            spec_in, manifest_files = resolve_input(args.input)
            run = RUN.to_config(args, options)
            clip = CLIP.to_config(args, run)
            decode = DECODE.to_config(args, short_side=clip.image_size)
            model, weights = clip.config.model_name, clip.weights
            if args.level == "patch" and not clip_models.has_patch_tokens(model):
                raise ValueError(f"--level patch needs a vision transformer; {model} has no patch tokens")
        else:
            model, weights = index.clip_model, index.clip_weights
    spec = TrainSpec(
        k=args.k, level=args.level, iterations=args.iterations, seed=args.seed,
        sample_size=min(args.k * args.points_per_centroid, args.max_train_vectors),
        min_points_per_centroid=args.min_points_per_centroid, clip_model=model, clip_weights=weights,
        output=args.output,
    )
    p = new_pipeline(options)
    if index is not None:
        vectors = (
            p
            | "IndexFiles" >> beam.Create(index.files["frames"])
            | "Vectors" >> beam.FlatMap(_index_vectors)
        )
    else:
        manifest = p | "ReadManifest" >> ReadManifest(spec_in, list(manifest_files))
        decoded = manifest["requests"] | "DecodeVideos" >> DecodeVideos(
            decode, run.progress, isolate=args.isolate_decode, plugins=run.plugins)
        embedded = decoded["frames"] | "EmbedFrames" >> EmbedFrames(
            clip.config, batch_size=clip.batch_size, with_patches=args.level == "patch",
            titles=False,  # a dictionary learns from frames only
        )
        vectors = embedded["frames"] | "Vectors" >> beam.FlatMap(_frame_vectors, args.level)
    (
        vectors
        | "Sample" >> beam.combiners.Top.Of(spec.sample_size, key=lambda kv: kv[0], reverse=True)
        | "KMeans" >> beam.FlatMap(_train, spec)
    )
    result = p.run()
    result.wait_until_finish()
    if not _counter(result, _TRAINED):
        raise CannotStart(refusal(spec.k, spec.min_points_per_centroid, _counter(result, _SAMPLED)))
    with FileSystems.open(FileSystems.join(spec.output, "codebook.json")) as f:
        info = json.load(f)
    print(f"visual dictionary {spec.output}: k={info['k']} dim={info['dim']} level={info['level']} "
          f"train_vectors={info['train_vectors']} id={info['sha256'][:16]}")
    return 0


def _counter(result, counter) -> int:
    found = result.metrics().query(MetricsFilter().with_name(counter.metric_name.name))["counters"]
    return sum(c.committed or 0 for c in found)


def run(argv: list[str]) -> int:
    """`vmm train-codebook ARGV` in this process (logging left as the caller set it)."""
    from pipelines.cli import COMMANDS

    return run_command(COMMANDS["train-codebook"], argv)


main = main_of("train-codebook")


if __name__ == "__main__":
    from pipelines.process_exit import exit_process

    exit_process(main)
