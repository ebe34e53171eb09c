"""Which frames OCR reads: text-change triggers and result reuse. Pure numpy, no Beam, no decoder.

Consumes small greyscale frames (uint8 [TEXT_MAP_H, TEXT_MAP_W]) at the decoder's analysis ticks.
Produces
  * `TextChangeDetector.observe(...)`: True when the frame shows text the last chosen text frame
    did not -- so a subtitle line on screen for `min_line_s` or more is always read, even when no
    CLIP keyframe falls on it;
  * `plan_reads(...)`: for the frames OCR will see (CLIP keyframes plus text frames), which are
    read and which reuse the result of the last frame read because their text barely changed.

The signal is an edge map: pixels whose horizontal or vertical grey-level step exceeds
`edge_threshold` (text strokes are sharp, high-contrast steps). Two refinements make it a *text*
signal rather than a motion signal:
  * "stable" edges: an edge present at `stable_ticks` consecutive analysis ticks. Burned-in text stands still
    while it is shown; moving content mostly does not, so motion behind subtitles does not trigger.
  * cells: the map is cut into a grid and compared cell by cell. A subtitle change touches a few
    cells strongly; comparing whole frames would drown it in a busy background.
A cell shows new text when at least `cell_change` of its stable edges (and `min_changed_px`
pixels) were not edges in the last frame chosen for OCR. A text frame is triggered when a cell of
the lower band shows new text (subtitles), or when `frame_cells` cells anywhere do (a title card
or a sign that appears mid-shot). Edges that merely vanish (a line went away) trigger nothing.
Quick ticks (`quick_tick_s` apart) catch lines shorter than `min_line_s` in the lower band: a window
of 2x2 band cells whose sharp edges (`quick_edge_threshold`) appeared at one tick and held at the
next, `quick_min_px` of them not seen in the last frame chosen -- or half as many when the band
changed in one step (twice `quick_min_px` edges appeared or vanished) and then held still, as when
one caption replaces another and the new strokes cross the old ones.
A text frame triggered by the band alone is a "band" frame: OCR reads only its lower part (from a
little above `band_top`) and takes the rest of its lines from the frame read before it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

TEXT_MAP_W, TEXT_MAP_H = 320, 180  # greyscale analysis size: a 1080p subtitle stays ~5 px tall
_GRID_COLS, _GRID_ROWS = 8, 6  # cells of 40x30 analysis pixels


@dataclasses.dataclass(frozen=True)
class TextSamplingConfig:
    """How frames are chosen for OCR beyond the CLIP keyframes, and when a result is reused."""

    enabled: bool = True
    min_line_s: float = 1.5  # a line shown at least this long is read (analysed every min_line_s / 4)
    edge_threshold: int = 40  # grey-level step (0-255) that counts as an edge
    band_top: float = 2.0 / 3.0  # the lower band, where subtitles live, starts here (fraction of height)
    cell_change: float = 0.2  # share of a cell's stable edges that must be new for it to show new text
    min_changed_px: int = 24  # ... and at least this many edge pixels (ignores flicker on a few pixels)
    frame_cells: int = 3  # outside the band, this many changed cells trigger a text frame
    stable_ticks: int = 3  # an edge is "stable" when present on this many consecutive ticks
    min_gap_s: float = 0.0  # at most one text frame per this interval (0: one per tick at most)
    quick_line_s: float = 0.3  # a lower-band line shown at least this long is read too (0: off)
    quick_edge_threshold: int = 60  # grey-level step of a quick line's strokes (outlined captions)
    quick_min_px: int = 40  # new edge pixels a window of 2x2 band cells needs on a quick step
    # ... or half as many when the line replaced another there: the window's edges changed by twice
    # quick_min_px in one step (appeared or vanished), then by at most this share of that a tick later
    quick_replace: bool = True
    quick_still: float = 0.25
    max_text_frames: int = 256  # per video, whatever its length; more are thinned evenly in time
    # ... or this many per minute of video when that is more: 120, one frame for each line of a video
    # whose captions change every half second, back to back (0: the fixed cap only)
    text_frames_per_min: float = 120.0
    reuse_change: float = 0.35  # a frame whose every cell changed less than this reuses the last read
    crop_band: bool = True  # read only the lower band of "band" text frames (the rest is unchanged)

    def __post_init__(self):
        if self.min_line_s <= 0:
            raise ValueError(f"min_line_s must be > 0, got {self.min_line_s}")
        if not 0 < self.band_top < 1:
            raise ValueError(f"band_top must be in (0, 1), got {self.band_top}")
        if not 0 < self.cell_change <= 1 or not 0 < self.reuse_change <= 1:
            raise ValueError("cell_change and reuse_change must be in (0, 1]")
        if self.max_text_frames < 0:
            raise ValueError(f"max_text_frames must be >= 0, got {self.max_text_frames}")
        if not self.text_frames_per_min >= 0:  # also refuses NaN
            raise ValueError(f"text_frames_per_min must be >= 0, got {self.text_frames_per_min}")
        if self.min_changed_px < 1 or self.frame_cells < 1:
            raise ValueError("min_changed_px and frame_cells must be >= 1 (0 would call a blank cell new text)")
        if not 0 < self.edge_threshold < 255:
            raise ValueError(f"edge_threshold must be in 1..254, got {self.edge_threshold}")
        if self.stable_ticks < 1:
            raise ValueError(f"stable_ticks must be >= 1, got {self.stable_ticks}")
        if self.min_gap_s < 0:
            raise ValueError(f"min_gap_s must be >= 0, got {self.min_gap_s}")
        if not self.quick_line_s >= 0:
            raise ValueError(f"quick_line_s must be >= 0, got {self.quick_line_s}")
        if not 0 < self.quick_edge_threshold < 255:
            raise ValueError(f"quick_edge_threshold must be in 1..254, got {self.quick_edge_threshold}")
        if self.quick_min_px < 2:
            raise ValueError(f"quick_min_px must be >= 2, got {self.quick_min_px}")
        if not 0 <= self.quick_still < 1:
            raise ValueError(f"quick_still must be in [0, 1), got {self.quick_still}")

    def text_frame_cap(self, duration_s: float) -> int:
        """Text frames kept for a video (or its first `duration_s` seconds): the fixed cap, or the
        per-minute one when that is larger. A 0 fixed cap turns text frames off at any length."""
        if self.max_text_frames == 0:
            return 0
        return max(self.max_text_frames, math.ceil(self.text_frames_per_min * max(duration_s, 0.0) / 60.0))

    @property
    def tick_s(self) -> float:
        """Analysis interval: a `min_line_s` line is seen on `stable_ticks` consecutive ticks, one to spare."""
        return self.min_line_s / (self.stable_ticks + 1)

    @property
    def quick_tick_s(self) -> float:
        """Quick-line interval: a `quick_line_s` line is on two consecutive quick ticks, one to spare
        (0 when quick lines are off)."""
        return self.quick_line_s / 3.0


def edge_map(gray: np.ndarray, threshold: int) -> np.ndarray:
    """Bool [h, w]: pixels with a grey-level step above `threshold` to their right or below."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected uint8 [h, w], got {gray.dtype} {gray.shape}")
    g = gray.astype(np.int16)
    edges = np.zeros(g.shape, dtype=bool)
    edges[:, :-1] |= np.abs(g[:, 1:] - g[:, :-1]) > threshold
    edges[:-1, :] |= np.abs(g[1:, :] - g[:-1, :]) > threshold
    return edges


def _cell_sums(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    ch, cw = h // _GRID_ROWS, w // _GRID_COLS
    cropped = mask[: ch * _GRID_ROWS, : cw * _GRID_COLS]
    return cropped.reshape(_GRID_ROWS, ch, _GRID_COLS, cw).sum(axis=(1, 3))


def _band_cell_sums(mask: np.ndarray) -> np.ndarray:
    """Per grid cell of the rows of `mask` (the lower rows of a map, starting on a cell boundary)."""
    ch, cw = TEXT_MAP_H // _GRID_ROWS, TEXT_MAP_W // _GRID_COLS
    rows = mask.shape[0] // ch
    return mask[: rows * ch, : cw * _GRID_COLS].reshape(rows, ch, _GRID_COLS, cw).sum(axis=(1, 3))


def _windows(sums: np.ndarray) -> np.ndarray:
    """Sums over every 2x2 block of adjacent cells: a short line straddling cells counts whole."""
    if sums.shape[0] < 2:
        return sums[:, :-1] + sums[:, 1:]
    return sums[:-1, :-1] + sums[1:, :-1] + sums[:-1, 1:] + sums[1:, 1:]


def cell_changes(a: np.ndarray, b: np.ndarray, min_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Per grid cell: (share of edges that differ between maps a and b, number that differ).

    The share is |a xor b| / max(|a or b|, min_px) -- an empty cell compared with an empty cell is 0.
    """
    differ = _cell_sums(a ^ b)
    union = _cell_sums(a | b)
    return differ / np.maximum(union, max(min_px, 1)), differ


def band_rows(config: TextSamplingConfig) -> slice:
    first = min(int(np.floor(config.band_top * _GRID_ROWS)), _GRID_ROWS - 1)
    return slice(first, _GRID_ROWS)


class TextChangeDetector:
    """Streams analysis ticks in time order; says which frames show new text.

    Call `wants(t)` per decoded frame (cheap), then `observe(t, gray)` on the ones it wants, with
    the frame as uint8 grey [TEXT_MAP_H, TEXT_MAP_W]. `observe` returns True for a text frame.
    Slow ticks (`tick_s` apart) look for stable new text anywhere; quick ticks (`quick_tick_s`
    apart) for a line that appeared in the lower band and held (see the module doc).
    """

    def __init__(self, config: TextSamplingConfig):
        self._config = config
        self._next_tick = 0.0
        self._next_quick = 0.0
        self._history: list[np.ndarray] = []  # edge maps of the last `stable_ticks - 1` ticks
        self._quick_history: list[tuple[float, np.ndarray]] = []  # (t, band edges) of the last quick ticks
        self._ref: np.ndarray = np.zeros((TEXT_MAP_H, TEXT_MAP_W), dtype=bool)
        self._last_pick_t: float | None = None
        self._band = band_rows(config)
        self._band_px = self._band.start * (TEXT_MAP_H // _GRID_ROWS)  # first map row of the band's cells
        self.last_trigger: str | None = None  # after a True observe(): "band" or "frame"
        self._last_gray: np.ndarray | None = None
        self._last_edges: np.ndarray | None = None

    @property
    def last_edges(self) -> np.ndarray | None:
        """The edge map of the frame observe() saw last (made on demand: a quick tick that finds
        nothing needs only the band's)."""
        if self._last_edges is None and self._last_gray is not None:
            self._last_edges = edge_map(self._last_gray, self._config.edge_threshold)
        return self._last_edges

    def wants(self, timestamp_s: float) -> bool:
        cfg = self._config
        if not cfg.enabled:
            return False
        return timestamp_s >= self._next_tick or (cfg.quick_line_s > 0 and timestamp_s >= self._next_quick)

    def read_elsewhere(self, edges: np.ndarray) -> None:
        """Another frame (a CLIP keyframe) will be read too: its text is not new to later frames."""
        self._ref = edges.copy()

    def observe(self, timestamp_s: float, gray: np.ndarray) -> bool:
        cfg = self._config
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"expected uint8 [h, w], got {gray.dtype} {gray.shape}")
        self._last_gray, self._last_edges = gray, None
        trigger = None
        if timestamp_s >= self._next_tick:
            self._next_tick = timestamp_s + cfg.tick_s - 1e-9
            trigger = self._slow_tick(self.last_edges)
        quick_only = False
        if cfg.quick_line_s > 0 and timestamp_s >= self._next_quick:
            self._next_quick = timestamp_s + cfg.quick_tick_s - 1e-9
            quick = self._quick_tick(timestamp_s, gray)
            quick_only = trigger is None and quick is not None
            trigger = trigger or quick
        if trigger is None:
            return False
        if self._last_pick_t is not None and timestamp_s - self._last_pick_t < cfg.min_gap_s:
            return False  # keep the old reference: the next tick outside the gap still sees the change
        self.last_trigger = trigger
        if trigger == "band" and quick_only:
            # Only the band is read: the text above it is what was read before. A slide that changed
            # whole is then still new above the band, and the slow rule reads it once it is stable.
            self._ref = self._ref.copy()
            self._ref[self._band_px:] = self.last_edges[self._band_px:]
        else:
            self._ref = self.last_edges
        self._last_pick_t = timestamp_s
        return True

    def _slow_tick(self, edges: np.ndarray) -> str | None:
        """Stable new text: "band" (lower band only), "frame" or None."""
        cfg = self._config
        history = self._history
        self._history = (history + [edges])[-(cfg.stable_ticks - 1):] if cfg.stable_ticks > 1 else []
        if len(history) < cfg.stable_ticks - 1:
            return None
        stable = edges.copy()
        for earlier in history:
            stable &= earlier
        new = _cell_sums(stable & ~self._ref)
        fresh = (new >= cfg.min_changed_px) & (new >= cfg.cell_change * _cell_sums(stable))
        outside = int(fresh.sum()) - int(fresh[self._band].sum())
        if not (bool(fresh[self._band].any()) or int(fresh.sum()) >= cfg.frame_cells):
            return None
        # "band": new text in the lower band only, so OCR need read just the band of this frame.
        return "band" if outside < cfg.frame_cells else "frame"

    def _quick_tick(self, timestamp_s: float, gray: np.ndarray) -> str | None:
        """A lower-band line that appeared one quick tick ago and held: "band", else None."""
        cfg = self._config
        band = edge_map(gray[self._band_px:], cfg.quick_edge_threshold)
        history = self._quick_history
        if history and timestamp_s - history[-1][0] > 2 * cfg.quick_tick_s:
            history = []  # a gap (sparse frames, a VFR pause): a step can no longer be told from a drift
        history = self._quick_history = (history + [(timestamp_s, band)])[-3:]
        if len(history) < 3:
            return None
        before, appeared = history[0][1], history[1][1]
        held = appeared & band
        new = _windows(_band_cell_sums(held & ~before & ~self._ref[self._band_px:]))
        fresh = new >= cfg.quick_min_px
        if cfg.quick_replace:
            # A line replacing another at its place: where their strokes cross, the new line's edges
            # were edges before too and do not count as new. The band then changed in one step (edges
            # appeared and vanished) and held still after it; motion changes it a little every tick.
            step = _windows(_band_cell_sums(before ^ appeared))
            after = _windows(_band_cell_sums(appeared ^ band))
            fresh |= ((new >= cfg.quick_min_px // 2) & (step >= 2 * cfg.quick_min_px)
                      & (after <= cfg.quick_still * step))
        fresh &= new >= cfg.cell_change * _windows(_band_cell_sums(held))
        return "band" if fresh.any() else None


def same_band(a: np.ndarray, b: np.ndarray, config: TextSamplingConfig) -> bool:
    """True when no cell of the lower band changed by `reuse_change` (and `min_changed_px`) between
    edge maps a and b: both frames show the same subtitle."""
    share, differ = cell_changes(a, b, config.min_changed_px)
    changed = (share >= config.reuse_change) & (differ >= config.min_changed_px)
    return not changed[band_rows(config)].any()


BAND_CROP_MARGIN = 0.08  # a band read starts this much (of the height) above band_top: a line straddling it is read whole


def band_crop_top(config: TextSamplingConfig) -> float:
    """Where a band-only read starts, as a fraction of the frame height."""
    return max(0.0, config.band_top - BAND_CROP_MARGIN)


def plan_reads(edge_maps: list[np.ndarray], config: TextSamplingConfig,
               band_only: list[bool] | None = None) -> list[int]:
    """For frames in time order (their full edge maps), the position each takes its OCR from.

    `result[i] == i`: frame i is read. `result[i] == j < i`: frame i reuses frame j's lines, because
    no grid cell's edges changed by `reuse_change` or more since frame j (the last frame read).
    `band_only[i]`: frame i, when read, is read from `band_crop_top` down and keeps the lines above
    from the frame read before it; what it then stands for is that frame's map above, its own below.
    """
    plan: list[int] = []
    last_read: int | None = None
    seen_map: np.ndarray | None = None  # what the last read frame's lines show
    for i, edges in enumerate(edge_maps):
        if last_read is not None:
            share, differ = cell_changes(edges, seen_map, config.min_changed_px)
            if not ((share >= config.reuse_change) & (differ >= config.min_changed_px)).any():
                plan.append(last_read)
                continue
        plan.append(i)
        if band_only is not None and band_only[i] and seen_map is not None:
            top = int(band_crop_top(config) * edges.shape[0])
            seen_map = np.concatenate([seen_map[:top], edges[top:]])
        else:
            seen_map = edges
        last_read = i
    return plan


def thin_evenly(times: list[float], limit: int) -> list[int]:
    """Positions of at most `limit` of the (sorted) `times`, spread evenly over their span."""
    n = len(times)
    if n <= limit:
        return list(range(n))
    if limit <= 0:
        return []
    picks = np.linspace(0, n - 1, limit)
    return sorted({int(round(p)) for p in picks})
