"""`vmm score` against a plain Python loop, on a synthetic index and a log with realistic query
repetition:

    python -m bench.bench_score --pairs 1000000 --queries 50000 --videos 20000

Data: a forward index the way vmm extract commits one (int8 video vectors of bench/search_data's
CLIP-like distribution, mixed Chinese/English text in the four fields, 8 keyframes a video as
int16 tokens of a K=8192 dictionary), metadata ViT-B-32 with random weights (the real text tower's
cost; the vectors carry no meaning). The log: `--pairs` pairs over `--queries` distinct queries
drawn Zipf(1.1) (a query log repeats its head heavily), videos uniform, 1 % of them absent.

Measured, in one run:
  * `vmm score` through the CLI on DirectRunner (`--direct_num_workers 2`, multi_threading): wall
    time, pairs per second, peak RSS, and the text tower's share (its own counter);
  * the text tower alone: distinct queries x the time to encode one query in batches of 64, the
    floor of any pipeline that encodes every distinct query once;
  * the plain loop a user would write: for each pair, encode its query (batch of one) and read
    its video's rows (videos, frames) from the index with a pushed-down filter, then compute the
    same features with models.ranking (it is given the BM25 statistics for free); timed on
    `--loop-pairs` pairs and extrapolated;
  * bytes read per pair: the compressed bytes of the columns vmm score reads, over the pairs, vs
    every column of the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench._common import load_average, print_table

RUN_ID = "20260101T000000-0000beef"
MODEL = "ViT-B-32"
FRAMES_PER_VIDEO = 8
K = 8192


def write_index(root: str, n: int, seed: int) -> str:
    """A synthetic forward index (videos + frames with tokens) and its frame dictionary; returns
    the dictionary's folder."""
    from bench.search_data import FIELDS, TextGenerator, clip_like_vectors
    from models.codebook import Codebook, CodebookInfo, array_sha256
    from schemas import forward_index as fi

    rng = np.random.default_rng(seed)
    centroids = clip_like_vectors(K, 512, seed=seed + 1)
    info = CodebookInfo(k=K, dim=512, level="frame", metric="l2", clip_model=MODEL, clip_weights="none",
                        sha256=array_sha256(centroids), train_vectors=0, iterations=0, seed=seed, normalized=True)
    book = Codebook(centroids, info)
    book_dir = os.path.join(root, "dict")
    book.save(book_dir)
    meta = fi.file_metadata(clip_model=MODEL, clip_weights="none", extra={
        **fi.embedding_metadata("int8", 512), "vmm.codebook_id": book.id, "vmm.codebook_k": str(K)})
    schema_meta = {k.encode(): v.encode() for k, v in meta.items()}
    gen = TextGenerator(seed)
    for table in ("videos", "frames", "_runs"):
        os.makedirs(os.path.join(root, "index", table), exist_ok=True)
    step = 50_000
    shards = (n + step - 1) // step
    for s, start in enumerate(range(0, n, step)):
        m = min(step, n - start)
        ids = [f"v{start + i:08d}" for i in range(m)]
        docs = [gen.doc() for _ in range(m)]
        vec = clip_like_vectors(m, 512, seed=seed + 10 + s)
        scale = np.abs(vec).max(axis=1) / 127.0
        codes = np.round(vec / scale[:, None]).astype(np.int8)
        cols = {"video_id": pa.array(ids), "uri": pa.array([f"synthetic://{i}" for i in ids]),
                "duration_s": pa.array(rng.uniform(5, 600, m)),
                "num_keyframes": pa.array(np.full(m, FRAMES_PER_VIDEO, np.int32)),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1), pa.int8()), 512),
                "embedding_scale": pa.array(scale.astype(np.float32)),
                "topic_coherence": pa.array(rng.uniform(0.3, 1, m).astype(np.float32)),
                "title_visual_similarity": pa.array(rng.uniform(-0.1, 0.4, m).astype(np.float32)),
                "speech_seconds": pa.array(rng.uniform(0, 300, m))}
        for f in FIELDS:
            cols[f] = pa.array([d[f] for d in docs], pa.string())
        cols["ocr_overlay_text"] = pa.array([None] * m, pa.string())
        name = f"part-{RUN_ID}-{s:05d}-of-{shards:05d}.parquet"
        pq.write_table(pa.table(cols).replace_schema_metadata(schema_meta),
                       os.path.join(root, "index", "videos", name), compression="zstd")
        f = FRAMES_PER_VIDEO
        frames = {"video_id": pa.array(np.repeat(ids, f).tolist()),
                  "frame_index": pa.array(np.tile(np.arange(f, dtype=np.int64) * 25, m)),
                  "timestamp_s": pa.array(np.tile(np.arange(f, dtype=np.float64), m)),
                  "reason": pa.array(["scene"] * (m * f)),
                  "token": pa.array(rng.integers(0, K, m * f).astype(np.int16)),
                  "patch_tokens": pa.array([None] * (m * f), pa.list_(pa.int16()))}
        pq.write_table(pa.table(frames).replace_schema_metadata(schema_meta),
                       os.path.join(root, "index", "frames", name), compression="zstd")
    with open(os.path.join(root, "index", "_runs", f"{RUN_ID}.json"), "w") as fh:
        json.dump({"run_id": RUN_ID}, fh)
    return book_dir


def write_pairs(path: str, n: int, queries: int, videos: int, seed: int) -> list[str]:
    from bench.search_data import TextGenerator

    gen = TextGenerator(seed + 100)
    texts = list(dict.fromkeys(gen.query(int(t)) for t in gen.rng.integers(1, 5, queries * 2)))[:queries]
    rng = np.random.default_rng(seed)
    p = np.arange(1, len(texts) + 1, dtype=np.float64) ** -1.1
    cdf = np.cumsum(p / p.sum())
    qi = np.minimum(np.searchsorted(cdf, rng.random(n)), len(texts) - 1)
    # every distinct query appears at least once: the first `queries` pairs take one each
    qi[:len(texts)] = np.arange(len(texts))
    rng.shuffle(qi)
    vi = rng.integers(0, videos, n)
    ids = np.array([f"v{i:08d}" for i in range(videos)], dtype=object)[vi]
    ids[rng.random(n) < 0.01] = "absent"
    table = pa.table({"query": pa.array(np.array(texts, dtype=object)[qi].tolist()), "video_id": pa.array(ids.tolist()),
                      "label": pa.array(rng.integers(0, 2, n)), "position": pa.array(rng.integers(1, 50, n))})
    pq.write_table(table, path, compression="zstd")
    return texts


def text_tower_ms(texts: list[str], batch: int = 64, sample: int = 1024) -> float:
    """ms to encode one query with the ViT-B-32 text tower in batches of `batch` (model loaded)."""
    from models.query import QueryEncoder

    enc = QueryEncoder(MODEL, "none", "none", threads=2)
    enc.load()
    enc.encode_texts(texts[:batch])
    chunk = texts[:sample]
    started = time.perf_counter()
    for i in range(0, len(chunk), batch):
        enc.encode_texts(chunk[i:i + batch])
    return 1000 * (time.perf_counter() - started) / len(chunk)


def plain_loop(index: str, book_dir: str, pairs: str, limit: int) -> tuple[float, int]:
    """Seconds per pair of the loop a user would write (see the module doc), over `limit` pairs."""
    import pyarrow.compute as pc

    from models import ranking
    from models.codebook import Codebook
    from models.query import QueryEncoder
    from schemas.index import IndexReader, decode_embeddings

    reader = IndexReader(index)
    enc = QueryEncoder(MODEL, "none", "none", threads=2)
    enc.load()
    centroids = ranking.normalize(Codebook.load(book_dir).centroids)
    # The loop gets BM25's whole-index statistics for free (computed once, outside the timing).
    stats = ranking.CorpusStats(0, {})
    texts = reader.table("videos", columns=["video_id", *ranking.TEXT_FIELDS])
    for row in texts.to_pylist():
        stats = stats.plus(ranking.CorpusStats.of({f: ranking.field_text(row[f]) for f in ranking.TEXT_FIELDS}))
    log = pq.read_table(pairs).slice(0, limit).to_pylist()
    dfs: dict = {}
    started = time.perf_counter()
    for pair in log:
        vec = enc.encode_texts([pair["query"]])[0]
        query = ranking.encode_query(pair["query"], vec)
        videos = reader.table("videos", filter=pc.field("video_id") == pair["video_id"])
        if not videos.num_rows:
            continue
        frames = reader.table("frames", columns=["frame_index", "reason", "token"],
                              filter=pc.field("video_id") == pair["video_id"])
        v = ranking.normalize(decode_embeddings(videos)[0])
        ranking.frame_features(query.vector, centroids[frames.column("token").to_numpy().astype(np.int64)])
        float(v @ query.vector)
        row = videos.to_pylist()[0]
        for f in ranking.TEXT_FIELDS:
            ranking.text_features(query, f, ranking.field_text(row[f]), dfs, stats)
    return (time.perf_counter() - started) / len(log), len(log)


def bytes_read(index: str, columns: dict[str, list[str]]) -> tuple[int, int]:
    """(compressed bytes of `columns` per table, compressed bytes of every column) over the index."""
    from schemas.index import IndexReader

    reader = IndexReader(index)
    wanted = total = 0
    for table, cols in columns.items():
        for path in reader.files(table):
            md = pq.ParquetFile(path).metadata
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                for c in range(rg.num_columns):
                    col = rg.column(c)
                    top = col.path_in_schema.split(".")[0]
                    total += col.total_compressed_size
                    if top in cols:
                        wanted += col.total_compressed_size
    return wanted, total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=50_000)
    ap.add_argument("--videos", type=int, default=20_000)
    ap.add_argument("--loop-pairs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="keep the data here (default: a temporary folder)")
    args = ap.parse_args(argv)
    root = args.workdir or tempfile.mkdtemp(prefix="bench_score_")
    os.makedirs(root, exist_ok=True)
    try:
        started = time.perf_counter()
        book = write_index(root, args.videos, args.seed)
        texts = write_pairs(os.path.join(root, "pairs.parquet"), args.pairs, args.queries, args.videos, args.seed)
        print(f"data: {args.videos} videos, {args.pairs} pairs over {len(texts)} distinct queries "
              f"({time.perf_counter() - started:.0f} s to generate); load average {load_average()}", flush=True)

        per_query_ms = text_tower_ms(texts)
        print(f"text tower alone: {per_query_ms:.2f} ms a query in batches of 64", flush=True)

        out = os.path.join(root, "feats")
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-c",
               "import sys; from pipelines.score import main; rc = main(sys.argv[1:]); "
               "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]; "
               "print('peak_rss_mib', int(hwm.split()[1]) // 1024); sys.exit(rc)",
               "--pairs", os.path.join(root, "pairs.parquet"), "--index", os.path.join(root, "index"),
               "--output", out, "--codebook", book, "--no-progress", "--direct_num_workers", "2",
               "--direct_running_mode", "multi_threading"]
        load_before = load_average()
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - started
        print(proc.stdout, proc.stderr[-2000:] if proc.returncode else "", flush=True)
        if proc.returncode:
            return proc.returncode
        peak = int(proc.stdout.split("peak_rss_mib")[1].split()[0])
        queries_line = proc.stdout.split("distinct encoded in ")[1].split("\n")[0]
        batches = int(queries_line.split(" batches")[0])
        encode_s = float(queries_line.split(", ")[1].split(" s")[0])

        loop_s, loop_n = plain_loop(os.path.join(root, "index"), book, os.path.join(root, "pairs.parquet"),
                                    args.loop_pairs)
        from pipelines.score import VIDEO_COLUMNS

        cols = {"videos": [*VIDEO_COLUMNS, "embedding", "embedding_scale"],
                "frames": ["video_id", "frame_index", "reason", "token"]}
        wanted, total = bytes_read(os.path.join(root, "index"), cols)
        rows = [
            ("vmm score (DirectRunner, 2 threads)", f"{wall:.0f} s", f"{args.pairs / wall:,.0f}", "1.0x"),
            (f"plain loop (measured on {loop_n} pairs, x {args.pairs:,})", f"{loop_s * args.pairs:,.0f} s",
             f"{1 / loop_s:,.1f}", f"{loop_s * args.pairs / wall:,.1f}x slower"),
        ]
        print_table(["what", "wall", "pairs/s", "vs vmm score"], rows)
        print(f"text tower: {len(texts)} distinct queries x {per_query_ms:.2f} ms = "
              f"{len(texts) * per_query_ms / 1000:.0f} s expected; the pipeline's encode counter: {encode_s:.0f} s "
              f"in {batches} batches ({len(texts) / max(batches, 1):.1f} queries a batch) "
              f"(the loop encodes {args.pairs:,} times: {args.pairs * per_query_ms / 1000:,.0f} s in batches, more at batch 1)")
        log_bytes = os.path.getsize(os.path.join(root, "pairs.parquet"))
        print(f"bytes read per pair: {wanted / args.pairs:,.1f} of the index (the columns vmm score reads, each "
              f"file once) vs {total / args.pairs:,.1f} (every column of videos and frames), plus "
              f"{log_bytes / args.pairs:,.1f} of the pair log")
        print(f"peak RSS {peak} MiB; load average before {load_before}, after {load_average()}")
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
