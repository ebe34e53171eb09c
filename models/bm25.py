"""The BM25 text index of `vmm search`: tantivy (Lucene's BM25, k1 = 1.2, b = 0.75) over text
analysed by `models.text`. No Beam, no torch.

Consumes, per video (a row of the shard), the text of each indexed field (title, subtitle, scene
text, speech, ...). Each field's text goes through `models.text.analyze` here, and tantivy only
splits the resulting terms on spaces: segmentation and case-folding are ours, so the same
analyzer serves `vmm score`. Produces a `TextIndex` whose `search(query, k)` returns
`[(row, score)]`: a disjunction over fields and query terms, each field's BM25 multiplied by its
weight (the sum over fields, as Elasticsearch's `most_fields`), with per-field length norms.

Why tantivy (measured in bench/README.md, "Search"): several weighted fields in one index, on
disk and memory-mapped (a cold start reads only what a query touches), and documents can be
added to an existing index (`--update`) with statistics kept exact; bm25s holds one matrix per
field in memory and must be rebuilt to add documents.
"""

from __future__ import annotations

import math
import os

from models.text import analyze, query_terms

K1 = 1.2  # tantivy's (and Lucene's) BM25 constants
B = 0.75

ROW = "row"
_TOKENIZER = "vmm_terms"
WRITER_HEAP = 128 * 1024 * 1024


def _tantivy():
    import tantivy

    return tantivy


def _schema(fields: list[str]):
    tantivy = _tantivy()
    sb = tantivy.SchemaBuilder()
    for f in fields:
        sb.add_text_field(f, stored=False, tokenizer_name=_TOKENIZER, index_option="freq")
    sb.add_unsigned_field(ROW, stored=False, indexed=False, fast=True)
    return sb.build()


def _register(index) -> None:
    tantivy = _tantivy()
    index.register_tokenizer(_TOKENIZER, tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build())


class TextIndex:
    """A tantivy index in a local directory, fields with weights. Searches are read-only: safe
    from several threads on one searcher."""

    def __init__(self, path: str, fields: dict[str, float]):
        self.path = path
        self.fields = dict(fields)
        tantivy = _tantivy()
        if os.path.exists(os.path.join(path, "meta.json")):
            self.index = tantivy.Index.open(path)
            self.schema = self.index.schema
        else:
            os.makedirs(path, exist_ok=True)
            self.schema = _schema(list(self.fields))
            self.index = tantivy.Index(self.schema, path=path, reuse=False)
        _register(self.index)
        self._searcher = None

    # ---- writing ------------------------------------------------------------------------------

    def add(self, docs) -> int:
        """Add `(row, {field: text or None})` pairs; one commit at the end. Returns the count."""
        tantivy = _tantivy()
        writer = self.index.writer(heap_size=WRITER_HEAP, num_threads=1)
        count = 0
        for row, texts in docs:
            doc = tantivy.Document()
            doc.add_unsigned(ROW, int(row))
            for field in self.fields:
                terms = analyze(texts.get(field))
                if terms:
                    doc.add_text(field, " ".join(terms))
            writer.add_document(doc)
            count += 1
        writer.commit()
        writer.wait_merging_threads()
        self.index.reload()
        self._searcher = None
        return count

    # ---- reading ------------------------------------------------------------------------------

    @property
    def searcher(self):
        if self._searcher is None:
            self._searcher = self.index.searcher()
        return self._searcher

    @property
    def num_docs(self) -> int:
        return self.searcher.num_docs

    def query_terms(self, query: str) -> list[str]:
        """The distinct terms of a query, in order."""
        return query_terms(query)

    def field_scores(self, query: str, field: str) -> dict[int, float]:
        """{row: BM25 score} of every video the query's terms reach in one field, unweighted:
        what `vmm score`'s `bm25_<field>` reproduces from the forward index."""
        terms = self.query_terms(query)
        if not terms:
            return {}
        tantivy = _tantivy()
        clauses = [(tantivy.Occur.Should, tantivy.Query.term_query(self.schema, field, t)) for t in terms]
        searcher = self.searcher
        hits = searcher.search(tantivy.Query.boolean_query(clauses), limit=max(1, searcher.num_docs),
                               count=False).hits
        rows = searcher.fast_field_values(ROW, [addr for _, addr in hits]) if hits else []
        return {int(r): float(s) for (s, _), r in zip(hits, rows)}

    def query(self, terms: list[str]):
        """The tantivy query `search` runs for a query's terms: a disjunction of every (field, term),
        each term query boosted by its field's weight."""
        tantivy = _tantivy()
        clauses = []
        for field, weight in self.fields.items():
            for term in terms:
                q = tantivy.Query.term_query(self.schema, field, term)
                clauses.append((tantivy.Occur.Should, tantivy.Query.boost_query(q, float(weight)) if weight != 1 else q))
        return tantivy.Query.boolean_query(clauses)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """[(row, score)] of the k best videos, best first (ties: lower row)."""
        terms = self.query_terms(query)
        if not terms or k <= 0:
            return []
        searcher = self.searcher
        hits = searcher.search(self.query(terms), limit=k, count=False).hits
        if not hits:
            return []
        rows = searcher.fast_field_values(ROW, [addr for _, addr in hits])
        out = [(int(r), float(s)) for (s, _), r in zip(hits, rows)]
        out.sort(key=lambda rs: (-rs[1], rs[0]))
        return out


# ---- BM25 without the index: the same scores from term counts --------------------------------
#
# `vmm score` computes one video's BM25 for a query in a Beam worker, from the field's term counts
# and the whole index's statistics, and must give what tantivy gives for the same query and
# field. Tantivy (like Lucene) stores a document's field length in one byte: lengths up to 39 are
# exact, longer ones are rounded down onto a table of 4 significant bits (Lucene's SmallFloat
# int4 encoding with 24 free values), and BM25 uses the rounded length.


def _fieldnorm_table() -> tuple[int, ...]:
    free = 24  # ids below this are lengths as they are
    table = list(range(free))
    for i in range(256 - free):
        bits, shift = i & 0x07, (i >> 3) - 1
        table.append(free + (bits if shift < 0 else (bits | 0x08) << shift))
    return tuple(table)


FIELDNORMS = _fieldnorm_table()


def stored_length(length: int) -> int:
    """A field length as tantivy stores it: the largest table value <= length."""
    import bisect

    return FIELDNORMS[bisect.bisect_right(FIELDNORMS, int(length)) - 1]


def idf(doc_freq: int, num_docs: int) -> float:
    return math.log(1.0 + (num_docs - doc_freq + 0.5) / (doc_freq + 0.5))


def bm25(term_freqs: dict[str, int], length: int, doc_freqs: dict[str, int], num_docs: int,
         total_tokens: int) -> float:
    """BM25 of one document's field for a query: the sum over the query's distinct terms
    (`term_freqs`: those terms' counts in the field, absent = 0) of
    idf(df) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * stored_length / avg_length)),
    avg_length = total_tokens / num_docs over the whole index (every document counts, with or
    without text in the field)."""
    if not num_docs:
        return 0.0
    avg = total_tokens / num_docs if total_tokens else 1.0
    norm = K1 * (1.0 - B + B * stored_length(length) / avg)
    score = 0.0
    for term, tf in term_freqs.items():
        if tf > 0:
            score += idf(doc_freqs.get(term, 0), num_docs) * (1.0 + K1) * tf / (tf + norm)
    return score
