"""`vmm index`: build the search index of `vmm search` from a forward index.

    vmm index --input out/ --output search/ [--update] [--shards N] [--max-index-memory 4G]
              [--fields title:2,ocr_subtitle_text,ocr_scene_text:0.7,asr_text]
              [--text-queries auto|N] [--clip-pretrained PATH] [--query-tower DIR] [Beam options]

Consumes every committed run of a forward index (`schemas.index.IndexReader`: one file of one
table at a time, any Beam filesystem). Produces SEARCH/ (a local directory):

    index.json                 what was built: source, runs, counts, models, dictionaries, per shard
                               the vector index's type, parameters and measured recall
    shard-SSSSS/docs.parquet   row -> video_id, title (rows are the shard's own numbering)
    shard-SSSSS/passages.arrow row, field, text, time_s: the lines a snippet is taken from (Arrow
                               IPC, uncompressed, sorted by row: searches memory-map it)
    shard-SSSSS/vectors.f16    the shard's video vectors, float16 [N, D], row order (raw)
    shard-SSSSS/vector.faiss   the ANN index (models.ann)
    shard-SSSSS/text/          the BM25 index (models.bm25, tantivy)
    shard-SSSSS/visual.npz     the visual-word index (models.visual_words), when frames have tokens
    codebook/, patch_codebook/ copies of the dictionaries (`--codebook`), to query by image

Videos go to shard hash(video_id) mod N. One shard is built in this process; N > 1 shards are
built by a Beam pipeline, one shard per element (DirectRunner here; any runner elsewhere), each
reading the forward index and keeping its own videos. `--update` adds the runs committed since
the last build: the vectors and text are added to the existing shards where the vector index type
stays the same (Flat, HNSW, IVF-PQ take additions; the search parameter is re-tuned), otherwise
the shard is rebuilt and the log says why; the visual words are re-weighted from their stored
counts (idf changes with every video).

Once the shards are built, graph and IVF shards get a second search setting for text queries
(`ann.VectorIndex.tune_text`), tuned on short queries cut from the index's own lines and encoded
as `vmm search` encodes them (the CLIP text tower, or `--query-tower`); `--text-queries auto`
(default) does it for an index of trained weights that are available here, N forces it with N
queries a sample, 0 turns it off. index.json's `text_queries` says which encoder, or why not.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models import ann
from models.version import __version__

logger = logging.getLogger(__name__)

FORMAT = "vmm-search-2"  # 2: passages in Arrow IPC (memory-mapped) instead of Parquet
INDEX_JSON = "index.json"
TEXT_FIELDS = ("title", "ocr_subtitle_text", "ocr_scene_text", "asr_text", "ocr_overlay_text")
DEFAULT_FIELDS = {"title": 2.0, "ocr_subtitle_text": 1.0, "ocr_scene_text": 0.7, "asr_text": 1.0}
OCR_DOMAIN_FIELD = {"subtitle": "ocr_subtitle_text", "scene": "ocr_scene_text", "overlay": "ocr_overlay_text"}
VISUAL_WORDS = ("frame", "patch")
TARGET_RECALL = 0.95
PASSAGES_FILE = "passages.arrow"
PASSAGE_BATCH = 65536  # rows a record batch of the passages file
TEXT_TUNE_QUERIES = 500  # text queries a sample (tuning, held-out), --text-queries auto
QUERY_WORDS = (2, 6)  # a tuning text query: 2-6 words of an indexed line,
QUERY_CHARS = (4, 12)  # or 4-12 characters of a line written without spaces (Chinese)
ALL_FLAT = "every shard's vector index is exact (flat): text queries find their true neighbours"
_BATCH = 8192


class IndexBuildError(ValueError):
    """`vmm index` cannot build what was asked; the message says why."""


def parse_memory(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
    if not m:
        raise IndexBuildError(f"--max-index-memory must look like 4G, 512M or 1.5G, got {text!r}")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2).lower()]
    value = int(float(m.group(1)) * scale)
    if value <= 0:
        raise IndexBuildError(f"--max-index-memory must be positive, got {text!r}")
    return value


def parse_fields(text: str | None) -> dict[str, float]:
    """`title:2,asr_text` -> {"title": 2.0, "asr_text": 1.0}; None -> the defaults."""
    from pipelines.options import weighted_names

    if text is None:
        return dict(DEFAULT_FIELDS)
    try:
        return weighted_names(text, TEXT_FIELDS, "--fields", "field")
    except ValueError as e:
        raise IndexBuildError(str(e)) from e


def shard_of(video_id: str, shards: int) -> int:
    """The shard of a video: stable across runs, machines and Python versions."""
    return int.from_bytes(hashlib.sha1(video_id.encode("utf-8")).digest()[:8], "big") % shards


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    """Everything a shard build needs (picklable: Beam ships it to workers)."""

    input: str
    output: str
    shards: int
    max_memory: int
    fields: tuple[tuple[str, float], ...]
    visual_words: tuple[str, ...]
    runs: tuple[str, ...]  # the runs this build reads
    seed: int = 0
    target_recall: float = TARGET_RECALL
    update: bool = False

    @property
    def field_weights(self) -> dict[str, float]:
        return dict(self.fields)


def shard_dir(output: str, shard: int) -> str:
    return os.path.join(output, f"shard-{shard:05d}")


# ---- reading the forward index for one shard -------------------------------------------------


def _reader(root: str):
    from schemas.index import IndexReader

    return IndexReader(root)


def _read_videos(reader, spec: BuildSpec, shard: int, known: set[str]):
    """Yields (ids, titles, texts {field: [str|None]}, vectors float32 [n, D]) per file, keeping
    the shard's videos of the spec's runs that are not in `known` (first occurrence wins)."""
    from schemas.index import file_embeddings, run_of

    wanted = [f for f in TEXT_FIELDS]
    for path in reader.files("videos"):
        if run_of(path) not in spec.runs:
            continue
        names = reader.file_schema(path).names
        columns = list(dict.fromkeys(["video_id", "title"] + [f for f in wanted if f in names]))
        table, vectors = file_embeddings(path, columns)
        ids = table.column("video_id").to_pylist()
        mine = [i for i, v in enumerate(ids) if shard_of(v, spec.shards) == shard]
        keep = []
        for i in mine:
            if ids[i] not in known:
                known.add(ids[i])
                keep.append(i)
        if len(keep) < len(mine):
            logger.warning("%d video ids of %s were already indexed from an earlier run: the first is kept",
                           len(mine) - len(keep), os.path.basename(path))
        if not keep:
            continue
        take = pa.array(keep, pa.int64())
        sub = table.take(take)
        texts = {f: (sub.column(f).to_pylist() if f in sub.schema.names else [None] * len(keep)) for f in wanted}
        yield [ids[i] for i in keep], sub.column("title").to_pylist(), texts, vectors[keep]


def _split_lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").split("\n") if line.strip()]


@dataclasses.dataclass
class _ShardData:
    """One shard's new videos as read from the forward index."""

    ids: list[str] = dataclasses.field(default_factory=list)
    titles: list = dataclasses.field(default_factory=list)
    texts: list[dict] = dataclasses.field(default_factory=list)
    passages: list[tuple] = dataclasses.field(default_factory=list)  # (row, field, text, time_s)
    term_rows: list[np.ndarray] = dataclasses.field(default_factory=list)
    term_ids: list[np.ndarray] = dataclasses.field(default_factory=list)


def _read_frames(reader, spec: BuildSpec, rows: dict[str, int], data: _ShardData, vocab, want_ocr: set[str]):
    """Frame tokens -> (row, term) pairs; OCR lines of the indexed domains -> their first time."""
    from schemas.index import frame_tokens, run_of

    first_time: dict[tuple[int, str, str], float] = {}
    for path in reader.files("frames"):
        if run_of(path) not in spec.runs:
            continue
        names = reader.file_schema(path).names
        columns = [c for c in ("video_id", "timestamp_s", "token", "patch_tokens", "ocr") if c in names]
        from schemas.index import open_file

        with open_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=_BATCH, columns=columns):
                vids = batch.column("video_id").to_pylist()
                sel = [i for i, v in enumerate(vids) if v in rows]
                if not sel:
                    continue
                batch = batch.take(pa.array(sel, pa.int64()))
                brows = np.array([rows[vids[i]] for i in sel], np.int64)
                if vocab is not None and "token" in batch.schema.names:
                    token, patches = frame_tokens(batch)
                    ok = token >= 0
                    data.term_rows.append(brows[ok])
                    data.term_ids.append(vocab.terms(token[ok]))
                    if vocab.patch_k and patches is not None:
                        has = (patches >= 0).all(axis=1)
                        p = patches[has]
                        data.term_rows.append(np.repeat(brows[has], p.shape[1]))
                        data.term_ids.append(vocab.terms(None, p.reshape(-1)))
                if want_ocr and "ocr" in batch.schema.names:
                    times = batch.column("timestamp_s").to_pylist()
                    for row, t, lines in zip(brows.tolist(), times, batch.column("ocr").to_pylist()):
                        for line in lines or ():
                            field = OCR_DOMAIN_FIELD.get(line["domain"])
                            if field in want_ocr:
                                key = (row, field, " ".join(line["text"].split()))
                                if key not in first_time or t < first_time[key]:
                                    first_time[key] = t
    return first_time


def _read_asr(reader, spec: BuildSpec, rows: dict[str, int], data: _ShardData) -> set[int]:
    """Speech segments as passages (their start time); returns the rows that had segments."""
    from schemas.index import run_of

    seen: set[int] = set()
    for path in reader.files("asr_segments"):
        if run_of(path) not in spec.runs:
            continue
        from schemas.index import open_file

        with open_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=_BATCH, columns=["video_id", "start_s", "text"]):
                for vid, start, text in zip(*(batch.column(c).to_pylist() for c in ("video_id", "start_s", "text"))):
                    row = rows.get(vid)
                    if row is not None and text and text.strip():
                        data.passages.append((row, "asr_text", text.strip(), float(start)))
                        seen.add(row)
    return seen


# ---- building one shard ----------------------------------------------------------------------


def _vocabulary(meta: dict, spec: BuildSpec, reader):
    """The visual-word vocabulary of the index, or None when frames carry no tokens."""
    from models.visual_words import Vocabulary

    frame_k = int(meta.get("vmm.codebook_k", 0) or 0)
    patch_k = int(meta.get("vmm.patch_codebook_k", 0) or 0)
    if not meta.get("vmm.codebook_id"):
        return None
    if not frame_k:
        # Older files do not record K: the largest token seen bounds it.
        frame_k = _max_token(reader, spec, "token") + 1
    if "patch" in spec.visual_words and meta.get("vmm.patch_codebook_id"):
        patch_k = patch_k or _max_token(reader, spec, "patch_tokens") + 1
    else:
        patch_k = 0
    return Vocabulary(frame_k, patch_k)


def _max_token(reader, spec: BuildSpec, column: str) -> int:
    import pyarrow.compute as pc

    best = -1
    for batch in reader.batches("frames", [column], batch_size=65536):
        col = batch.column(column)
        if column == "patch_tokens":
            col = pc.list_flatten(col)
        m = pc.max(col).as_py()
        if m is not None:
            best = max(best, int(m))
    return best


def build_shard(spec: BuildSpec, shard: int, meta: dict) -> dict:
    """Build (or, with spec.update, extend) one shard; returns its record for index.json."""
    from models.bm25 import TextIndex
    from models.visual_words import VisualWordIndex

    started = time.perf_counter()
    reader = _reader(spec.input)
    folder = shard_dir(spec.output, shard)
    os.makedirs(folder, exist_ok=True)
    old = _load_shard_state(folder) if spec.update else None
    known = set(old["ids"]) if old else set()
    base = len(known)
    data = _ShardData()
    dim = int(meta["vmm.embedding_dim"]) if meta.get("vmm.embedding_dim") else None
    vec_path = os.path.join(folder, "vectors.f16")
    mode = "ab" if old else "wb"
    fields = spec.field_weights
    with open(vec_path, mode) as vf:
        for ids, titles, texts, vectors in _read_videos(reader, spec, shard, known):
            dim = dim or vectors.shape[1]
            if vectors.shape[1] != dim:
                raise IndexBuildError(f"embedding dim {vectors.shape[1]} != {dim} in {spec.input}")
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vf.write(np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), np.float16).tobytes())
            for i, vid in enumerate(ids):
                data.ids.append(vid)
                data.titles.append(titles[i])
                data.texts.append({f: texts[f][i] for f in TEXT_FIELDS})
    if old and not data.ids:  # --update: none of the new runs' videos falls in this shard
        return dict(old["record"], added=0)
    rows = {vid: base + i for i, vid in enumerate(data.ids)}
    total = base + len(data.ids)
    record = {"shard": shard, "videos": total, "added": len(data.ids)}
    if total == 0:
        record.update(vector=None, text=None, visual=None)
        _write_state(folder, [], [], record)
        return record

    # Frames: visual words, and the times of OCR lines (for snippets).
    vocab = _vocabulary(meta, spec, reader)
    want_ocr = {f for f in fields if f.startswith("ocr_")}
    first_time = _read_frames(reader, spec, rows, data, vocab, want_ocr) if data.ids else {}
    asr_rows = _read_asr(reader, spec, rows, data) if data.ids else set()
    for i, vid in enumerate(data.ids):
        row = base + i
        if data.titles[i]:
            data.passages.append((row, "title", data.titles[i], None))
        for field in want_ocr:
            for line in _split_lines(data.texts[i].get(field)):
                data.passages.append((row, field, line, first_time.get((row, field, " ".join(line.split())))))
        if "asr_text" in fields and row not in asr_rows:
            for line in _split_lines(data.texts[i].get("asr_text")):
                data.passages.append((row, "asr_text", line, None))

    # Vectors.
    stage = {"read": round(time.perf_counter() - started, 2)}
    t = time.perf_counter()
    vectors = np.memmap(vec_path, dtype=np.float16, mode="r", shape=(total, dim))
    vector_record = _build_vectors(folder, vectors, spec, old, base)
    stage["vectors"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    # Text.
    text_dir = os.path.join(folder, "text")
    if not old and os.path.exists(text_dir):
        shutil.rmtree(text_dir)
    text = TextIndex(text_dir, fields)
    text.add((base + i, data.texts[i]) for i in range(len(data.ids)))
    stage["text"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    # Visual words: counts kept, weights recomputed over all videos of the shard.
    visual_record = None
    if vocab is not None:
        new_rows = np.concatenate(data.term_rows) if data.term_rows else np.zeros(0, np.int64)
        new_terms = np.concatenate(data.term_ids) if data.term_ids else np.zeros(0, np.int64)
        counts_path = os.path.join(folder, "visual_counts.npz")
        if old and os.path.exists(counts_path):
            with np.load(counts_path, allow_pickle=False) as z:
                new_rows = np.concatenate([z["rows"], new_rows])
                new_terms = np.concatenate([z["terms"], new_terms])
        with open(counts_path, "wb") as f:
            np.savez(f, rows=new_rows, terms=new_terms)
        vw = VisualWordIndex.build(vocab, new_rows, new_terms, total)
        vw.save(os.path.join(folder, "visual.npz"))
        visual_record = {"frame_k": vocab.frame_k, "patch_k": vocab.patch_k, "postings": int(len(vw.rows)),
                         "videos_with_tokens": int(len(np.unique(new_rows)))}
    record.update(
        vector=vector_record,
        text={"library": f"tantivy {_version('tantivy')}", "docs": text.num_docs},
        visual=visual_record,
    )
    ids = (old["ids"] if old else []) + data.ids
    titles = (old["titles"] if old else []) + data.titles
    stage["visual"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    _write_passages(folder, data.passages, append=bool(old))
    stage["passages"] = round(time.perf_counter() - t, 2)
    record.update(seconds=round(time.perf_counter() - started, 2), stage_seconds=stage)
    _write_state(folder, ids, titles, record)
    logger.info("shard %d: %d videos (%d added) in %.1fs: %s", shard, total, len(data.ids),
                time.perf_counter() - started, vector_record["kind"])
    return record


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _build_vectors(folder: str, vectors: np.ndarray, spec: BuildSpec, old: dict | None, base: int) -> dict:
    n, dim = vectors.shape
    choice = ann.plan_index(n, dim, spec.max_memory)
    path = os.path.join(folder, "vector.faiss")
    previous = ann.AnnChoice.from_json(old["record"]["vector"]) if old and old["record"].get("vector") else None
    if previous is not None and previous.kind == choice.kind:  # Flat, HNSW and a trained IVF take additions
        index = ann.VectorIndex.load(path, previous, vectors, mmap=False)
        index.add(vectors[base:], base)
        index.choice = dataclasses.replace(previous, count=n, memory_bytes=choice.memory_bytes)
        how = f"added {n - base} vectors to the existing {previous.kind} index"
    else:
        if previous is not None:
            logger.warning("rebuilding the vector index of %s: %d vectors now call for %s, not %s (%s)",
                           folder, n, choice.kind, previous.kind, choice.reason)
        index = ann.VectorIndex(ann.build_index(vectors, choice, seed=spec.seed), choice, vectors)
        how = "built" if previous is None else f"rebuilt: {previous.kind} -> {choice.kind}"
    started = time.perf_counter()
    chosen = index.tune(target_recall=spec.target_recall, seed=spec.seed)
    index.save(path)
    out = chosen.to_json()
    out["how"] = how
    out["tune_seconds"] = round(time.perf_counter() - started, 2)
    return out


def _write_state(folder: str, ids: list[str], titles: list, record: dict) -> None:
    table = pa.table({"row": pa.array(range(len(ids)), pa.int64()), "video_id": pa.array(ids, pa.string()),
                      "title": pa.array(titles, pa.string())})
    pq.write_table(table, os.path.join(folder, "docs.parquet"))
    _write_record(folder, record)


def _write_record(folder: str, record: dict) -> None:
    with open(os.path.join(folder, "shard.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)


PASSAGES_SCHEMA = pa.schema([("row", pa.int64()), ("field", pa.string()), ("text", pa.string()),
                             ("time_s", pa.float64())])


def _write_passages(folder: str, passages: list[tuple], append: bool) -> None:
    """The passages file: Arrow IPC, uncompressed, sorted by (row, field), so that a search
    memory-maps it and slices one row's lines without decoding anything (a Parquet row group read
    cost ~0.6 ms a snippet, most of a warm search)."""
    path = os.path.join(folder, PASSAGES_FILE)
    columns = list(zip(*passages)) if passages else [()] * len(PASSAGES_SCHEMA)  # columns, not a dict per row
    new = pa.table([pa.array(list(c), type=f.type) for c, f in zip(columns, PASSAGES_SCHEMA)], schema=PASSAGES_SCHEMA)
    if append and os.path.exists(path):
        with pa.OSFile(path, "rb") as f:
            new = pa.concat_tables([pa.ipc.open_file(f).read_all(), new])
    new = new.sort_by([("row", "ascending"), ("field", "ascending")])
    tmp = f"{path}.tmp-{os.getpid()}"
    with pa.OSFile(tmp, "wb") as f, pa.ipc.new_file(f, PASSAGES_SCHEMA) as writer:
        writer.write_table(new, max_chunksize=PASSAGE_BATCH)
    os.replace(tmp, path)


def _load_shard_state(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, "shard.json"), encoding="utf-8") as f:
            record = json.load(f)
        docs = pq.read_table(os.path.join(folder, "docs.parquet"))
    except FileNotFoundError:
        return None
    return {"record": record, "ids": docs.column("video_id").to_pylist(), "titles": docs.column("title").to_pylist()}


# ---- the whole index -------------------------------------------------------------------------


def _check_runs_agree(reader, runs: list[str]) -> dict:
    """The runs' shared model metadata; refuses runs whose vectors live in different spaces."""
    metas = {r: reader.run_metadata(r) for r in runs}
    keys = ("vmm.clip_model", "vmm.clip_weights", "vmm.codebook_id", "vmm.patch_codebook_id")
    first = metas[runs[0]]
    for run, meta in metas.items():
        for key in keys[:2]:
            if meta.get(key) != first.get(key):
                raise IndexBuildError(
                    f"runs {runs[0]} and {run} were extracted with different {key} ({first.get(key)} vs "
                    f"{meta.get(key)}): their vectors cannot share one index")
    for key in keys[2:]:
        if len({m.get(key) for m in metas.values()}) > 1:
            logger.warning("runs differ in %s: visual words from different dictionaries are not comparable; "
                           "only the newest run's dictionary is used for image queries", key)
    return metas[runs[-1]]


def _copy_codebook(path: str | None, expected_id: str | None, target: str, what: str):
    """(id, k) of a dictionary given for image queries, checked and copied into the index."""
    if path is None:
        return None, 0
    from models.codebook import Codebook

    book = Codebook.load(path)
    if expected_id and book.id != expected_id:
        raise IndexBuildError(f"--{what} {path} is dictionary {book.id[:16]}, but the index's frames were "
                              f"tokenised with {expected_id[:16]}")
    book.save(target)
    return book.id, book.k


def build(args, options=None) -> dict:
    started = time.perf_counter()
    reader = _reader(args.input)
    runs = list(reader.runs)
    if not runs:
        raise IndexBuildError(f"{args.input} holds no committed run (no {args.input}/_runs/*.json): nothing to index")
    if not reader.files("videos") or reader.num_rows("videos") == 0:
        raise IndexBuildError(f"{args.input} has no videos rows: nothing to index")
    meta = _check_runs_agree(reader, runs)
    output = args.output
    index_json = os.path.join(output, INDEX_JSON)
    fields = parse_fields(args.fields)
    previous = None
    update = bool(args.update)
    if update:
        if not os.path.exists(index_json):
            raise IndexBuildError(f"--update: {index_json} does not exist; build the index first (without --update)")
        with open(index_json, encoding="utf-8") as f:
            previous = json.load(f)
        why = _why_rebuild(previous, runs, meta, fields, args)
        if why:
            logger.warning("--update rebuilds the whole index: %s", why)
            update, previous = False, None
    elif os.path.exists(index_json) and not args.overwrite:
        raise IndexBuildError(f"{output} already holds a search index; pass --update to add new runs or "
                              f"--overwrite to rebuild it")
    if not update and os.path.isdir(output):
        for name in os.listdir(output):
            if name.startswith("shard-") or name in (INDEX_JSON, "codebook", "patch_codebook"):
                p = os.path.join(output, name)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    os.makedirs(output, exist_ok=True)
    shards = previous["shards_count"] if previous else args.shards
    new_runs = [r for r in runs if not previous or r not in previous["runs"]]
    spec = BuildSpec(
        input=args.input, output=output, shards=shards, max_memory=parse_memory(args.max_index_memory),
        fields=tuple(fields.items()), visual_words=tuple(args.visual_words.split(",")),
        runs=tuple(new_runs), seed=args.seed, target_recall=args.target_recall, update=update,
    )
    if update and not new_runs:
        # Nothing to add; but the text-query tuning may be asked for now (--clip-pretrained, --query-tower).
        text_queries = _tune_for_text_queries(args, spec, meta, previous["shards"], previous)
        if text_queries == previous.get("text_queries"):
            logger.info("no run committed since the last build: nothing to add")
            return previous
        info = dict(previous, text_queries=text_queries)
        _write_index_json(index_json, info)
        return info
    meta = dict(meta)
    codebook_id, meta["vmm.codebook_k"] = _copy_codebook(args.codebook, meta.get("vmm.codebook_id"), os.path.join(output, "codebook"), "codebook")
    patch_id, meta["vmm.patch_codebook_k"] = _copy_codebook(args.patch_codebook, meta.get("vmm.patch_codebook_id"),
                              os.path.join(output, "patch_codebook"), "patch-codebook")
    if shards == 1:
        records = [build_shard(spec, 0, meta)]
    else:
        records = _build_with_beam(spec, meta, options)
    records.sort(key=lambda r: r["shard"])
    total = sum(r["videos"] for r in records)
    if total == 0:
        raise IndexBuildError(f"{args.input} has no videos to index")
    text_queries = _tune_for_text_queries(args, spec, meta, records, previous)
    info = {
        "format": FORMAT,
        "vmm_version": __version__,
        "source": os.path.abspath(args.input) if "://" not in args.input else args.input,
        "runs": runs,
        "clip_model": meta.get("vmm.clip_model"),
        "clip_weights": meta.get("vmm.clip_weights"),
        "embedding_dim": records[0]["vector"]["dim"] if records[0].get("vector") else None,
        "codebook_id": meta.get("vmm.codebook_id"),
        "patch_codebook_id": meta.get("vmm.patch_codebook_id"),
        "codebook_for_image_queries": codebook_id,
        "patch_codebook_for_image_queries": patch_id if "patch" in spec.visual_words else None,
        "counts": {"videos": total, "shards": shards},
        "text": {"library": f"tantivy {_version('tantivy')}", "analyzer": _analyzer_id(), "fields": fields,
                 "scoring": "BM25 (k1=1.2, b=0.75) per field, weighted sum over fields"},
        "vector": {"max_index_memory": spec.max_memory, "target_recall_at_10": spec.target_recall,
                   "metric": "inner product of L2-normalised vectors (cosine)"},
        "visual": {"words": list(spec.visual_words), "weighting": "tf-idf, (1 + ln tf) * idf, cosine"},
        "text_queries": text_queries,
        "shards_count": shards,
        "shards": records,
        "built_seconds": round(time.perf_counter() - started, 2),
    }
    if previous and previous.get("codebook_for_image_queries") and not codebook_id:
        info["codebook_for_image_queries"] = previous["codebook_for_image_queries"]
        info["patch_codebook_for_image_queries"] = previous.get("patch_codebook_for_image_queries")
    _write_index_json(index_json, info)
    return info


def _write_index_json(index_json: str, info: dict) -> None:
    tmp = index_json + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, sort_keys=True, ensure_ascii=False)
    os.replace(tmp, index_json)


# ---- the vector search tuned for text queries ------------------------------------------------


def _query_window(line: str, rng) -> str:
    """A short query cut from an indexed line: QUERY_WORDS words, or QUERY_CHARS characters of a
    line with no spaces to split on (Chinese), at a seeded place."""
    words = line.split()
    if len(words) >= 2:
        n = int(rng.integers(QUERY_WORDS[0], QUERY_WORDS[1] + 1))
        start = int(rng.integers(0, max(1, len(words) - n + 1)))
        return " ".join(words[start:start + n])
    text = line.strip()
    if len(text) > QUERY_CHARS[1]:
        n = int(rng.integers(QUERY_CHARS[0], QUERY_CHARS[1] + 1))
        start = int(rng.integers(0, len(text) - n + 1))
        return text[start:start + n]
    return text


def _query_texts(output: str, records: list[dict], count: int, seed: int) -> list[str]:
    """Up to `count` text queries cut from the index's own lines (titles, subtitles, scene text,
    speech: its passages), drawn by seed across all shards."""
    # Memory-mapped and concatenated without copies: only the drawn lines are read.
    tables = [pa.ipc.open_file(pa.memory_map(os.path.join(shard_dir(output, r["shard"]), PASSAGES_FILE)))
              .read_all().select(["text"]) for r in records if r["videos"]]
    table = pa.concat_tables(tables) if tables else None
    if table is None or not len(table):
        return []
    rng = np.random.default_rng([seed, 17])
    take = np.sort(rng.choice(len(table), size=min(count, len(table)), replace=False))
    lines = table.column("text").take(pa.array(take)).to_pylist()
    return [q for q in (_query_window(line, rng) for line in lines if line and line.strip()) if q]


def _text_source(args, model: str, weights: str):
    """The QuerySource `vmm search` would encode text queries with: --query-tower's tower (its
    tower.json read and checked against the index), or the index's CLIP text tower with
    --clip-pretrained's weights (the weights rule is checked when the encoder is made)."""
    from models.query import QuerySource

    if args.query_tower:
        from models.query_tower import check_tower, read_tower_info

        info = read_tower_info(args.query_tower)
        check_tower(info, model, weights)
        return QuerySource("tower", model, weights, path=args.query_tower, tower_weights=info.get("weights_sha256", ""))
    return QuerySource("clip", model, weights, args.clip_pretrained)


def _encode_by_length(encoder, texts: list[str], batch: int = 64) -> np.ndarray:
    """encoder.encode_texts over texts in batches of similar length, in the texts' order: a batch
    is padded to its longest text (1,000 mixed Chinese/English queries of 26 tokens on average:
    15.5 s against 37.9 s in the order drawn, ViT-B-32 on 2 cores)."""
    order = np.argsort([len(t.encode("utf-8")) for t in texts], kind="stable")
    out = np.concatenate([encoder.encode_texts([texts[i] for i in order[lo:lo + batch]])
                          for lo in range(0, len(texts), batch)])
    vectors = np.empty_like(out)
    vectors[order] = out
    return vectors


def _tune_for_text_queries(args, spec: BuildSpec, meta: dict, records: list[dict], previous: dict | None) -> dict:
    """Tune each graph or IVF shard's search for text queries (`ann.VectorIndex.tune_text`) on
    queries cut from the index's own text and encoded as `vmm search` encodes them; the setting
    goes into the shard's vector record (`search_text`). Returns index.json's `text_queries`: the
    encoder and query count, or why nothing was tuned. By default (`--text-queries auto`) only an
    index of trained weights is tuned: a random tower's text vectors say nothing of real queries."""
    from models.clip import NO_WEIGHTS

    wanted = args.text_queries
    graphs = [r for r in records if r["videos"] and r.get("vector") and r["vector"]["kind"] != "flat"]
    if wanted == 0:
        return {"skipped": "--text-queries 0"}
    if not graphs:
        return {"skipped": ALL_FLAT}
    model, weights = meta.get("vmm.clip_model"), meta.get("vmm.clip_weights")
    if wanted is None and weights == NO_WEIGHTS and not args.query_tower:
        why = ("the index's CLIP weights are random (none): their text vectors say nothing of real queries "
               "(--text-queries N tunes anyway)")
        logger.info("vector search not tuned for text queries: %s", why)
        return {"skipped": why}
    started = time.perf_counter()

    def cannot(why: str) -> dict:
        if wanted is not None:
            raise IndexBuildError(f"--text-queries: {why}")
        logger.warning("vector search not tuned for text queries: %s", why)
        return {"skipped": why}

    errors = (ValueError, OSError, RuntimeError)  # a mismatch, a missing tower or checkpoint, weights not here
    from models.query import open_query_encoder

    try:
        source = _text_source(args, model, weights)
        encoder, encoder_id = open_query_encoder(source), source.text_id  # the model loads on first use
    except errors as e:
        return cannot(f"cannot encode text queries: {e}")
    earlier = (previous or {}).get("text_queries") or {}
    todo = [r for r in graphs if not r["vector"].get("search_text") or earlier.get("encoder") != encoder_id]
    if not todo:  # every graph shard tuned for this encoder already (an --update that added nothing to them)
        return earlier
    per_sample = wanted or TEXT_TUNE_QUERIES
    texts = _query_texts(spec.output, records, 2 * per_sample, spec.seed)
    if len(texts) < 20:
        return cannot(f"the index has {len(texts)} lines of text to make text queries from (at least 20 needed)")
    try:
        vectors = _encode_by_length(encoder, texts)  # loads the model
    except errors as e:
        return cannot(f"cannot encode text queries: {e}")
    encoded = time.perf_counter() - started
    for r in todo:
        folder = shard_dir(spec.output, r["shard"])
        choice = ann.AnnChoice.from_json(r["vector"])
        stored = np.memmap(os.path.join(folder, "vectors.f16"), dtype=np.float16, mode="r",
                           shape=(choice.count, choice.dim))
        index = ann.VectorIndex.load(os.path.join(folder, "vector.faiss"), choice, stored)
        tuned = index.tune_text(vectors, target_recall=spec.target_recall, seed=spec.seed).to_json()
        r["vector"] = dict(r["vector"], **{k: tuned[k] for k in tuned if k == "search_text" or k.startswith("text_")})
        _write_record(folder, r)
        logger.info("shard %d: text queries %s recall@10 %.4f on held-out text queries (%.4f with %s)", r["shard"],
                    tuned["search_text"], tuned["text_recall_at_10"], tuned["text_recall_at_10_before"],
                    tuned["search"])
    return {"encoder": encoder_id, "queries": len(texts) // 2,
            "source": f"the index's own lines (titles, subtitles, scene text, speech), {QUERY_WORDS[0]}-"
                      f"{QUERY_WORDS[1]} words or {QUERY_CHARS[0]}-{QUERY_CHARS[1]} characters of each, seed {spec.seed}",
            "encode_seconds": round(encoded, 2), "seconds": round(time.perf_counter() - started, 2)}


def _analyzer_id() -> str:
    from models.text import analyzer_id

    return analyzer_id()


def _why_rebuild(previous: dict, runs: list[str], meta: dict, fields: dict, args) -> str | None:
    if previous.get("format") != FORMAT:
        return f"the index has format {previous.get('format')}, this vmm writes {FORMAT}"
    gone = [r for r in previous["runs"] if r not in runs]
    if gone:
        return f"runs {', '.join(gone)} are no longer committed in {args.input} (overwritten?)"
    if previous.get("clip_weights") != meta.get("vmm.clip_weights") or previous.get("clip_model") != meta.get("vmm.clip_model"):
        return "the new runs were extracted with other CLIP weights"
    if previous["text"]["fields"] != fields:
        return f"--fields changed ({previous['text']['fields']} -> {fields})"
    if previous["text"].get("analyzer") != _analyzer_id():
        return "the text analyzer changed"
    if previous.get("codebook_id") != meta.get("vmm.codebook_id"):
        return "the new runs were tokenised with another dictionary"
    if args.shards not in (1, previous["shards_count"]):
        return f"--shards {args.shards} differs from the index's {previous['shards_count']}"
    return None


def _build_with_beam(spec: BuildSpec, meta: dict, options) -> list[dict]:
    """N shards, one element each, through a Beam pipeline (DirectRunner unless told otherwise)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.options import new_pipeline

    options = options or PipelineOptions([])
    with new_pipeline(options) as p:
        _ = (p
             | "Shards" >> beam.Create(list(range(spec.shards)))
             | "Spread" >> beam.Reshuffle()
             | "BuildShard" >> beam.Map(lambda s, sp, m: build_shard(sp, s, m), spec, meta))
    records = []
    for shard in range(spec.shards):
        with open(os.path.join(shard_dir(spec.output, shard), "shard.json"), encoding="utf-8") as f:
            records.append(json.load(f))
    return records


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, help="the forward index (vmm extract's --output; local or URI)")
    parser.add_argument("--output", required=True, help="the search index folder (local)")
    parser.add_argument("--update", action="store_true", help="add the runs committed since the last build")
    parser.add_argument("--overwrite", action="store_true", help="rebuild an existing search index from scratch")
    parser.add_argument("--shards", type=int, default=1,
                        help="independent shards by video_id hash, built in parallel Beam workers and searched "
                             "side by side, one thread a shard (default 1)")
    parser.add_argument("--max-index-memory", default="4G",
                        help="RAM budget of one shard's vector index at search time; picks its type (default 4G)")
    parser.add_argument("--fields", default=None,
                        help="BM25 text fields with weights (default title:2,ocr_subtitle_text:1,ocr_scene_text:0.7,"
                             "asr_text:1; ocr_overlay_text, i.e. logos and watermarks, is left out)")
    parser.add_argument("--visual-words", default="frame",
                        help="frame tokens, or frame,patch to index patch tokens too (default frame)")
    parser.add_argument("--codebook", default=None,
                        help="the frame dictionary the index was tokenised with, copied in so that image queries "
                             "reach the visual words (default: none; --like still uses them)")
    parser.add_argument("--patch-codebook", default=None, help="the patch dictionary (with --visual-words frame,patch)")
    parser.add_argument("--target-recall", type=float, default=TARGET_RECALL,
                        help="recall@10 the vector index's search parameters are tuned to (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tuning sample and k-means (default 0)")
    parser.add_argument("--text-queries", type=_text_queries, default=None, metavar="auto|N",
                        help="tune the vector search for text queries too, on N queries a sample (tuning, "
                             "held-out) cut from the index's own text and encoded as vmm search encodes them "
                             f"(a CLIP text vector is not like the video vectors a graph is tuned on). auto "
                             f"(default): {TEXT_TUNE_QUERIES}, for an index of trained weights that are here; 0: never")
    parser.add_argument("--clip-pretrained", default=None,
                        help="for --text-queries: the weights that encode text queries, as in vmm search "
                             "(default the index's recorded tag; an index built from a local checkpoint needs its path)")
    parser.add_argument("--query-tower", default=None,
                        help="for --text-queries: tune for text encoded by this query tower (vmm search "
                             "--query-tower), not the CLIP text tower")


def _text_queries(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a count, got {text!r}") from None
    if n < 0 or 0 < n < 10:
        raise argparse.ArgumentTypeError(f"expected auto, 0 or a count of at least 10, got {n}")
    return n


def check_arguments(args) -> None:
    if args.shards < 1:
        raise IndexBuildError("--shards must be >= 1")
    words = args.visual_words.split(",")
    if any(w not in VISUAL_WORDS for w in words) or "frame" not in words:
        raise IndexBuildError("--visual-words must be frame or frame,patch")
    if args.update and args.overwrite:
        raise IndexBuildError("--update and --overwrite exclude each other")
    if "://" in args.output and not args.output.startswith("file://"):
        raise IndexBuildError("--output must be a local folder (the indexes are memory-mapped files)")
    if not 0 < args.target_recall <= 1:
        raise IndexBuildError("--target-recall must be in (0, 1]")
    parse_memory(args.max_index_memory)
    parse_fields(args.fields)


def execute(args, options=None) -> int:
    """Build the index; a build that cannot be done as asked is one line on stderr and exit 2."""
    from models.codebook import CodebookError

    try:
        check_arguments(args)
        info = build(args, options)
    except (IndexBuildError, ann.AnnError, CodebookError) as e:
        print(f"vmm index: {e}", file=sys.stderr)
        return 2
    parts = []
    for r in info["shards"]:
        v = r.get("vector") or {}
        if not r["videos"]:
            parts.append(f"shard {r['shard']}: empty (no video id hashes to it)")
            continue
        part = (f"shard {r['shard']}: {r['videos']} videos, {v.get('kind')} {v.get('search')} "
                f"recall@10 {v.get('recall_at_10')} on held-out queries")
        if v.get("search_text"):
            part += (f", text queries {v['search_text']} recall@10 {v['text_recall_at_10']} "
                     f"({v['text_recall_at_10_before']} untuned)")
        parts.append(part)
    print(f"search index {args.output}: {info['counts']['videos']} videos from {len(info['runs'])} runs; "
          + "; ".join(parts))
    skipped = (info.get("text_queries") or {}).get("skipped")
    if skipped and skipped != ALL_FLAT:  # nothing to say of an exact index
        print(f"vector search not tuned for text queries: {skipped}")
    return 0


def run(argv: list[str]) -> int:
    """`vmm index ARGV` without logging set-up (tests, other commands)."""
    from pipelines.cli import COMMANDS
    from pipelines.options import run_command

    return run_command(COMMANDS["index"], argv)


if __name__ == "__main__":
    from pipelines.options import main_of
    from pipelines.process_exit import exit_process

    exit_process(main_of("index"))
