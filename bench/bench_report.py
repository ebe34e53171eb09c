"""`vmm report` on N videos: time per video (split into picture decoding and the rest), size on
disk per video; and the picture decode against the simplest way to get the same frames.

    python -m bench.bench_report --index out/sample --copies 100
    python -m bench.bench_report --copies 100          # extracts the 3-video sample first (tiny CLIP)

The index of N videos is the given index's videos repeated (each copy a new video_id, same file,
same frames, OCR lines and segments) in one committed run: the report reads, decodes and writes
each copy like any other video. Naive decode: PyAV's default `container.decode(video=0)`, every
frame to a full-size RGB PIL image, the wanted frame numbers kept and shrunk with
`Image.thumbnail` -- what a user would write to fetch the frames of `frames.frame_index`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench._common import load_average, machine_line, print_table


def _sample_index(tmp: str) -> str:
    from pipelines.make_sample import make_sample

    manifest = make_sample(os.path.join(tmp, "sample"), num_videos=3, seed=0)
    out = os.path.join(tmp, "sample-index")
    subprocess.run([sys.executable, "-m", "pipelines.cli", "extract", "--input", manifest, "--output", out,
                    "--clip-model", "vmm-tiny-vit", "--clip-pretrained", "none", "--no-progress"], check=True)
    return out


def replicate(index: str, copies: int, out: str) -> int:
    """Writes an index of `copies` x the videos of `index` (one committed run); returns its videos."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from schemas.forward_index import TABLES
    from schemas.index import IndexReader

    run_id = "20260101T000000-00000000"
    reader = IndexReader(index)
    for table in TABLES:
        files = reader.files(table)
        source = pa.concat_tables([pq.read_table(p) for p in files])
        metadata = pq.read_schema(files[0]).metadata
        parts = []
        for k in range(copies if table != "errors" else 1):
            ids = pc.binary_join_element_wise(source.column("video_id"), pa.scalar(f"-c{k:03d}"), "")
            parts.append(source.set_column(source.schema.get_field_index("video_id"), "video_id", ids))
        os.makedirs(os.path.join(out, table))
        data = pa.concat_tables(parts).replace_schema_metadata(metadata)
        pq.write_table(data, os.path.join(out, table, f"part-{run_id}-00000-of-00001.parquet"))
    os.makedirs(os.path.join(out, "_runs"))
    with open(os.path.join(out, "_runs", f"{run_id}.json"), "w") as f:
        json.dump({"run_id": run_id}, f)
    if os.path.exists(os.path.join(index, "run_summary.json")):
        shutil.copy(os.path.join(index, "run_summary.json"), out)
    return pq.read_metadata(os.path.join(out, "videos", f"part-{run_id}-00000-of-00001.parquet")).num_rows


def naive_pictures(uri: str, wanted: set[int], side: int) -> int:
    import av

    kept = 0
    with av.open(uri) as container:
        for i, frame in enumerate(container.decode(video=0)):
            image = frame.to_image()
            if i in wanted:
                image.thumbnail((side, side))
                kept += 1
                if kept == len(wanted):
                    break
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=None, help="an index to report (default: extract the sample)")
    parser.add_argument("--copies", type=int, default=100 // 3 + 1, help="copies of its videos (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the decode comparison")
    args = parser.parse_args(argv)
    print(machine_line(), "| load", load_average())
    from pipelines.report import build_report, read_index
    from transforms.decode_uri import decode_uri_frames

    with tempfile.TemporaryDirectory(prefix="vmm-bench-report-") as tmp:
        index = args.index or _sample_index(tmp)
        big = os.path.join(tmp, "big")
        n = replicate(index, args.copies, big)
        folder = os.path.join(tmp, "report")
        cpu = time.process_time()
        stats = build_report(big, folder)
        cpu = time.process_time() - cpu
        print(f"\nvmm report of {n} videos ({stats.pictures} pictures): {stats.seconds:.1f} s wall, {cpu:.1f} CPU-s")
        rest = stats.seconds - stats.decode_seconds
        print_table(["", "total", "per video"], [
            ["wall s", f"{stats.seconds:.2f}", f"{stats.seconds / n:.3f}"],
            ["  pictures (decode + JPEG)", f"{stats.decode_seconds:.2f}", f"{stats.decode_seconds / n:.3f}"],
            ["  the rest (read index, HTML)", f"{rest:.2f}", f"{rest / n:.3f}"],
            ["size on disk MB", f"{stats.bytes / 1e6:.2f}", f"{stats.bytes / n / 1e3:.1f} KB"],
        ])
        data = read_index(index)
        ours_s, naive_s = [], []
        for r in range(args.rounds):
            for side in (("ours", "naive") if r % 2 == 0 else ("naive", "ours")):
                t = time.perf_counter()
                for v in data.videos:
                    wanted = {f["frame_index"] for f in data.frames.get(v["video_id"], [])}
                    if side == "ours":
                        got = len(decode_uri_frames(v["uri"], wanted, 360))
                    else:
                        got = naive_pictures(v["uri"], wanted, 360)
                    assert got == len(wanted), (side, v["video_id"], got, len(wanted))
                (ours_s if side == "ours" else naive_s).append(time.perf_counter() - t)
        o, nv = sorted(ours_s)[len(ours_s) // 2], sorted(naive_s)[len(naive_s) // 2]
        print(f"\npicture decode of the {len(data.videos)} source videos, median of {args.rounds} rounds:")
        print_table(["", "s", "ratio"], [["ours: decode_frames_at", f"{o:.3f}", "1.00"],
                                         ["naive: every frame to RGB", f"{nv:.3f}", f"{nv / o:.2f}x"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
