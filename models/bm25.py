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

import os

from models.text import analyze

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
        return list(dict.fromkeys(analyze(query)))

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """[(row, score)] of the k best videos, best first (ties: lower row)."""
        terms = self.query_terms(query)
        if not terms or k <= 0:
            return []
        tantivy = _tantivy()
        clauses = []
        for field, weight in self.fields.items():
            for term in terms:
                q = tantivy.Query.term_query(self.schema, field, term)
                clauses.append((tantivy.Occur.Should, tantivy.Query.boost_query(q, float(weight)) if weight != 1 else q))
        searcher = self.searcher
        hits = searcher.search(tantivy.Query.boolean_query(clauses), limit=k, count=False).hits
        if not hits:
            return []
        rows = searcher.fast_field_values(ROW, [addr for _, addr in hits])
        out = [(int(r), float(s)) for (s, _), r in zip(hits, rows)]
        out.sort(key=lambda rs: (-rs[1], rs[0]))
        return out
