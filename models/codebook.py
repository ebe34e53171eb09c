"""Visual dictionary ("codebook"): K float32 vectors that stand in for CLIP features.

A codebook is learned once by k-means (faiss) over a sample of CLIP image
embeddings (``level="frame"``) or vision-tower patch tokens (``level="patch"``).
After that, every frame or patch is stored as the int16 id of its nearest
dictionary entry instead of a full float vector.

Inputs
  * ``train_codebook``: float array ``[N, D]`` of training vectors, the number of
    entries ``k`` and the CLIP model/weights the vectors came from.
  * ``Codebook.assign``: float array ``[N, D]`` of vectors to quantise.
  * ``reservoir_sample``: any iterable of 1-D vectors (e.g. a stream of frames).

Outputs
  * ``Codebook``: centroids ``float32 [K, D]`` plus a ``CodebookInfo`` record;
    on disk a directory holding ``codebook.npy`` (the array, no pickle) and
    ``codebook.json`` (the info, including the array's sha256, which is also
    the codebook's id).
  * ``Codebook.assign``: ``int16 [N]`` ids; ``lookup``: ``float32 [N, D]``;
    ``bag_of_words``: ``float32 [K]`` term-frequency histogram.

Metric: ``"l2"``. The nearest entry of x is ``argmin_j ||x - e_j||^2``. When
``info.normalized`` is true, x is L2-normalised first, exactly as the training
vectors were (CLIP's joint space is cosine-based, so normalised k-means is
spherical-ish clustering while keeping the plain L2 search). The centroids
themselves are not re-normalised: they are means of unit vectors.

This module deliberately has no Apache Beam import so it can be used from a
notebook; the Beam stages wrap it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
import uuid
from typing import Iterable, Optional

import numpy as np

logger = logging.getLogger(__name__)

MAX_K = 32767  # ids are stored as int16; 0..32767 are the non-negative values
LEVELS = ("frame", "patch")
METRICS = ("l2",)
NPY_NAME = "codebook.npy"
JSON_NAME = "codebook.json"
FORMAT_VERSION = 1
# faiss.Kmeans' own default. Above k * this many vectors extra points barely
# move the centroids, so we subsample (ourselves, reproducibly) to bound time.
DEFAULT_MAX_POINTS_PER_CENTROID = 256
# faiss.ClusteringInitMethod values (RANDOM, KMEANS_PLUS_PLUS, AFK_MC2).
_INIT_METHODS = {"random": 0, "kmeans++": 1, "afkmc2": 2}
_ASSIGN_BATCH = 65536  # queries per faiss search call: bounds the [B, K] distance buffer


class CodebookError(ValueError):
    """A codebook operation was refused; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class CodebookInfo:
    """Everything needed to interpret (and trust) a centroid array.

    metric: "l2" -- nearest entry = argmin_j ||x - e_j||^2 (after L2-normalising
    x when ``normalized``).
    """

    k: int
    dim: int
    level: str  # "frame" | "patch"
    metric: str  # "l2"
    clip_model: str
    clip_weights: str
    sha256: str
    train_vectors: int  # vectors actually fed to k-means (after any subsampling)
    iterations: int
    seed: int
    normalized: bool  # training vectors and queries are L2-normalised


def array_sha256(centroids: np.ndarray) -> str:
    """sha256 hex of the float32 C-order bytes, prefixed by dtype and shape.

    The shape is hashed too so that a [4, 6] and a [6, 4] array holding the same
    bytes get different ids.
    """
    arr = np.ascontiguousarray(centroids, dtype=np.float32)
    h = hashlib.sha256()
    header = "float32:" + ",".join(str(int(s)) for s in arr.shape) + ";"
    h.update(header.encode("ascii"))
    h.update(arr.tobytes(order="C"))
    return h.hexdigest()


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; all-zero rows stay zero (no NaN)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero row has no direction; dividing by a tiny floor keeps it at zero
    # instead of turning it into NaN, which faiss would reject.
    return x / np.maximum(norms, np.float32(1e-12))


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise CodebookError(f"level must be one of {LEVELS}, got {level!r}")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise CodebookError(f"k must be an int, got {type(k).__name__}")
    if k < 2:
        raise CodebookError(f"k={k} is too small: a codebook needs at least 2 entries")
    if k > MAX_K:
        raise CodebookError(
            f"k={k} exceeds MAX_K={MAX_K}: ids are stored as int16; choose k <= {MAX_K}"
        )


class Codebook:
    """K float32 centroids plus their ``CodebookInfo``; assigns vectors to ids.

    The centroid array is copied and made read-only so that ``id`` (its sha256)
    stays true for the lifetime of the object.
    """

    def __init__(self, centroids: np.ndarray, info: CodebookInfo):
        arr = np.asarray(centroids)
        if arr.ndim != 2:
            raise CodebookError(f"centroids must be 2-D [K, D], got shape {arr.shape}")
        if arr.dtype != np.float32:
            # Silently casting float64 would change the hash the caller computed.
            raise CodebookError(f"centroids must be float32, got {arr.dtype}")
        k, dim = arr.shape
        _check_k(k)
        if dim < 1:
            raise CodebookError("centroids must have dimension D >= 1")
        if not np.all(np.isfinite(arr)):
            raise CodebookError("centroids contain NaN or inf; retrain the codebook")
        if (info.k, info.dim) != (k, dim):
            raise CodebookError(
                f"info says k={info.k}, dim={info.dim} but centroids have shape {arr.shape}"
            )
        _check_level(info.level)
        if info.metric not in METRICS:
            raise CodebookError(f"metric must be one of {METRICS}, got {info.metric!r}")
        arr = np.array(arr, dtype=np.float32, order="C", copy=True)
        arr.setflags(write=False)
        actual = array_sha256(arr)
        if info.sha256 != actual:
            raise CodebookError(
                f"info.sha256={info.sha256!r} does not match the centroids ({actual}); "
                "build the info with array_sha256(centroids)"
            )
        self._centroids = arr
        self._info = info
        self._index = None
        self._index_lock = threading.Lock()

    # -- accessors -------------------------------------------------------
    @property
    def centroids(self) -> np.ndarray:
        """Read-only float32 [K, D] array."""
        return self._centroids

    @property
    def info(self) -> CodebookInfo:
        return self._info

    @property
    def id(self) -> str:
        return self._info.sha256

    @property
    def k(self) -> int:
        return self._info.k

    @property
    def dim(self) -> int:
        return self._info.dim

    def __repr__(self) -> str:
        i = self._info
        return f"Codebook(k={i.k}, dim={i.dim}, level={i.level!r}, id={i.sha256[:12]})"

    # -- pickling (Beam ships DoFns by pickling) -------------------------
    def __getstate__(self):
        # The faiss index is a SWIG object (not picklable) and is cheap to
        # rebuild; the lock cannot be pickled either.
        state = self.__dict__.copy()
        state["_index"] = None
        del state["_index_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._index = None
        self._index_lock = threading.Lock()
        # np.ndarray pickling does not preserve the read-only flag.
        if self._centroids.flags.writeable:
            self._centroids = self._centroids.copy()
            self._centroids.setflags(write=False)

    # -- persistence -----------------------------------------------------
    @classmethod
    def load(cls, path: str) -> "Codebook":
        """Load from a directory with codebook.npy + codebook.json; verify the hash."""
        npy_path = os.path.join(path, NPY_NAME)
        json_path = os.path.join(path, JSON_NAME)
        for p in (npy_path, json_path):
            if not os.path.isfile(p):
                raise CodebookError(
                    f"{p} not found: a codebook directory needs {NPY_NAME} and {JSON_NAME} "
                    "(written by Codebook.save)"
                )
        try:
            with open(json_path, "r", encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise CodebookError(f"cannot read {json_path}: {e}") from e
        if not isinstance(meta, dict):
            raise CodebookError(f"{json_path} must hold a JSON object")
        version = meta.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise CodebookError(
                f"{json_path} has format_version={version!r}; this vmm reads "
                f"{FORMAT_VERSION}. Upgrade vmm or re-save the codebook."
            )
        fields = {f.name for f in dataclasses.fields(CodebookInfo)}
        missing = sorted(fields - meta.keys())
        if missing:
            raise CodebookError(f"{json_path} lacks fields {missing}")
        extra = sorted(meta.keys() - fields)
        if extra:
            logger.warning("Ignoring unknown fields %s in %s", extra, json_path)
        info = CodebookInfo(**{name: meta[name] for name in fields})
        try:
            # allow_pickle=False: a codebook file must never execute code.
            centroids = np.load(npy_path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CodebookError(f"cannot read {npy_path}: {e}") from e
        actual = array_sha256(centroids) if centroids.dtype == np.float32 else None
        if actual != info.sha256:
            raise CodebookError(
                f"{npy_path} does not match {json_path}: sha256 is {actual}, json says "
                f"{info.sha256}. The files were modified or come from different saves; "
                "re-save or retrain the codebook."
            )
        logger.info("Loaded codebook %s (k=%s, dim=%s, level=%s) from %s",
                    info.sha256[:12], info.k, info.dim, info.level, path)
        return cls(centroids, info)

    def save(self, path: str) -> None:
        """Write codebook.npy (float32, C order) and codebook.json atomically per file.

        Each file is written under a temporary name and moved into place with
        os.replace, so a reader never sees a half-written file. The npy goes
        first; a reader that races between the two replaces sees mismatching
        hashes and gets a CodebookError rather than a wrong codebook.
        """
        os.makedirs(path, exist_ok=True)
        meta = dataclasses.asdict(self._info)
        meta["format_version"] = FORMAT_VERSION
        token = f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
        npy_path = os.path.join(path, NPY_NAME)
        json_path = os.path.join(path, JSON_NAME)
        npy_tmp, json_tmp = npy_path + token, json_path + token
        try:
            # Pass a file object: np.save on a name not ending in .npy appends it.
            with open(npy_tmp, "wb") as f:
                np.save(f, self._centroids, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            with open(json_tmp, "w", encoding="utf-8") as f:
                json.dump(meta, f, sort_keys=True, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(npy_tmp, npy_path)
            os.replace(json_tmp, json_path)
        finally:
            for tmp in (npy_tmp, json_tmp):
                if os.path.exists(tmp):
                    os.remove(tmp)
        logger.info("Saved codebook %s to %s", self.id[:12], path)

    # -- queries ---------------------------------------------------------
    def _get_index(self):
        # Built lazily: constructing a Codebook (e.g. on unpickling in a Beam
        # worker) should not pay for faiss until it is actually used.
        if self._index is None:
            with self._index_lock:
                if self._index is None:
                    import faiss  # local: keeps `import models.codebook` light

                    index = faiss.IndexFlatL2(self.dim)
                    index.add(self._centroids)
                    self._index = index
        return self._index

    def assign(self, vectors: np.ndarray, batch_size: int = _ASSIGN_BATCH) -> np.ndarray:
        """Nearest-entry ids (int16 [N]) for float vectors [N, D] under squared L2."""
        x = np.asarray(vectors)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise CodebookError(
                f"assign expects [N, {self.dim}] vectors, got shape {x.shape}"
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise CodebookError(f"assign expects float vectors, got {x.dtype}")
        n = x.shape[0]
        out = np.empty(n, dtype=np.int16)
        if n == 0:
            return out
        index = self._get_index()
        for start in range(0, n, batch_size):
            chunk = x[start:start + batch_size]
            if self._info.normalized:
                chunk = _l2_normalize(chunk)
            else:
                chunk = np.ascontiguousarray(chunk, dtype=np.float32)
            _, labels = index.search(chunk, 1)
            labels = labels[:, 0]
            if labels.min() < 0:
                # faiss returns -1 when no finite distance exists (NaN/inf input).
                bad = start + int(np.flatnonzero(labels < 0)[0])
                raise CodebookError(
                    f"vector {bad} has no nearest entry (NaN or inf in input?)"
                )
            out[start:start + len(chunk)] = labels
        return out

    def _check_ids(self, ids) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.size == 0:
            return arr.astype(np.int64)
        if not np.issubdtype(arr.dtype, np.integer):
            raise CodebookError(f"ids must be integers, got dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.k:
            raise CodebookError(
                f"ids out of range: min={lo}, max={hi}, valid range is 0..{self.k - 1} "
                f"for codebook {self.id[:12]}; were they assigned with another codebook?"
            )
        return arr.astype(np.int64, copy=False)

    def lookup(self, ids) -> np.ndarray:
        """Centroid vectors for ids: float32 of shape ids.shape + (D,), i.e. [N, D] for 1-D ids."""
        arr = self._check_ids(ids)
        # Fancy indexing copies, so callers get a writable array.
        return self._centroids[arr]

    def bag_of_words(self, ids, normalize: bool = True) -> np.ndarray:
        """float32 [K] term-frequency histogram of ids; L2-normalised when normalize.

        An empty id list gives the zero vector (not NaN).
        """
        arr = self._check_ids(ids).ravel()
        hist = np.bincount(arr, minlength=self.k).astype(np.float32)
        if normalize:
            norm = float(np.linalg.norm(hist))
            if norm > 0:
                hist /= np.float32(norm)
        return hist

    def check_compatible(self, *, dim: int, clip_model: str, clip_weights: str,
                         level: str, force: bool = False) -> None:
        """Refuse to quantise features this codebook was not trained for.

        dim and level mismatches are always refused (the ids would be
        meaningless); a different CLIP model/weights is refused unless force,
        because same-sized embedding spaces from different weights are not
        aligned.
        """
        info = self._info
        if dim != info.dim:
            raise CodebookError(
                f"feature dim {dim} != codebook dim {info.dim} (codebook {self.id[:12]}); "
                "train a codebook on these features"
            )
        if level != info.level:
            raise CodebookError(
                f"features are {level!r}-level but codebook {self.id[:12]} is "
                f"{info.level!r}-level; use a {level}-level codebook"
            )
        mismatches = []
        if clip_model != info.clip_model:
            mismatches.append(f"clip_model {clip_model!r} != {info.clip_model!r}")
        if clip_weights != info.clip_weights:
            mismatches.append(f"clip_weights {clip_weights!r} != {info.clip_weights!r}")
        if mismatches:
            what = "; ".join(mismatches)
            if not force:
                raise CodebookError(
                    f"codebook {self.id[:12]} was trained on other CLIP features ({what}); "
                    "retrain it for this model, or pass force=True if you know the "
                    "embedding spaces match"
                )
            logger.warning("Using codebook %s despite %s (force=True)", self.id[:12], what)


def train_codebook(vectors: np.ndarray, k: int, *, level: str, clip_model: str,
                   clip_weights: str, iterations: int = 20, seed: int = 0,
                   min_points_per_centroid: int = 39, normalize: bool = True,
                   use_gpu: Optional[bool] = None,
                   max_points_per_centroid: int = DEFAULT_MAX_POINTS_PER_CENTROID,
                   init: str = "random", nredo: int = 1,
                   ) -> Codebook:
    """Learn a k-entry codebook from float vectors [N, D] with faiss k-means.

    Reproducibility: for a fixed seed and input order the CPU result is
    bit-identical run to run. We (a) do any subsampling ourselves with a seeded
    numpy RNG, keeping the chosen rows in input order, and tell faiss never to
    subsample (max_points_per_centroid >= N/k); (b) pin faiss' clustering
    parameters instead of relying on library defaults; (c) train on the
    caller's thread count: with faiss-cpu 1.15 the result was bit-identical for
    1..8 OpenMP threads (a test checks 1 vs 4), so we do not force one thread
    and give up the speed. GPU training (faiss-gpu) is not verified to be
    bit-identical to CPU or across devices.

    Refuses k < 2, k > MAX_K (int16 ids), and k * min_points_per_centroid > N
    (too few points per centroid gives noisy, partly empty clusters).

    Beyond the core arguments:
      max_points_per_centroid: at most k * this many vectors are used; larger
        inputs are subsampled (seeded, input order kept); ``info.train_vectors``
        records the number actually used.
      init: "random" (faiss' classic init: k distinct training points; scales
        to k = 32767), "kmeans++" (better seeding, but O(N*k*D) sequential work:
        measured ~12x the cost of one Lloyd iteration at k=1024 on CPU,
        impractical near MAX_K) or
        "afkmc2" (MCMC approximation of k-means++, O(k^2) in k). Random init
        can put two centroids in one natural cluster; with k much larger than
        the number of natural clusters (a visual dictionary) that costs
        little, for small k prefer kmeans++ and/or nredo > 1.
      nredo: run k-means this many times (seeds derived from ``seed``) and
        keep the run with the lowest objective.
    """
    _check_k(k)
    k = int(k)
    _check_level(level)
    if iterations < 1:
        raise CodebookError(f"iterations must be >= 1, got {iterations}")
    if min_points_per_centroid < 1:
        raise CodebookError(f"min_points_per_centroid must be >= 1, got {min_points_per_centroid}")
    if init not in _INIT_METHODS:
        raise CodebookError(f"init must be one of {sorted(_INIT_METHODS)}, got {init!r}")
    if isinstance(nredo, bool) or not isinstance(nredo, (int, np.integer)) or nredo < 1:
        raise CodebookError(f"nredo must be an int >= 1, got {nredo!r}")
    if max_points_per_centroid < min_points_per_centroid:
        raise CodebookError("max_points_per_centroid must be >= min_points_per_centroid")
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise CodebookError(f"vectors must be a non-empty [N, D] array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise CodebookError(f"vectors must be float, got {x.dtype}")
    n, dim = x.shape
    needed = k * min_points_per_centroid
    if needed > n:
        max_k = n // min_points_per_centroid
        advice = (f"the largest K this sample supports is {max_k}"
                  if max_k >= 2 else "this sample is too small for any codebook")
        raise CodebookError(
            f"big K on a small sample: k={k} needs at least k*min_points_per_centroid="
            f"{needed} training vectors but got {n}; {advice} (at "
            f"min_points_per_centroid={min_points_per_centroid}), or pass at least "
            f"{needed} vectors"
        )
    if not np.all(np.isfinite(x)):
        raise CodebookError("training vectors contain NaN or inf; drop those rows first")

    cap = k * max_points_per_centroid
    if n > cap:
        # Our own seeded subsample (sorted => input order kept) so the result
        # does not depend on faiss' internal sampler, and train_vectors is exact.
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(n, size=cap, replace=False))
        x = x[keep]
        logger.info("Subsampled %s -> %s training vectors (k=%s x %s per centroid)",
                    n, cap, k, max_points_per_centroid)
    x = _l2_normalize(x) if normalize else np.ascontiguousarray(x, dtype=np.float32)
    n_used = x.shape[0]

    import faiss  # local import: keeps `import models.codebook` cheap

    if use_gpu is None:
        use_gpu = faiss.get_num_gpus() > 0
    if use_gpu and faiss.get_num_gpus() < 1:
        raise CodebookError(
            "use_gpu=True but faiss sees no GPU; install faiss-gpu or pass use_gpu=False"
        )

    params = dict(
        niter=int(iterations),
        seed=int(seed),
        verbose=False,
        nredo=int(nredo),
        spherical=False,  # we normalise inputs ourselves; centroids stay plain means
        min_points_per_centroid=int(min_points_per_centroid),
        # >= N/k, so faiss never subsamples (we already did, reproducibly).
        max_points_per_centroid=int(max(n_used, 1)),
        gpu=bool(use_gpu),
    )
    # Newer faiss adds knobs whose defaults might change between releases; pin
    # the ones that alter the result to the classic behaviour when present.
    cp_fields = set(dir(faiss.ClusteringParameters()))
    for name, value in (("early_stop_threshold", 0.0), ("use_faster_subsampling", False),
                        ("use_super_kmeans", False)):
        if name in cp_fields:
            params[name] = value
    if "init_method" in cp_fields:
        params["init_method"] = _INIT_METHODS[init]
    elif init != "random":
        raise CodebookError(
            f"init={init!r} needs a faiss with ClusteringParameters.init_method; "
            f"this faiss is {getattr(faiss, '__version__', '?')}. "
            "Upgrade faiss or use init='random'"
        )

    logger.info("Training %s-level codebook: k=%s dim=%s vectors=%s iterations=%s seed=%s "
                "init=%s nredo=%s gpu=%s",
                level, k, dim, n_used, iterations, seed, init, nredo, bool(use_gpu))
    km = faiss.Kmeans(dim, k, **params)
    km.train(x)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32).reshape(k, dim)
    if km.obj is not None and len(km.obj):
        logger.info("k-means objective: first %s, last %s", km.obj[0], km.obj[-1])
    info = CodebookInfo(
        k=k, dim=dim, level=level, metric="l2", clip_model=clip_model,
        clip_weights=clip_weights, sha256=array_sha256(centroids),
        train_vectors=n_used, iterations=int(iterations), seed=int(seed),
        normalized=bool(normalize),
    )
    return Codebook(centroids, info)


def reservoir_sample(iterable_of_vectors: Iterable, n: int, seed: int) -> np.ndarray:
    """Uniform sample of up to n vectors from a stream (Algorithm R).

    Returns float32 [min(n, count), D] in reservoir-slot order; the same input
    order and seed give the same output. An empty stream gives shape (0, 0).
    Each vector is copied, so the sample does not pin large upstream buffers.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise CodebookError(f"n must be a positive int, got {n!r}")
    rng = np.random.default_rng(seed)
    reservoir: list = []
    shape = None
    # Random draws in blocks: one Generator call per item would dominate the
    # cost. j = floor(u * (i + 1)) is uniform on 0..i for u uniform on [0, 1).
    block = np.empty(0)
    pos = 0
    for i, item in enumerate(iterable_of_vectors):
        v = np.asarray(item, dtype=np.float32)
        if v.ndim != 1:
            raise CodebookError(f"item {i} is not a 1-D vector (shape {v.shape})")
        if shape is None:
            shape = v.shape
        elif v.shape != shape:
            raise CodebookError(f"item {i} has shape {v.shape}, expected {shape}")
        if i < n:
            reservoir.append(v.copy())
            continue
        if pos == len(block):
            block = rng.random(4096)
            pos = 0
        j = int(math.floor(block[pos] * (i + 1)))
        pos += 1
        if j < n:
            reservoir[j] = v.copy()
    if not reservoir:
        return np.empty((0, 0), dtype=np.float32)
    return np.stack(reservoir)
