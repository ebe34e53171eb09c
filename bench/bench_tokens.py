"""Visual tokens (models.codebook) vs dense CLIP vectors: bytes, speed, reconstruction and retrieval.

    python -m bench.bench_tokens [--ks 256,1024,8192] [--repeat 3] [--max-frames 64]
                                 [--clock-interval 0.5] [--no-lowered] [--media DIR] [--only NAME]

Inputs: every video in --media (no generated sample unless --sample-videos N), decoded with a denser
keyframe policy than the pipeline's default (DecodeConfig(sampling=SamplingConfig(max_frames=64,
clock_interval_s=0.5))) so there are enough vectors to learn a dictionary from. The keyframes are
embedded once with ClipEncoder (ViT-B-32, pretrained "none": real weights cannot be downloaded
here, so the embeddings come from a randomly initialised model) through encode_images_and_patches:
frame embeddings [N, 512] and patch embeddings [N, 49, 512], both L2-normalised, as the pipeline's
CLIP stage makes them with --patch-codebook.

1. Bytes per frame. Raw: float32 vector (D*4), float16 (D*2), frame token (int16, 2), patch tokens
   (H*W*2), for ViT-B-32 and vmm-tiny-vit. Measured: a one-column pyarrow table per encoding, with the
   types of schemas.forward_index (fixed_size_list<float32|float16>[D], int16, list<int16>), written
   with pyarrow.parquet zstd and its default settings (what Beam's WriteToParquet uses; dictionary
   encoding on), and again with use_dictionary=False; bytes = the column chunk's compressed size /
   rows ("col", pages with their headers) and the whole file / rows ("file", adds the footer and
   schema). Tables: the real keyframes (real embeddings; token columns hold uniform random ids over
   K=8192, the most entropy a K=8192 id can have), a synthetic table of --parquet-rows frames (random
   unit vectors, uniform ids), and the real patch tokens of the ViT-B-32 dictionaries of part 3.
2. Tokenize throughput: Codebook.assign vectors/s for each K, on dictionaries of random unit
   centroids (a flat L2 search costs the same whatever the centroids): --assign-vectors random unit
   vectors (fixed seed, D=512) in one call, in calls of 256 (TokenizeFrames' largest batch), in
   calls of 64 (the first 2048 of them), and the real frame and patch vectors in one call each;
   against the CLIP stage's frames/s (ClipEncoder.encode_images, ViT-B-32, random weights, the real
   keyframes in batches of --batch-size, model load excluded). Each figure: the call repeated until
   >= 0.5 s has passed, rate = work / time; median over --repeat rounds. Timed at faiss' default
   OpenMP thread count and again at 1 thread (--no-single-thread skips it). faiss searches N queries
   with BLAS only when N*D >= faiss.cvar.distance_compute_blas_threshold (N >= 250 at D=512 with
   faiss 1.15); smaller calls take a slower path, which the calls of 64 and the real frames show.
3. Reconstruction and retrieval. models.codebook.train_codebook at each K, frame level and patch
   level. A K that the sample cannot support at the default min_points_per_centroid (39) is refused
   by train_codebook; the refusal is printed, and (unless --no-lowered) the K is trained again with
   min_points_per_centroid lowered to floor(N / K), stated in the table, when that is >= 1. The
   largest K the sample supports at the default is added. Quality: mean cosine between each training
   vector and its assigned centroid (both normalised; in-sample). Retrieval: each video's keyframes
   split into even / odd positions; query = one half, corpus = the other half of every video, both
   directions; corpus ranked by cosine of (a) models.pooling.pool_video_embedding of the frame
   vectors (and of the patch vectors), (b) Codebook.bag_of_words of the half's frame tokens or patch
   tokens. recall@1, recall@10 and mean reciprocal rank of the right video; ties count against it.

Sanity (exit 1): every trained dictionary's assign must pick an entry at the minimal squared distance
(numpy brute force, tolerance 1e-4).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

from bench._common import add_input_args, input_videos, load_average, machine_line, median, print_table
from models import clip as clip_models
from models.codebook import MAX_K, Codebook, CodebookError, CodebookInfo, array_sha256, train_codebook
from models.decode import DecodeConfig, decode_keyframes
from models.keyframes import SamplingConfig
from models.pooling import pool_video_embedding

DEFAULT_MIN_POINTS = 39  # train_codebook's default min_points_per_centroid
TIGHT = 1e-4
TINY = "vmm-tiny-vit"


# ---- inputs ----------------------------------------------------------------------------------------

def collect_keyframes(videos, short_side: int, max_frames: int, clock_interval_s: float):
    """{video: [uint8 image]} in time order (decode errors are skipped)."""
    config = DecodeConfig(sampling=SamplingConfig(max_frames=max_frames, clock_interval_s=clock_interval_s),
                          short_side=short_side)
    out = {}
    for name, path in videos:
        try:
            decoded = decode_keyframes(path, config)
        except Exception as e:  # noqa: BLE001 -- a benchmark skips what it cannot decode
            print(f"skip {name}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        out[name] = [img for _, img in decoded.keyframes]
    return out


def batched(encode, images, batch_size):
    parts = [encode(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(p) for p in zip(*parts))
    return np.concatenate(parts)


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_codebook(k: int, dim: int, seed: int) -> Codebook:
    c = unit(np.random.default_rng(seed), k, dim)
    info = CodebookInfo(k=k, dim=dim, level="frame", metric="l2", clip_model="random", clip_weights="none",
                        sha256=array_sha256(c), train_vectors=0, iterations=0, seed=seed, normalized=True)
    return Codebook(c, info)


def rate(fn, work: int, min_time: float = 0.5) -> float:
    """work units / s of fn(), repeated until min_time has passed."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return calls * work / elapsed


# ---- 1. bytes ---------------------------------------------------------------------------------------

def parquet_bytes(column, tmp: str, name: str, use_dictionary: bool = True) -> tuple[float, float]:
    """(column-chunk compressed bytes / row, file bytes / row) of a one-column zstd Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: column})
    path = os.path.join(tmp, f"{name}.parquet")
    pq.write_table(table, path, compression="zstd", use_dictionary=use_dictionary)
    meta = pq.ParquetFile(path).metadata
    col = sum(meta.row_group(g).column(c).total_compressed_size
              for g in range(meta.num_row_groups) for c in range(meta.num_columns))
    n = table.num_rows
    return col / n, os.path.getsize(path) / n


def parquet_row(emb: np.ndarray, frame_ids: np.ndarray, patch_ids: np.ndarray, tmp: str,
                use_dictionary: bool = True) -> list[str]:
    """Measured bytes/frame of the four encodings: 'col (file)'."""
    import pyarrow as pa

    from schemas.forward_index import embedding_type

    n, dim = emb.shape
    cells = []
    for dtype in ("float32", "float16"):
        flat = pa.array(emb.astype(dtype).ravel(), type=pa.float32() if dtype == "float32" else pa.float16())
        col = pa.FixedSizeListArray.from_arrays(flat, type=embedding_type(dim, dtype))
        cells.append(parquet_bytes(col, tmp, f"embedding_{dtype}", use_dictionary))
    cells.append(parquet_bytes(pa.array(frame_ids.astype(np.int16), type=pa.int16()), tmp, "token", use_dictionary))
    cells.append(patch_bytes(patch_ids, tmp, use_dictionary))
    return [f"{c:.1f} ({f:.1f})" for c, f in cells]


def patch_bytes(patch_ids: np.ndarray, tmp: str, use_dictionary: bool = True) -> tuple[float, float]:
    import pyarrow as pa

    n, hw = patch_ids.shape
    offsets = pa.array(np.arange(0, (n + 1) * hw, hw, dtype=np.int32))
    col = pa.ListArray.from_arrays(offsets, pa.array(patch_ids.astype(np.int16).ravel(), type=pa.int16()))
    assert col.type == pa.list_(pa.int16())
    return parquet_bytes(col, tmp, "patch_tokens", use_dictionary)


# ---- 3. quality and retrieval -------------------------------------------------------------------------

def mean_cos_to_centroid(book: Codebook, x: np.ndarray, ids: np.ndarray) -> float:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = book.lookup(ids)
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.sum(xn * c, axis=1)))


def assign_is_nearest(book: Codebook, x: np.ndarray, ids: np.ndarray) -> float:
    """Largest (chosen distance - minimal distance) over x, brute force in float64."""
    xn = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float64)
    c = book.centroids.astype(np.float64)
    worst = 0.0
    for s in range(0, len(xn), 2048):
        q = xn[s:s + 2048]
        d = (q * q).sum(1)[:, None] - 2 * q @ c.T + (c * c).sum(1)[None, :]
        chosen = d[np.arange(len(q)), ids[s:s + 2048].astype(np.int64)]
        worst = max(worst, float((chosen - d.min(1)).max()))
    return worst


def rank_metrics(queries: np.ndarray, corpus: np.ndarray) -> list[int]:
    """Rank (1-based) of corpus[i] for queries[i] by cosine; ties count against the right answer."""
    def norm(a):
        n = np.linalg.norm(a, axis=1, keepdims=True)
        return a / np.where(n > 0, n, 1)

    sims = norm(queries).astype(np.float64) @ norm(corpus).astype(np.float64).T
    ranks = []
    for i in range(len(sims)):
        right = sims[i, i]
        others = np.delete(sims[i], i)
        ranks.append(1 + int(np.sum(others >= right - 1e-12)))
    return ranks


def summarise(ranks: list[int]) -> tuple[float, float, float]:
    r = np.asarray(ranks)
    return float(np.mean(r <= 1)), float(np.mean(r <= 10)), float(np.mean(1.0 / r))


def retrieval(halves, half_vector) -> tuple[float, float, float]:
    """halves: [(even items, odd items)] per video; half_vector(items) -> vector. Both directions."""
    even = np.stack([half_vector(e) for e, _ in halves])
    odd = np.stack([half_vector(o) for _, o in halves])
    return summarise(rank_metrics(even, odd) + rank_metrics(odd, even))


def fmt_metrics(m) -> list[str]:
    return [f"{m[0]:.3f}", f"{m[1]:.3f}", f"{m[2]:.3f}"]


# ---- main ---------------------------------------------------------------------------------------------

def _ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma list of integers") from None
    if not ks or any(k < 2 or k > MAX_K for k in ks):
        raise argparse.ArgumentTypeError(f"each K in 2..{MAX_K}")
    return ks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(parser)
    parser.set_defaults(sample_videos=0)
    parser.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture (a ViT)")
    parser.add_argument("--clip-pretrained", default="none",
                        help="'none' (random weights: real ones cannot be downloaded here) or a local checkpoint")
    parser.add_argument("--ks", type=_ks, default=[256, 1024, 8192], help="dictionary sizes (default %(default)s)")
    parser.add_argument("--max-frames", type=int, default=64, help="keyframes per video at most (default %(default)s)")
    parser.add_argument("--clock-interval", type=float, default=0.5,
                        help="a keyframe at least every this many seconds (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="CLIP frames per call (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="throughput rounds, medians (default %(default)s)")
    parser.add_argument("--assign-vectors", type=int, default=16384,
                        help="random unit vectors for the assign throughput (default %(default)s)")
    parser.add_argument("--parquet-rows", type=int, default=16384,
                        help="frames in the synthetic Parquet tables (default %(default)s)")
    parser.add_argument("--iterations", type=int, default=20, help="k-means iterations (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-single-thread", action="store_true",
                        help="time assign only at faiss' default thread count (not also at 1 thread)")
    parser.add_argument("--no-lowered", action="store_true",
                        help="do not retrain refused K with a lowered min_points_per_centroid")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.batch_size < 1 or args.assign_vectors < 1 or args.parquet_rows < 1:
        parser.error("--repeat, --batch-size, --assign-vectors and --parquet-rows must be >= 1")
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's random-weights warning, faiss' k-means notes
    started = time.perf_counter()

    import faiss
    import torch

    cfg = clip_models.ClipConfig(args.clip_model, args.clip_pretrained, "cpu", 0)
    clip_models.check_weights(cfg)
    if not clip_models.has_patch_tokens(args.clip_model):
        parser.error(f"{args.clip_model} has no patch tokens")
    short_side = clip_models.image_size(args.clip_model)

    with input_videos(args) as videos:
        t0 = time.perf_counter()
        frames = collect_keyframes(videos, short_side, args.max_frames, args.clock_interval)
        decode_s = time.perf_counter() - t0
    names = list(frames)
    all_images = [img for v in names for img in frames[v]]
    n_frames = len(all_images)
    print(f"# bench_tokens: {len(names)} videos, {n_frames} keyframes (max_frames={args.max_frames}, "
          f"clock_interval_s={args.clock_interval}, short side {short_side}); decoded in {decode_s:.1f} s")
    print(f"# {machine_line()}")
    print(f"# torch {torch.__version__} ({torch.get_num_threads()} threads), faiss {faiss.__version__} "
          f"({faiss.omp_get_max_threads()} OpenMP threads)")
    if cfg.is_random:
        print(f"# note: CLIP {args.clip_model} with RANDOM weights (pretrained 'none'): real weights cannot be "
              "downloaded offline here. Speed and bytes are those of the real model; reconstruction and "
              "retrieval figures describe random-init features, not CLIP's semantics.")

    encoder = clip_models.ClipEncoder(cfg).load()
    dim = encoder.dim
    grid = encoder.patch_grid()
    hw = grid[0] * grid[1]
    t0 = time.perf_counter()
    frame_emb, patch_emb = batched(encoder.encode_images_and_patches, all_images, args.batch_size)
    patches_s = time.perf_counter() - t0
    patch_flat = patch_emb.reshape(-1, dim)
    print(f"# embedded: frames {frame_emb.shape}, patches {patch_emb.shape} (grid {grid[0]}x{grid[1]}) with "
          f"encode_images_and_patches in {patches_s:.1f} s ({n_frames / patches_s:.1f} frames/s)")
    owner = np.repeat(np.arange(len(names)), [len(frames[v]) for v in names])

    # ---- 3 first (part 1 uses its dictionaries): train ----------------------------------------
    levels = {"frame": frame_emb, "patch": patch_flat}
    trained = {}  # (level, K) -> (Codebook, min_points, note, train_s)
    refused = []  # (level, K, message)
    for level, x in levels.items():
        n = len(x)
        ks = list(args.ks)
        largest = n // DEFAULT_MIN_POINTS
        if largest >= 2 and largest not in ks:
            ks.append(largest)
        for k in sorted(ks):
            note = "default" if k != largest or k in args.ks else "largest K at default"
            try:
                t0 = time.perf_counter()
                book = train_codebook(x, k, level=level, clip_model=args.clip_model,
                                      clip_weights=encoder.weights_id, iterations=args.iterations, seed=args.seed)
                trained[(level, k)] = (book, DEFAULT_MIN_POINTS, note, time.perf_counter() - t0)
                continue
            except CodebookError as e:
                refused.append((level, k, str(e)))
            lowered = n // k
            if args.no_lowered or lowered < 1:
                continue
            t0 = time.perf_counter()
            book = train_codebook(x, k, level=level, clip_model=args.clip_model, clip_weights=encoder.weights_id,
                                  iterations=args.iterations, seed=args.seed, min_points_per_centroid=lowered)
            trained[(level, k)] = (book, lowered, f"LOWERED min_points_per_centroid={lowered}",
                                   time.perf_counter() - t0)
    ids = {key: book.assign(levels[key[0]]) for key, (book, *_rest) in trained.items()}

    # ---- 1. bytes per frame ------------------------------------------------------------------
    print("\n## 1. Bytes per frame")
    tiny = clip_models.ClipEncoder(clip_models.ClipConfig(TINY, "none", "cpu", 0)).load()
    tiny_grid = tiny.patch_grid()
    tiny_hw = tiny_grid[0] * tiny_grid[1]
    # The tiny model's own transform resizes the 224-px keyframes to its 64-px input.
    tiny_emb = batched(tiny.encode_images, all_images, args.batch_size)
    rows = []
    shapes = [(args.clip_model, dim, grid)] + ([(TINY, tiny.dim, tiny_grid)] if args.clip_model != TINY else [])
    for model, d, (gh, gw) in shapes:
        rows.append([model, d, f"{gh}x{gw}", d * 4, d * 2, 2, gh * gw * 2,
                     f"{d * 4 / 2:.0f}x", f"{d * 4 / (gh * gw * 2):.1f}x"])
    print_table(["model", "D", "grid", "float32 B", "float16 B", "frame token B", "patch tokens B",
                 "f32/frame token", "f32/patch tokens"], rows)

    rng = np.random.default_rng(args.seed)
    prow = []
    with tempfile.TemporaryDirectory(prefix="vmm-bench-tokens-") as tmp:
        models = [(args.clip_model, frame_emb, hw)] + ([(TINY, tiny_emb, tiny_hw)] if args.clip_model != TINY else [])
        for model, emb, mhw in models:
            n = len(emb)
            fids, pids = rng.integers(0, 8192, n), rng.integers(0, 8192, (n, mhw))
            prow.append([f"{model}, real keyframes (N={n}), ids uniform K=8192"] + parquet_row(emb, fids, pids, tmp))
            prow.append([f"  the same, use_dictionary=False"] + parquet_row(emb, fids, pids, tmp, False))
            m = args.parquet_rows
            prow.append([f"{model}, synthetic (N={m}), random unit vectors, ids uniform K=8192"]
                        + parquet_row(unit(rng, m, emb.shape[1]), rng.integers(0, 8192, m),
                                      rng.integers(0, 8192, (m, mhw)), tmp))
        for (level, k), (_book, _mp, note, _s) in sorted(trained.items()):
            if level == "patch" and k in args.ks:
                for use_dict in (True, False):
                    c, f = patch_bytes(ids[(level, k)].reshape(n_frames, hw), tmp, use_dict)
                    prow.append([f"{args.clip_model}, real keyframes, real patch tokens K={k}"
                                 + ("" if use_dict else ", use_dictionary=False"), "", "", "", f"{c:.1f} ({f:.1f})"])
    print("\nParquet (zstd, pyarrow defaults), measured bytes per frame: column chunk (whole file)")
    print_table(["table", "float32", "float16", "frame token", "patch tokens"], prow)
    raw_ratio = dim * 4 / 2
    measured_f32 = float(prow[0][1].split()[0])
    measured_tok = float(prow[0][3].split()[0])
    print(f"# {args.clip_model}: a frame token is {raw_ratio:.0f}x smaller than float32 raw, "
          f"{measured_f32 / measured_tok:.0f}x in Parquet (real keyframes, column chunk)")

    # ---- 2. throughput --------------------------------------------------------------------------
    print("\n## 2. Tokenize throughput vs the CLIP stage")
    rand_x = unit(np.random.default_rng(args.seed + 1), args.assign_vectors, dim)
    books = {k: random_codebook(k, dim, args.seed + k) for k in args.ks}
    for book in books.values():  # build the faiss index outside the timing
        book.assign(rand_x[:2])
    encoder.encode_images(all_images[:2])  # warm-up
    default_threads = faiss.omp_get_max_threads()
    thread_settings = [default_threads] + ([1] if default_threads != 1 and not args.no_single_thread else [])
    cols = ("one", "256", "64", "frames", "patches")
    small = rand_x[:2048]
    rates = {(k, t): {c: [] for c in cols} for k in args.ks for t in thread_settings}
    clip_rates = []
    for r in range(args.repeat):
        t0 = time.perf_counter()
        batched(encoder.encode_images, all_images, args.batch_size)
        clip_rates.append(n_frames / (time.perf_counter() - t0))
        for t in (thread_settings if r % 2 == 0 else thread_settings[::-1]):
            faiss.omp_set_num_threads(t)
            for k, book in books.items():
                m = rates[(k, t)]
                m["one"].append(rate(lambda: book.assign(rand_x), len(rand_x)))
                m["256"].append(rate(lambda: [book.assign(rand_x[s:s + 256]) for s in range(0, len(rand_x), 256)],
                                     len(rand_x)))
                m["64"].append(rate(lambda: [book.assign(small[s:s + 64]) for s in range(0, len(small), 64)],
                                    len(small)))
                m["frames"].append(rate(lambda: book.assign(frame_emb), n_frames))
                m["patches"].append(rate(lambda: book.assign(patch_flat), len(patch_flat)))
        faiss.omp_set_num_threads(default_threads)
        print(f"#   round {r + 1}: CLIP {clip_rates[-1]:.1f} frames/s, load average {load_average()}", flush=True)
    clip_fps = median(clip_rates)
    trows = []
    for t in thread_settings:
        for k in args.ks:
            m = {c: median(v) for c, v in rates[(k, t)].items()}
            trows.append([f"K={k}", f"{t}{' (default)' if t == default_threads else ''}", f"{m['one']:,.0f}",
                          f"{m['256']:,.0f}", f"{m['64']:,.0f}", f"{m['frames']:,.0f}", f"{m['patches']:,.0f}",
                          f"{m['one'] / clip_fps:,.0f}x", f"{m['256'] / clip_fps:,.0f}x",
                          f"{m['patches'] / hw / clip_fps:,.1f}x"])
    trows.append([f"CLIP {args.clip_model} encode_images", torch.get_num_threads(), f"{clip_fps:.1f} frames/s",
                  "", "", "", "", "1x", "", ""])
    print(f"\nCodebook.assign vectors/s (median of {args.repeat}); CLIP = encode_images, batch {args.batch_size}, "
          f"{n_frames} real keyframes, load excluded")
    print_table(["", "faiss threads", f"random N={len(rand_x)}, one call", "random, calls of 256",
                 f"random N={len(small)}, calls of 64",
                 f"real frames N={n_frames}, one call", f"real patches N={len(patch_flat)}, one call",
                 "one call / CLIP", "calls of 256 / CLIP", f"patch frames ({hw} ids) / CLIP"], trows)
    print(f"# encode_images_and_patches (one pass, above): {n_frames / patches_s:.1f} frames/s")
    thr = getattr(faiss.cvar, "distance_compute_blas_threshold", None)
    if thr is not None:
        n0 = -(-thr // dim)
        where = ", ".join(f"{label} {'BLAS' if n >= n0 else 'non-BLAS'}" for label, n in (
            ("calls of 64", 64), ("calls of 256", 256), (f"real frames ({n_frames})", n_frames),
            (f"one call of {len(rand_x)}", len(rand_x))))
        print(f"# faiss.cvar.distance_compute_blas_threshold = {thr}: a search of N queries takes faiss' BLAS "
              f"path only when N*D >= it, here N >= {n0}: {where}")

    # ---- 3. quality and retrieval -------------------------------------------------------------------
    print("\n## 3. Reconstruction and retrieval (real media, random-weight CLIP)")
    for level, k, msg in refused:
        print(f"# refused: {level} K={k}: {msg}")
    worst = {key: assign_is_nearest(book, levels[key[0]], ids[key]) for key, (book, *_r) in trained.items()}
    ok = all(w < TIGHT for w in worst.values())

    halves_idx = []
    for v in range(len(names)):
        pos = np.flatnonzero(owner == v)
        halves_idx.append((pos[0::2], pos[1::2]))
    usable = [i for i, (e, o) in enumerate(halves_idx) if len(e) and len(o)]
    skipped = [names[i] for i in range(len(names)) if i not in usable]
    halves_idx = [halves_idx[i] for i in usable]
    print(f"# retrieval: {len(halves_idx)} videos, {2 * len(halves_idx)} queries (even->odd and odd->even)"
          + (f"; skipped (one keyframe): {', '.join(skipped)}" if skipped else "")
          + f"; chance MRR {np.mean([1 / r for r in range(1, len(halves_idx) + 1)]):.3f}")

    def dense(x):
        return lambda idx: pool_video_embedding(x[idx].reshape(-1, dim))

    qrows = []
    for level, x in levels.items():
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        mean = xn.mean(0)
        f16 = x.astype(np.float16).astype(np.float32)
        f16 = f16 / np.linalg.norm(f16, axis=1, keepdims=True)
        src = frame_emb if level == "frame" else patch_emb
        qrows.append([level, f"dense float32 (pool_video_embedding of the {level} vectors)", len(x), "", "", "",
                      "1.0000", *fmt_metrics(retrieval(halves_idx, dense(src)))])
        qrows.append([level, "dense float16 round trip", len(x), "", "", "",
                      f"{float(np.mean(np.sum(xn * f16, 1))):.4f}", "", "", ""])
        qrows.append([level, "K=1 reference: cosine to the normalised mean vector", len(x), "", "", "",
                      f"{float(np.mean(xn @ (mean / np.linalg.norm(mean)))):.4f}", "", "", ""])
        for k in sorted(set(args.ks) | {kk for (lv, kk) in trained if lv == level}):
            if (level, k) not in trained:
                qrows.append([level, f"K={k}: REFUSED", len(x), "", "", "", "", "", "", ""])
                continue
            book, minp, note, train_s = trained[(level, k)]
            tok = ids[(level, k)].reshape(n_frames, -1)
            used = len(np.unique(tok))
            bow = (lambda t, b: (lambda idx: b.bag_of_words(t[idx].ravel())))(tok, book)
            qrows.append([level, f"K={k} ({note})", book.info.train_vectors, f"{book.info.train_vectors / k:.1f}",
                          f"{used}/{k}", f"{train_s:.1f}",
                          f"{mean_cos_to_centroid(book, levels[level], ids[(level, k)]):.4f}",
                          *fmt_metrics(retrieval(halves_idx, bow))])
    print()
    print_table(["level", "representation", "train N", "N/K", "ids used", "train s", "mean cos",
                 "R@1", "R@10", "MRR"], qrows, ["<", "<"] + [">"] * 8)
    print("# mean cos: in-sample (the vectors the dictionary was trained on), each vector vs its centroid, "
          "both normalised. Retrieval: bag_of_words of the half's tokens (patch level: all H*W ids of every "
          "frame), cosine; dense rows pool the half's vectors. Ties count against the right video.")
    for key, w in sorted(worst.items()):
        if w >= TIGHT:
            print(f"# SANITY: {key} assign is not the nearest entry (excess squared distance {w:.2e})")
    print(f"# assign picks a nearest entry for every trained dictionary: {'yes' if ok else 'NO'} "
          f"(max excess squared distance {max(worst.values(), default=0):.1e}, tolerance {TIGHT:g})")
    print(f"# wall time {time.perf_counter() - started:.0f} s, load average {load_average()}")

    k_head = 8192 if 8192 in args.ks else max(args.ks)
    ratio = median(rates[(k_head, default_threads)]["one"]) / clip_fps
    print(f"tokens: {raw_ratio:.0f}x smaller than float32; assign {ratio:.0f}x CLIP throughput at K={k_head}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
