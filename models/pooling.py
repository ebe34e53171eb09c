"""From frame embeddings to video features. Pure numpy, no Beam.

Consumes L2-normalised frame embeddings float32 [n, D]; produces the video vector, the topic
coherence and the title/visual similarity written to `videos`.
"""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    if np.any(norm == 0):
        raise ValueError("cannot normalise a zero vector")
    return x / norm


def pool_video_embedding(frames: np.ndarray) -> np.ndarray:
    """The video vector: mean of the normalised frame vectors, normalised again (float32 [D])."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 2 or frames.shape[0] == 0:
        raise ValueError(f"expected frame embeddings [n>0, D], got shape {frames.shape}")
    return l2_normalize(l2_normalize(frames).mean(axis=0))


def topic_coherence(frames: np.ndarray) -> float | None:
    """Mean pairwise cosine similarity of the keyframes, in [-1, 1]; None for fewer than two.

    High (towards 1) when every keyframe shows the same topic, low for compilations of unrelated
    clips. Computed as (|sum e_i|^2 - n) / (n (n - 1)) on normalised e_i: the average of the
    off-diagonal entries of the Gram matrix, without forming it.
    """
    frames = l2_normalize(np.asarray(frames, dtype=np.float32))
    n = frames.shape[0]
    if n < 2:
        return None
    s = frames.astype(np.float64).sum(axis=0)
    return float((s @ s - n) / (n * (n - 1)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(l2_normalize(a).astype(np.float64) @ l2_normalize(b).astype(np.float64))
