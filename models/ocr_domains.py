"""OCR domain rules: split one video's OCR lines into domains and de-duplicate subtitles. No Beam.

Consumes the OCR result of one video's keyframes, in time order: a `FrameText` per frame (frame
index, timestamp, and its lines; a frame may have none). A line is anything with `.text` (str),
`.score` (recogniser confidence in [0, 1]) and `.box` (float[8]: the four corners x1,y1,..,x4,y4
in pixels of the original frame, clockwise from top-left, as PP-OCR returns them), such as
`models.ocr.OcrLine`. Also the original frame width and height.

Produces a `VideoText`: one domain per input line ("subtitle", "overlay", "scene" or "noise", in
the input's frame and line order), the distinct subtitle lines in time order, and the distinct
overlay and scene strings in first-appearance order.

The rules, in the order they are applied:
  1. Noise: confidence below `min_score`; or characters too small to read (the shorter side of
     the box, i.e. the character height, under `min_height_px` pixels or `min_height_frac` of the
     frame height); or garbage (no letter, digit or CJK character at all -- "~~", "|" -- or fewer
     than `min_word_frac` of its non-space characters are letters or digits).
  2. Overlay: text that stays put -- logos, watermarks, channel names, a constant slogan. A line is
     overlay when the same text (fuzzy, see below) sits at about the same place (centres within
     `position_tol` of the frame width and height) on at least `overlay_min_fraction` of the
     video's frames and on at least `overlay_min_frames` frames. Running clocks, timecodes and
     counters are overlay too: a line that is mostly digits (at least `clock_min_digits` digits and
     at least `clock_min_digit_frac` of its letters and digits) whose text differs from frame to
     frame only in its numbers, at a fixed place, on as many frames. Subtitles are not swallowed by
     this: a subtitle line is words, not mostly digits, and a subtitle line shown on most of the
     keyframes is by definition not changing over time.
  3. Subtitle: any remaining line whose centre is in the lower band of the frame (below
     `subtitle_band` of the height) and roughly centred horizontally (within
     `subtitle_center_tol` of the width from the middle). It changes over time, else rule 2 took it.
     Except slide and document text, which sits in the lower band too (the last bullets, a footer,
     the speakers' names and e-mails on a title slide). A caption is one or two centred lines; a
     line in that place is not a subtitle when
       a. it is left-aligned with at least `block_min_lines - 1` other readable lines of its frame
          (left edges within `block_align_tol` of the width: a list);
       b. its frame is a slide -- its other readable lines (not overlay) stand on at least
          `slide_min_rows` rows: a title and bullets -- and its characters are not clearly larger
          than the median of those lines (under `slide_caption_scale` times it: bullets, footers,
          page numbers; a caption laid over a slide stands out from the slide's text);
       c. the lines left in that place (after a and b) stand on more than `caption_max_rows` rows
          (a block, not a caption);
       d. the same text (spaces ignored) at the same place (`position_tol`) is slide text by a, b or
          c on another frame: slide text lasts as long as its slide.
     Speech, when the video's ASR segments are given, is evidence too (captions follow speech). A
     line in that place counts as all its sightings: the same text at the same place, whatever
     frame it is on.
       e. heard: `speech_match` of its letters and digits (at least `speech_min_chars`; spaces do not
          count, PP-OCR drops them) are covered by words spoken in the segments within
          `speech_tol_s` of a sighting -- a subtitle, even when rule b or d took it for small print
          on a slide (a lecture's captions are often as small as its bullets). A list (a) or a block
          (c) stays slide text: a bullet read aloud is a bullet.
       f. silent: on a video with speech, no segment within `speech_tol_s` of any sighting, and
          its frame's readable text stands on `silent_block_rows` rows or more (a title slide with
          its speakers and e-mails at the bottom, shown before anyone speaks) -- not a subtitle. A
          lone caption with nothing spoken around it stays one (music, a line Whisper missed).
       g. outlasting the speech: on screen without a break (on consecutive frames read) while
          `outlast_segments` or more segments are spoken -- a slide's tagline, a lower-third banner,
          not a subtitle: captions change with the speech.
  4. Scene: any other readable text (signs, shirts, screens, captions off the subtitle band, slides).

Same text: both strings with whitespace collapsed; equal, or for strings of at least
`fuzzy_min_len` characters, at most `max_edits` Levenshtein edits apart (OCR often misreads one
character between frames: "Hello world" / "Hel1o world"). Case is kept: a case change is an edit.
Numbers carry meaning, so a changed, added or dropped digit is never a misread: "Chapter 1" and
"Chapter 2" are different lines (a digit read for a letter, "l" / "1", still is one edit).

De-duplication (`dedupe_lines`): lines are clustered in time order, each joining the first
earlier cluster whose first line is the same text, so a line held over consecutive frames, a
wobbling line and a line that reappears later all count once. A cluster is written once, at its
first appearance, as its highest-score variant (ties: the earliest). Within a frame, subtitle
lines are taken top to bottom (left to right on one row).

Word-by-word captions (a line that grows a word at a time) are read once per word; a subtitle line
that the next frame with subtitles extends (its text, spaces ignored, is the start of a longer line
there, up to OCR misreads) is a prefix and is left out of the subtitle lines: the full line is
written once.

Everything is deterministic: output order comes from frame and line order only, never from
hashing.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Literal, Protocol, Sequence

import numpy as np

Domain = Literal["subtitle", "overlay", "scene", "noise"]
SUBTITLE: Domain = "subtitle"
OVERLAY: Domain = "overlay"
SCENE: Domain = "scene"
NOISE: Domain = "noise"
DOMAINS: tuple[Domain, ...] = (SUBTITLE, OVERLAY, SCENE, NOISE)

_DIGIT_RUN = re.compile(r"\d+")
_FORBIDDEN = 1 << 30  # cost of an edit that may never be an OCR wobble


class SpeechSegment(Protocol):
    """One ASR segment (e.g. `models.asr.AsrSegment`): its time in the video and its words."""

    start_s: float
    end_s: float
    text: str


class TextLine(Protocol):
    """One recognised line of text (e.g. `models.ocr.OcrLine`)."""

    text: str
    score: float
    box: np.ndarray  # float[8]: x1, y1, .., x4, y4 in pixels of the original frame


@dataclasses.dataclass(frozen=True)
class FrameText:
    """The OCR result of one keyframe."""

    frame_index: int
    timestamp_s: float
    lines: Sequence[TextLine]


@dataclasses.dataclass(frozen=True)
class DomainConfig:
    """Thresholds of the domain rules. Defaults are set for PP-OCR (RapidOCR) on 360p-1080p video."""

    # PP-OCR recognition scores of real text are mostly above 0.8; below 0.6 they are mostly
    # textures (grass, brick, hair) read as letters.
    min_score: float = 0.6
    # The recogniser works on 48-px-high crops: below 8 px a line is blown up 6x and read poorly,
    # and text under 2 % of the frame height is not something a viewer reads either.
    min_height_px: float = 8.0
    min_height_frac: float = 0.02
    # A readable line is at least half letters/digits ("$9.99", "00:01:05" pass; "a~~~~" fails).
    min_word_frac: float = 0.5
    # Subtitles sit in the bottom third; 0.62 keeps the upper line of a two-line subtitle.
    subtitle_band: float = 0.62
    # Subtitles are centred; 0.18 of the width allows boxes that OCR split or cut unevenly.
    subtitle_center_tol: float = 0.18
    # "Most of the video": a logo may be missed by OCR on some frames or hidden by a cut-away.
    overlay_min_fraction: float = 0.5
    # Fewer than 3 frames cannot tell a fixed overlay from a line that happened to be held.
    overlay_min_frames: int = 3
    # Box centres jitter by a few pixels, and a clock's centre moves as its digits change width.
    position_tol: float = 0.04
    # One misread character is merged only for lines long enough that one edit is not a new word.
    fuzzy_min_len: int = 4
    max_edits: int = 1
    # A clock/timecode/counter line: at least 2 digits and at least half its letters and digits.
    clock_min_digits: int = 2
    clock_min_digit_frac: float = 0.5
    # A caption is one or two lines; three rows in the band are a block of slide/document text.
    caption_max_rows: int = 2
    # Three lines with one left edge are a list (bullets), ...
    block_min_lines: int = 3
    block_align_tol: float = 0.015
    # ... and three rows of other text (a title and two bullets) make a frame a slide.
    slide_min_rows: int = 3
    # A caption over a slide stands out: its characters are this much larger than the slide's median.
    slide_caption_scale: float = 1.15
    # Speech as evidence (rules 3e-3g): Whisper's segment bounds are off by up to about a second,
    # and a caption may come up a little before or stay a little after its words.
    speech_tol_s: float = 1.0
    # Heard: this share of a line's letters and digits is covered by words spoken around it, and it has
    # at least this many (one short word is spoken somewhere near most lines).
    speech_match: float = 0.6
    speech_min_chars: int = 4
    # Silent: not a caption when the frame's readable text stands on this many rows (a caption is
    # one or two rows; a third is a title above them, a slide).
    silent_block_rows: int = 3
    # Outlasting: a line on screen without a break while this many segments are spoken (Whisper cuts
    # segments at sentences or pauses, a caption at most every sentence) is not a caption.
    outlast_segments: int = 3

    def __post_init__(self):
        for name in ("min_score", "min_height_frac", "min_word_frac", "subtitle_band",
                     "overlay_min_fraction", "clock_min_digit_frac", "speech_match"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("min_height_px", "subtitle_center_tol", "position_tol",
                     "fuzzy_min_len", "max_edits", "clock_min_digits", "speech_tol_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_edits > 2:
            # More than two edits on a short OCR line is a different line, and the candidate
            # index in dedupe_lines grows as len ** max_edits.
            raise ValueError(f"max_edits must be <= 2, got {self.max_edits}")
        if self.overlay_min_frames < 1:
            raise ValueError(f"overlay_min_frames must be >= 1, got {self.overlay_min_frames}")
        for name in ("caption_max_rows", "block_min_lines", "slide_min_rows", "speech_min_chars",
                     "silent_block_rows", "outlast_segments"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.slide_caption_scale <= 0:
            raise ValueError(f"slide_caption_scale must be > 0, got {self.slide_caption_scale}")
        if not 0.0 <= self.block_align_tol <= 1.0:
            raise ValueError(f"block_align_tol must be in [0, 1], got {self.block_align_tol}")


@dataclasses.dataclass(frozen=True)
class VideoText:
    """One video's OCR text split by domain."""

    domains: list[list[Domain]]  # per frame, per line, in input order
    subtitle_lines: list[str]  # distinct, in time order (top to bottom within a frame)
    overlay_texts: list[str]  # distinct, first-appearance order; one per overlay track
    scene_texts: list[str]  # distinct, first-appearance order


@dataclasses.dataclass(frozen=True)
class OverlayTrack:
    """Lines at one place on most frames: constant text, or a clock whose digits change."""

    kind: Literal["text", "clock"]
    members: tuple[tuple[int, int], ...]  # (position of the frame in the input, line index)
    text: str  # representative: the highest-score member's text, ties the earliest


# ---------------------------------------------------------------------------------------------
# Text


def normalize_text(s: str) -> str:
    """Collapses runs of whitespace (any Unicode space) to one space and strips the ends. Case kept."""
    return " ".join(s.split())


def _edit_cost(c: str) -> int:
    """Cost of inserting or deleting c: a digit is never an OCR wobble (numbers carry meaning)."""
    return _FORBIDDEN if c.isdecimal() else 1


def _sub_cost(a: str, b: str) -> int:
    """Cost of reading b for a: free if equal, forbidden between two digits, else one edit."""
    if a == b:
        return 0
    return _FORBIDDEN if a.isdecimal() and b.isdecimal() else 1


def _shares_a_piece(a: str, b: str, limit: int) -> bool:
    """Cheap necessary test for edit distance <= limit (pigeonhole on limit + 1 pieces of a).

    `limit` edits touch at most `limit` of the pieces, so one piece is found unchanged in b,
    shifted by at most `limit` places. str.find does the work in C.
    """
    n = len(a)
    if n <= limit:
        return True
    step = n // (limit + 1)
    for p in range(limit + 1):
        start = p * step
        end = n if p == limit else start + step
        if b.find(a[start:end], max(0, start - limit), end + limit) >= 0:
            return True
    return False


def edit_distance(a: str, b: str, limit: int) -> int:
    """OCR edit distance of a and b, or `limit + 1` when it exceeds `limit`.

    Levenshtein distance, except that an edit that changes the digits is not allowed: a digit
    replaced by another digit, or a digit inserted or dropped ("Chapter 1" / "Chapter 2", "2023" /
    "2024"). Reading a digit for a letter or back ("l" / "1", "O" / "0") is one edit, the usual
    OCR misread. Only the diagonal band |i - j| <= limit is filled: O(len * limit).
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    over = limit + 1
    n, m = len(a), len(b)
    if abs(n - m) > limit:
        return over
    if a == b:
        return 0
    if not _shares_a_piece(a, b, limit):
        return over
    prev = [0] * (m + 1)
    for j in range(1, m + 1):
        prev[j] = min(prev[j - 1] + _edit_cost(b[j - 1]), over)
    for i in range(1, n + 1):
        ca = a[i - 1]
        cur = [over] * (m + 1)
        cur[0] = min(prev[0] + _edit_cost(ca), over)
        for j in range(max(1, i - limit), min(m, i + limit) + 1):
            cb = b[j - 1]
            cur[j] = min(
                prev[j - 1] + _sub_cost(ca, cb),
                prev[j] + _edit_cost(ca),
                cur[j - 1] + _edit_cost(cb),
                over,
            )
        if min(cur) >= over:
            return over
        prev = cur
    return prev[m]


def same_text(a: str, b: str, config: DomainConfig = DomainConfig()) -> bool:
    """True when a and b are the same line up to spaces and, if long enough, a few OCR misreads."""
    return _same_normalized(normalize_text(a), normalize_text(b), config)


def _same_normalized(a: str, b: str, config: DomainConfig) -> bool:
    if a == b:
        return True
    # PP-OCR drops and inserts spaces freely ("@ 2013" / "@2013", "stackfresh"): spaces never count.
    a, b = a.replace(" ", ""), b.replace(" ", "")
    if a == b:
        return True
    if min(len(a), len(b)) < config.fuzzy_min_len:
        return False
    return edit_distance(a, b, config.max_edits) <= config.max_edits


def is_garbage(text: str, config: DomainConfig = DomainConfig()) -> bool:
    """True for text with no letter/digit/CJK character, or too few of them among its characters."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return True
    word = sum(1 for c in chars if c.isalnum())  # isalnum: letters and digits of every script, CJK too
    return word == 0 or word < config.min_word_frac * len(chars)


def is_clock_like(text: str, config: DomainConfig = DomainConfig()) -> bool:
    """True for text that is mostly digits: a clock, timecode, counter or score ("00:01:05", "3-2")."""
    alnum = [c for c in text if c.isalnum()]
    digits = sum(1 for c in alnum if c.isdecimal())
    enough = max(1, config.clock_min_digits)
    return digits >= enough and digits >= config.clock_min_digit_frac * len(alnum)


def digit_skeleton(text: str) -> str:
    """The text with each run of digits replaced by '#': what stays fixed while a clock runs."""
    return _DIGIT_RUN.sub("#", normalize_text(text))


# ---------------------------------------------------------------------------------------------
# Geometry


def _corners(box) -> np.ndarray:
    pts = np.asarray(box, dtype=np.float64)
    if pts.size != 8:
        raise ValueError(f"box must have 8 numbers (four x, y corners), got shape {pts.shape}")
    return pts.reshape(4, 2)


def line_center(box) -> tuple[float, float]:
    """Centre (x, y) of a four-corner box, in pixels: the mean of its corners."""
    c = _corners(box).mean(axis=0)
    return float(c[0]), float(c[1])


def line_height(box) -> float:
    """Character height of a line, in pixels: the shorter side of its (possibly rotated) box.

    The shorter side, not the vertical extent, so a vertical (top-to-bottom) CJK line or a tilted
    line is measured by the size of its characters.
    """
    p = _corners(box)
    edges = np.hypot(*(p - p[[1, 2, 3, 0]]).T)  # top, right, bottom, left
    along = 0.5 * (edges[0] + edges[2])
    across = 0.5 * (edges[1] + edges[3])
    return float(min(along, across))


def is_noise(line: TextLine, width: int, height: int, config: DomainConfig = DomainConfig()) -> bool:
    """Rule 1: low confidence, characters too small to read, or garbage text."""
    if float(line.score) < config.min_score:
        return True
    min_h = max(config.min_height_px, config.min_height_frac * height)
    if line_height(line.box) < min_h:
        return True
    return is_garbage(line.text, config)


def is_subtitle_position(box, width: int, height: int, config: DomainConfig = DomainConfig()) -> bool:
    """True when the box centre is in the lower band and roughly centred horizontally."""
    cx, cy = line_center(box)
    in_band = cy >= config.subtitle_band * height
    return in_band and abs(cx - 0.5 * width) <= config.subtitle_center_tol * width


def reading_order(boxes: Sequence) -> list[int]:
    """Indices of `boxes` top to bottom; boxes on one row (centres within half a line) left to right."""
    return [i for row in reading_rows(boxes) for i in row]


def reading_rows(boxes: Sequence) -> list[list[int]]:
    """`reading_order` grouped by row: the indices of each row of boxes, top to bottom."""
    centers = [line_center(b) for b in boxes]
    heights = [line_height(b) for b in boxes]
    by_y = sorted(range(len(boxes)), key=lambda i: (centers[i][1], centers[i][0], i))
    rows: list[list[int]] = []
    for i in by_y:
        if rows:
            first = rows[-1][0]
            if centers[i][1] - centers[first][1] <= 0.5 * min(heights[i], heights[first]):
                rows[-1].append(i)
                continue
        rows.append([i])
    return [sorted(row, key=lambda i: (centers[i][0], i)) for row in rows]


def _text_key(text: str) -> str:
    return normalize_text(text).replace(" ", "")


def _left_edge(box) -> float:
    return float(_corners(box)[:, 0].min())


SLIDE_LIST, SLIDE_SMALL, SLIDE_BLOCK = "list", "small", "block"  # rules 3a, 3b, 3c


def slide_text_lines(lines: Sequence[TextLine], readable: Sequence[int], candidates: Sequence[int],
                     width: int, height: int, config: DomainConfig = DomainConfig()) -> set[int]:
    """Rule 3's exceptions: which of `candidates` (indices into `lines`, in the subtitle place) are
    slide or document text, given the frame's `readable` lines (not noise, not overlay)."""
    return set(slide_text_reasons(lines, readable, candidates, width, height, config))


def slide_text_reasons(lines: Sequence[TextLine], readable: Sequence[int], candidates: Sequence[int],
                       width: int, height: int, config: DomainConfig = DomainConfig()) -> dict[int, str]:
    """`slide_text_lines` with the rule that took each: SLIDE_LIST, SLIDE_SMALL or SLIDE_BLOCK."""
    if not candidates:
        return {}
    out: dict[int, str] = {}
    tol = config.block_align_tol * width
    lefts = {i: _left_edge(lines[i].box) for i in readable}
    for i in candidates:  # a. a list
        aligned = sum(1 for j in readable if j != i and abs(lefts[j] - lefts[i]) <= tol)
        if aligned + 1 >= config.block_min_lines:
            out[i] = SLIDE_LIST
    others = [j for j in readable if j not in candidates]
    if others and len(reading_rows([lines[j].box for j in others])) >= config.slide_min_rows:
        median = float(np.median([line_height(lines[j].box) for j in others]))  # b. small print on a slide
        for i in candidates:
            if i not in out and line_height(lines[i].box) < config.slide_caption_scale * median:
                out[i] = SLIDE_SMALL
    rest = [i for i in candidates if i not in out]
    if len(reading_rows([lines[i].box for i in rest])) > config.caption_max_rows:
        out.update((i, SLIDE_BLOCK) for i in rest)  # c. a block (what is left once lists and small print are set aside)
    return out


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_\u3400-\u9fff\uf900-\ufaff]+")


def words(text: str) -> list[str]:
    """Lower-cased words of `text` as speech and OCR are compared: runs of letters and digits, and
    each CJK character on its own (Chinese is not written with spaces)."""
    return _WORD.findall(text.lower())


def spoken_share(shown: str, spoken: set[str]) -> float:
    """Share of the characters of `shown` (a line's words joined without spaces: "thankyouforlistening")
    covered by occurrences of the `spoken` words in it. Words of one Latin letter ("a", "i") are
    everywhere and cover nothing; a CJK character is a word."""
    if not shown:
        return 0.0
    covered = np.zeros(len(shown), dtype=bool)
    for w in spoken:
        if len(w) < 2 and not _CJK.match(w):
            continue
        start = shown.find(w)
        while start >= 0:
            covered[start : start + len(w)] = True
            start = shown.find(w, start + 1)
    return float(covered.mean())


class SpeechTimeline:
    """A video's ASR segments, asked what was spoken around a moment (rules 3e-3g)."""

    def __init__(self, segments: Sequence[SpeechSegment], config: DomainConfig = DomainConfig()):
        spans = sorted((float(s.start_s), float(s.end_s), words(s.text)) for s in segments)
        self._spans = [span for span in spans if span[2]]  # a segment with no words is no speech
        self._tol = config.speech_tol_s
        self._config = config

    def __bool__(self) -> bool:
        return bool(self._spans)

    def around(self, t: float) -> list[list[str]]:
        """The words of each segment within `speech_tol_s` of time t."""
        return [w for a, b, w in self._spans if a - self._tol <= t <= b + self._tol]

    def heard(self, text: str, times: Sequence[float]) -> bool:
        """At a sighting at one of `times`, enough of `text` was spoken around it (rule 3e)."""
        shown = "".join(words(text))
        if len(shown) < self._config.speech_min_chars:
            return False
        for t in times:
            spoken = {w for segment in self.around(t) for w in segment}
            if spoken_share(shown, spoken) >= self._config.speech_match:
                return True
        return False

    def spoken_during(self, start_s: float, end_s: float) -> int:
        """How many segments overlap [start_s, end_s]."""
        return sum(1 for a, b, _ in self._spans if a <= end_s and b >= start_s)

    def silent(self, times: Sequence[float]) -> bool:
        """Nothing was spoken around any of `times` on a video that has speech (rule 3f)."""
        return bool(self._spans) and not any(self.around(t) for t in times)


def drop_growing_prefixes(frames: Sequence[Sequence[tuple[float, str, float]]],
                          config: DomainConfig = DomainConfig()) -> list[tuple[float, str, float]]:
    """Subtitle entries of consecutive frames (per frame, in reading order), without the lines that
    the next frame with subtitles extends: the prefixes of a caption growing word by word."""
    kept = []
    for f, entries in enumerate(frames):
        following = next((nxt for nxt in frames[f + 1:] if nxt), ())
        longer = [normalize_text(t).replace(" ", "") for _, t, _ in following]
        for entry in entries:
            text = normalize_text(entry[1]).replace(" ", "")
            if not any(len(x) > len(text) and _same_normalized(x[: len(text)], text, config) for x in longer):
                kept.append(entry)
    return kept


# ---------------------------------------------------------------------------------------------
# De-duplication


def _deletion_variants(text: str, edits: int) -> list[str]:
    """text and every string made from it by deleting up to `edits` characters.

    Two strings within `edits` Levenshtein edits share one of these variants, so an index of them
    finds the few candidates worth an edit-distance check (a "symmetric delete" index).
    """
    out, frontier = [text], [text]
    for _ in range(edits):
        frontier = [s[:i] + s[i + 1:] for s in frontier for i in range(len(s))]
        out.extend(frontier)
    return out


def dedupe_lines(
    entries: Sequence[tuple[float, str, float]], config: DomainConfig = DomainConfig()
) -> list[str]:
    """Distinct lines of `(timestamp_s, text, score)` entries, in order of first appearance.

    Entries are taken in timestamp order (ties keep the given order, e.g. top to bottom in a
    frame). Each joins the first earlier cluster whose first text is `same_text`; a cluster is
    written once, as its highest-score text (ties: the earliest), whitespace-normalised.
    """
    order = sorted(range(len(entries)), key=lambda k: (float(entries[k][0]), k))
    best: list[tuple[float, str]] = []  # per cluster: (score, text) of its representative
    anchors: list[str] = []
    index: dict[str, list[int]] = {}  # deletion variant of an anchor -> clusters; lookups only
    seen: dict[str, int] = {}  # text -> its cluster (same_text depends on the two texts only)
    for k in order:
        _, raw, score = entries[k]
        text = normalize_text(raw)
        if not text:
            continue
        c = seen.get(text)
        if c is None:
            # same_text ignores spaces, so the index is of the text without them ("Firstwash" / "First wash")
            variants = _deletion_variants(text.replace(" ", ""), config.max_edits)
            near = sorted({j for v in variants for j in index.get(v, ())})
            c = next((j for j in near if _same_normalized(anchors[j], text, config)), None)
            if c is None:
                c = len(anchors)
                anchors.append(text)
                best.append((float(score), text))
                for v in variants:
                    index.setdefault(v, []).append(c)
            seen[text] = c
        if float(score) > best[c][0]:
            best[c] = (float(score), text)
    return [text for _, text in best]


# ---------------------------------------------------------------------------------------------
# Overlay tracks


class _Tracks:
    """Tracks of one kind: lines matched to a track by place (fixed anchor) and by a text test."""

    def __init__(self, capacity: int, tol_x: float, tol_y: float, match):
        self._ax = np.zeros(capacity)
        self._ay = np.zeros(capacity)
        self._tol_x, self._tol_y = tol_x, tol_y
        self._match = match  # (track key, line text) -> bool
        self.keys: list[str] = []
        self.members: list[list[tuple[int, int]]] = []
        self.frames: list[list[int]] = []  # distinct frame positions, ascending

    def add(self, frame_pos: int, line_idx: int, cx: float, cy: float, key: str) -> None:
        t = len(self.keys)
        dx = np.abs(self._ax[:t] - cx)
        dy = np.abs(self._ay[:t] - cy)
        near = np.flatnonzero((dx <= self._tol_x) & (dy <= self._tol_y))  # ascending: deterministic
        best, best_d = -1, math.inf
        for j in near:
            d = float(dx[j] ** 2 + dy[j] ** 2)
            if d < best_d and self._match(self.keys[j], key):
                best, best_d = int(j), d
        if best < 0:
            best = t
            self._ax[t], self._ay[t] = cx, cy
            self.keys.append(key)
            self.members.append([])
            self.frames.append([])
        self.members[best].append((frame_pos, line_idx))
        if not self.frames[best] or self.frames[best][-1] != frame_pos:
            self.frames[best].append(frame_pos)


def overlay_min_count(n_frames: int, config: DomainConfig = DomainConfig()) -> int:
    """Frames a track must be on to be overlay: `overlay_min_fraction` of all, >= `overlay_min_frames`."""
    return max(config.overlay_min_frames, math.ceil(config.overlay_min_fraction * n_frames - 1e-9))


def find_overlay_tracks(
    frames: Sequence[FrameText], width: int, height: int, config: DomainConfig = DomainConfig()
) -> list[OverlayTrack]:
    """Rule 2: the overlay tracks of a video, in order of first appearance.

    Non-noise lines are grouped into tracks: a line joins the nearest track whose first line's
    centre is within `position_tol` of the frame size and whose first text is the same (fuzzy);
    mostly-digit lines also join clock tracks, matched by digit skeleton ("##:##" for "00:05").
    A track on at least `overlay_min_count` of the frames (frames without lines count) is overlay.
    """
    n_lines = sum(len(f.lines) for f in frames)
    tol_x, tol_y = config.position_tol * width, config.position_tol * height
    text_tracks = _Tracks(n_lines, tol_x, tol_y, lambda key, text: _same_normalized(key, text, config))
    clock_tracks = _Tracks(n_lines, tol_x, tol_y, lambda key, skeleton: key == skeleton)
    for f, frame in enumerate(frames):
        for i, line in enumerate(frame.lines):
            if is_noise(line, width, height, config):
                continue
            cx, cy = line_center(line.box)
            text_tracks.add(f, i, cx, cy, normalize_text(line.text))
            if is_clock_like(line.text, config):
                clock_tracks.add(f, i, cx, cy, digit_skeleton(line.text))

    need = overlay_min_count(len(frames), config)
    found = []
    for kind_rank, (kind, tracks) in enumerate((("text", text_tracks), ("clock", clock_tracks))):
        for members, track_frames in zip(tracks.members, tracks.frames):
            if len(track_frames) < need:
                continue
            lines = [frames[f].lines[i] for f, i in members]
            # Highest score; among equal scores the earliest (largest -k).
            rep = max(range(len(lines)), key=lambda k: (float(lines[k].score), -k))
            track = OverlayTrack(kind, tuple(members), normalize_text(lines[rep].text))
            found.append((members[0], kind_rank, track))
    found.sort(key=lambda item: (item[0], item[1]))
    return [track for _, _, track in found]


# ---------------------------------------------------------------------------------------------
# The whole video


def _unbroken_spans(frames: Sequence[FrameText], placed: Sequence[Sequence[int]], tol_x: float,
                    tol_y: float) -> dict[tuple[int, int], tuple[float, float]]:
    """For each line in the subtitle place, (frame position, line index) -> the times of the first and
    last of the consecutive frames that show the same text at the same place without a break."""
    runs: list[list] = []  # [key, x, y, last frame position, first t, last t, members]
    open_runs: dict[str, list[int]] = {}  # text -> runs that the previous frame extended
    for f, frame in enumerate(frames):
        now: dict[str, list[int]] = {}
        for i in placed[f]:
            key = _text_key(frame.lines[i].text)
            x, y = line_center(frame.lines[i].box)
            t = float(frame.timestamp_s)
            r = next((r for r in open_runs.get(key, ()) if runs[r][3] == f - 1
                      and abs(runs[r][1] - x) <= tol_x and abs(runs[r][2] - y) <= tol_y), None)
            if r is None:
                r = len(runs)
                runs.append([key, x, y, f, t, t, []])
            run = runs[r]
            run[3], run[5] = f, t
            run[6].append((f, i))
            now.setdefault(key, []).append(r)
        open_runs = now
    return {member: (run[4], run[5]) for run in runs for member in run[6]}


def classify_video(
    frames: Sequence[FrameText], width: int, height: int, config: DomainConfig = DomainConfig(),
    speech: Sequence[SpeechSegment] | None = None,
) -> VideoText:
    """Applies rules 1-4 to one video's keyframes (in time order) and collects the text by domain.

    `width` and `height` are those of the original frame the boxes are in. `speech`: the video's
    ASR segments, when it was transcribed (rules 3e-3g; None or empty: no evidence from speech).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    domains: list[list[Domain]] = []
    for frame in frames:
        domains.append([NOISE if is_noise(x, width, height, config) else SCENE for x in frame.lines])

    tracks = find_overlay_tracks(frames, width, height, config)
    for track in tracks:
        for f, i in track.members:
            domains[f][i] = OVERLAY

    subtitle_frames: list[list[tuple[float, str, float]]] = []
    scene_entries: list[tuple[float, str, float]] = []
    per_frame = []
    slide_places: dict[str, list[tuple[float, float, str]]] = {}  # slide text -> where seen as such, by which rule
    sightings: dict[str, list[tuple[float, float, float]]] = {}  # text in the subtitle place -> (x, y, t)
    for f, frame in enumerate(frames):
        readable = [i for i in range(len(frame.lines)) if domains[f][i] == SCENE]
        placed = [i for i in readable if is_subtitle_position(frame.lines[i].box, width, height, config)]
        slide = slide_text_reasons(frame.lines, readable, placed, width, height, config)
        for i, rule in slide.items():
            slide_places.setdefault(_text_key(frame.lines[i].text), []).append((*line_center(frame.lines[i].box), rule))
        for i in placed:
            sightings.setdefault(_text_key(frame.lines[i].text), []).append(
                (*line_center(frame.lines[i].box), float(frame.timestamp_s)))
        per_frame.append((readable, placed, slide))
    tol_x, tol_y = config.position_tol * width, config.position_tol * height
    timeline = SpeechTimeline(speech or (), config)
    spans = _unbroken_spans(frames, [placed for _, placed, _ in per_frame], tol_x, tol_y) if timeline else {}
    for f, frame in enumerate(frames):
        readable, placed, slide = per_frame[f]
        rows = len(reading_rows([frame.lines[i].box for i in readable])) if timeline else 0
        subtitle_idx = []
        for i in placed:
            cx, cy = line_center(frame.lines[i].box)
            near = lambda x, y: abs(cx - x) <= tol_x and abs(cy - y) <= tol_y  # noqa: E731
            key = _text_key(frame.lines[i].text)
            # Slide text lasts as long as its slide: the same line at the same place is slide text on
            # every frame, also on one that shows too little of the slide to tell (a band-only read).
            rules = {slide[i]} if i in slide else set()
            rules.update(rule for x, y, rule in slide_places.get(key, ()) if near(x, y))
            if timeline:
                times = [t for x, y, t in sightings[key] if near(x, y)]
                if rules and rules <= {SLIDE_SMALL} and timeline.heard(frame.lines[i].text, times):
                    rules = set()  # e. heard: a caption as small as the slide's text
                elif not rules and rows >= config.silent_block_rows and timeline.silent(times):
                    rules = {"silent"}  # f. a block nobody speaks over
                elif not rules and timeline.spoken_during(*spans[f, i]) >= config.outlast_segments:
                    rules = {"outlasting"}  # g. on screen while the speech moved on
            if not rules:
                subtitle_idx.append(i)
        for i in readable:
            if i in subtitle_idx:
                domains[f][i] = SUBTITLE
            else:
                line = frame.lines[i]
                scene_entries.append((frame.timestamp_s, line.text, line.score))
        entries = []
        for k in reading_order([frame.lines[i].box for i in subtitle_idx]):
            line = frame.lines[subtitle_idx[k]]
            entries.append((frame.timestamp_s, line.text, line.score))
        subtitle_frames.append(entries)
    subtitle_entries = drop_growing_prefixes(subtitle_frames, config)

    overlay_entries = []
    for t in tracks:
        first_frame = t.members[0][0]
        score = max(float(frames[f].lines[i].score) for f, i in t.members)
        overlay_entries.append((frames[first_frame].timestamp_s, t.text, score))
    return VideoText(
        domains=domains,
        subtitle_lines=dedupe_lines(subtitle_entries, config),
        overlay_texts=dedupe_lines(overlay_entries, config),
        scene_texts=dedupe_lines(scene_entries, config),
    )
