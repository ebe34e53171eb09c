"""`vmm search` and `Searcher`: query a search index built by `vmm index`.

    vmm search SEARCH/ (--query TEXT | --image PATH | --like VIDEO_ID) [--k 20]
               [--queues text,vector,visual] [--fusion rrf|weighted] [--json] [--clip-pretrained P]
               [--query-tower TOWER/]

    from pipelines.search import Searcher
    searcher = Searcher("search/")                     # loads the index once
    for hit in searcher.search(query="红色水壶 kettle", k=20):
        print(hit.rank, hit.video_id, hit.score, hit.queues)

Queues (each cut at its own depth, then fused; reciprocal rank fusion with k = 60 by default):
  * text: BM25 over the indexed fields (models.bm25), for --query;
  * vector: ANN over the video vectors (models.ann): the query text through the CLIP text tower of
    the index's model and weights (or a query tower trained against them, models.query_tower), an
    image through its image tower, or the stored vector of a --like video (left out of its own results);
  * visual: visual words (models.visual_words): an image's frame token (and patch tokens when the
    index has patch words) through the dictionary copied into the index, or a --like video's own
    tokens.
Defaults: --query runs text and vector, --image vector and visual, --like vector and visual.

Reading the index imports neither torch nor Beam; encoding a text or image query loads the CLIP
model once per Searcher (models.query). A Searcher answers queries from several threads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models import fusion as fusion_lib
from models.query import QueryEncoderMismatch
from models.text import analyze
from pipelines.index import FORMAT, PASSAGES_FILE

logger = logging.getLogger(__name__)

QUEUES = ("text", "vector", "visual")
DEFAULT_DEPTH = {"text": 100, "vector": 100, "visual": 100}
INDEX_JSON = "index.json"


class SearchError(ValueError):
    """A search cannot be answered as asked; the message says why (the CLI prints it, exit 2)."""


@dataclasses.dataclass(frozen=True)
class QueueHit:
    rank: int
    score: float
    field: str | None = None  # text queue: the field of the best-matching line
    snippet: str | None = None
    time_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Hit:
    rank: int
    video_id: str
    score: float
    title: str | None
    queues: dict  # queue name -> QueueHit, or None when the queue ran but did not find the video

    def to_json(self) -> dict:
        return {"rank": self.rank, "video_id": self.video_id, "score": self.score, "title": self.title,
                "queues": {q: (None if h is None else dataclasses.asdict(h) if q == "text" else
                               {"rank": h.rank, "score": h.score}) for q, h in self.queues.items()}}


class _Shard:
    def __init__(self, folder: str, info: dict, record: dict):
        from models import ann
        from models.bm25 import TextIndex

        self.folder = folder
        self.record = record
        docs = pq.read_table(os.path.join(folder, "docs.parquet"), columns=["video_id", "title"])
        self.ids = docs.column("video_id").to_pylist()
        self.titles = docs.column("title").to_pylist()
        n = len(self.ids)
        self.vectors = None
        self.vector = None
        if n and record.get("vector"):
            choice = ann.AnnChoice.from_json(record["vector"])
            self.vectors = np.memmap(os.path.join(folder, "vectors.f16"), dtype=np.float16, mode="r",
                                     shape=(n, choice.dim))
            self.vector = ann.VectorIndex.load(os.path.join(folder, "vector.faiss"), choice, self.vectors)
        self.text = None
        if n:
            self.text = TextIndex(os.path.join(folder, "text"), info["text"]["fields"])
            self.text.searcher  # made now, not on a first query that several threads may race to
        self.visual = None
        if record.get("visual"):
            from models.visual_words import VisualWordIndex

            self.visual = VisualWordIndex.load(os.path.join(folder, "visual.npz"))
        self._passage_rows, self._passage_names, self._passage_columns = np.empty(0, np.int64), [], []
        if n:  # a shard no video id hashes to has no passages file (nor text or vector index)
            # Memory-mapped, zero-copy: a cold start pages in only the row column and the lines it shows.
            passages = pa.ipc.open_file(pa.memory_map(os.path.join(folder, PASSAGES_FILE))).read_all()
            self._passage_rows = passages.column("row").to_numpy()
            self._passage_names = passages.column_names
            self._passage_columns = [passages.column(name) for name in self._passage_names]

    def passages(self, row: int) -> list[dict]:
        """The passages of one row: the file is sorted by row, so its lines are one slice (read
        column by column: 16 us a video at 1M against 31-42 us for the table slice's `to_pylist`)."""
        lo, hi = np.searchsorted(self._passage_rows, [row, row + 1])
        lo, n = int(lo), int(hi - lo)
        values = [col.slice(lo, n).to_pylist() for col in self._passage_columns]
        return [dict(zip(self._passage_names, line)) for line in zip(*values)]


def _short_openmp_spin() -> None:
    """Before torch is first imported: its OpenMP (GNU libgomp) workers spin after each parallel region
    for GOMP_SPINCOUNT iterations (300,000 by default) before they sleep: after the text tower they
    held the second core for milliseconds, in the way of the vector and text queues that follow.
    10,000 cuts that (1M videos, 2 cores, bf16 tower: tower, then the text and vector queues in
    parallel, 24.1 -> 19.4 ms p50 without fusion; 1,000 slowed the tower itself). Read once, when libgomp loads, so
    this does nothing once torch is imported, and a value the user set is kept."""
    if "torch" not in sys.modules:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")


def _one_faiss_thread() -> None:
    """The calling thread's faiss searches run on one OpenMP thread. One query vector does not
    parallelise, and the idle team of faiss's own libgomp spun on both cores after the vector queue,
    in the way of the next query's text tower (1M videos, 2 cores: tower 22.8 ms after a vector
    search, 14.3 ms with one faiss thread, 13-15 ms alone). libgomp keeps this per thread: other
    threads (an index build beside the Searcher) keep their own setting."""
    from models.ann import _faiss

    _faiss().omp_set_num_threads(1)


class Searcher:
    """A search index, loaded once. `search()` is safe to call from several threads; it leaves the
    calling thread's faiss searches on one OpenMP thread (`_one_faiss_thread`). An index of several
    shards (`vmm index --shards N`) is searched one thread a shard, side by side, and merged."""

    def __init__(self, path: str, *, clip_pretrained: str | None = None, query_tower: str | None = None,
                 device: str = "cpu", threads: int = 0, query_precision: str = "fp32"):
        self.path = path
        index_json = os.path.join(path, INDEX_JSON)
        if not os.path.isfile(index_json):
            raise SearchError(f"{path} is not a search index: {index_json} is missing (build one with vmm index)")
        try:
            with open(index_json, encoding="utf-8") as f:
                self.info = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise SearchError(f"cannot read {index_json}: {e}") from e
        if self.info.get("format") != FORMAT:
            raise SearchError(f"{path} was built by another version of vmm (format {self.info.get('format')}, this "
                              f"vmm reads {FORMAT}): rebuild it with vmm index --overwrite or --update")
        if not self.info.get("counts", {}).get("videos"):
            raise SearchError(f"the search index {path} holds no videos")
        self.shards = [_Shard(os.path.join(path, f"shard-{r['shard']:05d}"), self.info, r) for r in self.info["shards"]]
        self.where = {}  # video_id -> (shard, row)
        for s, shard in enumerate(self.shards):
            for row, vid in enumerate(shard.ids):
                self.where[vid] = (s, row)
        from models.clip import TEXT_PRECISIONS

        if query_precision not in TEXT_PRECISIONS:
            raise SearchError(f"query precision must be one of {', '.join(TEXT_PRECISIONS)}, got {query_precision!r}")
        if query_precision != "fp32" and query_tower is not None:
            raise SearchError(f"query precision {query_precision} applies to the CLIP text tower; a query tower "
                              f"(--query-tower) encodes in fp32")
        self._pretrained = clip_pretrained
        self._precision = query_precision
        self._device, self._threads = device, threads
        self._encoder = None
        self._lock = threading.Lock()
        if clip_pretrained is not None:
            self._query_encoder()  # a mismatch is refused now, before any query
        self._tower = None
        if query_tower is not None:  # text queries go through the trained tower; images still use CLIP's
            from models.query_tower import QueryTower

            self._tower = QueryTower(query_tower, self.info["clip_model"], self.info["clip_weights"],
                                     device=device, threads=threads)
        from models.query import QuerySource

        # The vector search setting tuned for text queries is for one text encoder (index.json's
        # text_queries): another one's vectors fall elsewhere, and get the own-vector setting.
        tuned_for = (self.info.get("text_queries") or {}).get("encoder")
        model, weights = self.info["clip_model"], self.info["clip_weights"]
        text_source = (QuerySource("tower", model, weights, path=query_tower,
                                   tower_weights=self._tower.info.get("weights_sha256", ""))
                       if self._tower else QuerySource("clip", model, weights, clip_pretrained))
        self._text_tuned = tuned_for is not None and tuned_for == text_source.text_id
        if tuned_for is not None and not self._text_tuned:
            logger.info("text queries use the vector search setting tuned on the index's own vectors: the one "
                        "tuned for text queries is for %s", tuned_for)
        self._codebooks = None
        self._executor = None
        _short_openmp_spin()

    # ---- models (loaded on first use) ---------------------------------------------------------

    def _query_encoder(self):
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    from models.query import QueryEncoder

                    self._encoder = QueryEncoder(self.info["clip_model"], self.info["clip_weights"], self._pretrained,
                                                 device=self._device, threads=self._threads,
                                                 precision=self._precision)
        return self._encoder

    def _dictionaries(self):
        """(frame Codebook, patch Codebook or None) copied into the index, or None."""
        if self._codebooks is None:
            with self._lock:
                if self._codebooks is None:
                    from models.codebook import Codebook

                    frame = patch = None
                    if self.info.get("codebook_for_image_queries"):
                        frame = Codebook.load(os.path.join(self.path, "codebook"))
                    if self.info.get("patch_codebook_for_image_queries"):
                        patch = Codebook.load(os.path.join(self.path, "patch_codebook"))
                    self._codebooks = (frame, patch)
        return self._codebooks

    def _pool(self):
        """The threads that run a query's text queue beside its vector queue, and the shards of an index
        of several side by side (made on first use). Their tasks are leaves: one shard's search of one
        queue, which never waits for another task, so searches from many threads cannot deadlock it."""
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    import concurrent.futures

                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="vmm-search",
                        initializer=_one_faiss_thread)
        return self._executor

    def _each_shard(self, work) -> list:
        """work(s) for every shard, in shard order. Several shards are searched side by side: the
        first on the calling thread, the others on the pool (tantivy, faiss and numpy release the
        GIL). One shard runs on the calling thread alone, with no hand-off."""
        pool = self._pool() if len(self.shards) > 1 else None
        rest = [pool.submit(work, s) for s in range(1, len(self.shards))] if pool else []
        return [work(0)] + [f.result() for f in rest]

    # ---- queues -------------------------------------------------------------------------------

    def available_queues(self, kind: str) -> list[str]:
        has_visual = any(s.visual is not None for s in self.shards)
        if kind == "query":
            return ["text", "vector"]
        if kind == "image":
            return ["vector"] + (["visual"] if has_visual and self.info.get("codebook_for_image_queries") else [])
        return ["vector"] + (["visual"] if has_visual else [])

    def _merge(self, per_shard: list[list[tuple[int, float]]], depth: int) -> list[tuple[tuple[int, int], float]]:
        merged = [((s, row), score) for s, hits in enumerate(per_shard) for row, score in hits]
        merged.sort(key=lambda h: (-h[1], self.shards[h[0][0]].ids[h[0][1]]))
        return merged[:depth]

    # Each queue is one function of a shard (its best `depth` rows, with scores), searched over the
    # shards by _each_shard and merged. Every shard scores with its own statistics (BM25's document
    # frequencies, the visual words' idf): what Elasticsearch's default query_then_fetch does.

    def _text_work(self, query: str, depth: int):
        return lambda s: self.shards[s].text.search(query, depth) if self.shards[s].text else []

    def _text_queue(self, query: str, depth: int):
        return self._merge(self._each_shard(self._text_work(query, depth)), depth)

    def _vector_work(self, vector: np.ndarray, depth: int, like: tuple[int, int] | None = None, text: bool = False):
        """One shard's vector search. A text query's uses the setting tuned for text queries where
        `vmm index` tuned one for this searcher's text encoder (`search_text`), else `search`."""
        tuned_text = text and self._text_tuned

        def work(s: int) -> list[tuple[int, float]]:
            shard = self.shards[s]
            if shard.vector is None:
                return []
            exclude = np.array([like[1]]) if like is not None and like[0] == s else None
            setting = (shard.vector.choice.search_text or None) if tuned_text else None
            scores, rows = shard.vector.search(vector[None, :], depth, exclude=exclude, setting=setting)
            return [(int(r), float(sc)) for r, sc in zip(rows[0], scores[0]) if r >= 0]

        return work

    def _vector_queue(self, vector: np.ndarray, depth: int, like: tuple[int, int] | None = None):
        return self._merge(self._each_shard(self._vector_work(vector, depth, like)), depth)

    def _visual_queue(self, terms=None, weights=None, depth: int = 100, like: tuple[int, int] | None = None):
        def work(s: int) -> list[tuple[int, float]]:
            shard = self.shards[s]
            if shard.visual is None or terms is None or not len(terms):
                return []
            exclude = like[1] if like is not None and like[0] == s else None
            return shard.visual.search(terms, depth, exclude=exclude, query_weights=weights)

        return self._merge(self._each_shard(work), depth)

    def _image_terms(self, frame_vec: np.ndarray, patches: np.ndarray | None):
        from models.visual_words import Vocabulary

        frame_book, patch_book = self._dictionaries()
        if frame_book is None:
            return None
        vocab = next((s.visual.vocab for s in self.shards if s.visual is not None), None)
        if vocab is None:
            return None
        vocab = Vocabulary(max(vocab.frame_k, frame_book.k), vocab.patch_k)
        frame_ids = frame_book.assign(frame_vec[None, :]).astype(np.int64)
        patch_ids = None
        if vocab.patch_k and patch_book is not None and patches is not None:
            patch_ids = patch_book.assign(patches).astype(np.int64)
        terms = vocab.terms(frame_ids, patch_ids)
        return terms[terms < next(s.visual.vocab.size for s in self.shards if s.visual is not None)]

    # ---- the query ----------------------------------------------------------------------------

    def search(self, query: str | None = None, *, image=None, like: str | None = None, k: int = 20,
               queues=None, fusion: str = "rrf", depth: dict | int | None = None,
               weights: dict | None = None, rrf_k: int = fusion_lib.RRF_K) -> list[Hit]:
        """The k best videos for one query (exactly one of query / image / like)."""
        given = [name for name, v in (("query", query), ("image", image), ("like", like)) if v is not None]
        if len(given) != 1:
            raise SearchError("give exactly one of query, image, like")
        if k < 1:
            raise SearchError(f"k must be >= 1, got {k}")
        if fusion not in fusion_lib.FUSIONS:
            raise SearchError(f"fusion must be one of {', '.join(fusion_lib.FUSIONS)}, got {fusion!r}")
        kind = given[0]
        available = self.available_queues(kind)
        if queues is None:
            queues = available
        else:
            queues = list(dict.fromkeys(queues))
            unknown = [q for q in queues if q not in QUEUES]
            if unknown:
                raise SearchError(f"unknown queue {', '.join(unknown)}; queues are {', '.join(QUEUES)}")
            missing = [q for q in queues if q not in available]
            if missing:
                raise SearchError(f"queue {', '.join(missing)} cannot answer a --{kind} query on this index "
                                  f"(available: {', '.join(available)})" + self._why_not(kind, missing))
        depths = dict(DEFAULT_DEPTH)
        if isinstance(depth, int):
            depths = {q: depth for q in QUEUES}
        elif isinstance(depth, dict):
            depths.update(depth)
        depths = {q: max(depths[q], k) for q in depths}

        _one_faiss_thread()
        results: dict[str, list] = {}
        if kind == "query":
            if not query.strip():
                raise SearchError("the query is empty")
            if "vector" in queues:
                vec = (self._tower or self._query_encoder()).encode_text(query)
                vector_work = self._vector_work(vec, depths["vector"], text=True)
                if "text" not in queues:
                    results["vector"] = self._merge(self._each_shard(vector_work), depths["vector"])
                elif len(self.shards) == 1:
                    # The text queue on a worker thread while this one searches the vectors: both
                    # release the GIL (tantivy, faiss), so on 2 cores they take the longer of the two,
                    # not the sum. Not during the text tower, which already uses every core.
                    text = self._pool().submit(self._text_work(query, depths["text"]), 0)
                    results["vector"] = self._merge([vector_work(0)], depths["vector"])
                    results["text"] = self._merge([text.result()], depths["text"])
                else:
                    # One task a shard, its text then its vectors: one thread a shard, side by side.
                    # (The text queue's shards on the pool beside this thread's vector searches ran
                    # three threads on two cores, and the queues took 10.0 ms against 7.3-7.6 this
                    # way: 1M videos in 2 shards; bench/README.)
                    text_work = self._text_work(query, depths["text"])
                    both = self._each_shard(lambda s: (text_work(s), vector_work(s)))
                    results["vector"] = self._merge([v for _, v in both], depths["vector"])
                    results["text"] = self._merge([t for t, _ in both], depths["text"])
            elif "text" in queues:
                results["text"] = self._text_queue(query, depths["text"])
        elif kind == "image":
            img = image
            if isinstance(image, (str, os.PathLike)):
                from models.query import read_image

                img = read_image(str(image))
            vec, patches = self._query_encoder().encode_image_and_patches(img)
            if "vector" in queues:
                results["vector"] = self._vector_queue(vec, depths["vector"])
            if "visual" in queues:
                results["visual"] = self._visual_queue(self._image_terms(vec, patches), depth=depths["visual"])
        else:
            if like not in self.where:
                raise SearchError(f"--like {like!r}: no video with that id in {self.path}")
            s, row = self.where[like]
            shard = self.shards[s]
            if "vector" in queues:
                vec = np.asarray(shard.vectors[row], np.float32)
                results["vector"] = self._vector_queue(vec, depths["vector"], like=(s, row))
            if "visual" in queues:
                terms = w = None
                if shard.visual is not None:
                    terms, w = shard.visual.doc_vector(row)
                results["visual"] = self._visual_queue(terms, w, depths["visual"], like=(s, row))

        results = {q: results[q] for q in QUEUES if q in results}  # text, vector, visual: the output's order
        lists = {q: [(self._id(key), score) for key, score in hits] for q, hits in results.items()}
        fused = fusion_lib.fuse(lists, fusion, k=rrf_k, weights=weights)[:k]
        ranks = {q: {self._id(key): (i + 1, score, key) for i, (key, score) in enumerate(hits)}
                 for q, hits in results.items()}
        out = []
        terms = frozenset(analyze(query)) if "text" in results else frozenset()
        for rank, (vid, score) in enumerate(fused, start=1):
            s, row = self.where[vid]
            per = {}
            for q in results:
                found = ranks[q].get(vid)
                if found is None:
                    per[q] = None
                elif q == "text":
                    per[q] = self._text_hit(found, terms)
                else:
                    per[q] = QueueHit(found[0], round(found[1], 6))
            out.append(Hit(rank, vid, round(score, 6), self.shards[s].titles[row], per))
        return out

    def _id(self, key) -> str:
        return self.shards[key[0]].ids[key[1]]

    def _why_not(self, kind: str, missing: list[str]) -> str:
        if "visual" in missing:
            if not any(s.visual is not None for s in self.shards):
                return ": the forward index's frames have no visual tokens (extract with --codebook)"
            if kind == "image":
                return ": the index has no dictionary for image queries (vmm index --codebook DIR)"
        if "text" in missing:
            return ": the text queue answers --query only"
        return ""

    def _text_hit(self, found, terms: frozenset[str]) -> QueueHit:
        """The text queue's hit with the line of the video that matches the query's terms best."""
        rank, score, (s, row) = found
        fields = self.info["text"]["fields"]
        best, best_key = None, None
        for p in self.shards[s].passages(row):
            if p["field"] not in fields:
                continue
            # Every term of a text is a case-folded piece of it (models.text), so a line that holds
            # none of the query's terms as a substring cannot match: it is not segmented.
            folded = p["text"].casefold()
            if not any(t in folded for t in terms):
                continue
            matched = terms & set(analyze(p["text"]))
            if not matched:
                continue
            # Most query terms, then the heavier field, then the shorter (more focused) line, then the earlier.
            key = (len(matched), fields[p["field"]], -len(p["text"]), -(p["time_s"] or 0.0))
            if best_key is None or key > best_key:
                best, best_key = p, key
        if best is None:
            return QueueHit(rank, round(score, 6))
        return QueueHit(rank, round(score, 6), best["field"], best["text"], best["time_s"])


# ---- the command line ------------------------------------------------------------------------


def _format_table(hits: list[Hit]) -> str:
    if not hits:
        return "no results"
    queues = list(hits[0].queues)
    lines = [f"{'rank':>4}  {'video_id':<18} {'score':>9}  " + "  ".join(f"{q:>14}" for q in queues) + "  title"]
    for h in hits:
        cells = []
        for q in queues:
            qh = h.queues[q]
            cells.append(f"{'-':>14}" if qh is None else f"{qh.rank:>4} ({qh.score:>7.3f})")
        lines.append(f"{h.rank:>4}  {h.video_id:<18} {h.score:>9.5f}  " + "  ".join(cells) + f"  {h.title or ''}")
        t = h.queues.get("text")
        if t is not None and t.snippet:
            when = f" @ {t.time_s:.1f}s" if t.time_s is not None else ""
            lines.append(f"{'':>6}{t.field}{when}: {t.snippet}")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("index", help="the search index folder (vmm index's --output)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--query", help="text: BM25 and the CLIP text tower")
    what.add_argument("--image", help="an image file: the CLIP image tower and visual words")
    what.add_argument("--like", help="a video id of the index: videos like it (it is left out)")
    parser.add_argument("--k", type=int, default=20, help="results (default 20)")
    parser.add_argument("--queues", default=None,
                        help="comma-separated subset of text,vector,visual (default: every queue the query can use)")
    parser.add_argument("--fusion", default="rrf", choices=fusion_lib.FUSIONS,
                        help="rrf: reciprocal rank fusion, k=60 (default); weighted: min-max normalised scores")
    parser.add_argument("--rrf-k", type=int, default=fusion_lib.RRF_K, help="the RRF constant (default 60)")
    parser.add_argument("--depth", type=int, default=None, help="candidates each queue keeps before fusion (default 100)")
    parser.add_argument("--json", action="store_true", help="one JSON object per result line")
    parser.add_argument("--clip-pretrained", default=None,
                        help="weights that encode the query: default the index's recorded tag (or none); for an "
                             "index built from a local checkpoint, its path (the file's id must match)")
    parser.add_argument("--query-tower", default=None,
                        help="a query tower folder (vmm train-query-tower's --output) that encodes --query text "
                             "instead of the base CLIP text tower; refused unless trained against this index's "
                             "model and weights")
    from models.clip import TEXT_PRECISIONS

    parser.add_argument("--query-precision", default="fp32", choices=TEXT_PRECISIONS,
                        help="the CLIP text tower's matrix products: fp32 (default, as vmm extract computes) or "
                             "bf16 (the tower in about 60%% of fp32's time on CPUs with AVX512-BF16 or AMX; "
                             "cosine >= 0.9999 to fp32)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto, for query encoding (default cpu)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch threads for query encoding (default 0: torch's own)")


def execute(args, options=None) -> int:
    """Answer one query; a query that cannot be answered is one line on stderr and exit 2."""
    from models.ann import AnnError
    from models.clip import WeightsUnavailable
    from models.codebook import CodebookError

    try:
        if args.k < 1:
            raise SearchError("--k must be >= 1")
        searcher = Searcher(args.index, clip_pretrained=args.clip_pretrained, query_tower=args.query_tower,
                            device=args.device, threads=args.torch_threads, query_precision=args.query_precision)
        queues = args.queues.split(",") if args.queues else None
        hits = searcher.search(args.query, image=args.image, like=args.like, k=args.k, queues=queues,
                               fusion=args.fusion, depth=args.depth, rrf_k=args.rrf_k)
    except (SearchError, QueryEncoderMismatch, WeightsUnavailable, AnnError, CodebookError) as e:
        print(f"vmm search: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # an unreadable image (models.query.read_image), an unknown model
        print(f"vmm search: {e}", file=sys.stderr)
        return 2
    if args.json:
        for hit in hits:
            print(json.dumps(hit.to_json(), ensure_ascii=False))
    else:
        print(_format_table(hits))
    return 0


def run(argv: list[str]) -> int:
    """`vmm search ARGV` without logging set-up (tests, other commands)."""
    from pipelines.cli import COMMANDS
    from pipelines.options import run_command

    return run_command(COMMANDS["search"], argv)


if __name__ == "__main__":
    from pipelines.options import main_of

    sys.exit(main_of("search")())
