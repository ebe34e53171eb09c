"""Visual dictionaries in the pipeline: train-codebook, frame/patch tokens, refusals."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pyarrow as pa
import pytest

from models import clip
from models.codebook import Codebook
from models.decode import DecodeConfig, decode_keyframes
from pipelines import train_codebook
from tests.conftest import TINY_MODEL
from tests.test_pipeline import read, run_extract

GRID = 4 * 4  # vmm-tiny-vit: 64 px / 16 px patches


def _train(out, manifest, checkpoint, *extra):
    argv = ["--input", str(manifest), "--output", str(out), "--clip-model", TINY_MODEL,
            "--clip-pretrained", checkpoint, "--no-progress", *extra]
    return train_codebook.run(argv)


@pytest.fixture(scope="module")
def dictionaries(sample, tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("dicts")
    frame, patch = root / "frame", root / "patch"
    assert _train(frame, sample["manifest"], tiny_checkpoint, "--k", "4", "--min-points-per-centroid", "2") == 0
    assert _train(patch, sample["manifest"], tiny_checkpoint, "--k", "16", "--level", "patch",
                  "--min-points-per-centroid", "5") == 0
    return str(frame), str(patch)


@pytest.fixture(scope="module")
def tokenized_run(sample, tiny_checkpoint, dictionaries, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    rc, summary = run_extract(out, sample["manifest"], tiny_checkpoint, "--codebook", dictionaries[0],
                              "--patch-codebook", dictionaries[1], "--store-frame-embeddings",
                              "--embedding-dtype", "float32")
    assert rc == 0 and summary["accounting_ok"]
    return str(out), summary


def _brute_force(book: Codebook, vectors: np.ndarray) -> np.ndarray:
    x = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True) if book.info.normalized else vectors
    d = ((x[:, None, :].astype(np.float64) - book.centroids[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(axis=1)


def test_dictionary_files_and_metadata(dictionaries, tiny_checkpoint):
    for path, level, k in ((dictionaries[0], "frame", 4), (dictionaries[1], "patch", 16)):
        centroids = np.load(os.path.join(path, "codebook.npy"), allow_pickle=False)
        info = json.load(open(os.path.join(path, "codebook.json")))
        assert centroids.shape == (k, 64) and centroids.dtype == np.float32
        assert (info["k"], info["dim"], info["level"], info["metric"]) == (k, 64, level, "l2")
        assert info["clip_model"] == TINY_MODEL and info["clip_weights"].startswith("file:tiny.pt")
        assert info["train_vectors"] == (11 if level == "frame" else 11 * GRID)
        assert {"sha256", "iterations", "seed"} <= set(info)


def test_frame_tokens_equal_brute_force_argmin(tokenized_run, dictionaries):
    out, summary = tokenized_run
    frames = read(out, "frames").to_pylist()
    book = Codebook.load(dictionaries[0])
    embs = np.array([f["embedding"] for f in frames], np.float32)
    tokens = np.array([f["token"] for f in frames])
    np.testing.assert_array_equal(tokens, _brute_force(book, embs))
    assert len(set(tokens.tolist())) > 1  # not a constant
    assert summary["counters"]["vmm.frame_tokens"] == len(frames)


def test_patch_tokens_equal_brute_force_on_the_same_frames(tokenized_run, dictionaries, sample, tiny_checkpoint):
    out, _ = tokenized_run
    frames = {(f["video_id"], f["frame_index"]): f for f in read(out, "frames").to_pylist()}
    book = Codebook.load(dictionaries[1])
    encoder = clip.ClipEncoder(clip.ClipConfig(TINY_MODEL, tiny_checkpoint)).load()
    for video in sample["expected"]["videos"]:
        decoded = decode_keyframes(video["uri"], DecodeConfig(short_side=64))
        _, patches = encoder.encode_images_and_patches([img for _, img in decoded.keyframes])
        for (c, _), p in zip(decoded.keyframes, patches):
            row = frames[(video["video_id"], c.frame_index)]
            assert len(row["patch_tokens"]) == GRID
            assert all(0 <= t < 16 for t in row["patch_tokens"])
            np.testing.assert_array_equal(row["patch_tokens"], _brute_force(book, p))


def test_file_metadata_names_the_dictionaries(tokenized_run, dictionaries):
    import glob

    import pyarrow.parquet as pq

    out, _ = tokenized_run
    ids = (Codebook.load(dictionaries[0]).id, Codebook.load(dictionaries[1]).id)
    for path in glob.glob(os.path.join(out, "*", "*.parquet")):
        meta = pq.read_schema(path).metadata
        assert meta[b"vmm.codebook_id"].decode() == ids[0]
        assert meta[b"vmm.patch_codebook_id"].decode() == ids[1]
    schema = pq.read_schema(glob.glob(os.path.join(out, "frames", "*.parquet"))[0])
    assert str(schema.field("token").type) == "int16"
    assert schema.field("patch_tokens").type.value_type == pa.int16()


def test_no_dictionary_means_null_tokens(tmp_path, sample, tiny_checkpoint):
    rc, _ = run_extract(tmp_path / "o", sample["manifest"], tiny_checkpoint)
    frames = read(tmp_path / "o", "frames").to_pylist()
    assert rc == 0 and all(f["token"] is None and f["patch_tokens"] is None for f in frames)


def _rewrite(src: str, dst, **changes) -> str:
    book = Codebook.load(src)
    centroids = book.centroids
    if "dim" in changes:
        centroids = np.ascontiguousarray(centroids[:, : changes["dim"]])
    from models.codebook import array_sha256

    info = dataclasses.replace(book.info, **changes, sha256=array_sha256(centroids))
    Codebook(centroids, info).save(str(dst))
    return str(dst)


def test_incompatible_dictionaries_are_refused_at_construction(tmp_path, sample, tiny_checkpoint, dictionaries):
    frame, patch = dictionaries
    cases = {
        "dim": _rewrite(frame, tmp_path / "dim", dim=32),
        "model": _rewrite(frame, tmp_path / "model", clip_model="ViT-B-32"),
    }
    for name, path in cases.items():
        rc, out = _extract_rc(tmp_path / f"o-{name}", sample, tiny_checkpoint, "--codebook", path)
        assert rc == 2 and not os.path.exists(out / "videos"), name
    rc, _ = _extract_rc(tmp_path / "o-level", sample, tiny_checkpoint, "--codebook", patch)
    assert rc == 2
    rc, _ = _extract_rc(tmp_path / "o-force", sample, tiny_checkpoint, "--codebook", cases["model"],
                        "--force-codebook")
    assert rc == 0
    assert _train(tmp_path / "big", sample["manifest"], tiny_checkpoint, "--k", "40000") == 2
    assert _train(tmp_path / "small", sample["manifest"], tiny_checkpoint, "--k", "64") == 2


def _extract_rc(out, sample, checkpoint, *extra):
    from pipelines import extract

    argv = ["--input", sample["manifest"], "--output", str(out), "--clip-model", TINY_MODEL,
            "--clip-pretrained", checkpoint, "--no-progress", *extra]
    return extract.run(argv), out


def test_training_from_an_index_is_deterministic(tokenized_run, tmp_path, dictionaries):
    out, _ = tokenized_run
    ids = []
    for name in ("a", "b"):
        argv = ["--input", out, "--output", str(tmp_path / name), "--k", "4", "--min-points-per-centroid", "2"]
        assert train_codebook.run(argv) == 0
        ids.append(Codebook.load(str(tmp_path / name)).id)
    assert ids[0] == ids[1]
    info = Codebook.load(str(tmp_path / "a")).info
    # Every frame row of the index has an embedding (keyframes and text frames).
    assert (info.k, info.train_vectors, info.clip_model) == (4, read(out, "frames").num_rows, TINY_MODEL)
