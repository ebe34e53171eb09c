"""Tests for models/keyframes.py (keyframe policy: colour signatures, cut/clock candidates, capping)."""

import random

import numpy as np
import pytest

from models.keyframes import (
    Candidate,
    CandidateDetector,
    SamplingConfig,
    color_signature,
    select_keyframes,
    signature_distance,
    thumbnail_size,
)

FPS = 25.0
H_BINS, S_BINS, V_BINS = 16, 8, 8

# Three colours that differ in hue, saturation and value alike, so every pair is a clear cut.
RED = (230, 30, 30)  # saturated, bright
GREY = (50, 50, 50)  # no hue, no saturation, dark
DULL_BLUE = (100, 100, 160)  # mid saturation, mid value
WHITE = (250, 250, 250)


def solid(rgb, h=9, w=16):
    frame = np.empty((h, w, 3), dtype=np.uint8)
    frame[:] = rgb
    return frame


def run_detector(shots, config, fps=FPS):
    """Feeds a synthetic stream to a detector the way the decoder does (thumbnail only when wanted).

    `shots` is a list of (colour, n_frames). Returns (candidates, analysed frame indices).
    """
    detector = CandidateDetector(config)
    frames = [solid(c) for c, n in shots for _ in range(n)]
    candidates, analysed = [], []
    for index, frame in enumerate(frames):
        t = index / fps
        if not detector.wants(t):
            continue
        analysed.append(index)
        c = detector.observe(index, t, color_signature(frame))
        if c is not None:
            candidates.append(c)
    return candidates, analysed


# --- color_signature -------------------------------------------------------------------------


def test_signature_shape_and_normalised_parts():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(36, 64, 3), dtype=np.uint8)
    sig = color_signature(frame)
    assert sig.shape == (H_BINS + S_BINS + V_BINS,)
    assert sig.dtype == np.float32
    hue, sat, val = sig[:H_BINS], sig[H_BINS:H_BINS + S_BINS], sig[H_BINS + S_BINS:]
    for part in (hue, sat, val):
        assert part.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.all(part >= 0)
    # A random frame spreads over many bins; a zero or one-hot result would fail this.
    assert np.count_nonzero(hue) >= 8
    assert np.count_nonzero(val) == V_BINS


def test_signature_of_pure_colours_lands_in_expected_bins():
    red, green, blue = (color_signature(solid(c)) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    # Hue 0, 1/3 and 2/3 of the circle → bins 0, 5 and 10 of 16.
    assert np.argmax(red[:H_BINS]) == 0
    assert np.argmax(green[:H_BINS]) == 5
    assert np.argmax(blue[:H_BINS]) == 10
    for sig in (red, green, blue):
        assert sig[:H_BINS].max() == pytest.approx(1.0)
        assert sig[H_BINS + S_BINS - 1] == pytest.approx(1.0)  # full saturation: last bin
        assert sig[-1] == pytest.approx(1.0)  # full value: last bin


def test_signature_of_grey_frame_has_empty_hue():
    sig = color_signature(solid((128, 128, 128)))
    assert np.all(sig[:H_BINS] == 0)
    assert sig[H_BINS] == pytest.approx(1.0)  # saturation 0: first bin
    assert sig[H_BINS + S_BINS:].sum() == pytest.approx(1.0)
    assert np.argmax(sig[H_BINS + S_BINS:]) == 4  # value 0.502 of 8 bins


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((9, 16, 3), dtype=np.float32),
        np.zeros((9, 16, 3), dtype=np.uint16),
        np.zeros((9, 16), dtype=np.uint8),
        np.zeros((9, 16, 4), dtype=np.uint8),
        np.zeros((9 * 16 * 3,), dtype=np.uint8),
    ],
    ids=["float32", "uint16", "2d", "rgba", "flat"],
)
def test_signature_rejects_wrong_dtype_or_shape(bad):
    with pytest.raises(ValueError, match="uint8"):
        color_signature(bad)


# --- signature_distance ----------------------------------------------------------------------


def test_distance_zero_for_same_frame():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(36, 64, 3), dtype=np.uint8)
    assert signature_distance(color_signature(frame), color_signature(frame.copy())) == 0.0
    grey = color_signature(solid((90, 90, 90)))
    assert signature_distance(grey, grey) == 0.0  # both hues empty: compared through S and V


@pytest.mark.parametrize("a, b", [(RED, GREY), (RED, DULL_BLUE), (GREY, DULL_BLUE), ((255, 0, 0), (0, 0, 0))])
def test_distance_high_for_very_different_solid_colours(a, b):
    d = signature_distance(color_signature(solid(a)), color_signature(solid(b)))
    assert d > 0.6
    assert d <= 1.0


def test_distance_symmetric_and_bounded_on_random_frames():
    rng = np.random.default_rng(2)
    sigs = []
    for k in range(6):
        frame = rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
        if k % 2:
            frame = (frame // 4).astype(np.uint8)  # darker, less saturated: distinct histograms
        sigs.append(color_signature(frame))
    sigs.append(color_signature(solid(GREY)))  # an empty hue part among them
    distances = []
    for i, a in enumerate(sigs):
        for b in sigs[i + 1:]:
            d_ab, d_ba = signature_distance(a, b), signature_distance(b, a)
            assert d_ab == pytest.approx(d_ba, abs=1e-12)
            assert 0.0 <= d_ab <= 1.0
            distances.append(d_ab)
    assert max(distances) > 0.3  # not all collapsed to zero


def test_distance_small_for_slight_brightness_change():
    # A lighting flicker within a shot must stay well under the default cut threshold.
    rng = np.random.default_rng(3)
    frame = rng.integers(40, 200, size=(36, 64, 3), dtype=np.uint8)
    flicker = np.clip(frame.astype(np.int16) + 4, 0, 255).astype(np.uint8)
    d = signature_distance(color_signature(frame), color_signature(flicker))
    assert d < SamplingConfig().scene_threshold / 2


# --- CandidateDetector -----------------------------------------------------------------------


def test_detector_three_shots_first_scene_and_clock():
    cfg = SamplingConfig()  # analysis 4 fps, threshold 0.35, gap 1 s, clock 5 s
    tick = 1.0 / cfg.analysis_fps
    # Shots: RED 0..4.12 s, GREY 4.12..16.28 s (a long shot), DULL_BLUE 16.28..20 s.
    cut_frames = (103, 407)
    shots = [(RED, 103), (GREY, 407 - 103), (DULL_BLUE, 500 - 407)]
    candidates, analysed = run_detector(shots, cfg)
    cut_times = [f / FPS for f in cut_frames]

    first = candidates[0]
    assert (first.frame_index, first.timestamp_s, first.reason) == (0, 0.0, "first")

    scenes = [c for c in candidates if c.reason == "scene"]
    assert len(scenes) == 2
    for cut, scene in zip(cut_times, scenes):
        assert cut <= scene.timestamp_s < cut + tick
        assert scene.score >= cfg.scene_threshold
        assert scene.frame_index == round(scene.timestamp_s * FPS)

    # The 12 s middle shot gets clock frames every clock_interval_s (within one analysis tick);
    # the 4 s shots are too short for one.
    clocks = [c for c in candidates if c.reason == "clock"]
    assert len(clocks) == 2
    assert all(scenes[0].timestamp_s < c.timestamp_s < cut_times[1] for c in clocks)
    chain = [scenes[0]] + clocks
    for prev, nxt in zip(chain, chain[1:]):
        assert cfg.clock_interval_s <= nxt.timestamp_s - prev.timestamp_s < cfg.clock_interval_s + tick
        assert nxt.score == 0.0

    # Nothing else: exactly first, scene, clock, clock, scene, in order.
    assert [c.reason for c in candidates] == ["first", "scene", "clock", "clock", "scene"]
    assert [c.timestamp_s for c in candidates] == sorted(c.timestamp_s for c in candidates)
    assert all(c.frame_index in analysed for c in candidates)


def test_detector_single_long_shot_clock_only():
    cfg = SamplingConfig(clock_interval_s=2.0)
    candidates, _ = run_detector([(DULL_BLUE, int(11 * FPS))], cfg)
    assert candidates[0].reason == "first"
    assert all(c.reason == "clock" for c in candidates[1:])
    # Analysed frames sit on a 0.28 s grid at 25 fps, so each clock lands on the first grid frame
    # at least 2 s after the last one: 2.24, 4.48, 6.72, 8.96 s in an 11 s shot.
    assert [c.timestamp_s for c in candidates[1:]] == pytest.approx([2.24, 4.48, 6.72, 8.96])
    gaps = np.diff([c.timestamp_s for c in candidates])
    assert np.all(gaps >= 2.0)
    assert np.all(gaps < 2.0 + 1.0 / cfg.analysis_fps)


def test_detector_no_candidates_within_short_static_shot():
    cfg = SamplingConfig()
    candidates, analysed = run_detector([(RED, int(4.5 * FPS))], cfg)
    assert len(analysed) > 10
    assert [c.reason for c in candidates] == ["first"]


def _flash_stream():
    # 6 s of RED with a 0.32 s WHITE flash at 3.0 s (long enough that an analysed frame sees it).
    return [(RED, 75), (WHITE, 8), (RED, 150 - 83)]


def test_min_scene_gap_suppresses_flash():
    candidates, _ = run_detector(_flash_stream(), SamplingConfig(min_scene_gap_s=1.0))
    scenes = [c for c in candidates if c.reason == "scene"]
    # Entering the flash is a cut; leaving it 0.28 s later is suppressed by the 1 s gap.
    assert len(scenes) == 1
    assert 3.0 <= scenes[0].timestamp_s < 3.32
    assert [c.reason for c in candidates] == ["first", "scene"]


def test_zero_scene_gap_sees_both_flash_edges():
    # The contrast case: without the gap, the flash costs two keyframes.
    candidates, _ = run_detector(_flash_stream(), SamplingConfig(min_scene_gap_s=0.0))
    scenes = [c for c in candidates if c.reason == "scene"]
    assert len(scenes) == 2
    assert 3.0 <= scenes[0].timestamp_s < 3.32 <= scenes[1].timestamp_s < 3.32 + 0.25


def test_wants_analysis_ticks():
    cfg = SamplingConfig(analysis_fps=4.0)
    detector = CandidateDetector(cfg)
    sig = color_signature(solid(RED))
    # Before anything is observed every frame is wanted, whatever its time.
    assert detector.wants(0.0)
    assert detector.wants(123.0)
    detector.observe(0, 0.0, sig)
    assert not detector.wants(0.04)
    assert not detector.wants(0.24)
    assert detector.wants(0.25)
    assert detector.wants(0.28)
    detector.observe(7, 0.28, sig)
    # The next tick runs from the frame actually seen (0.28 s), not from the previous tick.
    assert not detector.wants(0.50)
    assert detector.wants(0.53)


def test_wants_after_vfr_gap_does_not_burst():
    detector = CandidateDetector(SamplingConfig(analysis_fps=4.0))
    sig = color_signature(solid(RED))
    detector.observe(0, 0.0, sig)
    assert detector.wants(10.0)
    detector.observe(1, 10.0, sig)
    # After a 10 s gap the detector does not try to catch up on the 40 missed ticks.
    assert not detector.wants(10.04)
    assert not detector.wants(10.2)
    assert detector.wants(10.25)


def test_analysed_frames_at_25fps_follow_ticks():
    _, analysed = run_detector([(RED, 100)], SamplingConfig(analysis_fps=4.0))
    # At 25 fps the first frame at or after each 0.25 s tick is every 7th frame (0.28 s).
    assert analysed == list(range(0, 100, 7))


# --- select_keyframes ------------------------------------------------------------------------


def clocks(times, start_index=0):
    return [Candidate(start_index + i, float(t), "clock") for i, t in enumerate(times)]


def test_select_returns_all_when_under_cap():
    cands = [Candidate(50, 2.0, "scene", 0.8), Candidate(0, 0.0, "first"), Candidate(125, 5.0, "clock")]
    out = select_keyframes(cands, 3)
    assert out == sorted(cands, key=lambda c: c.timestamp_s)
    assert select_keyframes(cands, 10) == out
    assert select_keyframes([], 4) == []


def test_select_exactly_max_frames_keeps_first_and_sorts():
    rng = np.random.default_rng(4)
    times = np.sort(rng.uniform(0.5, 300.0, size=200))
    cands = [Candidate(0, 0.0, "first")] + [
        Candidate(i + 1, float(t), "scene" if i % 3 == 0 else "clock", float(rng.uniform(0.35, 1.0)) if i % 3 == 0 else 0.0)
        for i, t in enumerate(times)
    ]
    for cap in (1, 7, 32):
        out = select_keyframes(cands, cap)
        assert len(out) == cap
        assert out[0] == cands[0]
        assert [c.timestamp_s for c in out] == sorted(c.timestamp_s for c in out)
        assert len({c.frame_index for c in out}) == cap
        assert all(c in cands for c in out)


def test_select_spreads_evenly_over_time():
    cands = [Candidate(0, 0.0, "first")] + clocks(range(1, 1000), start_index=1)
    out = select_keyframes(cands, 10)
    assert len(out) == 10
    bins = [int(c.timestamp_s // 100) for c in out]
    assert bins == list(range(10))  # one per ~100 s bin, none doubled up at the start
    # Within a bin of equal-priority clocks the earliest wins.
    assert [c.timestamp_s for c in out] == [0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0]


def test_select_prefers_scene_over_clock_and_stronger_cut_within_bin():
    cands = [
        Candidate(0, 0.0, "first"),
        Candidate(10, 10.0, "clock"),
        Candidate(11, 11.0, "scene", 0.4),
        Candidate(12, 12.0, "scene", 0.9),
        Candidate(13, 13.0, "clock"),
        Candidate(20, 20.0, "clock"),
        Candidate(21, 21.0, "clock"),
        Candidate(29, 29.0, "clock"),
    ]
    # Bins of 29/3 s: [0, 9.67) [9.67, 19.33) [19.33, 29].
    out = select_keyframes(cands, 3)
    assert [(c.frame_index, c.reason) for c in out] == [(0, "first"), (12, "scene"), (20, "clock")]


def test_select_fills_empty_bins_with_best_of_rest():
    cands = [
        Candidate(0, 0.0, "first"),
        Candidate(1, 0.5, "clock"),
        Candidate(2, 1.0, "scene", 0.5),
        Candidate(3, 1.5, "scene", 0.7),
        Candidate(100, 100.0, "clock"),
    ]
    # Bins of 33.3 s: bin 0 keeps "first", bin 1 is empty, bin 2 keeps the 100 s clock; the spare
    # slot goes to the strongest remaining cut.
    out = select_keyframes(cands, 3)
    assert [c.frame_index for c in out] == [0, 3, 100]


def test_select_deterministic_for_shuffled_input():
    rng = np.random.default_rng(5)
    cands = [Candidate(0, 0.0, "first")]
    for i in range(1, 300):
        reason = ("scene", "clock")[int(rng.integers(0, 2))]
        score = float(np.round(rng.uniform(0.35, 1.0), 2)) if reason == "scene" else 0.0
        cands.append(Candidate(i, i * 0.37, reason, score))
    expected = select_keyframes(cands, 16)
    shuffler = random.Random(6)
    for _ in range(5):
        shuffled = cands[:]
        shuffler.shuffle(shuffled)
        assert select_keyframes(shuffled, 16) == expected


def test_select_all_at_same_time():
    cands = [Candidate(i, 0.0, "scene" if i == 3 else "clock", 0.5 if i == 3 else 0.0) for i in range(6)]
    out = select_keyframes(cands, 2)
    assert len(out) == 2
    assert 3 in {c.frame_index for c in out}


def test_select_rejects_non_positive_cap():
    with pytest.raises(ValueError):
        select_keyframes(clocks([0, 1]), 0)


# --- thumbnail_size --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "w, h, short, expected",
    [
        (1920, 1080, 224, (398, 224)),  # landscape 16:9
        (1080, 1920, 224, (224, 398)),  # portrait 9:16
        (640, 480, 36, (48, 36)),
        (480, 640, 36, (36, 48)),
        (500, 500, 64, (64, 64)),
        (320, 240, 480, (640, 480)),  # upscaling keeps the aspect too
    ],
)
def test_thumbnail_size(w, h, short, expected):
    out = thumbnail_size(w, h, short)
    assert out == expected
    assert min(out) == short
    assert out[0] / out[1] == pytest.approx(w / h, rel=0.01)


def test_thumbnail_size_clamps_extreme_aspect():
    assert thumbnail_size(4000, 2, 224) == (896, 224)  # 2000:1 squeezed to the 4:1 default
    assert thumbnail_size(2, 4000, 224) == (224, 896)
    assert thumbnail_size(4000, 2, 100, max_aspect=2.0) == (200, 100)
    assert thumbnail_size(300, 100, 100, max_aspect=4.0) == (300, 100)  # under the clamp: untouched


@pytest.mark.parametrize("w, h, short", [(0, 100, 10), (100, 0, 10), (-5, 100, 10), (100, 100, 0), (100, 100, -1)])
def test_thumbnail_size_rejects_non_positive(w, h, short):
    with pytest.raises(ValueError, match="positive"):
        thumbnail_size(w, h, short)


# --- SamplingConfig --------------------------------------------------------------------------


def test_sampling_config_defaults_and_frozen():
    cfg = SamplingConfig()
    assert (cfg.max_frames, cfg.analysis_fps, cfg.scene_threshold, cfg.min_scene_gap_s, cfg.clock_interval_s) == (
        32, 4.0, 0.35, 1.0, 5.0,
    )
    with pytest.raises(AttributeError):
        cfg.max_frames = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"max_frames": 0}, "max_frames"),
        ({"analysis_fps": 0.0}, "analysis_fps"),
        ({"analysis_fps": -1.0}, "analysis_fps"),
        ({"scene_threshold": 0.0}, "scene_threshold"),
        ({"scene_threshold": 1.01}, "scene_threshold"),
        ({"clock_interval_s": 0.0}, "clock_interval_s"),
        ({"min_scene_gap_s": -0.1}, "min_scene_gap_s"),
    ],
)
def test_sampling_config_rejects(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**kwargs)


def test_sampling_config_accepts_edges():
    # Each edge value is accepted and, used by the detector and the cap, means what it says.
    cfg = SamplingConfig(max_frames=1, scene_threshold=1.0, min_scene_gap_s=0.0)
    blue = (40, 80, 210)  # red -> blue scores 0.5; blue <-> white 1.0 (disjoint histograms)
    candidates, _ = run_detector([(RED, 50), (blue, 50), (WHITE, 8), (blue, 42)], cfg)
    # scene_threshold 1.0: only a complete change is a cut (not red -> blue at 2 s); min_scene_gap_s
    # 0: both edges of the 0.32 s white flash are cuts.
    assert [(c.reason, c.timestamp_s) for c in candidates] == [("first", 0.0), ("scene", 4.2), ("scene", 4.48)]
    assert all(c.score == 1.0 for c in candidates[1:])
    assert select_keyframes(candidates, cfg.max_frames) == candidates[:1]  # max_frames 1: the first alone


# --- hue-only cuts ----------------------------------------------------------------------------


def test_detector_sees_cut_between_equally_bright_saturated_colours():
    red, blue = (205, 40, 40), (40, 80, 210)  # pipelines/make_sample.py PALETTE
    candidates, _ = run_detector([(red, 100), (blue, 100)], SamplingConfig())
    assert [c.reason for c in candidates] == ["first", "scene"]
