"""OCR and ASR through the whole extract pipeline: generated videos, real media, partial failures."""

from __future__ import annotations

import difflib
import json
import os
import re
import sys

import numpy as np
import pyarrow as pa
import pytest

from models.decode import DecodeConfig, decode_keyframes
from models.keyframes import SamplingConfig
from models.textframes import TextSamplingConfig
from pipelines.make_sample import LOGO_TEXT, ShotSpec, make_video
from schemas.elements import OcrInput, StageError, VideoAsr, VideoOcr
from tests.avgen import load_wav, mux_av
from tests.test_pipeline import read, run_extract

JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def squash(text: str) -> str:
    """Lower-case letters and digits only: PP-OCR sometimes drops the spaces of English lines."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, squash(a), squash(b)).ratio()


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(" ".join(words(reference)), " ".join(words(hypothesis)))


# Eight lines, each on screen 1.6 s, over ONE long shot: no cut, so the CLIP keyframes (capped at 2
# below) cannot be what finds them -- only the text-change triggers can.
SUBTITLES = [
    "Rivers carve the valley floor.",
    "Snow melts in early spring.",
    "Bees visit the orchard daily.",
    "Old mills grind the grain.",
    "Lanterns glow along the pier.",
    "Trains arrive before noon.",
    "Kites rise above the dunes.",
    "Owls hunt after dusk.",
]


@pytest.fixture(scope="module")
def subtitle_video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subs")
    path = str(folder / "subs.mp4")
    step = 1.6
    cues = [(i * step, (i + 1) * step, text) for i, text in enumerate(SUBTITLES)]
    shot = ShotSpec(duration_s=step * len(SUBTITLES), background=(40, 70, 110), layout="gradient",
                    shape="circle", motion="horizontal", speed=0.15)
    make_video(path, shots=[shot], subtitles=cues, logo=LOGO_TEXT, speech_text=None, audio=False)
    manifest = folder / "manifest.jsonl"
    manifest.write_text(json.dumps({"uri": path, "video_id": "subs"}) + "\n")
    return str(manifest), path


@pytest.fixture(scope="module")
def subtitle_run(subtitle_video, tiny_checkpoint, tmp_path_factory):
    manifest, _ = subtitle_video
    out = tmp_path_factory.mktemp("subs-out")
    rc, summary = run_extract(out, manifest, tiny_checkpoint, "--no-asr", "--max-frames", "2")
    assert rc == 0
    return str(out), summary


def test_every_subtitle_line_is_read_once_in_order(subtitle_run):
    out, _ = subtitle_run
    video = read(out, "videos").to_pylist()[0]
    lines = video["ocr_subtitle_text"].split("\n")
    assert len(lines) == len(SUBTITLES), lines
    for got, want in zip(lines, SUBTITLES):
        assert similar(got, want) >= 0.85, (got, want)


def test_the_corner_logo_is_overlay_and_nowhere_else(subtitle_run):
    out, _ = subtitle_run
    video = read(out, "videos").to_pylist()[0]
    assert squash(LOGO_TEXT) in [squash(t) for t in video["ocr_overlay_text"].split("\n")]
    for column in ("ocr_subtitle_text", "ocr_scene_text"):
        assert squash(LOGO_TEXT) not in squash(video[column] or ""), column
    frames = read(out, "frames").to_pylist()
    for frame in frames:
        for line in frame["ocr"]:
            if squash(line["text"]) == squash(LOGO_TEXT):
                assert line["domain"] == "overlay"


def test_text_frames_have_rows_but_no_clip_work(subtitle_run):
    out, summary = subtitle_run
    frames = read(out, "frames").to_pylist()
    reasons = [f["reason"] for f in frames]
    assert reasons.count("text") >= len(SUBTITLES) - 2  # the CLIP keyframes (at most 2) may cover some
    assert len([r for r in reasons if r != "text"]) <= 2
    assert [f["frame_index"] for f in frames] == sorted(f["frame_index"] for f in frames)
    assert all(f["ocr"] is not None for f in frames)
    # Boxes are in pixels of the original 640x360 frame.
    boxes = np.array([line["box"] for f in frames for line in f["ocr"]])
    assert boxes[:, 0::2].max() <= 640 + 2 and boxes[:, 1::2].max() <= 360 + 2 and boxes.min() >= -2
    ocr = summary["ocr"]
    assert ocr["frames_read"] + ocr["frames_reused"] == len(frames)
    assert ocr["frames_read"] >= len(SUBTITLES)
    assert summary["counts"]["frames"] == len(frames)


def test_text_frames_come_from_text_changes_not_the_clock(subtitle_video):
    _, path = subtitle_video
    decoded = decode_keyframes(path, DecodeConfig(text=TextSamplingConfig(), short_side=64))
    text_times = [f.timestamp_s for f in decoded.ocr_frames]
    # Each 1.6 s cue window holds at least one frame OCR sees (keyframe or text frame).
    for i in range(len(SUBTITLES)):
        assert any(1.6 * i <= t < 1.6 * (i + 1) for t in text_times), (i, text_times)
    # ... and not many more: the triggers follow the text, not every analysis tick.
    assert len(decoded.ocr_frames) <= 2 * len(SUBTITLES) + 2


def test_text_frame_cap_grows_with_the_video(subtitle_video):
    _, path = subtitle_video

    def cue_windows(**text):
        decoded = decode_keyframes(path, DecodeConfig(SamplingConfig(max_frames=2), text=TextSamplingConfig(**text),
                                                      short_side=64))
        texts = sum(f.reason == "text" for f in decoded.ocr_frames)
        seen = [f.timestamp_s for f in decoded.ocr_frames]  # keyframes are read too
        return texts, sum(any(1.6 * i <= t < 1.6 * (i + 1) for t in seen) for i in range(len(SUBTITLES)))

    # A fixed cap of 2 text frames (and at most 2 keyframes) cannot cover 8 lines in 12.8 s ...
    n, covered = cue_windows(max_text_frames=2, text_frames_per_min=0)
    assert n == 2 and covered <= 4
    # ... one frame per 1.6 s line (37.5 a minute; 40 a minute is 9 frames here) can.
    n, covered = cue_windows(max_text_frames=2, text_frames_per_min=40)
    assert 6 <= n <= 9 and covered == len(SUBTITLES)


@pytest.fixture(scope="module")
def media_text_run(media_dir, tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("media-text")
    manifest = folder / "manifest.jsonl"
    with open(manifest, "w") as f:
        for name in ("testvideo.mp4", "smpte-2997.mp4"):
            f.write(json.dumps({"uri": os.path.join(media_dir, "video", name), "video_id": name}) + "\n")
    out = folder / "out"
    rc, summary = run_extract(out, manifest, tiny_checkpoint, "--no-asr")
    assert rc == 0 and summary["accounting_ok"]
    return str(out)


def test_watermark_of_testvideo_is_overlay(media_text_run):
    videos = {v["video_id"]: v for v in read(media_text_run, "videos").to_pylist()}
    overlay = squash(videos["testvideo.mp4"]["ocr_overlay_text"] or "")
    assert "bcastell" in overlay and "brandoncastellano" in overlay
    assert "bcastell" not in squash(videos["testvideo.mp4"]["ocr_subtitle_text"] or "")
    for column in ("ocr_subtitle_text", "ocr_scene_text"):  # not even its misread variants
        assert "castellano" not in squash(videos["testvideo.mp4"][column] or ""), column


def test_burned_in_counters_of_smpte_are_read(media_text_run):
    frames = [f for f in read(media_text_run, "frames").to_pylist() if f["video_id"] == "smpte-2997.mp4"]
    texts = {f["frame_index"]: " ".join(line["text"] for line in f["ocr"]) for f in frames}
    # The timecode reads HH:MM:SS;FF or HH:MM:SS:FF; its seconds field must follow the frame time.
    seen = 0
    for f in frames:
        m = re.search(r"00:00:(\d\d)[;:](\d\d)", texts[f["frame_index"]])
        if m:
            seen += 1
            assert abs(int(m.group(1)) + int(m.group(2)) / 30 - f["timestamp_s"]) < 1.0, (m.group(0), f["timestamp_s"])
    assert seen >= 3


class _FlakyEngine:
    """Reads with the real engine, except that it fails on one chosen frame."""

    def __init__(self, engine, fail_on: int):
        self._engine, self._fail_on, self.calls = engine, fail_on, 0

    def read(self, image, upright=False):
        self.calls += 1
        if self.calls == self._fail_on:
            raise RuntimeError("engine exploded")
        return self._engine.read(image, upright)


def test_a_frame_the_engine_fails_on_is_a_stage_error_not_a_lost_video(subtitle_video):
    from models.ocr import OcrConfig
    from transforms.ocr import engine_for, read_video

    _, path = subtitle_video
    decoded = decode_keyframes(path, DecodeConfig(text=TextSamplingConfig(), short_side=64))
    item = OcrInput("subs", decoded.width, decoded.height, tuple(decoded.ocr_frames))
    with engine_for(OcrConfig()) as engine:
        result = read_video(_FlakyEngine(engine, fail_on=2), item)
    assert [e.stage for e in result.errors] == ["ocr"] and "engine exploded" in result.errors[0].message
    failed = [lines for _, lines in result.frames if lines is None]
    assert len(failed) >= 1  # the failed frame (and any frame reusing it) has no lines
    assert len(result.subtitle_lines) >= len(SUBTITLES) - 2  # the others were still read


def test_stage_errors_land_on_the_video_row():
    from transforms.assemble import AssembleConfig, video_row
    from schemas.elements import KeyframeMeta, VideoInfo, VideoRequest

    info = VideoInfo(VideoRequest("v", "v.mp4", 0), 1.0, 25.0, 64, 64, "h264", True,
                     (KeyframeMeta(0, 0.0, "first"),), 25, notes=(StageError("asr", "AudioDecodeError", "bad"),))
    ocr = VideoOcr(((0, None),), (), (), (), 0, 1, errors=(StageError("ocr", "RuntimeError", "frame 0: x"),))
    asr = VideoAsr(None, StageError("asr", "RuntimeError", "whisper died"))
    emb = np.eye(1, 8, dtype=np.float32)
    row = video_row(info, emb, None, AssembleConfig(), ocr, asr)
    # Every partial failure is on the row, whole and in order: the decoder's, OCR's, ASR's.
    assert row["stage_errors"] == [
        {"stage": "asr", "error_type": "AudioDecodeError", "message": "bad"},
        {"stage": "ocr", "error_type": "RuntimeError", "message": "frame 0: x"},
        {"stage": "asr", "error_type": "RuntimeError", "message": "whisper died"},
    ]
    # A failed stage's columns are null (not empty text); the video keeps its real features.
    assert row["asr_text"] is None and row["asr_language"] is None
    assert (row["ocr_subtitle_text"], row["ocr_overlay_text"], row["ocr_scene_text"]) == (None, None, None)
    np.testing.assert_array_equal(row["embedding"], [127] + [0] * 7)  # int8 codes of a unit vector
    assert row["embedding_scale"] == pytest.approx(1 / 127)
    assert row["num_keyframes"] == 1 and row["has_audio"] is True
    # The row fits the table it goes to.
    from schemas.forward_index import videos_schema

    written = pa.Table.from_pylist([row], schema=videos_schema(8)).to_pylist()[0]
    assert written["stage_errors"] == row["stage_errors"]


@pytest.fixture(scope="module")
def speech_run(media_dir, tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    jfk, rate = load_wav(os.path.join(media_dir, "audio", "jfk.wav"))
    jfk = jfk if jfk.ndim == 1 else jfk.mean(axis=0)
    paths = {
        "jfk": mux_av(str(folder / "jfk.mp4"), jfk, sample_rate=rate),
        "jfk-stereo": mux_av(str(folder / "jfk-stereo.mp4"), jfk, sample_rate=rate, channels=2),
        "mute": mux_av(str(folder / "mute.mp4"), None, duration_s=4.0),
        "silent": mux_av(str(folder / "silent.mp4"), np.zeros(6 * rate, np.float32), sample_rate=rate),
    }
    mandarin, zh_rate = load_wav(os.path.join(media_dir, "audio", "aishell-BAC009S0724W0121.wav"))
    paths["mandarin"] = mux_av(str(folder / "mandarin.mp4"), mandarin, sample_rate=zh_rate)
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"uri": p, "video_id": k}) + "\n" for k, p in paths.items()))
    out = folder / "out"
    rc, summary = run_extract(out, manifest, tiny_checkpoint, "--no-ocr")
    assert rc == 0 and summary["accounting_ok"]
    return str(out), summary


def test_speech_is_transcribed_inside_the_pipeline(speech_run):
    out, summary = speech_run
    videos = {v["video_id"]: v for v in read(out, "videos").to_pylist()}
    for vid in ("jfk", "jfk-stereo"):
        v = videos[vid]
        assert v["has_audio"] and v["asr_language"] == "en"
        # tiny.en int8 reads this clip with a WER around 0.05; 0.2 leaves room for codec and runtime drift.
        assert wer(JFK, v["asr_text"]) <= 0.2, v["asr_text"]
        assert 5.0 < v["speech_seconds"] <= v["duration_s"] + 0.1
        assert v["stage_errors"] == []
    assert summary["asr"]["videos"] == 4  # jfk, jfk-stereo, silent and mandarin have audio; mute has none
    assert summary["asr"]["unsupported_language"] == 1  # mandarin


def test_segments_are_ordered_inside_the_video(speech_run):
    out, _ = speech_run
    videos = {v["video_id"]: v for v in read(out, "videos").to_pylist()}
    segments = read(out, "asr_segments").to_pylist()
    by_video: dict[str, list[dict]] = {}
    for s in segments:
        by_video.setdefault(s["video_id"], []).append(s)
    # No segments for mandarin: its transcript was withheld (test_speech_in_another_language_keeps_its_row).
    assert set(by_video) <= {"jfk", "jfk-stereo", "silent"} and {"jfk", "jfk-stereo"} <= set(by_video)
    for vid, segs in by_video.items():
        segs.sort(key=lambda s: s["segment_index"])
        assert [s["segment_index"] for s in segs] == list(range(len(segs)))
        starts = [s["start_s"] for s in segs]
        assert starts == sorted(starts)
        for s in segs:
            assert 0 <= s["start_s"] <= s["end_s"] <= videos[vid]["duration_s"] + 0.05
        joined = " ".join(s["text"].strip() for s in segs)
        assert words(joined) == words(videos[vid]["asr_text"])


def test_no_audio_and_silent_audio(speech_run):
    out, _ = speech_run
    videos = {v["video_id"]: v for v in read(out, "videos").to_pylist()}
    mute = videos["mute"]
    assert not mute["has_audio"] and mute["asr_text"] is None and mute["stage_errors"] == []
    silent = videos["silent"]
    assert silent["has_audio"] and silent["stage_errors"] == []
    assert silent["speech_seconds"] < 0.5  # VAD finds no speech in digital silence
    segments = [s for s in read(out, "asr_segments").to_pylist() if s["video_id"] == "silent"]
    assert silent["asr_text"] == "" or all(s["no_speech_prob"] > 0.5 for s in segments)
    assert silent["asr_language"] is None and mute["asr_language"] is None  # no speech: no language


def test_speech_in_another_language_keeps_its_row(speech_run):
    """Mandarin through the English-only default model: no English nonsense, a stage error instead."""
    out, _ = speech_run
    videos = {v["video_id"]: v for v in read(out, "videos").to_pylist()}
    zh = videos["mandarin"]
    assert zh["has_audio"] and zh["embedding"] is not None
    assert zh["asr_text"] is None and zh["asr_language"] is None and zh["asr_language_probability"] is None
    assert zh["speech_seconds"] > 3.0  # VAD heard speech
    assert [(e["stage"], e["error_type"]) for e in zh["stage_errors"]] == [("asr", "UnsupportedLanguage")]
    assert "English-only" in zh["stage_errors"][0]["message"]
    assert not [s for s in read(out, "asr_segments").to_pylist() if s["video_id"] == "mandarin"]


def _same_ocr(a: VideoOcr, b: VideoOcr) -> bool:
    def frames(x):
        return [(i, None if lines is None else [(l.text, l.score, l.box.tolist(), l.domain) for l in lines])
                for i, lines in x.frames]

    return (frames(a) == frames(b) and a.subtitle_lines == b.subtitle_lines and a.overlay_texts == b.overlay_texts
            and a.scene_texts == b.scene_texts and (a.frames_read, a.frames_reused) == (b.frames_read, b.frames_reused)
            and a.errors == b.errors)


@pytest.fixture(scope="module")
def subtitle_ocr_input(subtitle_video):
    _, path = subtitle_video
    decoded = decode_keyframes(path, DecodeConfig(text=TextSamplingConfig(), short_side=64))
    return OcrInput("subs", decoded.width, decoded.height, tuple(decoded.ocr_frames))


def test_split_reads_cuts_only_where_parts_are_self_contained(subtitle_ocr_input):
    from transforms.ocr import split_reads

    item = subtitle_ocr_input
    reads = sum(f.image is not None for f in item.frames)
    bands = sum(f.image is not None and f.crop_top > 0 for f in item.frames)
    assert reads >= 8 and bands >= 1  # the video exercises band-only reads
    assert len(split_reads(item, reads)) == 1
    for max_reads in (1, 2, 3):
        parts = split_reads(item, max_reads)
        assert len(parts) > 1
        assert tuple(f for p in parts for f in p.frames) == item.frames  # nothing lost, order kept
        for part in parts[1:]:
            first = part.frames[0]
            assert first.image is not None and not first.crop_top
            assert all(f.source >= first.frame_index for f in part.frames)
    with pytest.raises(ValueError):
        split_reads(item, 0)


def test_reading_in_parts_through_beam_equals_reading_whole(subtitle_ocr_input):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that

    from models.ocr import OcrConfig
    from transforms.ocr import ReadText, engine_for, read_video

    item = subtitle_ocr_input
    with engine_for(OcrConfig()) as engine:
        whole = read_video(engine, item)
    assert len(whole.subtitle_lines) >= len(SUBTITLES) - 1

    def check(results):
        [(video_id, parted)] = results
        assert video_id == "subs" and _same_ocr(parted, whole)

    from transforms.process_cache import pool_size

    # A config of its own, so that its engine pool starts empty here.
    here = OcrConfig(threads=1)
    for label, read_text in (("spread", ReadText(OcrConfig(), part_reads=2, spread=True)),
                             ("here", ReadText(here, part_reads=2, parallel=3))):
        with TestPipeline() as p:
            assert_that(p | beam.Create([item]) | read_text, check, label=label)
    assert pool_size("OCR", here) >= 2  # the parts were read at once, each on an engine of its own


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_ocr_threads_run_below_the_stage_thread():
    import threading

    from transforms.ocr import OCR_NICE, lower_thread_priority

    seen = {}

    def probe():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        seen["lowered"] = lower_thread_priority()
        seen["delta"] = os.getpriority(os.PRIO_PROCESS, tid) - before

    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=probe)
    worker.start()
    worker.join()
    assert seen["lowered"] and seen["delta"] == min(OCR_NICE, 19 - main)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main  # only that thread


def test_read_text_hands_each_video_its_own_lines_and_window(subtitle_ocr_input):
    import dataclasses

    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that
    from apache_beam.transforms import window

    from models.ocr import OcrConfig
    from transforms.ocr import ReadText, engine_for, read_video, split_reads

    whole = subtitle_ocr_input
    head = dataclasses.replace(split_reads(whole, 3)[0], video_id="head")  # a self-contained first part
    with engine_for(OcrConfig()) as engine:
        expected = {"subs": read_video(engine, whole), "head": read_video(engine, head)}
    assert len(expected["head"].subtitle_lines) < len(expected["subs"].subtitle_lines)
    items = [whole, head, dataclasses.replace(head, video_id="head2")]
    expected["head2"] = expected["head"]

    def check(results):
        got = {wv.value[0]: wv for wv in results}
        assert sorted(got) == ["head", "head2", "subs"]
        for i, item in enumerate(items):
            wv = got[item.video_id]
            assert _same_ocr(wv.value[1], expected[item.video_id]), item.video_id
            assert wv.windows == [window.IntervalWindow(i * 10, i * 10 + 10)]

    # At most 4 frames may wait: some videos go out from process(), the rest from finish_bundle.
    with TestPipeline() as p:
        out = (p | beam.Create(list(enumerate(items)))
               | beam.Map(lambda iv: window.TimestampedValue(iv[1], iv[0] * 10))
               | beam.WindowInto(window.FixedWindows(10))
               | ReadText(OcrConfig(), part_reads=2, parallel=2, max_pending_reads=4))
        assert_that(out, check, reify_windows=True)
