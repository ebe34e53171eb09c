"""Keyframe policy: which decoded frames become keyframes. Pure functions, no Beam, no decoder.

Consumes small RGB frames (uint8 [h, w, 3]) with their index and timestamp, in presentation order.
Produces `Candidate`s: the first frame, the first analysed frame after each scene cut, and a slow
clock frame during long shots; `select_keyframes` caps them at `max_frames`, spread evenly in time.

Why this policy: search needs the topic of a video, not its motion, so a few frames per shot are
enough; scene cuts mark where the content changes, and the clock covers long single shots.
"""

from __future__ import annotations

import dataclasses

import numpy as np

REASON_PRIORITY = {"first": 3, "scene": 2, "clock": 1}

# Histogram bins for hue, saturation and value. Hue carries most of the shot identity; value is
# kept coarse so a lighting flicker is not a cut.
_H_BINS, _S_BINS, _V_BINS = 16, 8, 8
_WEIGHTS = (2.0, 1.0, 1.0)  # hue, saturation, value in signature_distance


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How keyframes are chosen. Defaults suit search: a few frames per shot, at most 32 a video."""

    max_frames: int = 32
    analysis_fps: float = 4.0  # how often a frame is looked at for cuts (cheap: a 64x36 thumbnail)
    scene_threshold: float = 0.35  # colour-histogram distance in [0, 1] that counts as a cut
    min_scene_gap_s: float = 1.0  # flashes and fast montages do not make a keyframe each
    clock_interval_s: float = 5.0  # a long shot still gets a keyframe this often

    def __post_init__(self):
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.analysis_fps <= 0:
            raise ValueError(f"analysis_fps must be > 0, got {self.analysis_fps}")
        if not 0.0 < self.scene_threshold <= 1.0:
            raise ValueError(f"scene_threshold must be in (0, 1], got {self.scene_threshold}")
        if self.clock_interval_s <= 0:
            raise ValueError(f"clock_interval_s must be > 0, got {self.clock_interval_s}")
        if self.min_scene_gap_s < 0:
            raise ValueError(f"min_scene_gap_s must be >= 0, got {self.min_scene_gap_s}")


@dataclasses.dataclass(frozen=True)
class Candidate:
    frame_index: int
    timestamp_s: float
    reason: str  # "first" | "scene" | "clock"
    score: float = 0.0  # cut strength for "scene", 0 otherwise


def color_signature(rgb: np.ndarray) -> np.ndarray:
    """Normalised HSV histograms (hue, saturation, value) of a small RGB frame, float32 [32]."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 [h, w, 3], got {rgb.dtype} {rgb.shape}")
    x = rgb.reshape(-1, 3).astype(np.float32) / 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = x.max(axis=1)
    c = v - x.min(axis=1)
    s = np.where(v > 0, c / np.maximum(v, 1e-6), 0.0)
    safe_c = np.maximum(c, 1e-6)
    h = np.where(
        v == r,
        ((g - b) / safe_c) % 6.0,
        np.where(v == g, (b - r) / safe_c + 2.0, (r - g) / safe_c + 4.0),
    )
    h = np.where(c > 1e-6, h / 6.0, 0.0)
    # Grey pixels have no hue; weighting hue votes by saturation keeps them from all landing in bin 0.
    hh = np.histogram(h, bins=_H_BINS, range=(0.0, 1.0), weights=s)[0]
    sh = np.histogram(s, bins=_S_BINS, range=(0.0, 1.0))[0]
    vh = np.histogram(v, bins=_V_BINS, range=(0.0, 1.0))[0]
    parts = []
    for hist in (hh, sh, vh):
        total = hist.sum()
        parts.append(hist / total if total > 0 else hist)
    return np.concatenate(parts).astype(np.float32)


def signature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance between signatures, averaged over the three histograms: 0 same, 1 disjoint.

    Hue counts twice as much as saturation or value, so a cut between two equally bright,
    equally saturated colours (red to blue) scores 0.5 and is found at the default threshold.

    A histogram that is all zeros (hue of a grey frame) is compared through the other two.
    """
    n_h = _H_BINS
    n_s = _S_BINS
    spans = ((0, n_h), (n_h, n_h + n_s), (n_h + n_s, len(a)))
    dists, weights = [], []
    for (lo, hi), weight in zip(spans, _WEIGHTS):
        pa, pb = a[lo:hi], b[lo:hi]
        if pa.sum() == 0 and pb.sum() == 0:
            continue
        dists.append(1.0 if pa.sum() == 0 or pb.sum() == 0 else 0.5 * float(np.abs(pa - pb).sum()))
        weights.append(weight)
    return float(np.average(dists, weights=weights)) if dists else 0.0


class CandidateDetector:
    """Streams analysed frames in presentation order and proposes keyframe candidates.

    Use `wants(timestamp_s)` to decide whether to make a thumbnail of a frame at all (frames
    between analysis ticks cost only their decode), then `observe(...)` with its signature.
    """

    def __init__(self, config: SamplingConfig):
        self._config = config
        self._next_tick = 0.0
        self._prev_signature: np.ndarray | None = None
        self._last_candidate_t: float | None = None
        self._last_scene_t: float | None = None

    def wants(self, timestamp_s: float) -> bool:
        return self._prev_signature is None or timestamp_s >= self._next_tick

    def observe(self, frame_index: int, timestamp_s: float, signature: np.ndarray) -> Candidate | None:
        cfg = self._config
        # Ticks advance from the frame actually seen so a VFR gap does not trigger a burst.
        self._next_tick = timestamp_s + 1.0 / cfg.analysis_fps - 1e-9
        prev, self._prev_signature = self._prev_signature, signature
        if prev is None:
            self._last_candidate_t = timestamp_s
            return Candidate(frame_index, timestamp_s, "first", 0.0)
        dist = signature_distance(prev, signature)
        since_scene = timestamp_s - (self._last_scene_t if self._last_scene_t is not None else -1e18)
        if dist >= cfg.scene_threshold and since_scene >= cfg.min_scene_gap_s:
            self._last_scene_t = timestamp_s
            self._last_candidate_t = timestamp_s
            return Candidate(frame_index, timestamp_s, "scene", dist)
        if timestamp_s - self._last_candidate_t >= cfg.clock_interval_s:
            self._last_candidate_t = timestamp_s
            return Candidate(frame_index, timestamp_s, "clock", 0.0)
        return None


def _priority(c: Candidate) -> tuple:
    # Higher is better; ties go to the earlier frame so the choice is deterministic.
    return (REASON_PRIORITY[c.reason], c.score, -c.timestamp_s, -c.frame_index)


def select_keyframes(candidates: list[Candidate], max_frames: int) -> list[Candidate]:
    """Caps candidates at `max_frames`, spread evenly over the time they span.

    The span is cut into `max_frames` equal bins; each bin keeps its best candidate (first >
    strongest cut > clock); slots left by empty bins go to the best of the rest. Returns the kept
    candidates in time order. Deterministic for the same input.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    ordered = sorted(candidates, key=lambda c: (c.timestamp_s, c.frame_index))
    if len(ordered) <= max_frames:
        return ordered
    t0, t1 = ordered[0].timestamp_s, ordered[-1].timestamp_s
    width = (t1 - t0) / max_frames or 1.0
    best_in_bin: dict[int, Candidate] = {}
    for c in ordered:
        b = min(int((c.timestamp_s - t0) / width), max_frames - 1)
        if b not in best_in_bin or _priority(c) > _priority(best_in_bin[b]):
            best_in_bin[b] = c
    kept = {id(c) for c in best_in_bin.values()}
    rest = sorted((c for c in ordered if id(c) not in kept), key=_priority, reverse=True)
    chosen = list(best_in_bin.values()) + rest[: max_frames - len(best_in_bin)]
    return sorted(chosen, key=lambda c: (c.timestamp_s, c.frame_index))


def thumbnail_size(width: int, height: int, short_side: int, max_aspect: float = 4.0) -> tuple[int, int]:
    """(w, h) with the shorter side scaled to `short_side`, aspect kept up to `max_aspect`.

    Extreme aspect ratios (a 4000x2 strip) are squeezed to `max_aspect` so a frame never grows
    without bound; such frames are rare and CLIP centre-crops anyway.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if short_side <= 0:
        raise ValueError(f"short_side must be positive, got {short_side}")
    aspect = min(max(width, height) / min(width, height), max_aspect)
    long_side = int(round(short_side * aspect))
    return (long_side, short_side) if width >= height else (short_side, long_side)
