"""Bad input, crashes, hangs, kills and restarts: nothing lost, nothing hangs, reruns are exact."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction

import apache_beam as beam
import av
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from models.decode import DecodeConfig, DecodeError, decode_keyframes
from models.isolated import Crashed, Isolated, RemoteError, TimedOut
from pipelines.output import RUNS_DIR, committed_runs, run_of
from schemas.elements import VideoRequest
from tests.conftest import REPO, TINY_MODEL
from tests.test_decode import _write_audio_only
from tests.test_pipeline import read, run_extract
from transforms.decode import DecodeVideos


def _truncate(src: str, dst: str, size: int) -> str:
    with open(src, "rb") as f:
        data = f.read(size)
    with open(dst, "wb") as f:
        f.write(data)
    return dst


def _flip(src: str, dst: str, seed: int, flips: int = 40) -> str:
    data = bytearray(open(src, "rb").read())
    rng = random.Random(seed)
    for _ in range(flips):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    open(dst, "wb").write(bytes(data))
    return dst


def _zero_header(src: str, dst: str, n: int = 4096) -> str:
    data = bytearray(open(src, "rb").read())
    data[:n] = bytes(n)
    open(dst, "wb").write(bytes(data))
    return dst


def _tiny_video(path: str, size=(2, 2), frames=10) -> str:
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            img = np.full((size[1], size[0], 3), 20 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _hours_long(path: str, hours: float = 2.0) -> str:
    """A valid video that lasts `hours` but has one frame every 10 minutes (cheap to make and read)."""
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(1, 600), options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(int(hours * 6) + 1):
            img = np.full((64, 64, 3), (37 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _absurd_dimensions(path: str) -> str:
    # A YUV4MPEG2 stream whose header declares 12000x12000 frames (144 megapixels), then junk.
    # (FFmpeg itself refuses to open much larger declarations, which is a DecodeError.)
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W12000 H12000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(4096))
    return path


@pytest.fixture(scope="module")
def fuzz_corpus(media_dir, sample, tmp_path_factory):
    """(manifest path, {video_id: expected outcome}) -- outcome: an error_type, "video", or "either"."""
    d = tmp_path_factory.mktemp("fuzz")
    speech = sample["expected"]["videos"][0]["uri"]  # subtitles + speech: OCR and ASR have work
    nasa = os.path.join(media_dir, "video", "nasa_13013.mp4")  # two video and two audio streams
    entries: list[tuple[str, str, str]] = []  # (video_id, uri, expected)

    def add(vid, uri, expected):
        entries.append((vid, uri, expected))

    for src_name, src in (("speech", speech), ("nasa", nasa)):
        size = os.path.getsize(src)
        for frac in (0.0005, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999):
            cut = max(1, int(size * frac))
            add(f"{src_name}-cut-{cut}", _truncate(src, str(d / f"{src_name}-cut-{cut}.mp4"), cut), "either")
        for seed in range(4):
            add(f"{src_name}-flip-{seed}", _flip(src, str(d / f"{src_name}-flip-{seed}.mp4"), seed), "either")
        add(f"{src_name}-zero-header", _zero_header(src, str(d / f"{src_name}-zh.mp4")), "either")
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    add("zero-bytes", str(empty), "NotAMediaFile")
    text = d / "notes.mp4"
    text.write_text("this is not a video, just some text\n" * 50)
    add("text-as-video", str(text), "NotAMediaFile")
    image = shutil.copy(os.path.join(media_dir, "images", "en.jpg"), d / "photo.mp4")
    add("image-as-video", str(image), "NotAVideo")
    audio_only = str(d / "voice.mp4")
    _write_audio_only(audio_only)
    add("audio-only", audio_only, "NoVideoStream")
    add("missing", str(d / "no-such-file.mp4"), "FileNotFound")
    add("a-directory", str(d), "NotAFile")
    add("two-by-two", _tiny_video(str(d / "tiny.mp4")), "video")
    add("absurd-dimensions", _absurd_dimensions(str(d / "huge.y4m")), "TooLarge")
    add("hours-long", _hours_long(str(d / "long.mp4")), "video")
    named = shutil.copy(speech, d / "видео 视频 ビデオ ✓.mp4")
    add("名前-any-script", str(named), "video")
    add("good-speech", speech, "video")
    add("good-speech", nasa, "DuplicateVideoId")  # the second entry with this id
    manifest = d / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"uri": u, "video_id": v}) + "\n" for v, u, _ in entries), encoding="utf-8")
    return str(manifest), entries


@pytest.fixture(scope="module")
def fuzz_run(fuzz_corpus, tiny_checkpoint, tmp_path_factory):
    manifest, entries = fuzz_corpus
    out = tmp_path_factory.mktemp("fuzz-out")
    started = time.monotonic()
    rc, summary = run_extract(out, manifest, tiny_checkpoint, "--max-duration-s", "3600")
    return str(out), summary, rc, time.monotonic() - started


def test_fuzz_corpus_every_entry_accounted_for_exactly_once(fuzz_run, fuzz_corpus):
    out, summary, rc, _ = fuzz_run
    _, entries = fuzz_corpus
    assert rc == 0 and summary["accounting_ok"]
    assert summary["counts"]["entries"] == len(entries)
    videos = [r["video_id"] for r in read(out, "videos").to_pylist()]
    errors = [(r["video_id"], r["error_type"]) for r in read(out, "errors").to_pylist()]
    assert len(videos) == len(set(videos))
    assert len(videos) + len(errors) == len(entries)
    # Each entry: exactly one row, of the expected kind.
    rows = {}
    for vid in videos:
        rows.setdefault(vid, []).append("video")
    for vid, kind in errors:
        rows.setdefault(vid, []).append(kind)
    expected = {}
    for vid, _, want in entries:
        expected.setdefault(vid, []).append(want)
    for vid, wants in expected.items():
        got = sorted(rows.get(vid, []))
        assert len(got) == len(wants), (vid, got, wants)
        for want in wants:
            if want == "either":
                assert got[0] == "video" or got[0] in {"DecodeError", "NotAMediaFile", "NoFrames", "NoVideoStream",
                                                         "TooLarge"}, (vid, got)
            else:
                assert want in got, (vid, got, wants)


def test_fuzz_errors_are_stable_and_explained(fuzz_run):
    out, summary, _, _ = fuzz_run
    for row in read(out, "errors").to_pylist():
        assert row["message"] and row["stage"] in ("manifest", "decode")
        assert row["error_type"] in {
            "FileNotFound", "NotAFile", "DecodeError", "NotAMediaFile", "NoVideoStream", "NoFrames", "NotAVideo",
            "TooLarge", "Timeout", "DecoderCrash", "DuplicateVideoId",
        }, row
    assert summary["counts"]["errors_by_type"]["TooLarge"] == 1
    assert "huge.y4m" in [r["uri"].rsplit("/", 1)[-1] for r in read(out, "errors").to_pylist()
                          if r["error_type"] == "TooLarge"][0]


def test_fuzz_survivors_have_real_features(fuzz_run):
    out, _, _, _ = fuzz_run
    videos = {r["video_id"]: r for r in read(out, "videos").to_pylist()}
    good = videos["good-speech"]
    assert good["asr_text"] and good["ocr_subtitle_text"] and good["stage_errors"] == []
    # A copy under a name in three scripts is the same video, the same features.
    assert videos["名前-any-script"]["ocr_subtitle_text"] == good["ocr_subtitle_text"]
    assert videos["名前-any-script"]["embedding"] == good["embedding"]
    assert videos["two-by-two"]["width"] == 2 and videos["two-by-two"]["num_keyframes"] >= 1
    long = videos["hours-long"]
    assert long["duration_s"] > 3600  # read up to --max-duration-s, its length still reported
    frames = [f for f in read(out, "frames").to_pylist() if f["video_id"] == "hours-long"]
    assert max(f["timestamp_s"] for f in frames) <= 3600


def test_decode_timeout_becomes_an_error_row(media_dir, tmp_path, tiny_checkpoint):
    big = os.path.join(media_dir, "video", "smpte-2997.mp4")  # 10 s of 1080p: seconds to decode here
    small = os.path.join(media_dir, "video", "bbb_176x144_192kbps_15fps_mpeg4.mp4")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"uri": big, "video_id": "slow"}) + "\n" + json.dumps({"uri": small, "video_id": "ok"}) + "\n")
    rc, summary = run_extract(tmp_path / "o", manifest, tiny_checkpoint, "--decode-timeout-s", "0.3", "--no-ocr", "--no-asr")
    assert rc == 0 and summary["accounting_ok"]
    errors = read(tmp_path / "o", "errors").to_pylist()
    assert [(e["video_id"], e["error_type"]) for e in errors] == [("slow", "Timeout")]
    assert read(tmp_path / "o", "videos").column("video_id").to_pylist() == ["ok"]


def test_max_pixels_refuses_large_frames(media_dir):
    big = os.path.join(media_dir, "video", "smpte-2997.mp4")
    with pytest.raises(DecodeError) as e:
        decode_keyframes(big, DecodeConfig(max_pixels=1920 * 1080 - 1))
    assert e.value.error_type == "TooLarge" and "1920x1080" in str(e.value)
    assert decode_keyframes(big, DecodeConfig(max_pixels=1920 * 1080, short_side=32)).width == 1920


def test_a_decoder_segfault_costs_one_video(sample):
    from tests.crashy import crash_or_decode

    uris = [v["uri"] for v in sample["expected"]["videos"]]
    crash = uris[0] + "?crash"  # the function crashes on the name before opening anything
    requests = [VideoRequest("a", uris[0], 0), VideoRequest("boom", crash, 1), VideoRequest("b", uris[1], 2),
                VideoRequest("boom2", crash, 3), VideoRequest("c", uris[2], 4)]
    with beam.Pipeline() as p:
        out = p | beam.Create(requests) | DecodeVideos(DecodeConfig(short_side=32), isolate=True,
                                                       decode_fn=crash_or_decode)
        assert_that(out["videos"] | "Ids" >> beam.Map(lambda v: v.request.video_id), equal_to(["a", "b", "c"]),
                    label="videos")
        assert_that(out["errors"] | "Errs" >> beam.Map(lambda e: (e.video_id, e.error_type)),
                    equal_to([("boom", "DecoderCrash"), ("boom2", "DecoderCrash")]), label="errors")


def test_a_hung_decoder_is_killed_and_the_next_video_decodes(sample):
    from tests.crashy import hang_or_decode

    uris = [v["uri"] for v in sample["expected"]["videos"]]
    requests = [VideoRequest("stuck", uris[0] + "?hang", 0), VideoRequest("fine", uris[1], 1)]
    started = time.monotonic()
    with beam.Pipeline() as p:
        out = p | beam.Create(requests) | DecodeVideos(DecodeConfig(short_side=32, timeout_s=1.0), isolate=True,
                                                       decode_fn=hang_or_decode)
        assert_that(out["videos"] | "Ids" >> beam.Map(lambda v: v.request.video_id), equal_to(["fine"]),
                    label="videos")
        assert_that(out["errors"] | "Errs" >> beam.Map(lambda e: (e.video_id, e.error_type)),
                    equal_to([("stuck", "Timeout")]), label="errors")
    assert time.monotonic() - started < 60


def test_isolated_survives_crashes_timeouts_and_errors():
    from tests.crashy import fail_with_decode_error, segfault

    with Isolated(timeout_s=2.0, preload=("tests.crashy",)) as iso:
        assert iso.call(pow, 2, 10) == 1024
        with pytest.raises(Crashed, match="SIGSEGV"):
            iso.call(segfault)
        assert iso.call(pow, 3, 3) == 27  # a fresh child took over
        with pytest.raises(TimedOut):
            iso.call(time.sleep, 30)
        with pytest.raises(RemoteError) as e:
            iso.call(fail_with_decode_error)
        assert e.value.type_name == "DecodeError" and e.value.details["error_type"] == "NoFrames"
        assert iso.call(sum, [1, 2, 3]) == 6
        assert iso.restarts == 2


def test_isolated_stream_hands_each_item_over_while_the_child_works(tmp_path):
    from tests.crashy import count, count_then_hang, wait_for_file, yield_then_crash, yield_then_fail

    marker = tmp_path / "got-the-first"
    with Isolated(timeout_s=3.0, preload=("tests.crashy",)) as iso:
        got = []
        for item in iso.stream(wait_for_file, str(marker)):
            got.append(item)
            marker.touch()  # the child goes on only once the caller holds item 1
        assert got == [1, 2]
        assert list(iso.stream(pow, 2, 10)) == [1024]  # a plain function: its result is one item
        seen = []
        with pytest.raises(RemoteError) as e:
            seen.extend(iso.stream(yield_then_fail, 3))
        assert seen == [0, 1, 2] and e.value.details["error_type"] == "NoFrames"
        seen.clear()
        with pytest.raises(Crashed, match="SIGSEGV"):
            seen.extend(iso.stream(yield_then_crash, 2))
        assert seen == [0, 1] and iso.restarts == 1
        with pytest.raises(TimedOut):
            list(iso.stream(count_then_hang, 2))
        assert iso.restarts == 2
        # Only waiting counts against the limit: a caller slower than it between items is fine.
        slow = []
        for item in iso.stream(count, 3):
            time.sleep(1.5)  # 4.5 s in all, over the 3 s limit
            slow.append(item)
        assert slow == [0, 1, 2] and iso.restarts == 2
        # A stream left early restarts the child (it may still be sending); the next call is served.
        stream = iso.stream(count_then_hang, 5)
        assert next(stream) == 0
        stream.close()
        assert iso.restarts == 3 and iso.call(sum, [1, 2]) == 3


def test_isolated_child_starts_while_a_package_directory_is_on_sys_path(tmp_path, monkeypatch):
    # What OpenCV's loader does for the length of `import cv2` (in another thread, e.g. a model
    # warm-up): its package directory, which holds a `typing` package, sits on sys.path.
    pkg = tmp_path / "cvlike"
    (pkg / "typing").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "typing" / "__init__.py").write_text("raise ImportError('the wrong typing')\n")
    (pkg / "python-3").mkdir()
    monkeypatch.setattr(sys, "path", [str(pkg), str(pkg / "python-3"), *sys.path])
    from models.isolated import child_path

    assert str(pkg) not in child_path(sys.path) and str(pkg / "python-3") not in child_path(sys.path)
    assert REPO in child_path(sys.path) or any(os.path.samefile(p, REPO) for p in child_path(sys.path)
                                                if os.path.isdir(p))
    with Isolated(timeout_s=60.0) as iso:
        assert iso.call(pow, 2, 5) == 32


def test_isolated_child_gives_freed_memory_back_after_each_call():
    from bench._common import current_rss_kb
    from tests.crashy import fragment_heap

    with Isolated(timeout_s=60.0, preload=("tests.crashy",)) as iso:
        base = iso.call(current_rss_kb) / 1024
        peak = iso.call(fragment_heap, 300) / 1024  # frees ~295 MiB of heap blocks, every 64th kept
        assert peak > base + 250
        # Without the trim after each call the child would idle at ~the peak (glibc keeps the pages).
        assert iso.call(current_rss_kb) / 1024 < base + 60


# --- kill -9 and resume ------------------------------------------------------------------------


def _extract_cmd(manifest, out, *extra):
    return [sys.executable, "-m", "pipelines.extract", "--input", str(manifest), "--output", str(out),
            "--clip-model", TINY_MODEL, "--clip-pretrained", "none", "--no-progress", *extra]


def _kill_after(cmd, seconds: float) -> int | None:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        return proc.wait(seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the pipeline, its Beam workers and decode children
        proc.wait()
        return None


def test_kill_at_any_moment_and_resume_accounts_for_everything_once(sample, tmp_path):
    videos = sample["expected"]["videos"]
    lines = [json.dumps({"uri": v["uri"], "video_id": f"{v['video_id']}-{k}"}) for k in range(3) for v in videos]
    lines.append(json.dumps({"uri": str(tmp_path / "gone.mp4"), "video_id": "gone"}))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    flags = ("--no-ocr", "--no-asr", "--runner", "DirectRunner", "--direct_num_workers", "2",
             "--direct_running_mode", "multi_processing")
    # Kill at several moments: during start-up, decoding, the models, and (maybe) the commit.
    first = _extract_cmd(manifest, out, *flags)
    rc = _kill_after(first, 4.0)
    kills = 0 if rc is not None else 1
    for wait in (7.0, 10.0, 13.0):
        rc = _kill_after(_extract_cmd(manifest, out, *flags, "--skip-existing"), wait)
        kills += rc is None
        if rc is not None:
            break
    final = subprocess.run(_extract_cmd(manifest, out, *flags, "--skip-existing"), cwd=REPO,
                           capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "accounting OK" in final.stdout
    assert kills >= 1  # the test did kill a run
    got_videos = read(out, "videos").column("video_id").to_pylist()
    got_errors = read(out, "errors").column("video_id").to_pylist()
    assert len(got_videos) == len(set(got_videos)) == 9 and got_errors == ["gone"]
    frames = read(out, "frames").to_pylist()
    assert len({(f["video_id"], f["frame_index"]) for f in frames}) == len(frames)  # no duplicate rows
    assert {f["video_id"] for f in frames} == set(got_videos)
    # Only committed runs' files remain, and nothing half-written is visible to readers.
    runs = committed_runs(str(out))
    for table in ("videos", "frames", "asr_segments", "errors"):
        for name in os.listdir(out / table):
            assert run_of(name) in runs, name
    # The resumed index holds the same rows as one uninterrupted run.
    clean = tmp_path / "clean"
    done = subprocess.run(_extract_cmd(manifest, clean, *flags), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    key = lambda r: r["video_id"]  # noqa: E731
    assert sorted(read(out, "videos").to_pylist(), key=key) == sorted(read(clean, "videos").to_pylist(), key=key)


def test_files_of_an_uncommitted_run_are_removed_on_resume(sample, tiny_checkpoint, tmp_path):
    videos = sample["expected"]["videos"]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"uri": v["uri"], "video_id": v["video_id"]}) + "\n" for v in videos[:2]))
    out = tmp_path / "out"
    rc, _ = run_extract(out, manifest, tiny_checkpoint, "--no-ocr", "--no-asr")
    assert rc == 0
    # A run killed half-way through its commit: some shards moved in, no marker written.
    for table in ("videos", "frames"):
        src = next(p for p in sorted(os.listdir(out / table)))
        shutil.copy(out / table / src, out / table / "part-20990101T000000-deadbeef-00000-of-00001.parquet")
    rc, _ = run_extract(out, manifest, tiny_checkpoint, "--no-ocr", "--no-asr")
    assert rc == 2  # an existing index is never silently mixed with a new run
    manifest.write_text(manifest.read_text() + json.dumps({"uri": videos[2]["uri"], "video_id": videos[2]["video_id"]}) + "\n")
    rc, summary = run_extract(out, manifest, tiny_checkpoint, "--no-ocr", "--no-asr", "--skip-existing")
    assert rc == 0 and summary["accounting_ok"] and summary["counts"]["videos"] == 3
    assert summary["counters"]["vmm.videos_decoded"] == 1  # only the new entry was processed
    ids = read(out, "videos").column("video_id").to_pylist()
    assert sorted(ids) == sorted(v["video_id"] for v in videos)
    assert not any("deadbeef" in name for name in os.listdir(out / "videos"))
    assert len(os.listdir(out / RUNS_DIR)) == 2


def test_manifest_fields_cannot_write_outside_the_output(sample, tiny_checkpoint, tmp_path):
    uri = sample["expected"]["videos"][0]["uri"]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"uri": uri, "video_id": vid, "title": "$(touch pwned)"}) + "\n"
                                for vid in ("../../escape", "/etc/passwd", "a/../../b")))
    root = tmp_path / "root"
    out = root / "out"
    rc, summary = run_extract(out, manifest, tiny_checkpoint, "--no-ocr", "--no-asr")
    assert rc == 0 and summary["counts"]["videos"] == 3
    written = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files]
    assert [w for w in written if not w.startswith(str(out) + os.sep)] == [str(manifest)]
    assert not os.path.exists(tmp_path / "pwned") and not os.path.exists(os.path.join(REPO, "pwned"))
    assert sorted(read(out, "videos").column("video_id").to_pylist()) == sorted(
        ["../../escape", "/etc/passwd", "a/../../b"])


def test_no_pickle_or_shell_on_untrusted_paths():
    """Model, dictionary and input files load without pickle; nothing builds a shell command."""
    import re

    forbidden = re.compile(r"pickle\.loads?\(|allow_pickle=True|shell=True|os\.system\(|os\.popen\(|(?<![\w.])(eval|exec)\(")
    for folder in ("models", "transforms", "pipelines", "schemas"):
        for name in os.listdir(os.path.join(REPO, folder)):
            if name.endswith(".py"):
                text = open(os.path.join(REPO, folder, name), encoding="utf-8").read()
                assert not forbidden.search(text), (folder, name, forbidden.search(text))
    clip_src = open(os.path.join(REPO, "models", "clip.py"), encoding="utf-8").read()
    assert "weights_only=True" in clip_src
