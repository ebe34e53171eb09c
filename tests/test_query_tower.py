"""The query tower (models.query_tower, vmm train-query-tower / eval-query-tower, vmm search --query-tower).

Real CLIP weights and a click log are not available here: the tests train the tiny text tower
(`vmm-tiny-text`, context 16) in a generated, learnable world (bench/tower_world.py): videos with
fixed vectors made of their topic words, queries of two topic words, held-out queries being word
pairs no training query contains.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bench.tower_world import make_world, write_index, write_pairs
from models import clip
from models import query_tower as qt
from tests.conftest import REPO, TINY_MODEL

MODEL = "vmm-tiny-text"
BASE = clip.ClipConfig(MODEL, "none")
FAST = dict(batch_size=128, lr=2e-3, warmup_steps=10, threads=1)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _files(root) -> dict:
    return {os.path.join(d, f): _sha(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    w = make_world(n_videos=120, seed=0)
    index = write_index(w, str(root / "index"), MODEL)
    pairs = write_pairs(str(root / "pairs.jsonl"), w.train, w.heldout)
    return {"world": w, "index": index, "pairs": pairs, "root": root}


def _data(index, pairs_path, views, **kw):
    videos = qt.load_videos(index)
    pairs = qt.match_pairs(qt.read_pairs(pairs_path), videos, **kw)
    return videos, pairs, qt.build_views(views, pairs, videos), qt.HeldOut.of(pairs)


@pytest.fixture(scope="module")
def trained(world):
    """A tower trained on the query view for 30 epochs (~120 steps), and what it was trained from."""
    videos, pairs, views, heldout = _data(world["index"], world["pairs"], (("query", 1.0),))
    before = videos.vectors.copy()
    files = _files(world["index"])
    out = str(world["root"] / "tower")
    config = qt.TrainConfig(views=(("query", 1.0),), epochs=30, patience=0, **FAST)
    trainer = qt.Trainer(config, BASE, videos, views, heldout, out, data={"pairs": pairs.counts})
    info = trainer.fit()
    return {"info": info, "out": out, "videos": videos, "before": before, "files": files, "heldout": heldout,
            "trainer": trainer}


# ---- the text tower alone --------------------------------------------------------------------


def test_base_tower_is_the_clip_text_tower_and_a_saved_tower_loads_as_a_query_encoder(tiny_checkpoint, tmp_path):
    from models.query import QueryEncoder

    weights = clip.weights_id(clip.ClipConfig(TINY_MODEL, tiny_checkpoint))
    tower, scale, wid = qt.load_base_tower(clip.ClipConfig(TINY_MODEL, tiny_checkpoint))
    assert wid == weights and abs(scale - np.log(1 / 0.07)) < 1e-5
    assert not any(k.startswith("visual") for k in tower.state_dict())  # no image tower
    texts = ["a red kettle", "水壶 on a table", "dog", "a query longer than the context " * 20]  # 1 trimmed, 1 full
    ref = QueryEncoder(TINY_MODEL, weights, tiny_checkpoint).encode_texts(texts)
    got = qt.encode(tower.eval(), qt.tokenizer(TINY_MODEL), texts)  # runs the whole 77-token context
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # Alone, a short text runs only up to its end-of-text token: the same vector.
    alone = np.concatenate([qt.encode(tower, qt.tokenizer(TINY_MODEL), [t]) for t in texts])
    np.testing.assert_allclose(alone, ref, atol=1e-6)
    info = {"clip_model": TINY_MODEL, "clip_weights": weights, "index": {"vectors_id": "sha256:x"}}
    qt.save_tower(str(tmp_path / "t"), tower, info)
    loaded = qt.QueryTower(str(tmp_path / "t"), TINY_MODEL, weights)
    out = loaded.encode_texts(texts)
    assert out.dtype == np.float32 and out.shape == (4, loaded.dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    np.testing.assert_allclose(loaded.encode_text("dog"), ref[2], atol=1e-6)
    # Another model's or weights' vectors: refused with both ids.
    with pytest.raises(qt.TowerMismatch, match="another space"):
        qt.QueryTower(str(tmp_path / "t"), TINY_MODEL, "none")
    with pytest.raises(qt.TowerMismatch, match="ViT-B-32"):
        qt.QueryTower(str(tmp_path / "t"), "ViT-B-32", weights)
    # A weights file that is not the one tower.json describes is refused too.
    with open(tmp_path / "t" / qt.WEIGHTS_FILE, "ab") as f:
        f.write(b" ")
    with pytest.raises(qt.TowerError, match="sha256"):
        qt.QueryTower(str(tmp_path / "t"), TINY_MODEL, weights).load()


def test_duplicate_videos_in_a_batch_are_not_negatives():
    import torch
    from open_clip.loss import ClipLoss

    g = torch.Generator().manual_seed(0)
    video = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    ones = torch.ones(4)
    rows, tids = torch.arange(4), torch.arange(4)
    # Without duplicates it is open_clip's ClipLoss.
    assert torch.allclose(qt.masked_clip_loss(ClipLoss(), video, text, scale, rows, tids, ones),
                          ClipLoss()(video, text, scale), atol=1e-6)
    # Two pairs of one video, two texts of one query: each row keeps only its own positive.
    dup_video = video[[0, 0, 1, 1]]
    masked = qt.masked_clip_loss(ClipLoss(), dup_video, text, scale, torch.tensor([0, 0, 1, 1]), tids, ones)
    assert masked < ClipLoss()(dup_video, text, scale)
    single = qt.masked_clip_loss(ClipLoss(), video[:2][[0, 0]], text[:2], scale, torch.tensor([0, 0]),
                                 torch.tensor([0, 1]), torch.ones(2))
    assert float(single) == 0.0  # every other logit of each row is masked
    # Pair weights weight each pair's term.
    w = torch.tensor([1.0, 0.0, 0.0, 0.0])
    first = qt.masked_clip_loss(ClipLoss(), video, text, scale, rows, tids, w)
    logits = scale * video @ text.T
    expected = (torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0]))
                + torch.nn.functional.cross_entropy(logits.T[:1], torch.tensor([0]))) / 2
    assert torch.allclose(first, expected, atol=1e-6)


def test_pairs_are_read_matched_weighted_and_split(world, tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    videos = qt.load_videos(world["index"])
    table = pa.table({"query": ["dog cat", "dog cat", "", "fish", "tree"], "video_id": ["v00001", "nope", "v00002",
                                                                                     "v00003", "v00004"],
                      "clicks": [3, 1, 1, 0, 2], "impressions": [6, 1, 1, 5, 8]})
    pq.write_table(table, tmp_path / "p.parquet")
    pcsv.write_csv(table, tmp_path / "p.csv")
    for path in (tmp_path / "p.parquet", tmp_path / "p.csv"):
        pairs = qt.match_pairs(qt.read_pairs(str(path)), videos)
        assert pairs.counts == {"read": 5, "unknown_video": 1, "empty_query": 1, "no_clicks": 1, "heldout": 0,
                                "train": 2}
        assert pairs.queries == ("dog cat", "tree") and pairs.rows.tolist() == [1, 4]
        assert pairs.weights.tolist() == [0.5, 0.25]  # clicks per impression
    held = qt.match_pairs(qt.read_pairs(world["pairs"]), videos)
    assert held.counts["heldout"] == 120 and held.counts["train"] == 480
    # Without a split column a seeded share of the distinct queries is held out, never both sides.
    pq.write_table(pa.table({"query": [q for q, _ in world["world"].train],
                             "video_id": [v for _, v in world["world"].train]}), tmp_path / "nosplit.parquet")
    by_hash = qt.match_pairs(qt.read_pairs(str(tmp_path / "nosplit.parquet")), videos, heldout_fraction=0.2)
    assert 0.1 < by_hash.heldout.mean() < 0.3
    assert not set(np.asarray(by_hash.queries)[by_hash.heldout]) & set(np.asarray(by_hash.queries)[~by_hash.heldout])
    with pytest.raises(qt.TowerError, match="no column video_id"):
        pq.write_table(pa.table({"query": ["x"]}), tmp_path / "bad.parquet")
        qt.read_pairs(str(tmp_path / "bad.parquet"))
    from pipelines.train_query_tower import parse_views

    assert parse_views("query,title:0.5") == (("query", 1.0), ("title", 0.5))
    with pytest.raises(ValueError, match="unknown view 'caption'"):
        parse_views("query,caption")
    with pytest.raises(qt.TowerError, match="views must be"):
        qt.TrainConfig(views=(("query", 1.0), ("query", 2.0))).check()
    assert qt.key_lines(["short\na much longer line\nshort", "the longest line of them all"], 2) == \
        "a much longer line the longest line of them all"


# ---- training in the learnable world ---------------------------------------------------------


def test_trained_tower_finds_held_out_word_combinations(trained, world):
    info = trained["info"]
    base, after = info["metrics"]["base"], info["metrics"]["trained"]
    chance = 10 / len(world["world"].ids)
    assert base["queries"] == after["queries"] == 120
    assert base["R@10"] < 3 * chance, base  # the untrained tower is near chance (0.083)
    assert after["R@10"] >= 0.8, after
    assert after["median_rank"] < base["median_rank"] / 5
    assert info["clip_model"] == MODEL and info["clip_weights"] == "none"
    assert info["index"]["vectors_id"] == trained["videos"].vectors_id and info["data"]["query_pairs"] == 480
    log = open(os.path.join(trained["out"], qt.LOG_CSV)).read().splitlines()
    assert len(log) == 31 and "loss_query" in log[0] and "heldout_R@10" in log[0]
    history = json.load(open(os.path.join(trained["out"], qt.LOG_JSON)))
    assert history[-1]["loss"] < history[0]["loss"] / 2
    assert sorted(os.listdir(trained["out"])) == [qt.LOG_CSV, qt.LOG_JSON, qt.WEIGHTS_FILE, qt.TOWER_JSON]


def test_locked_video_vectors_are_bit_identical_after_training(trained, world):
    videos = trained["videos"]
    assert not videos.vectors.flags.writeable
    assert videos.vectors.tobytes() == trained["before"].tobytes()
    assert qt.load_videos(world["index"]).vectors.tobytes() == trained["before"].tobytes()
    assert _files(world["index"]) == trained["files"]
    assert qt.vectors_id(videos.ids, videos.vectors) == trained["info"]["index"]["vectors_id"]


def test_eval_command_puts_base_and_trained_side_by_side(trained, world, capsys):
    from pipelines.cli import COMMANDS
    from pipelines.options import run_command

    rc = run_command(COMMANDS["eval-query-tower"], ["--index", world["index"], "--pairs", world["pairs"],
                                                    "--query-tower", trained["out"], "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for name in ("base", "trained"):
        for k in ("R@1", "R@5", "R@10", "median_rank", "mean_rank"):
            assert out["metrics"][name][k] == pytest.approx(trained["info"]["metrics"][name][k], abs=0.01), (name, k)
    # A tower for another model's vectors is refused, one line, exit 2.
    other = world["root"] / "other-index"
    write_index(world["world"], str(other), TINY_MODEL)
    rc = run_command(COMMANDS["eval-query-tower"], ["--index", str(other), "--pairs", world["pairs"],
                                                    "--query-tower", trained["out"]])
    assert rc == 2 and "another space" in capsys.readouterr().err


def test_title_view_teaches_words_no_training_query_has(tmp_path):
    """Group B's videos are described only by their titles: their topic words appear in no
    training query, only in titles (and in group B's held-out queries). With the title view the
    tower learns those words; without it, it stays near chance. Margin: R@10 at least 0.5 higher."""
    w = make_world(n_videos=120, seed=1, multiview=True)
    index = write_index(w, str(tmp_path / "index"), MODEL)
    pairs_path = write_pairs(str(tmp_path / "pairs.jsonl"), w.train, w.heldout)
    results = {}
    for name, views in (("title", (("query", 1.0), ("title", 1.0))), ("no-title", (("query", 1.0),))):
        videos, pairs, train_views, heldout = _data(index, pairs_path, views)
        keep = [i for i, rel in enumerate(heldout.relevant) if videos.ids[rel[0]] in w.group_b]
        group_b = qt.HeldOut(tuple(heldout.queries[i] for i in keep), tuple(heldout.relevant[i] for i in keep))
        train_words = {word for q, _ in w.train for word in q.split()}
        assert len(group_b) == 60 and not any(set(q.split()) & train_words for q in group_b.queries)
        config = qt.TrainConfig(views=views, epochs=30, patience=0, **FAST)
        out = str(tmp_path / name)
        results[name] = qt.Trainer(config, BASE, videos, train_views, group_b, out).fit()
        header = open(os.path.join(out, qt.LOG_CSV)).readline()
        assert ("loss_title" in header) == (name == "title") and "loss_query" in header
    with_title, without = results["title"]["metrics"]["trained"]["R@10"], results["no-title"]["metrics"]["trained"]["R@10"]
    assert with_title >= without + 0.5, (with_title, without)
    assert with_title >= 0.8
    assert results["title"]["data"]["title_pairs"] == 120


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(world, tmp_path):
    """An interrupted run (stopped after epoch 1 of 3), resumed by `vmm train-query-tower --resume`,
    ends bit-identical to one that ran through."""
    import torch
    from safetensors.torch import load_file

    from pipelines.cli import COMMANDS
    from pipelines.options import run_command

    views = (("query", 1.0), ("title", 0.5))
    config = qt.TrainConfig(views=views, epochs=3, patience=2, batch_size=96, lr=2e-3, warmup_steps=10, threads=1)
    data = _data(world["index"], world["pairs"], views)

    def run(out, on_epoch_end=None, resume=False):
        videos, pairs, train_views, heldout = data
        return qt.Trainer(config, BASE, videos, train_views, heldout, str(out), data={"pairs": pairs.counts}).fit(
            resume=resume, on_epoch_end=on_epoch_end)

    straight = run(tmp_path / "straight")

    class Interrupt(Exception):
        pass

    def stop(epoch, row):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(tmp_path / "resumed", on_epoch_end=stop)
    assert os.path.exists(tmp_path / "resumed" / qt.CHECKPOINT_FILE)
    assert not os.path.exists(tmp_path / "resumed" / qt.TOWER_JSON)
    argv = ["--index", world["index"], "--pairs", world["pairs"], "--output", str(tmp_path / "resumed"),
            "--views", "query,title:0.5", "--epochs", "3", "--batch-size", "96", "--lr", "2e-3",
            "--warmup-steps", "10", "--torch-threads", "1", "--no-progress"]
    assert run_command(COMMANDS["train-query-tower"], argv + ["--seed", "1", "--resume"]) == 2  # other settings
    assert run_command(COMMANDS["train-query-tower"], argv + ["--resume"]) == 0
    a = load_file(str(tmp_path / "straight" / qt.WEIGHTS_FILE))
    b = load_file(str(tmp_path / "resumed" / qt.WEIGHTS_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed = json.load(open(tmp_path / "resumed" / qt.TOWER_JSON))
    assert resumed["logit_scale"] == straight["logit_scale"]
    timeless = lambda m: {k: {n: v for n, v in m[k].items() if n != "encode_s"} for k in m}  # noqa: E731
    assert timeless(resumed["metrics"]) == timeless(straight["metrics"]) and resumed["training"]["epochs_run"] == 3
    assert json.load(open(tmp_path / "resumed" / qt.LOG_JSON))[0]["loss"] == \
        json.load(open(tmp_path / "straight" / qt.LOG_JSON))[0]["loss"]
    # A finished tower is not overwritten by accident.
    assert run_command(COMMANDS["train-query-tower"], argv) == 2


def test_training_refuses_other_weights_and_locks_layers(world, tmp_path, capsys):
    from pipelines.cli import COMMANDS
    from pipelines.options import run_command

    argv = ["--index", world["index"], "--pairs", world["pairs"], "--output", str(tmp_path / "t"), "--epochs", "1",
            "--batch-size", "64", "--torch-threads", "1", "--no-progress"]
    assert run_command(COMMANDS["train-query-tower"], argv + ["--clip-pretrained", "/no/such.pt"]) == 2
    assert "--clip-pretrained" in capsys.readouterr().err
    assert run_command(COMMANDS["train-query-tower"], argv + ["--unlocked-layers", "5"]) == 2
    assert "has 2 blocks" in capsys.readouterr().err
    assert run_command(COMMANDS["train-query-tower"], argv + ["--unlocked-layers", "1", "--views", "query"]) == 0
    info = json.load(open(tmp_path / "t" / qt.TOWER_JSON))
    base, _, _ = qt.load_base_tower(BASE)
    trained = qt.load_tower_weights(str(tmp_path / "t"), info)
    import torch

    b, t = base.state_dict(), trained.state_dict()
    assert torch.equal(b["token_embedding.weight"], t["token_embedding.weight"])  # locked
    assert torch.equal(b["transformer.resblocks.0.mlp.c_fc.weight"], t["transformer.resblocks.0.mlp.c_fc.weight"])
    assert not torch.equal(b["transformer.resblocks.1.mlp.c_fc.weight"], t["transformer.resblocks.1.mlp.c_fc.weight"])
    assert info["training"]["trainable_parameters"] < sum(v.numel() for v in b.values()) / 10


def test_ocr_view_trains_on_the_key_lines(world, tmp_path, capsys):
    from pipelines.cli import COMMANDS
    from pipelines.options import run_command

    w = world["world"]
    argv = ["--pairs", world["pairs"], "--epochs", "1", "--batch-size", "64", "--torch-threads", "1",
            "--no-progress", "--views", "query,ocr:0.3"]
    assert run_command(COMMANDS["train-query-tower"], argv + ["--index", world["index"], "--output",
                                                              str(tmp_path / "none")]) == 2
    assert "view ocr has no pairs" in capsys.readouterr().err  # the world's index has no OCR text
    ocr = {vid: (f"subscribe\n{' '.join(t)}\nsubscribe", "exit") for vid, t in zip(w.ids[:50], w.topics)}
    index = write_index(w, str(tmp_path / "index"), MODEL, ocr=ocr)
    assert run_command(COMMANDS["train-query-tower"], argv + ["--index", index, "--output", str(tmp_path / "t")]) == 0
    info = json.load(open(tmp_path / "t" / qt.TOWER_JSON))
    assert info["views"] == {"query": 1.0, "ocr": 0.3} and info["data"]["ocr_pairs"] == 50
    assert "loss_ocr" in open(tmp_path / "t" / qt.LOG_CSV).readline()
    videos = qt.load_videos(index, columns=["title", *qt.OCR_COLUMNS])
    view = qt.build_views((("ocr", 1.0),), qt.match_pairs(qt.read_pairs(world["pairs"]), videos), videos, 2)[0]
    assert view.texts[view.text_ids[0]] == f"subscribe {' '.join(w.topics[0])}"  # the 2 longest distinct lines, in order


# ---- search with the tower -------------------------------------------------------------------


def test_search_encodes_text_queries_with_the_tower(trained, world, tmp_path):
    from pipelines import index as index_cmd
    from pipelines.search import Searcher

    search = tmp_path / "search"
    assert index_cmd.run(["--input", world["index"], "--output", str(search)]) == 0
    heldout = trained["heldout"]
    ids = trained["videos"].ids
    found, hits = {}, {}
    for name, kw in (("base", {}), ("trained", {"query_tower": trained["out"]})):
        searcher = Searcher(str(search), **kw)
        hits[name] = [[h.video_id for h in searcher.search(q, k=10, queues=["vector"])] for q in heldout.queries]
        found[name] = np.mean([ids[rel[0]] in h for h, rel in zip(hits[name], heldout.relevant)])
    assert found["trained"] == pytest.approx(trained["info"]["metrics"]["trained"]["R@10"], abs=0.05)
    assert found["base"] < 0.3 and found["trained"] >= 0.8
    i = next(i for i, h in enumerate(hits["trained"]) if ids[heldout.relevant[i][0]] in h and
             ids[heldout.relevant[i][0]] not in hits["base"][i])
    q = heldout.queries[i]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "search", str(search), "--query", q, "--k", "10",
                           "--query-tower", trained["out"], "--queues", "vector", "--json"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [json.loads(line)["video_id"] for line in proc.stdout.splitlines()] == hits["trained"][i]
    # The same tower on a search index of another model's vectors: refused before any query.
    other = tmp_path / "other"
    shutil.copytree(search, other)
    info = json.load(open(other / "index.json"))
    info["clip_model"] = TINY_MODEL
    json.dump(info, open(other / "index.json", "w"))
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "search", str(other), "--query", q,
                           "--query-tower", trained["out"]], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 2 and "another space" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
