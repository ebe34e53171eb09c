"""The CLIP stage inside a Beam pipeline (transforms.embed.EmbedFrames) vs a bare batched open_clip loop.

    python -m bench.bench_clip [--clip-model ViT-B-32] [--clip-pretrained none] [--batch-size 32]
                               [--torch-threads 0] [--repeat 3] [--copies 1] [--sides ...] [--profile]

Inputs: the keyframes of every video in --media plus the generated sample, collected with
models.decode.decode_keyframes at the model's input size, as the pipeline does (not timed).

Sides (--sides picks them; `bare` and `pipeline` are required, the default runs all four):
  bare             create_model (random init seeded as models.clip does, or a local checkpoint) +
                   image_transform(is_train=False); then batches of --batch-size frames: PIL image ->
                   transform -> torch.stack -> encode_image(normalize=True) under torch.no_grad.
  bare-per-video   the same loop, but one model call per video (its keyframes, at most --batch-size a
                   call): the call sizes the pipeline's CLIP stage uses. Separates the cost of that
                   batching choice from Beam's own cost.
  pipeline         DirectRunner, in memory, one worker: beam.Create(the frames, as the element type
                   EmbedFrames consumes) | EmbedFrames(ClipConfig, batch_size) | collect. Timed from
                   building the pipeline to the end of wait_until_finish.
  pipeline-memory  the same, but the frames come from beam.Create(indices) | Map(index -> frames held in
                   this process), as an upstream stage would hand them over, instead of being pickled into
                   the pipeline graph (beam.Create cloudpickles its values and bz2-compresses them, level 9).

Each side loads its model once per round. The pipeline's load time is RunInference's own metric
(load_model_latency_milli_secs: ClipEncoder.load, which also builds the tokenizer). Headline overhead =
(pipeline - bare) / bare with the model load EXCLUDED on both sides; the table also has it with the load
included, and CPU time. Sides alternate order each round; figures are medians over --repeat rounds.
Before any timing, one untimed warm-up builds a model, embeds two frames and runs a trivial pipeline,
so no side pays first-use costs (imports, allocator, kernels, Beam's lazily imported runner) alone.
Model-call sizes inside the pipeline are observed by wrapping ClipEncoder.encode_images (a counter;
DirectRunner in memory runs in this process). All sides' embeddings must agree with the bare loop's
(max |diff| < 1e-4) or the benchmark exits 1.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import logging
import os
import pstats
import statistics
import sys
import time

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from bench import _common
from bench._common import add_input_args, input_videos, load_average, machine_line, print_table
from models import clip as clip_models
from models.decode import DecodeConfig, decode_keyframes
from schemas import elements as schema_elements
from transforms.embed import METRICS_NAMESPACE, EmbedFrames

TOLERANCE = 1e-4
SIDES = ("bare", "bare-per-video", "pipeline", "pipeline-memory")


def collect_keyframes(videos, short_side: int, copies: int):
    """[(video_id, frame_index, uint8 image)] of every input video (decode errors are skipped)."""
    config = DecodeConfig(short_side=short_side)
    frames = []
    for name, path in videos:
        try:
            decoded = decode_keyframes(path, config)
        except Exception as e:
            print(f"skip {name}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        for copy in range(copies):
            vid = name if copies == 1 else f"{name}#{copy}"
            frames += [(vid, c.frame_index, img) for c, img in decoded.keyframes]
    return frames


def _by_video(frames):
    groups: dict[str, list] = {}
    for v, i, img in frames:
        groups.setdefault(v, []).append((i, img))
    return groups


# ---- the bare loop: what a user would write with open_clip alone -----------------------------------

def bare_load(model_name: str, pretrained: str):
    import open_clip
    import torch

    open_clip.add_model_config(os.path.join(os.path.dirname(clip_models.__file__), "clip_configs"))
    if pretrained.lower() == "none":
        torch.manual_seed(0)  # the seed models.clip uses for random init, so both sides hold the same model
        model = open_clip.create_model(model_name, pretrained=None)
    else:
        model = open_clip.create_model(model_name, pretrained=pretrained)
    model.eval()
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    preprocess = open_clip.image_transform(
        model.visual.image_size, is_train=False, mean=cfg.get("mean"), std=cfg.get("std"),
        interpolation=cfg.get("interpolation"), resize_mode=cfg.get("resize_mode"),
    )
    return model, preprocess


def bare_embed(model, preprocess, images, batch_sizes) -> np.ndarray:
    """Embeds `images` in consecutive batches of the given sizes."""
    import torch
    from PIL import Image

    out, start = [], 0
    with torch.no_grad():
        for size in batch_sizes:
            x = torch.stack([preprocess(Image.fromarray(img)) for img in images[start:start + size]])
            out.append(model.encode_image(x, normalize=True).float().numpy())
            start += size
    assert start == len(images)
    return np.concatenate(out)


def fixed_batches(n: int, batch_size: int) -> list[int]:
    return [min(batch_size, n - i) for i in range(0, n, batch_size)]


def run_bare(args, frames, per_video: bool):
    if per_video:  # one call per video (split at --batch-size), in video order
        ordered = [(v, i, img) for v, items in _by_video(frames).items() for i, img in items]
        sizes = [s for items in _by_video(frames).values() for s in fixed_batches(len(items), args.batch_size)]
    else:
        ordered, sizes = frames, fixed_batches(len(frames), args.batch_size)
    c0 = time.process_time()
    t0 = time.perf_counter()
    model, preprocess = bare_load(args.clip_model, args.clip_pretrained)
    t1 = time.perf_counter()
    emb = bare_embed(model, preprocess, [img for _, _, img in ordered], sizes)
    t2 = time.perf_counter()
    cpu = time.process_time() - c0
    del model
    keyed = {(v, i): e for (v, i, _), e in zip(ordered, emb)}
    stats = dict(load=t1 - t0, work=t2 - t1, total=t2 - t0, cpu=cpu, infer=t2 - t1, build=float("nan"),
                 batches=len(sizes), calls=sizes)
    return stats, keyed


# ---- the same frames through the pipeline's CLIP stage --------------------------------------------

def make_elements(frames):
    """The frames as the element type EmbedFrames consumes: one VideoFrames per video (current schema)
    or one KeyframeImage per frame (earlier schema)."""
    if hasattr(schema_elements, "VideoFrames"):
        return [schema_elements.VideoFrames(v, tuple(i for i, _ in items), tuple(img for _, img in items))
                for v, items in _by_video(frames).items()]
    return [schema_elements.KeyframeImage(v, i, img) for v, i, img in frames]


def _frame_outputs(video_id, x):
    """(video_id, frame_index, embedding) from EmbedFrames' frame output (FrameFeatures or (index, emb))."""
    if hasattr(x, "embedding"):
        return video_id, x.frame_index, np.asarray(x.embedding)
    return video_id, x[0], np.asarray(x[1])


def _options():
    return PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"])


def warm_up_beam():
    """An untimed trivial pipeline: Beam imports its runner machinery lazily on the first run."""
    with beam.Pipeline(options=_options()) as p:
        p | beam.Create([1, 2]) | beam.Map(lambda x: x)


class _CallSizes:
    """Records the number of images per ClipEncoder.encode_images call while active (in-process runner)."""

    def __enter__(self):
        self.sizes = []
        self._orig = clip_models.ClipEncoder.encode_images
        orig, sizes = self._orig, self.sizes

        def encode_images(encoder, images):
            sizes.append(len(images))
            return orig(encoder, images)

        clip_models.ClipEncoder.encode_images = encode_images
        return self

    def __exit__(self, *exc):
        clip_models.ClipEncoder.encode_images = self._orig
        return False


def run_pipeline(args, frames, clip_config, source: str):
    elements = make_elements(frames)
    _common.SINK.clear()
    _common.FRAMES[:] = elements if source == "memory" else []
    with _CallSizes() as calls:
        c0 = time.process_time()
        t0 = time.perf_counter()
        p = beam.Pipeline(options=_options())
        if source == "create":
            frames_pcoll = p | "Frames" >> beam.Create(elements)
        else:
            frames_pcoll = (p | "Indices" >> beam.Create(range(len(elements)))
                            | "Frames" >> beam.Map(_common.frame_at))
        inputs = {"frames": frames_pcoll, "videos": p | "Videos" >> beam.Create([])}
        out = inputs | "EmbedFrames" >> EmbedFrames(clip_config, batch_size=args.batch_size)
        out["frames"] | "Collect" >> beam.Map(_common.collect)
        t1 = time.perf_counter()
        result = p.run()
        result.wait_until_finish()
        t2 = time.perf_counter()
        cpu = time.process_time() - c0

    dists = {r.key.metric.name: r.committed
             for r in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["distributions"]}
    load = dists.get("load_model_latency_milli_secs")
    batch = dists.get("inference_request_batch_size")
    infer = dists.get("inference_batch_latency_micro_secs")
    keyed = {(v, i): e for v, i, e in (_frame_outputs(*kv) for kv in _common.SINK)}
    _common.SINK.clear()
    _common.FRAMES[:] = []
    stats = dict(
        build=t1 - t0, total=t2 - t0, cpu=cpu, load=load.sum / 1000.0 if load else float("nan"),
        batches=batch.count if batch else 0, elements_per_batch=batch.sum / batch.count if batch else float("nan"),
        infer=infer.sum / 1e6 if infer else float("nan"), calls=calls.sizes,
    )
    stats["work"] = stats["total"] - stats["load"]
    return stats, keyed


# ---- the report ----------------------------------------------------------------------------------

def _sides(text: str) -> list[str]:
    sides = [x.strip() for x in text.split(",") if x.strip()]
    if len(sides) != len(set(sides)) or not {"bare", "pipeline"} <= set(sides) or not set(sides) <= set(SIDES):
        raise argparse.ArgumentTypeError(f"a comma list of {', '.join(SIDES)}, with bare and pipeline, each once")
    return sides


def _median_stats(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)):
            out[key] = statistics.median(r[key] for r in runs)
    return out


def _calls(sizes: list[int]) -> str:
    return f"{len(sizes)} calls, {min(sizes)} / {sum(sizes) / len(sizes):.1f} / {max(sizes)}" if sizes else "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(parser)
    parser.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture (quick run: vmm-tiny-vit)")
    parser.add_argument("--clip-pretrained", default="none",
                        help="'none' (random weights: same speed) or a local checkpoint path")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="bare loop: frames per call; pipeline: EmbedFrames(batch_size=...)")
    parser.add_argument("--torch-threads", type=int, default=0, help="both sides; 0: torch's default")
    parser.add_argument("--copies", type=int, default=1,
                        help="embed each video's keyframes this many times (a bigger workload)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds; the sides alternate order each round; figures are medians (default %(default)s)")
    parser.add_argument("--sides", type=_sides, default=list(SIDES),
                        help=f"sides to run, in the first round's order (default {','.join(SIDES)})")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile each pipeline side in the first round; print the top functions")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.copies < 1 or args.batch_size < 1:
        parser.error("--repeat, --copies and --batch-size must be >= 1")
    # open_clip's and Beam's warnings (random weights, no resource module) would repeat every round.
    logging.getLogger().setLevel(logging.ERROR)

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    clip_config = clip_models.ClipConfig(args.clip_model, args.clip_pretrained, "cpu", args.torch_threads)
    clip_models.check_weights(clip_config)
    if clip_config.is_random:
        print("# note: random weights (--clip-pretrained none): same speed as real weights, meaningless embeddings")
    short_side = clip_models.image_size(args.clip_model)

    with input_videos(args) as videos:
        frames = collect_keyframes(videos, short_side, args.copies)
    n, n_videos = len(frames), len(_by_video(frames))
    mib = sum(img.nbytes for _, _, img in frames) / 2**20
    element = "VideoFrames (one per video)" if hasattr(schema_elements, "VideoFrames") else "KeyframeImage (one per frame)"
    print(f"# bench_clip: {args.clip_model} (pretrained={args.clip_pretrained}), {n} keyframes ({mib:.1f} MiB) from "
          f"{n_videos} videos at short side {short_side}; batch size {args.batch_size}; pipeline elements: {element}")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads on every side; repeat {args.repeat} "
          f"(median), first order {','.join(args.sides)}")
    print(f"# {machine_line()}")

    # Untimed warm-up shared by all sides: imports, allocator, first-call kernel setup, Beam's runner.
    model, preprocess = bare_load(args.clip_model, args.clip_pretrained)
    bare_embed(model, preprocess, [img for _, _, img in frames[:2]], [min(2, n)])
    del model, preprocess
    warm_up_beam()

    runs = {s: [] for s in args.sides}
    embeddings, profiles = {}, {}
    for r in range(args.repeat):
        for side in (args.sides if r % 2 == 0 else args.sides[::-1]):
            gc.collect()
            if side.startswith("bare"):
                stats, keyed = run_bare(args, frames, per_video=side == "bare-per-video")
            else:
                source = "memory" if side == "pipeline-memory" else "create"
                if args.profile and r == 0:
                    prof = cProfile.Profile()
                    stats, keyed = prof.runcall(run_pipeline, args, frames, clip_config, source)
                    profiles[side] = pstats.Stats(prof)
                else:
                    stats, keyed = run_pipeline(args, frames, clip_config, source)
            runs[side].append(stats)
            embeddings.setdefault(side, keyed)
            print(f"#   round {r + 1} {side}: {stats['total']:.2f} s total, {stats['load']:.2f} s load, "
                  f"{stats['cpu']:.2f} s CPU, load average {load_average()}", flush=True)

    bare_emb = embeddings["bare"]
    others = [s for s in args.sides if s != "bare"]
    agree, diffs = True, {}
    for side in others:
        emb = embeddings[side]
        diffs[side] = max((float(np.abs(bare_emb[k] - emb[k]).max()) for k in bare_emb if k in emb), default=float("inf"))
        agree &= bare_emb.keys() == emb.keys() and diffs[side] < TOLERANCE

    med = {s: _median_stats(runs[s]) for s in args.sides}
    bare = med["bare"]
    headers = ["", "bare"] + sum(([s, "vs bare"] for s in others), [])
    rows = []

    def row(label, key, fmt="{:.3f}", ratio=False, sides=None):
        r = [label, fmt.format(bare[key]) if sides is None or "bare" in sides else ""]
        for s in others:
            if sides is not None and s not in sides:
                r += ["", ""]
                continue
            v = med[s][key]
            r += [fmt.format(v), f"{(v - bare[key]) / bare[key]:+.1%}" if ratio else ""]
        rows.append(r)

    pipes = [s for s in others if s.startswith("pipeline")]
    row("model load (s)", "load")
    row("frames -> embeddings, load excluded (s)", "work", ratio=True)
    row("total, load included (s)", "total", ratio=True)
    row("CPU time, all threads, load included (s)", "cpu", ratio=True)
    rows.append(["frames / s, load excluded", f"{n / bare['work']:.1f}"]
                + sum(([f"{n / med[s]['work']:.1f}", ""] for s in others), []))
    rows.append(["model calls, images min / mean / max", _calls(bare["calls"])]
                + sum(([_calls(med[s]["calls"]), ""] for s in others), []))
    row("RunInference batches (median)", "batches", "{:g}", sides=pipes)
    row("  elements per batch (median of means)", "elements_per_batch", "{:.1f}", sides=pipes)
    row("pipeline: graph build (s)", "build", sides=pipes)
    row("preprocess + model (s): bare loop / inside run_inference", "infer", ratio=True)
    rows.append(["Beam's own time: load excluded - inside run_inference (s)", ""]
                + sum(([f"{med[s]['work'] - med[s]['infer']:.3f}" if s in pipes else "", ""] for s in others), []))
    print()
    print_table(headers, rows, ["<"] + [">"] * (len(headers) - 1))
    print()
    for s in others:
        print(f"# embeddings {s}: {len(embeddings[s])} (bare {len(bare_emb)}), max |diff| vs bare {diffs[s]:.2e}")
    print(f"# embeddings {'agree' if agree else 'DISAGREE'} (tolerance {TOLERANCE:g}).")
    print("# Medians over the rounds; vs bare = (side - bare) / bare. Headline: `pipeline` (beam.Create of the frames) "
          "with the model load EXCLUDED on both sides (pipeline: total minus RunInference's load_model_latency metric, "
          "which includes building the tokenizer).")
    print("# inside run_inference: RunInference's inference_batch_latency metric (preprocess + model); the rest of "
          "the pipeline's time is Beam: graph pickling, element encoding, batching, bundle handling.")
    for s, prof_stats in profiles.items():
        print(f"\n# {s}, round 1, cProfile (main thread), top 25 by cumulative time:")
        prof_stats.sort_stats("cumulative").print_stats(25)
        print(f"# {s}, round 1, cProfile (main thread), top 15 by own time:")
        prof_stats.sort_stats("tottime").print_stats(15)
    print(f"clip pipeline overhead vs bare loop: {(med['pipeline']['work'] - bare['work']) / bare['work'] * 100:+.1f}%")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
