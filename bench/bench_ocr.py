"""OCR: the pipeline's text resolution and read/reuse plan vs full resolution and reading more frames.

    python -m bench.bench_ocr [--quick] [--media DIR] [--sample-videos 3] [--hd-videos 2] [--only NAME]
                              [--threads N] [--repeat 1]

Frames: for each video, the frames OCR sees in the pipeline -- its CLIP keyframes plus its text frames --
come from `models.decode.decode_keyframes(path, DecodeConfig(text=TextSamplingConfig()))`, the
pipeline's own defaults (not timed). One RapidOCR engine per resolution (`models.ocr.load_engine`,
--threads intra-op threads), loaded and warmed up before any timing.

Timing: every distinct frame any side needs is read once per resolution (`engine.read`, the call the
pipeline's OCR DoFn makes per frame), in time order; a frame's 960 and full-resolution reads run back
to back, which one first alternating, so the machine's load drifts hit both alike. A side's time is
the sum of its frames' read times, so sides that share a frame share its measurement and differ only
by the frames they do not share. Each side's lines and domains then come from
`transforms.ocr.read_video` (the body of the pipeline's DoFn) through an engine that replays the lines
already read, so no frame is read twice. The domain rules and box scaling take milliseconds and are
not in the times. `--repeat N` reads each frame N times and takes the median.

Part a, resolution. The same frames (all that OCR sees, reused ones included) read
  * at 960: decoded at `text_frame_size(w, h, 960)`, as the pipeline decodes them, by an engine with
    det_max_side 960 (the pipeline's);
  * at full resolution: the same frame indices decoded at their native size, by an engine whose
    det_max_side is at least the native long side, so the detector really sees every pixel.
  Only videos whose long side exceeds 960 take part: below it the two images are the same. Text recall:
  * real media (no ground truth): the full-resolution lines are the reference; recall is the share of
    them that some line of the same frame at 960 matches;
  * generated videos: the share of the ground-truth subtitle lines (and the logo) that some line of
    the video matches. The 640x360 sample (`--sample-videos`) is under 960, so part a also renders
    `--hd-videos` videos of the same kind at 1920x1080 (`pipelines.make_sample.make_video`).
  A match: both texts lowercased and cut to letters and digits, difflib ratio >= 0.85.

Part b, read vs reused, all at 960 (so only the choice of frames differs):
  * plan: the pipeline's plan, frames whose text barely changed reuse the last read frame's lines, and
    a frame the decoder marks for it is read from its lower band down (`OcrFrame.crop_top`), timed on
    that crop;
  * every: every frame OCR sees, each one read (no reuse) -- the same reads as part a's 960 side;
  * naive: what a user would write: every CLIP keyframe plus one frame per second of video.
  Completeness: ground-truth subtitle lines found by each side on the generated videos, and the
  number of distinct subtitle lines the domain rules output (`VideoOcr.subtitle_lines`).

Sanity (exit 1 on failure): the frames decoded here for the plan's read frames must be pixel-identical
to the pipeline's, and the plan must not find fewer ground-truth subtitle lines than reading every frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
import tempfile
import time

import av
import numpy as np

from bench._common import add_input_args, input_videos, load_average, machine_line, median, print_table
from models.decode import DecodeConfig, OcrFrame, decode_keyframes
from models.ocr import DEFAULT_TEXT_MAX_SIDE, OcrConfig, load_engine, text_frame_size
from models.textframes import TextSamplingConfig
from schemas.elements import OcrInput
from transforms.ocr import read_video

MATCH_RATIO = 0.85
QUICK_MEDIA = ("smpte-2997.mp4", "counter.mp4", "chaplin.mp4", "fades.mp4")
HD_SIZE = (1920, 1080)


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def matches(a: str, b: str) -> bool:
    """Both already normalised; empty strings match nothing."""
    return bool(a) and bool(b) and (a == b or difflib.SequenceMatcher(None, a, b).ratio() >= MATCH_RATIO)


def found(truth: str, lines: list[str]) -> bool:
    t = normalise(truth)
    return any(matches(t, ln) for ln in lines)


# ---------------------------------------------------------------------------------------------
# Inputs


def hd_videos(folder: str, count: int) -> list[tuple[str, str, dict]]:
    """`count` 1920x1080 videos drawn like the sample (3 shots, subtitles, logo), no audio.

    Returns [(name, path, truth)] with truth = {"subtitles": [text], "logo": text}.
    """
    from pipelines.make_sample import LAYOUTS, LOGO_TEXT, PALETTE, SCRIPTS, ShotSpec, make_video

    colours = list(PALETTE.values())
    out = []
    for k in range(count):
        _, sentences = SCRIPTS[(k + 3) % len(SCRIPTS)]  # other sentences than the 640x360 sample's first ones
        shots = [ShotSpec(duration_s=3.0, background=colours[(3 * k + j) % len(colours)],
                          layout=LAYOUTS[(k + j) % len(LAYOUTS)], shape=("circle", "square", "diamond")[j],
                          motion=("horizontal", "vertical", "orbit")[j], speed=0.4, phase=0.1 * j)
                 for j in range(3)]
        lines = sentences[:4]
        subtitles = [(2.25 * j, 2.25 * (j + 1), text) for j, text in enumerate(lines)]
        path = os.path.join(folder, f"hd-{k:03d}.mp4")
        make_video(path, shots=shots, subtitles=subtitles, logo=LOGO_TEXT, speech_text=None, size=HD_SIZE,
                   audio=False, seed=k)
        out.append((f"sample1080/{os.path.basename(path)}", path, {"subtitles": list(lines), "logo": LOGO_TEXT}))
    return out


def sample_truth(path: str) -> dict | None:
    """Ground truth of a `make_sample` video, from the expected.json next to it."""
    import json

    expected = os.path.join(os.path.dirname(path), "expected.json")
    if not os.path.isfile(expected):
        return None
    with open(expected, encoding="utf-8") as f:
        videos = json.load(f)["videos"]
    vid = os.path.splitext(os.path.basename(path))[0]
    for v in videos:
        if v["video_id"] == vid:
            return {"subtitles": [s["text"] for s in v["subtitles"]], "logo": v["logo"]["text"]}
    return None


def _rotate(img: np.ndarray, rotation: float) -> np.ndarray:
    quarter = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(img, k=quarter)) if quarter else img


def grab_frames(path: str, text_indices: set[int], native_indices: set[int], max_side: int):
    """One decode pass over the stream the pipeline reads.

    Returns (images at text size {index: rgb}, native images {index: rgb}, {index: timestamp_s} of every
    frame). Text-size images are converted exactly as models.decode does (swscale AREA, then rotation).
    """
    text, native, times = {}, {}, {}
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.best("video") or container.streams.video[0]
        stream.thread_type = "AUTO"
        start = stream.start_time if stream.start_time is not None else 0
        fps = float(stream.average_rate) if stream.average_rate else None
        rotation = None
        size = None
        for i, frame in enumerate(container.decode(stream)):
            if rotation is None:
                rotation = frame.rotation or 0.0
            if frame.pts is not None and stream.time_base is not None:
                times[i] = max(0.0, float((frame.pts - start) * stream.time_base))
            else:
                times[i] = i / fps if fps else float(i)
            if i in text_indices:
                size = size or text_frame_size(frame.width, frame.height, max_side)
                img = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
                text[i] = _rotate(img, rotation)
            if i in native_indices:
                native[i] = _rotate(frame.to_ndarray(format="rgb24"), rotation)
    return text, native, times


def per_second(times: dict[int, float]) -> set[int]:
    """The first frame at or after each whole second: a naive one-frame-per-second sampler."""
    picked, next_s = set(), 0.0
    for i in sorted(times):
        if times[i] >= next_s:
            picked.add(i)
            next_s = float(int(times[i]) + 1)
    return picked


# ---------------------------------------------------------------------------------------------
# Sides


@dataclasses.dataclass
class Side:
    frames: int = 0  # frames the side sees
    read: int = 0  # frames OCR'd
    seconds: float = 0.0
    cpu: float = 0.0
    lines: dict = dataclasses.field(default_factory=dict)  # frame index -> [normalised text]
    subtitle_lines: int = 0  # distinct subtitle lines the domain rules output
    crops: int = 0  # reads of only a band of the frame (crop_top > 0)


class ReplayEngine:
    """Gives `read_video` the lines already read from each image (keyed by the image object), so each
    side's domain output comes from the pipeline's own code without reading a frame twice."""

    def __init__(self):
        self.lines: dict[int, list] = {}

    def read(self, image: np.ndarray, upright: bool = False) -> list:
        return self.lines[id(image)]


def time_reads(engine, replay: ReplayEngine, images: list[np.ndarray], repeat: int) -> list[tuple[float, float]]:
    """Reads each image `repeat` times; [(median wall s, median CPU s)] per image. Records its lines."""
    out = []
    for img in images:
        walls, cpus = [], []
        for _ in range(repeat):
            c0, t0 = time.process_time(), time.perf_counter()
            lines = engine.read(img)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        replay.lines[id(img)] = lines
        out.append((median(walls), median(cpus)))
    return out


def side_result(replay: ReplayEngine, video_id: str, width: int, height: int, frames: list[OcrFrame],
                times: dict[int, tuple[float, float]]) -> Side:
    """The side's figures: its frames' read times summed, its lines and domains through read_video."""
    result = read_video(replay, OcrInput(video_id, width, height, tuple(frames)))
    if result.errors:
        raise RuntimeError(f"{video_id}: OCR failed: {result.errors}")
    read = [f.frame_index for f in frames if f.image is not None]
    lines = {i: [normalise(it.text) for it in items] for i, items in result.frames if items is not None}
    return Side(len(frames), result.frames_read, sum(times[i][0] for i in read), sum(times[i][1] for i in read),
                lines, len(result.subtitle_lines), sum(1 for f in frames if f.image is not None and crop_top(f)))


_OCR_FRAME_FIELDS = {f.name for f in dataclasses.fields(OcrFrame)}


def crop_top(frame: OcrFrame) -> int:
    """Row of the text-resolution frame the pipeline's read starts at (0: the whole frame is read)."""
    return getattr(frame, "crop_top", 0)


def all_read(frames: list[tuple[int, float, str]], images: dict[int, np.ndarray]) -> list[OcrFrame]:
    """OcrFrames that each read their whole image (their own source)."""
    out = []
    for i, t, reason in frames:
        extra = {}
        if "text_size" in _OCR_FRAME_FIELDS:  # the size boxes are scaled from, when OcrFrame has it
            extra["text_size"] = (images[i].shape[1], images[i].shape[0])
        out.append(OcrFrame(i, t, reason, i, images[i], **extra))
    return out


def recall_vs_reference(ref: Side, other: Side) -> tuple[int, int]:
    """(reference lines matched by a line of the same frame in `other`, reference lines)."""
    hit = total = 0
    for i, lines in ref.lines.items():
        theirs = other.lines.get(i, [])
        for ln in lines:
            if not ln:
                continue
            total += 1
            hit += any(matches(ln, t) for t in theirs)
    return hit, total


def truth_found(truth: dict, side: Side) -> tuple[int, int, bool]:
    """(ground-truth subtitle lines found, subtitle lines, logo found), over all the side's lines."""
    every = [ln for lines in side.lines.values() for ln in lines]
    subs = sum(found(t, every) for t in truth["subtitles"])
    return subs, len(truth["subtitles"]), found(truth["logo"], every)


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(parser)
    parser.add_argument("--hd-videos", type=int, default=2,
                        help="also render this many sample-like videos at 1920x1080 for part a (default %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="OCR engine threads (default: all CPUs, as the pipeline gives one local worker)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="reads of each frame; a frame's time is their median (default %(default)s: one run)")
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(QUICK_MEDIA)}, 1 sample video and 1 HD video")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.quick:
        args.sample_videos = min(args.sample_videos, 1)
        args.hd_videos = min(args.hd_videos, 1)

    max_side = DEFAULT_TEXT_MAX_SIDE
    decode_cfg = DecodeConfig(text=TextSamplingConfig(), text_max_side=max_side)
    print(f"# bench_ocr: RapidOCR, {args.threads} threads; text frames at max side {max_side} vs native size; "
          f"plan vs every frame vs every keyframe + 1 fps; per-frame reads, repeat={args.repeat}")
    print(f"# {machine_line()}")

    with tempfile.TemporaryDirectory(prefix="vmm-bench-ocr-") as hd_dir, input_videos(args) as videos:
        videos = [(n, p, sample_truth(p) if n.startswith("sample/") else None) for n, p in videos]
        if args.quick:
            videos = [v for v in videos if v[0] in QUICK_MEDIA or v[0].startswith("sample/")]
        if args.hd_videos > 0:
            videos += hd_videos(hd_dir, args.hd_videos)

        # Decode everything first (not timed): frames, their indices, the native long side.
        prepared = []
        for name, path, truth in videos:
            try:
                decoded = decode_keyframes(path, decode_cfg)
            except Exception as e:  # a file our decoder rejects is reported, not benchmarked
                print(f"skip {name}: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            seen = [(f.frame_index, f.timestamp_s, f.reason) for f in decoded.ocr_frames]
            full_res = max(decoded.width, decoded.height) > max_side
            key_idx = {c.frame_index for c, _ in decoded.keyframes}
            _, _, times = grab_frames(path, set(), set(), max_side)
            naive_idx = sorted(key_idx | per_second(times))
            text_imgs, native_imgs, _ = grab_frames(
                path, {i for i, _, _ in seen} | set(naive_idx), {i for i, _, _ in seen} if full_res else set(),
                max_side)
            same = all(np.array_equal(f.image, text_imgs[f.frame_index][crop_top(f):]) for f in decoded.ocr_frames
                       if f.image is not None)
            naive = [(i, times[i], "naive") for i in naive_idx]
            prepared.append(dict(name=name, truth=truth, decoded=decoded, seen=seen, full_res=full_res,
                                 naive=naive, text=text_imgs, native=native_imgs, same=same))

        long_side = max((max(p["decoded"].width, p["decoded"].height) for p in prepared if p["full_res"]),
                        default=max_side)
        engines = {"960": load_engine(OcrConfig(threads=args.threads, det_max_side=max_side))}
        engines["full"] = load_engine(OcrConfig(threads=args.threads, det_max_side=max(long_side, max_side)))
        for key, engine in engines.items():  # warm-up: first-run costs of ONNX Runtime, untimed
            warm = next((p for p in prepared if key == "960" or p["full_res"]), None)
            if warm is not None:
                imgs = warm["native"] if key == "full" else warm["text"]
                engine.read(imgs[next(iter(imgs))])
        print(f"# full-resolution engine: det_max_side={max(long_side, max_side)}; "
              f"{len(prepared)} videos, load average before timing {load_average()}")

        replay = ReplayEngine()
        results = []
        for n, p in enumerate(prepared):
            d = p["decoded"]
            vid = p["name"]
            text, native = p["text"], p["native"]
            # Untimed: the first read of a new image size pays ONNX Runtime's shape set-up.
            engines["960"].read(text[p["seen"][0][0]])
            if p["full_res"]:
                engines["full"].read(native[p["seen"][0][0]])
            # Every distinct frame is read once per resolution, in time order; a frame's 960 and full
            # reads are back to back (which goes first alternates), so load drifts hit both alike.
            # A plan frame that reads only a band of its frame (crop_top > 0) is timed on that crop.
            crops = {f.frame_index: f.image for f in d.ocr_frames if f.image is not None and crop_top(f)}
            t960: dict[int, tuple[float, float]] = {}
            tfull: dict[int, tuple[float, float]] = {}
            tcrop: dict[int, tuple[float, float]] = {}
            seen_idx = {i for i, _, _ in p["seen"]}
            for k, i in enumerate(sorted(seen_idx | {i for i, _, _ in p["naive"]})):
                order = ("960", "full", "crop") if (n + k) % 2 == 0 else ("crop", "full", "960")
                for res in order:
                    if res == "960":
                        t960[i] = time_reads(engines["960"], replay, [text[i]], args.repeat)[0]
                    elif res == "full" and p["full_res"] and i in seen_idx:
                        tfull[i] = time_reads(engines["full"], replay, [native[i]], args.repeat)[0]
                    elif res == "crop" and i in crops:
                        tcrop[i] = time_reads(engines["960"], replay, [crops[i]], args.repeat)[0]
            # The plan's whole-frame reads carry the images decoded here (pixel-identical to the
            # pipeline's, checked above), so they share the 960 side's measurements.
            plan = [dataclasses.replace(f, image=text[f.frame_index])
                    if f.image is not None and not crop_top(f) else f for f in d.ocr_frames]
            out = {
                "plan": side_result(replay, vid, d.width, d.height, plan, {**t960, **tcrop}),
                "every": side_result(replay, vid, d.width, d.height, all_read(p["seen"], text), t960),
                "naive": side_result(replay, vid, d.width, d.height, all_read(p["naive"], text), t960),
            }
            if p["full_res"]:
                out["full"] = side_result(replay, vid, d.width, d.height, all_read(p["seen"], native), tfull)
            results.append(dict(p, sides=out))
            del p["text"], p["native"]
            replay.lines.clear()
            print(f"#   {vid}: " + ", ".join(f"{s} {o.read} read {o.seconds:.2f}s" for s, o in out.items()),
                  file=sys.stderr)

    failed = not all(r["same"] for r in results)
    missed_lines = []

    # ---- part a
    print("\n## a. text resolution: max side 960 vs native size (the frames OCR sees, reused ones included)\n")
    rows = []
    tot = dict(frames=0, s960=0.0, sfull=0.0, c960=0.0, cfull=0.0, hit=0, ref=0, gt960=0, gtfull=0, gtn=0)
    for r in results:
        if not r["full_res"]:
            continue
        d, e, f = r["decoded"], r["sides"]["every"], r["sides"]["full"]
        w, h = text_frame_size(d.width, d.height, max_side)
        row = [r["name"], f"{d.width}x{d.height}", f"{w}x{h}", e.frames,
               f"{e.seconds / e.frames:.3f}", f"{f.seconds / f.frames:.3f}", f"{f.seconds / e.seconds:.2f}x",
               f"{e.cpu / e.frames:.3f}", f"{f.cpu / f.frames:.3f}",
               sum(len(v) for v in f.lines.values()), sum(len(v) for v in e.lines.values())]
        tot["frames"] += e.frames
        tot["s960"] += e.seconds
        tot["sfull"] += f.seconds
        tot["c960"] += e.cpu
        tot["cfull"] += f.cpu
        if r["truth"] is None:
            hit, ref = recall_vs_reference(f, e)
            tot["hit"] += hit
            tot["ref"] += ref
            row += [f"{hit}/{ref} ({100 * hit / ref:.0f}%)" if ref else "no text", ""]
        else:
            s960, n, logo960 = truth_found(r["truth"], e)
            sfull, _, logofull = truth_found(r["truth"], f)
            tot["gt960"] += s960 + logo960
            tot["gtfull"] += sfull + logofull
            tot["gtn"] += n + 1
            row += ["", f"{s960 + logo960}/{n + 1} vs {sfull + logofull}/{n + 1}"]
        rows.append(row)
    if rows:
        ratio_a = tot["sfull"] / tot["s960"]
        recall_a = tot["hit"] / tot["ref"] if tot["ref"] else float("nan")
        rows.append(["TOTAL", "", "", tot["frames"], f"{tot['s960'] / tot['frames']:.3f}",
                     f"{tot['sfull'] / tot['frames']:.3f}", f"{ratio_a:.2f}x",
                     f"{tot['c960'] / tot['frames']:.3f}", f"{tot['cfull'] / tot['frames']:.3f}", "", "",
                     f"{tot['hit']}/{tot['ref']} ({100 * recall_a:.1f}%)" if tot["ref"] else "",
                     f"{tot['gt960']}/{tot['gtn']} vs {tot['gtfull']}/{tot['gtn']}" if tot["gtn"] else ""])
        print_table(["video", "native", "at 960", "frames", "960 s/frame", "full s/frame", "full/960",
                     "960 cpu/fr", "full cpu/fr",
                     "lines full", "lines 960", "recall vs full", "truth 960 vs full"], rows)
        print("\n# s/frame: wall seconds of engine.read per frame (median of --repeat); "
              f"CPU seconds: 960 {tot['c960']:.2f}, "
              f"full {tot['cfull']:.2f} (full/960 {tot['cfull'] / tot['c960']:.2f}x).")
        print("# recall vs full: lines read at native size that a line of the same frame at 960 matches "
              "(real media, no ground truth).")
        print("# truth: ground-truth subtitle lines + logo found anywhere in the video, at 960 vs at native size.")
        for r in results:  # the lines full resolution read and 960 did not, so a reader can judge them
            if r["full_res"] and r["truth"] is None:
                missed = sorted({ln for i, lines in r["sides"]["full"].lines.items() for ln in lines
                                 if ln and not any(matches(ln, t) for t in r["sides"]["every"].lines.get(i, []))})
                if missed:
                    missed_lines.append(f"#   {r['name']}: {', '.join(missed[:12])}" + (" ..." if len(missed) > 12 else ""))
        if missed_lines:
            print("# full-resolution lines missed at 960 (normalised):")
            print("\n".join(missed_lines))
    else:
        ratio_a, recall_a = float("nan"), float("nan")
        print("no video has a long side above 960: nothing to compare")

    # ---- part b
    print("\n## b. frames read: the pipeline's plan vs every frame OCR sees vs every keyframe + 1 fps (all at 960)\n")
    rows = []
    tb = {s: Side() for s in ("plan", "every", "naive")}
    gt = {s: [0, 0] for s in ("plan", "every", "naive")}
    for r in results:
        s = r["sides"]
        d = r["decoded"]
        truth = r["truth"]
        row = [r["name"], f"{d.duration_s:.1f}", len(d.keyframes), len(d.text_frames), s["every"].frames,
               s["plan"].read, s["plan"].crops, s["plan"].frames - s["plan"].read, s["naive"].frames,
               f"{s['plan'].seconds:.2f}", f"{s['every'].seconds:.2f}", f"{s['naive'].seconds:.2f}",
               f"{s['naive'].seconds / s['plan'].seconds:.2f}x"]
        for name in tb:
            tb[name].frames += s[name].frames
            tb[name].read += s[name].read
            tb[name].seconds += s[name].seconds
            tb[name].cpu += s[name].cpu
            tb[name].subtitle_lines += s[name].subtitle_lines
            tb[name].crops += s[name].crops
        if truth is not None:
            cells = []
            for name in ("plan", "every", "naive"):
                hit, n, _ = truth_found(truth, s[name])
                gt[name][0] += hit
                gt[name][1] += n
                cells.append(f"{hit}")
            row += ["/".join(cells) + f" of {n}", f"{s['plan'].subtitle_lines}/{s['every'].subtitle_lines}/"
                    f"{s['naive'].subtitle_lines}"]
        else:
            row += ["", f"{s['plan'].subtitle_lines}/{s['every'].subtitle_lines}/{s['naive'].subtitle_lines}"]
        rows.append(row)
    ratio_b = tb["naive"].seconds / tb["plan"].seconds
    rows.append(["TOTAL", f"{sum(r['decoded'].duration_s for r in results):.1f}",
                 sum(len(r["decoded"].keyframes) for r in results), sum(len(r["decoded"].text_frames) for r in results),
                 tb["every"].frames, tb["plan"].read, tb["plan"].crops, tb["plan"].frames - tb["plan"].read,
                 tb["naive"].frames,
                 f"{tb['plan'].seconds:.2f}", f"{tb['every'].seconds:.2f}", f"{tb['naive'].seconds:.2f}",
                 f"{ratio_b:.2f}x",
                 "/".join(str(gt[s][0]) for s in gt) + f" of {gt['plan'][1]}",
                 f"{tb['plan'].subtitle_lines}/{tb['every'].subtitle_lines}/{tb['naive'].subtitle_lines}"])
    print_table(["video", "dur s", "kf", "text", "seen", "read", "of which band", "reused", "naive fr", "plan s",
                 "every s", "naive s", "naive/plan", "truth subs p/e/n", "subtitle out p/e/n"], rows)
    print("\n# seen: keyframes + text frames (what OCR sees); read/reused: the plan's split; of which band: reads of "
          "only the lower band of a frame (when the decoder plans them).")
    print(f"# naive fr: keyframes + first frame of each second. s: wall seconds, sum of the side's frame reads. "
          f"every/plan {tb['every'].seconds / tb['plan'].seconds:.2f}x.")
    print(f"# CPU seconds: plan {tb['plan'].cpu:.2f}, every {tb['every'].cpu:.2f}, naive {tb['naive'].cpu:.2f}.")
    print("# truth subs: ground-truth subtitle lines found (any line, any frame; generated videos only); "
          "subtitle out: distinct lines the domain rules call subtitles.")
    if gt["plan"][0] < gt["every"][0]:
        failed = True
        print("# SANITY: the plan found fewer ground-truth subtitle lines than reading every frame")
    if not all(r["same"] for r in results):
        print("# SANITY: frames decoded here differ from the pipeline's: "
              + ", ".join(r["name"] for r in results if not r["same"]))
    print(f"# load average at the end: {load_average()}")
    print(f"ocr: 960px is {ratio_a:.2f}x faster than full res at {100 * recall_a:.1f}% recall; plan reads "
          f"{tb['plan'].read} of {tb['every'].frames} frames "
          f"({ratio_b:.2f}x less OCR time than every keyframe + 1 fps)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
