"""Merging ranked lists from several recall queues into one. No Beam, no torch.

Consumes one ranked list per queue: `[(video_id, score), ...]`, best first, already cut at that
queue's depth. Produces `[(video_id, fused_score), ...]`, best first; ties go to the smaller
video_id, so the order is the same on every run.

  * `rrf`: reciprocal rank fusion, sum over queues of weight / (k + rank), rank from 1, k = 60 by
    default (the constant of Cormack et al. 2009, and the default of Elasticsearch, OpenSearch,
    Vespa, Milvus and LanceDB). Needs no score calibration between queues.
  * `weighted`: each queue's scores min-max normalised to [0, 1] over its own list (a list of one,
    or of equal scores, normalises to 1), then a weighted sum; a video absent from a queue gets 0.
"""

from __future__ import annotations

RRF_K = 60
FUSIONS = ("rrf", "weighted")


def _ordered(totals: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))


def rrf(queues: dict[str, list[tuple[str, float]]], *, k: int = RRF_K,
        weights: dict[str, float] | None = None) -> list[tuple[str, float]]:
    if k < 0:
        raise ValueError(f"RRF k must be >= 0, got {k}")
    totals: dict[str, float] = {}
    for name, hits in queues.items():
        w = 1.0 if weights is None else float(weights.get(name, 1.0))
        for rank, (video_id, _) in enumerate(hits, start=1):
            totals[video_id] = totals.get(video_id, 0.0) + w / (k + rank)
    return _ordered(totals)


def weighted(queues: dict[str, list[tuple[str, float]]], *,
             weights: dict[str, float] | None = None) -> list[tuple[str, float]]:
    totals: dict[str, float] = {}
    for name, hits in queues.items():
        if not hits:
            continue
        w = 1.0 if weights is None else float(weights.get(name, 1.0))
        scores = [s for _, s in hits]
        lo, hi = min(scores), max(scores)
        for video_id, s in hits:
            norm = (s - lo) / (hi - lo) if hi > lo else 1.0
            totals[video_id] = totals.get(video_id, 0.0) + w * norm
    return _ordered(totals)


def fuse(queues: dict[str, list[tuple[str, float]]], method: str = "rrf", *, k: int = RRF_K,
         weights: dict[str, float] | None = None) -> list[tuple[str, float]]:
    if method == "rrf":
        return rrf(queues, k=k, weights=weights)
    if method == "weighted":
        return weighted(queues, weights=weights)
    raise ValueError(f"fusion must be one of {FUSIONS}, got {method!r}")
