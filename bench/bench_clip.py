"""The CLIP stage inside a Beam pipeline (transforms.embed.EmbedFrames) vs a bare batched open_clip loop.

    python -m bench.bench_clip [--clip-model ViT-B-32] [--clip-pretrained none] [--batch-size 32]
                               [--torch-threads 0] [--copies 1] [--order bare,pipeline] [--profile]

Inputs: the keyframes of every video in --media plus the generated sample, collected with
models.decode.decode_keyframes at the model's input size, as the pipeline does (not timed).

(a) bare: `open_clip.create_model` (random init seeded as models.clip does, or a local checkpoint) +
    `open_clip.image_transform(..., is_train=False)`; then batches of --batch-size frames:
    PIL image -> transform -> torch.stack -> `encode_image(normalize=True)` under torch.no_grad.
(b) pipeline: DirectRunner, in memory, one worker: beam.Create(KeyframeImage elements) |
    EmbedFrames(ClipConfig, batch_size) | collect. Timed from building the pipeline to the end of
    wait_until_finish. Its model load is read from RunInference's own metric
    (load_model_latency_milli_secs: ClipEncoder.load, which also builds the tokenizer).

Each side loads its model once. Headline overhead = (pipeline - bare) / bare with the model load
EXCLUDED on both sides (pipeline: total minus its load metric); the table also gives the figure with
the load included on both sides. Before either side is timed, one untimed warm-up builds a model
and embeds two frames, so neither side pays first-use costs (imports, allocator, kernels) alone.
The two sides' embeddings must agree (max |diff| < 1e-4) or the benchmark exits 1.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import logging
import os
import pstats
import sys
import time

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from bench import _common
from bench._common import add_input_args, input_videos, machine_line, print_table
from models import clip as clip_models
from models.decode import DecodeConfig, decode_keyframes
from schemas.elements import KeyframeImage
from transforms.embed import METRICS_NAMESPACE, EmbedFrames

TOLERANCE = 1e-4


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


# ---- (a) the bare loop: what a user would write with open_clip alone --------------------------------

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


def bare_embed(model, preprocess, images, batch_size: int) -> np.ndarray:
    import torch
    from PIL import Image

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.stack([preprocess(Image.fromarray(img)) for img in images[i:i + batch_size]])
            out.append(model.encode_image(x, normalize=True).float().numpy())
    return np.concatenate(out)


def run_bare(args, frames):
    t0 = time.perf_counter()
    model, preprocess = bare_load(args.clip_model, args.clip_pretrained)
    t1 = time.perf_counter()
    emb = bare_embed(model, preprocess, [img for _, _, img in frames], args.batch_size)
    t2 = time.perf_counter()
    del model
    keyed = {(v, i): e for (v, i, _), e in zip(frames, emb)}
    return dict(load=t1 - t0, work=t2 - t1, total=t2 - t0, batches=-(-len(frames) // args.batch_size)), keyed


# ---- (b) the same frames through the pipeline's CLIP stage ----------------------------------------

def _options():
    return PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"])


def warm_up_beam():
    """An untimed trivial pipeline: Beam imports its runner machinery lazily on the first run."""
    with beam.Pipeline(options=_options()) as p:
        p | beam.Create([1, 2]) | beam.Map(lambda x: x)


def run_pipeline(args, frames, clip_config, source: str = "create"):
    """source 'create': beam.Create(KeyframeImage list), pixels pickled into the pipeline graph.
    source 'memory': beam.Create(indices) | Map(index -> KeyframeImage held in this process), standing in
    for an upstream stage that makes the frames (what DecodeVideos does in the real pipeline)."""
    elements = [KeyframeImage(v, i, img) for v, i, img in frames]
    _common.SINK.clear()
    _common.FRAMES[:] = elements if source == "memory" else []
    t0 = time.perf_counter()
    p = beam.Pipeline(options=_options())
    if source == "create":
        frames_pcoll = p | "Frames" >> beam.Create(elements)
    else:
        frames_pcoll = p | "Indices" >> beam.Create(range(len(elements))) | "Frames" >> beam.Map(_common.frame_at)
    inputs = {"frames": frames_pcoll, "videos": p | "Videos" >> beam.Create([])}
    out = inputs | "EmbedFrames" >> EmbedFrames(clip_config, batch_size=args.batch_size)
    out["frames"] | "Collect" >> beam.Map(_common.collect)
    t1 = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    t2 = time.perf_counter()

    dists = {r.key.metric.name: r.committed
             for r in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["distributions"]}
    load_ms = dists["load_model_latency_milli_secs"].sum if "load_model_latency_milli_secs" in dists else float("nan")
    batch = dists.get("inference_request_batch_size")
    infer = dists.get("inference_batch_latency_micro_secs")
    keyed = {(v, i): np.asarray(e) for v, (i, e) in _common.SINK}
    _common.SINK.clear()
    _common.FRAMES[:] = []
    stats = dict(
        build=t1 - t0, run=t2 - t1, total=t2 - t0, load=load_ms / 1000.0,
        batches=batch.count if batch else 0,
        batch_sizes=(batch.min, batch.mean, batch.max) if batch else None,
        infer=infer.sum / 1e6 if infer else float("nan"),
    )
    stats["work"] = stats["total"] - stats["load"]
    return stats, keyed


SIDES = ("bare", "pipeline", "pipeline-memory")


def _order(text: str) -> list[str]:
    sides = [x.strip() for x in text.split(",") if x.strip()]
    if sorted(sides) != sorted(set(sides)) or not {"bare", "pipeline"} <= set(sides) or not set(sides) <= set(SIDES):
        raise argparse.ArgumentTypeError(f"a comma list of {', '.join(SIDES)}, with bare and pipeline, each once")
    return sides


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(parser)
    parser.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture (quick run: vmm-tiny-vit)")
    parser.add_argument("--clip-pretrained", default="none",
                        help="'none' (random weights: same speed) or a local checkpoint path")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--torch-threads", type=int, default=0, help="both sides; 0: torch's default")
    parser.add_argument("--copies", type=int, default=1,
                        help="embed each keyframe this many times (a bigger, steady-state workload)")
    parser.add_argument("--order", type=_order, default=_order("bare,pipeline,pipeline-memory"),
                        help="which sides run, in what order (default %(default)s; pipeline-memory is optional)")
    parser.add_argument("--profile", action="store_true", help="cProfile the pipeline sides; print the top functions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    clip_config = clip_models.ClipConfig(args.clip_model, args.clip_pretrained, "cpu", args.torch_threads)
    clip_models.check_weights(clip_config)
    short_side = clip_models.image_size(args.clip_model)

    with input_videos(args) as videos:
        frames = collect_keyframes(videos, short_side, args.copies)
        n_videos = len({v for v, _, _ in frames})
    n = len(frames)
    mb = sum(img.nbytes for _, _, img in frames) / 2**20
    print(f"# bench_clip: {args.clip_model} (pretrained={args.clip_pretrained}), {n} keyframes ({mb:.1f} MiB) from "
          f"{n_videos} videos at short side {short_side}, batch {args.batch_size}, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, order {','.join(args.order)}")
    print(f"# {machine_line()}")

    # Untimed warm-up shared by both sides: imports, allocator, first-call kernel setup, Beam's runner.
    model, preprocess = bare_load(args.clip_model, args.clip_pretrained)
    bare_embed(model, preprocess, [img for _, _, img in frames[:2]], args.batch_size)
    del model, preprocess
    warm_up_beam()

    results, profiles = {}, {}
    for side in args.order:
        gc.collect()
        if side == "bare":
            results[side] = run_bare(args, frames)
            continue
        source = "memory" if side == "pipeline-memory" else "create"
        if args.profile:
            prof = cProfile.Profile()
            results[side] = prof.runcall(run_pipeline, args, frames, clip_config, source)
            profiles[side] = pstats.Stats(prof)
        else:
            results[side] = run_pipeline(args, frames, clip_config, source)

    bare, bare_emb = results["bare"]
    pipes = [s for s in args.order if s != "bare"]
    agree, diffs = True, {}
    for side in pipes:
        emb = results[side][1]
        diffs[side] = max((float(np.abs(bare_emb[k] - emb[k]).max()) for k in bare_emb if k in emb), default=float("inf"))
        agree &= bare_emb.keys() == emb.keys() and diffs[side] < TOLERANCE

    def pct(a, b):
        return f"{(a - b) / b:+.1%}"

    stats = {s: results[s][0] for s in pipes}
    headers = ["", "bare loop"]
    for s in pipes:
        headers += [s, "overhead"]
    rows = []

    def row(label, bare_value, fmt, key=None, ratio=False):
        r = [label, fmt(bare_value) if bare_value is not None else ""]
        for s in pipes:
            v = stats[s].get(key) if key else None
            r += [fmt(v) if v is not None else "", pct(v, bare_value) if ratio and v is not None else ""]
        rows.append(r)

    sec = "{:.3f}".format
    row("model load (s)", bare["load"], sec, "load")
    row("frames -> embeddings, load excluded (s)", bare["work"], sec, "work", ratio=True)
    row("total, load included (s)", bare["total"], sec, "total", ratio=True)
    rows.append(["frames / s, load excluded", f"{n / bare['work']:.1f}"]
                + sum(([f"{n / stats[s]['work']:.1f}", ""] for s in pipes), []))
    rows.append(["batches", str(bare["batches"])] + sum(([str(stats[s]["batches"]), ""] for s in pipes), []))
    rows.append(["batch size min / mean / max",
                 f"{min(args.batch_size, n)} / {n / bare['batches']:.1f} / {min(args.batch_size, n)}"]
                + sum(([("%d / %.1f / %d" % stats[s]["batch_sizes"]) if stats[s]["batch_sizes"] else "?", ""]
                       for s in pipes), []))
    row("pipeline: graph build (s)", None, sec, "build")
    row("pipeline: inside run_inference (s)", bare["work"], sec, "infer")
    print()
    print_table(headers, rows, ["<"] + [">"] * (len(headers) - 1))
    print()
    for s in pipes:
        print(f"# embeddings {s}: {len(results[s][1])} (bare loop {len(bare_emb)}), max |diff| {diffs[s]:.2e}")
    print(f"# embeddings {'agree' if agree else 'DISAGREE'} (tolerance {TOLERANCE:g}).")
    print("# overhead = (pipeline - bare) / bare. Headline: `pipeline` (beam.Create of the frames), model load EXCLUDED "
          "on both sides (pipeline total minus RunInference's load_model_latency metric).")
    if "pipeline-memory" in pipes:
        print("# pipeline-memory: the same, but frames come from a Map over indices into frames held in this process, "
              "so the pixels are not pickled (cloudpickle + bz2) into the pipeline graph as beam.Create does.")
    print("# 'inside run_inference' (RunInference's inference_batch_latency metric) vs the bare loop's time: "
          "preprocessing + model, per batch; the rest of the pipeline time is Beam.")
    for s, prof_stats in profiles.items():
        print(f"\n# {s}, cProfile, top 25 by cumulative time:")
        prof_stats.sort_stats("cumulative").print_stats(25)
        print(f"# {s}, cProfile, top 15 by own time:")
        prof_stats.sort_stats("tottime").print_stats(15)
    print(f"clip pipeline overhead vs bare loop: {(stats['pipeline']['work'] - bare['work']) / bare['work'] * 100:+.1f}%")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
