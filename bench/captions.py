"""Quick captions and slides: subtitle recall by how long a line is shown, pipeline vs naive.

    python -m bench.captions [--cache DIR] [--compare-slow]     # standalone: decode + OCR only
    python -m bench.captions --ocr-cost [--media DIR]           # OCR time on bench.e2e's --quick main set
    (bench/run.sh: bench.e2e adds both videos to its main set and prints `report_captions`)

Inputs (built once, cached under --cache/inputs, default bench/results/e2e/inputs, which git ignores;
tests/avgen.py draws them):
  * captions-40: 960x540, 25 fps, a footage-like moving background (a random colour field panning,
    blobs drifting over it) under 40 burned-in captions back to back -- white with a black outline, no
    box, centred, Chinese and English alternating -- shown 0.3 to 2.0 s each (frame-exact: a line is on
    the frames whose time is in its interval), no audio;
  * slides: 960x540 lecture slides (a title slide with speakers, e-mails and affiliation at the
    bottom, then slides of bullets reaching the lower band, with a page footer) 6 s each, and an
    espeak-ng narration. It has no captions: every line of it filed as a subtitle is a mistake.

Recall by line duration (0.3-0.5, 0.5-1, 1-1.5, > 1.5 s): a caption is found when a line of the
pipeline's `ocr_subtitle_text` (naive: any OCR line of its one frame a second) matches it: both
lowercased and cut to letters, digits and CJK characters, difflib ratio >= 0.8.

Standalone, the pipeline side is `models.decode.decode_keyframes` with the pipeline's text sampling
defaults and `transforms.ocr.read_video` (the body of the OCR DoFn); the naive side OCRs one frame a
second at the OCR engine's text resolution; `--compare-slow` adds the pipeline without quick lines
(`quick_line_s=0`, the text-frame detector before issue 23). One RapidOCR engine, one thread; OCR
seconds are the sum of `engine.read` calls (CPU time of the calling thread).

`--ocr-cost`: the price of quick lines on bench.e2e's --quick main set without the new videos
(gen-10s, gen-60s, nasa_13013, chaplin, counter): per video, the frames each side's plan reads
(with and without quick lines, `decode_keyframes` + the plan, band crops included), every distinct
read timed once (CPU time of the reading thread) in time order, the sides sharing the frames they
both read; a side's OCR time is the sum over its reads. Also the decode pass's CPU time per side (the
least of two runs), with the pass's reformatters (one swscale context per kind of conversion) and with
every conversion through the frame's own `to_ndarray` (decode before the reformatters: same pixels).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CACHE = os.path.join(REPO, "bench", "results", "e2e")
VERSION = 1  # bump when the generated content changes: cached videos are rebuilt
SIZE = (960, 540)
FPS = 25
BUCKETS = ((0.3, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, float("inf")))
MATCH = 0.8

_EN = ("run now", "go left", "not here", "watch out", "too late", "stop there", "come back", "look up",
       "wait for me", "hold on", "so good", "try again", "no way", "keep going", "turn around", "well done",
       "follow me", "get down", "see you", "be careful")
_ZH = ("快走", "我进去帮他", "你们接着善后", "空间里面", "他赢不了", "等一下", "小心后面", "太好了", "没问题",
       "他来了", "别动", "加油", "真的吗", "走吧", "好吃极了", "再见了朋友", "看这里", "马上出发", "我知道了", "一起回家")
# Shown for these many seconds, cycled: every duration bucket gets lines.
_DURATIONS = (0.32, 0.4, 0.48, 0.6, 0.72, 0.88, 1.04, 1.2, 1.4, 1.6, 2.0, 0.36, 0.44, 0.8, 1.12, 1.8)


def caption_plan() -> list[tuple[float, float, str]]:
    """(start_s, end_s, text) of 40 captions back to back from 0.6 s, zh and en alternating."""
    out, t = [], 0.6
    for k in range(40):
        text = _ZH[k // 2] if k % 2 == 0 else _EN[k // 2].capitalize()
        d = _DURATIONS[k % len(_DURATIONS)]
        out.append((round(t, 3), round(t + d, 3), text))
        t += d
    return out


SLIDES = (
    ("Video search at scale", [], ["Ada Lovelace   Alan Turing", "ada@example.org   alan@example.org",
                                   "Analytical Engine Society"]),
    ("Why visual features", ["Text is missing on many videos", "Titles can mislead the ranking",
                             "Frames show what the video is about", "Vectors cost bytes for every video",
                             "Tokens are a cheap frame summary", "Subtitles summarise the script well",
                             "Logos and watermarks are only noise"], ["Page 2"]),
    ("The forward index", ["One vector for every video", "Tokens for every keyframe",
                           "Subtitles, overlays and scene text", "The spoken transcript with times",
                           "Model ids for every column", "Written once and read by many consumers",
                           "Readable by pyarrow, pandas and Spark"], ["Page 3"]),
    ("Questions", ["Thank you for listening", "Slides and code are online"], ["Page 4"]),
)
NARRATION = ("Hello, this talk is about searching videos at a large scale.",
             "Many videos carry little text, so what the frames show matters a great deal.",
             "The index keeps one vector a video, tokens for frames, and the text on screen and spoken.",
             "Thank you. I am happy to take your questions now.")
SLIDE_S = 6.0


def _cached(cache: str, name: str) -> tuple[str, str, dict | None]:
    """(video path, truth path, truth if both are built and current, else None)."""
    folder = os.path.join(cache, "inputs")
    os.makedirs(folder, exist_ok=True)
    path, truth_path = os.path.join(folder, f"{name}.mp4"), os.path.join(folder, f"{name}.json")
    if os.path.exists(path) and os.path.exists(truth_path):
        with open(truth_path) as f:
            truth = json.load(f)
        if truth.get("version") == VERSION:
            return path, truth_path, truth
    return path, truth_path, None


def build_captions(cache: str) -> tuple[str, dict]:
    """(path, truth) of the quick-caption video; truth["captions"]: [start_s, end_s, text, shown_s]."""
    from tests.avgen import Caption, caption_video

    name = "captions-40"
    path, truth_path, truth = _cached(cache, name)
    if truth is not None:
        return path, truth
    plan = caption_plan()
    duration = plan[-1][1] + 0.6
    tmp = path + ".part.mp4"
    caption_video(tmp, [Caption(a, b, t) for a, b, t in plan], duration, size=SIZE, fps=FPS, seed=23)
    os.replace(tmp, path)

    def shown(a, b):  # frame-exact: the frames i with a <= i / FPS < b
        return sum(1 for i in range(int(duration * FPS) + 1) if a <= i / FPS < b) / FPS

    truth = {"version": VERSION, "video_id": name, "duration_s": duration,
             "subtitles": [t for _, _, t in plan], "speech_text": "",
             "captions": [[a, b, t, shown(a, b)] for a, b, t in plan]}
    with open(truth_path, "w") as f:
        json.dump(truth, f, indent=1, ensure_ascii=False)
    return path, truth


def build_slides(cache: str) -> tuple[str, dict]:
    """(path, truth) of the slide video; truth["slide_lines"]: every text line on its slides."""
    import numpy as np

    from pipelines.make_sample import AUDIO_SAMPLE_RATE, synthesize_speech
    from tests.avgen import mux_av, slide_image

    name = "slides"
    path, truth_path, truth = _cached(cache, name)
    if truth is not None:
        return path, truth
    images = [slide_image(SIZE, title, bullets, footer) for title, bullets, footer in SLIDES]
    pieces = []
    for text in NARRATION:
        speech = synthesize_speech(text)
        if speech is None:
            raise SystemExit("espeak-ng is needed for the slide video's narration (apt-get install espeak-ng)")
        slot = np.zeros(int(SLIDE_S * AUDIO_SAMPLE_RATE), np.float32)
        start = int(0.5 * AUDIO_SAMPLE_RATE)
        speech = speech[: len(slot) - start]
        slot[start : start + len(speech)] = speech
        pieces.append(slot)
    tmp = path + ".part.mp4"
    mux_av(tmp, np.concatenate(pieces), sample_rate=AUDIO_SAMPLE_RATE, size=SIZE, fps=FPS,
           frames=lambda i: images[min(int(i / FPS / SLIDE_S), len(images) - 1)])
    os.replace(tmp, path)
    truth = {"version": VERSION, "video_id": name, "duration_s": SLIDE_S * len(SLIDES), "subtitles": [],
             "speech_text": " ".join(NARRATION),
             "slide_lines": [x for title, bullets, footer in SLIDES for x in (title, *bullets, *footer)]}
    with open(truth_path, "w") as f:
        json.dump(truth, f, indent=1)
    return path, truth


def norm(text: str) -> str:
    return re.sub(r"[\W_]", "", text.lower())


def found(truth: str, lines: list[str]) -> bool:
    t = norm(truth)
    return any(difflib.SequenceMatcher(None, t, n).ratio() >= MATCH for n in (norm(x) for x in lines) if n)


def bucket_of(shown_s: float) -> int | None:
    return next((k for k, (lo, hi) in enumerate(BUCKETS) if lo - 1e-6 <= shown_s < hi - 1e-6), None)


def recall_by_bucket(captions: list, lines: list[str]) -> list[tuple[int, int]]:
    """(found, total) per duration bucket."""
    out = [[0, 0] for _ in BUCKETS]
    for _, _, text, shown in captions:
        k = bucket_of(shown)
        if k is not None:
            out[k][1] += 1
            out[k][0] += found(text, lines)
    return [tuple(x) for x in out]


def bucket_names() -> list[str]:
    return [f"{lo:g}-{hi:g} s" if hi != float("inf") else f"> {lo:g} s" for lo, hi in BUCKETS]


def caption_rows(captions: list, sides: dict[str, list[str]]) -> list[list]:
    """Table rows: per bucket, found/total for each side (sides: name -> subtitle lines)."""
    per_side = {name: recall_by_bucket(captions, lines) for name, lines in sides.items()}
    rows = []
    for k, label in enumerate(bucket_names()):
        rows.append([label] + [f"{per_side[n][k][0]}/{per_side[n][k][1]}" for n in sides])
    total = {n: (sum(f for f, _ in r), sum(t for _, t in r)) for n, r in per_side.items()}
    rows.append(["all"] + [f"{total[n][0]}/{total[n][1]}" for n in sides])
    return rows


def report_captions(inputs, out) -> bool:
    """bench.e2e's report on the caption and slide videos of its main set; True when the pipeline
    finds at least as many captions as the naive loop in every bucket and files no slide line as a
    subtitle."""
    from bench._common import print_table

    ok = True
    for vid, (_, truth) in inputs.captions.items():
        p, n = out.pipe_videos.get(vid, {}), out.naive_videos.get(vid, {})
        p_sub = [x for x in (p.get("ocr_subtitle_text") or "").split("\n") if x.strip()]
        n_any = [x for x in (n.get("ocr_text") or "").split("\n") if x.strip()]
        if "captions" in truth:
            rows = caption_rows(truth["captions"], {"pipeline": p_sub, "naive": n_any})
            print_table([f"{vid}: line shown", "pipeline (ocr_subtitle_text)", "naive (any OCR line)"], rows)
            for row in rows[:-1]:
                (pf, pt), (nf, _) = (tuple(map(int, x.split("/"))) for x in row[1:])
                ok &= pf >= nf
        if "slide_lines" in truth:
            wrong = [x for x in p_sub if any(found(t, [x]) for t in truth["slide_lines"])]
            print(f"{vid}: slide lines filed as subtitles by the pipeline: {len(wrong)} of {len(p_sub)} "
                  f"subtitle lines {wrong[:4]}")
            ok &= not wrong
    print(f"captions at equal quality in every bucket, no slide text as subtitles: {'yes' if ok else 'NO'}")
    print()
    return ok


# ---------------------------------------------------------------------------------------------
# Standalone: decode + OCR only


def _pipeline_side(path: str, engine, text_config):
    from models.decode import DecodeConfig, decode_keyframes
    from schemas.elements import OcrInput
    from transforms.ocr import read_video

    decoded = decode_keyframes(path, DecodeConfig(text=text_config))
    timed = _Timed(engine)
    result = read_video(timed, OcrInput("v", decoded.width, decoded.height, tuple(decoded.ocr_frames)))
    return list(result.subtitle_lines), list(result.scene_texts), timed.seconds, timed.calls


def _naive_side(path: str, engine):
    import av

    from models.ocr import text_frame_size

    lines, timed = [], _Timed(engine)
    with av.open(path) as container:
        stream = container.streams.video[0]
        next_t = 0.0
        for i, frame in enumerate(container.decode(stream)):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else i / FPS
            if t >= next_t:
                w, h = text_frame_size(frame.width, frame.height, 960)
                lines += [x.text for x in timed.read(frame.to_ndarray(format="rgb24", width=w, height=h))]
                next_t = float(int(t)) + 1.0
    return lines, timed.seconds, timed.calls


class _Timed:
    """An OCR engine whose reads are timed (CPU seconds of the calling thread)."""

    def __init__(self, engine):
        self._engine, self.seconds, self.calls = engine, 0.0, 0

    def read(self, image, upright=False):
        started = time.thread_time()
        try:
            return self._engine.read(image, upright)
        finally:
            self.seconds += time.thread_time() - started
            self.calls += 1


def _decode_cpu(path: str, cfg, per_frame: bool, repeat: int = 2) -> tuple[float, object]:
    """CPU seconds of the decode pass (the least of `repeat` runs) and its result. `per_frame`: every
    conversion through the frame's own `to_ndarray` (a swscale context set up per frame, as decode
    did before the pass kept one per kind of conversion): the same pixels, the old cost."""
    from models import decode as decode_mod

    best, decoded = float("inf"), None
    saved = decode_mod._Pass._array
    try:
        if per_frame:
            decode_mod._Pass._array = lambda self, frame, kind, **kwargs: frame.to_ndarray(**kwargs)
        for _ in range(repeat):
            started = time.process_time()
            decoded = decode_mod.decode_keyframes(path, decode_mod.DecodeConfig(text=cfg))
            best = min(best, time.process_time() - started)
    finally:
        decode_mod._Pass._array = saved
    return best, decoded


def ocr_cost(cache: str, media: str) -> None:
    """Prints OCR reads and seconds per main-set video, quick lines on vs off, and the decode pass's
    CPU time per side with the pass's reformatters and with per-frame conversions (module doc)."""
    from bench._common import print_table
    from bench.e2e import QUICK_MEDIA, build_generated
    from models.ocr import OcrConfig, load_engine
    from models.textframes import TextSamplingConfig

    videos = [(f"gen-{n}s", build_generated(cache, n)[0]) for n in (10, 60)]
    videos += [(os.path.splitext(f)[0], os.path.join(media, f)) for f in QUICK_MEDIA
               if os.path.exists(os.path.join(media, f))]
    engine = load_engine(OcrConfig(threads=1))
    sides = {"quick lines": TextSamplingConfig(), "slow rule only": TextSamplingConfig(quick_line_s=0)}
    rows, totals = [], {name: [0, 0.0, 0.0, 0.0] for name in sides}
    for vid, path in videos:
        plans, decode_s, per_frame_s = {}, {}, {}
        for name, cfg in sides.items():
            per_frame_s[name], _ = _decode_cpu(path, cfg, per_frame=True)
            decode_s[name], decoded = _decode_cpu(path, cfg, per_frame=False)
            plans[name] = {(f.frame_index, f.crop_top): f.image for f in decoded.ocr_frames if f.image is not None}
        took = {}
        for key in sorted(set().union(*plans.values())):
            image = next(p[key] for p in plans.values() if key in p)
            started = time.thread_time()
            engine.read(image, upright=bool(key[1]))
            took[key] = time.thread_time() - started
        row = [vid]
        for name in sides:
            secs = sum(took[k] for k in plans[name])
            totals[name][0] += len(plans[name])
            totals[name][1] += secs
            totals[name][2] += decode_s[name]
            totals[name][3] += per_frame_s[name]
            row += [len(plans[name]), f"{secs:.2f}", f"{decode_s[name]:.2f}", f"{per_frame_s[name]:.2f}"]
        rows.append(row)
    rows.append(["TOTAL"] + [x for name in sides for x in (totals[name][0], f"{totals[name][1]:.2f}",
                                                         f"{totals[name][2]:.2f}", f"{totals[name][3]:.2f}")])
    print_table(["video"] + [f"{name}: {what}" for name in sides
                             for what in ("reads", "OCR s", "decode s", "decode s, per-frame conversions")], rows)
    on, off = totals["quick lines"], totals["slow rule only"]
    print(f"OCR time with quick lines / without: {on[1] / off[1]:.3f}x")
    print(f"decode pass, quick lines / without: {on[2] / off[2]:.3f}x (per-frame conversions: {on[3] / off[3]:.3f}x); "
          f"per-frame conversions / the pass's reformatters: {on[3] / on[2]:.3f}x with quick lines, "
          f"{off[3] / off[2]:.3f}x without; quick lines now / slow rule with per-frame conversions "
          f"(before issue 23): {on[2] / off[3]:.3f}x")


def main(argv=None) -> int:
    from bench._common import machine_line, print_table
    from models.ocr import OcrConfig, load_engine
    from models.textframes import TextSamplingConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="where the inputs are built (default %(default)s)")
    parser.add_argument("--compare-slow", action="store_true",
                        help="also the pipeline without quick lines (quick_line_s=0)")
    parser.add_argument("--ocr-cost", action="store_true", help="OCR time of quick lines on bench.e2e's --quick main set")
    parser.add_argument("--media", default=os.path.normpath(os.path.join(REPO, "..", "shared", "media", "video")),
                        help="real videos for --ocr-cost (default %(default)s)")
    args = parser.parse_args(argv)
    print(f"# bench.captions; {machine_line()}; {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    if args.ocr_cost:
        ocr_cost(os.path.abspath(args.cache), args.media)
        return 0
    cap_path, cap_truth = build_captions(os.path.abspath(args.cache))
    slide_path, slide_truth = build_slides(os.path.abspath(args.cache))
    engine = load_engine(OcrConfig(threads=1))
    configs = {"pipeline": TextSamplingConfig()}
    if args.compare_slow:
        configs["pipeline, slow rule only"] = TextSamplingConfig(quick_line_s=0)
    subs, cost = {}, []
    for name, cfg in configs.items():
        sub, _, secs, calls = _pipeline_side(cap_path, engine, cfg)
        subs[name] = sub
        cost.append([name, calls, f"{secs:.1f}"])
    naive, secs, calls = _naive_side(cap_path, engine)
    subs["naive (1 fps, any line)"] = naive
    cost.append(["naive (1 fps)", calls, f"{secs:.1f}"])
    print_table(["captions-40: line shown"] + list(subs), caption_rows(cap_truth["captions"], subs))
    print_table(["captions-40 side", "OCR reads", "OCR CPU s"], cost)
    sub, scene, secs, calls = _pipeline_side(slide_path, engine, TextSamplingConfig())
    wrong = [x for x in sub if any(found(t, [x]) for t in slide_truth["slide_lines"])]
    seen = sum(found(t, scene) for t in slide_truth["slide_lines"])
    print(f"slides: {len(wrong)} slide lines filed as subtitles {wrong[:4]}; {seen}/{len(slide_truth['slide_lines'])} "
          f"slide lines in ocr_scene_text; {calls} OCR reads, {secs:.1f} CPU s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
