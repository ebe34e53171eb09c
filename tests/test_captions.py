"""Quick captions, word-by-word captions, slides and a talking head: generated videos, real decoding
and real OCR (RapidOCR), end to end through the text-frame detector and the domain rules.

Videos are made here (tests/avgen.py): captions are white with a black outline, no box, centred in
the lower band, over a footage-like moving background; Chinese ones need a CJK font (Debian package
fonts-wqy-microhei: CI installs it; a run without it skips here and fails under CI=true).
"""

from __future__ import annotations

import difflib
import re

import numpy as np
import pytest

from models.decode import DecodeConfig, decode_keyframes
from models.ocr import OcrConfig, load_engine
from models.textframes import TextSamplingConfig
from schemas.elements import OcrInput
from tests.avgen import Caption, Footage, caption_video, cjk_font, draw_caption, mux_av, slide_image
from tests.conftest import TINY_MODEL, missing_prerequisite
from transforms.ocr import label_with_speech, read_video

pytestmark = pytest.mark.slow

SIZE = (640, 360)
MATCH = 0.8


@pytest.fixture(scope="module")
def engine():
    return load_engine(OcrConfig())


@pytest.fixture(scope="module", autouse=True)
def cjk():
    if cjk_font() is None:
        missing_prerequisite("no CJK font installed (apt-get install fonts-wqy-microhei)")


def norm(text: str) -> str:
    return re.sub(r"[\W_]", "", text.lower())


def found(truth: str, lines) -> bool:
    t = norm(truth)
    return any(difflib.SequenceMatcher(None, t, norm(x)).ratio() >= MATCH for x in lines)


def read(path: str, engine, text: TextSamplingConfig = TextSamplingConfig()):
    decoded = decode_keyframes(path, DecodeConfig(text=text))
    item = OcrInput("v", decoded.width, decoded.height, tuple(decoded.ocr_frames))
    return decoded, read_video(engine, item)


def covered(decoded, captions) -> list[bool]:
    """Per caption: whether a frame OCR sees (read or reusing) falls inside its interval."""
    times = [f.timestamp_s for f in decoded.ocr_frames]
    return [any(c.start_s <= t < c.end_s for t in times) for c in captions]


# Back to back, 0.3-1.0 s each, Chinese and English alternating.
QUICK = [("快走", 0.3), ("Run now", 0.4), ("我进去帮他", 0.5), ("Go left", 0.35), ("你们接着善后", 0.8),
         ("Not here", 0.3), ("空间里面", 0.6), ("Watch out", 1.0), ("他赢不了", 0.45), ("Too late", 0.7)]


def timeline(lines, start=0.6, gap=0.0):
    out, t = [], start
    for text, d in lines:
        out.append(Caption(round(t, 3), round(t + d, 3), text))
        t += d + gap
    return out


def test_quick_captions_over_moving_footage_are_each_read(tmp_path, engine):
    captions = timeline(QUICK)
    path = caption_video(str(tmp_path / "quick.mp4"), captions, captions[-1].end_s + 0.6, size=SIZE, seed=1)
    decoded, result = read(path, engine)
    missing = [c.text for c in captions if not found(c.text, result.subtitle_lines)]
    assert missing == [], (missing, result.subtitle_lines)
    # each line once, nothing else: every subtitle line out is one of the captions
    assert all(any(found(c.text, [x]) for c in captions) for x in result.subtitle_lines), result.subtitle_lines
    assert len(result.subtitle_lines) == len(captions)
    # the slow rule alone (stable over 3 ticks of 0.375 s) does not even look at most of them
    slow, _ = decode_keyframes(path, DecodeConfig(text=TextSamplingConfig(quick_line_s=0))), None
    assert sum(covered(slow, captions)) < len(captions) - 2 <= sum(covered(decoded, captions)) - 2


def test_captions_with_gaps_and_a_long_line(tmp_path, engine):
    captions = timeline([("先别动", 0.3), ("Stop there", 0.5), ("等一下", 1.2), ("Keep going now", 2.0)],
                        gap=0.25)
    path = caption_video(str(tmp_path / "gaps.mp4"), captions, captions[-1].end_s + 0.5, size=SIZE, seed=2)
    _, result = read(path, engine)
    assert [c.text for c in captions if not found(c.text, result.subtitle_lines)] == []


def test_word_by_word_caption_ends_up_as_the_full_line_once(tmp_path, engine):
    words = ["we", "are", "going", "home", "today"]
    growing = [(" ".join(words[: k + 1]), 0.4) for k in range(len(words))]
    zh = "我们一起回家"
    growing += [(zh[: k + 2], 0.4) for k in range(0, len(zh) - 1, 2)]
    growing += [("Next line please", 0.8)]
    captions = timeline(growing)
    path = caption_video(str(tmp_path / "words.mp4"), captions, captions[-1].end_s + 0.5, size=SIZE, seed=3)
    _, result = read(path, engine)
    assert found("we are going home today", result.subtitle_lines)
    assert found(zh, result.subtitle_lines) and found("Next line please", result.subtitle_lines)
    assert len(result.subtitle_lines) == 3, result.subtitle_lines  # no prefix written on its own


SLIDES = [  # (title, bullets, footer): a title slide with its speakers, then two slides of bullets
    ("Vector search at scale", [], ["Ada Lovelace   Alan Turing", "ada@example.org   alan@example.org",
                                    "Analytical Engine Society"]),
    ("Why visual features", ["Inverted index over OCR text", "Dense vectors from CLIP frames",
                             "Visual words as int16 tokens", "Ranking with many features",
                             "Offline extraction done once", "Storage per video matters for a billion",
                             "Extraction cost per video matters even more"], ["Page 2"]),
    ("What the index stores", ["One vector for every video", "Tokens for every keyframe",
                               "Subtitles, overlays and scene text", "The spoken transcript",
                               "Model ids for every column", "Written once and read by many consumers",
                               "Readable by pyarrow, pandas, DuckDB and Spark"], ["Page 3"]),
]


def test_slide_text_is_scene_text_not_subtitles(tmp_path, engine):
    """A lecture: a title slide with its speakers' names, e-mails and affiliation at the bottom, then
    slides with a title, bullets reaching the lower band and a page footer, 4 s each. None of it is a
    subtitle (before the slide rules, the speakers and the last bullets were)."""
    slides = [slide_image(SIZE, title, bullets, footer) for title, bullets, footer in SLIDES]
    fps, per_slide = 10, 4.0

    def frame(i):
        return slides[min(int(i / fps / per_slide), len(slides) - 1)]

    path = mux_av(str(tmp_path / "slides.mp4"), None, duration_s=per_slide * len(slides), size=SIZE, fps=fps,
                  frames=frame)
    _, result = read(path, engine)
    assert not result.subtitle_lines, result.subtitle_lines
    scene = result.scene_texts
    for text in ("Ada Lovelace Alan Turing", "ada@example.org alan@example.org", "Analytical Engine Society",
                 "Extraction cost per video matters even more", "Readable by pyarrow, pandas, DuckDB and Spark",
                 "What the index stores"):
        assert found(text, scene), (text, scene)


def test_talking_head_captions_follow_the_speech(tmp_path, engine):
    """A talking head (a face-like shape nodding over a still room) whose captions change with the
    sentences spoken; every caption is a subtitle, the room's poster is not."""
    from pipelines.make_sample import AUDIO_SAMPLE_RATE, synthesize_speech

    sentences = ["Hello and welcome", "Today we cook rice", "First wash it twice", "Then boil the water"]
    audio, captions, t = [], [], 0.3
    for s in sentences:
        speech = synthesize_speech(s)
        if speech is None:
            missing_prerequisite("espeak-ng is not installed")
        d = len(speech) / AUDIO_SAMPLE_RATE
        captions.append(Caption(round(t, 3), round(t + d, 3), s))
        audio.append(speech)
        t += d
    w, h = SIZE
    room = Footage(SIZE, seed=4, speed=0.0)(0)
    from PIL import Image, ImageDraw

    poster = Image.fromarray(room)
    ImageDraw.Draw(poster).rectangle((30, 30, 230, 110), fill=(250, 250, 250))
    from tests.avgen import _font

    ImageDraw.Draw(poster).text((40, 55), "OPEN DAILY", font=_font(28, False), fill=(10, 10, 10))
    room = np.asarray(poster)
    yy, xx = np.ogrid[:h, :w]

    def head(i):
        img = room.copy()
        cy = 0.45 * h + 6 * np.sin(i / 4)
        img[((xx - w / 2) / 70) ** 2 + ((yy - cy) / 95) ** 2 < 1] = (225, 180, 150)
        return img

    samples = np.concatenate([np.zeros(int(0.3 * AUDIO_SAMPLE_RATE), np.float32)] + audio)
    path = caption_video(str(tmp_path / "talk.mp4"), captions, t + 0.4, size=SIZE, fps=25, background=head,
                         audio=samples, sample_rate=AUDIO_SAMPLE_RATE)
    decoded, result = read(path, engine)
    assert [c.text for c in captions if not found(c.text, result.subtitle_lines)] == []
    assert len(result.subtitle_lines) == len(captions)
    assert found("OPEN DAILY", result.scene_texts + result.overlay_texts)
    # with the transcript as evidence (as when the row is made): the captions are heard, still subtitles
    from models.asr import AsrConfig, AsrEngine

    asr = AsrEngine(AsrConfig(threads=2)).load().transcribe(samples)
    assert asr.segments and "rice" in asr.text.lower(), asr.text
    times = {f.frame_index: f.timestamp_s for f in decoded.ocr_frames}
    heard = label_with_speech(result, times, decoded.width, decoded.height, asr.segments)
    assert heard.subtitle_lines == result.subtitle_lines
    assert found("OPEN DAILY", heard.scene_texts + heard.overlay_texts)


def test_a_cut_with_a_new_caption_is_read_once(tmp_path):
    """At a cut that brings a new caption the quick rule fires a tick before the cut detector; the
    band read is dropped when the cut's keyframe shows the same band (one read, not two)."""
    a, b = Footage(SIZE, seed=5, speed=1.0), Footage(SIZE, seed=6, speed=1.0)
    fps = 25
    captions = [Caption(0.5, 2.0, "Before the cut"), Caption(2.0, 4.0, "After the cut")]
    path = caption_video(str(tmp_path / "cut.mp4"), captions, 4.5, size=SIZE, fps=fps,
                         background=lambda i: a(i) if i < 2.0 * fps else b(i) // 2 + 120)
    decoded = decode_keyframes(path, DecodeConfig(text=TextSamplingConfig()))
    cuts = [c.timestamp_s for c, _ in decoded.keyframes if c.reason == "scene"]
    assert cuts and 2.0 <= cuts[0] < 2.5
    near = [f for f in decoded.ocr_frames if 2.0 <= f.timestamp_s <= cuts[0]]
    assert [f.reason for f in near] == ["scene"], [(f.timestamp_s, f.reason) for f in near]
    assert all(covered(decoded, captions))


def test_narrated_slide_deck_through_the_pipeline(tmp_path, tiny_checkpoint):
    """The slide deck with a spoken narration, through `vmm extract` (DirectRunner, OCR and ASR on):
    the `videos` row has the narration as speech and the slides as scene text. The speech is
    evidence: a title slide shown before anyone speaks, its two rows of names and e-mails at the
    bottom, is not subtitles (without speech it would be: two centred rows under a title), and a
    caption as small as the slide's bullets is a subtitle because its words are spoken (without
    speech it would be the slide's small print)."""
    import json

    import pyarrow.parquet as pq

    from pipelines import extract
    from pipelines.make_sample import AUDIO_SAMPLE_RATE, synthesize_speech

    narration = ["", "Hello, this talk is about searching videos.", "The index stores one vector a video.",
                 "Thank you for listening today."]
    slots = []
    for text in narration:
        if not text:
            slots.append(np.zeros(4 * AUDIO_SAMPLE_RATE, np.float32))
            continue
        speech = synthesize_speech(text)
        if speech is None:
            missing_prerequisite("espeak-ng is not installed")
        slot = np.zeros(4 * AUDIO_SAMPLE_RATE, np.float32)
        slot[AUDIO_SAMPLE_RATE // 4 : AUDIO_SAMPLE_RATE // 4 + len(speech)] = speech[: 15 * AUDIO_SAMPLE_RATE // 4]
        slots.append(slot)
    silent_title = slide_image(SIZE, "Before we start", [],
                               ["Grace Hopper   Edsger Dijkstra", "grace@example.org   edsger@example.org"])
    captioned = slide_image(SIZE, "Questions", ["Slides are online", "Code is open source"])
    # outlined, 11 px: as tall as the bullets once read (the outline adds to the box)
    captioned = draw_caption(captioned, narration[3].rstrip("."), px=11)
    slides = [silent_title] + [slide_image(SIZE, title, bullets, footer) for title, bullets, footer in SLIDES[:2]]
    slides.append(captioned)
    path = mux_av(str(tmp_path / "talk.mp4"), np.concatenate(slots), sample_rate=AUDIO_SAMPLE_RATE, size=SIZE,
                  fps=10, frames=lambda i: slides[min(i // 40, len(slides) - 1)])
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"uri": path, "video_id": "talk"}) + "\n")
    out = tmp_path / "out"
    assert extract.run(["--input", str(manifest), "--output", str(out), "--clip-model", TINY_MODEL,
                        "--clip-pretrained", tiny_checkpoint, "--no-progress"]) == 0
    (row,) = pq.read_table(str(out / "videos")).to_pylist()
    subtitles = (row["ocr_subtitle_text"] or "").split("\n")
    assert len(subtitles) == 1 and found("Thank you for listening today", subtitles), subtitles
    scene = (row["ocr_scene_text"] or "").split("\n")
    for text in ("Grace Hopper Edsger Dijkstra", "grace@example.org edsger@example.org", "Ada Lovelace Alan Turing",
                 "Extraction cost per video matters even more", "Slides are online"):
        assert found(text, scene), (text, scene)
    # the frames table carries the same labels
    frames = pq.read_table(str(out / "frames")).to_pylist()
    labels = {x["text"]: x["domain"] for f in frames for x in f["ocr"] or ()}
    assert [t for t, d in labels.items() if d == "subtitle" and found("Thank you for listening today", [t])]
    assert not [t for t, d in labels.items() if d == "subtitle" and found("Grace Hopper Edsger Dijkstra", [t])]
    assert "thank you for listening" in (row["asr_text"] or "").lower(), row["asr_text"]  # the narration is speech
