"""The video-vector encoding: bytes, fidelity, and read time in every engine a search team runs.

    python -m bench.bench_embedding --index OUT [--rows 100000] [--repeat 3] [--engines ...]

OUT is an index of real videos written with `--store-frame-embeddings --embedding-dtype float32`
(float32 is the reference every encoding is compared with), e.g.

    vmm extract --input ../shared/media/video --output OUT --clip-model ViT-B-32 \\
        --clip-pretrained none --no-ocr --no-asr --store-frame-embeddings --embedding-dtype float32

Encodings (what `--embedding-dtype` writes, plus raw bytes for comparison):
  float32   fixed_size_list<float32>[D]
  float16   fixed_size_list<float16>[D]
  int8      fixed_size_list<int8>[D] + embedding_scale float32 (vector = codes x scale)
  bytes     binary: the float16 vector's D x 2 little-endian bytes (no engine decodes it in SQL)

1. Fidelity on the index's real vectors (videos and frames): cosine of each decoded vector with
   its float32 original (mean, worst), the error of pairwise cosines, and how many of each vector's
   10 nearest neighbours (by cosine, among the frames) stay the same.
2. Bytes per row of the embedding column(s) in zstd Parquet (column chunk sizes from the footer), on
   a `--rows` table synthesised around the real vectors (each row: a real frame vector plus noise,
   normalised) and written as Beam's WriteToParquet writes (pyarrow's defaults, zstd).
3. Read time of that table in each engine: load `video_id, embedding` into the engine's own
   in-memory form (pyarrow, pandas, Polars, DuckDB -> Arrow, chdb -> Arrow, Spark -> count of a
   cached DataFrame), and the 10 nearest rows to one vector by cosine in plain SQL (DuckDB,
   chdb, Spark), where the engine can read the column at all. Median of `--repeat` runs, sides in
   turn. Spark starts once (local[2]); its start is not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import forward_index as fi
from schemas.index import IndexReader, decode_embeddings

ENCODINGS = ("float32", "float16", "int8", "bytes")
ENGINES = ("pyarrow", "pandas", "polars", "duckdb", "chdb", "spark")


def encode_column(vectors: np.ndarray, encoding: str) -> dict[str, pa.Array]:
    """The Arrow column(s) one encoding writes for `vectors` [N, D]."""
    n, dim = vectors.shape
    if encoding == "bytes":
        raw = vectors.astype("<f2").tobytes()
        return {"embedding": pa.FixedSizeBinaryArray.from_buffers(pa.binary(dim * 2), n, [None, pa.py_buffer(raw)])}
    rows = [fi.encode_embedding(v, encoding) for v in vectors]
    flat = np.concatenate([r["embedding"] for r in rows])
    cols = {"embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat), type=fi.embedding_type(dim, encoding))}
    if encoding == "int8":
        cols[fi.EMBEDDING_SCALE] = pa.array(np.array([r[fi.EMBEDDING_SCALE] for r in rows], np.float32))
    return cols


def decode_column(table: pa.Table, encoding: str) -> np.ndarray:
    if encoding == "bytes":
        column = table.column("embedding").combine_chunks()
        width = column.type.byte_width
        data = np.frombuffer(column.buffers()[1], "<f2", count=len(column) * width // 2)
        return data.reshape(len(column), width // 2).astype(np.float32)
    return decode_embeddings(table)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fidelity(vectors: np.ndarray, encoding: str, neighbours: int = 10) -> dict:
    decoded = decode_column(pa.table(encode_column(vectors, encoding)), encoding)
    ref, got = _unit(vectors.astype(np.float64)), _unit(decoded.astype(np.float64))
    self_cos = np.sum(ref * got, axis=1)
    pair_ref, pair_got = ref @ ref.T, got @ got.T
    err = np.abs(pair_got - pair_ref)[np.triu_indices(len(ref), 1)]
    k = min(neighbours, len(ref) - 1)
    np.fill_diagonal(pair_ref, -np.inf)
    np.fill_diagonal(pair_got, -np.inf)
    nn_ref = np.argsort(-pair_ref, axis=1)[:, :k]
    nn_got = np.argsort(-pair_got, axis=1)[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(nn_ref, nn_got)])
    return {"mean": float(self_cos.mean()), "worst": float(self_cos.min()), "pair_err_mean": float(err.mean()),
            "pair_err_max": float(err.max()), "nn_overlap": float(overlap)}


def synthesize(real: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    """`rows` unit vectors around the real ones: a real vector plus noise of the real vectors' own
    per-dimension spread, normalised (so values keep the real distribution's scale and skew)."""
    rng = np.random.default_rng(seed)
    spread = real.std(axis=0, keepdims=True)
    picks = real[rng.integers(0, len(real), rows)]
    return _unit(picks + rng.standard_normal((rows, real.shape[1])).astype(np.float32) * spread).astype(np.float32)


def write_table(path: str, vectors: np.ndarray, encoding: str) -> dict:
    ids = pa.array([f"{i:016x}" for i in range(len(vectors))])
    table = pa.table({"video_id": ids, **encode_column(vectors, encoding)})
    # Beam's WriteToParquet: pyarrow's ParquetWriter with the codec we pass (zstd) and pyarrow's
    # other defaults (dictionary encoding on: pyarrow falls back to plain where it does not pay).
    pq.write_table(table, path, compression="zstd")
    meta = pq.ParquetFile(path).metadata
    emb = 0
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(g).column(c)
            if col.path_in_schema.split(".")[0] in ("embedding", fi.EMBEDDING_SCALE):
                emb += col.total_compressed_size
    return {"bytes_per_row": emb / len(vectors), "file_bytes": os.path.getsize(path)}


# --- engines: load and nearest-10 by cosine (plain SQL, no UDF) ---------------------------------

def _q_literal(q: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in q) + "]"


class Engines:
    def __init__(self, names, spark_threads: int = 2):
        self.names = names
        self.spark = None
        if "spark" in names:
            from pyspark.sql import SparkSession

            self.spark = (SparkSession.builder.master(f"local[{spark_threads}]").appName("vmm-bench")
                          .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
                          .getOrCreate())
            self.spark.sparkContext.setLogLevel("ERROR")

    def load(self, engine: str, path: str):
        if engine == "pyarrow":
            return pq.read_table(path, columns=["video_id", "embedding"]).num_rows
        if engine == "pandas":
            import pandas as pd

            return len(pd.read_parquet(path, columns=["video_id", "embedding"]))
        if engine == "polars":
            import polars as pl

            return pl.read_parquet(path, columns=["video_id", "embedding"]).height
        if engine == "duckdb":
            import duckdb

            result = duckdb.sql(f"SELECT video_id, embedding FROM read_parquet('{path}')").arrow()
            return (result.read_all() if hasattr(result, "read_all") else result).num_rows  # 2.x: a reader
        if engine == "chdb":
            import chdb

            return chdb.query(f"SELECT video_id, embedding FROM file('{path}', Parquet)", "ArrowTable").num_rows
        if engine == "spark":
            df = self.spark.read.parquet(path).select("video_id", "embedding")
            n = df.cache().count()
            df.unpersist()
            return n
        raise ValueError(engine)

    def nearest_sql(self, engine: str, path: str, encoding: str, q: np.ndarray) -> list[str]:
        """The 10 rows nearest to q by cosine, in the engine's SQL. int8: cosine needs no scale."""
        lit = _q_literal(q)
        if engine == "duckdb":
            import duckdb

            dim = len(q)
            emb = f"embedding::FLOAT[{dim}]"
            sql = (f"SELECT video_id FROM read_parquet('{path}') "
                   f"ORDER BY array_cosine_similarity({emb}, {lit}::FLOAT[{dim}]) DESC LIMIT 10")
            return [r[0] for r in duckdb.execute(sql).fetchall()]
        if engine == "chdb":
            import chdb

            emb = "arrayMap(x -> assumeNotNull(x), embedding)"  # Parquet list items read as Nullable
            sql = (f"SELECT video_id FROM file('{path}', Parquet) "
                   f"ORDER BY cosineDistance({emb}, CAST({lit} AS Array(Float32))) ASC LIMIT 10")
            return chdb.query(sql, "ArrowTable").column("video_id").to_pylist()
        if engine == "spark":
            self.spark.read.parquet(path).createOrReplaceTempView("v")
            emb = "transform(embedding, x -> CAST(x AS FLOAT))" if encoding == "int8" else "embedding"
            sql = (f"SELECT video_id FROM v ORDER BY vector_cosine_similarity({emb}, "
                   f"array({lit[1:-1]})::ARRAY<FLOAT>) DESC LIMIT 10")
            return [r[0] for r in self.spark.sql(sql).collect()]
        raise ValueError(engine)

    def stop(self):
        if self.spark is not None:
            self.spark.stop()


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _error(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{type(e).__name__}: {text[:110]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="an index with float32 video and frame embeddings")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--encodings", default=",".join(ENCODINGS))
    args = parser.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    encodings = [e for e in args.encodings.split(",") if e]

    index = IndexReader(args.index)
    meta = index.metadata
    if meta.get("vmm.embedding_dtype") != "float32":
        raise SystemExit(f"{args.index} holds {meta.get('vmm.embedding_dtype')} vectors; the reference is float32")
    _, videos = index.embeddings()
    _, frames = index.embeddings("frames", columns=["video_id", "frame_index"])
    print(f"index {args.index}: {len(videos)} videos, {len(frames)} frames, CLIP {meta['vmm.clip_model']} "
          f"weights={meta['vmm.clip_weights']} dim={videos.shape[1]}")
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    for name, vecs in (("videos", videos), ("frames", frames)):
        unit = _unit(vecs.astype(np.float64))
        pairs = (unit @ unit.T)[np.triu_indices(len(unit), 1)]
        print(f"pairwise cosine among the {name}: min {pairs.min():.4f} mean {pairs.mean():.4f} max {pairs.max():.4f}")

    print("\n1. fidelity vs float32 (cosine of decoded with original; pairwise cosine error; 10-NN kept)")
    print(f"{'encoding':9} {'set':7} {'mean cos':>10} {'worst cos':>10} {'pair err mean':>14} {'pair err max':>13} "
          f"{'10-NN kept':>10}")
    for encoding in encodings:
        for name, vecs in (("videos", videos), ("frames", frames)):
            f = fidelity(vecs, encoding)
            print(f"{encoding:9} {name:7} {f['mean']:10.7f} {f['worst']:10.7f} {f['pair_err_mean']:14.2e} "
                  f"{f['pair_err_max']:13.2e} {f['nn_overlap']:10.3f}")

    synth = synthesize(frames, args.rows)
    q = synth[0]
    engine_set = Engines(engines)
    try:
        with tempfile.TemporaryDirectory(prefix="vmm-bench-emb-") as tmp:
            paths, sizes = {}, {}
            for encoding in encodings:
                paths[encoding] = os.path.join(tmp, f"{encoding}.parquet")
                sizes[encoding] = write_table(paths[encoding], synth, encoding)
            print(f"\n2. bytes per row of the embedding column(s), zstd, {args.rows} rows")
            for encoding in encodings:
                s = sizes[encoding]
                print(f"{encoding:9} {s['bytes_per_row']:8.1f} B/row   file {s['file_bytes'] / 1e6:7.2f} MB")

            truth = np.argsort(-(_unit(synth) @ q))[:10]
            truth_ids = {f"{i:016x}" for i in truth}
            print(f"\n3. read time of {args.rows} rows, median of {args.repeat} (s); 'nn': 10 nearest by cosine in SQL")
            results: dict[tuple[str, str, str], list[float]] = {}
            failures: dict[tuple[str, str, str], str] = {}
            recall: dict[tuple[str, str], float] = {}
            for r in range(args.repeat):
                order = encodings if r % 2 == 0 else encodings[::-1]
                for encoding in order:
                    for engine in engines:
                        key = (engine, encoding, "load")
                        if key not in failures:
                            try:
                                dt, _ = _timed(lambda: engine_set.load(engine, paths[encoding]))
                                results.setdefault(key, []).append(dt)
                            except Exception as e:  # noqa: BLE001 -- an engine refusing a type is a result
                                failures[key] = _error(e)
                        if engine in ("duckdb", "chdb", "spark") and encoding != "bytes":
                            key = (engine, encoding, "nn")
                            if key in failures:
                                continue
                            try:
                                dt, got = _timed(lambda: engine_set.nearest_sql(engine, paths[encoding], encoding, q))
                                results.setdefault(key, []).append(dt)
                                recall[(engine, encoding)] = len(truth_ids & set(got)) / 10
                            except Exception as e:  # noqa: BLE001
                                failures[key] = _error(e)
            header = f"{'engine':8} " + " ".join(f"{e + ' load':>13} {e + ' nn':>11}" for e in encodings)
            print(header)
            for engine in engines:
                cells = []
                for encoding in encodings:
                    for what, width in (("load", 13), ("nn", 11)):
                        key = (engine, encoding, what)
                        if key in results:
                            cell = f"{statistics.median(results[key]):.3f}"
                            if what == "nn":
                                cell += f"/{recall[(engine, encoding)]:.1f}"
                        elif key in failures:
                            cell = "FAILS"
                        else:
                            cell = "-"
                        cells.append(f"{cell:>{width}}")
                print(f"{engine:8} " + " ".join(cells))
            print("(nn cells: seconds/recall of the float32 brute-force top 10)")
            for key, message in sorted(failures.items()):
                print(f"  {key[0]} {key[1]} {key[2]}: {message}")
    finally:
        engine_set.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
