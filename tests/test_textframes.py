"""Tests for models/textframes.py (which frames OCR reads: text-change triggers, result reuse).

Pure numpy: synthetic grey analysis maps (uint8 [180, 320]). "Text" is a band of high-contrast
vertical strokes (alternating black/white columns); different lines differ in position, width and
stroke width. "Motion" is a bright square that moves every tick; "noise" is a few flickering pixels.
"""

import dataclasses

import numpy as np
import pytest

from models.textframes import (
    TEXT_MAP_H,
    TEXT_MAP_W,
    TextChangeDetector,
    TextSamplingConfig,
    band_rows,
    cell_changes,
    edge_map,
    plan_reads,
    same_band,
    thin_evenly,
)

H, W = TEXT_MAP_H, TEXT_MAP_W
CELL_H, CELL_W = 30, 40  # 6 rows x 8 columns of cells
GREY = 128

# Subtitle-like lines in the lower band (rows 120..179 with the default band_top of 2/3).
LINE_A = dict(x0=60, x1=260, y0=145, height=10, stroke=2)
LINE_B = dict(x0=40, x1=200, y0=152, height=10, stroke=3)
LINE_C = dict(x0=101, x1=301, y0=136, height=10, stroke=2)


def blank(kind="flat"):
    """A textless background: flat grey, or a smooth horizontal gradient (~1 grey level a pixel)."""
    if kind == "flat":
        return np.full((H, W), GREY, dtype=np.uint8)
    ramp = np.linspace(40, 215, W).astype(np.uint8)
    return np.broadcast_to(ramp, (H, W)).copy()


def draw_line(img, x0, x1, y0, height=10, stroke=2):
    """Draws a text-like band in place: columns alternating black/white every `stroke` pixels."""
    cols = np.arange(x0, x1)
    values = np.where(((cols - x0) // stroke) % 2 == 0, 0, 255).astype(np.uint8)
    img[y0 : y0 + height, x0:x1] = values
    return img


def frame_with(*lines, kind="flat", square=None):
    """A frame showing `lines` (dicts for draw_line) over an optional bright square (x, y, size)."""
    img = blank(kind)
    if square is not None:
        x, y, size = square
        img[y : y + size, x : x + size] = 255
    for line in lines:
        draw_line(img, **line)
    return img


def flicker(img, rng, n=8):
    """A few random pixels forced to white: sensor noise / compression sparkle."""
    out = img.copy()
    out[rng.integers(0, H, n), rng.integers(0, W, n)] = 255
    return out


def run_ticks(frames, config, detector=None):
    """Observes `frames` at t = k * tick_s; returns the tick indices that triggered a text frame."""
    detector = detector or TextChangeDetector(config)
    return [k for k, f in enumerate(frames) if detector.observe(k * config.tick_s, f)]


def edges_of(img, config=TextSamplingConfig()):
    return edge_map(img, config.edge_threshold)


# --- TextSamplingConfig ----------------------------------------------------------------------


def test_tick_is_min_line_over_stable_ticks_plus_one():
    assert TextSamplingConfig().tick_s == pytest.approx(1.5 / 4)
    cfg = TextSamplingConfig(min_line_s=3.0, stable_ticks=5)
    assert cfg.tick_s == pytest.approx(3.0 / 6)
    assert TextSamplingConfig(min_line_s=2.0, stable_ticks=1).tick_s == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(min_line_s=0.0),
        dict(min_line_s=-1.0),
        dict(band_top=0.0),
        dict(band_top=1.0),
        dict(cell_change=0.0),
        dict(cell_change=1.01),
        dict(reuse_change=0.0),
        dict(reuse_change=1.5),
        dict(max_text_frames=-1),
        dict(stable_ticks=0),
        dict(min_gap_s=-0.1),
    ],
)
def test_config_rejects_out_of_range(kwargs):
    with pytest.raises(ValueError):
        TextSamplingConfig(**kwargs)


def test_config_accepts_boundaries():
    # Each boundary is accepted and, used by the detector and the read plan, means what it says.
    cfg = TextSamplingConfig(cell_change=1.0, reuse_change=1.0, max_text_frames=0, stable_ticks=1)
    wider = dict(LINE_A, x1=LINE_A["x1"] + 40)  # A plus a cell of its own
    frames = [blank()] * 2 + [frame_with(LINE_A)] * 3 + [frame_with(wider)] * 3 + [frame_with(LINE_B)] * 3
    # stable_ticks 1: a line is caught on the first tick it shows. cell_change 1.0: only a cell whose
    # edges are all new counts -- B, over cells where some of A's edges were, is not caught (it is
    # at the default).
    assert run_ticks(frames, cfg) == [2, 5]
    assert run_ticks(frames, TextSamplingConfig(stable_ticks=1)) == [2, 5, 8]
    # reuse_change 1.0: a frame reuses the last read unless some cell changed completely.
    moved = [edges_of(frame_with(LINE_A)), edges_of(frame_with(dict(LINE_A, y0=150))), edges_of(frame_with(LINE_B))]
    assert plan_reads(moved, cfg) == [0, 0, 2]
    assert plan_reads(moved, TextSamplingConfig()) == [0, 1, 2]
    assert cfg.text_frame_cap(3600) == 0  # max_text_frames 0: no text frames at any length
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.min_line_s = 2.0  # frozen: a config cannot drift after validation


def test_text_frame_cap_is_the_fixed_cap_or_the_per_minute_one():
    cfg = TextSamplingConfig(max_text_frames=256, text_frames_per_min=40)
    assert cfg.text_frame_cap(0) == cfg.text_frame_cap(10) == cfg.text_frame_cap(384) == 256
    assert cfg.text_frame_cap(600) == 400 and cfg.text_frame_cap(600.1) == 401
    assert TextSamplingConfig(max_text_frames=256, text_frames_per_min=0).text_frame_cap(3600) == 256
    assert TextSamplingConfig(max_text_frames=0).text_frame_cap(3600) == 0  # 0 still means none
    with pytest.raises(ValueError):
        TextSamplingConfig(text_frames_per_min=-1)
    with pytest.raises(ValueError):
        TextSamplingConfig(text_frames_per_min=float("nan"))


def test_band_rows_follow_band_top():
    assert band_rows(TextSamplingConfig()) == slice(4, 6)  # 2/3 of 6 rows
    assert band_rows(TextSamplingConfig(band_top=0.5)) == slice(3, 6)
    assert band_rows(TextSamplingConfig(band_top=0.99)) == slice(5, 6)  # never empty


# --- edge_map --------------------------------------------------------------------------------


def test_edge_map_flat_and_gradient_have_no_edges():
    assert not edge_map(blank(), 40).any()
    assert not edge_map(blank("gradient"), 40).any()


def test_edge_map_marks_a_vertical_step_only_on_the_step():
    img = np.full((H, W), 100, dtype=np.uint8)
    img[:, 160:] = 141  # step of 41 > 40
    edges = edge_map(img, 40)
    assert edges[:, 159].all()
    assert edges.sum() == H  # one column, nothing else
    img[:, 160:] = 140  # step of exactly the threshold is not an edge
    assert not edge_map(img, 40).any()


def test_edge_map_marks_a_horizontal_step_and_both_directions():
    img = np.full((H, W), 200, dtype=np.uint8)
    img[90:, :] = 20  # dark below: a downward step must count as well as an upward one
    edges = edge_map(img, 40)
    assert edges[89, :].all()
    assert edges.sum() == W


def test_edge_map_on_text_lies_on_the_strokes():
    edges = edges_of(frame_with(LINE_A))
    ys, xs = np.nonzero(edges)
    # inside the line's box, or the row / column just before it (steps into the box)
    assert ys.min() == LINE_A["y0"] - 1 and ys.max() == LINE_A["y0"] + LINE_A["height"] - 1
    assert xs.min() == LINE_A["x0"] - 1 and xs.max() == LINE_A["x1"] - 1
    # every stroke boundary on every row of the line
    assert edges[LINE_A["y0"] + 3, LINE_A["x0"] + 1 : LINE_A["x1"] - 1 : 2].all()


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((H, W), dtype=np.float32),
        np.zeros((H, W), dtype=np.int16),
        np.zeros((H, W, 3), dtype=np.uint8),
        np.zeros((W,), dtype=np.uint8),
    ],
)
def test_edge_map_rejects_non_uint8_or_wrong_ndim(bad):
    with pytest.raises(ValueError):
        edge_map(bad, 40)


# --- cell_changes ----------------------------------------------------------------------------


def test_cell_changes_identical_maps_are_zero():
    edges = edges_of(frame_with(LINE_A, LINE_C))
    share, differ = cell_changes(edges, edges.copy(), 24)
    assert share.shape == differ.shape == (6, 8)
    assert not share.any() and not differ.any()
    empty = np.zeros((H, W), dtype=bool)
    share, differ = cell_changes(empty, empty, 24)  # empty vs empty: 0, not 0/0
    assert not share.any() and not differ.any()


def test_cell_changes_disjoint_maps_share_one_in_touched_cells_only():
    a = np.zeros((H, W), dtype=bool)
    b = np.zeros((H, W), dtype=bool)
    a[5:15, 5:35] = True  # cell (0, 0): 300 px
    b[95:105, 125:155] = True  # cell (3, 3): 300 px
    share, differ = cell_changes(a, b, 24)
    assert share[0, 0] == 1.0 and share[3, 3] == 1.0
    assert differ[0, 0] == 300 and differ[3, 3] == 300
    touched = np.zeros((6, 8), dtype=bool)
    touched[0, 0] = touched[3, 3] = True
    assert not share[~touched].any() and not differ[~touched].any()


def test_cell_changes_partial_overlap_share():
    a = np.zeros((H, W), dtype=bool)
    b = np.zeros((H, W), dtype=bool)
    a[40:50, 40:80] = True  # 400 px in cell (1, 1)
    b[40:50, 40:70] = True  # 300 of them, no others
    share, differ = cell_changes(a, b, 24)
    assert differ[1, 1] == 100
    assert share[1, 1] == pytest.approx(100 / 400)


def test_cell_changes_min_px_floor():
    a = np.zeros((H, W), dtype=bool)
    b = np.zeros((H, W), dtype=bool)
    b[40, 45:50] = True  # 5 px appear in an otherwise empty cell
    share, differ = cell_changes(a, b, 24)
    assert differ[1, 1] == 5
    assert share[1, 1] == pytest.approx(5 / 24)  # a few px in an empty cell is no "100% change"
    share, _ = cell_changes(a, b, 0)  # floor of 0 behaves as 1, never divides by zero
    assert share[1, 1] == 1.0


# --- TextChangeDetector: subtitle sequences ---------------------------------------------------


@pytest.mark.parametrize("stable_ticks", [1, 2, 3, 6])
def test_each_line_triggers_once_at_its_stable_ticks_th_tick(stable_ticks):
    """blank x3, A x6, B x6, blank x4, C x6 over a gradient with flicker.

    A run starting at tick s is caught at tick s + stable_ticks - 1: its edges are first stable
    there, and after the pick they are the reference, so the rest of the run is not new.
    """
    cfg = TextSamplingConfig(stable_ticks=stable_ticks)
    rng = np.random.default_rng(7)
    runs = [((), 3), ((LINE_A,), 6), ((LINE_B,), 6), ((), 4), ((LINE_C,), 6)]
    frames, starts = [], []
    for lines, n in runs:
        starts.append(len(frames))
        frames += [flicker(frame_with(*lines, kind="gradient"), rng) for _ in range(n)]
    got = run_ticks(frames, cfg)
    expected = [starts[i] + stable_ticks - 1 for i in (1, 2, 4)]
    assert got == expected


def test_same_line_again_after_another_line_is_read_again():
    cfg = TextSamplingConfig()
    frames = [frame_with(LINE_A)] * 5 + [frame_with(LINE_B)] * 5 + [frame_with(LINE_A)] * 5
    assert run_ticks(frames, cfg) == [2, 7, 12]


def test_text_not_yet_stable_in_the_picked_frame_counts_as_read():
    """The reference is the whole picked frame: OCR reads C there although C is not stable yet."""
    cfg = TextSamplingConfig()
    frames = [frame_with(LINE_A)] * 2 + [frame_with(LINE_A, LINE_C)] * 8
    assert run_ticks(frames, cfg) == [2]


def test_line_that_only_loses_edges_triggers_nothing():
    cfg = TextSamplingConfig()
    shorter = dict(LINE_A, x1=150)  # the same line, its right half gone
    frames = [frame_with(LINE_A)] * 5 + [frame_with(shorter)] * 5 + [blank()] * 5
    assert run_ticks(frames, cfg) == [2]


def test_static_text_from_the_start_is_read_once():
    cfg = TextSamplingConfig()
    assert run_ticks([frame_with(LINE_A)] * 30, cfg) == [2]


def test_blank_and_flicker_never_trigger():
    cfg = TextSamplingConfig()
    rng = np.random.default_rng(3)
    frames = [flicker(blank(), rng, n=20) for _ in range(40)]
    assert run_ticks(frames, cfg) == []


@pytest.mark.parametrize("offset", [0.0, 0.01, 0.5, 0.99])
def test_line_shown_exactly_min_line_s_is_caught(offset):
    """A line on screen for [s, s + min_line_s) with ticks at k * tick_s, whatever its phase."""
    cfg = TextSamplingConfig()
    start = (10 + offset) * cfg.tick_s
    end = start + cfg.min_line_s
    detector = TextChangeDetector(cfg)
    picks = []
    for k in range(30):
        t = k * cfg.tick_s
        shown = start <= t < end
        if detector.observe(t, frame_with(LINE_A) if shown else blank()):
            picks.append(t)
    assert len(picks) == 1
    assert start <= picks[0] < end


@pytest.mark.parametrize("fps", [10.0, 24.0, 25.0, 30.0, 60.0])
@pytest.mark.parametrize("offset_s", [0.0, 0.013, 0.2])
def test_line_shown_min_line_s_is_caught_through_wants(fps, offset_s):
    """Same, fed as the decoder does: every frame offered, analysed only when `wants` says so (slow
    ticks alone: quick lines off)."""
    cfg = TextSamplingConfig(quick_line_s=0)
    start = 2.0 + offset_s
    end = start + cfg.min_line_s
    detector = TextChangeDetector(cfg)
    picks, analysed = [], []
    for index in range(int(6 * fps)):
        t = index / fps
        if not detector.wants(t):
            continue
        analysed.append(t)
        if detector.observe(t, frame_with(LINE_A) if start <= t < end else blank()):
            picks.append(t)
    assert len(picks) == 1 and start <= picks[0] < end
    gaps = np.diff(analysed)
    assert gaps.min() >= cfg.tick_s - 1e-6 and gaps.max() < cfg.tick_s + 1 / fps + 1e-6


def test_flash_shorter_than_stable_ticks_is_not_read():
    """A line seen on fewer than stable_ticks ticks is not stable text, however sharp it is."""
    cfg = TextSamplingConfig()
    frames = [blank()] * 5 + [frame_with(LINE_A)] * (cfg.stable_ticks - 1) + [blank()] * 5
    assert run_ticks(frames, cfg) == []
    frames = [blank()] * 5 + [frame_with(LINE_A)] * cfg.stable_ticks + [blank()] * 5
    assert run_ticks(frames, cfg) == [5 + cfg.stable_ticks - 1]


# --- motion ----------------------------------------------------------------------------------


def moving_square(k, size=16):
    """A bright square moving diagonally a few pixels per tick, down into the subtitle band."""
    return (20 + 4 * k, 30 + 3 * k, size)


def test_moving_square_alone_never_triggers():
    cfg = TextSamplingConfig()
    frames = [frame_with(square=moving_square(k)) for k in range(40)]
    assert frames[-1][140:, :].max() == 255  # it does reach the band
    assert run_ticks(frames, cfg) == []
    # control: the same square standing still is a stable pattern and is read once
    still = [frame_with(square=moving_square(35, size=30)) for _ in range(10)]
    assert run_ticks(still, cfg) == [2]


def test_moving_square_behind_static_line_triggers_once_for_the_line():
    cfg = TextSamplingConfig()
    frames = [
        frame_with(*((LINE_A,) if k >= 10 else ()), square=moving_square(k)) for k in range(40)
    ]
    assert run_ticks(frames, cfg) == [10 + cfg.stable_ticks - 1]


# --- read_elsewhere --------------------------------------------------------------------------


def test_read_elsewhere_makes_its_text_old():
    cfg = TextSamplingConfig()
    frames = [frame_with(LINE_A)] * 6 + [frame_with(LINE_B)] * 6
    assert run_ticks(frames, cfg) == [2, 8]  # control: A is new without read_elsewhere

    detector = TextChangeDetector(cfg)
    edges = edges_of(frame_with(LINE_A), cfg)
    detector.read_elsewhere(edges)
    edges[:] = False  # the detector keeps its own copy
    assert run_ticks(frames, cfg, detector) == [8]


def test_read_elsewhere_mid_stream():
    cfg = TextSamplingConfig()
    detector = TextChangeDetector(cfg)
    got = run_ticks([frame_with(LINE_A)] * 6, cfg, detector)
    assert got == [2]
    detector.read_elsewhere(edges_of(frame_with(LINE_C), cfg))  # a keyframe showing C is read
    frames = [frame_with(LINE_C)] * 6 + [frame_with(LINE_A)] * 6
    later = [k for k, f in enumerate(frames, start=6) if detector.observe(k * cfg.tick_s, f)]
    assert later == [14]  # C is not new; A is new again relative to the keyframe with C


# --- where text appears: band, whole frame, cell thresholds -----------------------------------


def upper_line(cells):
    """A line at y 38..49 (grid row 1, above the band) spanning grid columns [first, last]."""
    first, last = cells
    return dict(x0=first * CELL_W + 4, x1=(last + 1) * CELL_W - 4, y0=38, height=12, stroke=2)


@pytest.mark.parametrize(
    "cells, triggers", [((1, 1), False), ((1, 2), False), ((1, 3), True), ((0, 7), True)]
)
def test_upper_text_needs_frame_cells_cells(cells, triggers):
    cfg = TextSamplingConfig()  # frame_cells = 3
    frames = [blank()] * 3 + [frame_with(upper_line(cells))] * 6
    assert run_ticks(frames, cfg) == ([5] if triggers else [])


def test_frame_cells_setting_is_honoured():
    frames = [blank()] * 3 + [frame_with(upper_line((1, 2)))] * 6
    assert run_ticks(frames, TextSamplingConfig(frame_cells=2)) == [5]
    assert run_ticks(frames, TextSamplingConfig(frame_cells=3)) == []


def test_one_cell_is_enough_in_the_band_only():
    """The same small patch triggers in grid row 4 (band), not in row 3 -- unless the band grows."""
    def patch(row):
        return dict(x0=125, x1=155, y0=row * CELL_H + 8, height=12, stroke=2)

    above = [blank()] * 3 + [frame_with(patch(3))] * 5
    inside = [blank()] * 3 + [frame_with(patch(4))] * 5
    assert run_ticks(inside, TextSamplingConfig()) == [5]
    assert run_ticks(above, TextSamplingConfig()) == []
    assert run_ticks(above, TextSamplingConfig(band_top=0.5)) == [5]


def test_min_changed_px_ignores_a_few_new_edges():
    # a 4x4 stroke patch: 3 boundaries x 4 rows + its top and bottom borders = 18 edge px
    tiny = dict(x0=130, x1=134, y0=160, height=4, stroke=2)
    n_edges = int(edges_of(frame_with(tiny)).sum())
    assert 8 < n_edges < 24
    frames = [blank()] * 3 + [frame_with(tiny)] * 5
    assert run_ticks(frames, TextSamplingConfig()) == []  # min_changed_px = 24
    assert run_ticks(frames, TextSamplingConfig(min_changed_px=8)) == [5]


def test_cell_change_is_a_share_of_the_cells_stable_edges():
    """A busy cell already read gains a few strokes: enough px, but a small share of the cell."""
    busy = dict(x0=122, x1=158, y0=152, height=16, stroke=2)  # band cell (5, 3)
    extra = dict(x0=130, x1=150, y0=171, height=6, stroke=2)  # same cell, new strokes below it
    before = frame_with(busy)
    after = frame_with(busy, extra)
    ref, now = edges_of(before), edges_of(after)
    new = int((now & ~ref).sum())
    share = new / int(now[150:180, 120:160].sum())
    assert new >= 24 and 0.2 < share < 0.5
    for cell_change, expected in ((0.5, []), (0.2, [2])):
        cfg = TextSamplingConfig(cell_change=cell_change)
        detector = TextChangeDetector(cfg)
        detector.read_elsewhere(ref)
        assert run_ticks([after] * 5, cfg, detector) == expected


# --- min_gap_s and wants ---------------------------------------------------------------------


def test_min_gap_delays_a_second_trigger_to_the_first_tick_after_the_gap():
    cfg = TextSamplingConfig(min_gap_s=3.5 * TextSamplingConfig().tick_s)
    frames = [frame_with(LINE_A)] * 3 + [frame_with(LINE_B)] * 9
    # A at tick 2; B is stable at tick 5 (3 ticks later, inside the gap) and read at tick 6
    assert run_ticks(frames, cfg) == [2, 6]
    assert run_ticks(frames, TextSamplingConfig()) == [2, 5]  # control: no gap


def test_min_gap_does_not_hide_a_change_that_settles_after_it():
    cfg = TextSamplingConfig(min_gap_s=10 * TextSamplingConfig().tick_s)
    frames = [frame_with(LINE_A)] * 3 + [frame_with(LINE_B)] * 20
    assert run_ticks(frames, cfg) == [2, 12]


def test_wants_respects_tick_spacing():
    cfg = TextSamplingConfig(quick_line_s=0)
    detector = TextChangeDetector(cfg)
    assert detector.wants(0.0)
    detector.observe(0.0, blank())
    assert not detector.wants(0.0)
    assert not detector.wants(cfg.tick_s * 0.99)
    assert detector.wants(cfg.tick_s)
    detector.observe(0.4, blank())  # the next tick counts from the frame actually analysed
    assert not detector.wants(0.4 + cfg.tick_s * 0.99)
    assert detector.wants(0.4 + cfg.tick_s)


def test_disabled_never_wants():
    cfg = TextSamplingConfig(enabled=False)
    detector = TextChangeDetector(cfg)
    assert not any(detector.wants(k * 0.1) for k in range(100))


# --- plan_reads ------------------------------------------------------------------------------


def test_plan_reads_identical_maps_reuse_the_first():
    edges = edges_of(frame_with(LINE_A))
    assert plan_reads([edges.copy() for _ in range(5)], TextSamplingConfig()) == [0, 0, 0, 0, 0]
    assert plan_reads([], TextSamplingConfig()) == []


def test_plan_reads_changed_cell_is_read():
    a, b = edges_of(frame_with(LINE_A)), edges_of(frame_with(LINE_B))
    assert plan_reads([a, a, b, b, b], TextSamplingConfig()) == [0, 0, 2, 2, 2]


def test_plan_reads_compares_with_the_new_last_read():
    a, b = edges_of(frame_with(LINE_A)), edges_of(frame_with(LINE_B))
    # against the first frame, the 3rd would be read and the 4th reused; against the last read
    # (frame 1), the 3rd reuses 1 and the 4th (A again) is read
    assert plan_reads([a, b, b, a, a], TextSamplingConfig()) == [0, 1, 1, 3, 3]


def test_plan_reads_compares_with_the_last_read_not_the_previous_frame():
    """A line growing a little per frame: small steps, but the drift since the last read adds up."""
    cfg = TextSamplingConfig()
    maps = [edges_of(frame_with(dict(LINE_A, x0=40, x1=40 + 4 * k))) for k in range(1, 11)]
    plan = plan_reads(maps, cfg)
    for i in range(1, len(maps)):  # neighbours never differ enough on their own
        share, differ = cell_changes(maps[i], maps[i - 1], cfg.min_changed_px)
        assert not ((share >= cfg.reuse_change) & (differ >= cfg.min_changed_px)).any()
    assert plan[0] == 0
    assert 0 < len(set(plan)) - 1 < len(maps) - 1  # some frames read again, not all
    for i, j in enumerate(plan):
        assert j <= i and plan[j] == j  # every reuse points at a frame that was read
        if j == i and i > 0:  # a read happened because of drift since the previous read
            previous_read = max(p for p in plan[:i])
            share, differ = cell_changes(maps[i], maps[previous_read], cfg.min_changed_px)
            assert ((share >= cfg.reuse_change) & (differ >= cfg.min_changed_px)).any()


def test_plan_reads_small_flicker_reuses():
    cfg = TextSamplingConfig()
    base = edges_of(frame_with(LINE_A))
    noisy = base.copy()
    noisy[40, 45:55] = True  # 10 px in an empty cell: a share of 10/24 > reuse_change, too few px
    share, differ = cell_changes(noisy, base, cfg.min_changed_px)
    assert share[1, 1] >= cfg.reuse_change and differ[1, 1] < cfg.min_changed_px
    assert plan_reads([base, noisy, base, noisy], cfg) == [0, 0, 0, 0]


# --- thin_evenly -----------------------------------------------------------------------------


def test_thin_evenly_under_limit_returns_all():
    times = [0.5 * k for k in range(10)]
    assert thin_evenly(times, 10) == list(range(10))
    assert thin_evenly(times, 50) == list(range(10))
    assert thin_evenly([], 0) == []


@pytest.mark.parametrize("n, limit", [(10, 4), (100, 7), (5, 4), (257, 256), (1000, 2)])
def test_thin_evenly_keeps_ends_sorted_unique_within_limit(n, limit):
    times = [0.37 * k for k in range(n)]
    picks = thin_evenly(times, limit)
    assert picks == sorted(set(picks))
    assert picks[0] == 0 and picks[-1] == n - 1
    assert 2 <= len(picks) <= limit
    assert len(picks) == limit  # limit < n: the evenly spaced positions never round together
    gaps = np.diff(picks)
    assert gaps.max() - gaps.min() <= 1  # evenly spread


def test_thin_evenly_zero_limit_is_empty():
    assert thin_evenly([0.0, 1.0, 2.0], 0) == []


# --- quick lines -----------------------------------------------------------------------------


def footage(k, seed=5):
    """A busy, footage-like background at quick tick k: a smooth random grey field with sharp-edged
    blobs, panning diagonally (3 px right, 2 px down a tick), plus the moving bright square."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 226, (2 * H // 20 + 2, 2 * W // 20 + 2))
    field = np.kron(coarse, np.ones((20, 20)))
    # box-blur the blocks into smooth shading, then add hard-edged dark blobs (objects)
    kernel = np.ones(9) / 9
    field = np.apply_along_axis(np.convolve, 0, field, kernel, mode="same")
    field = np.apply_along_axis(np.convolve, 1, field, kernel, mode="same")
    yy, xx = np.mgrid[: field.shape[0], : field.shape[1]]
    for cy, cx, r in rng.uniform(0, 1, (12, 3)) * [field.shape[0], field.shape[1], 25]:
        field[(yy - cy) ** 2 + (xx - cx) ** 2 < (r + 6) ** 2] = 20
    x, y = (3 * k) % W, (2 * k) % H
    img = np.ascontiguousarray(field[y : y + H, x : x + W].astype(np.uint8))
    sx, sy, size = moving_square(k % 30)
    img[sy : sy + size, sx : sx + size] = 255
    return img


def quick_feed(cfg, fps, shown, duration_s, background=None):
    """Offers every frame of a `fps` video to a detector as the decoder does; `shown(t)` gives the
    lines on screen at t. Returns the analysed times and the times that triggered."""
    detector = TextChangeDetector(cfg)
    analysed, picks = [], []
    for index in range(int(duration_s * fps)):
        t = index / fps
        if not detector.wants(t):
            continue
        analysed.append(t)
        img = background(len(analysed)) if background is not None else blank()
        for line in shown(t):
            draw_line(img, **line)
        if detector.observe(t, img):
            picks.append(t)
    return analysed, picks


@pytest.mark.parametrize("fps", [10.0, 24.0, 25.0, 30.0, 60.0])
@pytest.mark.parametrize("offset_s", [0.0, 0.013, 0.05])
def test_line_shown_quick_line_s_is_caught_once(fps, offset_s):
    """A lower-band line on screen for quick_line_s (0.3 s), whatever the frame rate and phase, is
    picked once while it is shown. (With slow ticks alone, stable over 3 ticks of 0.375 s, it is not.)"""
    cfg = TextSamplingConfig()
    start = 2.0 + offset_s
    end = start + cfg.quick_line_s
    shown = lambda t: [LINE_A] if start <= t < end else []  # noqa: E731
    analysed, picks = quick_feed(cfg, fps, shown, 4.0)
    assert len(picks) == 1 and start <= picks[0] < end
    assert np.diff(analysed).max() < cfg.quick_tick_s + 1 / fps + 1e-6
    _, slow_picks = quick_feed(TextSamplingConfig(quick_line_s=0), fps, shown, 4.0)
    assert slow_picks == []


def test_quick_lines_back_to_back_are_each_caught_once():
    """Lines of 0.3-0.6 s following one another at one place (no gap), then a long one: one pick each,
    inside its own interval."""
    cfg = TextSamplingConfig()
    spans = [(1.0, 1.3, LINE_A), (1.3, 1.8, LINE_B), (1.8, 2.2, LINE_C), (2.2, 2.8, LINE_A),
             (2.8, 5.0, LINE_B)]
    shown = lambda t: [line for a, b, line in spans if a <= t < b]  # noqa: E731
    _, picks = quick_feed(cfg, 25.0, shown, 6.0)
    assert len(picks) == len(spans)
    for (a, b, _), t in zip(spans, picks):
        assert a <= t < b


def test_quick_line_over_moving_footage_is_caught_and_footage_alone_is_not():
    cfg = TextSamplingConfig()
    spans = [(1.0, 1.32, LINE_A), (2.0, 2.4, LINE_B), (3.0, 3.6, LINE_C)]
    shown = lambda t: [line for a, b, line in spans if a <= t < b]  # noqa: E731
    _, alone = quick_feed(cfg, 25.0, lambda t: [], 4.0, background=footage)
    assert alone == []
    _, picks = quick_feed(cfg, 25.0, shown, 4.0, background=footage)
    assert len(picks) == len(spans)
    for (a, b, _), t in zip(spans, picks):
        assert a <= t < b


def test_quick_line_replacing_another_across_its_strokes_is_caught():
    """A short line replacing a long one at its place: most of the new strokes fall where the old
    line had edges, so fewer than quick_min_px edges are new (a 0.32 s caption was lost so). The
    band changed in one step and then held still: that is read. A line that just goes is not."""
    short = dict(x0=60, x1=70, y0=145, height=11, stroke=3)
    spans = [(1.0, 2.0, LINE_A), (2.0, 2.32, short), (3.0, 4.0, LINE_A)]  # the last one just goes
    shown = lambda t: [line for a, b, line in spans if a <= t < b]  # noqa: E731
    _, picks = quick_feed(TextSamplingConfig(), 25.0, shown, 5.0)
    assert len(picks) == 3, picks
    for (a, b, _), t in zip(spans, picks):
        assert a <= t < b
    _, without = quick_feed(TextSamplingConfig(quick_replace=False), 25.0, shown, 5.0)
    assert not any(2.0 <= t < 2.32 for t in without), without
    # over moving footage the background changes a little every tick: the same step is still caught
    _, picks = quick_feed(TextSamplingConfig(), 25.0, shown, 5.0, background=footage)
    assert any(2.0 <= t < 2.32 for t in picks), picks


def test_flash_on_one_quick_tick_is_not_read():
    """Appeared, but not held on the next quick tick: not a line (a flash, a flying object)."""
    cfg = TextSamplingConfig()
    tick = cfg.quick_tick_s
    shown = lambda t: [LINE_A] if 1.0 <= t < 1.0 + tick else []  # noqa: E731
    _, picks = quick_feed(cfg, 1 / tick, shown, 2.0)
    assert picks == []


def test_quick_step_needs_consecutive_quick_ticks():
    """Frames further apart than two quick ticks (sparse frames) cannot show a step: the slow rule
    (stable over stable_ticks ticks) alone decides then."""
    cfg = TextSamplingConfig()
    frames = [blank()] * 3 + [frame_with(LINE_A)] * 2 + [blank()] * 3
    assert run_ticks(frames, cfg) == []  # ticks tick_s apart: two sightings are no stable line
    frames = [blank()] * 3 + [frame_with(LINE_A)] * 3 + [blank()] * 3
    assert run_ticks(frames, cfg) == [5]


def test_quick_line_text_already_read_is_not_new():
    """A line that a keyframe read (read_elsewhere) does not trigger when it appears to the quick rule."""
    cfg = TextSamplingConfig()
    detector = TextChangeDetector(cfg)
    detector.read_elsewhere(edges_of(frame_with(LINE_A)))
    tick = cfg.quick_tick_s
    picks = [k for k in range(20) if detector.observe(k * tick, frame_with(LINE_A) if 5 <= k < 9 else blank())]
    assert picks == []


def test_quick_settings_are_validated():
    for kwargs in (dict(quick_line_s=-0.1), dict(quick_line_s=float("nan")), dict(quick_edge_threshold=0),
                   dict(quick_edge_threshold=255), dict(quick_min_px=1), dict(quick_still=1.0),
                   dict(quick_still=-0.1)):
        with pytest.raises(ValueError):
            TextSamplingConfig(**kwargs)
    assert TextSamplingConfig(quick_line_s=0).quick_tick_s == 0
    assert TextSamplingConfig().quick_tick_s == pytest.approx(0.1)


def test_quick_band_read_leaves_new_text_above_the_band_to_the_slow_rule():
    """A slide that changes whole: the quick rule reads its band at once; the text above the band was
    not read, so the slow rule still reads the whole frame once it is stable."""
    cfg = TextSamplingConfig()
    upper = [dict(x0=20, x1=300, y0=20 + 25 * k, height=10, stroke=2) for k in range(4)]
    tick = cfg.quick_tick_s
    detector = TextChangeDetector(cfg)
    picks = []
    for k in range(40):
        img = frame_with(*upper, LINE_A) if k >= 10 else blank()
        if detector.observe(k * tick, img):
            picks.append((k, detector.last_trigger))
    assert picks[0] == (11, "band")  # appeared at tick 10, held at 11
    assert len(picks) == 2 and picks[1][1] == "frame" and picks[1][0] > 11


def test_plan_reads_band_read_stands_for_the_frame_before_above_the_band():
    """A band-only read keeps the lines above the band from the frame read before it: a later frame
    whose upper part differs from *that* (though not from the band frame itself) is read."""
    cfg = TextSamplingConfig()
    upper = dict(x0=20, x1=300, y0=30, height=10, stroke=2)
    maps = [edges_of(blank()), edges_of(frame_with(upper, LINE_A)), edges_of(frame_with(upper, LINE_A))]
    assert plan_reads(maps, cfg) == [0, 1, 1]
    assert plan_reads(maps, cfg, [False, False, False]) == [0, 1, 1]
    assert plan_reads(maps, cfg, [False, True, False]) == [0, 1, 2]  # frame 1 read only its band
    # a band frame whose upper part did not change is enough for the frames after it
    maps = [edges_of(frame_with(upper)), edges_of(frame_with(upper, LINE_A)), edges_of(frame_with(upper, LINE_A))]
    assert plan_reads(maps, cfg, [False, True, False]) == [0, 1, 1]


def test_same_band_looks_at_the_band_only():
    cfg = TextSamplingConfig()
    upper = dict(x0=20, x1=300, y0=30, height=10, stroke=2)
    a, b = edges_of(frame_with(LINE_A)), edges_of(frame_with(upper, LINE_A))
    assert same_band(a, b, cfg)  # only the upper part differs
    assert not same_band(a, edges_of(frame_with(LINE_B)), cfg)
    assert not same_band(a, edges_of(blank()), cfg)
