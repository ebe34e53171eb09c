"""`vmm score` on the sample extracted by the real pipeline (tiny random CLIP, RapidOCR, Whisper):
one row per pair with its input columns, the missing reasons, BM25 equal to the search index's,
the token route against stored frame embeddings, an image-derived query against one shot,
determinism, the portable runner, and a 100k-pair log in bounded memory."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models import ranking
from models.bm25 import TextIndex
from models.codebook import Codebook
from models.text import analyze, contains_phrase, phrase_form
from pipelines import index as index_cmd
from pipelines import score
from pipelines import train_codebook
from schemas import pairs as pairs_schema
from schemas.index import IndexReader, frame_tokens
from tests.conftest import REPO, TINY_MODEL, local_job_service, watch_timer_flushes
from tests.test_pipeline import run_extract

slow = pytest.mark.slow


# ---- pure functions --------------------------------------------------------------------------


def test_phrase_matching_rules():
    assert contains_phrase(phrase_form("The RED kettle, on sale!"), phrase_form("red  kettle"))
    assert not contains_phrase(phrase_form("kettle red"), phrase_form("red kettle"))
    assert not contains_phrase(phrase_form("concatenate"), phrase_form("cat"))
    assert contains_phrase(phrase_form("我的红色水壶很好"), phrase_form("红色水壶"))
    assert contains_phrase(phrase_form("新款iPhone15手机"), phrase_form("iphone15 手机"))
    assert not contains_phrase(phrase_form("iphone150"), phrase_form("iphone15"))
    assert not contains_phrase("", "red") and not contains_phrase("red", "")


def test_frame_and_patch_features_by_hand():
    q = ranking.normalize(np.array([1.0, 0.0, 0.0]))
    frames = ranking.normalize(np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [-1, 0, 0]], np.float32))
    f = ranking.frame_features(q, frames)
    assert f["qv_frame_max"] == pytest.approx(1.0)
    assert f["qv_frame_mean"] == pytest.approx((1 + 0 + 2 ** -0.5 - 1) / 4)
    assert f["qv_frame_top3"] == pytest.approx((1 + 2 ** -0.5 + 0) / 3)
    assert ranking.frame_features(q, None)["qv_frame_max"] is None
    tokens = ranking.normalize(np.array([[1, 0, 0], [0, 1, 0]], np.float32))
    patches = np.stack([ranking.normalize(np.array([[1, 0, 0], [0, 0, 1]], np.float32)),
                        ranking.normalize(np.array([[1, 1, 0], [0, 1, 0]], np.float32))])
    # frame 0: (1 + 0) / 2; frame 1: (0.707 + 1) / 2 -> the best frame
    assert ranking.patch_max(tokens, patches) == pytest.approx((2 ** -0.5 + 1) / 2)


def test_has_subtitles_tells_no_subtitles_from_no_ocr():
    from schemas.forward_index import STAGE_ERROR_TYPE

    assert score.has_subtitles("字幕一行", "rapidocr:x", False) is True
    assert score.has_subtitles(None, "rapidocr:x", False) is False  # OCR ran, found no subtitle
    assert score.has_subtitles("  ", "rapidocr:x", False) is False
    assert score.has_subtitles(None, "off", False) is None  # OCR off for the run
    assert score.has_subtitles(None, None, False) is None  # an index that did not record it
    assert score.has_subtitles(None, "rapidocr:x", True) is None  # OCR failed on a frame of the video
    assert score.has_subtitles("字幕", "rapidocr:x", True) is True
    error = lambda stage: {"stage": stage, "error_type": "E", "message": "m"}  # noqa: E731
    errors = pa.array([[], [error("asr")], [error("asr"), error("ocr")], None, [error("ocr")]],
                      pa.list_(pa.field("item", STAGE_ERROR_TYPE, nullable=False)))
    assert score._ocr_failed(pa.table({"stage_errors": errors})).tolist() == [False, False, True, False, True]


# ---- the sample index ------------------------------------------------------------------------


def _train(out, manifest, checkpoint, *extra):
    return train_codebook.run(["--input", str(manifest), "--output", str(out), "--clip-model", TINY_MODEL,
                               "--clip-pretrained", checkpoint, "--no-progress", *extra])


@pytest.fixture(scope="module")
def indexed(sample, tiny_checkpoint, tmp_path_factory):
    """The sample extracted with frame and patch tokens and stored frame embeddings (both routes)."""
    root = tmp_path_factory.mktemp("score")
    frame, patch = root / "dict_frame", root / "dict_patch"
    assert _train(frame, sample["manifest"], tiny_checkpoint, "--k", "8", "--min-points-per-centroid", "1") == 0
    assert _train(patch, sample["manifest"], tiny_checkpoint, "--k", "32", "--level", "patch",
                  "--min-points-per-centroid", "2") == 0
    out = root / "index"
    rc, summary = run_extract(out, sample["manifest"], tiny_checkpoint, "--codebook", str(frame),
                              "--patch-codebook", str(patch), "--store-frame-embeddings",
                              "--embedding-dtype", "float32")
    assert rc == 0 and summary["accounting_ok"]
    videos = IndexReader(str(out)).table("videos").to_pylist()
    return {"index": str(out), "codebook": str(frame), "patch_codebook": str(patch), "videos": videos,
            "checkpoint": tiny_checkpoint, "root": root}


def _write_pairs(path, rows, kind="parquet"):
    path = str(path)
    if kind == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == "jsonl":
        with open(path, "w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def _score(pairs, indexed, output, *extra, check=True):
    weights = [] if "--query-vectors" in extra else ["--clip-pretrained", indexed["checkpoint"]]
    argv = ["--pairs", str(pairs), "--index", indexed["index"], "--output", str(output), "--no-progress",
            *weights, *extra]
    rc = score.run(argv)
    if check:
        assert rc == 0
    return rc


def _read(output) -> list[dict]:
    files = sorted(os.path.join(output, "pairs", f) for f in os.listdir(os.path.join(output, "pairs")))
    rows = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()
    return sorted(rows, key=lambda r: r["pair_index"])


def _words(text: str | None) -> list[str]:
    return [w for w in analyze(text) if len(w) > 2]


@pytest.fixture(scope="module")
def log(indexed, tmp_path_factory):
    """A pair log with labels, dates and clicks; queries built from each video's own words, a video
    id the index lacks and an empty query."""
    videos = indexed["videos"]
    rows = []
    for i, v in enumerate(videos):
        words = _words(v["title"]) + _words(v["ocr_subtitle_text"]) + _words(v["asr_text"])
        assert words, v["video_id"]
        for j, query in enumerate([" ".join(words[:2]), v["title"], words[-1], "zebra " + words[0]]):
            for u in videos:
                rows.append({"query": query, "video_id": u["video_id"], "label": int(u is v),
                             "clicks": 10 * i + j, "position": float(j) / 2, "day": f"2026-12-0{j + 1}"})
    rows.append({"query": "anything at all", "video_id": "not-in-the-index", "label": 0, "clicks": 1,
                 "position": 0.0, "day": "2026-12-05"})
    rows.append({"query": "   ", "video_id": videos[0]["video_id"], "label": 0, "clicks": 2, "position": 1.0,
                 "day": "2026-12-05"})
    root = tmp_path_factory.mktemp("pairs")
    return rows, _write_pairs(root / "pairs.parquet", rows)


@pytest.fixture(scope="module")
def scored(indexed, log, tmp_path_factory):
    out = tmp_path_factory.mktemp("feats")
    _score(log[1], indexed, out, "--codebook", indexed["codebook"],
           "--patch-codebook", indexed["patch_codebook"])
    return _read(out), out


@slow
def test_one_row_per_pair_with_its_input_columns(scored, log, indexed):
    rows, out = scored
    pairs, _ = log
    assert len(rows) == len(pairs)
    for row, pair in zip(rows, pairs):
        assert {k: row[k] for k in pair} == pair
    assert [r["pair_index"] for r in rows] == list(range(len(pairs)))
    missing = collections.Counter(r["missing"] for r in rows)
    assert missing == {None: len(pairs) - 2, "video_not_in_index": 1, "empty_query": 1}
    for r in rows:
        if r["missing"]:
            assert all(r[f] is None for f in pairs_schema.FEATURES), r
        else:
            assert r["qv_video"] is not None and -1.0001 <= r["qv_video"] <= 1.0001
            assert r["qv_frame_source"] == "embedding" and r["qv_patch_max"] is not None
            assert r["num_keyframes"] >= 1 and r["duration_s"] > 0
    # The sample was extracted with OCR on and no OCR failure: has_subtitles is never null (a video
    # without subtitle text is false: test_has_subtitles_tells_no_subtitles_from_no_ocr).
    videos = {v["video_id"]: v for v in indexed["videos"]}
    assert not any(e["stage"] == "ocr" for v in videos.values() for e in v["stage_errors"])
    for r in rows:
        if not r["missing"]:
            subtitles = videos[r["video_id"]]["ocr_subtitle_text"]
            assert r["has_subtitles"] is bool(subtitles and subtitles.strip()), r
    schema = pq.read_schema(os.path.join(out, "pairs", sorted(os.listdir(os.path.join(out, "pairs")))[0]))
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert meta["vmm.schema"] == "pairs" and meta["vmm.frame_vectors"] == "embedding"
    assert meta["vmm.clip_weights"].startswith("file:tiny.pt:sha256:")
    assert meta["vmm.patch_codebook_id"] == Codebook.load(indexed["patch_codebook"]).id
    assert schema.field("label").type == pa.int64() and schema.field("position").type == pa.float64()


@slow
def test_own_video_scores_higher_on_text(scored, indexed):
    rows, _ = scored
    by = {(r["query"], r["video_id"]): r for r in rows if not r["missing"]}
    for v in indexed["videos"]:
        own = by[(v["title"], v["video_id"])]
        # The query is the title: the same text tower, weights and video vector as extract's feature.
        assert own["qv_video"] == pytest.approx(v["title_visual_similarity"], abs=1e-5)
        assert own["phrase_title"] is True and own["coverage_title"] == 1.0
        others = [by[(v["title"], u["video_id"])] for u in indexed["videos"] if u is not v]
        assert all(own["bm25_title"] > o["bm25_title"] for o in others)
        zebra = [r for (q, vid), r in by.items() if q.startswith("zebra ") and vid == v["video_id"]
                 and q.split()[1] in _words(v["title"]) + _words(v["ocr_subtitle_text"]) + _words(v["asr_text"])]
        assert zebra and all(0 < max(r[f"coverage_{f}"] for f in ranking.TEXT_FIELDS) <= 0.5 for r in zebra)


@slow
def test_bm25_equals_the_search_index(scored, indexed, tmp_path):
    """BM25 per field equals tantivy's score in `vmm index`'s text index for the same query and field."""
    rows, _ = scored
    search = tmp_path / "search"
    assert index_cmd.run(["--input", indexed["index"], "--output", str(search)]) == 0
    info = json.load(open(search / "index.json"))
    text = TextIndex(str(search / "shard-00000" / "text"), info["text"]["fields"])
    ids = pq.read_table(search / "shard-00000" / "docs.parquet").column("video_id").to_pylist()
    compared = nonzero = 0
    for query in sorted({r["query"] for r in rows if not r["missing"]}):
        for field in ranking.TEXT_FIELDS:
            expected = {ids[row]: s for row, s in text.field_scores(query, field).items()}
            for r in rows:
                if r["query"] == query and not r["missing"]:
                    assert r[f"bm25_{field}"] == pytest.approx(expected.get(r["video_id"], 0.0), rel=1e-5, abs=1e-6)
                    compared += 1
                    nonzero += r[f"bm25_{field}"] > 0
    assert compared > 100 and nonzero > 20


@slow
def test_token_route_equals_embedding_route_to_the_dictionary_precision(indexed, log, scored, tmp_path):
    rows_emb, _ = scored
    _score(log[1], indexed, tmp_path / "tok", "--frame-vectors", "token", "--codebook", indexed["codebook"])
    rows_tok = _read(tmp_path / "tok")
    # The bound: a frame's cosine moves by at most the distance between its unit embedding and its
    # unit dictionary entry, and max / mean / top-3 move by at most the largest such distance.
    book = Codebook.load(indexed["codebook"])
    frames = IndexReader(indexed["index"]).table("frames", columns=["video_id", "reason", "token"])
    emb = IndexReader(indexed["index"]).embeddings("frames", columns=["video_id", "reason"], column="embedding")[1]
    token, _ = frame_tokens(frames)
    key = token >= 0
    err = np.linalg.norm(ranking.normalize(emb[key]) - ranking.normalize(book.lookup(token[key])), axis=1)
    bound = float(err.max()) + 1e-5
    assert bound < 0.5  # a dictionary that fits the frames (K=8 on the sample's few dozen keyframes)
    diffs = []
    for a, b in zip(rows_emb, rows_tok):
        assert a["pair_index"] == b["pair_index"]
        # the same query vectors, from the text tower's pooled output alone instead of with its tokens
        assert a["qv_video"] == pytest.approx(b["qv_video"], abs=1e-6)
        if a["missing"]:
            continue
        assert b["qv_frame_source"] == "token"
        for f in ("qv_frame_max", "qv_frame_mean", "qv_frame_top3"):
            assert abs(a[f] - b[f]) <= bound, (f, a[f], b[f], bound)
            diffs.append(abs(a[f] - b[f]))
    assert max(diffs) > 0  # the routes really differ: the token route did not read the embeddings
    meta = pq.read_schema(next((tmp_path / "tok" / "pairs").glob("*.parquet"))).metadata
    assert meta[b"vmm.codebook_id"].decode() == book.id and meta[b"vmm.frame_vectors"] == b"token"


@slow
def test_a_query_matching_one_shot_scores_its_frames_above_the_video(indexed, tmp_path):
    """Random weights make text vectors meaningless, so the query vector is an image's: one keyframe
    of a multi-shot video, given through --query-vectors."""
    reader = IndexReader(indexed["index"])
    meta, emb = reader.embeddings("frames", columns=["video_id", "frame_index", "reason"], column="embedding")
    keyframes = [i for i, r in enumerate(meta.column("reason").to_pylist()) if r != "text"]
    vid = indexed["videos"][0]["video_id"]
    mine = [i for i in keyframes if meta.column("video_id")[i].as_py() == vid]
    assert len(mine) >= 3  # a multi-shot video
    queries = {f"shot {n}": emb[i] for n, i in enumerate(mine)}
    table = pa.table({"query": list(queries), "vector": [v.tolist() for v in queries.values()]})
    pq.write_table(table, tmp_path / "qv.parquet")
    pairs = _write_pairs(tmp_path / "p.jsonl", [{"query": q, "video_id": vid} for q in queries], "jsonl")
    for route in ("embedding", "token"):
        _score(pairs, indexed, tmp_path / route, "--query-vectors", str(tmp_path / "qv.parquet"),
               "--frame-vectors", route, "--codebook", indexed["codebook"])
        rows = _read(tmp_path / route)
        assert len(rows) == len(queries)
        for r in rows:
            assert r["qv_frame_max"] >= r["qv_video"], (route, r)
            if route == "embedding":
                assert r["qv_frame_max"] == pytest.approx(1.0, abs=1e-5)
                assert r["qv_video"] < 0.999
            assert r["qv_frame_mean"] <= r["qv_frame_top3"] <= r["qv_frame_max"]


@slow
def test_deterministic(scored, indexed, log, tmp_path):
    rows, _ = scored
    _score(log[1], indexed, tmp_path / "again", "--codebook", indexed["codebook"],
           "--patch-codebook", indexed["patch_codebook"], "--direct_num_workers", "2",
           "--direct_running_mode", "multi_threading")
    assert _read(tmp_path / "again") == rows


def _synthetic_log(path, indexed, n: int, distinct: int, seed: int = 0) -> str:
    """`n` pairs over `distinct` queries of the sample's own words and its videos (1 in 50 absent)."""
    rng = np.random.default_rng(seed)
    ids = [v["video_id"] for v in indexed["videos"]] + ["absent"]
    vocab = sorted({w for v in indexed["videos"] for w in _words(v["ocr_subtitle_text"]) + _words(v["title"])})
    queries = [" ".join(rng.choice(vocab, size=int(rng.integers(1, 4)))) for _ in range(distinct)]
    table = pa.table({"query": [queries[i] for i in rng.integers(0, len(queries), n)],
                      "video_id": [ids[i] if rng.random() > 0.02 else "absent" for i in rng.integers(0, 3, n)],
                      "label": rng.integers(0, 2, n)})
    pq.write_table(table, path)
    return str(path)


@slow
def test_no_output_flushed_by_a_timer_while_a_bundle_writes(indexed, tmp_path, monkeypatch):
    """Beam's multi_threading workers flush each output stream from a timer thread every second
    (data_plane.TimeBasedBufferingClosableOutputStream: the buffer is handed on, then cleared, with
    no lock against the bundle's thread writing into it): what a bundle writes in between is
    dropped. On a loaded machine that lost a block of hundreds of consecutive pairs (accounting
    MISMATCH). Here a worker's timer, if it has one, fires every 50 ms instead of every second (as a
    long bundle would meet it) and watches the stream for 50 ms (as when it loses the CPU between
    taking and clearing the buffer), counting the times a bundle wrote meanwhile, without flushing
    (forcing the loss itself corrupts Beam's streams into runaway memory). vmm score's workers flush
    by size, on the writing thread: there must be none, and no pair lost."""
    raced = watch_timer_flushes(monkeypatch, 50)
    n = 20_000
    pairs = _synthetic_log(tmp_path / "log.parquet", indexed, n, 200)
    rc = _score(pairs, indexed, tmp_path / "f", "--codebook", indexed["codebook"], "--direct_num_workers", "4",
                "--direct_running_mode", "multi_threading", check=False)
    got = pq.read_table(tmp_path / "f" / "pairs", columns=["pair_index"]).column("pair_index").to_pylist()
    assert not raced, f"{len(raced)} timer flushes while a bundle wrote {sum(raced)} bytes"
    assert rc == 0 and sorted(got) == list(range(n)), f"{n - len(set(got))} pairs lost"


@slow
def test_refusals(indexed, log, tmp_path):
    base = ["--pairs", log[1], "--index", indexed["index"], "--output", str(tmp_path / "o"), "--no-progress",
            "--clip-pretrained", indexed["checkpoint"]]
    (tmp_path / "bad.csv").write_text("q,video_id\nx,y\n")
    cases = [
        ["--frame-vectors", "token"],  # tokens need --codebook
        ["--codebook", indexed["patch_codebook"], "--frame-vectors", "token"],  # another dictionary
        ["--clip-pretrained", "none"],  # the index was made with a checkpoint
        ["--query-vectors", "x.parquet"],  # excludes --clip-pretrained
        ["--pairs", str(tmp_path / "bad.csv")],  # no query column
        ["--pairs", str(tmp_path / "absent.parquet")],
    ]
    for extra in cases:
        assert score.run(base + extra) == 2, extra
    assert not (tmp_path / "o").exists()


@slow
def test_portable_runner_gives_the_same_rows(scored, indexed, log, tmp_path):
    rows, _ = scored
    with local_job_service() as endpoint:
        out = tmp_path / "portable"
        cmd = [sys.executable, "-m", "pipelines.score", "--pairs", log[1], "--index", indexed["index"],
               "--output", str(out), "--clip-pretrained", indexed["checkpoint"], "--codebook", indexed["codebook"],
               "--patch-codebook", indexed["patch_codebook"],
               "--no-progress", "--runner", "PortableRunner", "--job_endpoint", endpoint,
               "--environment_type", "LOOPBACK"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "accounting OK" in proc.stdout
    assert _read(out) == rows


@slow
def test_100k_pairs_in_bounded_memory(indexed, tmp_path):
    """A synthetic log of 100k pairs (2,000 distinct queries, 1 in 50 pairs for a video the index
    lacks) through the CLI; its peak RSS is printed and must stay far below one row per pair kept.
    The peak is the child's own VmHWM: getrusage's ru_maxrss of a child started by subprocess (vfork +
    exec) begins at the parent's high-water mark, which in the full suite is pytest's ~3 GB."""
    n = 100_000
    _synthetic_log(tmp_path / "big.parquet", indexed, n, 2000)
    cmd = [sys.executable, "-c",
           "import sys; from pipelines import score; rc = score.run(sys.argv[1:]); "
           "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]; "
           "print('peak_rss_mb', int(hwm.split()[1]) // 1024); sys.exit(rc)",
           "--pairs", str(tmp_path / "big.parquet"), "--index", indexed["index"], "--output", str(tmp_path / "f"),
           "--codebook", indexed["codebook"], "--clip-pretrained", indexed["checkpoint"], "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accounting OK" in proc.stdout
    peak = int(proc.stdout.split("peak_rss_mb")[1].split()[0])
    print(proc.stdout, f"peak RSS {peak} MB for {n} pairs")
    assert peak < 2000
    counts = collections.Counter(pq.read_table(tmp_path / "f" / "pairs").column("missing").to_pylist())
    assert sum(counts.values()) == n and counts["video_not_in_index"] > 1000


@slow
def test_query_tower_encodes_the_queries(scored, indexed, log, tmp_path):
    """--query-tower: the tower's vectors give qv_video (a tower with shifted weights, so they differ
    from the CLIP text tower's); a tower of other weights is refused."""
    import torch

    from models import clip
    from models import query_tower as qt
    from schemas.index import IndexReader

    config = clip.ClipConfig(TINY_MODEL, indexed["checkpoint"])
    tower, _, weights = qt.load_base_tower(config)
    with torch.no_grad():
        torch.manual_seed(7)
        for p in tower.parameters():
            p.add_(0.05 * torch.randn_like(p))
    here = qt.load_videos(indexed["index"], columns=()).vectors_id
    # Recorded as train-query-tower records it, but without runs: the vectors are hashed and compared.
    qt.save_tower(str(tmp_path / "tower"), tower, {"clip_model": TINY_MODEL, "clip_weights": weights,
                                                    "index": {"path": "elsewhere", "vectors_id": here}})
    qt.save_tower(str(tmp_path / "other"), tower, {"clip_model": TINY_MODEL, "clip_weights": "none",
                                                    "index": {"vectors_id": here}})
    # The same model and weights, trained against another index's vectors.
    qt.save_tower(str(tmp_path / "another"), tower, {"clip_model": TINY_MODEL, "clip_weights": weights,
                                                      "index": {"path": "elsewhere", "runs": ["20260101T000000-x"],
                                                                "vectors_id": "sha256:0123456789abcdef"}})
    base = ["--pairs", log[1], "--index", indexed["index"], "--no-progress"]
    assert score.run(base + ["--output", str(tmp_path / "o"), "--query-tower", str(tmp_path / "other")]) == 2
    assert score.run(base + ["--output", str(tmp_path / "o"), "--query-tower", str(tmp_path / "another")]) == 2
    assert score.run(base + ["--output", str(tmp_path / "o"), "--query-tower", str(tmp_path / "tower"),
                             "--clip-pretrained", indexed["checkpoint"]]) == 2
    assert score.run(base + ["--output", str(tmp_path / "t"), "--query-tower", str(tmp_path / "tower")]) == 0
    rows, clip_rows = _read(tmp_path / "t"), scored[0]
    ids, vectors = IndexReader(indexed["index"]).embeddings()
    vectors = ranking.normalize(vectors)
    row_of = {v: i for i, v in enumerate(ids.column("video_id").to_pylist())}
    encoder = qt.QueryTower(str(tmp_path / "tower"), TINY_MODEL, weights)
    differ = 0
    for r, c in zip(rows, clip_rows):
        assert r["pair_index"] == c["pair_index"]
        if r["missing"]:
            continue
        expected = float(encoder.encode_texts([r["query"]])[0] @ vectors[row_of[r["video_id"]]])
        assert r["qv_video"] == pytest.approx(expected, abs=1e-5)
        differ += abs(r["qv_video"] - c["qv_video"]) > 1e-3
        assert r["qv_patch_max"] is None and r["bm25_title"] == c["bm25_title"]
    assert differ > 10
    meta = pq.read_schema(next((tmp_path / "t" / "pairs").glob("*.parquet"))).metadata
    assert meta[b"vmm.query_tower"].startswith(b"tower:") and meta[b"vmm.query_encoder"].startswith(b"tower:")


def test_frames_are_grouped_under_their_own_video(tmp_path):
    """A frames file whose rows are not in video order, with an OCR text frame among them: each
    group of keyframes is named by its own video (a group named by its place in the sorted order
    took another video's id, or ran past the end when text frames were left out)."""
    path = tmp_path / "part-r1-00000-of-00001.parquet"
    pq.write_table(pa.table({"video_id": ["b", "a", "b", "a", "c"], "frame_index": [0, 0, 1, 1, 0],
                             "reason": ["first", "text", "scene", "first", "text"]}), path)
    fn = score._ReadFramesFn(["video_id", "frame_index", "reason"], None, False)
    got = {vid: list(part[2]) for vid, part in fn.process(str(path))}
    assert got == {"a": [1], "b": [0, 1]}
