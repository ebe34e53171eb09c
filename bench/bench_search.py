"""Search benchmarks: the vector index, BM25, and `Searcher.search` end to end, against the simplest
way a user would do the same (numpy brute force over the vectors; bm25s, the other maintained
BM25 library; the same Searcher with a brute-force vector queue). Run each size in its own process
(peak memory is per process):

    python -m bench.bench_search vectors --n 200000            # + --kind flat|hnsw|hnswpca|ivfsq|ivfpq to force one
    python -m bench.bench_search text --n 200000               # tantivy vs bm25s, 4 weighted fields
    python -m bench.bench_search e2e --n 200000                # vmm index + Searcher.search, ViT-B-32 text tower

Data (bench/search_data.py): 512-d CLIP-like vectors (a narrow cone, mean pairwise cosine ~0.4, a
long-tailed spectrum, Zipf-sized overlapping topics) and mixed Chinese/English documents with
Zipf-distributed terms in the four text fields. Every figure is one thread unless said.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import tempfile
import time

import numpy as np

from bench._common import load_average, print_table


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _percentiles(ts: list[float]) -> tuple[float, float]:
    ts = sorted(ts)
    return 1000 * ts[len(ts) // 2], 1000 * ts[min(len(ts) - 1, int(len(ts) * 0.99))]


def _dir_size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _forced_choice(ann, kind: str, n: int, dim: int = 512):
    """The AnnChoice of `kind` for n vectors as plan_index would make it, whatever the count."""
    for budget in (1 << 50, ann.hnswpca_memory(n, dim), n * (dim + 8) + ann.ivf_params(n, dim)["nlist"] * dim * 4,
                   ann.ivf_memory(n, dim)):
        choice = ann.plan_index(n, dim, budget)
        if choice.kind == kind:
            return dataclasses.replace(choice, reason="forced")
    if kind == "hnsw":
        return ann.AnnChoice("hnsw", n, dim, f"HNSW{ann.HNSW_M},Flat", ann.hnsw_memory(n, dim), "forced",
                             params={"M": ann.HNSW_M, "efConstruction": ann.HNSW_EF_CONSTRUCTION})
    return ann.AnnChoice("flat", n, dim, "Flat", n * dim * 4, "forced")


def bench_vectors(args) -> dict:
    import faiss

    from bench.search_data import clip_like_vectors, mean_pairwise_cosine
    from models import ann

    tmp = tempfile.mkdtemp(prefix="vmm-bench-ann-")
    try:
        t = time.perf_counter()
        vec_path = args.vectors_file or os.path.join(tmp, "vectors.f16")
        if not (os.path.exists(vec_path) and os.path.getsize(vec_path) >= args.n * 1024):
            with open(vec_path, "wb") as f:
                for start in range(0, args.n, 100_000):
                    m = min(100_000, args.n - start)
                    f.write(clip_like_vectors(m, 512, seed=args.seed, topics=20000, start=start).astype(np.float16).tobytes())
        gen_s = time.perf_counter() - t
        x = np.memmap(vec_path, dtype=np.float16, mode="r", shape=(args.n, 512))  # a longer file's first n rows
        base_rss = _peak_mib()
        budget = int(args.max_memory_gib * 2**30)
        choice = ann.plan_index(args.n, 512, budget)
        if args.kind and args.kind != choice.kind:
            choice = _forced_choice(ann, args.kind, args.n)
        faiss.omp_set_num_threads(args.build_threads)
        path = args.index_file or os.path.join(tmp, "vector.faiss")
        t, c = time.perf_counter(), _cpu_s()
        if args.index_file and os.path.exists(args.index_file):  # built by an earlier run: not timed again
            index = ann.VectorIndex.load(args.index_file, choice, x)
            build_s = build_cpu = None
        else:
            index = ann.VectorIndex(ann.build_index(x, choice, seed=args.seed), choice, x)
            build_s, build_cpu = round(time.perf_counter() - t, 1), round(_cpu_s() - c, 1)
            index.save(path)
        faiss.omp_set_num_threads(1)
        t = time.perf_counter()
        tuned = index.tune(queries=args.tune_queries, seed=args.seed)
        tune_s = time.perf_counter() - t
        # Fresh queries (not the tuning sample): held-out rows, with their exact neighbours.
        rng = np.random.default_rng(args.seed + 1)
        rows = np.sort(rng.choice(args.n, size=min(args.queries, args.n), replace=False))
        truth = ann.exact_neighbours(x, rows, 10)
        q = np.asarray(x[rows], np.float32)
        ts, found = [], []
        for i in range(len(rows)):
            t0 = time.perf_counter()
            _, r = index.search(q[i:i + 1], 10, exclude=rows[i:i + 1])
            ts.append(time.perf_counter() - t0)
            found.append(r[0])
        recall = float(np.mean([len(set(f) & set(tr)) / 10 for f, tr in zip(found, truth)]))
        p50, p99 = _percentiles(ts)
        sweep = _sweep(ann, index, x, rows, q, truth, args) if args.sweep else None
        text = _text_like(index, x, args) if args.text_queries != 0 else None
        # The naive side: numpy brute force over float32 vectors in RAM, one query at a time.
        naive_n = min(args.n, args.naive_max)
        xf = np.asarray(x[:naive_n], np.float32)
        nts = []
        for i in range(min(50, len(rows))):
            t0 = time.perf_counter()
            s = xf @ q[i]
            top = np.argpartition(-s, 11)[:11]
            top[np.argsort(-s[top])]
            nts.append(time.perf_counter() - t0)
        np50, _ = _percentiles(nts)
        # faiss' exact index (IndexFlatIP, one thread) over the same float32 rows.
        flat = faiss.IndexFlatIP(512)
        flat.add(xf)
        fts = []
        for i in range(min(50, len(rows))):
            t0 = time.perf_counter()
            flat.search(q[i:i + 1], 11)
            fts.append(time.perf_counter() - t0)
        fp50, _ = _percentiles(fts)
        del flat, xf
        out = {
            "what": "vectors", "n": args.n, "kind": tuned.kind, "factory": tuned.factory, "search": tuned.search,
            "mean_pairwise_cosine": round(mean_pairwise_cosine(np.asarray(x[:20000], np.float32)), 3),
            "gen_s": round(gen_s, 1), "build_s": build_s, "build_cpu_s": build_cpu,
            "tune_s": round(tune_s, 1), "tune_queries": tuned.tune_queries, "heldout_queries": len(rows),
            "build_threads": args.build_threads,
            "peak_rss_mib": round(_peak_mib(), 0), "rss_before_build_mib": round(base_rss, 0),
            "index_mib": round(_dir_size(path) / 2**20, 1), "vectors_f16_mib": round(_dir_size(vec_path) / 2**20, 1),
            "recall_at_10_tuning_sample": tuned.recall_at_10_tuning,
            "recall_at_10_recorded": tuned.recall_at_10, "recall_at_10_bench_heldout": round(recall, 4),
            "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
            "naive_numpy_p50_ms": round(np50 * args.n / naive_n, 3), "faiss_flat_p50_ms": round(fp50 * args.n / naive_n, 3),
            "naive_measured_on": naive_n, "speedup_vs_numpy": round(np50 * args.n / naive_n / p50, 1),
            "speedup_vs_faiss_flat": round(fp50 * args.n / naive_n / p50, 1),
            "load_average": load_average(),
        }
        if sweep is not None:
            out["sweep"] = sweep
        if text is not None:
            out["text_like_queries"] = text
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _text_like(index, x, args) -> dict:
    """Text-query vectors shaped by CLIP's modality gap (`search_data.text_like_queries`): the
    setting `vmm index --text-queries` tunes on them (`tune_text`), then, on other queries of the
    same shape, recall@10 and p50 with it against the setting tuned on the index's own vectors."""
    from bench.search_data import text_like_queries
    from models import ann

    dim = x.shape[1]
    t = time.perf_counter()
    per_sample = args.text_queries or 500
    tuned = index.tune_text(text_like_queries(2 * per_sample, dim, args.seed, query_seed=1), seed=args.seed)
    tune_s = time.perf_counter() - t
    fresh = text_like_queries(args.queries, dim, args.seed, query_seed=2)
    top, truth = ann.exact_search(x, fresh, 10)
    head = np.asarray(x[:20000], np.float32)  # the index's own vectors' nearest other vector, for comparison
    own = head[np.random.default_rng(args.seed).choice(len(head), 200, replace=False)] @ head.T
    out = {"tune_s": round(tune_s, 1), "tune_queries": tuned.text_tune_queries,
           "recorded_recall_at_10": tuned.text_recall_at_10, "recorded_recall_at_10_untuned": tuned.text_recall_at_10_before,
           "top1_inner_product_text": round(float(np.median(top[:, 0])), 3),
           "top1_inner_product_own": round(float(np.median(np.sort(own, axis=1)[:, -2])), 3)}
    for name, setting in (("own_vector_setting", tuned.search), ("text_setting", tuned.search_text)):
        ts, found = [], []
        for i in range(len(fresh)):
            t0 = time.perf_counter()
            found.append(index.search(fresh[i:i + 1], 10, setting=setting)[1][0])
            ts.append(time.perf_counter() - t0)
        p50, p99 = _percentiles(ts)
        out[name] = {"setting": setting, "recall_at_10": _recall(found, truth), "p50_ms": round(p50, 3),
                     "p99_ms": round(p99, 3)}
        print("text-like queries", name, out[name], flush=True)
    return out


def _recall(found, truth) -> float:
    return round(float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])), 4)


def _sweep(ann, index, x, rows, q, truth, args) -> dict:
    """What limits recall, on the held-out queries: recall and p50 for every (efSearch, re-ranking
    depth) of a grid, and the ceiling of the projection itself: each query's exact top R in the
    PCA space (what a perfect graph would return), re-ranked exactly, for the index's PCA and a
    wider one."""
    import faiss

    out = {"grid": []}
    kind = index.choice.kind
    depths = (2, 5, 10, 20, 40) if kind in ann.RERANKED else (1,)
    for rf in depths:
        for ef in (32, 64, 128, 192, 256, 384, 512, 768, 1024):
            if ef < 10 * rf:
                continue
            setting = {"efSearch": ef, "refine_factor": rf} if kind == "hnswpca" else {"efSearch": ef}
            ts, found = [], []
            for i in range(len(rows)):
                t0 = time.perf_counter()
                found.append(index.search(q[i:i + 1], 10, setting=setting, exclude=rows[i:i + 1])[1][0])
                ts.append(time.perf_counter() - t0)
            p50, _ = _percentiles(ts)
            out["grid"].append({**setting, "recall_at_10": _recall(found, truth), "p50_ms": round(p50, 3)})
            print("sweep", out["grid"][-1], flush=True)
    if kind != "hnswpca":
        return out
    n = len(x)
    rng = np.random.default_rng(args.seed)
    train = np.asarray(x[np.sort(rng.choice(n, size=min(n, ann.PCA_TRAIN), replace=False))], np.float32)
    out["ceiling"] = {}
    for dim in (ann.PCA_DIM, 2 * ann.PCA_DIM):
        pca = faiss.PCAMatrix(x.shape[1], dim)
        pca.train(train)
        proj = np.empty((n, dim), np.float32)
        for start in range(0, n, 65536):
            proj[start:start + 65536] = pca.apply(np.ascontiguousarray(x[start:start + 65536], np.float32))
        flat = faiss.IndexFlatL2(dim)
        flat.add(proj)
        del proj
        faiss.omp_set_num_threads(args.build_threads)
        _, cand = flat.search(pca.apply(q), 10 * 80 + 1)
        faiss.omp_set_num_threads(1)
        del flat
        for rf in (1, 2, 5, 10, 20, 40, 80):
            found = []
            for i in range(len(rows)):
                c = cand[i][cand[i] != rows[i]][: 10 * rf]
                s = np.asarray(x[np.sort(c)], np.float32) @ q[i]
                found.append(np.sort(c)[np.argsort(-s, kind="stable")[:10]])
            out["ceiling"][f"pca{dim}_rerank{10 * rf}"] = _recall(found, truth)
            print("ceiling", dim, 10 * rf, out["ceiling"][f"pca{dim}_rerank{10 * rf}"], flush=True)
    return out


def _text_docs(n: int, seed: int):
    from bench.search_data import TextGenerator

    gen = TextGenerator(seed)
    return gen, [gen.doc() for _ in range(n)]


def _text_search_parts(index, queries) -> dict:
    """Where `TextIndex.search` spends its time, piece by piece over the same queries: analysis,
    building the tantivy query in Python, tantivy's search (k = 100; also k = 10 and with a hit
    count: equal times mean no top-k pruning happened), reading the rows of the hits (fast field)
    and the final sort. p50 / p99 in ms."""
    from models.bm25 import ROW

    parts = {k: [] for k in ("analysis", "query_build", "tantivy_search", "tantivy_search_k10",
                             "tantivy_search_counted", "rows_and_sort")}
    searcher = index.searcher
    for q in queries:
        t0 = time.perf_counter()
        terms = index.query_terms(q)
        t1 = time.perf_counter()
        if not terms:
            continue
        query = index.query(terms)
        t2 = time.perf_counter()
        hits = searcher.search(query, limit=100, count=False).hits
        t3 = time.perf_counter()
        rows = searcher.fast_field_values(ROW, [addr for _, addr in hits]) if hits else []
        sorted(((int(r), float(s)) for (s, _), r in zip(hits, rows)), key=lambda rs: (-rs[1], rs[0]))
        t4 = time.perf_counter()
        searcher.search(query, limit=10, count=False)
        t5 = time.perf_counter()
        searcher.search(query, limit=100, count=True)
        t6 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t6 - t5, t4 - t3)):
            parts[key].append(dt)
    out = {}
    for key, ts in parts.items():
        p50, p99 = _percentiles(ts)
        out[f"part_{key}_p50_ms"], out[f"part_{key}_p99_ms"] = round(p50, 3), round(p99, 3)
    return out


def _text_shards(index, path: str, docs: list, queries: list[str], weights: dict, shards: int) -> dict:
    """The same documents split into `shards` text indexes by video id as `vmm index --shards` splits
    them (each with its own BM25 statistics), searched the way Searcher fans a query out: shard 0 on
    the calling thread, the others on a pool, results merged by score. Alternates with the single
    index, query by query; reports p50 / p99 of both and how far the merged top-k agrees with it."""
    import concurrent.futures

    from models.bm25 import TextIndex
    from pipelines.index import shard_of

    parts = []
    for s in range(shards):
        part = f"{path}-shard{s}of{shards}"
        if not os.path.exists(os.path.join(part, "meta.json")):
            idx = TextIndex(part, weights)
            idx.add((i, d) for i, d in enumerate(docs) if shard_of(f"v{i:09d}", shards) == s)
        parts.append(TextIndex(part, weights))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))

    def fan_out(q: str, k: int = 100):
        rest = [pool.submit(p.search, q, k) for p in parts[1:]]
        hits = parts[0].search(q, k) + [h for f in rest for h in f.result()]
        return sorted(hits, key=lambda h: (-h[1], h[0]))[:k]

    one, many, seq, overlap10, overlap100, same_first = [], [], [], [], [], 0
    for q in queries:
        t0 = time.perf_counter()
        full = index.search(q, 100)
        t1 = time.perf_counter()
        merged = fan_out(q)
        t2 = time.perf_counter()
        sorted((h for p in parts for h in p.search(q, 100)), key=lambda h: (-h[1], h[0]))
        t3 = time.perf_counter()
        one.append(t1 - t0)
        many.append(t2 - t1)
        seq.append(t3 - t2)
        a, b = [r for r, _ in full], [r for r, _ in merged]
        if a:
            overlap10.append(len(set(a[:10]) & set(b[:10])) / len(a[:10]))
            overlap100.append(len(set(a) & set(b)) / len(a))
            same_first += bool(b) and a[0] == b[0]
    pool.shutdown()
    o50, o99 = _percentiles(one)
    m50, m99 = _percentiles(many)
    s50, s99 = _percentiles(seq)
    return {"shards": shards, "one_index_p50_ms": round(o50, 3), "one_index_p99_ms": round(o99, 3),
            "shards_parallel_p50_ms": round(m50, 3), "shards_parallel_p99_ms": round(m99, 3),
            "shards_sequential_p50_ms": round(s50, 3), "shards_sequential_p99_ms": round(s99, 3),
            "speedup_p50": round(o50 / m50, 2),
            "overlap_at_10": round(float(np.mean(overlap10)), 4), "overlap_at_100": round(float(np.mean(overlap100)), 4),
            "same_first": round(same_first / max(1, len(overlap10)), 4)}


def bench_text(args) -> dict:
    from bench.search_data import FIELDS
    from models.bm25 import TextIndex
    from models.text import analyze

    if not args.no_bm25s:  # refused before the minutes of building, not after
        try:
            import bm25s  # noqa: F401
        except ImportError as e:
            raise SystemExit("bench_search text: bm25s is not installed (it is not one of vmm's "
                             "dependencies): pip install bm25s, or pass --no-bm25s") from e
    weights = {"title": 2.0, "ocr_subtitle_text": 1.0, "ocr_scene_text": 0.7, "asr_text": 1.0}
    gen, docs = _text_docs(args.n, args.seed)
    queries = [gen.query(3) for _ in range(args.queries)]
    tmp = tempfile.mkdtemp(prefix="vmm-bench-bm25-")
    try:
        path = args.text_index or os.path.join(tmp, "text")
        t = time.perf_counter()
        if os.path.exists(os.path.join(path, "meta.json")):  # built by an earlier run: not timed again
            index = TextIndex(path, weights)
            tantivy_build = None
        else:
            index = TextIndex(path, weights)
            index.add(enumerate(docs))
            tantivy_build = round(time.perf_counter() - t, 1)
        ts = []
        for q in queries:
            t0 = time.perf_counter()
            index.search(q, 100)
            ts.append(time.perf_counter() - t0)
        t50, t99 = _percentiles(ts)
        out = {"what": "text", "n": args.n, "tantivy_build_s_incl_analysis": tantivy_build,
               "tantivy_p50_ms": round(t50, 3), "tantivy_p99_ms": round(t99, 3),
               **_text_search_parts(index, queries),
               "tantivy_index_mib": round(_dir_size(path) / 2**20, 1),
               "peak_rss_tantivy_mib": round(_peak_mib(), 0)}
        if args.shards > 1:
            out.update(_text_shards(index, path, docs, queries, weights, args.shards))
        if not args.no_bm25s:  # bm25s takes analysed tokens: the analysis is timed on its own
            import bm25s

            t = time.perf_counter()
            tokens = {f: [analyze(d[f]) for d in docs] for f in FIELDS}
            out["analysis_s"] = round(time.perf_counter() - t, 1)
            t = time.perf_counter()
            per_field = {}
            for f in FIELDS:
                r = bm25s.BM25()
                r.index(tokens[f], show_progress=False)
                per_field[f] = r
            bm25s_build = time.perf_counter() - t
            ts = []
            for q in queries:
                t0 = time.perf_counter()
                terms = analyze(q)
                acc: dict[int, float] = {}
                for f, r in per_field.items():
                    ids = [r.vocab_dict[x] for x in terms if x in r.vocab_dict]
                    if not ids:
                        continue
                    d, s = r.retrieve([ids], k=100, show_progress=False)
                    for doc, score in zip(d[0], s[0]):
                        acc[int(doc)] = acc.get(int(doc), 0.0) + weights[f] * float(score)
                sorted(acc.items(), key=lambda kv: -kv[1])[:100]
                ts.append(time.perf_counter() - t0)
            b50, b99 = _percentiles(ts)
            out.update(bm25s_build_s_excl_analysis=round(bm25s_build, 1), bm25s_p50_ms=round(b50, 3),
                       bm25s_p99_ms=round(b99, 3))
        out["peak_rss_mib"] = round(_peak_mib(), 0)
        out["load_average"] = load_average()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_forward_index(root: str, n: int, seed: int, clip_model: str, clip_weights: str) -> None:
    """A synthetic forward index (videos only) the way vmm extract commits one: shards + a marker."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.search_data import FIELDS, clip_like_vectors
    from schemas import forward_index as fi

    gen, _ = _text_docs(0, seed)
    run = "20260101T000000-0000beef"
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    os.makedirs(os.path.join(root, "_runs"), exist_ok=True)
    meta = fi.file_metadata(clip_model=clip_model, clip_weights=clip_weights,
                            extra={"vmm.embedding_dim": "512", "vmm.embedding_dtype": "float16"})
    step = 100_000
    shards = (n + step - 1) // step
    for s, start in enumerate(range(0, n, step)):
        m = min(step, n - start)
        docs = [gen.doc() for _ in range(m)]
        vec = clip_like_vectors(m, 512, seed=seed, start=start).astype(np.float16)
        cols = {"video_id": pa.array([f"v{start + i:09d}" for i in range(m)]),
                "uri": pa.array([f"synthetic://{start + i}" for i in range(m)])}
        for f in FIELDS:
            cols[f] = pa.array([d[f] for d in docs], pa.string())
        cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1), pa.float16()), 512)
        table = pa.table(cols).replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
        pq.write_table(table, os.path.join(root, "videos", f"part-{run}-{s:05d}-of-{shards:05d}.parquet"))
    with open(os.path.join(root, "_runs", f"{run}.json"), "w") as f:
        json.dump({"run_id": run}, f)


def queries_for(args) -> list[str]:
    """The e2e queries: the documents' vocabulary (TextGenerator(seed) draws its Latin words from its
    seed), with draws of its own: a generator of another seed has other Latin words, which the index
    lacks, and its queries were cheaper than real ones (before 2026-12-06)."""
    from bench.search_data import TextGenerator

    gen = TextGenerator(args.seed)
    gen.rng = np.random.default_rng(args.seed + 7)
    return [gen.query(3) for _ in range(args.queries)]


def _text_query_recall(searcher, queries: list[str], k: int = 10) -> float:
    """Recall@k of the vector queue for text queries against exact inner-product search over the
    stored vectors: the build tunes the index on held-out vectors of the index itself, which text
    queries (another tower: another region of the space) are not."""
    from models.ann import exact_search

    enc = searcher._query_encoder()
    q = np.stack([enc.encode_text(t) for t in queries])
    scores, ids = [], []  # each shard's exact top k, then the best k of them
    for shard in searcher.shards:
        if shard.vectors is not None:
            s, r = exact_search(shard.vectors, q, k)
            scores.append(s)
            ids.append(np.asarray(shard.ids, object)[r])
    best = np.argsort(-np.concatenate(scores, axis=1), axis=1, kind="stable")[:, :k]
    truth = np.take_along_axis(np.concatenate(ids, axis=1), best, 1)
    found = [{h.video_id for h in searcher.search(t, k=k, queues=["vector"], depth=k)} for t in queries]
    return round(float(np.mean([len(f & set(t)) / k for f, t in zip(found, truth)])), 4)


def _e2e_shards(one: str, sharded: str, queries: list[str], args) -> dict:
    """The one-shard index against the N-shard index of the same forward index, query by query
    alternately in one process, each Searcher with its own text tower and cache (every query is
    encoded by both): search(query) p50 / p99, the text queue alone, the vector queue alone (its
    query vector from the cache), and how far the N shards' results agree with one shard's (fused
    top 20; the text queue's top 100: BM25 statistics are per shard; the vector queue's top 100)."""
    from pipelines.search import Searcher

    a, b = Searcher(one, threads=args.torch_threads), Searcher(sharded, threads=args.torch_threads)
    for s in (a, b):
        s.search(queries[0], k=20)
    # name -> (search arguments, overlap measured at); each query asked of a, then b, for every shape
    shapes = {"": ({"k": 20}, "fused_at_20"), "text_only_": ({"k": 100, "queues": ["text"]}, "text_at_100"),
              "vector_only_": ({"k": 100, "queues": ["vector"]}, "vector_at_100")}
    times = {name: ([], []) for name in shapes}
    overlaps = {name: [] for name in shapes}
    for q in queries[1:]:
        for name, (kwargs, _) in shapes.items():
            t0 = time.perf_counter()
            ha = a.search(q, **kwargs)
            t1 = time.perf_counter()
            hb = b.search(q, **kwargs)
            t2 = time.perf_counter()
            times[name][0].append(t1 - t0)
            times[name][1].append(t2 - t1)
            if ha:
                overlaps[name].append(len({h.video_id for h in ha} & {h.video_id for h in hb}) / len(ha))
    out = {"shards": args.shards}
    for name, (ta, tb) in times.items():
        for who, ts in (("one_shard", ta), ("n_shards", tb)):
            p50, p99 = _percentiles(ts)
            out[f"{who}_{name}p50_ms"], out[f"{who}_{name}p99_ms"] = round(p50, 2), round(p99, 2)
    for name, (_, key) in shapes.items():
        out[f"overlap_{key}"] = round(float(np.mean(overlaps[name])), 4)
    return {**out,
            "n_shards_vector": [r["vector"]["kind"] for r in b.info["shards"]],
            "n_shards_recall_at_10": [r["vector"]["recall_at_10"] for r in b.info["shards"]],
            "n_shards_text_query_vector_recall_at_10": _text_query_recall(b, queries[1:51])}


def bench_e2e(args) -> dict:
    import subprocess
    import sys

    from pipelines import index as index_cmd
    from pipelines.search import Searcher

    tmp = tempfile.mkdtemp(prefix="vmm-bench-e2e-")
    try:
        fwd = os.path.join(tmp, "out")
        search = args.search_dir or os.path.join(tmp, "search")
        gen_s = build_s = build_rss = None
        sharded = f"{search}-shards{args.shards}" if args.shards > 1 else None
        needs = [d for d in (search, sharded) if d and not os.path.isfile(os.path.join(d, "index.json"))]
        if needs:
            t = time.perf_counter()
            write_forward_index(fwd, args.n, args.seed, args.clip_model, "none")
            gen_s = time.perf_counter() - t
        tuning = [] if args.text_queries is None else ["--text-queries", str(args.text_queries)]
        if sharded in needs:
            t = time.perf_counter()
            assert index_cmd.run(["--input", fwd, "--output", sharded, "--shards", str(args.shards), *tuning]) == 0
            sharded_build_s = time.perf_counter() - t
        if search in needs:
            t = time.perf_counter()
            assert index_cmd.run(["--input", fwd, "--output", search, *tuning]) == 0
            build_s = time.perf_counter() - t
            build_rss = _peak_mib()
        shards_out = _e2e_shards(search, sharded, queries_for(args), args) if sharded else {}
        if sharded in needs:
            shards_out["vmm_index_sharded_s"] = round(sharded_build_s, 1)
        with open(os.path.join(search, "index.json")) as f:
            info = json.load(f)
        t = time.perf_counter()
        searcher = Searcher(search, threads=args.torch_threads)
        load_s = time.perf_counter() - t
        queries = queries_for(args)
        t = time.perf_counter()
        searcher.search(queries[0], k=20)  # loads CLIP
        first_s = time.perf_counter() - t
        import torch

        query_encoder = searcher._query_encoder()
        clip_encoder = query_encoder.load()
        enc, enc_plain, enc_full, text_only, ts, cached = [], [], [], [], [], []
        for q in queries[1:]:
            t0 = time.perf_counter()
            query_encoder.encode_texts([q])  # the text tower alone as search runs it (packed; no cache)
            enc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            clip_encoder.encode_texts([q])  # the same tower on the model's own weights (F.linear)
            enc_plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with torch.no_grad():  # what open_clip's encode_text costs: all 77 context positions
                clip_encoder.model.encode_text(clip_encoder.tokenizer([q]), normalize=True)
            enc_full.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            searcher.search(q, k=20, queues=["text"])
            text_only.append(time.perf_counter() - t0)
        for q in queries[1:]:  # first time each: the text tower runs
            t0 = time.perf_counter()
            searcher.search(q, k=20)
            ts.append(time.perf_counter() - t0)
        for q in queries[1:]:  # again: the query vector comes from the encoder's LRU cache
            t0 = time.perf_counter()
            searcher.search(q, k=20)
            cached.append(time.perf_counter() - t0)
        # The same queries through a Searcher whose text tower multiplies in bf16 and one whose fp32
        # tower runs on the model's own weights (F.linear: what vmm did before the packed tower, and
        # the simplest way), alternating with fp32 again, same process; each has its own encoder and
        # cache, so every query is encoded again.
        fast = Searcher(search, threads=args.torch_threads, query_precision="bf16")
        fast.search(queries[0], k=20)
        fast_encoder = fast._query_encoder()
        plain = Searcher(search, threads=args.torch_threads)
        plain.search(queries[0], k=20)
        plain._query_encoder()._text_tower = None  # QueryEncoder.encode_texts -> ClipEncoder.encode_texts
        enc_bf16, ts_bf16, ts_again, ts_plain = [], [], [], []
        fp32_again = Searcher(search, threads=args.torch_threads)
        fp32_again.search(queries[0], k=20)
        for q in queries[1:]:
            t0 = time.perf_counter()
            fast.search(q, k=20)
            ts_bf16.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            fp32_again.search(q, k=20)
            ts_again.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            plain.search(q, k=20)
            ts_plain.append(time.perf_counter() - t0)
        for q in queries[1:]:
            t0 = time.perf_counter()
            fast_encoder.encode_texts([q])
            enc_bf16.append(time.perf_counter() - t0)
        h50, h99 = _percentiles(ts_bf16)
        a50, a99 = _percentiles(ts_again)
        u50e, u99e = _percentiles(ts_plain)
        eb50, _ = _percentiles(enc_bf16)
        p50, p99 = _percentiles(ts)
        c50, c99 = _percentiles(cached)
        e50, _ = _percentiles(enc)
        u50, _ = _percentiles(enc_plain)
        f50, _ = _percentiles(enc_full)
        b50, b99 = _percentiles(text_only)
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pipelines.cli", "search", search, "--query", queries[1], "--json"],
                           capture_output=True, text=True, env=env)
        cold_s = time.perf_counter() - t
        assert r.returncode == 0, r.stderr
        return {"what": "e2e", "n": args.n, "clip_model": args.clip_model,
                "gen_s": gen_s and round(gen_s, 1), "vmm_index_s": build_s and round(build_s, 1),
                "vector": info["shards"][0]["vector"]["kind"],
                "vector_search": info["shards"][0]["vector"]["search"],
                "recall_at_10": info["shards"][0]["vector"]["recall_at_10"],
                "text_queries": {k: v for k, v in (info.get("text_queries") or {}).items() if k != "source"},
                "vector_search_text": info["shards"][0]["vector"].get("search_text"),
                "text_recall_at_10_recorded": info["shards"][0]["vector"].get("text_recall_at_10"),
                "text_recall_at_10_recorded_untuned": info["shards"][0]["vector"].get("text_recall_at_10_before"),
                "text_query_vector_recall_at_10": _text_query_recall(searcher, queries[1:51]),
                "stage_seconds": info["shards"][0].get("stage_seconds"),
                "peak_rss_after_build_mib": build_rss and round(build_rss, 0),
                "searcher_load_s": round(load_s, 2), "first_query_s": round(first_s, 2),
                "warm_p50_ms": round(p50, 2), "warm_p99_ms": round(p99, 2),
                "warm_cached_p50_ms": round(c50, 2), "warm_cached_p99_ms": round(c99, 2),
                "warm_bf16_p50_ms": round(h50, 2), "warm_bf16_p99_ms": round(h99, 2),
                "warm_fp32_again_p50_ms": round(a50, 2), "warm_fp32_again_p99_ms": round(a99, 2),
                "warm_fp32_unpacked_p50_ms": round(u50e, 2), "warm_fp32_unpacked_p99_ms": round(u99e, 2),
                "text_encode_bf16_p50_ms": round(eb50, 2),
                "text_encode_p50_ms": round(e50, 2), "text_encode_unpacked_p50_ms": round(u50, 2),
                "text_encode_77_tokens_p50_ms": round(f50, 2),
                "text_queue_only_p50_ms": round(b50, 2), "text_queue_only_p99_ms": round(b99, 2),
                "torch_threads": torch.get_num_threads(),
                "cold_cli_s": round(cold_s, 2), "search_dir_mib": round(_dir_size(search) / 2**20, 1),
                **shards_out, "peak_rss_mib": round(_peak_mib(), 0), "load_average": load_average()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["vectors", "text", "e2e"])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--kind", choices=["flat", "hnsw", "hnswpca", "ivfsq", "ivfpq"], default=None, help="force a vector index type")
    parser.add_argument("--max-memory-gib", type=float, default=4.0)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--naive-max", type=int, default=200_000, help="numpy brute force measured on at most this many rows, scaled linearly")
    parser.add_argument("--vectors-file", default=None,
                        help="vectors: keep the generated float16 vectors in this file and reuse them when it "
                             "already holds n rows of the same seed (generating 1M takes minutes)")
    parser.add_argument("--tune-queries", type=int, default=1000,
                        help="vectors: queries in each of the index's tuning and held-out samples (vmm index: 1000)")
    parser.add_argument("--index-file", default=None,
                        help="vectors: keep the built faiss index in this file and load it instead of building when "
                             "it exists (build time is then not measured)")
    parser.add_argument("--text-queries", type=int, default=None,
                        help="vectors: text-like query vectors a sample to tune a text setting on (tune_text) and "
                             "compare with the own-vector setting on --queries others (default 500; 0: skip). "
                             "e2e: passed to vmm index --text-queries (default: vmm index's auto, which skips "
                             "the random weights the bench has)")
    parser.add_argument("--sweep", action="store_true",
                        help="vectors: recall and p50 on the held-out queries over efSearch x re-ranking depth, and "
                             "the PCA projection's own ceiling (exact top R in PCA space, re-ranked)")
    parser.add_argument("--text-index", default=None,
                        help="text: keep the built tantivy index in this folder and open it instead of building when "
                             "it holds one (build time is then not measured; same --n and --seed, or the queries "
                             "do not match the documents)")
    parser.add_argument("--search-dir", default=None,
                        help="e2e: build the search index in this folder and keep it, or search the one it already "
                             "holds (generation and build are then not measured; same --n and --seed)")
    parser.add_argument("--no-bm25s", action="store_true")
    parser.add_argument("--shards", type=int, default=1,
                        help="text: also split the documents into N indexes as vmm index --shards N does and "
                             "search them side by side; e2e: build the search index with --shards N and compare "
                             "it with a one-shard index of the same forward index (kept beside --search-dir as DIR-shardsN)")
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--torch-threads", type=int, default=0, help="e2e: torch threads of the query encoder (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)
    result = {"vectors": bench_vectors, "text": bench_text, "e2e": bench_e2e}[args.what](args)
    print_table(["measure", "value"], [[k, v] for k, v in result.items() if not isinstance(v, dict) or k == "search"])
    print("JSON " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
