"""`vmm index` + `vmm search` on generated videos extracted by the real pipeline (tiny random CLIP,
RapidOCR, Whisper): text queries find their video through subtitles, speech and a Chinese sign;
image and --like queries find theirs through the vectors and visual words; errors are one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from pipelines import index as index_cmd
from pipelines import train_codebook
from pipelines.search import Searcher, SearchError
from tests.conftest import REPO, TINY_MODEL, missing_prerequisite
from tests.test_pipeline import run_extract

pytestmark = pytest.mark.slow

CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"  # Debian: fonts-wqy-microhei
SIGN_TEXT = "红色水壶特价"
COPY_ID = "copy-000"
SIGN_ID = "sign-zh"


def _watermarked_copy(src: str, dst: str) -> None:
    """Re-encode `src` at half size with a white corner watermark, video only."""
    font = ImageFont.load_default(size=14)
    with av.open(src) as inp, av.open(dst, "w") as out:
        stream_in = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.options = {"crf": "30"}
        for frame in inp.decode(stream_in):
            img = frame.to_image().resize((320, 180))
            draw = ImageDraw.Draw(img)
            draw.rectangle((250, 8, 312, 30), fill=(255, 255, 255))
            draw.text((254, 10), "COPY", font=font, fill=(0, 0, 0))
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _sign_video(dst: str) -> None:
    """Two shots, each a Chinese shop sign at a different place (scene text, not overlay)."""
    font = ImageFont.truetype(CJK_FONT, 44)
    with av.open(dst, "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i in range(100):
            shot = i // 50
            img = Image.new("RGB", (640, 360), (30, 90, 60) if shot == 0 else (120, 60, 140))
            draw = ImageDraw.Draw(img)
            x, y = (40, 40) if shot == 0 else (300, 110)
            draw.rectangle((x - 10, y - 10, x + 290, y + 60), fill=(250, 250, 240))
            draw.text((x, y), SIGN_TEXT, font=font, fill=(200, 20, 20))
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _build(out, search, *extra):
    return index_cmd.run(["--input", str(out), "--output", str(search), *extra])


@pytest.fixture(scope="module")
def corpus(sample, tiny_checkpoint, tmp_path_factory):
    if not os.path.isfile(CJK_FONT):
        missing_prerequisite(f"{CJK_FONT} is missing (apt-get install fonts-wqy-microhei)")
    root = tmp_path_factory.mktemp("search")
    videos = sample["expected"]["videos"]
    _watermarked_copy(videos[0]["uri"], str(root / "copy.mp4"))
    _sign_video(str(root / "sign.mp4"))
    with open(sample["manifest"], encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rows += [{"uri": str(root / "copy.mp4"), "video_id": COPY_ID, "title": "reupload"},
             {"uri": str(root / "sign.mp4"), "video_id": SIGN_ID, "title": "street walk"}]
    manifest = root / "all.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    frame_dict = root / "dict"
    assert train_codebook.run(["--input", sample["manifest"], "--output", str(frame_dict), "--k", "4",
                               "--min-points-per-centroid", "2", "--clip-model", TINY_MODEL,
                               "--clip-pretrained", tiny_checkpoint, "--no-progress"]) == 0
    out = root / "out"
    # Run 1: the sample; an index is built from it alone, to be updated after run 2.
    rc, _ = run_extract(out, sample["manifest"], tiny_checkpoint, "--codebook", str(frame_dict))
    assert rc == 0
    updated = root / "search-updated"
    assert _build(out, updated, "--codebook", str(frame_dict)) == 0
    # Run 2: the copy and the sign, added to the same forward index.
    rc, _ = run_extract(out, manifest, tiny_checkpoint, "--codebook", str(frame_dict), "--skip-existing")
    assert rc == 0
    search = root / "search"
    assert _build(out, search, "--codebook", str(frame_dict)) == 0
    assert _build(out, updated, "--update") == 0
    return {"root": root, "out": str(out), "search": str(search), "updated": str(updated),
            "videos": videos, "dict": str(frame_dict), "checkpoint": tiny_checkpoint}


@pytest.fixture(scope="module")
def searcher(corpus):
    return Searcher(corpus["search"], clip_pretrained=corpus["checkpoint"])


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def test_index_json_records_source_models_and_measured_recall(corpus):
    with open(os.path.join(corpus["search"], "index.json"), encoding="utf-8") as f:
        info = json.load(f)
    assert info["counts"]["videos"] == len(corpus["videos"]) + 2
    assert len(info["runs"]) == 2
    assert info["clip_model"] == TINY_MODEL and info["clip_weights"].startswith("file:tiny.pt:sha256:")
    assert info["codebook_id"] and info["codebook_for_image_queries"] == info["codebook_id"]
    shard = info["shards"][0]
    assert shard["vector"]["kind"] == "flat" and shard["vector"]["recall_at_10"] == 1.0
    assert shard["text"]["docs"] == info["counts"]["videos"]
    assert shard["visual"]["videos_with_tokens"] == info["counts"]["videos"]
    stages = shard["stage_seconds"]  # where a build's time went (bench/README's growth table reads these)
    assert set(stages) == {"read", "vectors", "text", "visual", "passages"}
    assert all(v >= 0 for v in stages.values()) and sum(stages.values()) <= shard["seconds"] + 0.05
    assert "ocr_overlay_text" not in info["text"]["fields"]
    assert info["text"]["analyzer"].startswith("vmm-text-1:rjieba")


def _text_queries(corpus):
    """(query, relevant video ids): each subtitle line, each video's speech, the Chinese sign."""
    queries = []
    for v in corpus["videos"]:
        relevant = {v["video_id"]} | ({COPY_ID} if v is corpus["videos"][0] else set())
        for line in v["subtitles"]:
            queries.append((line["text"], relevant))
        if v["has_audio"] and v["speech_text"]:
            words = v["speech_text"].split()
            queries.append((" ".join(words[len(words) // 2: len(words) // 2 + 4]), {v["video_id"]}))
    queries.append((SIGN_TEXT, {SIGN_ID}))
    return queries


def test_text_queries_find_their_video(searcher, corpus):
    ranks = []
    for query, relevant in _text_queries(corpus):
        hits = searcher.search(query, k=10, queues=["text"])
        rank = next((h.rank for h in hits if h.video_id in relevant), None)
        ranks.append(rank)
    mrr = float(np.mean([1.0 / r if r else 0.0 for r in ranks]))
    assert mrr >= 0.9, list(zip(_text_queries(corpus), ranks))
    # The Chinese sign is found through its segmented scene text, with the line and its time.
    hit = searcher.search(SIGN_TEXT, k=3, queues=["text"])[0]
    assert hit.video_id == SIGN_ID
    assert hit.queues["text"].field == "ocr_scene_text" and "水壶" in hit.queues["text"].snippet
    assert hit.queues["text"].time_s is not None
    # Part of a segmented word's sentence still finds it.
    assert searcher.search("水壶", k=3, queues=["text"])[0].video_id == SIGN_ID


def test_speech_snippet_carries_its_segment_time(searcher, corpus):
    v = next(v for v in corpus["videos"] if v["has_audio"])
    words = v["speech_text"].split()
    hit = searcher.search(" ".join(words[:4]), k=3, queues=["text"])[0]
    assert hit.video_id in (v["video_id"], COPY_ID)


def test_overlay_text_is_not_ranked_by_default(searcher, corpus, tmp_path):
    import pyarrow.parquet as pq

    # Every sample video has the "VMM TV" logo, which OCR reads as overlay text (as "VMMTV": PP-OCR
    # drops the space); the query is what OCR read.
    videos = pq.read_table(os.path.join(corpus["out"], "videos"), columns=["video_id", "ocr_overlay_text"]).to_pylist()
    logo = next(r for r in videos if r["video_id"] == corpus["videos"][0]["video_id"])["ocr_overlay_text"]
    assert logo and logo.replace(" ", "").upper() == "VMMTV"
    assert searcher.search(logo, k=10, queues=["text"]) == []
    fused = searcher.search(logo, k=10)
    assert all(h.queues["text"] is None for h in fused)
    # Asked for, the overlay field is indexed and finds the logo on every sample video.
    s = tmp_path / "with-overlay"
    assert _build(corpus["out"], s, "--fields", "title,ocr_subtitle_text,ocr_overlay_text") == 0
    hits = Searcher(str(s), clip_pretrained=corpus["checkpoint"]).search(logo, k=10, queues=["text"])
    assert {v["video_id"] for v in corpus["videos"]} <= {h.video_id for h in hits}


def _frame_at(uri: str, t: float) -> np.ndarray:
    with av.open(uri) as c:
        for frame in c.decode(video=0):
            if frame.time >= t:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"no frame at {t}s in {uri}")


def test_keyframes_find_their_video(searcher, corpus):
    """Each keyframe as the extractor decoded it, as an image query. With random tiny weights a video's
    vector (the mean of 3-4 different shots) is not always nearest to each of its frames, so: every
    video is found first by one of its keyframes, the mean reciprocal rank is well above chance
    (0.46 for 5 videos), and different frames find different videos (the vectors are not one blur)."""
    from models import clip
    from models.decode import DecodeConfig, decode_keyframes

    size = clip.image_size(TINY_MODEL)
    ranks, firsts = {}, set()
    for v in corpus["videos"]:
        decoded = decode_keyframes(v["uri"], DecodeConfig(short_side=size))
        for _, image in decoded.keyframes:
            hits = searcher.search(image=image, k=5)
            assert set(hits[0].queues) == {"vector", "visual"}
            vector = searcher.search(image=image, k=10, queues=["vector"])
            rank = next(h.rank for h in vector if h.video_id == v["video_id"])
            ranks.setdefault(v["video_id"], []).append(rank)
            firsts.add(vector[0].video_id)
    assert all(min(r) == 1 for r in ranks.values()), ranks
    mrr = np.mean([1 / r for rs in ranks.values() for r in rs])
    assert mrr >= 0.55, ranks
    assert len(firsts) >= 3


def test_a_frame_of_one_shot_finds_its_multi_shot_video(searcher, corpus):
    v = max(corpus["videos"], key=lambda v: len(v["shots"]))
    shot = v["shots"][len(v["shots"]) // 2]
    img = _frame_at(v["uri"], (shot["start_s"] + shot["end_s"]) / 2)
    hits = searcher.search(image=img, k=5, queues=["vector"])
    assert hits[0].video_id == v["video_id"]


def test_a_watermarked_reencoded_copy_is_the_first_like_result(searcher, corpus):
    original = corpus["videos"][0]["video_id"]
    hits = searcher.search(like=original, k=5)
    assert hits[0].video_id == COPY_ID
    assert original not in {h.video_id for h in hits}
    assert searcher.search(like=COPY_ID, k=5)[0].video_id == original


def test_queues_restrict_and_json_is_stable(corpus):
    args = ["search", corpus["search"], "--query", corpus["videos"][1]["subtitles"][0]["text"], "--json",
            "--clip-pretrained", corpus["checkpoint"]]
    first, second = _cli(*args), _cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    hits = [json.loads(line) for line in first.stdout.splitlines()]
    assert hits[0]["video_id"] == corpus["videos"][1]["video_id"]
    assert set(hits[0]) == {"rank", "video_id", "score", "title", "queues"}
    assert set(hits[0]["queues"]) == {"text", "vector"}
    assert list(hits[0]["queues"]) == ["text", "vector"]  # the contract's order, whichever queue finished first
    assert set(hits[0]["queues"]["text"]) == {"rank", "score", "field", "snippet", "time_s"}
    # Found by both queues: its fused score is the sum of both reciprocal ranks.
    t, v = hits[0]["queues"]["text"], hits[0]["queues"]["vector"]
    assert hits[0]["score"] == pytest.approx(1 / (60 + t["rank"]) + 1 / (60 + v["rank"]), abs=1e-6)
    only = _cli(*args, "--queues", "text")
    assert only.returncode == 0, only.stderr
    assert all(set(json.loads(line)["queues"]) == {"text"} for line in only.stdout.splitlines())
    table = _cli("search", corpus["search"], "--like", corpus["videos"][0]["video_id"])
    assert table.returncode == 0 and COPY_ID in table.stdout


def test_update_adds_the_new_runs_and_matches_a_fresh_build(corpus):
    with open(os.path.join(corpus["updated"], "index.json"), encoding="utf-8") as f:
        info = json.load(f)
    assert len(info["runs"]) == 2 and info["counts"]["videos"] == len(corpus["videos"]) + 2
    assert info["shards"][0]["added"] == 2 and "added" in info["shards"][0]["vector"]["how"]
    fresh = Searcher(corpus["search"], clip_pretrained=corpus["checkpoint"])
    updated = Searcher(corpus["updated"], clip_pretrained=corpus["checkpoint"])
    for query in (SIGN_TEXT, corpus["videos"][2]["subtitles"][0]["text"]):
        assert [h.video_id for h in updated.search(query, k=5, queues=["text"])] == \
               [h.video_id for h in fresh.search(query, k=5, queues=["text"])]
    assert updated.search(like=COPY_ID, k=3)[0].video_id == corpus["videos"][0]["video_id"]
    # Nothing new: nothing to do.
    assert _build(corpus["out"], corpus["updated"], "--update") == 0


def test_an_index_of_another_format_is_refused_and_update_rebuilds_it(corpus, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(corpus["search"], old)
    index_json = old / "index.json"
    info = json.loads(index_json.read_text(encoding="utf-8"))
    index_json.write_text(json.dumps(dict(info, format="vmm-search-1")), encoding="utf-8")
    with pytest.raises(SearchError, match="another version of vmm"):
        Searcher(str(old))
    assert _build(corpus["out"], old, "--update", "--codebook", corpus["dict"]) == 0
    rebuilt = Searcher(str(old), clip_pretrained=corpus["checkpoint"])
    assert rebuilt.info["format"] == info["format"] and rebuilt.info["counts"] == info["counts"]
    hits = rebuilt.search(SIGN_TEXT, k=1, queues=["text"])
    assert hits[0].video_id == SIGN_ID and SIGN_TEXT in hits[0].queues["text"].snippet


def test_shards_built_by_beam_answer_like_one(corpus, tmp_path):
    s = tmp_path / "sharded"
    assert _build(corpus["out"], s, "--shards", "2", "--codebook", corpus["dict"]) == 0
    sharded = Searcher(str(s), clip_pretrained=corpus["checkpoint"])
    assert len(sharded.shards) == 2 and all(sh.ids for sh in sharded.shards)
    one = Searcher(corpus["search"], clip_pretrained=corpus["checkpoint"])
    original = corpus["videos"][0]["video_id"]
    assert [h.video_id for h in sharded.search(like=original, k=3, queues=["vector"])] == \
           [h.video_id for h in one.search(like=original, k=3, queues=["vector"])]
    assert sharded.search(SIGN_TEXT, k=1, queues=["text"])[0].video_id == SIGN_ID


def test_a_sharded_index_searches_its_shards_side_by_side_and_answers_as_in_turn(corpus, tmp_path):
    """Over a 2-shard index every queue searches both shards, the second on the Searcher's pool
    threads, and every kind of query returns what the shards searched one after another on the
    calling thread return; so do searches from several threads at once."""
    import concurrent.futures
    import threading

    from models import clip
    from models.decode import DecodeConfig, decode_keyframes

    s = tmp_path / "sharded"
    assert _build(corpus["out"], s, "--shards", "2", "--codebook", corpus["dict"]) == 0
    fan = Searcher(str(s), clip_pretrained=corpus["checkpoint"])
    seq = Searcher(str(s), clip_pretrained=corpus["checkpoint"])
    seq._each_shard = lambda work: [work(i) for i in range(len(seq.shards))]

    seen = []  # (queue, shard, thread name)

    def spy(queue, shard, fn):
        def call(*args, **kwargs):
            seen.append((queue, shard, threading.current_thread().name))
            return fn(*args, **kwargs)
        return call

    for i, shard in enumerate(fan.shards):
        shard.text.search = spy("text", i, shard.text.search)
        shard.vector.search = spy("vector", i, shard.vector.search)
        shard.visual.search = spy("visual", i, shard.visual.search)

    size = clip.image_size(TINY_MODEL)
    images = [decode_keyframes(v["uri"], DecodeConfig(short_side=size)).keyframes[0][1] for v in corpus["videos"][:3]]
    asks = ([{"query": q} for q, _ in _text_queries(corpus)] + [{"image": im} for im in images]
            + [{"like": vid} for vid in fan.where])

    def answer(searcher, ask):
        return [h.to_json() for h in searcher.search(k=8, **ask)]

    alone = [answer(seq, ask) for ask in asks]
    seen.clear()
    assert [answer(fan, ask) for ask in asks] == alone
    assert all(any(r["queues"].get("text") for r in rs) for rs, ask in zip(alone, asks) if "query" in ask)
    main = threading.current_thread().name
    for queue in ("text", "vector", "visual"):
        assert {sh for q, sh, _ in seen if q == queue} == {0, 1}, queue
        assert all(t.startswith("vmm-search") for q, sh, t in seen if q == queue and sh == 1), queue
    assert all(t == main for q, sh, t in seen if sh == 0)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda ask: answer(fan, ask), asks * 3))
    assert together == alone * 3


def test_empty_shards_are_searched_and_updated_like_the_others(corpus, tmp_path):
    """More shards than the first run has videos for: the empty shards load and answer nothing, and
    `--update` with a run whose videos land in a shard that was empty gives what a fresh build gives."""
    from pipelines.index import shard_of

    out = tmp_path / "out"
    shutil.copytree(corpus["out"], out)
    second = sorted(os.listdir(out / "_runs"))[-1].removesuffix(".json")
    aside = tmp_path / "aside"
    for path in out.rglob(f"*{second}*"):
        (aside / path.parent.relative_to(out)).mkdir(parents=True, exist_ok=True)
        path.rename(aside / path.relative_to(out))
    old_ids = [v["video_id"] for v in corpus["videos"]]
    # The fewest shards (a deterministic hash) for which a video of the second run lands in a shard
    # that no video of the first run hashes to.
    n = next(n for n in range(2, 64) if {shard_of(v, n) for v in (COPY_ID, SIGN_ID)} - {shard_of(v, n) for v in old_ids})
    updated, fresh = tmp_path / "updated", tmp_path / "fresh"
    assert _build(out, updated, "--shards", str(n), "--codebook", corpus["dict"]) == 0
    with open(updated / "index.json", encoding="utf-8") as f:
        empty = {r["shard"] for r in json.load(f)["shards"] if r["videos"] == 0}
    assert empty & {shard_of(v, n) for v in (COPY_ID, SIGN_ID)}
    before = Searcher(str(updated), clip_pretrained=corpus["checkpoint"])
    assert before.search(SIGN_TEXT, k=3, queues=["text"]) == []
    assert [h.video_id for h in before.search(like=old_ids[1], k=3)]
    for path in aside.rglob("*"):
        if path.is_file():
            path.rename(out / path.relative_to(aside))
    assert _build(out, updated, "--update") == 0
    assert _build(out, fresh, "--shards", str(n), "--codebook", corpus["dict"]) == 0
    a = Searcher(str(updated), clip_pretrained=corpus["checkpoint"])
    b = Searcher(str(fresh), clip_pretrained=corpus["checkpoint"])
    asks = [{"query": q} for q, _ in _text_queries(corpus)] + [{"like": v} for v in old_ids + [COPY_ID, SIGN_ID]]
    for ask in asks:
        assert [h.to_json() for h in a.search(k=5, **ask)] == [h.to_json() for h in b.search(k=5, **ask)], ask
    assert a.search(SIGN_TEXT, k=1, queues=["text"])[0].video_id == SIGN_ID
    r = _cli("index", "--input", str(out), "--output", str(tmp_path / "printed"), "--shards", str(n + 40))
    assert r.returncode == 0, r.stderr
    assert "empty (no video id hashes to it)" in r.stdout


def test_text_queries_get_a_vector_search_tuned_on_text_queries(corpus, tmp_path, monkeypatch, capsys):
    """With graph shards (forced here: the corpus is small enough for a flat index), `vmm index
    --text-queries N` cuts queries from the index's own lines, encodes them with the index's text
    tower and tunes a second search setting on them; text queries use it, --like does not, nor a
    searcher whose text encoder is not the one it was tuned for."""
    from models import ann

    monkeypatch.setattr(ann, "FLAT_MAX", 1)
    s = tmp_path / "tuned"
    assert _build(corpus["out"], s, "--text-queries", "10", "--clip-pretrained", corpus["checkpoint"]) == 0
    printed = capsys.readouterr().out
    info = json.loads((s / "index.json").read_text(encoding="utf-8"))
    tq = info["text_queries"]
    assert tq["encoder"] == f"clip {TINY_MODEL} {info['clip_weights']}" and tq["queries"] == 10
    vector = info["shards"][0]["vector"]
    assert vector["kind"] == "hnsw" and vector["search_text"]["efSearch"] > 0
    assert vector["text_tune_queries"] == 10 and vector["text_tuning"]
    assert 0 < vector["text_recall_at_10"] <= 1 and vector["text_recall_at_10_before"] is not None
    assert f"text queries {vector['search_text']}" in printed
    # The queries are windows of the index's own indexed lines, the same ones on every build.
    lines = [" ".join(t.split()) for t in Searcher(str(s)).shards[0]._passage_columns[2].to_pylist()]
    texts = index_cmd._query_texts(str(s), info["shards"], 20, 0)
    assert len(texts) == 20 and texts == index_cmd._query_texts(str(s), info["shards"], 20, 0)
    assert all(any(t in line for line in lines) for t in texts)
    assert len(set(texts)) > 5 and all(len(t.split()) <= 6 for t in texts)
    again = tmp_path / "again"
    assert _build(corpus["out"], again, "--text-queries", "10", "--clip-pretrained", corpus["checkpoint"]) == 0
    second = json.loads((again / "index.json").read_text(encoding="utf-8"))["shards"][0]["vector"]
    assert second["search_text"] == vector["search_text"]
    assert second["text_recall_at_10"] == vector["text_recall_at_10"]

    settings = []
    search = ann.VectorIndex.search

    def spy(self, queries, k, *, setting=None, exclude=None):
        settings.append(setting)
        return search(self, queries, k, setting=setting, exclude=exclude)

    monkeypatch.setattr(ann.VectorIndex, "search", spy)
    tuned = Searcher(str(s), clip_pretrained=corpus["checkpoint"])
    assert tuned.search(SIGN_TEXT, k=3)[0].video_id == SIGN_ID
    assert settings == [vector["search_text"]]
    settings.clear()
    assert tuned.search(like=COPY_ID, k=3)[0].video_id == corpus["videos"][0]["video_id"]
    assert settings == [None]  # the setting tuned on the index's own vectors
    # Tuned for another text encoder (a query tower, say): text queries get the own-vector setting.
    index_json = s / "index.json"
    index_json.write_text(json.dumps(dict(info, text_queries=dict(tq, encoder="query tower sha256:0123"))),
                          encoding="utf-8")
    settings.clear()
    Searcher(str(s), clip_pretrained=corpus["checkpoint"]).search(SIGN_TEXT, k=3)
    assert settings == [None]

    # Shards (built by Beam) are tuned each on the same queries; each shard's own setting is used.
    two = tmp_path / "two"
    assert _build(corpus["out"], two, "--shards", "2", "--text-queries", "10",
                  "--clip-pretrained", corpus["checkpoint"]) == 0
    shards = json.loads((two / "index.json").read_text(encoding="utf-8"))["shards"]
    assert all(r["vector"]["search_text"] and r["vector"]["text_tune_queries"] == 10 for r in shards if r["videos"])
    assert [json.loads((two / f"shard-{r['shard']:05d}" / "shard.json").read_text(encoding="utf-8"))["vector"]
            for r in shards] == [r["vector"] for r in shards]  # what --update starts from
    settings.clear()
    sharded = Searcher(str(two), clip_pretrained=corpus["checkpoint"])
    assert sharded.search(SIGN_TEXT, k=3)[0].video_id == SIGN_ID
    assert sorted(map(json.dumps, settings)) == sorted(json.dumps(r["vector"]["search_text"]) for r in shards
                                                      if r["videos"])

    # auto (the default) tunes only what it can encode: a local checkpoint's index needs the path
    # (said, and the index is built); --text-queries N that cannot encode is refused.
    auto = tmp_path / "auto"
    assert _build(corpus["out"], auto) == 0
    assert "not tuned for text queries: cannot encode text queries" in capsys.readouterr().out
    auto_info = json.loads((auto / "index.json").read_text(encoding="utf-8"))
    assert "local checkpoint" in auto_info["text_queries"]["skipped"]
    assert not auto_info["shards"][0]["vector"]["search_text"]
    # --update with nothing new to add still tunes, once it can encode; again, it changes nothing.
    assert _build(corpus["out"], auto, "--update", "--clip-pretrained", corpus["checkpoint"]) == 0
    late = json.loads((auto / "index.json").read_text(encoding="utf-8"))
    assert late["text_queries"]["encoder"] == tq["encoder"] and late["shards"][0]["vector"]["search_text"]
    assert late["runs"] == auto_info["runs"] and late["counts"] == auto_info["counts"]
    before = (auto / "index.json").read_bytes()
    assert _build(corpus["out"], auto, "--update", "--clip-pretrained", corpus["checkpoint"]) == 0
    assert (auto / "index.json").read_bytes() == before
    assert _build(corpus["out"], tmp_path / "refused", "--text-queries", "10") == 2
    assert "--text-queries: cannot encode text queries" in capsys.readouterr().err
    # Random weights: not tuned by default (their text vectors say nothing of real queries).
    spec = index_cmd.BuildSpec(input=corpus["out"], output=str(s), shards=1, max_memory=1 << 30, fields=(),
                               visual_words=("frame",), runs=())
    args = index_cmd.argparse.Namespace(text_queries=None, query_tower=None, clip_pretrained=None)
    record = {"shard": 0, "videos": 5, "vector": {"kind": "hnsw"}}
    assert "random" in index_cmd._tune_for_text_queries(
        args, spec, {"vmm.clip_model": TINY_MODEL, "vmm.clip_weights": "none"}, [record], None)["skipped"]
    # A flat index (the corpus's own, built before FLAT_MAX was lowered) needs no tuning: exact for every query.
    assert "flat" in json.loads(open(os.path.join(corpus["search"], "index.json"), encoding="utf-8").read()
                                )["text_queries"]["skipped"]


def test_bf16_query_precision_finds_what_fp32_finds(corpus, searcher):
    """`--query-precision bf16`: the same videos first, for every text query of the corpus, through
    both queues (the text queue runs beside the vector queue); refused with a query tower."""
    fast = Searcher(corpus["search"], clip_pretrained=corpus["checkpoint"], query_precision="bf16")
    for query, _ in _text_queries(corpus):
        a, b = searcher.search(query, k=5), fast.search(query, k=5)
        assert [h.video_id for h in a][:3] == [h.video_id for h in b][:3], query
        assert a[0].queues["text"] == b[0].queues["text"]
        va, vb = a[0].queues["vector"], b[0].queues["vector"]
        assert (va is None) == (vb is None) and (va is None or abs(va.score - vb.score) < 0.01)
    with pytest.raises(SearchError, match="query tower"):
        Searcher(corpus["search"], query_precision="bf16", query_tower=corpus["search"])
    with pytest.raises(SearchError, match="precision"):
        Searcher(corpus["search"], query_precision="fp8")
    query = corpus["videos"][1]["subtitles"][0]["text"]
    r = _cli("search", corpus["search"], "--query", query, "--json", "--query-precision", "bf16",
             "--clip-pretrained", corpus["checkpoint"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["video_id"] == corpus["videos"][1]["video_id"]


def test_a_searcher_answers_threads_as_it_answers_one(searcher, corpus):
    """Searches from several threads at once (each text query's text queue on the Searcher's worker
    threads beside its vector queue) return what the same searches return one at a time."""
    import concurrent.futures

    queries = [q for q, _ in _text_queries(corpus)]

    def answer(q):
        return [(h.video_id, h.score, h.queues["text"], h.queues["vector"]) for h in searcher.search(q, k=5)]

    alone = [answer(q) for q in queries]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(answer, queries * 3))
    assert together == alone * 3


def test_errors_are_one_clear_line_and_exit_2(corpus, tmp_path):
    def fails(*args, match):
        r = _cli(*args)
        assert r.returncode == 2, (r.stdout, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        assert match in last, r.stderr
        return last

    s = corpus["search"]
    other = tmp_path / "other.pt"
    other.write_bytes(open(corpus["checkpoint"], "rb").read() + b"\0")
    fails("search", s, "--query", "kettle", "--clip-pretrained", str(other), match="another space")
    fails("search", s, "--query", "kettle", match="local checkpoint")
    fails("search", str(tmp_path), "--query", "kettle", match="index.json is missing")
    fails("search", s, "--like", "no-such-video", match="no video with that id")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    fails("search", s, "--image", str(bad), "--clip-pretrained", corpus["checkpoint"], match="cannot read image")
    fails("search", s, "--query", "kettle", "--queues", "visual", match="cannot answer")
    empty = tmp_path / "empty-index"
    empty.mkdir()
    fails("index", "--input", str(empty), "--output", str(tmp_path / "s"), match="no committed run")
    fails("index", "--input", corpus["out"], "--output", s, match="already holds a search index")
    with pytest.raises(SearchError):
        Searcher(str(tmp_path))


def test_reading_the_index_imports_neither_torch_nor_beam(corpus):
    code = (
        "import sys\n"
        "from pipelines.search import Searcher\n"
        f"s = Searcher({corpus['search']!r})\n"
        f"hits = s.search(like={corpus['videos'][0]['video_id']!r}, k=3)\n"
        f"assert hits[0].video_id == {COPY_ID!r}\n"
        "assert 'torch' not in sys.modules and 'apache_beam' not in sys.modules, sorted(sys.modules)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
