"""A learnable world for the query tower (tests/test_query_tower.py, bench/bench_tower.py).

Real CLIP weights and a real click log are not available here, so the world is generated: each
word has a fixed random direction (its prototype), each "video" has a few topic words and a fixed
vector, the normalised sum of its words' prototypes plus noise. A query is two of a video's topic
words (in random order) plus sometimes a noise word; its held-out queries are word pairs that no
training query contains. Every pair of topic words belongs to one video at most, so a held-out
query has one right answer, and a tower that learnt what each word means (its direction) and how
words combine finds it; one that did not sits near chance (10 / videos for R@10).

`multiview=True` splits the vocabulary: the pair log's training queries use only "query words"
(videos of group A); the videos of group B have only "title words", which appear in the titles
(every video's title is its topic words) and in group B's held-out queries, never in a training
query. Only the title view can teach those words.
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import numpy as np

# Common English words, one BPE token each in CLIP's tokenizer: a query tokenises to few tokens.
WORDS = (
    "apple river mountain dog car house tree bird city road beach snow forest music dance cook "
    "kitchen garden train boat phone computer book school street night rain fire water horse cat "
    "flower bridge market guitar piano soccer tennis baby wedding party museum castle island desert "
    "farm church robot camera shoe dress chair table window door lake cloud sun moon star bread "
    "coffee pizza cake truck plane bike ship lion tiger bear fish shark whale snake frog"
).split()
NOISE = ("video", "best", "new", "watch", "full", "official", "top", "live")


@dataclasses.dataclass(frozen=True)
class World:
    ids: list[str]
    vectors: np.ndarray  # float32 [N, D], unit rows
    topics: list[tuple[str, ...]]
    titles: list[str]
    train: list[tuple[str, str]]  # (query, video_id)
    heldout: list[tuple[str, str]]
    group_b: frozenset  # multiview: the videos only titles describe


def make_world(n_videos: int = 120, dim: int = 64, seed: int = 0, words_per_video: int = 3,
               noise: float = 0.3, multiview: bool = False, queries_per_pair: int = 2) -> World:
    rng = np.random.default_rng(seed)
    vocab = list(WORDS)
    rng.shuffle(vocab)
    split = len(vocab) * 3 // 5 if multiview else len(vocab)
    query_words, title_words = vocab[:split], vocab[split:]
    proto = {w: v / np.linalg.norm(v) for w, v in zip(vocab, rng.standard_normal((len(vocab), dim)))}
    topics, taken = [], set()
    groups = [(query_words, n_videos - n_videos // 2 if multiview else n_videos)]
    if multiview:
        groups.append((title_words, n_videos // 2))
    group_of = []
    for g, (words, count) in enumerate(groups):
        made, tries = 0, 0
        while made < count:
            tries += 1
            if tries > 100_000:
                raise ValueError("vocabulary too small for that many videos with distinct word pairs")
            t = tuple(sorted(rng.choice(len(words), words_per_video, replace=False)))
            t = tuple(words[i] for i in t)
            pairs = set(itertools.combinations(t, 2))
            if pairs & taken:
                continue
            taken |= pairs
            topics.append(t)
            group_of.append(g)
            made += 1
    ids = [f"v{i:05d}" for i in range(len(topics))]
    vecs = np.stack([sum(proto[w] for w in t) + noise * rng.standard_normal(dim) for t in topics])
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    titles = [" ".join(rng.permutation(list(t))) for t in topics]
    train, heldout = [], []

    def query(pair):
        words = list(pair) + ([str(rng.choice(NOISE))] if rng.random() < 0.5 else [])
        return " ".join(rng.permutation(words))

    for vid, t, g in zip(ids, topics, group_of):
        pairs = list(itertools.combinations(t, 2))
        held = pairs[int(rng.integers(len(pairs)))]
        heldout.append((" ".join(rng.permutation(list(held))), vid))
        if g == 0:
            for p in pairs:
                if p != held:
                    train += [(query(p), vid) for _ in range(queries_per_pair)]
    group_b = frozenset(v for v, g in zip(ids, group_of) if g == 1)
    return World(ids, vecs, topics, titles, train, heldout, group_b)


def write_index(world: World, root: str, clip_model: str, clip_weights: str = "none", dtype: str = "int8",
                ocr: dict | None = None) -> str:
    """The world's videos as a committed forward index (videos table: ids, titles, vectors; `ocr`:
    video_id -> (subtitle text, scene text))."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas import forward_index as fi
    from schemas.index import RUNS_DIR, shard_name

    dim = world.vectors.shape[1]
    schema = fi.videos_schema(dim, dtype)
    rows = []
    for vid, title, vec in zip(world.ids, world.titles, world.vectors):
        row = dict(video_id=vid, uri=f"synthetic://{vid}", title=title, tags=None, width=64, height=36,
                   video_codec="h264", has_audio=False, num_keyframes=1, stage_errors=[])
        row.update(fi.encode_embedding(vec, dtype))
        if ocr and vid in ocr:
            row["ocr_subtitle_text"], row["ocr_scene_text"] = ocr[vid]
        rows.append(row)
    meta = fi.file_metadata(clip_model=clip_model, clip_weights=clip_weights,
                            extra=fi.embedding_metadata(dtype, dim))
    run = "20261204T000000-0000cafe"
    path = os.path.join(root, "videos", shard_name(run, "part-00000-of-00001.parquet"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=fi.with_metadata(schema, meta)), path)
    os.makedirs(os.path.join(root, RUNS_DIR), exist_ok=True)
    with open(os.path.join(root, RUNS_DIR, f"{run}.json"), "w") as f:
        f.write('{"run_id": "%s"}' % run)
    return root


def write_pairs(path: str, train, heldout=()) -> str:
    """JSONL pairs with a `split` column."""
    import json

    with open(path, "w", encoding="utf-8") as f:
        for split, items in (("train", train), ("heldout", heldout)):
            for q, vid in items:
                f.write(json.dumps({"query": q, "video_id": vid, "split": split}) + "\n")
    return path
