"""Tests for models/ocr_domains.py (OCR domain rules and subtitle de-duplication) on synthetic tracks."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from models.ocr_domains import (
    DomainConfig,
    FrameText,
    VideoText,
    classify_video,
    dedupe_lines,
    digit_skeleton,
    edit_distance,
    find_overlay_tracks,
    is_clock_like,
    is_garbage,
    is_noise,
    is_subtitle_position,
    line_center,
    line_height,
    normalize_text,
    overlay_min_count,
    reading_order,
    same_text,
    spoken_share,
    words,
)

W, H = 1280, 720
CFG = DomainConfig()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Line:
    """Stand-in for models.ocr.OcrLine: any object with .text, .score and .box will do."""

    text: str
    score: float
    box: np.ndarray


def box(cx, cy, w, h):
    """Axis-aligned box as four corners clockwise from top-left, float32 [8]."""
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    return np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float32)


def line(text, cx, cy, h=36, score=0.95, w=None):
    return Line(text, score, box(cx, cy, w if w is not None else 18 * len(text), h))


def logo(score=0.95):
    return line("VMM TV", 1150, 50, h=30, score=score)


def sub(text, cy=640, score=0.95):
    return line(text, 640, cy, score=score)


def video(frame_lines):
    return [FrameText(i, float(i), tuple(lines)) for i, lines in enumerate(frame_lines)]


# ---------------------------------------------------------------------------------------------
# Text


def test_normalize_text_collapses_whitespace_and_keeps_case():
    assert normalize_text("  Hello \t  World\n") == "Hello World"
    assert normalize_text("你好\u3000世界") == "你好 世界"
    assert normalize_text("   ") == ""


def _reference_distance(a, b):
    """Full-table Levenshtein with the digit rule, written independently of the module's band."""
    big = 10**6

    def edit(c):
        return big if c.isdecimal() else 1

    def sub_cost(x, y):
        return 0 if x == y else (big if x.isdecimal() and y.isdecimal() else 1)

    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        d[i][0] = d[i - 1][0] + edit(a[i - 1])
    for j in range(1, len(b) + 1):
        d[0][j] = d[0][j - 1] + edit(b[j - 1])
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(
                d[i - 1][j - 1] + sub_cost(a[i - 1], b[j - 1]),
                d[i - 1][j] + edit(a[i - 1]),
                d[i][j - 1] + edit(b[j - 1]),
            )
    return d[len(a)][len(b)]


def test_edit_distance_matches_full_table_reference():
    rng = random.Random(0)
    alphabet = "ab1l0O "
    checked_close = 0
    for _ in range(3000):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7)))
        b = list(a)
        for _ in range(rng.randint(0, 3)):  # a few random edits, so many pairs are close
            op = rng.randint(0, 2)
            if op == 0 and b:
                b[rng.randrange(len(b))] = rng.choice(alphabet)
            elif op == 1:
                b.insert(rng.randint(0, len(b)), rng.choice(alphabet))
            elif b:
                del b[rng.randrange(len(b))]
        b = "".join(b)
        for limit in (0, 1, 2):
            want = min(_reference_distance(a, b), limit + 1)
            assert edit_distance(a, b, limit) == want, (a, b, limit)
            checked_close += want <= limit and a != b
    assert checked_close > 500  # the comparison exercised real near-misses, not just far pairs


def test_edit_distance_digit_rule():
    assert edit_distance("Hello world", "Hel1o world", 1) == 1  # letter read as digit: a wobble
    assert edit_distance("kitten", "sitting", 5) == 3
    assert edit_distance("Chapter 1", "Chapter 2", 1) == 2  # digit for digit: never a wobble
    assert edit_distance("Top 10", "Top 100", 1) == 2  # dropped digit: never a wobble
    with pytest.raises(ValueError):
        edit_distance("a", "b", -1)


def test_same_text():
    assert same_text("Hello world", "Hel1o world")
    assert same_text("Hello  world ", "Hello world")
    assert not same_text("Hello world", "Hel1o wor1d")  # two edits
    assert not same_text("cat", "cut")  # short lines must match exactly
    assert same_text("cat", " cat")
    assert not same_text("Chapter 1", "Chapter 2")
    assert not same_text("hello world", "Hello world", DomainConfig(max_edits=0))


def test_is_garbage():
    for text in ("~~", "|", "", "   ", "a~~~~~", "-- . --", "・"):
        assert is_garbage(text), text
    for text in ("VMM TV", "$9.99", "00:00:01:05", "你好", "好", "A", "Hello, world!"):
        assert not is_garbage(text), text


def test_is_clock_like_and_skeleton():
    for text in ("00:00:01:05", "12:03", "LIVE 12:03", "3 - 2", "１２:３４"):
        assert is_clock_like(text), text
    for text in ("Chapter 1", "In 1999 we left", "VMM TV", "7", "Episode 12 begins"):
        assert not is_clock_like(text), text
    assert digit_skeleton("00:00:01:05") == digit_skeleton("00:10:59:24") == "#:#:#:#"
    assert digit_skeleton(" LIVE  9:59") == digit_skeleton("LIVE 10:00") == "LIVE #:#"


# ---------------------------------------------------------------------------------------------
# Geometry and noise


def test_line_center_and_height():
    b = box(100, 200, 80, 20)
    assert line_center(b) == (100.0, 200.0)
    assert line_height(b) == pytest.approx(20.0)
    # A vertical CJK line: tall and thin, its characters are as wide as the box.
    assert line_height(box(100, 200, 24, 300)) == pytest.approx(24.0)
    # A tilted line: the rotated box keeps its character height.
    angle = np.deg2rad(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    tilted = (b.reshape(4, 2) - [100, 200]) @ rot.T + [100, 200]
    assert line_height(tilted.ravel()) == pytest.approx(20.0, rel=1e-5)
    assert line_center(tilted.ravel()) == pytest.approx((100.0, 200.0))
    with pytest.raises(ValueError):
        line_center(np.zeros(6))


def test_is_noise():
    assert not is_noise(line("Hello world", 640, 360), W, H, CFG)
    assert is_noise(line("Hello world", 640, 360, score=0.3), W, H, CFG)  # low confidence
    assert is_noise(line("Hello world", 640, 360, h=6), W, H, CFG)  # under min_height_px
    assert is_noise(line("Hello world", 640, 360, h=12), W, H, CFG)  # under 2% of 720
    assert not is_noise(line("Hello world", 640, 360, h=12), W, 400, CFG)  # 3% of 400: readable
    assert is_noise(line("~~", 640, 360), W, H, CFG)
    assert is_noise(line("|", 640, 360), W, H, CFG)
    assert not is_noise(line("好", 640, 360), W, H, CFG)


def test_is_subtitle_position():
    assert is_subtitle_position(box(640, 640, 400, 36), W, H, CFG)
    assert is_subtitle_position(box(640 + 0.17 * W, 460, 200, 36), W, H, CFG)  # edge of the band
    assert not is_subtitle_position(box(640, 400, 400, 36), W, H, CFG)  # mid-frame
    assert not is_subtitle_position(box(1150, 680, 200, 30), W, H, CFG)  # lower right corner
    assert not is_subtitle_position(box(640, 50, 400, 36), W, H, CFG)  # top centre


def test_reading_order_top_to_bottom_then_left_to_right():
    bottom, top = box(640, 660, 400, 36), box(640, 600, 400, 36)
    assert reading_order([bottom, top]) == [1, 0]
    # One row split in two boxes whose centres differ by a few pixels: left first, not upper first.
    right, left = box(800, 640, 200, 36), box(480, 645, 200, 36)
    assert reading_order([right, left, bottom]) == [1, 0, 2]
    assert reading_order([]) == []


# ---------------------------------------------------------------------------------------------
# De-duplication


def test_dedupe_lines_consecutive_wobble_and_reappearance():
    entries = [
        (0.0, "Hello world", 0.90),
        (1.0, "Hello world", 0.90),  # held over a second frame
        (2.0, "Hel1o world", 0.70),  # one-character wobble
        (3.0, "Goodbye now", 0.90),
        (4.0, "Hello  world", 0.90),  # reappears later
        (5.0, "The end", 0.90),
    ]
    assert dedupe_lines(entries) == ["Hello world", "Goodbye now", "The end"]


def test_dedupe_lines_representative_is_highest_score_then_earliest():
    assert dedupe_lines([(0.0, "Hel1o world", 0.7), (1.0, "Hello world", 0.9)]) == ["Hello world"]
    assert dedupe_lines([(0.0, "Hel1o world", 0.9), (1.0, "Hello world", 0.7)]) == ["Hel1o world"]
    assert dedupe_lines([(0.0, "Hel1o world", 0.8), (1.0, "Hello world", 0.8)]) == ["Hel1o world"]


def test_dedupe_lines_orders_by_timestamp_keeping_ties_in_given_order():
    entries = [(2.0, "Third line", 0.9), (1.0, "Upper line", 0.9), (1.0, "Lower line", 0.9)]
    assert dedupe_lines(entries) == ["Upper line", "Lower line", "Third line"]
    assert dedupe_lines([]) == []
    assert dedupe_lines([(0.0, "   ", 0.9)]) == []


def test_dedupe_lines_ignores_spaces_however_many():
    # OCR drops every space of a line on one frame: still the same line (same_text says so)
    entries = [(0.0, "First wash it twice", 0.9), (1.0, "Firstwashittwice", 0.95), (2.0, "Then boil", 0.9)]
    assert same_text("First wash it twice", "Firstwashittwice")
    assert dedupe_lines(entries) == ["Firstwashittwice", "Then boil"]


def test_dedupe_lines_keeps_numbered_lines_apart():
    entries = [(float(i), f"Chapter {i}", 0.9) for i in range(1, 4)]
    assert dedupe_lines(entries) == ["Chapter 1", "Chapter 2", "Chapter 3"]


# ---------------------------------------------------------------------------------------------
# Overlay tracks


def timecode(i):
    return line(f"00:00:{i:02d}:{(i * 7) % 25:02d}", 110, 40, h=28, score=0.95)


def test_overlay_min_count():
    assert overlay_min_count(1) == 3
    assert overlay_min_count(4) == 3
    assert overlay_min_count(10) == 5
    assert overlay_min_count(11) == 6


def test_find_overlay_tracks_logo_and_timecode():
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    frames = video([[logo(), timecode(i), sub(f"Say {w} now")] for i, w in enumerate(words)])
    tracks = find_overlay_tracks(frames, W, H, CFG)
    assert [(t.kind, t.text) for t in tracks] == [("text", "VMM TV"), ("clock", "00:00:00:00")]
    assert tracks[0].members == tuple((f, 0) for f in range(8))
    assert tracks[1].members == tuple((f, 1) for f in range(8))


@pytest.mark.parametrize("present, is_overlay", [(4, False), (5, True)])
def test_overlay_needs_most_frames(present, is_overlay):
    frames = video([[logo()] if i < present else [] for i in range(10)])
    result = classify_video(frames, W, H)
    want = "overlay" if is_overlay else "scene"
    assert [d for ds in result.domains for d in ds] == [want] * present
    assert result.overlay_texts == (["VMM TV"] if is_overlay else [])
    assert result.scene_texts == ([] if is_overlay else ["VMM TV"])


def test_moving_text_is_not_overlay():
    frames = video([[line("VMM TV", 200 + 100 * i, 300, h=30)] for i in range(8)])
    result = classify_video(frames, W, H)
    assert result.domains == [["scene"]] * 8
    assert result.overlay_texts == []
    assert result.scene_texts == ["VMM TV"]


# ---------------------------------------------------------------------------------------------
# The whole video


def _scenario():
    """10 frames of 1280x720: a logo and a timecode on every frame, subtitles, a sign, and noise."""
    subs = {
        0: [sub("Hello world")],
        1: [sub("Hello world")],
        2: [sub("Hel1o world", score=0.7)],
        3: [sub("This is a test")],
        4: [sub("This is a test")],
        5: [sub("Another line")],
        6: [],
        7: [sub("Hello world")],
        8: [sub("Bottom line here", cy=660), sub("Top line here", cy=600)],
        9: [sub("The end")],
    }
    extra = {
        3: [line("OPEN 24H", 640, 300, h=40)],
        4: [line("0PEN 24H", 650, 305, h=40, score=0.8)],
        5: [line("blurry words", 300, 400, score=0.3)],
        6: [line("tiny print", 300, 400, h=6)],
        7: [line("~~", 300, 400), line("|", 900, 400)],
    }
    return video([[logo(), timecode(i)] + subs[i] + extra.get(i, []) for i in range(10)])


def test_classify_video_scenario():
    result = classify_video(_scenario(), W, H)
    assert isinstance(result, VideoText)
    fixed = ["overlay", "overlay"]
    assert result.domains == [
        fixed + ["subtitle"],
        fixed + ["subtitle"],
        fixed + ["subtitle"],
        fixed + ["subtitle", "scene"],
        fixed + ["subtitle", "scene"],
        fixed + ["subtitle", "noise"],
        fixed + ["noise"],
        fixed + ["subtitle", "noise", "noise"],
        fixed + ["subtitle", "subtitle"],
        fixed + ["subtitle"],
    ]
    assert result.subtitle_lines == [
        "Hello world",
        "This is a test",
        "Another line",
        "Top line here",
        "Bottom line here",
        "The end",
    ]
    assert result.overlay_texts == ["VMM TV", "00:00:00:00"]
    assert result.scene_texts == ["OPEN 24H"]


def test_constant_lower_centre_line_is_overlay_not_subtitle():
    slogan = "Subscribe for more"
    texts = ["First we cook", "Then we eat", "Then we sleep", "And again", "Last words", "Bye"]
    frames = video([[sub(t, cy=600), sub(slogan, cy=680)] for t in texts])
    result = classify_video(frames, W, H)
    assert result.domains == [["subtitle", "overlay"]] * len(texts)
    assert result.overlay_texts == [slogan]
    assert result.subtitle_lines == texts
    assert result.scene_texts == []


def test_numbered_subtitles_are_not_swallowed_by_clock_or_fuzzy_rules():
    texts = [f"Chapter {i}" for i in range(1, 9)]
    frames = video([[logo(), sub(t)] for t in texts])
    result = classify_video(frames, W, H)
    assert result.domains == [["overlay", "subtitle"]] * len(texts)
    assert result.subtitle_lines == texts
    assert result.overlay_texts == ["VMM TV"]


def test_single_frame_video_has_no_overlay():
    frames = video([[logo(), timecode(0), sub("Only line"), line("EXIT", 640, 300)]])
    result = classify_video(frames, W, H)
    assert result.domains == [["scene", "scene", "subtitle", "scene"]]
    assert result.overlay_texts == []
    assert result.subtitle_lines == ["Only line"]
    assert result.scene_texts == ["VMM TV", "00:00:00:00", "EXIT"]


def test_empty_inputs():
    assert classify_video([], W, H) == VideoText([], [], [], [])
    result = classify_video(video([[], [], []]), W, H)
    assert result == VideoText([[], [], []], [], [], [])
    assert find_overlay_tracks([], W, H) == []
    with pytest.raises(ValueError):
        classify_video([], 0, H)


def _repeats_scenario():
    """Identical text on many lines: a tiled watermark, a repeated sign, duplicated subtitle boxes."""
    tiles = [(200, 120), (1080, 120), (200, 420), (1080, 420)]
    frames = []
    for i in range(8):
        lines = [line("vmm.tv", x, y, h=24) for x, y in tiles]
        if i in (2, 3):
            lines += [line("SALE", 300 + 120 * k, 300, h=40) for k in range(6)]
        # "Same words" on 3 of 8 frames: a subtitle, not a constant line.
        text = ["Same words", "Same words", "Other words", "Third line", "Same words", "Fourth one",
                "Fifth text", "Last"][i]
        lines += [sub(text), sub(text, cy=642)]
        frames.append(lines)
    return video(frames)


def test_identical_text_on_many_lines():
    result = classify_video(_repeats_scenario(), W, H)
    assert result.overlay_texts == ["vmm.tv"]
    assert result.scene_texts == ["SALE"]
    assert result.subtitle_lines == ["Same words", "Other words", "Third line", "Fourth one",
                                     "Fifth text", "Last"]
    assert all(ds[:4] == ["overlay"] * 4 for ds in result.domains)
    assert result.domains[2][4:10] == ["scene"] * 6


def test_deterministic_within_and_across_processes():
    first = classify_video(_repeats_scenario(), W, H)
    assert classify_video(_repeats_scenario(), W, H) == first
    assert classify_video(_scenario(), W, H) == classify_video(_scenario(), W, H)
    # str hashing is randomised per process: the output must not depend on it.
    code = (
        "import json, sys; sys.path.insert(0, 'tests'); "
        "import test_ocr_domains as t; from models.ocr_domains import classify_video; "
        "r = [classify_video(s(), t.W, t.H) for s in (t._repeats_scenario, t._scenario)]; "
        "print(json.dumps([[x.domains, x.subtitle_lines, x.overlay_texts, x.scene_texts] for x in r]))"
    )
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True,
                             capture_output=True, text=True).stdout
        outputs.append(json.loads(out))
    assert outputs[0] == outputs[1]
    assert outputs[0][0][2] == ["vmm.tv"] and outputs[0][1][1][0] == "Hello world"


def test_config_validation():
    with pytest.raises(ValueError):
        DomainConfig(min_score=1.5)
    with pytest.raises(ValueError):
        DomainConfig(overlay_min_frames=0)
    with pytest.raises(ValueError):
        DomainConfig(position_tol=-0.1)


# ---------------------------------------------------------------------------------------------
# Word-by-word captions, slides


def test_word_by_word_caption_is_written_once_as_the_full_line():
    frames = video([[sub("Hello")], [sub("Hello big")], [sub("He1lo big world")], [sub("Hello big world")],
                    [sub("我们")], [sub("我们一起")], [sub("我们一起走吧")], [sub("Next line")]])
    result = classify_video(frames, W, H)
    assert result.subtitle_lines == ["He1lo big world", "我们一起走吧", "Next line"]
    assert all(d == ["subtitle"] for d in result.domains)  # each frame's line keeps its domain


def test_prefix_only_dropped_when_the_next_subtitle_frame_extends_it():
    # "Hello" comes back later as the start of a longer line, but another line came between.
    frames = video([[sub("Hello")], [sub("Something else")], [sub("Hello world")], [], [sub("Go")],
                    [sub("Going home")]])
    # an empty frame between does not separate a line from its extension ("Go" -> "Going home")
    assert classify_video(frames, W, H).subtitle_lines == ["Hello", "Something else", "Hello world",
                                                           "Going home"]


def slide_lines(footer_h=26, bullet_count=7):
    """A 1280x720 slide: title, left-aligned bullets reaching the lower band, a centred footer."""
    lines = [line("Vector search at scale", 420, 60, h=48)]
    # long bullets: centred enough (centre x 470) to sit in the subtitle place once in the band
    lines += [line(f"Point number {k} of the talk", 120 + 350, 170 + 72 * k, h=32, w=700)
              for k in range(bullet_count)]
    for k in range(bullet_count):  # all bullets share a left edge at x = 120
        assert abs(lines[1 + k].box[0] - 120) < 1
    lines += [line("Ada Lovelace  Alan Turing", 640, 655, h=footer_h),
              line("ada@example.org alan@example.org", 640, 692, h=footer_h)]
    return lines


def test_slide_text_in_the_lower_band_is_scene_not_subtitle():
    frames = video([slide_lines(), slide_lines()])
    result = classify_video(frames, W, H)
    assert result.subtitle_lines == []
    assert "Ada Lovelace Alan Turing" in result.scene_texts
    assert "ada@example.org alan@example.org" in result.scene_texts
    assert "Point number 6 of the talk" in result.scene_texts
    # without the rules (old behaviour) the lower bullets and the footer were subtitles
    assert not any("subtitle" in d for d in result.domains)


def test_caption_over_a_slide_stays_subtitle():
    lines = slide_lines(bullet_count=4) + [line("What we built this year", 640, 600, h=40)]
    # the footer is small print; the caption (40 px) stands out from the bullets (32 px)
    result = classify_video(video([lines]), W, H)
    assert result.subtitle_lines == ["What we built this year"]
    # as small as the bullets, it is one more line of the slide
    lines[-1] = line("What we built this year", 640, 600, h=32)
    assert classify_video(video([lines]), W, H).subtitle_lines == []


def test_three_rows_in_the_band_are_a_block_two_are_a_caption():
    two = [sub("First caption row", cy=600), sub("Second caption row", cy=650)]
    three = [sub("Row one of a block", cy=580), sub("Row two of a block", cy=630),
             sub("Row three of a block", cy=680)]
    assert classify_video(video([two]), W, H).subtitle_lines == ["First caption row", "Second caption row"]
    result = classify_video(video([three]), W, H)
    assert result.subtitle_lines == [] and len(result.scene_texts) == 3


def test_left_aligned_list_in_the_band_is_scene():
    # three lines with one left edge (x = 400), in the band and near the centre: a list, not a caption
    items = [line(text, 400 + 9 * len(text), cy, h=36) for text, cy in
             (("- apples and pears", 560), ("- oranges", 620), ("- the last item", 680))]
    result = classify_video(video([items]), W, H)
    assert "- oranges" in result.scene_texts and result.subtitle_lines == []


def test_slide_text_stays_slide_text_on_a_frame_that_shows_little_of_the_slide():
    # frame 0 shows only the band of a slide (the rest not read yet); frame 1 the whole slide
    partial = [line("Point number 6 of the talk", 470, 602, h=32, w=700)]
    frames = video([partial, slide_lines()])
    result = classify_video(frames, W, H)
    assert result.subtitle_lines == []
    assert result.domains[0] == ["scene"]
    # the same words elsewhere on screen are another line: still a subtitle there
    moved = [line("Point number 6 of the talk", 640, 660, h=32, w=700)]
    assert classify_video(video([moved, slide_lines()]), W, H).subtitle_lines == ["Point number 6 of the talk"]


# ---------------------------------------------------------------------------------------------
# Speech as evidence (rules 3e-3g)


@dataclasses.dataclass(frozen=True)
class Seg:
    """Stand-in for models.asr.AsrSegment."""

    start_s: float
    end_s: float
    text: str


def test_words_split_latin_runs_and_cjk_characters():
    assert words("Hello, World! don't 2024年 我进去") == ["hello", "world", "don", "t", "2024", "年", "我", "进", "去"]
    assert words("  ~~ ") == []


def test_spoken_share_covers_letters_not_words():
    assert spoken_share("thankyouforlisteningtoday", {"thank", "you", "for", "listening", "today"}) == 1.0
    assert spoken_share("adalovelacealanturing", {"i", "am", "ada", "lovelace"}) < 0.6  # "am": 2 letters
    assert spoken_share("abc", {"a", "b", "c"}) == 0.0  # one Latin letter covers nothing
    assert spoken_share("我进去帮他", set("我去帮")) == pytest.approx(0.6)
    assert spoken_share("", {"x"}) == 0.0


def test_heard_caption_as_small_as_the_slide_text_is_a_subtitle():
    """A lecture whose captions are as small as its bullets: rule 3b takes them for the slide's small
    print; the words spoken at that moment say it is a caption."""
    caption = "What we built this year"
    # the slide at t = 0, 1, 2 s of 8 (on every frame it would be overlay)
    frames = video([slide_lines(bullet_count=4) + [line(caption, 640, 600, h=32)]] * 3 + [[]] * 5)
    assert classify_video(frames, W, H).subtitle_lines == []
    spoken = [Seg(0.4, 2.5, " So what we built this year is an index."), Seg(5.0, 7.0, " Next slide.")]
    result = classify_video(frames, W, H, speech=spoken)
    assert result.subtitle_lines == [caption]
    assert [d[-1] for d in result.domains[:3]] == ["subtitle"] * 3
    assert "Ada Lovelace Alan Turing" in result.scene_texts  # the footer is not spoken: still small print
    # the same words spoken a minute later are not this caption's speech
    later = [Seg(60.0, 62.0, " So what we built this year is an index.")]
    assert classify_video(frames, W, H, speech=later).subtitle_lines == []
    # two of its five words spoken is not enough
    assert classify_video(frames, W, H, speech=[Seg(0.0, 3.0, " We sat here this morning.")]).subtitle_lines == []
    # PP-OCR drops spaces: the words are found inside the line all the same
    merged = video([slide_lines(bullet_count=4) + [line("Whatwebuilt thisyear", 640, 600, h=32)]] * 3 + [[]] * 5)
    assert classify_video(merged, W, H, speech=spoken).subtitle_lines == ["Whatwebuilt thisyear"]


def test_a_bullet_read_aloud_is_still_slide_text():
    frames = video([slide_lines(), slide_lines()])
    spoken = [Seg(0.0, 2.0, " Point number six of the talk. Point number 6 of the talk.")]
    result = classify_video(frames, W, H, speech=spoken)
    assert result.subtitle_lines == []  # a list (3a) and the footer block stay slide text
    assert "Point number 6 of the talk" in result.scene_texts


def title_slide():
    return [line("Vector search at scale", 640, 150, h=56),
            line("Ada Lovelace   Alan Turing", 640, 620, h=30), line("ada@example.org   alan@example.org", 640, 670, h=30)]


def test_silent_title_slide_is_not_subtitles_on_a_video_with_speech():
    """A title slide with two rows at the bottom (no rule of 3a-3d takes them: two centred rows on a
    frame with one other row), shown before anyone speaks: a block with no speech around it."""
    frames = video([title_slide(), title_slide(), [], [], [], [], [], []])  # the slide at 0-1 s
    names = ["Ada Lovelace Alan Turing", "ada@example.org alan@example.org"]
    assert classify_video(frames, W, H).subtitle_lines == names  # no speech: no evidence
    talk = [Seg(4.0, 7.5, " Hello, this talk is about searching videos.")]
    result = classify_video(frames, W, H, speech=talk)
    assert result.subtitle_lines == []
    assert all(n in result.scene_texts for n in names)
    # spoken over (within speech_tol_s of a sighting): no evidence against
    assert classify_video(frames, W, H, speech=[Seg(1.5, 3.0, " Hello.")]).subtitle_lines == names
    # a segment with no words is no speech
    assert classify_video(frames, W, H, speech=[Seg(4.0, 7.5, " ...")]).subtitle_lines == names


def test_lone_caption_with_no_speech_around_stays_a_subtitle():
    """One or two caption rows with nothing spoken near them (music, a line Whisper missed) keep their
    label: silence alone is weak evidence."""
    frames = video([[sub("Three days later")], [sub("Three days later")], [], [], [], []])
    talk = [Seg(4.0, 5.5, " Good morning everyone.")]
    assert classify_video(frames, W, H, speech=talk).subtitle_lines == ["Three days later"]
    two_rows = video([[sub("First row", cy=600), sub("Second row", cy=650)], [], [], [], [], []])
    assert classify_video(two_rows, W, H, speech=talk).subtitle_lines == ["First row", "Second row"]


def test_no_speech_is_no_evidence():
    for frames in (_scenario(), video([title_slide()]), video([slide_lines(bullet_count=4)])):
        base = classify_video(frames, W, H)
        assert classify_video(frames, W, H, speech=None) == base
        assert classify_video(frames, W, H, speech=[]) == base


def test_speech_settings_are_validated():
    for kwargs in (dict(speech_match=1.5), dict(speech_tol_s=-1.0), dict(speech_min_chars=0),
                   dict(silent_block_rows=0), dict(outlast_segments=0)):
        with pytest.raises(ValueError):
            DomainConfig(**kwargs)


def test_a_line_on_screen_while_the_speech_moves_on_is_not_a_caption():
    """A slide's tagline in the subtitle place, larger than its bullets, on screen for 30 s of talk:
    captions change with the speech; this does not. A caption held over two sentences is still one,
    and a line that comes back later does not count the speech in between."""
    slide = [line("What", 640, 100, h=60), line("413M image-text pairs", 500, 250, h=40, w=500),
             line("Source: Common Crawl", 480, 330, h=40, w=460), line("Community project", 640, 560, h=60)]
    frames = [FrameText(k, 5.0 * k, tuple(slide)) for k in range(7)] + [FrameText(7 + k, 40.0 + k, ()) for k in range(8)]
    talk = [Seg(2.0 + 5 * k, 6.5 + 5 * k, f" Sentence number {k} of the talk.") for k in range(7)]
    assert classify_video(frames, W, H).subtitle_lines == ["Community project"]
    result = classify_video(frames, W, H, speech=talk)
    assert result.subtitle_lines == [] and "Community project" in result.scene_texts
    held = video([[sub("Held over two sentences")]] * 2 + [[]] * 6)  # at 0 and 1 s
    two = [Seg(0.0, 0.6, " Held over"), Seg(0.7, 1.5, " two sentences.")]
    assert classify_video(held, W, H, speech=two).subtitle_lines == ["Held over two sentences"]
    back = video([[sub("We will be right back")], [], [], [], [], [], [], [], [sub("We will be right back")]])
    many = [Seg(k + 0.1, k + 0.9, f" Word {k}.") for k in range(9)]
    assert classify_video(back, W, H, speech=many).subtitle_lines == ["We will be right back"]
