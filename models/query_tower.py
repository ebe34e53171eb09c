"""The query tower: CLIP's text tower trained against an index's locked video vectors (LiT). No Beam.

Consumes a forward index's `videos` rows (video_id, `embedding` decoded by schemas.index, title,
OCR text) and <query, video_id> pairs (a click log: `query`, `video_id`, optionally `clicks`,
`impressions`, `split`). Produces a tower folder:

    tower/text_tower.safetensors   the text tower's weights (open_clip TextTransformer keys), no pickle
    tower/tower.json               base model and weights, the index and vector set, views, data
                                   sizes, training settings, held-out metrics before and after
    tower/log.csv, log.json        per epoch: loss per view, learning rate, logit scale, held-out metrics
    tower/checkpoint.pt            while training (tensors only, loaded with weights_only=True)

and, loaded back (`QueryTower`), a query encoder with QueryEncoder's text interface
(`encode_texts(list[str]) -> float32 [N, D]` L2-normalised, `encode_text`, `dim`) that refuses an
index of another CLIP model or weights: its vectors would live in another space.

Training (LiT, Zhai et al. 2022; multi-view pairs as in ERNIE-ViL 2.0):
  * the video side is the index's vectors, read once, L2-normalised into one read-only float32
    array and never updated; no image tower is built (weights are read from the checkpoint's text
    keys only; `none` builds the seeded random model once to copy its text tower, then drops it);
  * the text side is the open_clip text tower of the index's model and weights (the
    `--clip-pretrained` rule of models.query), all of it trainable or its last N blocks;
  * each step draws one batch per view (`query`: the pairs, weighted by clicks, or by clicks /
    impressions; `title`: <title, video> from the index; `ocr`: the video's longest distinct
    subtitle/scene lines) and sums the views' weighted losses. A view's loss is open_clip's
    ClipLoss (symmetric InfoNCE over its `get_logits`, learnable logit scale starting at the
    weights' own, clamped at ln 100 after every step as open_clip's training does), computed here
    with the batch's duplicates masked: a text is not pushed away from another copy of its video
    (nor from a video paired with the same text), which ClipLoss's arange labels would do;
  * data order is a function of (seed, view, step) only, so a run resumed from its epoch
    checkpoint ends with the same weights as an uninterrupted one (on CPU, same thread count);
  * after each epoch the held-out queries are ranked against the whole index (R@1/5/10, median
    and mean rank); training stops when R@10 has not improved for `patience` epochs and the best
    epoch's weights are the tower.

Thread safety: a loaded QueryTower is read-only (eval mode, no grad); it loads once under a lock.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import threading
import time
from typing import Callable, Sequence

import numpy as np

from models import clip
from models.query import QueryEncoderMismatch

logger = logging.getLogger(__name__)

FORMAT = "vmm-query-tower-1"
TOWER_JSON = "tower.json"
WEIGHTS_FILE = "text_tower.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.safetensors"
LOG_CSV, LOG_JSON = "log.csv", "log.json"
VIEWS = ("query", "title", "ocr")
HELDOUT_SPLITS = ("heldout", "held-out", "val", "valid", "validation", "test", "eval")
MAX_LOGIT_SCALE = math.log(100.0)
OCR_COLUMNS = ("ocr_subtitle_text", "ocr_scene_text")


class TowerError(ValueError):
    """A tower, a pair file or a training setting that cannot be used; the message says why."""


class TowerMismatch(QueryEncoderMismatch):
    """The tower was trained against another CLIP model's or weights' vectors."""


# ---- the text tower ------------------------------------------------------------------------------


def _text_layout(model_name: str) -> dict:
    cfg = clip.model_info(model_name)
    if "hf_model_name" in cfg.get("text_cfg", {}):
        raise TowerError(f"{model_name} has a Hugging Face text tower; the query tower supports open_clip's own")
    return {"embed_dim": int(cfg["embed_dim"]), "text_cfg": cfg["text_cfg"],
            "quick_gelu": bool(cfg.get("quick_gelu", False)), "prefix": "text." if cfg.get("custom_text") else ""}


def build_text_tower(model_name: str, initialise: bool = False):
    """open_clip's text tower of `model_name` alone (TextTransformer), parameters left as allocated
    unless `initialise` (a checkpoint load fills them right after)."""
    import contextlib

    from open_clip.model import _build_text_tower

    clip._open_clip()
    layout = _text_layout(model_name)
    with contextlib.nullcontext() if initialise else clip._initialisation_skipped():
        return _build_text_tower(layout["embed_dim"], layout["text_cfg"], quick_gelu=layout["quick_gelu"])


def _split_text_state(state: dict, prefix: str) -> tuple[dict, float | None]:
    """(the text tower's entries of a whole-CLIP state dict, renamed to TextTransformer keys; logit scale)."""
    text, scale = {}, None
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key == "logit_scale":
            scale = float(value.reshape(-1)[0])
        elif key.startswith("visual.") or key in ("logit_bias", "attn_mask"):
            continue
        elif key.startswith(prefix):
            text[key[len(prefix):]] = value.clone()
    return text, scale


def read_text_state(path: str, model_name: str) -> tuple[dict, float | None]:
    """The text tower's tensors (and the logit scale) of a CLIP checkpoint file, without keeping the
    image tower's: safetensors reads named keys only, torch.load memory-maps the file (weights_only)."""
    import torch

    prefix = _text_layout(model_name)["prefix"]
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys() if not k.removeprefix("module.").startswith("visual.")}
        return _split_text_state(state, prefix)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) torch file cannot be memory-mapped
        raw = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    return _split_text_state(raw, prefix)


def load_base_tower(config: clip.ClipConfig):
    """(text tower with `config`'s weights, their logit scale, weights id). No image tower is kept."""
    started = time.perf_counter()
    if config.is_random:
        full = clip.random_model(config.model_name)
        state, scale = _split_text_state(full.state_dict(), _text_layout(config.model_name)["prefix"])
        del full
        source, weights = "random init", clip.NO_WEIGHTS
    else:
        path, _ = clip.checkpoint_file(config)
        state, scale = read_text_state(path, config.model_name)
        source = path
        weights = clip.weights_id(clip.ClipConfig(config.model_name, path)) if config.is_file else config.pretrained
    tower = build_text_tower(config.model_name)
    try:
        tower.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise TowerError(f"{source} holds no {config.model_name} text tower: {str(e).splitlines()[0]}") from e
    logger.info("loaded the %s text tower from %s in %.1fs", config.model_name, source, time.perf_counter() - started)
    return tower, (math.log(1 / 0.07) if scale is None else scale), weights


def tokenizer(model_name: str):
    return clip._open_clip().get_tokenizer(model_name)


def forward_text(tower, tokens):
    """The tower's pooled, projected text features [B, D] (not normalised), as `tower(tokens)`.

    For CLIP's own text tower (causal mask, pooled at the end-of-text token, the largest id) only
    the first L positions run, L the batch's longest text: under a causal mask a position never
    sees the ones after it, so the padding after each end-of-text token cannot change it. Queries
    are a few tokens of a 77-token context, so this is most of the work and memory saved."""
    import torch

    if (tower.pool_type != "argmax" or tower.cls_emb is not None or tower.attn_mask is None
            or getattr(tower, "use_pad_mask", False)):
        return tower(tokens)
    ends = tokens.argmax(dim=-1)
    length = int(ends.max()) + 1
    cast = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(tokens[:, :length]).to(cast) + tower.positional_embedding[:length].to(cast)
    x = tower.ln_final(tower.transformer(x, attn_mask=tower.attn_mask[:length, :length]))
    pooled = x[torch.arange(len(x), device=x.device), ends]
    projection = tower.text_projection
    if projection is None:
        return pooled
    return projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection


def encode(tower, tokenize, texts: Sequence[str], device: str = "cpu", batch_size: int = 512,
           amp: bool = False) -> np.ndarray:
    """L2-normalised float32 [N, D] text vectors from a text tower, no grad, in batches."""
    import torch

    out = []
    with torch.no_grad(), _autocast(device, amp):
        for start in range(0, len(texts), batch_size):
            x = forward_text(tower, tokenize(list(texts[start:start + batch_size])).to(device))
            out.append(torch.nn.functional.normalize(x.float(), dim=-1).cpu().numpy())
    dim = tower.text_projection.shape[-1] if tower.text_projection is not None else tower.width
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def _autocast(device: str, amp: bool):
    import contextlib

    import torch

    if amp and str(device).startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---- the tower folder ----------------------------------------------------------------------------


def _state_tensors(tower) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items()}


def _write_atomic(path: str, write: Callable[[str], None]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_weights(path: str, tower, logit_scale: float) -> None:
    from safetensors.torch import save_file

    _write_atomic(path, lambda p: save_file(_state_tensors(tower), p, metadata={"logit_scale": repr(logit_scale)}))


def save_tower(folder: str, tower, info: dict) -> str:
    """Writes the weights, then tower.json (last: a folder with tower.json is complete)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, WEIGHTS_FILE)
    save_weights(path, tower, float(info.get("logit_scale", math.log(1 / 0.07))))
    info = dict(info, format=FORMAT, weights_file=WEIGHTS_FILE, weights_sha256=_file_sha256(path))

    def write(p):
        with open(p, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, ensure_ascii=False)

    _write_atomic(os.path.join(folder, TOWER_JSON), write)
    return path


def _file_sha256(path: str) -> str:
    from models.hub import file_sha256

    return file_sha256(path)


def read_tower_info(folder: str) -> dict:
    path = os.path.join(folder, TOWER_JSON)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except FileNotFoundError as e:
        raise TowerError(f"{folder} is not a query tower: {TOWER_JSON} is missing (train one with "
                         "vmm train-query-tower)") from e
    except (OSError, json.JSONDecodeError) as e:
        raise TowerError(f"cannot read {path}: {e}") from e
    if info.get("format") != FORMAT:
        raise TowerError(f"{path} is format {info.get('format')!r}, this vmm reads {FORMAT}")
    return info


def check_tower(info: dict, index_model: str, index_weights: str, where: str = "the index") -> None:
    """TowerMismatch unless the tower was trained against vectors of this model and weights."""
    if info["clip_model"] != index_model or info["clip_weights"] != index_weights:
        raise TowerMismatch(
            f"the query tower was trained against {info['clip_model']} weights {info['clip_weights']} vectors, "
            f"but {where}'s vectors were made with {index_model} weights {index_weights}: queries would land "
            "in another space")


def load_tower_weights(folder: str, info: dict):
    """The trained text tower of a tower folder (its file hash checked), in eval mode on CPU."""
    from safetensors.torch import load_file

    path = os.path.join(folder, info.get("weights_file", WEIGHTS_FILE))
    if not os.path.isfile(path):
        raise TowerError(f"{path} is missing")
    if _file_sha256(path) != info.get("weights_sha256"):
        raise TowerError(f"{path} is not the file {TOWER_JSON} describes (its sha256 differs)")
    tower = build_text_tower(info["clip_model"])
    try:
        tower.load_state_dict(load_file(path), strict=True)
    except RuntimeError as e:
        raise TowerError(f"{path} is not a {info['clip_model']} text tower: {str(e).splitlines()[0]}") from e
    return tower.eval()


class QueryTower:
    """A trained query tower as a query encoder: QueryEncoder's text interface. The constructor
    reads tower.json and refuses a tower of another model's or weights' vectors; the weights load
    on the first encode (or `load()`), once, under a lock."""

    def __init__(self, folder: str, index_model: str, index_weights: str, *, device: str = "cpu", threads: int = 0):
        self.folder = folder
        self.info = read_tower_info(folder)
        check_tower(self.info, index_model, index_weights)
        self.device, self.threads = device, threads
        self._tower = None
        self._tokenize = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return clip.embed_dim(self.info["clip_model"])

    def load(self) -> "QueryTower":
        if self._tower is None:
            with self._lock:
                if self._tower is None:
                    import torch

                    from models.hub import resolve_device

                    if self.threads:
                        torch.set_num_threads(self.threads)
                    self.device = resolve_device(self.device)
                    self._tokenize = tokenizer(self.info["clip_model"])
                    self._tower = load_tower_weights(self.folder, self.info).to(self.device)
                    logger.info("loaded query tower %s (%s, trained against %s)", self.folder,
                                self.info["clip_model"], self.info["index"]["vectors_id"])
        return self

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        self.load()
        return encode(self._tower, self._tokenize, list(texts), self.device)

    def encode_text(self, text: str) -> np.ndarray:
        return self.encode_texts([text])[0]


# ---- the locked video side -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VideoVectors:
    """An index's videos as the tower sees them: vectors L2-normalised once, read-only, never updated."""

    path: str
    runs: tuple[str, ...]
    clip_model: str
    clip_weights: str
    ids: tuple[str, ...]
    vectors: np.ndarray  # float32 [N, D], read-only
    texts: dict  # column -> list[str | None] (title, OCR text), as read
    vectors_id: str  # sha256 of the ids and the vectors: the vector set a tower was trained against

    @functools.cached_property
    def row(self) -> dict[str, int]:
        return {vid: i for i, vid in enumerate(self.ids)}


def vectors_id(ids: Sequence[str], vectors: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update("\n".join(ids).encode("utf-8"))
    digest.update(np.ascontiguousarray(vectors, np.float32).tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def load_videos(path: str, columns: Sequence[str] = ("title",)) -> VideoVectors:
    """The index's `videos`: ids, vectors (decoded from any encoding, normalised) and `columns`."""
    from schemas.index import IndexReader

    index = IndexReader(path)
    if not index.files("videos"):
        raise TowerError(f"{index.root} has no committed videos (write a forward index with vmm extract)")
    meta = index.metadata
    have = set(index.schema("videos", names_only=True).names)
    wanted = [c for c in columns if c in have]
    table, vectors = index.embeddings("videos", columns=["video_id", *wanted])
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    vectors = np.ascontiguousarray(vectors, np.float32)
    vectors.setflags(write=False)
    ids = tuple(table.column("video_id").to_pylist())
    texts = {c: (table.column(c).to_pylist() if c in wanted else [None] * len(ids)) for c in columns}
    return VideoVectors(index.root, tuple(index.runs), meta.get("vmm.clip_model", ""), meta.get("vmm.clip_weights", ""),
                        ids, vectors, texts, vectors_id(ids, vectors))


# ---- pairs and views -----------------------------------------------------------------------------


def read_pairs(path: str):
    """A pair file (JSONL, CSV or Parquet, by extension; any Beam filesystem) as a pyarrow Table with
    `query`, `video_id` and whichever of `clicks`, `impressions`, `split` it has."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    from schemas.index import open_file

    lower = path.lower()
    try:
        with open_file(path) as f:
            if lower.endswith(".parquet"):
                table = pq.read_table(f)
            elif lower.endswith(".csv"):
                table = pcsv.read_csv(f, convert_options=pcsv.ConvertOptions(
                    column_types={"query": pa.string(), "video_id": pa.string(), "split": pa.string()}))
            elif lower.endswith((".jsonl", ".json", ".ndjson")):
                table = pjson.read_json(f)
            else:
                raise TowerError(f"{path}: a pair file is .jsonl, .csv or .parquet")
    except (OSError, pa.ArrowInvalid) as e:
        raise TowerError(f"cannot read the pair file {path}: {e}") from e
    missing = [c for c in ("query", "video_id") if c not in table.column_names]
    if missing:
        raise TowerError(f"{path} has no column {', '.join(missing)} (it has {', '.join(table.column_names)})")
    if "impressions" in table.column_names and "clicks" not in table.column_names:
        raise TowerError(f"{path} has impressions but no clicks: a pair's weight is its clicks (per impression)")
    return table.select([c for c in ("query", "video_id", "clicks", "impressions", "split") if c in table.column_names])


@dataclasses.dataclass(frozen=True)
class Pairs:
    """The pairs whose video is in the index: text, video row, weight, held out or not."""

    queries: tuple[str, ...]
    rows: np.ndarray  # int64 [P]
    weights: np.ndarray  # float64 [P]
    heldout: np.ndarray  # bool [P]
    counts: dict  # read, unknown_video, empty_query, no_clicks, train, heldout


def _held_out_by_hash(query: str, seed: int, fraction: float) -> bool:
    h = int(hashlib.sha256(f"{seed}:{query}".encode("utf-8")).hexdigest()[:12], 16)
    return h / float(1 << 48) < fraction


def match_pairs(table, videos: VideoVectors, *, heldout_fraction: float = 0.0, seed: int = 0,
                all_heldout: bool = False) -> Pairs:
    """Pairs of `table` on `videos`' rows. A pair whose video is not in the index is counted and
    skipped, as are empty queries and pairs without clicks. The held-out split is the `split`
    column (heldout/val/test/...); without one, a seeded `heldout_fraction` of the distinct query
    texts (so no query is on both sides); `all_heldout`: every pair (evaluation)."""
    n = table.num_rows
    queries = table.column("query").to_pylist()
    vids = table.column("video_id").to_pylist()
    weights = np.ones(n)
    if "clicks" in table.column_names:
        clicks = np.asarray(table.column("clicks").to_numpy(zero_copy_only=False), np.float64)
        weights = np.nan_to_num(clicks, nan=0.0)
        if "impressions" in table.column_names:
            imps = np.asarray(table.column("impressions").to_numpy(zero_copy_only=False), np.float64)
            weights = np.where(np.nan_to_num(imps) > 0, weights / np.where(imps > 0, imps, 1.0), 0.0)
    split = table.column("split").to_pylist() if "split" in table.column_names else None
    counts = {"read": n, "unknown_video": 0, "empty_query": 0, "no_clicks": 0}
    keep_q, keep_r, keep_w, keep_h = [], [], [], []
    row = videos.row
    for i in range(n):
        q, vid = queries[i], vids[i]
        if not q or not str(q).strip():
            counts["empty_query"] += 1
            continue
        r = row.get(vid)
        if r is None:
            counts["unknown_video"] += 1
            continue
        if not weights[i] > 0:
            counts["no_clicks"] += 1
            continue
        if all_heldout:
            held = True
        elif split is not None:
            held = str(split[i] or "").strip().lower() in HELDOUT_SPLITS
        else:
            held = _held_out_by_hash(q, seed, heldout_fraction)
        keep_q.append(str(q))
        keep_r.append(r)
        keep_w.append(weights[i])
        keep_h.append(held)
    heldout = np.asarray(keep_h, bool)
    counts["heldout"] = int(heldout.sum())
    counts["train"] = int(len(heldout) - heldout.sum())
    if counts["unknown_video"]:
        logger.warning("%d of %d pairs name a video that is not in the index: skipped", counts["unknown_video"], n)
    return Pairs(tuple(keep_q), np.asarray(keep_r, np.int64), np.asarray(keep_w, np.float64), heldout, counts)


@dataclasses.dataclass(frozen=True)
class View:
    """One view's training pairs: distinct texts, and per pair its text, video row and weight."""

    name: str
    weight: float
    texts: tuple[str, ...]
    text_ids: np.ndarray  # int64 [P]
    rows: np.ndarray  # int64 [P]
    pair_weights: np.ndarray  # float32 [P], mean 1

    def __len__(self) -> int:
        return len(self.rows)


def key_lines(texts: Sequence[str | None], keep: int) -> str | None:
    """A video's OCR text shortened to its `keep` longest distinct lines, in reading order."""
    lines = list(dict.fromkeys(line.strip() for t in texts if t for line in t.split("\n") if line.strip()))
    if not lines:
        return None
    chosen = set(sorted(range(len(lines)), key=lambda i: (-len(lines[i]), i))[:keep])
    return " ".join(lines[i] for i in sorted(chosen))


def _view(name: str, weight: float, texts: Sequence[str], rows: np.ndarray, weights: np.ndarray) -> View:
    unique = tuple(dict.fromkeys(texts))
    ids = {t: i for i, t in enumerate(unique)}
    w = np.asarray(weights, np.float64)
    w = (w / w.mean()).astype(np.float32) if len(w) else w.astype(np.float32)
    return View(name, weight, unique, np.asarray([ids[t] for t in texts], np.int64), np.asarray(rows, np.int64), w)


def build_views(views: Sequence[tuple[str, float]], pairs: Pairs, videos: VideoVectors, ocr_lines: int = 3) -> list[View]:
    """The training views: `query` from the pairs' training split, `title` and `ocr` from the index."""
    out = []
    for name, weight in views:
        if name == "query":
            train = ~pairs.heldout
            texts = [q for q, t in zip(pairs.queries, train) if t]
            out.append(_view(name, weight, texts, pairs.rows[train], pairs.weights[train]))
            continue
        if name == "title":
            items = [(t.strip(), r) for r, t in enumerate(videos.texts["title"]) if t and t.strip()]
        else:
            columns = [videos.texts[c] for c in OCR_COLUMNS]
            items = [(text, r) for r in range(len(videos.ids))
                     if (text := key_lines([col[r] for col in columns], ocr_lines))]
        out.append(_view(name, weight, [t for t, _ in items], np.asarray([r for _, r in items], np.int64),
                         np.ones(len(items))))
    empty = [v.name for v in out if not len(v)]
    if empty:
        raise TowerError(f"view {', '.join(empty)} has no pairs (query: no training pairs on the index's videos; "
                         "title/ocr: no video of the index has that text)")
    return out


def view_batch(view: View, view_index: int, seed: int, step: int, batch_size: int) -> np.ndarray:
    """Pair indices of `view` for global step `step`: consecutive slices of a stream of seeded
    permutations (one per pass over the view), so a batch depends on (seed, view, step) only."""
    n = len(view)
    b = min(batch_size, n)
    start, end = step * b, (step + 1) * b
    parts = []
    for r in range(start // n, (end - 1) // n + 1):
        perm = np.random.default_rng([seed, view_index, r]).permutation(n)
        lo, hi = max(start - r * n, 0), min(end - r * n, n)
        parts.append(perm[lo:hi])
    return np.concatenate(parts)


# ---- the loss ------------------------------------------------------------------------------------


def masked_clip_loss(loss_fn, video, text, logit_scale, rows, text_ids, weights):
    """open_clip ClipLoss over one batch with duplicates masked: the symmetric InfoNCE of
    `loss_fn.get_logits`, where pair j is no negative of pair i when they share the video or the
    text (ClipLoss's arange labels would push a text away from another copy of its own video).
    Each pair's term is weighted (`weights`, the batch's weighted mean). `rows`, `text_ids`,
    `weights`: tensors [B] on the logits' device."""
    import torch
    import torch.nn.functional as F

    logits_per_video, logits_per_text = loss_fn.get_logits(video, text, logit_scale)
    same = (rows[:, None] == rows[None, :]) | (text_ids[:, None] == text_ids[None, :])
    same.fill_diagonal_(False)
    labels = torch.arange(len(rows), device=rows.device)
    w = weights / weights.sum()
    per_video = F.cross_entropy(logits_per_video.float().masked_fill(same, float("-inf")), labels, reduction="none")
    per_text = F.cross_entropy(logits_per_text.float().masked_fill(same.T, float("-inf")), labels, reduction="none")
    return ((per_video * w).sum() + (per_text * w).sum()) / 2


# ---- evaluation ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Held-out queries (distinct texts) and, per query, the index rows of its clicked videos."""

    queries: tuple[str, ...]
    relevant: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, pairs: Pairs) -> "HeldOut":
        rel: dict[str, set] = {}
        for q, r, h in zip(pairs.queries, pairs.rows, pairs.heldout):
            if h:
                rel.setdefault(q, set()).add(int(r))
        return cls(tuple(rel), tuple(np.asarray(sorted(v), np.int64) for v in rel.values()))

    def __len__(self) -> int:
        return len(self.queries)


def best_ranks(query_vectors: np.ndarray, vectors: np.ndarray, relevant: Sequence[np.ndarray],
               chunk: int = 256) -> np.ndarray:
    """Per query, the rank (1-based) of its best-ranked relevant video among all `vectors` (inner
    product; a tie counts against the relevant video only when the other video scores strictly higher)."""
    out = np.empty(len(query_vectors), np.int64)
    for start in range(0, len(query_vectors), chunk):
        scores = np.asarray(query_vectors[start:start + chunk], np.float32) @ vectors.T
        for j, row in enumerate(scores):
            out[start + j] = int((row > row[relevant[start + j]].max()).sum()) + 1
    return out


def rank_metrics(ranks: np.ndarray) -> dict:
    if not len(ranks):
        return {"queries": 0}
    return {"queries": int(len(ranks)), **{f"R@{k}": round(float((ranks <= k).mean()), 4) for k in (1, 5, 10)},
            "median_rank": float(np.median(ranks)), "mean_rank": round(float(ranks.mean()), 2)}


def evaluate(encode_texts: Callable[[list[str]], np.ndarray], heldout: HeldOut, videos: VideoVectors) -> dict:
    """R@1/5/10, median and mean rank of the held-out queries against the whole index, and the
    seconds spent encoding the queries."""
    if not len(heldout):
        return rank_metrics(np.zeros(0, np.int64))
    started = time.perf_counter()
    q = encode_texts(list(heldout.queries))
    encode_s = time.perf_counter() - started
    return dict(rank_metrics(best_ranks(q, videos.vectors, heldout.relevant)), encode_s=round(encode_s, 3))


# ---- training ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    views: tuple[tuple[str, float], ...] = (("query", 1.0), ("title", 1.0))
    batch_size: int = 4096
    epochs: int = 5
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 0
    unlocked_layers: int | None = None  # None: the whole tower; N: the last N blocks (+ final norm, projection)
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    patience: int = 2  # epochs without a better held-out R@10 before stopping; 0: never stop early
    heldout_fraction: float = 0.1
    ocr_lines: int = 3
    threads: int = 0
    progress: bool = False

    def check(self) -> None:
        names = [n for n, _ in self.views]
        if not names or len(set(names)) != len(names) or not set(names) <= set(VIEWS) or \
                not all(w > 0 for _, w in self.views):
            raise TowerError(f"views must be distinct names of {', '.join(VIEWS)} with weights > 0, got {self.views}")
        for name, ok, want in (("batch_size", self.batch_size >= 2, ">= 2"), ("epochs", self.epochs >= 1, ">= 1"),
                               ("lr", self.lr > 0, "> 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
                               ("warmup_steps", self.warmup_steps >= 0, ">= 0"), ("patience", self.patience >= 0, ">= 0"),
                               ("heldout_fraction", 0 <= self.heldout_fraction < 1, "in [0, 1)"),
                               ("ocr_lines", self.ocr_lines >= 1, ">= 1"),
                               ("unlocked_layers", self.unlocked_layers is None or self.unlocked_layers >= 0, ">= 0")):
            if not ok:
                raise TowerError(f"--{name.replace('_', '-')} must be {want}, got {getattr(self, name)}")


def _unlock(tower, layers: int | None) -> None:
    blocks = tower.transformer.resblocks
    if layers is None:
        return
    if layers > len(blocks):
        raise TowerError(f"--unlocked-layers {layers}: the text tower has {len(blocks)} blocks")
    for p in tower.parameters():
        p.requires_grad_(False)
    for module in [*list(blocks)[len(blocks) - layers:], tower.ln_final]:
        for p in module.parameters():
            p.requires_grad_(True)
    if tower.text_projection is not None:
        for p in ([tower.text_projection] if not hasattr(tower.text_projection, "parameters")
                  else tower.text_projection.parameters()):
            p.requires_grad_(True)


def _lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 0 (open_clip's cosine_lr)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, total - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * (step - config.warmup_steps) / span)) * config.lr


def _optimizer(tower, logit_scale, config: TrainConfig):
    """AdamW as open_clip trains CLIP: no weight decay on gains, biases and the logit scale."""
    import torch

    decay, plain = [], []
    for name, p in tower.named_parameters():
        if p.requires_grad:
            (plain if p.ndim < 2 or "ln" in name or "bias" in name else decay).append(p)
    groups = [{"params": plain + [logit_scale], "weight_decay": 0.0}, {"params": decay, "weight_decay": config.weight_decay}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


class Trainer:
    """Trains a text tower against `videos` on `views`, evaluating on `heldout` after each epoch.
    `output` receives the checkpoint, the log and, at the end, the tower (save_tower)."""

    def __init__(self, config: TrainConfig, base: clip.ClipConfig, videos: VideoVectors, views: list[View],
                 heldout: HeldOut, output: str, data: dict | None = None):
        config.check()
        self.config, self.base, self.videos, self.views, self.heldout = config, base, videos, views, heldout
        self.output = output
        self.data = data or {}
        self.steps_per_epoch = math.ceil(len(views[0]) / min(config.batch_size, len(views[0])))

    def _fingerprint(self) -> dict:
        """What a checkpoint must agree on to be resumed."""
        c = dataclasses.asdict(self.config)
        for k in ("device", "progress", "threads", "amp", "patience"):
            c.pop(k)
        return {"config": c, "clip_model": self.base.model_name, "vectors_id": self.videos.vectors_id,
                "views": {v.name: [len(v), len(v.texts), float(v.pair_weights.sum())] for v in self.views},
                "heldout": len(self.heldout)}

    def fit(self, resume: bool = False, on_epoch_end: Callable[[int, dict], None] | None = None) -> dict:
        import torch
        from open_clip.loss import ClipLoss

        from models.hub import resolve_device

        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        tower, scale0, weights = load_base_tower(self.base)
        tokenize = tokenizer(self.base.model_name)
        tower = tower.to(device)
        os.makedirs(self.output, exist_ok=True)

        def encode_texts(texts):
            return encode(tower, tokenize, texts, device, amp=cfg.amp)

        tower.eval()
        base_metrics = evaluate(encode_texts, self.heldout, self.videos)
        _unlock(tower, cfg.unlocked_layers)
        logit_scale = torch.nn.Parameter(torch.tensor(float(scale0), device=device))
        optimizer = _optimizer(tower, logit_scale, cfg)
        history: list[dict] = []
        best = {"epoch": 0, "R@10": base_metrics.get("R@10", -1.0)}
        start_epoch, stale = 0, 0
        checkpoint = os.path.join(self.output, CHECKPOINT_FILE)
        fingerprint = self._fingerprint()
        if resume:
            start_epoch, history, best, stale = self._restore(checkpoint, fingerprint, tower, logit_scale, optimizer)
        loss_fn = ClipLoss()
        total_steps = cfg.epochs * self.steps_per_epoch
        trainable = sum(p.numel() for p in tower.parameters() if p.requires_grad)
        logger.info("training %d of %d text tower parameters on %s: %s, %d steps per epoch, batch %d",
                    trainable, sum(p.numel() for p in tower.parameters()), device,
                    ", ".join(f"{v.name} {len(v)} pairs x{v.weight:g}" for v in self.views), self.steps_per_epoch,
                    cfg.batch_size)
        stopped_early = False
        for epoch in range(start_epoch, cfg.epochs):
            if cfg.patience and len(self.heldout) and stale >= cfg.patience:
                stopped_early = True
                break
            tower.train()
            started = time.perf_counter()
            sums = {v.name: 0.0 for v in self.views}
            total_sum, pairs_seen = 0.0, 0
            bar = _progress(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress)
            for s in range(self.steps_per_epoch):
                step = epoch * self.steps_per_epoch + s
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(step, total_steps, cfg)
                optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for vi, view in enumerate(self.views):
                    idx = view_batch(view, vi, cfg.seed, step, cfg.batch_size)
                    pairs_seen += len(idx)
                    rows = torch.from_numpy(view.rows[idx])
                    with _autocast(device, cfg.amp):
                        text = forward_text(tower, tokenize([view.texts[i] for i in view.text_ids[idx]]).to(device))
                    text = torch.nn.functional.normalize(text.float(), dim=-1)
                    video = torch.from_numpy(self.videos.vectors[view.rows[idx]]).to(device)  # a copy of B rows
                    loss = masked_clip_loss(loss_fn, video, text,
                                            logit_scale.exp(), rows.to(device),
                                            torch.from_numpy(view.text_ids[idx]).to(device),
                                            torch.from_numpy(view.pair_weights[idx]).to(device))
                    weighted = view.weight * loss
                    weighted.backward()
                    sums[view.name] += loss.item()
                    total += weighted.item()
                optimizer.step()
                with torch.no_grad():
                    logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                total_sum += total
                bar.update(1)
                bar.set_postfix(loss=f"{total:.4f}")
            bar.close()
            train_s = time.perf_counter() - started
            tower.eval()
            metrics = evaluate(encode_texts, self.heldout, self.videos)
            row = {"epoch": epoch + 1, "steps": (epoch + 1) * self.steps_per_epoch,
                   "lr": optimizer.param_groups[0]["lr"], "logit_scale": round(logit_scale.detach().exp().item(), 4),
                   "loss": round(total_sum / self.steps_per_epoch, 6),
                   **{f"loss_{k}": round(v / self.steps_per_epoch, 6) for k, v in sums.items()},
                   **{f"heldout_{k}": v for k, v in metrics.items() if k != "queries"},
                   "train_s": round(train_s, 3), "pairs_per_s": round(pairs_seen / train_s, 1),
                   "seconds": round(time.perf_counter() - started, 2)}
            history.append(row)
            if len(self.heldout) and metrics["R@10"] > best["R@10"]:
                best, stale = {"epoch": epoch + 1, "R@10": metrics["R@10"]}, 0
                save_weights(os.path.join(self.output, BEST_FILE), tower, logit_scale.item())
            else:
                stale += 1
            self._write_log(history)
            self._checkpoint(checkpoint, fingerprint, tower, logit_scale, optimizer, epoch + 1, history, best, stale)
            logger.info("epoch %d: loss %s, held-out %s", epoch + 1,
                        {k: row[k] for k in row if k.startswith("loss")}, metrics)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row)
        final_scale = logit_scale.item()
        if len(self.heldout) and best["epoch"]:
            from safetensors.torch import load_file, safe_open

            best_path = os.path.join(self.output, BEST_FILE)
            tower.load_state_dict(load_file(best_path))
            with safe_open(best_path, framework="pt") as f:
                final_scale = float(f.metadata()["logit_scale"])
        elif len(self.heldout):
            logger.warning("no epoch beat the base tower on held-out R@10 (%s): the tower is the last epoch's",
                           base_metrics.get("R@10"))
        tower.eval()
        trained_metrics = evaluate(encode_texts, self.heldout, self.videos)
        info = {
            "clip_model": self.base.model_name, "clip_weights": weights,
            "embedding_dim": int(self.videos.vectors.shape[1]),
            "index": {"path": self.videos.path, "runs": list(self.videos.runs), "videos": len(self.videos.ids),
                      "vectors_id": self.videos.vectors_id},
            "views": {v.name: v.weight for v in self.views},
            "data": dict(self.data, **{f"{v.name}_pairs": len(v) for v in self.views},
                         **{f"{v.name}_texts": len(v.texts) for v in self.views}, heldout_queries=len(self.heldout)),
            "training": dict(dataclasses.asdict(self.config), views=dict(self.config.views),
                             epochs_run=len(history), steps_per_epoch=self.steps_per_epoch, best_epoch=best["epoch"],
                             stopped_early=stopped_early, trainable_parameters=trainable),
            "logit_scale": final_scale,
            "metrics": {"base": base_metrics, "trained": trained_metrics},
        }
        save_tower(self.output, tower, info)
        for name in (CHECKPOINT_FILE, BEST_FILE):
            if os.path.exists(os.path.join(self.output, name)):
                os.remove(os.path.join(self.output, name))
        self.tower = tower
        return info

    def _checkpoint(self, path, fingerprint, tower, logit_scale, optimizer, epoch, history, best, stale) -> None:
        import torch

        state = {"model": {k: v.detach().cpu() for k, v in tower.state_dict().items()},
                 "logit_scale": logit_scale.detach().cpu(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                 "stale": stale, "json": json.dumps({"fingerprint": fingerprint, "history": history, "best": best})}
        _write_atomic(path, lambda p: torch.save(state, p))

    def _restore(self, path, fingerprint, tower, logit_scale, optimizer):
        import torch

        if not os.path.isfile(path):
            raise TowerError(f"--resume: {path} is missing (no interrupted run in {self.output})")
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = json.loads(state["json"])
        if saved["fingerprint"] != json.loads(json.dumps(fingerprint)):
            raise TowerError(f"--resume: {path} was written by a run with other settings, data or vectors")
        tower.load_state_dict(state["model"])
        with torch.no_grad():
            logit_scale.copy_(state["logit_scale"])
        optimizer.load_state_dict(state["optimizer"])
        logger.info("resuming after epoch %d from %s", state["epoch"], path)
        return int(state["epoch"]), saved["history"], saved["best"], int(state["stale"])

    def _write_log(self, history: list[dict]) -> None:
        keys = list(dict.fromkeys(k for row in history for k in row))

        def write_csv(p):
            with open(p, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(history)

        def write_json(p):
            with open(p, "w", encoding="utf-8") as f:
                json.dump(history, f, indent=1)

        _write_atomic(os.path.join(self.output, LOG_CSV), write_csv)
        _write_atomic(os.path.join(self.output, LOG_JSON), write_json)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, leave=False)
