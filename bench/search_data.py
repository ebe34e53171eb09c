"""Synthetic data shaped like a search index's, for the search benchmarks. No timing here.

* `clip_like_vectors(n, dim, seed)`: unit vectors in a narrow cone with a long tail, like CLIP
  image embeddings (real ones have a high mean pairwise cosine, and their variance is spread
  over many directions with a decaying spectrum), with topics of Zipf-distributed sizes that
  overlap instead of forming well-separated clusters (those make every ANN look perfect).
* `text_docs(n, seed)`: documents with the text fields of `videos` (title, subtitle, scene, speech),
  mixed Chinese (real words from jieba's dictionary, written without spaces, so segmentation has
  work to do) and English-like words, both drawn from Zipf distributions.
"""

from __future__ import annotations

import os

import numpy as np


def _spectrum(dim: int, alpha: float) -> np.ndarray:
    """Per-direction scales with a power-law decay (a long tail of weak directions)."""
    return (np.arange(1, dim + 1, dtype=np.float64) ** -alpha).astype(np.float32)


def _cone(dim: int, seed: int, topics: int):
    """The distribution `clip_like_vectors` draws from: (rotation, spectrum, mean direction, topic
    centres, topic CDF), all fixed by seed."""
    rng = np.random.default_rng(seed)
    rot, _ = np.linalg.qr(rng.standard_normal((dim, dim)).astype(np.float32))
    rot = rot.astype(np.float32)
    scale = _spectrum(dim, 0.5)
    scale *= np.float32(1.0 / np.linalg.norm(scale))
    mean = rng.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    centres = (rng.standard_normal((topics, dim)).astype(np.float32) * scale) @ rot
    ranks = np.arange(1, topics + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -1.1)
    cdf /= cdf[-1]
    return rot, scale, mean, centres, cdf


def clip_like_vectors(n: int, dim: int = 512, seed: int = 0, *, topics: int = 20000,
                      batch: int = 100_000, start: int = 0) -> np.ndarray:
    """float32 [n, dim], L2-normalised. Mean pairwise cosine about 0.4 (see `mean_pairwise_cosine`).

    x = mean direction + topic offset (topic drawn Zipf(1.1) over `topics`) + per-video offset,
    both offsets with a power-law spectrum in a random rotation, then normalised.

    `seed` fixes the distribution (mean, rotation, topic centres); `start` the rows drawn from it:
    rows [start, start + n) of one seed, generated in any chunking, are one data set. (Seeding
    each chunk differently would give every chunk its own cone: well-separated clusters.)"""
    rot, scale, mean, centres, cdf = _cone(dim, seed, topics)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, batch):
        m = min(batch, n - lo)
        rows = np.random.default_rng([seed, start + lo])  # this chunk's own draws
        topic = np.minimum(np.searchsorted(cdf, rows.random(m)), topics - 1)
        own = (rows.standard_normal((m, dim)).astype(np.float32) * scale) @ rot
        x = 0.8 * mean + 0.7 * centres[topic] + 0.75 * own
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[lo:lo + m] = x
    return out


def text_like_queries(n: int, dim: int = 512, seed: int = 0, *, topics: int = 20000,
                      query_seed: int = 1) -> np.ndarray:
    """float32 [n, dim], L2-normalised: text-query vectors for an index of `clip_like_vectors(seed)`,
    shaped by CLIP's modality gap. A text vector of trained CLIP shares its topic with the videos it
    describes, but text and image embeddings sit in two separate cones, so a text and its video are
    less alike than two similar videos are: q = text mean direction (orthogonal to the images'
    mean) + the topic's centre + a per-query offset, then normalised. Its nearest videos then have
    a lower inner product than a video's nearest neighbours (median top 1: 0.45-0.47 against 0.78
    at 50k and 1M, bench/README.md)."""
    rot, scale, mean, centres, cdf = _cone(dim, seed, topics)
    rng = np.random.default_rng([seed, query_seed, 7])
    text_mean = rng.standard_normal(dim).astype(np.float32)
    text_mean -= (text_mean @ mean) * mean  # orthogonal to the images' mean direction
    text_mean /= np.linalg.norm(text_mean)
    topic = np.minimum(np.searchsorted(cdf, rng.random(n)), topics - 1)
    own = (rng.standard_normal((n, dim)).astype(np.float32) * scale) @ rot
    q = 0.8 * text_mean + 0.7 * centres[topic] + 0.75 * own
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def mean_pairwise_cosine(x: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    s = x[rng.choice(len(x), size=min(sample, len(x)), replace=False)]
    g = s @ s.T
    k = len(s)
    return float((g.sum() - np.trace(g)) / (k * (k - 1)))


def _chinese_words(limit: int = 60000) -> list[str]:
    """The most frequent multi-character words of jieba's dictionary (its own word list)."""
    import jieba

    path = os.path.join(os.path.dirname(jieba.__file__), "dict.txt")
    words = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            word, freq = line.split(" ")[:2]
            if len(word) >= 2 and all("\u4e00" <= c <= "\u9fff" for c in word):
                words.append((int(freq), word))
    words.sort(key=lambda fw: (-fw[0], fw[1]))
    return [w for _, w in words[:limit]]


def _latin_words(count: int, rng) -> list[str]:
    consonants, vowels = "bcdfghjklmnpqrstvwxz", "aeiouy"
    words = set()
    while len(words) < count:
        length = int(rng.integers(2, 6))
        words.add("".join(rng.choice(list(consonants)) + rng.choice(list(vowels)) for _ in range(length // 2 + 1)))
    return [str(w) for w in rng.permutation(sorted(words))]  # Zipf ranks in no alphabetical order


FIELDS = ("title", "ocr_subtitle_text", "ocr_scene_text", "asr_text")
_FIELD_TERMS = {"title": (4, 12), "ocr_subtitle_text": (0, 30), "ocr_scene_text": (0, 8), "asr_text": (0, 40)}


class TextGenerator:
    """Zipf(1.1) draws over a Chinese and a Latin vocabulary; one instance per seed."""

    def __init__(self, seed: int = 0, zh_vocab: int = 60000, en_vocab: int = 50000):
        self.rng = np.random.default_rng(seed)
        self.zh = _chinese_words(zh_vocab)
        self.en = _latin_words(en_vocab, self.rng)
        self.cdf_zh = self._zipf_cdf(len(self.zh))
        self.cdf_en = self._zipf_cdf(len(self.en))

    @staticmethod
    def _zipf_cdf(n: int) -> np.ndarray:
        p = np.arange(1, n + 1, dtype=np.float64) ** -1.1
        return np.cumsum(p / p.sum())

    def _draw(self, cdf: np.ndarray, size: int) -> np.ndarray:
        # Inverse-CDF sampling: rng.choice(p=...) rebuilds the CDF on every call.
        return np.minimum(np.searchsorted(cdf, self.rng.random(size)), len(cdf) - 1)

    def phrase(self, terms: int, zh_share: float) -> str:
        n_zh = int(self.rng.binomial(terms, zh_share))
        zh = [self.zh[i] for i in self._draw(self.cdf_zh, n_zh)]
        en = [self.en[i] for i in self._draw(self.cdf_en, terms - n_zh)]
        # Chinese runs are written without spaces (segmentation has work to do), Latin words with.
        parts, zi, ei = [], 0, 0
        order = self.rng.permutation(["z"] * len(zh) + ["e"] * len(en))
        run: list[str] = []
        for kind in order:
            if kind == "z":
                run.append(zh[zi]); zi += 1
            else:
                if run:
                    parts.append("".join(run)); run = []
                parts.append(en[ei]); ei += 1
        if run:
            parts.append("".join(run))
        return " ".join(parts)

    def doc(self) -> dict[str, str]:
        zh_share = 0.8 if self.rng.random() < 0.7 else 0.2
        out = {}
        for field in FIELDS:
            lo, hi = _FIELD_TERMS[field]
            terms = int(self.rng.integers(lo, hi + 1))
            out[field] = self.phrase(terms, zh_share) if terms else None
        return out

    def query(self, terms: int = 3) -> str:
        return self.phrase(terms, 0.7)
