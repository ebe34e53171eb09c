"""schemas.index: the commit rules and IndexReader, on indexes written by hand to the contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from schemas import forward_index as fi
from schemas.index import IndexReader, decode_embeddings, frame_tokens, run_of, shard_name
from tests.conftest import REPO

DIM = 16


def _unit(rng, n, dim=DIM):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _videos(ids, vectors, dtype, passthrough=None):
    schema = fi.videos_schema(DIM, dtype, passthrough)
    rows = []
    for i, (vid, vec) in enumerate(zip(ids, vectors)):
        row = dict(video_id=vid, uri=f"/v/{vid}.mp4", title=None, tags=None, duration_s=1.0, fps=25.0,
                   width=64, height=36, video_codec="h264", has_audio=False, num_keyframes=i + 1,
                   stage_errors=[])
        row.update(fi.encode_embedding(vec, dtype))
        if passthrough is not None:
            row.update({f.name: f"{f.name}-{vid}" for f in passthrough})
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def write_run(root, run_id, tables: dict[str, pa.Table], meta: dict, commit: bool = True) -> None:
    """A run's shards under their committed names, and its marker unless `commit` is False."""
    files = []
    for name in fi.TABLES:
        table = tables.get(name)
        if table is None:
            continue
        path = os.path.join(root, name, shard_name(run_id, "part-00000-of-00001.parquet"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()}), path,
                       compression="zstd")
        files.append(path)
    if commit:
        os.makedirs(os.path.join(root, "_runs"), exist_ok=True)
        with open(os.path.join(root, "_runs", f"{run_id}.json"), "w") as f:
            json.dump({"run_id": run_id, "files": files}, f)


RUN_A, RUN_B, RUN_KILLED = "20261201T000000-aaaaaaaa", "20261202T000000-bbbbbbbb", "20261203T000000-cccccccc"


@pytest.fixture()
def two_runs(tmp_path):
    """Run A (schema 2: float16 vectors, a passthrough field), run B (int8 codes and scales), and a
    killed run C whose shards have no marker."""
    rng = np.random.default_rng(0)
    vec_a, vec_b, vec_c = _unit(rng, 3), _unit(rng, 4), _unit(rng, 2)
    ids_a, ids_b = [f"a{i}" for i in range(3)], [f"b{i}" for i in range(4)]
    channel = pa.schema([pa.field("channel", pa.string())])
    meta = lambda dtype: fi.file_metadata(clip_model="m", clip_weights="w", extra={"vmm.embedding_dtype": dtype})  # noqa: E731
    write_run(tmp_path, RUN_A, {"videos": _videos(ids_a, vec_a, "float16", channel)}, meta("float16") | {
        "vmm.schema_version": "2"})
    write_run(tmp_path, RUN_B, {"videos": _videos(ids_b, vec_b, "int8")},
              meta("int8"))
    write_run(tmp_path, RUN_KILLED, {"videos": _videos(["c0", "c1"], vec_c, "int8")},
              meta("int8"), commit=False)
    return str(tmp_path), {"a": (ids_a, vec_a), "b": (ids_b, vec_b)}


def test_only_committed_runs_are_read(two_runs):
    root, _ = two_runs
    index = IndexReader(root)
    assert index.runs == (RUN_A, RUN_B)
    assert [run_of(p) for p in index.files("videos")] == [RUN_A, RUN_B]
    assert index.num_rows("videos") == 7
    ids = index.table("videos", columns=["video_id"]).column("video_id").to_pylist()
    assert ids == ["a0", "a1", "a2", "b0", "b1", "b2", "b3"]  # no c*: run C never committed


def test_metadata_is_the_newest_runs_and_each_run_keeps_its_own(two_runs):
    index = IndexReader(two_runs[0])
    assert index.metadata["vmm.embedding_dtype"] == "int8"
    assert index.metadata["vmm.schema_version"] == fi.SCHEMA_VERSION
    assert index.run_metadata(RUN_A)["vmm.embedding_dtype"] == "float16"
    assert index.run_metadata(RUN_A)["vmm.schema_version"] == "2"


def test_embeddings_decode_both_encodings_in_row_order(two_runs):
    root, truth = two_runs
    ids, vectors = IndexReader(root).embeddings(columns=["video_id", "num_keyframes"])
    assert ids.column("video_id").to_pylist() == truth["a"][0] + truth["b"][0]
    assert ids.column("num_keyframes").to_pylist() == [1, 2, 3, 1, 2, 3, 4]
    expected = np.concatenate([truth["a"][1], truth["b"][1]])
    assert vectors.dtype == np.float32 and vectors.shape == (7, DIM)
    cos = np.sum(vectors * expected, axis=1) / np.linalg.norm(vectors, axis=1)
    assert cos.min() > 0.999, cos
    # Not the same vector everywhere: each row is nearest its own original.
    assert (np.argmax(vectors @ expected.T, axis=1) == np.arange(7)).all()


def test_a_column_one_run_lacks_reads_as_nulls(two_runs):
    table = IndexReader(two_runs[0]).table("videos", columns=["video_id", "channel"])
    assert table.column("channel").to_pylist() == ["channel-a0", "channel-a1", "channel-a2", None, None, None, None]
    with pytest.raises(KeyError, match="no column nope"):
        IndexReader(two_runs[0]).table("videos", columns=["nope"])


def test_mixed_encodings_in_one_column_are_refused_by_table_with_a_pointer(two_runs):
    index = IndexReader(two_runs[0])
    with pytest.raises(ValueError, match="embeddings()"):
        index.table("videos", columns=["embedding"])
    with pytest.raises(ValueError, match="embeddings()"):
        index.table("videos")
    assert "embedding" in index.schema("videos", names_only=True).names  # listing names still works
    assert index.table("videos", columns=["video_id", "title"]).num_rows == 7


def test_filter_and_batches(two_runs):
    index = IndexReader(two_runs[0])
    got = index.table("videos", columns=["video_id"], filter=pc.field("num_keyframes") >= 3)
    assert got.column("video_id").to_pylist() == ["a2", "b2", "b3"]
    batches = list(index.batches("videos", columns=["video_id", "channel"], batch_size=2))
    assert [b.num_rows for b in batches] == [2, 1, 2, 2]
    assert all(b.schema.names == ["video_id", "channel"] for b in batches)
    ids, _ = index.embeddings(columns=["video_id"], filter=pc.field("video_id").isin(["a1", "b3"]))
    assert ids.column("video_id").to_pylist() == ["a1", "b3"]


def test_decode_embeddings_needs_the_scale_with_integer_codes():
    codes = pa.array([[1, -2], [3, 4]], pa.list_(pa.int8(), 2))
    with pytest.raises(ValueError, match="embedding_scale"):
        decode_embeddings(pa.table({"embedding": codes}))
    got = decode_embeddings(pa.table({"embedding": codes, "embedding_scale": pa.array([0.5, 2.0], pa.float32())}))
    np.testing.assert_array_equal(got, [[0.5, -1.0], [6.0, 8.0]])


def test_frame_tokens_keep_nulls_apart():
    table = pa.table({
        "token": pa.array([5, None, 7], pa.int16()),
        "patch_tokens": pa.array([[1, 2, 3, 4], None, [4, 3, 2, 1]], pa.list_(pa.int16())),
    })
    token, patches = frame_tokens(table)
    assert token.tolist() == [5, -1, 7]
    assert patches.tolist() == [[1, 2, 3, 4], [-1, -1, -1, -1], [4, 3, 2, 1]]


def test_the_reader_imports_neither_beam_nor_torch():
    code = ("import sys, schemas.index; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('apache_beam', 'torch', 'open_clip')]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_object_store_index_reads_like_a_local_one(two_runs, tmp_path, monkeypatch):
    import tests.fakestore  # noqa: F401  (registers fakestore:// with Beam)

    root, _ = two_runs
    monkeypatch.setenv("VMM_FAKESTORE_ROOT", os.path.dirname(root))
    uri = "fakestore://" + os.path.basename(root)
    remote, local = IndexReader(uri), IndexReader(root)
    assert remote.runs == local.runs
    assert remote.files("videos")[0].startswith("fakestore://")
    assert remote.table("videos", columns=["video_id", "channel"]).equals(
        local.table("videos", columns=["video_id", "channel"]))
    np.testing.assert_array_equal(remote.embeddings()[1], local.embeddings()[1])


def _frames(video_ids, vectors, dtype):
    rows = []
    for i, (vid, vec) in enumerate(zip(video_ids, vectors)):
        row = dict(video_id=vid, frame_index=i, timestamp_s=i / 25, reason="clock", token=None, patch_tokens=None,
                   ocr=None)
        row.update(fi.encode_embedding(vec, dtype))
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=fi.frames_schema(DIM, dtype, store_embeddings=True))


def test_train_codebook_reads_committed_frames_of_every_encoding(tmp_path):
    """`vmm train-codebook --input INDEX` learns from exactly the committed frame vectors, old and new
    encodings alike: two runs' frames around two far-apart centres, a killed run's far away."""
    from models.codebook import Codebook
    from pipelines import train_codebook

    rng = np.random.default_rng(1)
    centres = _unit(rng, 2)
    near = lambda c, n: _unit(np.random.default_rng(n), n) * 0.05 + c  # noqa: E731
    meta = lambda dtype: fi.file_metadata(clip_model="m", clip_weights="w", extra={"vmm.embedding_dtype": dtype})  # noqa: E731
    index = tmp_path / "index"
    write_run(index, RUN_A, {"frames": _frames(["a"] * 20, near(centres[0], 20), "float16")}, meta("float16"))
    write_run(index, RUN_B, {"frames": _frames(["b"] * 30, near(centres[1], 30), "int8")}, meta("int8"))
    write_run(index, RUN_KILLED, {"frames": _frames(["c"] * 40, near(-centres[0], 40), "int8")}, meta("int8"),
              commit=False)
    argv = ["--input", str(index), "--output", str(tmp_path / "dict"), "--k", "2", "--min-points-per-centroid", "2"]
    assert train_codebook.run(argv) == 0
    book = Codebook.load(str(tmp_path / "dict"))
    assert (book.info.train_vectors, book.info.clip_model, book.info.clip_weights) == (50, "m", "w")
    got = book.centroids / np.linalg.norm(book.centroids, axis=1, keepdims=True)
    assert sorted(np.max(got @ centres.T, axis=0).round(2).tolist()) == [1.0, 1.0]
