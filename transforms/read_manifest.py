"""ReadManifest: `--input` → PCollection[VideoRequest] (+ ErrorRecord for unusable entries).

`resolve_input` runs at pipeline construction: it checks that the input exists and learns the
passthrough columns. `ReadManifest` reads manifests through Beam's FileSystems (any scheme Beam
can open: local, gs://, s3://, ...) and drops duplicate video ids, keeping the first in manifest order.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from schemas.elements import ErrorRecord, VideoRequest
from schemas.manifest import (
    ManifestError,
    ManifestSpec,
    default_video_id,
    first_rows,
    infer_passthrough_schema,
    is_video_path,
    manifest_kind,
    parse_jsonl_line,
    record_to_request,
)

logger = logging.getLogger(__name__)

ERRORS = "errors"
_NAMESPACE = "vmm"
# Entries of one manifest file get ordinals file_index * 2**40 + line: first-in-manifest order
# survives any shuffling, so the same duplicate always wins.
_FILE_STRIDE = 1 << 40


def _match(pattern: str) -> list[str]:
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def resolve_input(input_spec: str) -> tuple[ManifestSpec, list[str]]:
    """What `--input` is, checked now so a typo fails at construction, not on the workers.

    Returns the spec and, for manifests, the sorted manifest files.
    """
    if not input_spec:
        raise ManifestError("--input is required: a manifest (.jsonl/.csv/.parquet), a directory or a glob")
    local = FileSystems.get_scheme(input_spec) in (None, "file")
    if local and not any(c in input_spec for c in "*?[") and not os.path.exists(input_spec):
        raise ManifestError(f"--input {input_spec!r} does not exist")
    kind = manifest_kind(input_spec)
    if kind is not None:
        paths = _match(input_spec)
        if not paths:
            raise ManifestError(f"no manifest file matches {input_spec!r}")
        with FileSystems.open(paths[0]) as f:
            if kind == "jsonl":
                header = first_rows(io.TextIOWrapper(f, encoding="utf-8", errors="replace"))
            elif kind == "csv":
                header = next(csv.reader(io.TextIOWrapper(f, encoding="utf-8", errors="replace")), [])
                if "uri" not in header:
                    raise ManifestError(f"the CSV manifest {paths[0]} has no 'uri' column (header: {header})")
            else:
                header = pq.read_schema(f)
        return ManifestSpec(kind, input_spec, infer_passthrough_schema(kind, header)), paths
    local_dir = local and os.path.isdir(input_spec)
    if local_dir or input_spec.endswith("/"):
        pattern = posixpath.join(input_spec.rstrip("/"), "**")
        found = [p for p in _match(pattern) if is_video_path(p)]
        if not found:
            raise ManifestError(f"the directory {input_spec!r} holds no video files (by extension)")
        return ManifestSpec("directory", pattern, infer_passthrough_schema("csv", [])), []
    if not _match(input_spec):
        raise ManifestError(f"no file matches {input_spec!r}")
    return ManifestSpec("files", input_spec, infer_passthrough_schema("csv", [])), []


class _ReadManifestFileFn(beam.DoFn):
    """(file_index, path) → VideoRequest per entry; unusable entries → ErrorRecord on ERRORS."""

    def __init__(self, spec: ManifestSpec):
        self._spec = spec
        self._entries = beam.metrics.Metrics.counter(_NAMESPACE, "manifest_entries")
        self._bad = beam.metrics.Metrics.counter(_NAMESPACE, "manifest_bad_entries")

    def process(self, element):
        file_index, path = element
        name = posixpath.basename(path)
        for line_no, record in self._records(path):
            self._entries.inc()
            where = f"{name}:{line_no}"
            if isinstance(record, ErrorRecord):
                result = record
            else:
                result = record_to_request(record, file_index * _FILE_STRIDE + line_no, self._spec.passthrough, where)
            if isinstance(result, ErrorRecord):
                self._bad.inc()
                yield beam.pvalue.TaggedOutput(ERRORS, result)
            else:
                yield result

    def _records(self, path):
        kind = self._spec.kind
        with FileSystems.open(path) as f:
            if kind == "parquet":
                line_no = 0
                for batch in pq.ParquetFile(f).iter_batches():
                    for record in batch.to_pylist():
                        line_no += 1
                        yield line_no, record
                return
            text = io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="")
            if kind == "csv":
                reader = csv.DictReader(text)
                for record in reader:
                    # Empty CSV cells are missing values, not empty strings.
                    yield reader.line_num, {k: (v if v != "" else None) for k, v in record.items() if k is not None}
                return
            name = posixpath.basename(path)
            for line_no, line in enumerate(text, start=1):
                if line.strip():
                    yield line_no, parse_jsonl_line(line, f"{name}:{line_no}")


def _file_to_request(metadata) -> VideoRequest:
    return VideoRequest(video_id=default_video_id(metadata.path), uri=metadata.path, ordinal=0)


class _KeepFirstFn(beam.DoFn):
    """(video_id, [VideoRequest]) → the first by manifest order; later ones are ErrorRecords."""

    def __init__(self):
        self._dupes = beam.metrics.Metrics.counter(_NAMESPACE, "duplicate_video_ids")

    def process(self, element):
        video_id, requests = element
        ordered = sorted(requests, key=lambda r: (r.ordinal, r.uri))
        first = ordered[0]
        yield first
        for dup in ordered[1:]:
            self._dupes.inc()
            yield beam.pvalue.TaggedOutput(
                ERRORS,
                ErrorRecord(
                    video_id=video_id,
                    uri=dup.uri,
                    stage="manifest",
                    error_type="DuplicateVideoId",
                    message=f"video_id {video_id!r} appears earlier in the manifest (uri {first.uri!r}); "
                    "only the first entry is processed",
                ),
            )


class ReadManifest(beam.PTransform):
    """PBegin → {'requests': VideoRequest, 'errors': ErrorRecord}; each video id at most once."""

    def __init__(self, spec: ManifestSpec, manifest_files: list[str]):
        super().__init__()
        self._spec = spec
        self._files = list(manifest_files)

    def expand(self, pbegin):
        spec = self._spec
        if spec.kind in ("files", "directory"):
            matched = pbegin | "MatchFiles" >> fileio.MatchFiles(spec.pattern)
            if spec.kind == "directory":
                matched = matched | "VideoFilesOnly" >> beam.Filter(lambda m: is_video_path(m.path))
            requests = matched | "ToRequests" >> beam.Map(_file_to_request) | "CountEntries" >> beam.ParDo(_CountFn())
            bad = pbegin | "NoBadEntries" >> beam.Create([])  # a matched file is always a usable entry
        else:
            parsed = (
                pbegin
                | "ManifestFiles" >> beam.Create(list(enumerate(self._files)))
                | "ReadEntries" >> beam.ParDo(_ReadManifestFileFn(spec)).with_outputs(ERRORS, main="requests")
            )
            requests, bad = parsed.requests, parsed[ERRORS]
        deduped = (
            requests
            | "KeyById" >> beam.Map(lambda r: (r.video_id, r))
            | "GroupById" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(_KeepFirstFn()).with_outputs(ERRORS, main="requests")
        )
        errors = (bad, deduped[ERRORS]) | "ManifestErrors" >> beam.Flatten()
        return {"requests": deduped.requests, "errors": errors}


class _CountFn(beam.DoFn):
    def __init__(self):
        self._entries = beam.metrics.Metrics.counter(_NAMESPACE, "manifest_entries")

    def process(self, element):
        self._entries.inc()
        yield element


def _unseen(element):
    video_id, grouped = element
    if grouped["done"]:
        return
    for x in grouped["todo"]:
        yield x


class SkipDone(beam.PTransform):
    """{'requests', 'errors'} → the same, without the video ids already in earlier runs' files.

    `done_files`: committed `videos` / `errors` Parquet files; their `video_id` column is read in the
    pipeline (an anti-join, so it scales with the index, not with one machine's memory).
    """

    def __init__(self, done_files: list[str]):
        super().__init__()
        self._files = list(done_files)

    def expand(self, manifest):
        from apache_beam.io.parquetio import ReadAllFromParquet

        done = (
            manifest["requests"].pipeline
            | "DoneFiles" >> beam.Create(self._files)
            | "ReadDoneIds" >> ReadAllFromParquet(columns=["video_id"])
            | "KeyDone" >> beam.Map(lambda row: (row["video_id"], None))
        )
        out = {}
        for name in ("requests", "errors"):
            keyed = manifest[name] | f"Key{name.capitalize()}" >> beam.Map(lambda x: (x.video_id, x))
            out[name] = (
                {"todo": keyed, "done": done}
                | f"Join{name.capitalize()}" >> beam.CoGroupByKey()
                | f"Unseen{name.capitalize()}" >> beam.FlatMap(_unseen)
            )
        return out
