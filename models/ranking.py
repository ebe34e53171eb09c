"""Ranking features of one <query, video> pair, from the query's encodings and the video's rows.
No Beam, no torch: `pipelines.score` calls these in its workers; a notebook can call them too.

Consumes
  * a `Query` (`encode_query`): the query text's CLIP (or query-tower) vector [D], optionally its
    word-token vectors [T, D], its BM25 terms and its phrase form (models.text);
  * a `Video` (`video_from_rows`): the video vector [D], its keyframes' vectors [F, D] (stored
    frame embeddings, or dictionary entries of the int16 tokens), its patch-token vectors
    [F, P, D] when the index has patch tokens, and per text field its term counts, length and
    phrase form;
  * the index's BM25 statistics (`CorpusStats`, document frequencies of the query's terms).
Produces a dict of feature values (`pair_features`), None where a feature has no value (its
null rule is in the README, "Ranking features").

Every vector is L2-normalised here, so each `qv_*` is a cosine in [-1, 1]: dictionary entries are
means of unit vectors (shorter than 1), so their direction is what is compared.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from models import bm25
from models.text import analyze, contains_phrase, phrase_form, query_terms

TEXT_FIELDS = ("title", "ocr_subtitle_text", "ocr_scene_text", "asr_text")
TOP_FRAMES = 3  # qv_frame_top3: the mean of the best three frames


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


@dataclasses.dataclass(frozen=True)
class Query:
    text: str
    vector: np.ndarray  # float32 [D], unit
    tokens: np.ndarray | None  # float32 [T, D] unit word-token vectors, or None
    terms: tuple[str, ...]  # distinct BM25 terms, in order
    phrase: str  # models.text.phrase_form


def encode_query(text: str, vector: np.ndarray, tokens: np.ndarray | None = None) -> Query:
    return Query(text, normalize(vector), None if tokens is None else normalize(tokens),
                 tuple(query_terms(text)), phrase_form(text))


@dataclasses.dataclass(frozen=True)
class FieldText:
    counts: dict  # term -> occurrences in the field (only the terms a pair can ask about, or all)
    length: int  # terms in the field (all of them: BM25's document length)
    phrase: str  # models.text.phrase_form of the field


def field_text(text: str | None, keep=None) -> FieldText:
    """A field's term counts (only the terms `keep` contains, when given), length and phrase form."""
    terms = analyze(text)
    counts = collections.Counter(terms if keep is None else (t for t in terms if t in keep))
    return FieldText(dict(counts), len(terms), phrase_form(text))


@dataclasses.dataclass(frozen=True)
class CorpusStats:
    """What BM25 needs from the whole index: documents (videos) and terms per field."""

    num_docs: int
    tokens: dict  # field -> total terms of that field over the index

    @staticmethod
    def of(fields: dict) -> "CorpusStats":
        return CorpusStats(1, {f: t.length for f, t in fields.items()})

    def plus(self, other: "CorpusStats") -> "CorpusStats":
        keys = set(self.tokens) | set(other.tokens)
        return CorpusStats(self.num_docs + other.num_docs,
                           {f: self.tokens.get(f, 0) + other.tokens.get(f, 0) for f in sorted(keys)})


def text_features(query: Query, field: str, text: FieldText, doc_freqs, stats: CorpusStats) -> dict:
    """bm25_<field>, coverage_<field>, phrase_<field> of one pair (None without query terms)."""
    if not query.terms:
        return {f"bm25_{field}": None, f"coverage_{field}": None, f"phrase_{field}": None}
    tfs = {t: text.counts.get(t, 0) for t in query.terms}
    dfs = {t: doc_freqs.get((field, t), 0) for t in query.terms}
    score = bm25.bm25(tfs, text.length, dfs, stats.num_docs, stats.tokens.get(field, 0))
    return {f"bm25_{field}": score,
            f"coverage_{field}": sum(1 for v in tfs.values() if v) / len(tfs),
            f"phrase_{field}": contains_phrase(text.phrase, query.phrase)}


def frame_features(q: np.ndarray, frames: np.ndarray | None) -> dict:
    """qv_frame_max / mean / top3 of unit frame vectors [F, D]; None without frames."""
    if frames is None or not len(frames):
        return {"qv_frame_max": None, "qv_frame_mean": None, "qv_frame_top3": None}
    sims = np.sort(frames @ q)[::-1]
    return {"qv_frame_max": float(sims[0]), "qv_frame_mean": float(sims.mean()),
            "qv_frame_top3": float(sims[:TOP_FRAMES].mean())}


def patch_max(tokens: np.ndarray | None, patches: np.ndarray | None) -> float | None:
    """FILIP-style late interaction: for each frame, the mean over the query's word tokens [T, D]
    of their best cosine with the frame's patch vectors [F, P, D]; the best frame. None when
    either side is missing."""
    if tokens is None or patches is None or not len(tokens) or not patches.size:
        return None
    sims = np.einsum("td,fpd->ftp", tokens, patches)  # [F, T, P]
    return float(sims.max(axis=2).mean(axis=1).max())
