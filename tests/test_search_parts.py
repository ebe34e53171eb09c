"""The parts of search with no pipeline: text analysis, BM25, the vector index, visual words, fusion,
the query encoder's weights rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models import ann, fusion
from models.text import analyze


# ---- text analysis ---------------------------------------------------------------------------


def test_analyze_segments_chinese_and_folds_latin():
    assert analyze("红色水壶 Kettle, iPhone15 价格2024年！") == ["红色", "水壶", "kettle", "iphone15", "价格", "2024", "年"]
    # Search mode: a long word also yields its dictionary sub-words, so a part matches the whole.
    terms = analyze("中华人民共和国")
    assert "中华人民共和国" in terms and "共和国" in terms and "人民" in terms
    assert analyze("红色的水壶") == ["红色", "的", "水壶"]
    assert analyze("") == [] and analyze(None) == []
    assert analyze("...!!! ---") == []
    assert analyze("ÉCOLE Straße") == ["école", "strasse"]


# ---- BM25 ------------------------------------------------------------------------------------


def _text_index(tmp_path, docs, fields=None):
    from models.bm25 import TextIndex

    fields = fields or {"title": 2.0, "asr_text": 1.0}
    index = TextIndex(str(tmp_path / "text"), fields)
    index.add(enumerate(docs))
    return index


def test_bm25_finds_chinese_inside_unspaced_text_and_weights_fields(tmp_path):
    docs = [
        {"title": "今天我们去市场买了一个红色的水壶", "asr_text": "hello world"},
        {"title": "蓝色杯子", "asr_text": "a red kettle on the stove"},
        {"title": "kettle", "asr_text": "nothing else"},
        {"title": None, "asr_text": "水壶 水壶"},
    ]
    index = _text_index(tmp_path, docs)
    hits = index.search("红色水壶", 10)
    assert hits[0][0] == 0  # both terms, in the title (weight 2)
    assert {r for r, _ in hits} == {0, 3}
    # A title match (weight 2) outranks the same word in speech.
    kettle = index.search("Kettle", 10)
    assert [r for r, _ in kettle] == [2, 1]
    assert index.search("absent 火车站", 10) == []
    # Added documents are searchable next to the old ones (what --update relies on).
    index.add([(4, {"title": "红色水壶 红色水壶", "asr_text": None})])
    assert index.search("红色水壶", 10)[0][0] == 4


# ---- vector index ----------------------------------------------------------------------------


def _cone(n, dim=64, seed=0):
    from bench.search_data import clip_like_vectors

    return clip_like_vectors(n, dim, seed, topics=200)


def test_plan_follows_count_and_budget():
    assert ann.plan_index(5000, 512, 4 << 30).kind == "flat"
    assert ann.plan_index(200_000, 512, 4 << 30).kind == "hnsw"
    # Past HNSW_MAX the full-dimension graph is too slow to build, whatever the memory: PCA + HNSW.
    big = ann.plan_index(1_000_000, 512, 4 << 30)
    assert big.kind == "hnswpca" and big.factory == "PCA128,HNSW32,Flat" and "build" in big.reason
    assert big.params["reorder_cells"] == ann.REORDER_CELLS
    assert ann.plan_index(ann.HNSW_MAX + 1, 512, 64 << 30).kind == "hnswpca"
    # A full graph over the budget: the PCA graph when it fits, then 8-bit IVF codes, then PQ.
    assert ann.plan_index(200_000, 512, 200 << 20).kind == "hnswpca"
    assert ann.plan_index(200_000, 512, 120 << 20).factory == "IVF2048,SQ8"
    big = ann.plan_index(200_000, 512, 50 << 20)
    assert big.kind == "ivfpq" and big.params["pq_m"] == 64 and big.factory.startswith("IVF2048,PQ64")
    with pytest.raises(ann.AnnError, match="budget"):
        ann.plan_index(10_000_000, 512, 1 << 20)
    with pytest.raises(ann.AnnError):
        ann.plan_index(0, 512, 1 << 30)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "hnswpca", "ivfsq", "ivfpq"])
def test_vector_index_reaches_its_recall_and_leaves_out_the_query(kind, tmp_path):
    x = _cone(3000).astype(np.float16)
    if kind == "flat":
        choice = ann.plan_index(len(x), x.shape[1], 1 << 30)
    elif kind == "hnsw":
        choice = ann.AnnChoice("hnsw", len(x), x.shape[1], "HNSW32,Flat", 0, "test", params={"M": 16, "efConstruction": 40})
    elif kind == "hnswpca":
        choice = ann.AnnChoice("hnswpca", len(x), x.shape[1], "PCA16,HNSW32,Flat", 0, "test",
                               params={"M": 16, "efConstruction": 40, "pca_dim": 16, "reorder_cells": 16})
    elif kind == "ivfsq":
        choice = ann.AnnChoice("ivfsq", len(x), x.shape[1], "IVF64,SQ8", 0, "test", params={"nlist": 64})
    else:
        choice = ann.AnnChoice("ivfpq", len(x), x.shape[1], "IVF64,PQ8x4fs", 0, "test",
                               params={"nlist": 64, "pq_m": 8, "pq_bits": 4, "refine_factor": 8})
    index = ann.VectorIndex(ann.build_index(x, choice), choice, x)
    tuned = index.tune(queries=200, target_recall=0.95)
    assert tuned.recall_at_10 >= 0.95
    if kind != "flat":
        chosen = [e for e in tuned.tuning if e["setting"] == tuned.search]
        assert chosen and chosen[0]["recall_at_10"] == tuned.recall_at_10_tuning and tuned.tune_queries == 200
        # Reaching the target means the lower confidence bound does, not the mean.
        assert chosen[0]["recall_low"] >= 0.95 and chosen[0]["recall_low"] < chosen[0]["recall_at_10"]
        assert chosen[0]["p50_ms"] == min(e["p50_ms"] for e in tuned.tuning if e["recall_low"] >= 0.95)
    # Measured independently of tune(): exact neighbours by numpy over float32.
    rows = np.arange(0, 3000, 97)
    f = x.astype(np.float32)
    sims = f[rows] @ f.T
    sims[np.arange(len(rows)), rows] = -np.inf
    truth = np.argsort(-sims, axis=1)[:, :10]
    _, found = index.search(f[rows], 10, exclude=rows)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    assert recall >= 0.9
    assert not (found == rows[:, None]).any()
    # Saved and loaded, it answers the same.
    path = str(tmp_path / "v.faiss")
    index.save(path)
    again = ann.VectorIndex.load(path, tuned, x)
    assert np.array_equal(again.search(f[rows], 10, exclude=rows)[1], found)


def test_reordered_graph_returns_the_vectors_own_rows_and_takes_additions():
    import faiss

    x = _cone(4000).astype(np.float16)
    params = {"M": 16, "efConstruction": 40, "pca_dim": 16, "reorder_cells": 32}
    choice = ann.AnnChoice("hnswpca", 3000, x.shape[1], "PCA16,HNSW32,Flat", 0, "test", params=params)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # an HNSW build on several threads may link nodes in another order
    try:
        index = ann.VectorIndex(ann.build_index(x[:3000], choice), choice, x[:3000])
        plain = ann.VectorIndex(ann.build_index(x[:3000], dataclasses.replace(choice, params={**params, "reorder_cells": 0})),
                                choice, x[:3000])
    finally:
        faiss.omp_set_num_threads(threads)
    order = faiss.vector_to_array(index.index.id_map)
    # The nodes were renumbered (not the identity), each row once, grouped by cell.
    assert sorted(order) == list(range(3000)) and (order != np.arange(3000)).sum() > 2000
    setting = {"efSearch": 64, "refine_factor": 5}
    f = x.astype(np.float32)
    # Same graph, numbered differently: the same rows come back as without the renumbering.
    assert np.array_equal(index.search(f[:200], 10, setting=setting)[1], plain.search(f[:200], 10, setting=setting)[1])
    # --update: rows 3000.. added to the id-mapped index come back as themselves.
    index.add(x[3000:], 3000)
    index.vectors = x
    index.choice = dataclasses.replace(choice, count=4000)
    _, rows = index.search(f[3000:], 1, setting=setting)
    assert (rows[:, 0] == np.arange(3000, 4000)).mean() > 0.95


def test_tune_records_recall_measured_on_queries_it_did_not_tune_on(monkeypatch):
    x = _cone(3000).astype(np.float16)
    choice = ann.AnnChoice("hnsw", len(x), x.shape[1], "HNSW32,Flat", 0, "test", params={"M": 16, "efConstruction": 40})
    index = ann.VectorIndex(ann.build_index(x, choice), choice, x)
    calls = []
    measure = ann.VectorIndex._measure

    def spy(self, q, rows, truth, setting, k):
        entry = measure(self, q, rows, truth, setting, k)
        calls.append((rows.copy(), dict(setting), entry))
        return entry

    monkeypatch.setattr(ann.VectorIndex, "_measure", spy)
    tuned = index.tune(queries=150, target_recall=0.9)
    *tuning, (check_rows, check_setting, check) = calls
    assert len(tuning) == len(tuned.tuning) and len(check_rows) == 150
    assert not set(check_rows) & set(tuning[0][0])  # the held-out sample is not the tuning one
    assert check_setting == tuned.search and tuned.recall_at_10 == check["recall_at_10"]
    # The recorded figure is what an independent measurement on those rows gives.
    f = x.astype(np.float32)
    sims = f[check_rows] @ f.T
    sims[np.arange(len(check_rows)), check_rows] = -np.inf
    truth = np.argsort(-sims, axis=1)[:, :10]
    _, found = index.search(f[check_rows], 10, exclude=check_rows)
    assert tuned.recall_at_10 == pytest.approx(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]),
                                               abs=1e-4)


def test_tune_text_tunes_a_second_setting_for_queries_from_outside_the_cone(monkeypatch):
    from bench.search_data import text_like_queries

    x = _cone(20000).astype(np.float16)
    q = text_like_queries(400, 64, 0, topics=200)
    choice = ann.AnnChoice("hnsw", len(x), x.shape[1], "HNSW32,Flat", 0, "test", params={"M": 16, "efConstruction": 40})
    index = ann.VectorIndex(ann.build_index(x, choice), choice, x)
    own = index.tune(queries=200, target_recall=0.95)
    calls = []
    measure = ann.VectorIndex._measure

    def spy(self, queries, rows, truth, setting, k):
        entry = measure(self, queries, rows, truth, setting, k)
        calls.append((queries.copy(), rows, dict(setting), entry))
        return entry

    monkeypatch.setattr(ann.VectorIndex, "_measure", spy)
    tuned = index.tune_text(q, target_recall=0.95)
    # The own-vector setting is kept for images and --like; text queries get their own, costlier one.
    assert tuned.search == own.search and tuned.recall_at_10 == own.recall_at_10
    assert tuned.search_text["efSearch"] > own.search["efSearch"]
    assert tuned.text_recall_at_10 >= 0.95 > tuned.text_recall_at_10_before
    assert tuned.text_tune_queries == 200 and len(tuned.text_tuning) == len(calls) - 2
    (before_q, before_rows, before_setting, before), *tuning, (check_q, check_rows, check_setting, check) = calls
    assert before_rows is None and check_rows is None  # text queries are no rows of the index: nothing left out
    assert before_setting == own.search and check_setting == tuned.search_text
    assert np.array_equal(before_q, check_q)
    # Held out: no tuning query is among the checked ones; together they are the queries given.
    tuning_q = tuning[0][0]
    assert not (np.abs(check_q[:, None, :] - tuning_q[None, :, :]).sum(-1) < 1e-6).any()
    assert len(tuning_q) + len(check_q) == len(q)
    # The recorded figures are what an independent measurement gives (numpy's exact top 10).
    truth = np.argsort(-(check_q @ x.astype(np.float32).T), axis=1, kind="stable")[:, :10]

    def recall(setting):
        _, found = index.search(check_q, 10, setting=setting)
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])

    assert tuned.text_recall_at_10 == pytest.approx(recall(tuned.search_text), abs=1e-4)
    assert tuned.text_recall_at_10_before == pytest.approx(recall(own.search), abs=1e-4)
    # The text setting is the index's own JSON record's, and a re-tune (--update) drops it: it was
    # measured against the old settings.
    assert ann.AnnChoice.from_json(tuned.to_json()) == tuned
    monkeypatch.setattr(ann.VectorIndex, "_measure", measure)
    again = index.tune(queries=200, target_recall=0.95)
    assert again.search_text == {} and again.text_recall_at_10 is None and again.text_tuning == []
    # A flat index is exact for text queries too.
    flat = ann.plan_index(2000, x.shape[1], 1 << 30)
    assert flat.kind == "flat"
    exact = ann.VectorIndex(ann.build_index(x[:2000], flat), flat, x[:2000]).tune_text(q)
    assert exact.search_text == {} and exact.text_recall_at_10 == 1.0


def test_exact_neighbours_leave_out_self_and_match_numpy():
    x = _cone(500, 32)
    rows = np.array([0, 7, 499])
    got = ann.exact_neighbours(x, rows, 5)
    sims = x[rows] @ x.T
    sims[np.arange(3), rows] = -np.inf
    assert np.array_equal(got, np.argsort(-sims, axis=1, kind="stable")[:, :5])


def test_exact_neighbours_across_chunks_and_query_blocks(monkeypatch):
    monkeypatch.setattr(ann, "_CHUNK", 64)  # 2000 rows: 32 chunks; 700 queries: two blocks of scores
    x = _cone(2000, 32)
    rows = np.sort(np.random.default_rng(3).choice(2000, 700, replace=False))
    sims = x[rows] @ x.T
    sims[np.arange(len(rows)), rows] = -np.inf
    assert np.array_equal(ann.exact_neighbours(x, rows, 10), np.argsort(-sims, axis=1, kind="stable")[:, :10])


# ---- visual words ----------------------------------------------------------------------------


def test_visual_words_rank_shared_rare_words_first():
    from models.visual_words import VisualWordIndex, Vocabulary

    vocab = Vocabulary(frame_k=10, patch_k=5)
    docs = {0: [1, 1, 2, 3], 1: [1, 1, 1, 1], 2: [7, 8, 9], 3: [2, 7]}
    rows = np.concatenate([[r] * len(t) for r, t in docs.items()])
    terms = np.concatenate([vocab.terms(np.array(t)) for t in docs.values()])
    index = VisualWordIndex.build(vocab, rows, terms, 5)  # row 4 has no tokens
    hits = index.search(np.array([7, 9]), 10)
    assert [r for r, _ in hits] == [2, 3]
    t, w = index.doc_vector(0)
    assert sorted(t.tolist()) == [1, 2, 3]
    hits = index.search(t, 10, query_weights=w, exclude=0)
    assert 0 not in [r for r, _ in hits] and {r for r, _ in hits} == {1, 3}
    own = index.search(t, 1, query_weights=w)
    assert own[0][0] == 0 and own[0][1] == pytest.approx(1.0, abs=1e-5)
    # Patch ids live after the frame ids.
    assert vocab.terms(np.array([0]), np.array([0, 4])).tolist() == [0, 10, 14]
    with pytest.raises(ValueError):
        vocab.terms(np.array([10]))


# ---- fusion ----------------------------------------------------------------------------------


def test_rrf_prefers_videos_found_by_both_queues_and_breaks_ties_by_id():
    queues = {"text": [("a", 9.0), ("b", 5.0), ("c", 1.0)], "vector": [("d", 0.9), ("b", 0.8)]}
    fused = fusion.rrf(queues)
    assert fused[0][0] == "b"
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 62)
    # a and d are both rank 1 in one queue: equal scores, ordered by id.
    assert [v for v, _ in fused[1:3]] == ["a", "d"]
    assert fusion.rrf(queues, k=1)[0] == ("b", pytest.approx(2 / 3))


def test_weighted_fusion_normalises_each_queue():
    queues = {"text": [("a", 20.0), ("b", 10.0)], "vector": [("b", 0.5), ("a", 0.1)]}
    assert fusion.weighted(queues) == [("a", 1.0), ("b", 1.0)]
    assert fusion.weighted(queues, weights={"text": 2.0})[0] == ("a", 2.0)
    with pytest.raises(ValueError):
        fusion.fuse(queues, "nope")


# ---- the query encoder's weights rule --------------------------------------------------------


def test_query_weights_must_be_the_index_weights(tiny_checkpoint, tmp_path):
    from models import clip
    from models.query import QueryEncoderMismatch, resolve_weights

    recorded = clip.weights_id(clip.ClipConfig("vmm-tiny-vit", tiny_checkpoint))
    assert resolve_weights("vmm-tiny-vit", recorded, tiny_checkpoint).pretrained == tiny_checkpoint
    with pytest.raises(QueryEncoderMismatch, match="local checkpoint"):
        resolve_weights("vmm-tiny-vit", recorded, None)
    other = tmp_path / "tiny.pt"
    other.write_bytes(open(tiny_checkpoint, "rb").read() + b"x")
    with pytest.raises(QueryEncoderMismatch, match="another space"):
        resolve_weights("vmm-tiny-vit", recorded, str(other))
    with pytest.raises(QueryEncoderMismatch):
        resolve_weights("vmm-tiny-vit", recorded, "none")
    assert resolve_weights("vmm-tiny-vit", "none", None).is_random
    with pytest.raises(QueryEncoderMismatch):
        resolve_weights("ViT-B-32", "laion2b_s34b_b79k", "none")


def test_query_encoder_encodes_like_the_extractor(tiny_checkpoint):
    from models import clip
    from models.query import QueryEncoder

    recorded = clip.weights_id(clip.ClipConfig("vmm-tiny-vit", tiny_checkpoint))
    enc = QueryEncoder("vmm-tiny-vit", recorded, tiny_checkpoint)
    ref = clip.ClipEncoder(clip.ClipConfig("vmm-tiny-vit", tiny_checkpoint)).load()
    np.testing.assert_allclose(enc.encode_text("a red kettle"), ref.encode_texts(["a red kettle"])[0], atol=1e-6)
    img = (np.random.default_rng(0).random((80, 120, 3)) * 255).astype(np.uint8)
    vec, patches = enc.encode_image_and_patches(img)
    np.testing.assert_allclose(vec, ref.encode_images([img])[0], atol=1e-5)
    assert patches.shape == (16, ref.dim)


def test_text_encoding_stops_at_the_end_token_and_equals_open_clip(tiny_checkpoint):
    """The query path encodes only the tokens up to the end-of-text token (a causal tower cannot
    see past it): it must equal open_clip's full 77-token encode_text, alone or in a batch of
    different lengths, for a text longer than the context too."""
    import torch

    from models import clip

    enc = clip.ClipEncoder(clip.ClipConfig("vmm-tiny-vit", tiny_checkpoint)).load()
    assert enc.causal_text
    texts = ["红色水壶 kettle", "a", "a man riding a horse along the beach at sunset " * 12, "Kettle 2024!"]
    with torch.no_grad():
        full = enc.model.encode_text(enc.tokenizer(texts), normalize=True).numpy()
    np.testing.assert_allclose(enc.encode_texts(texts), full, atol=1e-6)
    for text, ref in zip(texts, full):
        np.testing.assert_allclose(enc.encode_texts([text])[0], ref, atol=1e-6)
    assert np.abs(full[0] - full[1]).max() > 1e-3  # different texts, different vectors


def test_packed_text_tower_is_fp32_and_bf16_is_close_runs_its_own_path_and_leaves_the_model_alone(tiny_checkpoint):
    """The query encoder's text tower runs its products on weights packed for oneDNN: in fp32 its
    vectors are `ClipEncoder.encode_texts`'s within float32 rounding, in bf16 within bfloat16's
    (cosine), yet neither is encode_texts's bits (so the packed path ran); different texts stay
    apart; the shared model's parameters stay float32; images are encoded as before."""
    import platform

    import torch

    from models import clip
    from models.query import QueryEncoder

    recorded = clip.weights_id(clip.ClipConfig("vmm-tiny-vit", tiny_checkpoint))
    exact = clip.ClipEncoder(clip.ClipConfig("vmm-tiny-vit", tiny_checkpoint)).load()
    texts = ["红色水壶 kettle", "a", "a man riding a horse along the beach at sunset " * 12, "Kettle 2024!"]
    ref = exact.encode_texts(texts)
    for precision, min_cos, max_diff in (("fp32", 0.999999, 1e-5), ("bf16", 0.999, 0.05)):
        enc = QueryEncoder("vmm-tiny-vit", recorded, tiny_checkpoint, precision=precision)
        enc.load()
        if platform.machine() in ("x86_64", "AMD64"):  # torch's x86 wheels ship oneDNN
            assert enc._text_tower is not None and enc._text_tower.kernel == "onednn", precision
        for text, want in zip(texts, ref):
            got = enc.encode_text(text)
            assert got.dtype == np.float32 and abs(np.linalg.norm(got) - 1) < 1e-5
            assert float(got @ want) >= min_cos and np.abs(got - want).max() < max_diff, (precision, text)
            assert np.abs(got - want).max() > 0, f"{precision}: encode_texts's vector: the packed path did not run"
        got = enc.encode_texts(texts)
        assert np.abs(got[0] - got[3]).max() > 1e-3
        np.testing.assert_array_equal(enc.encode_texts(texts), got)  # the same texts, the same bits
        assert all(p.dtype == torch.float32 for p in enc.load().model.parameters())
        img = (np.random.default_rng(0).random((80, 120, 3)) * 255).astype(np.uint8)
        np.testing.assert_array_equal(enc.encode_image(img), exact.encode_images([img])[0])
    with pytest.raises(ValueError, match="query precision"):
        QueryEncoder("vmm-tiny-vit", recorded, tiny_checkpoint, precision="int4")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_packed_text_tower_answers_threads_as_it_answers_one(tiny_checkpoint, precision):
    """Several threads encode at once through one packed tower: each text gets what it gets alone."""
    import concurrent.futures

    from models import clip

    enc = clip.ClipEncoder(clip.ClipConfig("vmm-tiny-vit", tiny_checkpoint)).load()
    tower = clip.PackedTextTower(enc, precision)
    texts = [f"query {i} 红色 kettle {'x ' * (i % 7)}" for i in range(24)]
    alone = [tower.encode_texts([t])[0] for t in texts]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda t: tower.encode_texts([t])[0], texts * 4))
    for i, vec in enumerate(together):
        np.testing.assert_allclose(vec, alone[i % len(texts)], atol=1e-6)


def test_packed_text_tower_refuses_a_tower_it_cannot_run(tiny_checkpoint):
    """A text tower without a packed path: bf16 is refused with the reason; fp32 queries are
    encoded by the model itself."""
    import copy

    from models import clip
    from models.query import QueryEncoder

    enc = clip.ClipEncoder(clip.ClipConfig("vmm-tiny-vit", tiny_checkpoint)).load()
    assert clip.PackedTextTower.unsupported(enc) is None
    other = copy.copy(enc)
    other.causal_text = False  # e.g. a SigLIP or HF text tower
    with pytest.raises(ValueError, match="not open_clip's causal CLIP transformer"):
        clip.PackedTextTower(other, "bf16")
    recorded = clip.weights_id(clip.ClipConfig("vmm-tiny-vit", tiny_checkpoint))
    assert QueryEncoder("vmm-tiny-vit", recorded, tiny_checkpoint)._make_text_tower(other) is None
    with pytest.raises(ValueError, match="not open_clip's causal CLIP transformer"):
        QueryEncoder("vmm-tiny-vit", recorded, tiny_checkpoint, precision="bf16")._make_text_tower(other)


def test_query_encoder_caches_recent_text_vectors(tiny_checkpoint):
    from models import clip
    from models.query import QueryEncoder

    recorded = clip.weights_id(clip.ClipConfig("vmm-tiny-vit", tiny_checkpoint))
    enc = QueryEncoder("vmm-tiny-vit", recorded, tiny_checkpoint, cache_size=2)
    a = enc.encode_text("a red kettle")
    assert enc.encode_text("a red kettle") is not a  # a copy: a caller may change what it gets
    np.testing.assert_array_equal(enc.encode_text("a red kettle"), a)
    b, c = enc.encode_text("a blue kettle"), enc.encode_text("a green kettle")
    assert enc.cache_info()["size"] == 2 and enc.cache_info()["hits"] == 2
    assert not np.allclose(a, b) and not np.allclose(b, c)
    np.testing.assert_allclose(enc.encode_text("a red kettle"), a, atol=0)  # evicted, encoded again
    assert enc.cache_info()["hits"] == 2
    off = QueryEncoder("vmm-tiny-vit", recorded, tiny_checkpoint, cache_size=0)
    np.testing.assert_array_equal(off.encode_text("a red kettle"), a)
    assert off.cache_info()["size"] == 0


# ---- vmm index flags -------------------------------------------------------------------------


def test_index_flags_parse_and_refuse():
    from pipelines.index import IndexBuildError, parse_fields, parse_memory, shard_of

    assert parse_memory("4G") == 4 << 30 and parse_memory("512M") == 512 << 20 and parse_memory("1.5GiB") == 3 << 29
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(IndexBuildError):
            parse_memory(bad)
    assert parse_fields(None) == {"title": 2.0, "ocr_subtitle_text": 1.0, "ocr_scene_text": 0.7, "asr_text": 1.0}
    assert parse_fields("title:3,ocr_overlay_text") == {"title": 3.0, "ocr_overlay_text": 1.0}
    for bad in ("tags", "title:x", "title:0", ","):
        with pytest.raises(IndexBuildError):
            parse_fields(bad)
    # Shards: stable (a hash of the id, not Python's salted hash()) and spread.
    assert shard_of("sample-000", 4) == shard_of("sample-000", 4)
    counts = np.bincount([shard_of(f"v{i}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900


def test_text_queries_are_encoded_in_batches_of_similar_length_and_returned_in_order():
    from pipelines.index import _encode_by_length

    batches = []

    class Encoder:  # a text's vector is its length and its first character: which text it came from shows
        def encode_texts(self, texts):
            batches.append(list(texts))
            return np.array([[len(t), ord(t[0])] for t in texts], np.float32)

    texts = ["a" * n + chr(65 + n % 26) for n in np.random.default_rng(0).permutation(40)]
    texts = [t[::-1] for t in texts]  # the first character tells the texts apart
    vectors = _encode_by_length(Encoder(), texts, batch=8)
    assert [(int(v[0]), chr(int(v[1]))) for v in vectors] == [(len(t), t[0]) for t in texts]
    assert len(batches) == 5 and all(max(map(len, b)) - min(map(len, b)) == 7 for b in batches)
