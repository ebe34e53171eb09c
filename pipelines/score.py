"""`vmm score`: a <query, video> pair log + the forward index -> ranking features, one row per pair.

    vmm score --pairs pairs.parquet --index out/ --output feats/ [Beam options]
    python -m pipelines.score ...                       # module form, for Dataflow / Flink / Spark

The stages (each a labelled step; every file is read through schemas.index / Beam's FileSystems):

  ReadPairs        pair log files -> (pair_index, query, video_id, input values)
  EncodeQueries    distinct non-empty queries -> models.ranking.Query (the text tower once per
                   distinct query, in batches), joined back to the pairs as a side input (about
                   2 KB per distinct query with ViT-B-32, plus its word-token vectors when patch
                   features are on)
  ReadVideos       videos files -> the columns the features need (vector, texts, signals)
  ReadFrames       frames files -> per video its keyframes' tokens (or stored embeddings)
  AssembleVideos   video_id -> one VideoDoc (the first committed run holding the video, like
                   `vmm index`); the text fields analysed once, keeping the counts of query terms
  CorpusStats      BM25's whole-index statistics: videos, terms per field, document frequency
                   of each query term per field
  ScorePairs       pairs grouped by video_id with their VideoDoc -> one output row per pair
  WritePairs       Parquet FEATS/pairs/part-SSSSS-of-NNNNN.parquet (schemas.pairs)

Nothing lives in module globals: models (the query encoder, the dictionaries) load in DoFn.setup
through shared handles, so the same code runs on DirectRunner, Flink, Spark and Dataflow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import zlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared

from models import ranking
from models.query import QuerySource, open_query_encoder
from models.text import analyzer_id
from pipelines.options import (RUN, INDEX_INPUT, IndexSource, RunConfig, UsageError, beam_flags, check,
                               main_of, new_pipeline, starting)
from schemas import pairs as schema
from schemas.index import file_embeddings, frame_tokens, open_file, run_of, vmm_metadata

logger = logging.getLogger(__name__)

_NAMESPACE = "vmm"
FRAME_VECTORS = ("auto", "embedding", "token")
VIDEO_SIGNALS = ("title_visual_similarity", "topic_coherence", "duration_s", "num_keyframes", "speech_seconds")
# The videos columns read (bytes per pair: only these, and the embedding with its scale).
VIDEO_COLUMNS = ("video_id", *ranking.TEXT_FIELDS, *VIDEO_SIGNALS, "stage_errors")
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"


# ---- configuration ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    pairs_kind: str
    pair_files: tuple[str, ...]
    input_schema: pa.Schema
    index: IndexSource
    output: str
    query: QuerySource
    query_batch_size: int
    frame_vectors: str | None  # "embedding" | "token" | None (the index has neither)
    codebook: str | None  # frame dictionary folder (token route)
    patch_codebook: str | None  # patch dictionary folder (qv_patch_max)
    metadata: dict

    @property
    def output_schema(self) -> pa.Schema:
        return schema.output_schema(self.input_schema, self.metadata)

    @property
    def frame_columns(self) -> list[str]:
        """The frames columns read (bytes per pair: only these)."""
        cols = ["video_id", "frame_index", "reason"]
        if self.frame_vectors == "token" or self.patch_codebook:
            cols.append("token")
        if self.patch_codebook:
            cols.append("patch_tokens")
        if self.frame_vectors == "embedding":
            cols.append("embedding")
        return cols


def _codebook_id(path: str) -> str:
    from models.codebook import Codebook
    from transforms.files import localize

    return Codebook.load(localize(path)).id


def _check_dictionary(index: IndexSource, key: str, flag: str, path: str) -> str:
    """The id of the dictionary at `path`, refused unless every run's frames were tokenised with it."""
    from schemas.index import IndexReader

    reader = IndexReader(index.path)
    wanted = {reader.run_metadata(r).get(key) for r in reader.runs}
    found = _codebook_id(path)
    if wanted != {found}:
        raise UsageError(f"{flag} {path} is dictionary {found[:16]}, but the index's frames were tokenised "
                         f"with {', '.join(sorted(str(w)[:16] for w in wanted))}")
    return found


def _check_tower_vectors(folder: str, info: dict, index: IndexSource) -> None:
    """UsageError unless the tower was trained against this index's video vectors: the same
    committed runs (cheap), else the same `vectors_id` (ids and vectors hashed, as training does:
    an index copied or re-extracted to the same vectors passes)."""
    from models.query_tower import load_videos
    from schemas.index import IndexReader

    trained = info.get("index") or {}
    if trained.get("runs") and list(trained["runs"]) == list(IndexReader(index.path).runs):
        return
    here = load_videos(index.path, columns=()).vectors_id
    if trained.get("vectors_id") != here:
        raise UsageError(f"--query-tower {folder} was trained against the video vectors "
                         f"{trained.get('vectors_id') or '(not recorded)'} of {trained.get('path') or 'another index'}, "
                         f"but {index.path}'s are {here}: train it against this index (vmm train-query-tower)")


def build_config(args, run: RunConfig) -> ScoreConfig:
    """Checks everything a run needs before any work: the pair log's columns, the index, the query
    encoder's weights, the dictionaries."""
    check(args.query_batch_size >= 1, "--query-batch-size", ">= 1", args.query_batch_size)
    kind, files = schema.pair_files(args.pairs)
    input_schema = schema.input_schema(kind, files)
    index = INDEX_INPUT.to_config(args)
    if not index.files["videos"]:
        raise UsageError(f"{index.path} has no committed videos")
    meta = index.metadata
    given = [f for f, v in (("--query-vectors", args.query_vectors), ("--query-tower", args.query_tower),
                            ("--clip-pretrained", args.clip_pretrained)) if v is not None]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} exclude each other (each is where query vectors come from)")
    from models.query import QueryEncoderMismatch, resolve_weights

    if args.query_vectors:
        source = QuerySource("table", path=args.query_vectors)
    elif args.query_tower:
        from models.query_tower import TowerError, check_tower, read_tower_info
        from transforms.files import localize

        try:
            info = read_tower_info(localize(args.query_tower))
            check_tower(info, index.clip_model, index.clip_weights, where=index.path)
            _check_tower_vectors(args.query_tower, info, index)
        except (TowerError, QueryEncoderMismatch, OSError) as e:  # TowerMismatch is a QueryEncoderMismatch
            raise UsageError(str(e)) from e
        source = QuerySource("tower", index.clip_model, index.clip_weights, path=args.query_tower,
                             tower_weights=info.get("weights_sha256", ""), device=args.device, threads=run.threads)
    else:
        try:
            resolve_weights(index.clip_model, index.clip_weights, args.clip_pretrained)
        except QueryEncoderMismatch as e:
            raise UsageError(str(e)) from e
        source = QuerySource("clip", index.clip_model, index.clip_weights, args.clip_pretrained,
                             device=args.device, threads=run.threads)

    has_tokens = bool(meta.get("vmm.codebook_id"))
    route = args.frame_vectors
    if route == "auto":
        route = "embedding" if index.frame_embeddings else "token" if has_tokens else None
    if route == "embedding" and not index.frame_embeddings:
        raise UsageError(f"--frame-vectors embedding: {index.path} stores no frame embeddings "
                         "(vmm extract --store-frame-embeddings)")
    codebook = None
    if route == "token":
        if not has_tokens:
            raise UsageError(f"--frame-vectors token: {index.path}'s frames have no tokens (vmm extract --codebook)")
        if not args.codebook:
            raise UsageError(f"{index.path}'s frames are tokens of dictionary {meta['vmm.codebook_id'][:16]}: "
                             "pass it as --codebook DIR to rebuild the frame vectors")
        codebook = args.codebook
        _check_dictionary(index, "vmm.codebook_id", "--codebook", codebook)
    patch = None
    if args.patch_codebook:
        if not meta.get("vmm.patch_codebook_id"):
            raise UsageError(f"--patch-codebook: {index.path}'s frames have no patch tokens")
        patch = args.patch_codebook
        _check_dictionary(index, "vmm.patch_codebook_id", "--patch-codebook", patch)

    from schemas.index import IndexReader

    reader = IndexReader(index.path)
    metadata = schema.file_metadata({
        "vmm.index": index.path,
        "vmm.index_runs": json.dumps(list(reader.runs)),
        "vmm.clip_model": index.clip_model,
        "vmm.clip_weights": index.clip_weights,
        "vmm.codebook_id": meta.get("vmm.codebook_id", "") if route == "token" else "",
        "vmm.patch_codebook_id": meta.get("vmm.patch_codebook_id", "") if patch else "",
        "vmm.query_encoder": source.id,
        "vmm.query_tower": source.id if source.kind == "tower" else "",
        "vmm.text_analyzer": analyzer_id(),
        "vmm.frame_vectors": route or "none",
        "vmm.text_fields": ",".join(ranking.TEXT_FIELDS),
    })
    config = ScoreConfig(kind, tuple(files), input_schema, index, args.output.rstrip("/"), source,
                         args.query_batch_size, route, codebook, patch, metadata)
    config.output_schema  # input columns that collide after renaming fail now
    return config


# ---- reading the pairs -----------------------------------------------------------------------


def _video_key(video_id) -> str | None:
    return None if video_id is None else str(video_id)


def _is_empty(query) -> bool:
    return query is None or not str(query).strip()


class _ReadPairsFn(beam.DoFn):
    """(file ordinal, path) -> (pair_index, query, video_id, {column: value}) in file order."""

    def __init__(self, kind: str, input_schema: pa.Schema):
        self._kind = kind
        self._schema = input_schema
        self._pairs = beam.metrics.Metrics.counter(_NAMESPACE, "pairs_read")
        self._nulled = beam.metrics.Metrics.counter(_NAMESPACE, "passthrough_values_nulled")

    def process(self, element, counts):
        ordinal, path = element
        offset = sum(counts[i] for i in range(ordinal))
        for row, values, nulled in schema.read_rows(self._kind, path, self._schema):
            self._pairs.inc()
            if nulled:
                self._nulled.inc(nulled)
            query = values["query"]
            yield offset + row, None if query is None else str(query), _video_key(values["video_id"]), values


class ReadPairs(beam.PTransform):
    def __init__(self, config: ScoreConfig):
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        cfg = self._config
        files = list(enumerate(cfg.pair_files))
        counts = (pbegin | "ListPairFiles" >> beam.Create(files)
                  | "CountPairs" >> beam.Map(lambda f, kind: (f[0], schema.count_rows(kind, f[1])), cfg.pairs_kind))
        return (pbegin
                | "PairFiles" >> beam.Create(files)
                | "ReadPairFiles" >> beam.ParDo(_ReadPairsFn(cfg.pairs_kind, cfg.input_schema),
                                                counts=beam.pvalue.AsDict(counts))
                | "SpreadPairs" >> beam.Reshuffle())


# ---- queries ---------------------------------------------------------------------------------


class _Handle:
    """A weak-referenceable holder for shared.Shared."""

    def __init__(self, value):
        self.value = value


class _EncodeQueriesFn(beam.DoFn):
    """A batch of distinct query texts -> (text, models.ranking.Query)."""

    def __init__(self, source: QuerySource, tokens: bool, handle: shared.Shared):
        self._source = source
        self._tokens = tokens
        self._handle = handle
        self._encoded = beam.metrics.Metrics.counter(_NAMESPACE, "queries_encoded")
        self._batches = beam.metrics.Metrics.counter(_NAMESPACE, "query_batches")
        self._encode_ms = beam.metrics.Metrics.counter(_NAMESPACE, "query_encode_ms")

    def setup(self):
        def load():
            encoder = open_query_encoder(self._source)
            if hasattr(encoder, "load"):
                encoder.load()  # now, not inside the first batch's timing
            return _Handle(encoder)

        self._encoder = self._handle.acquire(load, tag=self._source.id).value

    def process(self, texts):
        texts = sorted(texts)
        started = time.perf_counter()
        tokens = None
        if self._tokens and hasattr(self._encoder, "encode_texts_and_tokens"):
            vectors, tokens = self._encoder.encode_texts_and_tokens(texts)
        else:
            vectors = self._encoder.encode_texts(texts)
        self._encode_ms.inc(int(round((time.perf_counter() - started) * 1000)))
        self._encoded.inc(len(texts))
        self._batches.inc()
        for i, text in enumerate(texts):
            tok = None if tokens is None else tokens[i].astype(np.float16)
            yield text, ranking.encode_query(text, vectors[i], tok)


def query_buckets(distinct: int, size: int) -> int:
    """How many hash buckets `distinct` queries are batched within: about one batch of `size` each,
    so a small log still fills its batches (a fixed count gave a log of 2k queries batches of 2)."""
    return max(1, -(-distinct // size))


def _bucket(text, buckets: int):  # no hints: Beam 2.78 infers Optional[str] from QueryTexts
    return zlib.crc32(text.encode("utf-8")) % buckets, text


def _batches(bucket, size: int):
    texts = sorted(bucket[1])
    return [texts[i:i + size] for i in range(0, len(texts), size)]


class EncodeQueries(beam.PTransform):
    """pairs -> (query text, Query) for each distinct non-empty query, each encoded once."""

    def __init__(self, config: ScoreConfig):
        super().__init__()
        self._config = config

    def expand(self, pairs):
        cfg = self._config
        distinct = (pairs
                    | "QueryTexts" >> beam.FlatMap(lambda p: [] if _is_empty(p[1]) else [p[1]])
                    | "DistinctQueries" >> beam.Distinct())
        buckets = (distinct
                   | "CountQueries" >> beam.combiners.Count.Globally()
                   | "Buckets" >> beam.Map(query_buckets, cfg.query_batch_size))
        return (distinct
                # Batches are a function of the distinct queries alone, not of how a runner bundles
                # them: a model's output can change in the last bit with the batch it ran in.
                | "QueryBuckets" >> beam.Map(_bucket, beam.pvalue.AsSingleton(buckets))
                | "GroupQueries" >> beam.GroupByKey()
                | "BatchQueries" >> beam.FlatMap(_batches, cfg.query_batch_size)
                | "Encode" >> beam.ParDo(_EncodeQueriesFn(cfg.query, cfg.patch_codebook is not None,
                                                          shared.Shared())))


# ---- the index ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VideoDoc:
    """What the features need of one video: small enough to travel to each of its pairs' group."""

    video_id: str
    vector: np.ndarray  # float32 [D], unit
    fields: dict  # text field -> models.ranking.FieldText (counts of query terms only)
    signals: dict  # VIDEO_SIGNALS + has_subtitles
    frame_vectors: np.ndarray | None  # float32 [F, D] unit (stored embeddings)
    frame_tokens: np.ndarray | None  # int16 [F] (token route)
    patch_tokens: np.ndarray | None  # int16 [F, P]


def has_subtitles(subtitle_text: str | None, ocr_model: str | None, ocr_failed: bool) -> bool | None:
    """`has_subtitles` of a video: its `ocr_subtitle_text` is null both when OCR found no subtitle
    and when OCR did not run, so the run's `vmm.ocr_model` ("off": OCR off; absent: an index that
    did not record it) and the video's OCR stage errors (a frame OCR failed on may have held them)
    tell which: None when OCR was off, is unknown, or failed on a frame of the video."""
    if subtitle_text is not None and subtitle_text.strip():
        return True
    if ocr_model in (None, "off") or ocr_failed:
        return None
    return False


def _ocr_failed(table: pa.Table) -> np.ndarray:
    """Per row: the video has a stage error of the OCR stage."""
    failed = np.zeros(table.num_rows, bool)
    if "stage_errors" in table.schema.names:
        errors = table.column("stage_errors").combine_chunks()
        stages = pc.struct_field(errors.flatten(), "stage")
        failed[np.unique(pc.list_parent_indices(errors).to_numpy()[np.asarray(pc.equal(stages, "ocr"))])] = True
    return failed


class _ReadVideosFn(beam.DoFn):
    """A videos file -> (video_id, ("video", run_id, vector, texts, signals)) per row."""

    def __init__(self):
        self._videos = beam.metrics.Metrics.counter(_NAMESPACE, "index_videos_read")

    def process(self, path):
        table, vectors = file_embeddings(path, VIDEO_COLUMNS)
        vectors = ranking.normalize(vectors)
        run = run_of(path)
        ocr_model = vmm_metadata(table.schema).get("vmm.ocr_model")
        ocr_failed = _ocr_failed(table)
        columns = {n: table.column(n).to_pylist() if n in table.schema.names else [None] * table.num_rows
                   for n in ["video_id", *ranking.TEXT_FIELDS, *VIDEO_SIGNALS]}
        for i, vid in enumerate(columns["video_id"]):
            self._videos.inc()
            texts = {f: columns[f][i] for f in ranking.TEXT_FIELDS}
            signals = {s: columns[s][i] for s in VIDEO_SIGNALS}
            signals["has_subtitles"] = has_subtitles(texts["ocr_subtitle_text"], ocr_model, bool(ocr_failed[i]))
            yield vid, ("video", run, vectors[i], texts, signals)


class _ReadFramesFn(beam.DoFn):
    """A frames file -> (video_id, ("frames", run_id, frame_index, tokens, patches, vectors)) per
    video in the file, keyframes only (text frames are OCR's, not CLIP's)."""

    def __init__(self, columns: list[str], route: str | None, patches: bool):
        self._columns = columns
        self._route = route
        self._patches = patches

    def process(self, path):
        names = [c for c in self._columns if c != "embedding"]
        if self._route == "embedding":
            table, vectors = file_embeddings(path, names)
            vectors = ranking.normalize(vectors)
        else:
            with open_file(path) as f:
                table = pq.read_table(f, columns=names)
            vectors = None
        keep = np.asarray(pc.not_equal(table.column("reason"), "text").fill_null(True))
        ids = np.asarray(table.column("video_id").to_pylist(), dtype=object)
        index = table.column("frame_index").to_numpy()
        token, patches = frame_tokens(table) if "token" in names else (None, None)
        if self._route == "token":
            keep &= token >= 0
        else:
            token = None
        rows = np.nonzero(keep)[0]
        order = rows[np.lexsort((index[rows], ids[rows].astype(str)))]
        if not len(order):
            return
        sorted_ids = ids[order]
        bounds = np.nonzero(sorted_ids[1:] != sorted_ids[:-1])[0] + 1
        run = run_of(path)
        for part in np.split(order, bounds):
            yield ids[part[0]], (
                "frames", run, index[part],
                None if token is None else token[part].astype(np.int16),
                None if patches is None else patches[part],
                None if vectors is None else vectors[part])


class _AssembleVideoFn(beam.DoFn):
    """(video_id, [parts]) -> VideoDoc from the first run that holds the video."""

    def process(self, element, terms):
        video_id, parts = element
        parts = list(parts)
        videos = sorted((p for p in parts if p[0] == "video"), key=lambda p: p[1])
        if videos:  # frames without a videos row are not part of the index as readers see it
            yield video_id, self._doc(video_id, videos[0], parts, terms)

    @staticmethod
    def _doc(video_id, video, parts, terms) -> VideoDoc:
        _, run, vector, texts, signals = video
        blocks = [p for p in parts if p[0] == "frames" and p[1] == run]
        frame_vectors = frame_tok = patch_tok = None
        if blocks:
            index = np.concatenate([b[2] for b in blocks])
            order = np.argsort(index, kind="stable")
            if blocks[0][3] is not None:
                frame_tok = np.concatenate([b[3] for b in blocks])[order]
            if blocks[0][4] is not None:
                patch_tok = np.concatenate([b[4] for b in blocks])[order]
            if blocks[0][5] is not None:
                frame_vectors = np.concatenate([b[5] for b in blocks])[order]
        fields = {f: ranking.field_text(texts.get(f), keep=terms) for f in ranking.TEXT_FIELDS}
        return VideoDoc(video_id, vector, fields, signals, frame_vectors, frame_tok, patch_tok)


class _CorpusStatsFn(beam.CombineFn):
    def create_accumulator(self):
        return ranking.CorpusStats(0, {})

    def add_input(self, acc, doc):
        return acc.plus(ranking.CorpusStats.of(doc.fields))

    def merge_accumulators(self, accs):
        out = ranking.CorpusStats(0, {})
        for a in accs:
            out = out.plus(a)
        return out

    def extract_output(self, acc):
        return acc


class ReadIndex(beam.PTransform):
    """The index's committed files -> (video_id, VideoDoc); `terms`: the query terms (side input)."""

    def __init__(self, config: ScoreConfig, terms):
        super().__init__()
        self._config = config
        self._terms = terms

    def expand(self, pbegin):
        cfg = self._config
        videos = (pbegin | "VideoFiles" >> beam.Create(sorted(cfg.index.files["videos"]))
                  | "SpreadVideoFiles" >> beam.Reshuffle()
                  | "ReadVideos" >> beam.ParDo(_ReadVideosFn()))
        parts = [videos]
        if cfg.frame_vectors or cfg.patch_codebook:
            frames = (pbegin | "FrameFiles" >> beam.Create(sorted(cfg.index.files["frames"]))
                      | "SpreadFrameFiles" >> beam.Reshuffle()
                      | "ReadFrames" >> beam.ParDo(_ReadFramesFn(cfg.frame_columns, cfg.frame_vectors,
                                                                 cfg.patch_codebook is not None)))
            parts.append(frames)
        return (parts | "VideoParts" >> beam.Flatten()
                | "GroupVideoParts" >> beam.GroupByKey()
                | "AssembleVideos" >> beam.ParDo(_AssembleVideoFn(), terms=beam.pvalue.AsDict(self._terms)))


# ---- scoring ---------------------------------------------------------------------------------


class _Dictionaries:
    def __init__(self, frame: np.ndarray | None, patch: np.ndarray | None):
        self.frame, self.patch = frame, patch  # unit-normalised centroids, read-only


def _unit_centroids(path: str | None) -> np.ndarray | None:
    if not path:
        return None
    from models.codebook import Codebook
    from transforms.files import localize

    book = Codebook.load(localize(path))
    centroids = ranking.normalize(book.centroids)
    centroids.setflags(write=False)
    return centroids


def score_pair(pair, doc: VideoDoc | None, query: ranking.Query | None, dictionaries: _Dictionaries,
               doc_freqs, stats: ranking.CorpusStats, route: str | None) -> dict:
    """One output row: the input values (renamed where they collide), pair_index, missing, features."""
    pair_index, text, _, values = pair
    row = {schema.output_name(k): v for k, v in values.items()}
    row["pair_index"] = pair_index
    features = dict.fromkeys(schema.FEATURES)
    if doc is None:
        row["missing"] = schema.MISSING_VIDEO
    elif query is None:
        row["missing"] = schema.MISSING_QUERY
    else:
        row["missing"] = None
        q = query.vector
        features["qv_video"] = float(doc.vector @ q)
        frames = doc.frame_vectors
        if frames is None and doc.frame_tokens is not None and dictionaries.frame is not None:
            frames = dictionaries.frame[doc.frame_tokens.astype(np.int64)]
        features.update(ranking.frame_features(q, frames))
        if frames is not None and len(frames):
            features["qv_frame_source"] = route
        if query.tokens is not None and doc.patch_tokens is not None and dictionaries.patch is not None:
            patches = doc.patch_tokens[(doc.patch_tokens >= 0).all(axis=1)].astype(np.int64)
            if len(patches):
                features["qv_patch_max"] = ranking.patch_max(query.tokens.astype(np.float32),
                                                             dictionaries.patch[patches])
        for field in ranking.TEXT_FIELDS:
            features.update(ranking.text_features(query, field, doc.fields[field], doc_freqs, stats))
        features.update(doc.signals)
    row.update(features)
    return row


class _ScorePairsFn(beam.DoFn):
    def __init__(self, config: ScoreConfig, handle: shared.Shared):
        self._config = config
        self._handle = handle
        self._scored = beam.metrics.Metrics.counter(_NAMESPACE, "pairs_scored")
        self._missing = {r: beam.metrics.Metrics.counter(_NAMESPACE, f"pairs_{r}") for r in schema.MISSING_REASONS}

    def setup(self):
        cfg = self._config
        self._dicts = self._handle.acquire(
            lambda: _Dictionaries(_unit_centroids(cfg.codebook), _unit_centroids(cfg.patch_codebook)),
            tag=f"{cfg.codebook}|{cfg.patch_codebook}")

    def process(self, element, queries, doc_freqs, stats):
        _, grouped = element
        docs = list(grouped["video"])
        doc = docs[0] if docs else None
        for pair in grouped["pairs"]:
            query = None if _is_empty(pair[1]) else queries[pair[1]]
            row = score_pair(pair, doc, query, self._dicts, doc_freqs, stats, self._config.frame_vectors)
            if row["missing"]:
                self._missing[row["missing"]].inc()
            else:
                self._scored.inc()
            yield row


def build_pipeline(p: beam.Pipeline, config: ScoreConfig):
    pairs = p | "ReadPairs" >> ReadPairs(config)
    queries = pairs | "EncodeQueries" >> EncodeQueries(config)
    terms = (queries
             | "QueryTerms" >> beam.FlatMap(lambda kv: kv[1].terms)
             | "DistinctTerms" >> beam.Distinct()
             | "TermKeys" >> beam.Map(lambda t: (t, None)))
    docs = p | "ReadIndex" >> ReadIndex(config, terms)
    stats = (docs | "DocStats" >> beam.Values()
             | "CorpusStats" >> beam.CombineGlobally(_CorpusStatsFn()))
    doc_freqs = (docs
                 | "TermsInDocs" >> beam.FlatMap(
                     lambda kv: [((f, t), 1) for f, text in kv[1].fields.items() for t in text.counts])
                 | "DocFreqs" >> beam.CombinePerKey(sum))
    rows = ({"pairs": pairs | "KeyByVideo" >> beam.Map(lambda pair: (pair[2], pair)), "video": docs}
            | "JoinVideos" >> beam.CoGroupByKey()
            | "ScorePairs" >> beam.ParDo(_ScorePairsFn(config, shared.Shared()),
                                         queries=beam.pvalue.AsDict(queries),
                                         doc_freqs=beam.pvalue.AsDict(doc_freqs),
                                         stats=beam.pvalue.AsSingleton(stats)))
    return rows | "WritePairs" >> WriteToParquet(
        FileSystems.join(config.output, "pairs", "part"), config.output_schema, codec="zstd",
        file_name_suffix=".parquet", shard_name_template=SHARD_TEMPLATE)


# ---- output and accounting -------------------------------------------------------------------


def output_files(output: str) -> list[str]:
    from schemas.index import match

    return match(FileSystems.join(output, "pairs", "*.parquet"))


def prepare_output(output: str, overwrite: bool) -> None:
    old = output_files(output)
    if old and not overwrite:
        raise UsageError(f"{output}/pairs already holds {len(old)} files (--overwrite replaces them)")
    if old:
        FileSystems.delete(old)


def account(config: ScoreConfig) -> dict:
    """Input pairs vs output rows (from the files), and the rows by `missing` reason."""
    pairs_in = sum(schema.count_rows(config.pairs_kind, f) for f in config.pair_files)
    rows, missing, indexes = 0, {}, 0
    for path in output_files(config.output):
        with open_file(path) as f:
            t = pq.read_table(f, columns=["pair_index", "missing"])
        rows += t.num_rows
        indexes += len(pc.unique(t.column("pair_index")))
        for reason in t.column("missing").to_pylist():
            if reason:
                missing[reason] = missing.get(reason, 0) + 1
    return {"pairs_in": pairs_in, "rows_out": rows, "missing": dict(sorted(missing.items())),
            "accounting_ok": rows == pairs_in and indexes == rows}


# ---- command ---------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    from pipelines.eval_query_tower import add_text_tower_arguments

    io = parser.add_argument_group("input and output")
    io.add_argument("--pairs", required=True,
                    help="the pair log: .jsonl/.csv/.parquet file or glob (local or URI) with query and video_id "
                         "columns; every other column is carried through")
    INDEX_INPUT.add_arguments(parser)
    io.add_argument("--output", required=True, help="output folder: the features go to OUTPUT/pairs/ (local or URI)")
    io.add_argument("--overwrite", action="store_true", default=False,
                    help="replace the files of an earlier run in OUTPUT/pairs/")
    q = parser.add_argument_group("query encoding")
    add_text_tower_arguments(q)
    q.add_argument("--query-tower", dest="query_tower", default=None,
                   help="a query tower folder (vmm train-query-tower's --output) that encodes the queries instead of "
                        "the CLIP text tower; refused unless trained against this index's video vectors")
    q.add_argument("--query-vectors", dest="query_vectors", default=None,
                   help="Parquet table (query string, vector list<float>) of precomputed query vectors, used "
                        "instead of a text tower; every query of the log must be in it")
    q.add_argument("--query-batch-size", dest="query_batch_size", type=int, default=64,
                   help="distinct queries per text-tower call")
    f = parser.add_argument_group("frame features")
    f.add_argument("--frame-vectors", dest="frame_vectors", default="auto", choices=FRAME_VECTORS,
                   help="keyframe vectors for qv_frame_*: stored frame embeddings, or tokens through --codebook "
                        "(auto: embeddings when the index stores them, else tokens)")
    f.add_argument("--codebook", default=None,
                   help="the frame dictionary the index was tokenised with (its id is checked)")
    f.add_argument("--patch-codebook", dest="patch_codebook", default=None,
                   help="the patch dictionary the index was tokenised with: turns qv_patch_max on")
    RUN.add_arguments(parser)


class ScoreOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_arguments(beam_flags(parser))


def format_summary(summary: dict) -> str:
    missing = ", ".join(f"{n} {r}" for r, n in summary["missing"].items()) or "none"
    enc = summary.get("queries_encoded")
    lines = [f"pairs: {summary['pairs_in']} in, {summary['rows_out']} rows out (missing: {missing}); "
             f"accounting {'OK' if summary['accounting_ok'] else 'MISMATCH'}"]
    if enc is not None:
        per = summary["query_encode_s"] / enc * 1000 if enc else 0.0
        lines.append(f"queries: {enc} distinct encoded in {summary['query_batches']} batches, "
                     f"{summary['query_encode_s']:.1f} s ({per:.2f} ms each)")
    lines.append(f"wall time {summary['wall_s']:.1f} s -> {summary['output']}/pairs/")
    return "\n".join(lines)


def execute(args, options: PipelineOptions) -> int:
    from pipelines.summary import metrics_of

    with starting():
        run = RUN.to_config(args, options)
        config = build_config(args, run)
    prepare_output(config.output, args.overwrite)
    started = time.perf_counter()
    p = new_pipeline(options)
    build_pipeline(p, config)
    result = p.run()
    result.wait_until_finish()
    counters, _ = metrics_of(result)
    summary = account(config)
    summary.update(output=config.output, wall_s=time.perf_counter() - started)
    if f"{_NAMESPACE}.queries_encoded" in counters:
        summary["queries_encoded"] = counters[f"{_NAMESPACE}.queries_encoded"]
        summary["query_encode_s"] = counters.get(f"{_NAMESPACE}.query_encode_ms", 0) / 1000
        summary["query_batches"] = counters.get(f"{_NAMESPACE}.query_batches", 0)
    nulled = counters.get(f"{_NAMESPACE}.passthrough_values_nulled", 0)
    if nulled:
        logger.warning("%d input values did not fit their column's type and are null", nulled)
    print(format_summary(summary))
    return 0 if summary["accounting_ok"] else 1


def run(argv: list[str]) -> int:
    """`vmm score ARGV` without logging set-up (tests, other commands)."""
    from pipelines.cli import COMMANDS
    from pipelines.options import run_command

    return run_command(COMMANDS["score"], argv)


main = main_of("score")

if __name__ == "__main__":
    from pipelines.process_exit import exit_process

    exit_process(main)
