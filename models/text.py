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


def query_terms(text: str | None) -> list[str]:
    """The distinct terms of a query, in order: what BM25 scores a query with (`vmm search` and
    `vmm score` alike)."""
    return list(dict.fromkeys(analyze(text)))


def phrase_form(text: str | None) -> str:
    """`text` reduced to its runs of letters/digits and of CJK ideographs, case-folded, one space
    between runs: what exact-phrase matching compares ("Red  Kettle!" -> "red kettle")."""
    if not text:
        return ""
    return " ".join(m.group(0).casefold() for m in _RUN.finditer(text))


def _edge_is_word(ch: str) -> bool:
    """A non-CJK letter or digit: a phrase edge there must fall on a word boundary."""
    return ch.isalnum() and not re.match(f"[{_CJK}]", ch)


def contains_phrase(text_form: str, phrase: str) -> bool:
    """Whether `phrase` (a `phrase_form`) occurs in `text_form` (another): the query's words in
    order with only spaces or punctuation between them. A Latin (non-CJK) word must match whole
    ("cat" is not in "concatenate"); a Chinese edge may fall inside a longer run, since Chinese is
    written without spaces ("红色水壶" is in "我的红色水壶很好")."""
    if not phrase or not text_form:
        return False
    start = text_form.find(phrase)
    check_left, check_right = _edge_is_word(phrase[0]), _edge_is_word(phrase[-1])
    while start >= 0:
        end = start + len(phrase)
        left_ok = not check_left or start == 0 or text_form[start - 1] == " "
        right_ok = not check_right or end == len(text_form) or text_form[end] == " "
        if left_ok and right_ok:
            return True
        start = text_form.find(phrase, start + 1)
    return False
