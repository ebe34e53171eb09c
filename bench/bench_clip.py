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
    c0 = time.process_time()
    t0 = time.perf_counter()
    model, preprocess = bare_load(args.clip_model, args.clip_pretrained)
    t1 = time.perf_counter()
    emb = bare_embed(model, preprocess, [img for _, _, img in frames], args.batch_size)
    t2 = time.perf_counter()
    cpu = time.process_time() - c0
    del model
    keyed = {(v, i): e for (v, i, _), e in zip(frames, emb)}
    n = len(frames)
    stats = dict(load=t1 - t0, work=t2 - t1, total=t2 - t0, cpu=cpu, infer=t2 - t1,
                 batches=-(-n // args.batch_size), batch_sizes=(min(args.batch_size, n), n / -(-n // args.batch_size),
                                                                 min(args.batch_size, n)))
    return stats, keyed


# ---- (b) the same frames through the pipeline's CLIP stage ----------------------------------------

def _options():
    return PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"])


def warm_up_beam():
    """An untimed trivial pipeline: Beam imports its runner machinery lazily on the first run."""
    with beam.Pipeline(options=_options()) as p:
        p | beam.Create([1, 2]) | beam.Map(lambda x: x)


def _frame_output(x):
    """(frame_index, embedding) from EmbedFrames' frame output: FrameFeatures, or an (index, emb) pair."""
    return (x.frame_index, x.embedding) if hasattr(x, "embedding") else x


def run_pipeline(args, frames, clip_config, source: str = "create"):
    """source 'create': beam.Create(KeyframeImage list), pixels pickled into the pipeline graph.
    source 'memory': beam.Create(indices) | Map(index -> KeyframeImage held in this process), standing in
    for an upstream stage that makes the frames (what DecodeVideos does in the real pipeline)."""
    elements = [KeyframeImage(v, i, img) for v, i, img in frames]
    _common.SINK.clear()
    _common.FRAMES[:] = elements if source == "memory" else []
    c0 = time.process_time()
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
    cpu = time.process_time() - c0

    dists = {r.key.metric.name: r.committed
             for r in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["distributions"]}
    load_ms = dists["load_model_latency_milli_secs"].sum if "load_model_latency_milli_secs" in dists else float("nan")
    batch = dists.get("inference_request_batch_size")
    infer = dists.get("inference_batch_latency_micro_secs")
    keyed = {(v, _frame_output(x)[0]): np.asarray(_frame_output(x)[1]) for v, x in _common.SINK}
    _common.SINK.clear()
    _common.FRAMES[:] = []
    stats = dict(
        build=t1 - t0, run=t2 - t1, total=t2 - t0, load=load_ms / 1000.0, cpu=cpu,
        batches=batch.count if batch else 0,
        batch_sizes=(batch.min, batch.mean, batch.max) if batch else None,
        infer=infer.sum / 1e6 if infer else float("nan"),
    )
    stats["work"] = stats["total"] - stats["load"]
    return stats, keyed


SIDES = ("bare", "pipeline", "pipeline-memory")


def _order(text: str) -> list[str]:
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
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds; the sides alternate order each round; figures are medians (default %(default)s)")
    parser.add_argument("--order", type=_order, default=_order("bare,pipeline,pipeline-memory"),
                        help="sides to run, first round's order (default bare,pipeline,pipeline-memory; "
                             "pipeline-memory is optional)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile each pipeline side in the first round; print the top functions")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.copies < 1 or args.batch_size < 1:
        parser.error("--repeat, --copies and --batch-size must be >= 1")
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
    mib = sum(img.nbytes for _, _, img in frames) / 2**20
    print(f"# bench_clip: {args.clip_model} (pretrained={args.clip_pretrained}), {n} keyframes ({mib:.1f} MiB) from "
          f"{n_videos} videos at short side {short_side}, batch {args.batch_size}, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, repeat {args.repeat} (median), first order {','.join(args.order)}")
    print(f"# {machine_line()}")

    # Untimed warm-up shared by both sides: imports, allocator, first-call kernel setup, Beam's runner.
    model, preprocess = bare_load(args.clip_model, args.clip_pretrained)
    bare_embed(model, preprocess, [img for _, _, img in frames[:2]], args.batch_size)
    del model, preprocess
    warm_up_beam()

    runs = {s: [] for s in args.order}
    embeddings, profiles = {}, {}
    for r in range(args.repeat):
        for side in (args.order if r % 2 == 0 else args.order[::-1]):
            gc.collect()
            if side == "bare":
                stats, keyed = run_bare(args, frames)
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
            print(f"#   round {r + 1} {side}: {stats['total']:.2f} s total, {stats['load']:.2f} s load", flush=True)

    bare_emb = embeddings["bare"]
    pipes = [s for s in args.order if s != "bare"]
    agree, diffs = True, {}
    for side in pipes:
        emb = embeddings[side]
        diffs[side] = max((float(np.abs(bare_emb[k] - emb[k]).max()) for k in bare_emb if k in emb), default=float("inf"))
        agree &= bare_emb.keys() == emb.keys() and diffs[side] < TOLERANCE

    med = {s: _median_stats(runs[s]) for s in args.order}
    bare = med["bare"]
    headers = ["", "bare loop"] + sum(([s, "overhead"] for s in pipes), [])
    rows = []

    def row(label, key, fmt="{:.3f}", ratio=False, with_bare=True):
        r = [label, fmt.format(bare[key]) if with_bare else ""]
        for s in pipes:
            v = med[s][key]
            r += [fmt.format(v), f"{(v - bare[key]) / bare[key]:+.1%}" if ratio else ""]
        rows.append(r)

    row("model load (s)", "load")
    row("frames -> embeddings, load excluded (s)", "work", ratio=True)
    row("total, load included (s)", "total", ratio=True)
    row("CPU time, load included (s)", "cpu", ratio=True)
    rows.append(["frames / s, load excluded", f"{n / bare['work']:.1f}"]
                + sum(([f"{n / med[s]['work']:.1f}", ""] for s in pipes), []))
    rows.append(["batches", f"{bare['batches']:g}"] + sum(([f"{med[s]['batches']:g}", ""] for s in pipes), []))
    rows.append(["batch size min / mean / max (round 1)", "%d / %.1f / %d" % runs["bare"][0]["batch_sizes"]]
                + sum(([("%d / %.1f / %d" % runs[s][0]["batch_sizes"]) if runs[s][0]["batch_sizes"] else "?", ""]
                       for s in pipes), []))
    row("pipeline: graph build (s)", "build", with_bare=False)
    row("preprocess + model: bare loop / inside run_inference (s)", "infer", ratio=True)
    rows.append(["Beam's own time: work - inside run_inference (s)", ""]
                + sum(([f"{med[s]['work'] - med[s]['infer']:.3f}", ""] for s in pipes), []))
    print()
    print_table(headers, rows, ["<"] + [">"] * (len(headers) - 1))
    print()
    for s in pipes:
        print(f"# embeddings {s}: {len(embeddings[s])} (bare loop {len(bare_emb)}), max |diff| {diffs[s]:.2e}")
    print(f"# embeddings {'agree' if agree else 'DISAGREE'} (tolerance {TOLERANCE:g}).")
    print("# Figures are medians over the rounds; overhead = (pipeline - bare) / bare. Headline: `pipeline` "
          "(beam.Create of the frames), model load EXCLUDED on both sides (pipeline: total minus RunInference's "
          "load_model_latency metric, which includes building the tokenizer).")
    if "pipeline-memory" in pipes:
        print("# pipeline-memory: the same stage, but frames come from a Map over indices into frames held in this "
              "process, so the pixels are not pickled (cloudpickle + bz2) into the pipeline graph as beam.Create does.")
    print("# inside run_inference: RunInference's inference_batch_latency metric (preprocess + model, per batch), "
          "to compare with the bare loop's time for the same work.")
    for s, prof_stats in profiles.items():
        print(f"\n# {s}, round 1, cProfile, top 25 by cumulative time:")
        prof_stats.sort_stats("cumulative").print_stats(25)
        print(f"# {s}, round 1, cProfile, top 15 by own time:")
        prof_stats.sort_stats("tottime").print_stats(15)
    print(f"# load average at the end: {load_average()}")
    print(f"clip pipeline overhead vs bare loop: {(med['pipeline']['work'] - bare['work']) / bare['work'] * 100:+.1f}%")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
