"""Text analysis for BM25: one analyzer shared by `vmm search` and `vmm score`. No Beam, no torch.

Consumes any string (titles, subtitle / scene / speech text, a user's query), in any mix of
Chinese and Latin script. Produces the list of terms BM25 indexes and scores, in text order:

  * runs of CJK ideographs are segmented by jieba (jieba-rs, through `rjieba`: the same dictionary
    and the same cuts as the Python jieba, 5.5x faster) in search mode (`cut_for_search`: the words of
    the default dictionary plus their shorter dictionary words, so "红色水壶" in a query matches
    "红色的水壶" and "水壶" in a document); a single ideograph jieba leaves alone stays a term;
  * every other run of letters and digits (Latin, Cyrillic, kana, Hangul, ...) is one term,
    case-folded ("Kettle" -> "kettle", "iPhone15" -> "iphone15");
  * punctuation, symbols and whitespace separate terms and are dropped.

The same function analyses documents and queries, so a query scores the same wherever it is
scored. Deterministic: the dictionary is fixed by rjieba's package version, which `analyzer_id()`
names so an index can record what analysed it. rjieba's segmenter is built once per process (a
Rust lazy static) and read-only after: safe from several threads.
"""

from __future__ import annotations

import re

import rjieba

# CJK Unified Ideographs, Extension A, Compatibility Ideographs, Extensions B-F (supplementary
# planes). Kana and Hangul are written with spaces or are out of jieba's dictionary: words there.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
_RUN = re.compile(f"([{_CJK}]+)|([^\\W_{_CJK}]+)")


def analyzer_id() -> str:
    """What analysed an index's text: recorded in `index.json`, compared when a query is scored."""
    from importlib.metadata import version

    return f"vmm-text-1:rjieba-{version('rjieba')}:search-mode"


def analyze(text: str | None) -> list[str]:
    """The BM25 terms of `text`, in order (repeated terms repeated). None or "" -> []."""
    if not text:
        return []
    terms: list[str] = []
    for match in _RUN.finditer(text):
        cjk, word = match.groups()
        if word is not None:
            terms.append(word.casefold())
            continue
        if len(cjk) == 1:
            terms.append(cjk)
            continue
        terms.extend(rjieba.cut_for_search(cjk, True))
    return terms


def analyze_many(texts) -> list[list[str]]:
    return [analyze(t) for t in texts]
