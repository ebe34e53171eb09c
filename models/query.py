"""The query encoder: a text or an image into an index's CLIP space, with the index's own weights.

Consumes the CLIP model and weights id an index records (`vmm.clip_model`, `vmm.clip_weights`:
a pretrained tag, `file:<name>:sha256:<16 hex>` for a local checkpoint, or `none`) and what the
user passed as `--clip-pretrained` (None: take the recorded weights). Produces L2-normalised
float32 vectors [D] (`encode_text`, `encode_image`) and, for visual words, an image's patch
vectors [H*W, D] (`encode_image_and_patches`).

The weights rule (the same as `vmm extract`'s, checked before any model is loaded):
  * nothing passed: the recorded pretrained tag, or `none` for an index built with `none`; an
    index built from a local checkpoint needs that checkpoint's path (`--clip-pretrained PATH`);
  * a tag or `none`: must equal the recorded weights id;
  * a path: its weights id (file name and content hash) must equal the recorded one.
A mismatch raises `QueryEncoderMismatch` with both ids: vectors of other weights live in another
space, and their neighbours would be noise.

Precision (`precision`): texts go through `clip.PackedTextTower`, the text tower with its weights
packed once for oneDNN (on the CPU; elsewhere, or where the packed kernel is missing, "fp32" is
`ClipEncoder.encode_texts` itself). "fp32" (default) is float32 throughout, as `vmm extract`
computes, in another summation order (cosine >= 0.999999); "bf16" runs the products in bfloat16
(cosine >= 0.9999 to fp32 on ViT-B-32, the tower in about 60% of fp32's time on a CPU with
AVX512-BF16 / AMX). Images are always encoded by `ClipEncoder`, in fp32.

Thread safety: the model loads once, under a lock, on first use; encoding is no-grad and reads
the model only, so one encoder serves many threads. Recent text queries' vectors are kept in a
small LRU cache (`cache_size`, default 1024 texts, 2 KiB each for 512-d) behind its own lock: a
repeated query (paging, a popular search) skips the text tower.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading

import numpy as np

from models import clip

logger = logging.getLogger(__name__)


class QueryEncoderMismatch(ValueError):
    """The query encoder's model or weights are not the index's; the message gives both."""


def resolve_weights(index_model: str, index_weights: str, pretrained: str | None) -> clip.ClipConfig:
    """The ClipConfig to encode queries for an index with (model, weights id), or a mismatch error."""
    if pretrained is None:
        if index_weights.startswith("file:"):
            raise QueryEncoderMismatch(
                f"the index was built from a local checkpoint ({index_weights}); pass the same file as "
                f"--clip-pretrained PATH to encode queries")
        return clip.ClipConfig(index_model, index_weights)
    config = clip.ClipConfig(index_model, pretrained)
    if config.is_file:
        try:
            given = clip.weights_id(config)
        except OSError as e:
            raise QueryEncoderMismatch(f"cannot read --clip-pretrained {pretrained!r}: {e}") from e
    else:
        given = clip.NO_WEIGHTS if config.is_random else pretrained
    if given != index_weights:
        raise QueryEncoderMismatch(
            f"--clip-pretrained {pretrained!r} is {given}, but the index's vectors were made with "
            f"{index_model} weights {index_weights}: queries would land in another space")
    return config


class QueryEncoder:
    """CLIP text and image towers of an index's model and weights. Cheap constructor; the model
    loads on the first encode (or `load()`)."""

    def __init__(self, index_model: str, index_weights: str, pretrained: str | None = None, *,
                 device: str = "cpu", threads: int = 0, cache_size: int = 1024, precision: str = "fp32"):
        if precision not in clip.TEXT_PRECISIONS:
            raise ValueError(f"query precision must be one of {', '.join(clip.TEXT_PRECISIONS)}, got {precision!r}")
        base = resolve_weights(index_model, index_weights, pretrained)
        self.precision = precision
        self._text_tower = None  # clip.PackedTextTower, made at load (None: encoder.encode_texts)
        self.config = clip.ClipConfig(base.model_name, base.pretrained, device=device, threads=threads)
        self.index_weights = index_weights
        self._encoder: clip.ClipEncoder | None = None
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._cache_size = max(0, int(cache_size))
        self._cache_lock = threading.Lock()
        self._hits = 0

    def load(self) -> clip.ClipEncoder:
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    clip.check_weights(self.config)
                    encoder = clip.ClipEncoder(self.config).load()
                    if encoder.weights_id != self.index_weights:  # a checkpoint changed since it was checked
                        raise QueryEncoderMismatch(
                            f"loaded weights {encoder.weights_id} differ from the index's {self.index_weights}")
                    self._text_tower = self._make_text_tower(encoder)
                    self._encoder = encoder
        return self._encoder

    def _make_text_tower(self, encoder: clip.ClipEncoder) -> clip.PackedTextTower | None:
        """The packed text tower, or None where fp32 text is `encoder.encode_texts` itself (a tower
        without a packed path, or no oneDNN here). bf16 on such a tower: ValueError, the reason."""
        if self.precision == "fp32" and clip.PackedTextTower.unsupported(encoder):
            return None
        tower = clip.PackedTextTower(encoder, self.precision)
        if self.precision == "bf16" and encoder.device == "cpu" and not clip.native_bf16():
            logger.warning("query precision bf16 on a CPU without AVX512-BF16 or AMX: bfloat16 is "
                           "emulated here, slower than fp32")
        if self.precision == "fp32" and tower.kernel != "onednn":
            return None  # the same products as encode_texts: no second copy of the weights
        logger.info("query text tower: %s products on %s", self.precision,
                    "weights packed for oneDNN" if tower.kernel == "onednn" else "F.linear")
        return tower

    @property
    def dim(self) -> int:
        return clip.embed_dim(self.config.model_name)

    def encode_text(self, text: str) -> np.ndarray:
        """The text's vector; a text seen among the last `cache_size` is not encoded again."""
        if self._cache_size:
            with self._cache_lock:
                vec = self._cache.get(text)
                if vec is not None:
                    self._cache.move_to_end(text)
                    self._hits += 1
                    return vec.copy()
        vec = self.encode_texts([text])[0]
        if self._cache_size:
            with self._cache_lock:
                self._cache[text] = vec.copy()
                self._cache.move_to_end(text)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vec

    def cache_info(self) -> dict:
        with self._cache_lock:
            return {"size": len(self._cache), "max_size": self._cache_size, "hits": self._hits}

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        encoder = self.load()
        if self._text_tower is not None:
            return self._text_tower.encode_texts(list(texts))
        return encoder.encode_texts(list(texts))

    def encode_texts_and_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """(text vectors [N, D], per text its word-token vectors [T_i, D], or None when the text
        tower has no per-token projection)."""
        encoder = self.load()
        if not encoder.has_text_tokens():
            return encoder.encode_texts(list(texts)), None
        return encoder.encode_texts_and_tokens(list(texts))

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        return self.load().encode_images([image])[0]

    def encode_image_and_patches(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(frame vector [D], patch vectors [H*W, D] or None for a model without patch tokens)."""
        encoder = self.load()
        if encoder.patch_grid() is None:
            return encoder.encode_images([image])[0], None
        pooled, patches = encoder.encode_images_and_patches([image])
        return pooled[0], patches[0]


def read_image(path: str) -> np.ndarray:
    """An image file as uint8 RGB [h, w, 3]; ValueError with the reason when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ValueError(f"cannot read image {path!r}: {e}") from e


class QueryVectorTable:
    """Query vectors given as data (`vmm score --query-vectors`): each query text's vector looked up
    in a table made elsewhere (another query model, an image's embedding for a test of the visual
    features). The same `encode_texts` as QueryEncoder; a text the table lacks is an error."""

    def __init__(self, texts, vectors: np.ndarray, source: str = "table"):
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(f"{source}: expected one vector per query, got {len(texts)} queries and "
                             f"vectors of shape {vectors.shape}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = vectors / np.maximum(norms, 1e-12)
        self.vectors.setflags(write=False)
        self.rows = {t: i for i, t in enumerate(texts)}
        self.source = source

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self.rows]
        if missing:
            raise KeyError(f"{self.source} has no vector for query {missing[0]!r} ({len(missing)} of "
                           f"{len(texts)} queries missing)")
        return self.vectors[[self.rows[t] for t in texts]]


@dataclasses.dataclass(frozen=True)
class QuerySource:
    """Where query vectors come from: the index's CLIP text tower (`clip`), a query tower trained
    against the index's vectors (`tower`, --query-tower), or a table of precomputed vectors
    (`table`, --query-vectors). `open_query_encoder` is the one place an encoder is made."""

    kind: str  # "clip" | "tower" | "table"
    clip_model: str = ""
    index_weights: str = ""
    pretrained: str | None = None
    path: str | None = None
    tower_weights: str = ""  # the tower's weights file sha256 (tower.json)
    device: str = "cpu"
    threads: int = 0

    @property
    def id(self) -> str:
        if self.kind == "table":
            return f"table:{self.path}"
        if self.kind == "tower":
            return f"tower:{self.path}:sha256:{self.tower_weights[:16]}"
        return f"clip:{self.clip_model}:{self.index_weights}"

    @property
    def text_id(self) -> str:
        """What a vector search setting tuned for text queries is matched on (`vmm index
        --text-queries`, `Searcher`): the text encoder's weights, not where a tower lies (a folder moves)."""
        if self.kind == "tower":
            return f"query tower sha256:{self.tower_weights[:16]}"
        return self.id if self.kind == "table" else f"clip {self.clip_model} {self.index_weights}"


def open_query_encoder(source: QuerySource):
    """An object with `encode_texts(list[str]) -> float32 [N, D]` (L2-normalised), and
    `encode_texts_and_tokens` when it has word tokens."""
    if source.kind == "table":
        import pyarrow.parquet as pq

        from transforms.files import localize

        table = pq.read_table(localize(source.path), columns=["query", "vector"])
        vectors = np.asarray(table.column("vector").to_pylist(), np.float32)
        return QueryVectorTable(table.column("query").to_pylist(), vectors, source=source.path)
    if source.kind == "tower":
        from models.query_tower import QueryTower
        from transforms.files import localize

        return QueryTower(localize(source.path), source.clip_model, source.index_weights, device=source.device,
                          threads=source.threads)
    return QueryEncoder(source.clip_model, source.index_weights, source.pretrained, device=source.device,
                        threads=source.threads)
