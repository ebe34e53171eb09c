"""Visual words: an inverted index from frame tokens to videos, scored by tf-idf. No Beam, no torch.

Consumes, per video (a row of the shard), the int16 ids of its frames in the frame dictionary
(`frames.token`) and optionally of their patches in the patch dictionary (`frames.patch_tokens`).
Terms are frame ids 0..K-1 and, with patch words, patch ids shifted by K (two vocabularies that
never collide). Produces a `VisualWordIndex` (postings in CSR form: term -> rows, weights) whose
`search(term_ids, k)` ranks videos by the cosine of tf-idf vectors:

    w(t, d) = (1 + ln tf(t, d)) * idf(t),   idf(t) = ln((N + 1) / (df(t) + 1)) + 1,

each video's vector L2-normalised; a query (the tokens of an image, or of a `--like` video) is
weighted the same way. Only the postings of the query's terms are read, so a query costs the
length of those postings, not the number of videos.

On disk: one `.npz` (no pickle) with the CSR arrays and the vocabulary sizes.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    frame_k: int
    patch_k: int = 0  # 0: no patch words

    @property
    def size(self) -> int:
        return self.frame_k + self.patch_k

    def terms(self, frame_tokens: np.ndarray | None, patch_tokens: np.ndarray | None = None) -> np.ndarray:
        """One term id per token (int64), frame ids as they are, patch ids shifted past the frames'."""
        parts = []
        for tokens, k, shift in ((frame_tokens, self.frame_k, 0), (patch_tokens, self.patch_k, self.frame_k)):
            if k and tokens is not None and len(tokens):
                ids = np.asarray(tokens, np.int64)
                if ids.min() < 0 or ids.max() >= k:
                    raise ValueError(f"token ids outside a dictionary of K={k}: {ids.min()}..{ids.max()}")
                parts.append(ids + shift)
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _weights(tf: np.ndarray, idf: np.ndarray, terms: np.ndarray) -> np.ndarray:
    return ((1.0 + np.log(tf)) * idf[terms]).astype(np.float32)


class VisualWordIndex:
    def __init__(self, vocab: Vocabulary, indptr: np.ndarray, rows: np.ndarray, weights: np.ndarray,
                 idf: np.ndarray, num_docs: int):
        self.vocab = vocab
        self.indptr = indptr  # int64 [V + 1]
        self.rows = rows  # int64 [nnz], sorted within a term
        self.weights = weights  # float32 [nnz]: tf-idf weight / the video's norm
        self.idf = idf  # float64 [V]
        self.num_docs = num_docs

    @classmethod
    def build(cls, vocab: Vocabulary, doc_rows: np.ndarray, doc_terms: np.ndarray, num_docs: int) -> "VisualWordIndex":
        """From parallel arrays of (row, term), one pair per token occurrence (repeats = tf)."""
        doc_rows = np.asarray(doc_rows, np.int64)
        doc_terms = np.asarray(doc_terms, np.int64)
        key = doc_terms * num_docs + doc_rows  # sort by term, then row
        uniq, tf = np.unique(key, return_counts=True)
        terms, rows = uniq // num_docs, uniq % num_docs
        df = np.bincount(terms, minlength=vocab.size)
        idf = np.log((num_docs + 1.0) / (df + 1.0)) + 1.0
        w = _weights(tf, idf, terms)
        norms = np.sqrt(np.bincount(rows, weights=w.astype(np.float64) ** 2, minlength=num_docs))
        w = (w / np.maximum(norms[rows], 1e-12)).astype(np.float32)
        indptr = np.zeros(vocab.size + 1, np.int64)
        np.cumsum(df, out=indptr[1:])
        return cls(vocab, indptr, rows, w, idf, num_docs)

    def doc_vector(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """One video's (terms, normalised tf-idf weights), for `--like`: a scan of the postings."""
        hits = np.nonzero(self.rows == row)[0]
        return np.searchsorted(self.indptr, hits, side="right") - 1, self.weights[hits]

    def query_vector(self, terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        terms = np.asarray(terms, np.int64)
        uniq, tf = np.unique(terms, return_counts=True)
        w = _weights(tf, self.idf, uniq)
        norm = float(np.sqrt((w.astype(np.float64) ** 2).sum()))
        return uniq, (w / max(norm, 1e-12)).astype(np.float32)

    def search(self, terms: np.ndarray, k: int, *, exclude: int | None = None,
               query_weights: np.ndarray | None = None) -> list[tuple[int, float]]:
        """[(row, cosine)] of the k best videos sharing a term with the query, best first (ties:
        lower row). `terms` are token occurrences (repeats count), or distinct terms with
        `query_weights`."""
        if query_weights is None:
            uniq, qw = self.query_vector(terms)
        else:
            uniq, qw = np.asarray(terms, np.int64), np.asarray(query_weights, np.float32)
        if not len(uniq):
            return []
        starts, ends = self.indptr[uniq], self.indptr[uniq + 1]
        lengths = ends - starts
        if not lengths.sum():
            return []
        idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        contrib = self.weights[idx] * np.repeat(qw, lengths)
        cand, inverse = np.unique(self.rows[idx], return_inverse=True)
        scores = np.bincount(inverse, weights=contrib.astype(np.float64), minlength=len(cand))
        if exclude is not None:
            keep = cand != exclude
            cand, scores = cand[keep], scores[keep]
        order = np.lexsort((cand, -scores))[:k]
        return [(int(cand[i]), float(scores[i])) for i in order]

    def save(self, path: str) -> None:
        with open(path, "wb") as f:
            np.savez(f, indptr=self.indptr, rows=self.rows, weights=self.weights, idf=self.idf,
                     meta=np.array([self.vocab.frame_k, self.vocab.patch_k, self.num_docs], np.int64))

    @classmethod
    def load(cls, path: str) -> "VisualWordIndex":
        with np.load(path, allow_pickle=False) as z:
            frame_k, patch_k, num_docs = (int(v) for v in z["meta"])
            return cls(Vocabulary(frame_k, patch_k), z["indptr"], z["rows"], z["weights"], z["idf"], num_docs)
