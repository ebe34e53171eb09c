"""run_summary.json: what a run read, wrote and spent, and whether every entry is accounted for.

Counts of rows come from the written Parquet files themselves (the truth readers will see);
times and work counters come from Beam metrics, summed over workers.
"""

from __future__ import annotations

import collections
import json
import logging
import posixpath
import time

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from models.version import __version__
from pipelines.output import num_rows
from schemas import forward_index as fi
from schemas.index import SUMMARY_FILE, IndexReader

logger = logging.getLogger(__name__)

def count_outputs(output: str) -> dict:
    index = IndexReader(output)
    counts = {table: index.num_rows(table) for table in fi.TABLES}
    errors_by_type = collections.Counter()
    for batch in index.batches("errors", columns=["error_type"]):
        errors_by_type.update(batch.column("error_type").to_pylist())
    stage_errors = collections.Counter()
    for batch in index.batches("videos", columns=["stage_errors"]):
        for entries in batch.column("stage_errors").to_pylist():
            stage_errors.update(e["stage"] for e in entries or [])
    counts["errors_by_type"] = dict(sorted(errors_by_type.items()))
    counts["stage_errors_by_stage"] = dict(sorted(stage_errors.items()))
    return counts


def metrics_of(result) -> tuple[dict, dict]:
    counters: dict[str, int] = {}
    distributions: dict[str, dict] = {}
    try:
        queried = result.metrics().query(MetricsFilter())
    except (NotImplementedError, AttributeError):  # some runners do not report metrics
        return counters, distributions
    for c in queried.get("counters", []):
        name = f"{c.key.metric.namespace}.{c.key.metric.name}"
        value = c.committed if c.committed is not None else c.attempted
        counters[name] = counters.get(name, 0) + (value or 0)
    for d in queried.get("distributions", []):
        name = f"{d.key.metric.namespace}.{d.key.metric.name}"
        value = d.committed if d.committed is not None else d.attempted
        if value is None:
            continue
        agg = distributions.setdefault(name, {"sum": 0, "count": 0})
        agg["sum"] += value.sum
        agg["count"] += value.count
    return counters, distributions


def summarize(result, config, wall_time_s: float, new_files: list[str] = ()) -> dict:
    """`new_files`: what this run committed (pipelines.output.commit_run); the other counts are of
    the whole index, earlier runs included."""
    counters, dists = metrics_of(result)
    counts = count_outputs(config.output)
    new = {table: 0 for table in fi.TABLES}
    for path in new_files:
        new[posixpath.basename(posixpath.dirname(path))] += num_rows(path)
    entries = counters.get("vmm.manifest_entries")

    def seconds(name: str, scale: float) -> float | None:
        d = dists.get(name)
        return round(d["sum"] * scale, 3) if d else None

    return {
        "vmm_version": __version__,
        "schema_version": fi.SCHEMA_VERSION,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "input": config.manifest.pattern,
        "output": config.output,
        "models": {
            "clip_model": config.clip.model_name,
            "clip_weights": config.clip_weights,
            "clip_random_weights": config.clip_weights == "none",
            "embedding_dim": config.embedding_dim,
            "embedding_dtype": config.assemble.embedding_dtype,
            "device": config.clip.device,
        },
        "settings": config.settings(),
        "counts": {"entries": entries, **counts},
        "new": new,  # rows this run added
        "accounting_ok": entries is not None and entries == counts["videos"] + counts["errors"],
        "wall_time_s": round(wall_time_s, 3),
        # Summed over all workers: busy time of each stage, not elapsed time.
        "stage_seconds": {
            "decode": seconds("vmm.decode_ms", 1e-3),
            "clip": seconds("vmm_clip.inference_batch_latency_micro_secs", 1e-6),
            "ocr": seconds("vmm.ocr_ms", 1e-3),
            "asr": seconds("vmm.asr_ms", 1e-3),
        },
        "ocr": {
            "model": config.ocr_model_id,
            "frames_read": counters.get("vmm.ocr_frames_read", 0),
            "frames_reused": counters.get("vmm.ocr_frames_reused", 0),
            "text_frames": counters.get("vmm.text_frames", 0),
        },
        "asr": {"model": config.asr_model_id, "videos": counters.get("vmm.asr_videos", 0),
                # of those, speech in a language the model cannot transcribe (no text written)
                "unsupported_language": counters.get("vmm.asr_unsupported_language", 0)},
        "counters": dict(sorted(counters.items())),
    }


def write_summary(output: str, summary: dict) -> str:
    """Writes run_summary.json under a temporary name, then renames it into place."""
    final = FileSystems.join(output, SUMMARY_FILE)
    tmp = FileSystems.join(output, f".{SUMMARY_FILE}.tmp")
    with FileSystems.create(tmp) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True).encode("utf-8"))
    if FileSystems.exists(final):
        FileSystems.delete([final])
    FileSystems.rename([tmp], [final])
    return final


def format_summary(summary: dict) -> str:
    c = summary["counts"]
    m = summary["models"]
    new = summary["new"]
    already = (c["entries"] or 0) - new["videos"] - new["errors"]
    lines = [
        f"vmm {summary['vmm_version']}: {summary['input']} -> {summary['output']}",
        f"  entries {c['entries']}  videos {c['videos']}  frames {c['frames']}  errors {c['errors']}  "
        f"accounting {'OK' if summary['accounting_ok'] else 'MISMATCH'}",
        f"  this run: {new['videos']} new videos, {new['errors']} new errors"
        + (f" ({already} entries were already in the index)" if already > 0 else ""),
        f"  CLIP {m['clip_model']} weights={m['clip_weights']} dim={m['embedding_dim']} {m['embedding_dtype']}"
        + ("  (RANDOM WEIGHTS: embeddings carry no meaning)" if m["clip_random_weights"] else ""),
        f"  OCR {summary['ocr']['model'] or 'off'}: frames read {summary['ocr']['frames_read']}, "
        f"reused {summary['ocr']['frames_reused']} (text frames {summary['ocr']['text_frames']})",
        f"  ASR {summary['asr']['model'] or 'off'}: videos transcribed {summary['asr']['videos']}, "
        f"segments {c['asr_segments']}"
        + (f", speech in an unsupported language {summary['asr']['unsupported_language']}"
           if summary["asr"].get("unsupported_language") else ""),
        f"  wall {summary['wall_time_s']:.1f}s  stage busy seconds {summary['stage_seconds']}",
    ]
    if c["errors_by_type"]:
        lines.append(f"  errors by type {c['errors_by_type']}")
    if c["stage_errors_by_stage"]:
        lines.append(f"  stage errors by stage {c['stage_errors_by_stage']}")
    return "\n".join(lines)
