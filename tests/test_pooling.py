"""Tests for models/pooling.py (frame embeddings → video vector, topic coherence, cosine)."""

import itertools

import numpy as np
import pytest

from models.pooling import cosine, l2_normalize, pool_video_embedding, topic_coherence


def random_frames(n, dim=64, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


# --- l2_normalize ----------------------------------------------------------------------------


def test_l2_normalize_rows():
    x = np.array([[3.0, 4.0], [0.0, -2.0]])
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, -1.0]], rtol=1e-6)


def test_l2_normalize_rejects_zero_row():
    with pytest.raises(ValueError, match="zero"):
        l2_normalize(np.array([[1.0, 0.0], [0.0, 0.0]]))


# --- pool_video_embedding --------------------------------------------------------------------


def test_pool_hand_computed():
    # Frames of different norms: each is normalised before the mean, so scale does not weigh in.
    frames = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    # mean of normalised = (1, 0, 2) / 3 → normalised (1, 0, 2) / sqrt(5)
    expected = np.array([1.0, 0.0, 2.0]) / np.sqrt(5.0)
    out = pool_video_embedding(frames)
    assert out.shape == (3,)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_pool_is_normalised_mean_of_normalised_frames():
    frames = random_frames(17, seed=1) * np.linspace(0.1, 10.0, 17, dtype=np.float32)[:, None]
    unit = frames.astype(np.float64) / np.linalg.norm(frames.astype(np.float64), axis=1, keepdims=True)
    mean = unit.mean(axis=0)
    expected = mean / np.linalg.norm(mean)
    out = pool_video_embedding(frames)
    assert np.linalg.norm(out.astype(np.float64)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # Not just any unit vector: the plain (unnormalised) mean points elsewhere here.
    raw = frames.mean(axis=0) / np.linalg.norm(frames.mean(axis=0))
    assert np.abs(out - raw).max() > 1e-2


def test_pool_order_invariant():
    frames = random_frames(9, seed=2)
    perm = np.random.default_rng(3).permutation(9)
    np.testing.assert_allclose(pool_video_embedding(frames[perm]), pool_video_embedding(frames), atol=1e-6)


def test_pool_single_frame_is_that_frame_normalised():
    frame = np.array([[0.0, 3.0, -4.0]], dtype=np.float32)
    np.testing.assert_allclose(pool_video_embedding(frame), [0.0, 0.6, -0.8], rtol=1e-6)


@pytest.mark.parametrize("shape", [(0, 8), (8,), (2, 3, 4)])
def test_pool_rejects_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        pool_video_embedding(np.ones(shape, dtype=np.float32))


def test_pool_rejects_zero_frame():
    frames = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="zero"):
        pool_video_embedding(frames)


def test_pool_rejects_frames_that_cancel_out():
    frames = np.array([[1.0, 2.0], [-1.0, -2.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="zero"):
        pool_video_embedding(frames)


# --- topic_coherence -------------------------------------------------------------------------


def test_coherence_identical_frames_is_one():
    frame = random_frames(1, seed=4)
    frames = np.repeat(frame, 12, axis=0) * np.arange(1, 13, dtype=np.float32)[:, None]  # same direction
    assert topic_coherence(frames) == pytest.approx(1.0, abs=1e-5)


def test_coherence_orthogonal_frames_is_zero():
    frames = np.eye(8, 32, dtype=np.float32) * 3.0
    assert topic_coherence(frames) == pytest.approx(0.0, abs=1e-6)


def test_coherence_opposite_pair_is_minus_one():
    frames = np.array([[1.0, 2.0, 3.0], [-2.0, -4.0, -6.0]], dtype=np.float32)
    assert topic_coherence(frames) == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize("n, seed", [(2, 5), (7, 6), (40, 7)])
def test_coherence_matches_brute_force_pairwise_mean(n, seed):
    # A shared component makes the expected value clearly non-zero (about 0.5).
    rng = np.random.default_rng(seed)
    topic = rng.standard_normal(64)
    frames = (topic + rng.standard_normal((n, 64))).astype(np.float32)
    unit = frames.astype(np.float64) / np.linalg.norm(frames.astype(np.float64), axis=1, keepdims=True)
    pairs = [float(unit[i] @ unit[j]) for i, j in itertools.combinations(range(n), 2)]
    expected = sum(pairs) / len(pairs)
    got = topic_coherence(frames)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, abs=1e-5)
    assert expected > 0.2


def test_coherence_order_invariant():
    frames = random_frames(10, seed=8)
    perm = np.random.default_rng(9).permutation(10)
    assert topic_coherence(frames[perm]) == pytest.approx(topic_coherence(frames), abs=1e-9)


def test_coherence_none_for_fewer_than_two():
    assert topic_coherence(random_frames(1, seed=10)) is None
    assert topic_coherence(np.zeros((0, 16), dtype=np.float32)) is None


def test_coherence_rejects_zero_frame():
    frames = random_frames(3, seed=11)
    frames[1] = 0.0
    with pytest.raises(ValueError, match="zero"):
        topic_coherence(frames)


# --- cosine ----------------------------------------------------------------------------------


def test_cosine_values():
    assert cosine(np.array([1.0, 0.0]), np.array([5.0, 0.0])) == pytest.approx(1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(0.0, abs=1e-12)
    assert cosine(np.array([1.0, 1.0]), np.array([-3.0, -3.0])) == pytest.approx(-1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(np.sqrt(0.5), rel=1e-6)


def test_cosine_matches_numpy_and_is_symmetric():
    a, b = random_frames(2, dim=128, seed=12)
    expected = float(a.astype(np.float64) @ b / (np.linalg.norm(a.astype(np.float64)) * np.linalg.norm(b.astype(np.float64))))
    assert isinstance(cosine(a, b), float)
    assert cosine(a, b) == pytest.approx(expected, abs=1e-6)
    assert cosine(b, a) == pytest.approx(cosine(a, b), abs=1e-12)


def test_cosine_rejects_zero_vector():
    with pytest.raises(ValueError, match="zero"):
        cosine(np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="zero"):
        cosine(np.ones(4), np.zeros(4))
