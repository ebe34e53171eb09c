"""Tests for models/codebook.py (visual dictionary: k-means centroids -> int16 ids)."""

import json
import os
import pickle

import faiss
import numpy as np
import pytest

from models.codebook import (
    MAX_K,
    Codebook,
    CodebookError,
    CodebookInfo,
    array_sha256,
    reservoir_sample,
    train_codebook,
)

MODEL = "ViT-B-32"
WEIGHTS = "openai"


def make_codebook(centroids, *, level="frame", normalized=False, model=MODEL, weights=WEIGHTS):
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    k, dim = centroids.shape
    info = CodebookInfo(
        k=k, dim=dim, level=level, metric="l2", clip_model=model, clip_weights=weights,
        sha256=array_sha256(centroids), train_vectors=0, iterations=0, seed=0,
        normalized=normalized,
    )
    return Codebook(centroids, info)


def brute_force_check(queries, centroids, ids):
    """ids must be the argmin of squared L2 distance (float64), ties aside.

    faiss computes ||x||^2 + ||c||^2 - 2<x, c> in float32, so on an exact
    near-tie it may pick the other entry; such picks must still be (within
    float32 error) at the minimum distance. With random data there are
    essentially none, and we assert that too.
    """
    q = queries.astype(np.float64)
    c = centroids.astype(np.float64)
    d = ((q[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    best = d.argmin(1)
    mismatch = np.flatnonzero(best != ids)
    assert ids.dtype == np.int16
    assert len(mismatch) <= 1, f"{len(mismatch)} assignments differ from brute force"
    rows = np.arange(len(ids))
    gap = d[rows, ids.astype(np.int64)] - d[rows, best]
    assert np.all(gap <= 1e-4 * np.maximum(d[rows, best], 1.0))


@pytest.mark.parametrize("k", [64, 300])
def test_assign_matches_brute_force(k):
    rng = np.random.default_rng(k)
    centroids = rng.standard_normal((k, 32)).astype(np.float32)
    queries = rng.standard_normal((4000, 32)).astype(np.float32)
    cb = make_codebook(centroids)
    # small batch_size so the batching path (several faiss calls) is exercised
    ids = cb.assign(queries, batch_size=1500)
    brute_force_check(queries, centroids, ids)
    # float64 input is accepted and gives the same answer
    np.testing.assert_array_equal(cb.assign(queries.astype(np.float64)), ids)


def test_assign_trained_normalized_codebook_matches_brute_force():
    rng = np.random.default_rng(7)
    train = rng.standard_normal((64 * 40, 16)).astype(np.float32)
    cb = train_codebook(train, 64, level="frame", clip_model=MODEL, clip_weights=WEIGHTS,
                        iterations=5, seed=3)
    assert cb.info.normalized
    queries = rng.standard_normal((3000, 16)).astype(np.float32) * 5.0
    ids = cb.assign(queries)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    brute_force_check(unit, cb.centroids, ids)
    # normalisation makes the id independent of the vector's length
    np.testing.assert_array_equal(cb.assign(queries * 0.01), ids)


def test_assign_edge_cases():
    cb = make_codebook(np.eye(4, dtype=np.float32))
    assert cb.assign(np.zeros((0, 4), np.float32)).shape == (0,)
    assert cb.assign(np.zeros((0, 4), np.float32)).dtype == np.int16
    with pytest.raises(CodebookError):
        cb.assign(np.zeros((3, 5), np.float32))
    with pytest.raises(CodebookError):
        cb.assign(np.zeros(4, np.float32))


def test_index_cached_and_not_pickled():
    rng = np.random.default_rng(0)
    cb = make_codebook(rng.standard_normal((10, 8)))
    q = rng.standard_normal((50, 8)).astype(np.float32)
    ids = cb.assign(q)
    index = cb._index
    assert index is not None
    cb.assign(q)
    assert cb._index is index  # built once
    clone = pickle.loads(pickle.dumps(cb))
    assert clone._index is None
    assert clone.id == cb.id
    assert not clone.centroids.flags.writeable
    np.testing.assert_array_equal(clone.assign(q), ids)


# -- persistence -----------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    cb = make_codebook(rng.standard_normal((20, 6)), level="patch", normalized=True)
    path = str(tmp_path / "cb")
    cb.save(path)
    assert sorted(os.listdir(path)) == ["codebook.json", "codebook.npy"]  # no temp files left
    loaded = Codebook.load(path)
    assert loaded.id == cb.id
    assert loaded.info == cb.info
    assert loaded.centroids.tobytes() == cb.centroids.tobytes()
    assert loaded.centroids.dtype == np.float32
    # the npy needs no pickle support
    raw = np.load(os.path.join(path, "codebook.npy"), allow_pickle=False)
    assert raw.dtype == np.float32 and raw.flags.c_contiguous
    np.testing.assert_array_equal(raw, cb.centroids)
    # json: sorted keys, indented, carries the hash
    text = open(os.path.join(path, "codebook.json")).read()
    meta = json.loads(text)
    assert list(meta) == sorted(meta)
    assert "\n  " in text
    assert meta["sha256"] == cb.id
    # saving again over an existing codebook works
    cb.save(path)
    assert Codebook.load(path).id == cb.id


def test_id_depends_on_every_value_and_shape():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((12, 4)).astype(np.float32)
    b = a.copy()
    b[5, 2] = np.nextafter(b[5, 2], np.float32(np.inf))
    assert array_sha256(a) != array_sha256(b)
    assert make_codebook(a).id != make_codebook(b).id
    assert array_sha256(a) != array_sha256(a.reshape(4, 12))
    assert array_sha256(a) == array_sha256(np.asfortranarray(a))  # bytes are C order


def test_tampered_npy_refused(tmp_path):
    rng = np.random.default_rng(3)
    cb = make_codebook(rng.standard_normal((8, 4)))
    path = str(tmp_path / "cb")
    cb.save(path)
    npy = os.path.join(path, "codebook.npy")
    arr = np.load(npy, allow_pickle=False).copy()
    arr[0, 0] += 1.0
    np.save(npy, arr)
    with pytest.raises(CodebookError, match="sha256"):
        Codebook.load(path)


def test_load_refuses_missing_or_bad_files(tmp_path):
    with pytest.raises(CodebookError, match="not found"):
        Codebook.load(str(tmp_path))
    cb = make_codebook(np.eye(3, dtype=np.float32))
    path = str(tmp_path / "cb")
    cb.save(path)
    # float64 array with the right values is still a different artefact
    np.save(os.path.join(path, "codebook.npy"), cb.centroids.astype(np.float64))
    with pytest.raises(CodebookError):
        Codebook.load(path)
    # an object array would need pickle: refused, not executed
    obj = np.array([{"a": 1}], dtype=object)
    np.save(os.path.join(path, "codebook.npy"), obj, allow_pickle=True)
    with pytest.raises(CodebookError):
        Codebook.load(path)


def test_constructor_validates():
    good = np.eye(3, dtype=np.float32)
    with pytest.raises(CodebookError, match="float32"):
        Codebook(good.astype(np.float64), make_codebook(good).info)
    info = make_codebook(good).info
    other = good.copy()
    other[0, 0] = 2.0
    with pytest.raises(CodebookError, match="sha256"):
        Codebook(other, info)
    with pytest.raises(CodebookError):
        Codebook(good[:, :2].copy(), info)
    with pytest.raises(CodebookError, match="int16"):
        make_codebook(np.zeros((MAX_K + 1, 1), np.float32))
    # the stored array cannot be mutated behind the hash
    with pytest.raises(ValueError):
        make_codebook(good).centroids[0, 0] = 5.0


# -- refusals ----------------------------------------------------------------

def test_train_refuses_k_over_int16():
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(CodebookError, match="int16"):
        train_codebook(x, MAX_K + 1, level="frame", clip_model=MODEL, clip_weights=WEIGHTS)
    with pytest.raises(CodebookError):
        train_codebook(x, 1, level="frame", clip_model=MODEL, clip_weights=WEIGHTS)


def test_train_refuses_big_k_on_small_sample():
    x = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
    with pytest.raises(CodebookError) as e:
        train_codebook(x, 64, level="frame", clip_model=MODEL, clip_weights=WEIGHTS)
    msg = str(e.value)
    assert "largest K this sample supports is 25" in msg  # 1000 // 39
    assert str(64 * 39) in msg  # how many vectors would be needed
    # a smaller min_points_per_centroid is the caller's explicit choice
    cb = train_codebook(x, 64, level="frame", clip_model=MODEL, clip_weights=WEIGHTS,
                        min_points_per_centroid=10, iterations=3)
    assert cb.k == 64


def test_train_refuses_bad_level_and_nan():
    x = np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32)
    with pytest.raises(CodebookError):
        train_codebook(x, 2, level="video", clip_model=MODEL, clip_weights=WEIGHTS)
    x[3, 1] = np.nan
    with pytest.raises(CodebookError, match="NaN"):
        train_codebook(x, 2, level="frame", clip_model=MODEL, clip_weights=WEIGHTS)


def test_check_compatible():
    cb = make_codebook(np.eye(4, dtype=np.float32), level="frame")
    ok = dict(dim=4, clip_model=MODEL, clip_weights=WEIGHTS, level="frame")
    cb.check_compatible(**ok)
    with pytest.raises(CodebookError, match="dim"):
        cb.check_compatible(**{**ok, "dim": 5})
    with pytest.raises(CodebookError, match="dim"):
        cb.check_compatible(**{**ok, "dim": 5}, force=True)
    with pytest.raises(CodebookError, match="level"):
        cb.check_compatible(**{**ok, "level": "patch"})
    with pytest.raises(CodebookError, match="level"):
        cb.check_compatible(**{**ok, "level": "patch"}, force=True)
    with pytest.raises(CodebookError, match="force=True"):
        cb.check_compatible(**{**ok, "clip_model": "ViT-L-14"})
    with pytest.raises(CodebookError, match="clip_weights"):
        cb.check_compatible(**{**ok, "clip_weights": "laion2b"})
    cb.check_compatible(**{**ok, "clip_model": "ViT-L-14"}, force=True)
    cb.check_compatible(**{**ok, "clip_weights": "laion2b"}, force=True)


# -- training ----------------------------------------------------------------

def _train(x, k, seed, **kw):
    return train_codebook(x, k, level="frame", clip_model=MODEL, clip_weights=WEIGHTS,
                          iterations=8, seed=seed, use_gpu=False, **kw)


def test_training_is_deterministic():
    x = np.random.default_rng(4).standard_normal((100 * 40, 24)).astype(np.float32)
    a = _train(x, 100, seed=11)
    b = _train(x, 100, seed=11)
    assert a.centroids.tobytes() == b.centroids.tobytes()
    assert a.id == b.id
    c = _train(x, 100, seed=12)
    assert c.centroids.tobytes() != a.centroids.tobytes()
    assert a.centroids.dtype == np.float32 and a.centroids.shape == (100, 24)
    assert a.info.train_vectors == len(x)
    assert (a.info.seed, a.info.iterations, a.info.normalized) == (11, 8, True)


def test_training_does_not_depend_on_thread_count():
    x = np.random.default_rng(5).standard_normal((50 * 60, 16)).astype(np.float32)
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = _train(x, 50, seed=1)
        faiss.omp_set_num_threads(4)
        four = _train(x, 50, seed=1)
    finally:
        faiss.omp_set_num_threads(before)
    assert one.id == four.id


def test_training_subsamples_reproducibly():
    x = np.random.default_rng(6).standard_normal((5000, 8)).astype(np.float32)
    a = _train(x, 10, seed=2, max_points_per_centroid=100)
    b = _train(x, 10, seed=2, max_points_per_centroid=100)
    assert a.info.train_vectors == 1000  # 10 * 100 actually used, recorded exactly
    assert a.id == b.id
    assert _train(x, 10, seed=2).info.train_vectors == 2560  # default 256 per centroid


def _blobs(seed, blobs=8, per=400, dim=32, noise=0.3):
    rng = np.random.default_rng(seed)
    # orthogonal directions of length 10: well separated both in L2 and in angle
    centres = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:blobs] * 10.0
    labels = np.repeat(np.arange(blobs), per)
    x = (centres[labels] + noise * rng.standard_normal((blobs * per, dim))).astype(np.float32)
    order = rng.permutation(len(x))
    return x[order], labels[order]


def _assert_pure(ids, labels, blobs):
    owner = {}
    for b in range(blobs):
        blob_ids = np.unique(ids[labels == b])
        assert len(blob_ids) == 1, f"blob {b} split over ids {blob_ids}"  # purity 1.0
        owner[b] = int(blob_ids[0])
    assert len(set(owner.values())) == blobs, f"blobs share ids: {owner}"  # distinct


@pytest.mark.parametrize("normalize", [True, False])
def test_blobs_get_one_distinct_id_each(normalize):
    x, labels = _blobs(seed=8)
    # k == number of blobs is the hard case for k-means seeding (two centroids
    # in one blob is a local minimum), hence k-means++ with restarts here.
    cb = _train(x, 8, seed=0, normalize=normalize, init="kmeans++", nredo=3)
    assert cb.info.normalized == normalize
    _assert_pure(cb.assign(x), labels, 8)


def test_blobs_with_large_k_never_mix_blobs():
    # The dictionary regime (k >> natural clusters) with the default random
    # init: blobs may be split over several ids, but no id mixes two blobs.
    x, labels = _blobs(seed=9, per=800)
    cb = _train(x, 64, seed=0, min_points_per_centroid=39)
    ids = cb.assign(x)
    for j in np.unique(ids):
        assert len(np.unique(labels[ids == j])) == 1, f"id {j} mixes blobs"
    assert len(np.unique(ids)) > 32  # entries are actually used, not collapsed


def test_train_rejects_unknown_init():
    x, _ = _blobs(seed=1)
    with pytest.raises(CodebookError, match="init"):
        _train(x, 8, seed=0, init="best")
    with pytest.raises(CodebookError, match="nredo"):
        _train(x, 8, seed=0, nredo=0)


# -- lookup / bag of words ---------------------------------------------------

def test_lookup():
    rng = np.random.default_rng(9)
    c = rng.standard_normal((5, 3)).astype(np.float32)
    cb = make_codebook(c)
    ids = np.array([4, 0, 0, 2], dtype=np.int16)
    out = cb.lookup(ids)
    assert out.shape == (4, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, c[[4, 0, 0, 2]])
    assert cb.lookup([]).shape == (0, 3)
    out[0, 0] = 123.0  # a copy: the codebook is untouched
    assert cb.centroids[4, 0] == c[4, 0]
    for bad in ([5], [-1], np.array([0, 7], np.int16)):
        with pytest.raises(CodebookError, match="out of range"):
            cb.lookup(bad)
    with pytest.raises(CodebookError):
        cb.lookup([0.5])
    # round trip: assigning the centroids themselves gives their own ids
    np.testing.assert_array_equal(cb.assign(cb.lookup(np.arange(5))), np.arange(5))


def test_bag_of_words():
    cb = make_codebook(np.eye(6, dtype=np.float32))
    ids = np.array([1, 1, 3, 5, 1], dtype=np.int16)
    tf = cb.bag_of_words(ids, normalize=False)
    assert tf.shape == (6,) and tf.dtype == np.float32
    np.testing.assert_array_equal(tf, [0, 3, 0, 1, 0, 1])
    bow = cb.bag_of_words(ids)
    assert bow.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bow), 1.0, rtol=1e-6)
    np.testing.assert_allclose(bow, np.array([0, 3, 0, 1, 0, 1]) / np.sqrt(11), rtol=1e-6)
    empty = cb.bag_of_words([])
    assert empty.shape == (6,) and not np.any(empty) and not np.any(np.isnan(empty))
    with pytest.raises(CodebookError):
        cb.bag_of_words([6])
    with pytest.raises(CodebookError):
        cb.bag_of_words([-1])


# -- reservoir sampling --------------------------------------------------------

def test_reservoir_sample_size_and_determinism():
    rng = np.random.default_rng(10)
    data = rng.standard_normal((10000, 4)).astype(np.float32)
    a = reservoir_sample(iter(data), 100, seed=1)
    b = reservoir_sample((row for row in data), 100, seed=1)
    c = reservoir_sample(iter(data), 100, seed=2)
    assert a.shape == (100, 4) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # every sampled row comes from the input, without repeats
    rows = {r.tobytes() for r in data}
    assert all(r.tobytes() in rows for r in a)
    assert len({r.tobytes() for r in a}) == 100
    # fewer items than n: all of them, in order
    np.testing.assert_array_equal(reservoir_sample(iter(data[:7]), 100, seed=0), data[:7])
    assert reservoir_sample(iter([]), 5, seed=0).shape == (0, 0)
    with pytest.raises(CodebookError):
        reservoir_sample(iter(data), 0, seed=0)
    with pytest.raises(CodebookError):
        reservoir_sample([np.zeros(3), np.zeros(4)], 1, seed=0)


def test_reservoir_sample_copies_items():
    buf = np.zeros(3, np.float32)

    def stream():
        for i in range(5):
            buf[:] = i  # the producer reuses one buffer
            yield buf

    out = reservoir_sample(stream(), 10, seed=0)
    np.testing.assert_array_equal(out[:, 0], np.arange(5))


def test_reservoir_sample_is_uniform():
    items, n, trials = 10, 3, 4000
    data = np.arange(items, dtype=np.float32)[:, None]
    counts = np.zeros(items)
    for seed in range(trials):
        sample = reservoir_sample(iter(data), n, seed=seed)
        counts[sample[:, 0].astype(int)] += 1
    freq = counts / trials
    # each item is included with probability n / items = 0.3 (sd ~0.007 here)
    np.testing.assert_allclose(freq, n / items, atol=0.035)
