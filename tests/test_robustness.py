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
    from tests.heldstore import held_uri

    # The held copy's first read stalls for longer than the limit, so it cannot decode in time on any
    # machine; the same file held briefly, and not held, decode (~0.1 s of work: far under the limit).
    small = os.path.join(media_dir, "video", "bbb_176x144_192kbps_15fps_mpeg4.mp4")
    limit = 3.0
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"uri": uri, "video_id": vid}) + "\n" for vid, uri in (
        ("slow", held_uri(small, limit + 2.0)), ("held-briefly", held_uri(small, 0.5)), ("ok", small))))
    rc, summary = run_extract(tmp_path / "o", manifest, tiny_checkpoint, "--decode-timeout-s", f"{limit:g}",
                              "--no-ocr", "--no-asr", "--beam_plugins", "tests.heldstore")
    assert rc == 0 and summary["accounting_ok"]
    errors = read(tmp_path / "o", "errors").to_pylist()
    assert [(e["video_id"], e["error_type"]) for e in errors] == [("slow", "Timeout")]
    # The decoder's own deadline (checked between frames), not the hard kill of a hung child.
    assert "decoding took more than 3 s" in errors[0]["message"], errors[0]["message"]
    videos = read(tmp_path / "o", "videos").to_pylist()
    assert sorted(v["video_id"] for v in videos) == ["held-briefly", "ok"]
    assert len({v["num_keyframes"] for v in videos}) == 1 and videos[0]["num_keyframes"] > 0


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


def test_a_hung_decoder_is_killed_and_the_next_video_decodes(sample, tmp_path):
    from tests.crashy import hang_or_decode

    uri = sample["expected"]["videos"][0]["uri"]
    # The video that must decode in time is 10 frames of 2x2 (milliseconds of work, far under the
    # limit on any machine); the stuck one never returns, whatever the limit.
    fine = _tiny_video(str(tmp_path / "tiny.mp4"))
    requests = [VideoRequest("stuck", uri + "?hang", 0), VideoRequest("fine", fine, 1)]
    started = time.monotonic()
    with beam.Pipeline() as p:
        out = p | beam.Create(requests) | DecodeVideos(DecodeConfig(short_side=32, timeout_s=3.0), isolate=True,
                                                       decode_fn=hang_or_decode)
        assert_that(out["videos"] | "Ids" >> beam.Map(lambda v: v.request.video_id), equal_to(["fine"]),
                    label="videos")
        assert_that(out["errors"] | "Errs" >> beam.Map(lambda e: (e.video_id, e.error_type)),
                    equal_to([("stuck", "Timeout")]), label="errors")
    assert time.monotonic() - started < 60


def test_isolated_survives_crashes_timeouts_and_errors():
    from tests.crashy import fail_with_decode_error, segfault

    # models.decode preloaded: the call that raises DecodeError must not spend its time limit importing it.
    with Isolated(timeout_s=2.0, preload=("tests.crashy", "models.decode")) as iso:
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
    with Isolated(timeout_s=3.0, preload=("tests.crashy", "models.decode")) as iso:
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


def test_isolated_child_trims_its_heap_after_each_call():
    """An idle child must not keep the largest video's footprint: it gives freed heap pages back
    after every call and every stream (counted in the child, whatever the allocator does with them)."""
    from tests.crashy import count, count_trims, trims

    with Isolated(timeout_s=60.0, preload=("tests.crashy",)) as iso:
        iso.call(count_trims)  # the trim after this call is the first one counted
        iso.call(pow, 2, 10)
        assert list(iso.stream(count, 3)) == [0, 1, 2]
        with pytest.raises(RemoteError):
            iso.call(int, "not a number")  # a failed call: no result, nothing to trim
        assert iso.call(trims) == 3


def test_release_freed_memory_gives_heap_pages_back():
    from models.memory import _malloc_trim
    from tests.crashy import fragment_then_trim

    if _malloc_trim() is None:
        pytest.skip("no malloc_trim here (not glibc): release_freed_memory does nothing by design")
    # In a fresh child: 300 MiB of 64 KiB heap blocks freed but every 64th, which pins the heap
    # so that glibc keeps the freed pages resident until asked.
    with Isolated(timeout_s=120.0, preload=("tests.crashy",)) as iso:
        peak, freed, trimmed = (kb / 1024 for kb in iso.call(fragment_then_trim, 300))
    assert freed - trimmed > 0.5 * 295, (peak, freed, trimmed)  # at least half the freed pages went back


# --- kill -9 and resume ------------------------------------------------------------------------


def _extract_cmd(manifest, out, *extra):
    return [sys.executable, "-m", "pipelines.extract", "--input", str(manifest), "--output", str(out),
            "--clip-model", TINY_MODEL, "--clip-pretrained", "none", "--no-progress", *extra]


def _extract_on_store_cmd(manifest, out, *extra):
    """`_extract_cmd` with the fake object store registered in the launcher too (Beam imports
    --beam_plugins in its workers only; a launcher has its filesystems imported already)."""
    launcher = ("import runpy, tests.fakestore; "
                "runpy.run_module('pipelines.extract', run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", launcher, *_extract_cmd(manifest, out, *extra)[3:]]


def _run_killed_at(cmd, env, phase: str, store) -> None:
    """Runs `cmd` in a session of its own; tests.fakestore kills the whole run when it reaches `phase`."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(env, VMM_FAKESTORE_KILL_AT=phase), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the pipeline, its Beam workers and decode children
        proc.communicate()
        raise
    assert proc.returncode == -signal.SIGKILL, f"not killed at {phase} (exit {proc.returncode}): {err[-2000:]}"
    assert (store / f"killed-at-{phase.replace(':', '-')}").exists(), phase


def test_kill_at_any_phase_and_resume_accounts_for_everything_once(sample, tmp_path):
    from pipelines.output import STAGING_DIR, table_files

    # Inputs and output on the fake object store, whose operations are the kill points: each run is
    # killed at a phase it has reached (tests/fakestore.py), whatever the speed of this machine.
    store = tmp_path / "store"
    (store / "bucket" / "videos").mkdir(parents=True)
    entries = []
    for k in range(3):
        for v in sample["expected"]["videos"]:
            name = f"{v['video_id']}-{k}.mp4"
            shutil.copy(v["uri"], store / "bucket" / "videos" / name)
            entries.append({"uri": f"fakestore://bucket/videos/{name}", "video_id": f"{v['video_id']}-{k}"})
    entries.append({"uri": "fakestore://bucket/videos/gone.mp4", "video_id": "gone"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    env = dict(os.environ, VMM_FAKESTORE_ROOT=str(store))
    out, out_local = "fakestore://bucket/out", store / "bucket" / "out"
    flags = ("--no-ocr", "--no-asr", "--runner", "DirectRunner", "--direct_num_workers", "2",
             "--direct_running_mode", "multi_processing", "--beam_plugins", "tests.fakestore")
    # Decoding: the decode child opens the 6th video (the first ones are through the models by then).
    _run_killed_at(_extract_on_store_cmd(manifest, out, *flags), env, f"open:{entries[5]['video_id']}.mp4", store)
    assert not (out_local / RUNS_DIR).exists()
    # The first shard staged; then half-way through the commit; then just after the commit marker.
    _run_killed_at(_extract_on_store_cmd(manifest, out, *flags, "--skip-existing"), env, "staged", store)
    _run_killed_at(_extract_on_store_cmd(manifest, out, *flags, "--skip-existing"), env, "commit", store)
    moved = [name for table in ("videos", "frames", "asr_segments", "errors") if (out_local / table).is_dir()
             for name in os.listdir(out_local / table)]
    assert len(moved) == 1 and not (out_local / RUNS_DIR).exists()  # one shard in place, no marker
    assert table_files(str(out_local), "videos") == []  # readers see nothing of it
    _run_killed_at(_extract_on_store_cmd(manifest, out, *flags, "--skip-existing"), env, "marker", store)
    (marker,) = os.listdir(out_local / RUNS_DIR)
    assert (out_local / STAGING_DIR / marker[: -len(".json")]).is_dir()  # killed before cleaning up
    final = subprocess.run(_extract_on_store_cmd(manifest, out, *flags, "--skip-existing"), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "accounting OK" in final.stdout
    got_videos = read(out_local, "videos").column("video_id").to_pylist()
    got_errors = read(out_local, "errors").column("video_id").to_pylist()
    assert len(got_videos) == len(set(got_videos)) == 9 and got_errors == ["gone"]
    frames = read(out_local, "frames").to_pylist()
    assert len({(f["video_id"], f["frame_index"]) for f in frames}) == len(frames)  # no duplicate rows
    assert {f["video_id"] for f in frames} == set(got_videos)
    # Only committed runs' files remain, and nothing half-written is visible to readers.
    runs = committed_runs(str(out_local))
    for table in ("videos", "frames", "asr_segments", "errors"):
        for name in os.listdir(out_local / table):
            assert run_of(name) in runs, name
    assert not any(files for _, _, files in os.walk(out_local / STAGING_DIR))
    # The resumed index holds the same rows as one uninterrupted run.
    clean = tmp_path / "clean"
    done = subprocess.run(_extract_on_store_cmd(manifest, clean, *flags), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    key = lambda r: r["video_id"]  # noqa: E731
    assert sorted(read(out_local, "videos").to_pylist(), key=key) == sorted(read(clean, "videos").to_pylist(), key=key)


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
