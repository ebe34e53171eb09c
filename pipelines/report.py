"""`vmm report`: a static HTML report of a forward index, for a person to look at in a browser.

    vmm report --input out/ --output report/ [--limit 200] [--video-id ID ...]
    xdg-open report/index.html

Consumes a forward index (local or any Beam filesystem): the `videos`, `frames`, `asr_segments`
and `errors` columns it shows, `run_summary.json` and the files' `vmm.*` metadata. Produces a
folder that works from file:// with no network: `index.html` (run summary, models, a sortable and
filterable table of videos, histograms, the errors) and `v/<name>.html` per video, with its frames
re-decoded from `uri` at the stored frame numbers as small JPEGs in `v/<name>/`. Markup is made by
`pipelines.report_html` (every value from the index escaped); file names are made here from a
video id's safe characters plus a hash of it, so no id can reach outside the folder.

Pictures are decoded one video at a time, for the first `--limit` videos (in video_id order); the
rest get their page without pictures. The folder is built beside the output (`<output>.tmp-*`) and
then swapped in, so a rebuild replaces the old report at once and a failed one leaves it as it was.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid

from models.errors import CannotStart

logger = logging.getLogger(__name__)

MARKER = "vmm-report.json"  # written in every report folder: only such a folder is ever replaced
_VIDEO_COLUMNS = ["video_id", "uri", "title", "duration_s", "fps", "width", "height", "video_codec", "has_audio",
                  "num_keyframes", "topic_coherence", "title_visual_similarity", "ocr_subtitle_text",
                  "ocr_overlay_text", "ocr_scene_text", "asr_language", "asr_language_probability",
                  "speech_seconds", "stage_errors"]
_FRAME_COLUMNS = ["video_id", "frame_index", "timestamp_s", "reason", "token", "ocr"]
_SEGMENT_COLUMNS = ["video_id", "segment_index", "start_s", "end_s", "text"]
_ERROR_COLUMNS = ["video_id", "uri", "stage", "error_type", "message"]


def add_arguments(parser) -> None:
    from pipelines.options import switch

    parser.add_argument("--input", required=True, help="the forward index to show (a folder or URI)")
    parser.add_argument("--output", required=True,
                        help="the report folder to write (a local folder; an earlier report there is replaced)")
    parser.add_argument("--limit", type=int, default=200,
                        help="decode pictures for at most this many videos; the others are listed without")
    parser.add_argument("--video-id", dest="video_ids", action="extend", nargs="+", default=None,
                        help="report only these videos (repeatable)")
    parser.add_argument("--thumb-side", type=int, default=360, help="longer side of the frame pictures, pixels")
    parser.add_argument("--decode-timeout-s", type=float, default=300.0,
                        help="a video whose pictures take longer to decode gets its page without them")
    switch(parser, "isolate-decode", True, "decode in a child process: a decoder crash or hang costs that "
                                           "video's pictures, not the report")
    switch(parser, "progress", None, "progress bar (default: when stderr is a terminal)")


def execute(args, options=None) -> int:
    """A report that cannot be made (ReportError, a flag value) is one line and exit 2 (run_command)."""
    from pipelines.options import check, starting

    with starting():
        check(args.limit >= 0, "--limit", ">= 0", args.limit)
        check(args.thumb_side >= 16, "--thumb-side", ">= 16", args.thumb_side)
        check(args.decode_timeout_s > 0, "--decode-timeout-s", "> 0", args.decode_timeout_s)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    stats = build_report(args.input, args.output, limit=args.limit, video_ids=args.video_ids,
                         thumb_side=args.thumb_side, progress=progress, isolate=args.isolate_decode,
                         decode_timeout_s=args.decode_timeout_s)
    print(f"wrote {os.path.join(args.output, 'index.html')}: {stats.videos} videos ({stats.with_pictures} with "
          f"pictures, {stats.pictures} pictures), {stats.errors} errors; {stats.seconds:.1f} s "
          f"(decoding {stats.decode_seconds:.1f} s), {stats.bytes / 1e6:.1f} MB")
    return 0


class ReportError(CannotStart, ValueError):
    """The report cannot be made: no index there, an unknown --video-id, an output it must not replace."""


@dataclasses.dataclass
class ReportStats:
    videos: int = 0
    with_pictures: int = 0
    pictures: int = 0
    errors: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0  # decoding the pictures (PyAV) and encoding them (JPEG)
    bytes: int = 0


# ---------------------------------------------------------------------------------------------
# Reading the index


@dataclasses.dataclass
class IndexData:
    root: str
    runs: int
    metadata: dict
    summary: dict | None
    videos: list[dict]
    frames: dict[str, list[dict]]
    segments: dict[str, list[dict]]
    errors: list[dict]


def read_index(root: str, video_ids: list[str] | None = None) -> IndexData:
    """What the report shows, read through `schemas.index.IndexReader` (only these columns)."""
    import pyarrow.compute as pc

    from schemas.index import IndexReader, read_summary

    reader = IndexReader(root)
    if not reader.runs:
        raise ReportError(f"{root} holds no committed run of a forward index (no _runs/*.json)")
    wanted = None if video_ids is None else pc.field("video_id").isin(list(video_ids))

    def rows(table: str, columns: list[str]) -> list[dict]:
        if not reader.files(table):
            return []
        have = [c for c in columns if c in reader.schema(table, names_only=True).names]  # older schemas lack some
        blank = dict.fromkeys(columns)
        return [{**blank, **r} for r in reader.table(table, have, filter=wanted).to_pylist()]

    videos = sorted(rows("videos", _VIDEO_COLUMNS), key=lambda r: r["video_id"])
    frames: dict[str, list[dict]] = {}
    for r in sorted(rows("frames", _FRAME_COLUMNS), key=lambda r: (r["video_id"], r["timestamp_s"], r["frame_index"])):
        frames.setdefault(r["video_id"], []).append(r)
    segments: dict[str, list[dict]] = {}
    for r in sorted(rows("asr_segments", _SEGMENT_COLUMNS), key=lambda r: (r["video_id"], r["segment_index"])):
        segments.setdefault(r["video_id"], []).append(r)
    errors = sorted(rows("errors", _ERROR_COLUMNS), key=lambda r: (str(r["video_id"]), str(r["uri"])))
    return IndexData(root, len(reader.runs), reader.metadata, read_summary(root), videos, frames, segments, errors)


# ---------------------------------------------------------------------------------------------
# Names and the folder


def safe_name(video_id: str) -> str:
    """A file name for a video's page and pictures: its id's letters, digits, `_` and `-` (at most 40)
    plus 12 hex digits of its SHA-1, so different ids never share a name and none leaves the folder."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", video_id)[:40].strip("_-") or "video"
    return f"{stem}-{hashlib.sha1(video_id.encode('utf-8')).hexdigest()[:12]}"


def _is_report(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, MARKER))


def _swap(new: str, output: str) -> None:
    """Puts the finished folder `new` at `output`: one atomic exchange where the OS offers it
    (Linux renameat2 RENAME_EXCHANGE), else two renames; the old report is then deleted."""
    if not os.path.lexists(output):
        os.rename(new, output)
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        if libc.renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(output), rename_exchange) == 0:
            shutil.rmtree(new)  # now the old report
            return
    except (AttributeError, OSError):
        pass
    old = f"{output}.old-{uuid.uuid4().hex[:8]}"
    os.rename(output, old)
    os.rename(new, output)
    shutil.rmtree(old)


def _folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


# ---------------------------------------------------------------------------------------------
# Building


def _pictures(uri: str, frames: list[dict], folder: str, name: str, thumb_side: int,
              isolated=None) -> tuple[dict[int, str], str | None]:
    """Decodes a video's frames (in the `isolated` child when given) and writes them as JPEGs in
    folder/name/; (frame_index -> path relative to the page, why some or all are missing or None)."""
    from PIL import Image

    from models.decode import DecodeError
    from models.isolated import Crashed, RemoteError, TimedOut
    from transforms.decode_uri import decode_uri_frames

    if not frames:
        return {}, None
    wanted = [f["frame_index"] for f in frames]
    try:
        if isolated is None:
            images = decode_uri_frames(uri, wanted, thumb_side)
        else:
            images = isolated.call(decode_uri_frames, uri, wanted, thumb_side)
    except DecodeError as e:
        return {}, f"{uri} cannot be decoded now ({e.error_type}: {e})"
    except RemoteError as e:
        return {}, f"{uri} cannot be decoded now ({(e.details or {}).get('error_type') or e.type_name}: {e})"
    except TimedOut as e:
        return {}, f"decoding {uri} did not finish (Timeout: {e})"
    except Crashed as e:
        return {}, f"the decoder crashed on {uri} (DecoderCrash: {e})"
    except OSError as e:
        return {}, f"{uri} cannot be read now ({type(e).__name__}: {e})"
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    hrefs = {}
    for index, image in sorted(images.items()):
        rel = f"{name}/f{index:07d}.jpg"
        Image.fromarray(image).save(os.path.join(folder, rel), format="JPEG", quality=80, optimize=True)
        hrefs[index] = rel
    missing = len({f["frame_index"] for f in frames}) - len(hrefs)
    why = (f"{missing} of the indexed frames are past the end of {uri} as it is now: has the file changed since "
           "it was indexed?" if missing else None)
    return hrefs, why


def build_report(index_root: str, output: str, limit: int = 200, video_ids: list[str] | None = None,
                 thumb_side: int = 360, progress: bool = False, isolate: bool = True,
                 decode_timeout_s: float | None = 300.0) -> ReportStats:
    """Writes the report of `index_root` to the local folder `output` (replacing an earlier report).
    `isolate`: pictures are decoded in a child process (models.isolated), `decode_timeout_s` at most
    per video."""
    started = time.perf_counter()
    output = os.path.abspath(output.rstrip("/") or "/")
    if os.path.lexists(output) and not (os.path.isdir(output) and (not os.listdir(output) or _is_report(output))):
        raise ReportError(f"{output} exists and is not a vmm report (no {MARKER}): not replacing it")
    data = read_index(index_root, video_ids)
    if video_ids is not None:
        unknown = sorted(set(video_ids) - {v["video_id"] for v in data.videos} - {e["video_id"] for e in data.errors})
        if unknown:
            raise ReportError(f"no video {', '.join(map(repr, unknown))} in {index_root}")
    tmp = f"{output}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(os.path.join(tmp, "v"))
    stats = ReportStats(videos=len(data.videos), errors=len(data.errors))
    try:
        if isolate and limit and data.videos:
            from models.isolated import Isolated

            with Isolated(timeout_s=decode_timeout_s, preload=("transforms.decode_uri",)) as child:
                _write_pages(data, tmp, limit, thumb_side, progress, stats, child)
        else:
            _write_pages(data, tmp, limit, thumb_side, progress, stats)
        stats.seconds = time.perf_counter() - started
        stats.bytes = _folder_bytes(tmp)
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump({"index": index_root, **dataclasses.asdict(stats)}, f, indent=2)
        _swap(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stats


def _write_pages(data: IndexData, tmp: str, limit: int, thumb_side: int, progress: bool, stats: ReportStats,
                 isolated=None) -> None:
    from tqdm import tqdm

    from pipelines import report_html as rh

    listed = []
    for i, video in enumerate(tqdm(data.videos, desc="report", unit="video", file=sys.stderr, disable=not progress)):
        vid = video["video_id"]
        name = safe_name(vid)
        frames = data.frames.get(vid, [])
        if i < limit:
            t = time.perf_counter()
            thumbs, why = _pictures(video["uri"], frames, os.path.join(tmp, "v"), name, thumb_side, isolated)
            stats.decode_seconds += time.perf_counter() - t
            stats.pictures += len(thumbs)
            stats.with_pictures += bool(thumbs)
        else:
            thumbs, why = {}, f"only the first {limit} videos get pictures (--limit {limit})"
        page = rh.video_page(video=video, frames=frames, segments=data.segments.get(vid, []), thumbs=thumbs,
                             no_pictures=why, metadata=data.metadata, index_href="../index.html")
        with open(os.path.join(tmp, "v", f"{name}.html"), "w", encoding="utf-8") as f:
            f.write(page)
        listed.append({**video, "page": f"v/{name}.html", "text_frames": sum(f["reason"] == "text" for f in frames)})
    errors_by_type: dict[str, int] = {}
    for e in data.errors:
        errors_by_type[e["error_type"]] = errors_by_type.get(e["error_type"], 0) + 1
    stage_errors: dict[str, int] = {}
    for v in data.videos:
        for e in v.get("stage_errors") or []:
            stage_errors[e["stage"]] = stage_errors.get(e["stage"], 0) + 1
    page_stats = {"frames": sum(len(f) for f in data.frames.values()),
                  "segments": sum(len(s) for s in data.segments.values()), "runs": data.runs,
                  "errors_by_type": errors_by_type, "stage_errors_by_stage": stage_errors}
    index = rh.index_page(root=data.root, summary=data.summary, metadata=data.metadata, videos=listed,
                          errors=data.errors, stats=page_stats,
                          generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    with open(os.path.join(tmp, "index.html"), "w", encoding="utf-8") as f:
        f.write(index)
