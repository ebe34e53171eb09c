"""The vector index of `vmm index` / `vmm search`: faiss, its type chosen by count and memory. No Beam.

Consumes L2-normalised float vectors [N, D] (video embeddings; inner product = cosine), either in
memory or as the float16 file a shard keeps next to its index. Produces a `VectorIndex` that
answers `search(queries [B, D], k) -> (scores [B, k], rows [B, k])` with rows into that file
(-1 where fewer than k were found), and the `AnnChoice` record written into `index.json`.

Which type (`plan_index`), for a budget of `max_memory` bytes of RAM at search time:
  * `flat` (exact, `IndexFlatIP`) up to `FLAT_MAX` vectors: below that a full scan of 512-d
    vectors takes under a millisecond and nothing approximate is worth its recall loss;
  * `hnsw` (`IndexHNSWFlat`, M = 32, efConstruction = 80) while its vectors and graph fit the budget
    and the count is at most `HNSW_MAX`: building the graph costs ~ N log N distance computations
    in D dimensions, and at 200k 512-d vectors it already took 494 s on the 2-core machine
    (bench/README.md, "Search"), so beyond that count the build, not memory, rules it out;
  * `hnswpca` beyond `HNSW_MAX` (or when the full-dimension graph does not fit): the same graph
    over the vectors' first `PCA_DIM` principal components (L2 in that space, which for unit
    vectors ranks like the cosine; PCA is trained on a seeded sample), a quarter of the distance
    work at 512-d to build and to search, whose candidates are re-ranked exactly on the float16
    vectors (memory-mapped). The PCA keeps the strong directions of a narrow cone; what it
    drops only reorders near neighbours, which the re-ranking restores. Its nodes are renumbered
    by k-means cell (`REORDER_CELLS`) once the graph is built, an `IndexIDMap` mapping them back to
    rows: a graph search waits on memory (one miss per distance), and neighbours stored together
    miss less. `--update` adds vectors at the end, with their rows as ids;
  * `ivfsq` beyond: an inverted file over k-means cells (nlist ~ 4 sqrt(N), a power of two) with
    8-bit scalar codes (D bytes a vector), whose candidates are re-ranked exactly on the float16
    vectors, memory-mapped from the shard's file (only the re-ranked rows are read);
  * `ivfpq` when even those do not fit: 4-bit fast-scan product-quantisation codes (D/8 bytes a
    vector), re-ranked the same way. On CLIP-like vectors (a narrow cone) these codes lose recall
    that re-ranking does not win back (bench/README.md, "Search"): the measured recall is recorded.
The search parameters (`efSearch`, or `nprobe`, with the re-ranking depth where there is one) are tuned at build time
(`tune`): seeded samples of the index's own vectors query it, each against its exact top 10
*other* vectors (a vector's own row is left out, as `--like` does). Two disjoint samples: on the
tuning sample a setting counts as reaching `target_recall` only when the lower bound of its
recall's one-sided 95% confidence interval does (per-query recalls vary a lot; picking the first
setting whose mean crosses the target picks the luckiest estimate: at 1M vectors, 0.960 on 300
tuning queries was 0.936 on 300 others); of those the fastest is kept. Its recall@10 is then measured
on the held-out sample, and that is the figure recorded (`recall_at_10`), beside the tuning one.
Those queries are what image and `--like` queries look like. A text query is not: CLIP's text and
image embeddings sit in separate cones (the modality gap), so a text vector lies outside the
cone of the video vectors, where a graph walk tuned on them finds fewer of its true neighbours
(bench/README.md, "The vector search tuned for text queries"). `tune_text` tunes a second setting (`search_text`) the same way on text-query
vectors (`vmm index` cuts them from the index's own text and encodes them as `vmm search` does),
recording its held-out recall and what the first setting gave those queries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time

import numpy as np

logger = logging.getLogger(__name__)

FLAT_MAX = 10_000
HNSW_MAX = 250_000  # full-dimension HNSW above this count: the build is too slow (module doc)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
PCA_DIM = 128
PCA_EF_CONSTRUCTION = 40
PCA_TRAIN = 100_000
REORDER_CELLS = 2048  # hnswpca: graph nodes renumbered by k-means cell (build_index), at most PCA_TRAIN / 40
EF_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
NPROBE_GRID = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
REFINE_FACTOR = 8  # ivfpq: candidates re-ranked exactly = k x this (tuned over REFINE_GRID)
REFINE_GRID = (4, 8, 16, 32, 64)
IVF_KINDS = ("ivfsq", "ivfpq")
RERANKED = ("hnswpca",) + IVF_KINDS  # candidates re-ranked exactly on the float16 vectors
PCA_REFINE_GRID = (2, 5, 10, 20)
TUNE_QUERIES = 1000  # per sample: tuning and held-out
TUNE_Z = 1.645  # one-sided 95%: a setting reaches the target when mean - TUNE_Z * standard error does
TRAIN_POINTS_PER_CELL = 32  # ivfpq k-means sample; faiss warns below 39 but recall is tuned anyway
_CHUNK = 65536


class AnnError(ValueError):
    """A vector index cannot be built or used as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class AnnChoice:
    kind: str  # "flat" | "hnsw" | "hnswpca" | "ivfsq" | "ivfpq"
    count: int
    dim: int
    factory: str  # the faiss index_factory string
    memory_bytes: int  # estimated RAM at search time
    reason: str
    params: dict = dataclasses.field(default_factory=dict)  # build parameters (M, nlist, ...)
    search: dict = dataclasses.field(default_factory=dict)  # tuned search parameters
    recall_at_10: float | None = None  # measured on the held-out sample (not the one tuned on)
    tuning: list = dataclasses.field(default_factory=list)  # [{setting, recall_at_10, recall_low, p50_ms, p99_ms}]
    recall_at_10_tuning: float | None = None  # the chosen setting's recall on the tuning sample
    tune_queries: int = 0  # size of each sample (tuning, held-out)
    # Text queries (`tune_text`): tuned like `search` on text-query vectors, not the index's own.
    search_text: dict = dataclasses.field(default_factory=dict)  # {} when not tuned: text queries use `search`
    text_recall_at_10: float | None = None  # held-out text queries, with search_text
    text_recall_at_10_before: float | None = None  # the same queries with `search` (what they got untuned)
    text_tuning: list = dataclasses.field(default_factory=list)
    text_tune_queries: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "AnnChoice":
        """From index.json's record (which carries extra keys of its own: how, tune_seconds)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _faiss():
    import faiss

    return faiss


def hnsw_memory(n: int, dim: int, m: int = HNSW_M) -> int:
    # float32 vectors + level-0 links (2M ids of 4 bytes) + upper levels (~1/M of the nodes) + ids.
    return int(n * (dim * 4 + 2 * m * 4 * 1.07 + 16))


def hnswpca_memory(n: int, dim: int, m: int = HNSW_M, pca_dim: int = PCA_DIM) -> int:
    return hnsw_memory(n, pca_dim, m) + dim * pca_dim * 4


def ivf_params(n: int, dim: int) -> dict:
    nlist = 2 ** max(4, min(16, int(round(math.log2(4 * math.sqrt(max(n, 1)))))))
    m = dim // 8 if dim % 8 == 0 else dim // 4 if dim % 4 == 0 else dim // 2
    return {"nlist": nlist, "pq_m": m, "pq_bits": 4}


def ivf_memory(n: int, dim: int) -> int:
    p = ivf_params(n, dim)
    codes = n * (p["pq_m"] * p["pq_bits"] // 8 + 8)
    return int(codes + p["nlist"] * dim * 4)


def plan_index(n: int, dim: int, max_memory: int) -> AnnChoice:
    """The index type for n vectors of dim under a RAM budget of max_memory bytes (see module doc)."""
    if n <= 0:
        raise AnnError("no vectors to index")
    flat = n * dim * 4
    if n <= FLAT_MAX and flat <= max_memory:
        return AnnChoice("flat", n, dim, "Flat", flat,
                         f"{n} vectors <= {FLAT_MAX}: exact search costs under a millisecond")
    hnsw = hnsw_memory(n, dim)
    budget = f"{max_memory / 2**30:.2f} GiB budget"
    if hnsw <= max_memory and n <= HNSW_MAX:
        return AnnChoice("hnsw", n, dim, f"HNSW{HNSW_M},Flat", hnsw,
                         f"{n} vectors > {FLAT_MAX}; HNSW{HNSW_M} needs ~{hnsw / 2**30:.2f} GiB "
                         f"<= the {budget}",
                         params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
    why_not = (f"{n} vectors > {HNSW_MAX}: a {dim}-d HNSW graph takes too long to build"
               if hnsw <= max_memory else f"HNSW{HNSW_M} would need ~{hnsw / 2**30:.2f} GiB > the {budget}")
    pca = hnswpca_memory(n, dim)
    if dim > PCA_DIM and pca <= max_memory:
        return AnnChoice("hnswpca", n, dim, f"PCA{PCA_DIM},HNSW{HNSW_M},Flat", pca,
                         f"{why_not}; HNSW{HNSW_M} over {PCA_DIM} principal components ~{pca / 2**30:.2f} GiB, "
                         f"re-ranked on the float16 vectors",
                         params={"M": HNSW_M, "efConstruction": PCA_EF_CONSTRUCTION, "pca_dim": PCA_DIM,
                                 "refine_factor": 5, "reorder_cells": REORDER_CELLS})
    p = ivf_params(n, dim)
    sq8 = n * (dim + 8) + p["nlist"] * dim * 4
    if sq8 <= max_memory:
        return AnnChoice("ivfsq", n, dim, f"IVF{p['nlist']},SQ8", sq8,
                         f"{why_not}, and over {PCA_DIM} components ~{pca / 2**30:.2f} GiB; "
                         f"IVF with 8-bit scalar codes ~{sq8 / 2**30:.2f} GiB, re-ranked on the float16 vectors",
                         params={"nlist": p["nlist"], "refine_factor": REFINE_FACTOR})
    ivf = ivf_memory(n, dim)
    if ivf > max_memory:
        raise AnnError(
            f"{n} vectors of dim {dim} need ~{ivf / 2**30:.2f} GiB even as {p['pq_m']}-byte PQ codes: over the "
            f"{max_memory / 2**30:.2f} GiB budget (--max-index-memory); raise it or build more shards (--shards)")
    factory = f"IVF{p['nlist']},PQ{p['pq_m']}x{p['pq_bits']}fs"
    return AnnChoice("ivfpq", n, dim, factory, ivf,
                     f"{why_not}; 8-bit codes ~{sq8 / 2**30:.2f} GiB do not fit either; IVF-PQ codes ~{ivf / 2**30:.2f} GiB, re-ranked on the float16 vectors (memory-mapped)",
                     params={**p, "refine_factor": REFINE_FACTOR})


def _as_f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def build_index(vectors: np.ndarray, choice: AnnChoice, *, seed: int = 0):
    """The faiss index of `choice` over `vectors` ([N, D], float16 or float32, e.g. a memmap),
    added in chunks so only the index and one chunk are held as float32 beyond the input."""
    faiss = _faiss()
    n, dim = vectors.shape
    if choice.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif choice.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, choice.params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = choice.params["efConstruction"]
    elif choice.kind == "hnswpca":
        rng = np.random.default_rng(seed)
        pca = faiss.PCAMatrix(dim, choice.params["pca_dim"])
        sample = _as_f32(vectors[np.sort(rng.choice(n, size=min(n, PCA_TRAIN), replace=False))])
        pca.train(sample)
        graph = faiss.IndexHNSWFlat(choice.params["pca_dim"], choice.params["M"], faiss.METRIC_L2)
        graph.hnsw.efConstruction = choice.params["efConstruction"]
        index = faiss.IndexPreTransform(pca, graph)
        cells = choice.params.get("reorder_cells")
        if not cells:
            return _add(index, vectors)
        # Renumber the graph's nodes cell by cell (k-means in the PCA space) so that the nodes a
        # query visits sit close together in memory: the search is bound by memory latency (about
        # one cache/TLB miss per distance), not by arithmetic. The graph is the same graph (same
        # results); the id map in front turns node numbers back into the vectors' rows.
        mapped = _add(faiss.IndexIDMap(index), vectors)
        order = _cell_order(graph, pca.apply(sample), cells, seed)
        graph.permute_entries(order)
        mapped.id_map.resize(0)
        faiss.copy_array_to_vector(order, mapped.id_map)
        return mapped
    elif choice.kind in IVF_KINDS:
        index = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
        nlist = choice.params["nlist"]
        rng = np.random.default_rng(seed)
        take = min(n, nlist * TRAIN_POINTS_PER_CELL)
        sample = np.sort(rng.choice(n, size=take, replace=False))
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = seed
        ivf.cp.niter = 10
        index.train(_as_f32(vectors[sample]))
    else:
        raise AnnError(f"unknown vector index kind {choice.kind!r}")
    return _add(index, vectors)


def _add(index, vectors: np.ndarray, first_row: int = 0):
    """Add `vectors` (rows first_row, first_row + 1, ...) in chunks, converted to float32 one chunk
    at a time; an id-mapped index (`IndexIDMap`) is given the rows as ids."""
    ids = isinstance(index, _faiss().IndexIDMap)
    for start in range(0, len(vectors), _CHUNK):
        chunk = _as_f32(vectors[start:start + _CHUNK])
        if ids:
            index.add_with_ids(chunk, np.arange(first_row + start, first_row + start + len(chunk), dtype=np.int64))
        else:
            index.add(chunk)
    return index


def _cell_order(graph, sample: np.ndarray, cells: int, seed: int) -> np.ndarray:
    """Rows of `graph`'s stored vectors grouped by their nearest of `cells` k-means centroids
    (trained on `sample`), in row order within a cell: int64 [ntotal], new position -> old row."""
    faiss = _faiss()
    cells = max(1, min(cells, len(sample) // 40, graph.ntotal))
    km = faiss.Kmeans(sample.shape[1], cells, niter=10, seed=seed, max_points_per_centroid=64)
    km.train(sample)
    cell = np.empty(graph.ntotal, np.int64)
    for start in range(0, graph.ntotal, _CHUNK):
        m = min(_CHUNK, graph.ntotal - start)
        cell[start:start + m] = km.index.search(graph.storage.reconstruct_n(start, m), 1)[1][:, 0]
    return np.argsort(cell, kind="stable").astype(np.int64)


def exact_neighbours(vectors: np.ndarray, query_rows: np.ndarray, k: int = 10) -> np.ndarray:
    """Rows [Q, k] of each query row's k most similar *other* rows, by exact inner product."""
    query_rows = np.asarray(query_rows, np.int64)
    return exact_search(vectors, vectors[query_rows], k, exclude_rows=query_rows)[1]


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int = 10,
                 exclude_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32 [Q, k], rows int64 [Q, k]) of each query's k best rows by exact inner product,
    scanning `vectors` in chunks (float16 memmaps included); memory is one chunk of vectors and one
    [512, chunk] block of scores whatever Q. Ties go to the lower row; `exclude_rows` [Q] leaves one
    row out of each query's results (its own)."""
    q = _as_f32(np.atleast_2d(queries))
    query_rows = None if exclude_rows is None else np.asarray(exclude_rows, np.int64)
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_r = np.full((len(q), k), -1, np.int64)
    for start in range(0, len(vectors), _CHUNK):
        block = _as_f32(vectors[start:start + _CHUNK])
        for lo in range(0, len(q), 512):
            hi = min(len(q), lo + 512)
            s = q[lo:hi] @ block.T
            if query_rows is not None:
                own = np.nonzero((query_rows[lo:hi] >= start) & (query_rows[lo:hi] < start + len(block)))[0]
                s[own, query_rows[lo:hi][own] - start] = -np.inf
            if s.shape[1] > k + 1:  # the block's k + 1 best (one spare keeps a tie at the edge in play)
                part = np.argpartition(-s, k, axis=1)[:, : k + 1]
                s = np.take_along_axis(s, part, 1)
                cols = part + start
            else:
                cols = np.broadcast_to(np.arange(start, start + s.shape[1]), s.shape)
            s_all = np.concatenate([best_s[lo:hi], s], axis=1)
            r_all = np.concatenate([best_r[lo:hi], cols], axis=1)
            order = _top_k(s_all, r_all, k)
            best_s[lo:hi] = np.take_along_axis(s_all, order, 1)
            best_r[lo:hi] = np.take_along_axis(r_all, order, 1)
    return best_s, best_r


def _top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Column order of each row's k best (score desc, row asc)."""
    part = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, : k + 1]
    s = np.take_along_axis(scores, part, 1)
    r = np.take_along_axis(rows, part, 1)
    order = np.stack([np.lexsort((r[i], -s[i])) for i in range(len(s))])[:, :k]
    return np.take_along_axis(part, order, 1)


class VectorIndex:
    """A built or loaded faiss index plus the float16 vectors (for re-ranking and `--like`).

    Thread safety: faiss searches are read-only on the index; the search parameter is passed per
    call (faiss SearchParameters), never set on the shared index."""

    def __init__(self, index, choice: AnnChoice, vectors: np.ndarray):
        self.index = index
        self.choice = choice
        self.vectors = vectors  # float16 [N, D], usually a read-only memmap

    def add(self, vectors: np.ndarray, first_row: int) -> None:
        """Add `vectors`, rows first_row, first_row + 1, ... of the float16 file (`--update`)."""
        _add(self.index, vectors, first_row)

    def _params(self, setting: dict):
        faiss = _faiss()
        kind = self.choice.kind
        if kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=int(setting.get("efSearch", 64)))
        if kind == "hnswpca":
            return faiss.SearchParametersPreTransform(
                index_params=faiss.SearchParametersHNSW(efSearch=int(setting.get("efSearch", 64))))
        if kind in IVF_KINDS:
            return faiss.SearchParametersIVF(nprobe=int(setting.get("nprobe", 16)))
        return None

    def search(self, queries: np.ndarray, k: int, *, setting: dict | None = None, exclude: np.ndarray | None = None):
        """(scores float32 [B, k], rows int64 [B, k]) by inner product, best first; -1 rows pad.
        `exclude` (int64 [B]): a row to leave out of each query's results (its own, for `--like`)."""
        q = _as_f32(np.atleast_2d(queries))
        want = k + (1 if exclude is not None else 0)
        want = min(want, self.choice.count)
        setting = self.choice.search if setting is None else setting
        params = self._params(setting)
        if self.choice.kind in RERANKED:
            fetch = min(self.choice.count, want * int(setting.get("refine_factor", REFINE_FACTOR)))
            _, cand = self.index.search(q, fetch, params=params)
            scores, rows = self._rerank(q, cand, want)
        else:
            scores, rows = self.index.search(q, want, params=params) if params is not None else self.index.search(q, want)
        if exclude is not None:
            keep_s = np.full((len(q), k), -np.inf, np.float32)
            keep_r = np.full((len(q), k), -1, np.int64)
            for i in range(len(q)):
                m = rows[i] != exclude[i]
                s, r = scores[i][m][:k], rows[i][m][:k]
                keep_s[i, : len(s)], keep_r[i, : len(r)] = s, r
            scores, rows = keep_s, keep_r
        elif rows.shape[1] < k:
            pad = k - rows.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        return scores, rows

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int):
        scores = np.full((len(q), k), -np.inf, np.float32)
        rows = np.full((len(q), k), -1, np.int64)
        for i in range(len(q)):
            c = cand[i][cand[i] >= 0]
            if not len(c):
                continue
            c = np.unique(c)  # sorted rows: a sequential read of the memmap, and ties to the lower row
            # einsum, not `@`: numpy hands a matrix-vector product this size to OpenBLAS's threads,
            # which then spin for a while after it and take a core from the query encoder (2 cores:
            # the text tower went from 21 to 110 ms a query interleaved with searches at 1M).
            s = np.einsum("ij,j->i", _as_f32(self.vectors[c]), q[i])
            order = np.lexsort((c, -s))[:k]
            scores[i, : len(order)], rows[i, : len(order)] = s[order], c[order]
        return scores, rows

    # ---- tuning -------------------------------------------------------------------------------

    def tune(self, *, target_recall: float = 0.95, queries: int = TUNE_QUERIES, seed: int = 0, k: int = 10) -> AnnChoice:
        """Measure recall@k against exact search on a tuning sample of the index's own vectors for
        each setting of the grid, keep the fastest whose recall's lower confidence bound reaches
        target_recall (or the best there is), and record its recall on a disjoint held-out sample.
        What `tune_text` recorded is dropped: it was measured against the settings of before."""
        n = self.choice.count
        untuned_text = dict(search_text={}, text_recall_at_10=None, text_recall_at_10_before=None, text_tuning=[],
                            text_tune_queries=0)
        if self.choice.kind == "flat":
            self.choice = dataclasses.replace(self.choice, recall_at_10=1.0, recall_at_10_tuning=1.0, search={},
                                              tuning=[], tune_queries=0, **untuned_text)
            return self.choice
        rng = np.random.default_rng(seed)
        drawn = rng.choice(n, size=min(2 * queries, n), replace=False)
        half = len(drawn) // 2
        tune_rows, check_rows = np.sort(drawn[:half]), np.sort(drawn[half:2 * half])
        both = np.concatenate([tune_rows, check_rows])
        truth = exact_neighbours(self.vectors, both, k)
        q = _as_f32(self.vectors[both])
        chosen, check, tried = self._tune_on(q[:half], tune_rows, truth[:half], q[half:], check_rows, truth[half:],
                                             target_recall, k, "own vectors")
        self.choice = dataclasses.replace(self.choice, search=dict(chosen["setting"]),
                                          recall_at_10=check["recall_at_10"],
                                          recall_at_10_tuning=chosen["recall_at_10"], tuning=tried,
                                          tune_queries=len(tune_rows), **untuned_text)
        return self.choice

    def tune_text(self, queries: np.ndarray, *, target_recall: float = 0.95, seed: int = 0, k: int = 10) -> AnnChoice:
        """Tune a second setting, `search_text`, for text queries: `queries` are text-query vectors
        (float [Q, D], L2-normalised), split by seed into a tuning half and a held-out half, each
        against its exact top k over the whole index, the same rule as `tune`. Needed because a
        CLIP text vector is not like the video vectors the graph was built from and tuned on (the
        modality gap): it lies outside their cone, where a graph walk finds its true neighbours
        less often at the same effort. Also recorded: the held-out half's recall with `search`,
        what text queries got before. A flat index is exact for every query: nothing to tune."""
        if self.choice.kind == "flat":
            self.choice = dataclasses.replace(self.choice, search_text={}, text_recall_at_10=1.0,
                                              text_recall_at_10_before=1.0, text_tuning=[], text_tune_queries=0)
            return self.choice
        q = _as_f32(np.atleast_2d(queries))
        if len(q) < 2:
            raise AnnError(f"tuning for text queries needs at least 2 query vectors, got {len(q)}")
        order = np.random.default_rng(seed).permutation(len(q))
        half = len(q) // 2
        q = q[order[: 2 * half]]
        _, truth = exact_search(self.vectors, q, k)
        tq, cq, tt, ct = q[:half], q[half:], truth[:half], truth[half:]
        before = self._measure(cq, None, ct, self.choice.search, k)
        chosen, check, tried = self._tune_on(tq, None, tt, cq, None, ct, target_recall, k, "text queries")
        self.choice = dataclasses.replace(self.choice, search_text=dict(chosen["setting"]),
                                          text_recall_at_10=check["recall_at_10"],
                                          text_recall_at_10_before=before["recall_at_10"], text_tuning=tried,
                                          text_tune_queries=half)
        return self.choice

    def _plans(self, k: int) -> list[list[dict]]:
        """Settings of rising cost, one list a re-ranking depth, the deepest first: it reaches the target soonest."""
        if self.choice.kind == "hnsw":
            return [[{"efSearch": ef} for ef in EF_GRID]]
        if self.choice.kind == "hnswpca":
            return [[{"efSearch": ef, "refine_factor": rf} for ef in EF_GRID if ef >= k * rf]
                    for rf in sorted(PCA_REFINE_GRID, reverse=True)]
        nprobes = [p for p in NPROBE_GRID if p <= self.choice.params["nlist"]]
        return [[{"nprobe": p, "refine_factor": rf} for p in nprobes] for rf in sorted(REFINE_GRID, reverse=True)]

    def _tune_on(self, tq, t_rows, tt, cq, c_rows, ct, target_recall: float, k: int, what: str):
        """(chosen entry, its held-out measurement, every entry tried): the grid walked on the tuning
        queries tq (rows t_rows left out of their own results, or None) against truth tt, the
        fastest setting whose recall's lower bound reaches target_recall kept (or the best there
        is), then measured on the held-out queries cq."""
        tried, reached = [], []
        fastest = math.inf  # p50 of the fastest setting reaching the target so far
        for plan in self._plans(k):  # stop a plan at its first setting that reaches the target, or is slower than one that did
            for setting in plan:
                entry = self._measure(tq, t_rows, tt, setting, k)
                tried.append(entry)
                logger.info("vector index %s, %s: %s recall@10 %.4f (>= %.4f) p50 %.3f ms", self.choice.kind, what,
                            setting, entry["recall_at_10"], entry["recall_low"], entry["p50_ms"])
                if entry["recall_low"] >= target_recall:
                    reached.append(entry)
                    fastest = min(fastest, entry["p50_ms"])
                    break
                if entry["p50_ms"] > fastest:
                    break
        if reached:
            chosen = min(reached, key=lambda e: e["p50_ms"])
        else:
            chosen = max(tried, key=lambda e: e["recall_at_10"])
        check = self._measure(cq, c_rows, ct, chosen["setting"], k)
        logger.info("vector index %s, %s: %s recall@10 %.4f on %d held-out queries (%.4f on the tuning sample)",
                    self.choice.kind, what, chosen["setting"], check["recall_at_10"], len(cq), chosen["recall_at_10"])
        if check["recall_at_10"] < target_recall:
            logger.warning("vector index %s, %s: recall@10 %.4f on held-out queries < %.2f (best setting tried: %s)",
                           self.choice.kind, what, check["recall_at_10"], target_recall, chosen["setting"])
        return chosen, check, tried

    def _measure(self, q: np.ndarray, rows: np.ndarray | None, truth: np.ndarray, setting: dict, k: int) -> dict:
        """Recall@k against truth and latency of one setting, one query at a time; `rows`: each
        query's own row, left out of its results (None: queries from outside the index)."""
        t = []
        found = np.empty((len(q), k), np.int64)
        for i in range(len(q)):
            t0 = time.perf_counter()
            _, r = self.search(q[i: i + 1], k, setting=setting, exclude=None if rows is None else rows[i: i + 1])
            t.append(time.perf_counter() - t0)
            found[i] = r[0]
        # Out of the true neighbours there are: an index of fewer than k + 1 vectors has fewer (-1 pads).
        per_query = np.array([len(set(found[i]) & set(truth[i][truth[i] >= 0])) / max(1, int((truth[i] >= 0).sum()))
                              for i in range(len(q))])
        recall = float(per_query.mean())
        low = recall - TUNE_Z * float(per_query.std(ddof=1)) / math.sqrt(len(q)) if len(q) > 1 else recall
        t.sort()
        return {"setting": dict(setting), "recall_at_10": round(recall, 4), "recall_low": round(low, 4),
                "p50_ms": round(1000 * t[len(t) // 2], 3),
                "p99_ms": round(1000 * t[min(len(t) - 1, int(len(t) * 0.99))], 3)}

    # ---- files --------------------------------------------------------------------------------

    def save(self, path: str) -> None:
        _faiss().write_index(self.index, path)

    @classmethod
    def load(cls, path: str, choice: AnnChoice, vectors: np.ndarray, *, mmap: bool = True) -> "VectorIndex":
        faiss = _faiss()
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap and choice.kind not in ("hnsw", "hnswpca") else 0
        return cls(faiss.read_index(path, flags), choice, vectors)


def choice_json(choice: AnnChoice) -> str:
    return json.dumps(choice.to_json(), sort_keys=True)
