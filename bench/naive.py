"""The baseline of bench/e2e.py: what a capable user writes in an afternoon with the same models.

    python -m bench.naive --manifest videos.jsonl --output OUT --codebook DICT [--threads N]

Consumes a JSONL manifest (`uri`, `video_id` per line) and a frame dictionary directory
(`codebook.npy`, as `vmm train-codebook` writes it).
Produces OUT/videos.parquet, OUT/frames.parquet, OUT/asr_segments.parquet (pyarrow) and
OUT/timings.json (per stage: wall seconds, CPU seconds, peak RSS).

One process, a plain loop, video after video:
  * decode: PyAV decodes every frame of the best video stream (default decoder settings);
  * sample: the first frame at or after each whole second is kept, as a full-size RGB array
    (`frame.to_ndarray(format="rgb24")`);
  * CLIP: `models.clip.ClipEncoder` (the pipeline's open_clip wrapper, so the weights are the same,
    random init included), one frame per call (batch size 1); the video vector is the mean of the
    frame vectors, normalised;
  * threads: CLIP (torch) and Whisper (CTranslate2) get `--threads`, by default this machine's
    cores -- the pipeline's budget too, which splits the cores over its worker threads; the loop
    makes one call at a time, so it gives each call all of them;
  * tokens: nearest dictionary entry of each frame vector, numpy brute force;
  * OCR: `rapidocr_onnxruntime.RapidOCR()` with its default settings on every kept frame at native
    resolution (BGR, as it expects);
  * ASR: faster-whisper `WhisperModel(<the pipeline's default model>, compute_type="int8")` on the
    whole file (`transcribe(path, beam_size=5, vad_filter=False)`, faster-whisper's own defaults
    otherwise: it decodes the audio itself);
  * write: three tables with pyarrow at the end.
No error handling beyond "no audio track, no ASR": a user's first version has none.

Per stage the loop accumulates wall (perf_counter) and CPU (process_time, all threads) seconds. Stages
run one after another within a video (all of its kept frames are held), so each stage's peak RSS is
read from VmHWM after resetting it (/proc/self/clear_refs) when the stage starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

STAGES = ("load", "decode", "sample", "clip", "tokens", "ocr", "asr", "write")


class StageClock:
    """Wall, CPU and peak RSS per stage, accumulated over many entries."""

    def __init__(self):
        self.wall = dict.fromkeys(STAGES, 0.0)
        self.cpu = dict.fromkeys(STAGES, 0.0)
        self.peak_kb = dict.fromkeys(STAGES, 0)
        self._stage = None

    def start(self, stage: str) -> None:
        _reset_peak()
        self._stage = stage
        self._w, self._c = time.perf_counter(), time.process_time()

    def add(self, stage: str, wall: float, cpu: float) -> None:
        self.wall[stage] += wall
        self.cpu[stage] += cpu

    def stop(self) -> None:
        self.add(self._stage, time.perf_counter() - self._w, time.process_time() - self._c)
        self.peak_kb[self._stage] = max(self.peak_kb[self._stage], _hwm_kb())
        self._stage = None


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _hwm_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def decode_one_per_second(path: str, clock: StageClock):
    """Every frame decoded; the first at or after each whole second kept at full size.

    Returns (kept [(frame_index, t, rgb)], fps, width, height, duration_s, has_audio).
    The decode and sample stages are timed apart, frame by frame.
    """
    kept = []
    clock.start("decode")
    sample_wall = sample_cpu = 0.0
    with av.open(path) as container:
        stream = container.streams.best("video")
        has_audio = bool(container.streams.audio)
        fps = float(stream.average_rate) if stream.average_rate else None
        start = stream.start_time or 0
        next_t = 0.0
        last_t = 0.0
        for i, frame in enumerate(container.decode(stream)):
            if frame.pts is not None and stream.time_base is not None:
                t = max(0.0, float((frame.pts - start) * stream.time_base))
            else:
                t = i / fps if fps else float(i)
            last_t = max(last_t, t)
            if t >= next_t:
                w0, c0 = time.perf_counter(), time.process_time()
                kept.append((i, t, frame.to_ndarray(format="rgb24")))
                sample_wall += time.perf_counter() - w0
                sample_cpu += time.process_time() - c0
                next_t = float(int(t)) + 1.0
        width, height = stream.codec_context.width, stream.codec_context.height
    clock.stop()
    # The conversions happened inside the decode loop: move their time from decode to sample.
    clock.add("decode", -sample_wall, -sample_cpu)
    clock.add("sample", sample_wall, sample_cpu)
    clock.peak_kb["sample"] = max(clock.peak_kb["sample"], clock.peak_kb["decode"])  # the same loop
    duration = last_t + (1.0 / fps if fps else 0.0)
    return kept, fps, width, height, duration, has_audio


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", required=True, help="JSONL: uri, video_id")
    parser.add_argument("--output", required=True, help="directory for the tables and timings.json")
    parser.add_argument("--codebook", required=True, help="frame dictionary directory (codebook.npy)")
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--clip-pretrained", default="none")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch and CTranslate2 threads (default: this machine's cores, %(default)s)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    clock = StageClock()
    clock.start("load")
    from faster_whisper import WhisperModel
    from rapidocr_onnxruntime import RapidOCR

    from models.asr import resolve_model
    from models.clip import ClipConfig, ClipEncoder

    clip = ClipEncoder(ClipConfig(args.clip_model, args.clip_pretrained, "cpu", threads=args.threads)).load()
    ocr = RapidOCR()
    whisper = WhisperModel(resolve_model("default")[0], device="cpu", compute_type="int8", cpu_threads=args.threads)
    centroids = np.load(os.path.join(args.codebook, "codebook.npy"), allow_pickle=False).astype(np.float32)
    clock.stop()

    with open(args.manifest) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    videos, frames, segments = [], [], []
    per_video = []
    for entry in entries:
        path, video_id = entry["uri"], entry["video_id"]
        t_video = time.perf_counter()
        kept, fps, width, height, duration, has_audio = decode_one_per_second(path, clock)

        clock.start("clip")
        embeddings = np.concatenate([clip.encode_images([img]) for _, _, img in kept])
        mean = embeddings.mean(axis=0)
        video_vec = mean / max(float(np.linalg.norm(mean)), 1e-12)
        clock.stop()

        clock.start("tokens")
        tokens = [int(np.argmin(((centroids - e) ** 2).sum(axis=1))) for e in embeddings]
        clock.stop()

        clock.start("ocr")
        ocr_lines = []
        for _, _, img in kept:
            result, _ = ocr(np.ascontiguousarray(img[:, :, ::-1]))
            ocr_lines.append([(str(text), float(score), [float(v) for xy in box for v in xy])
                              for box, text, score in (result or [])])
        clock.stop()

        clock.start("asr")
        asr_text, asr_language, segs = None, None, []
        if has_audio:
            pieces, info = whisper.transcribe(path, beam_size=5, vad_filter=False)
            segs = list(pieces)
            asr_text = " ".join(s.text.strip() for s in segs if s.text.strip())
            asr_language = info.language
        clock.stop()

        seen = []
        for lines in ocr_lines:
            for text, _, _ in lines:
                if text not in seen:
                    seen.append(text)
        videos.append({
            "video_id": video_id, "uri": path, "duration_s": duration, "fps": fps, "width": width,
            "height": height, "num_keyframes": len(kept), "embedding": video_vec.astype(np.float16),
            "ocr_text": "\n".join(seen), "asr_text": asr_text, "asr_language": asr_language,
        })
        for (index, t, _), token, lines in zip(kept, tokens, ocr_lines):
            frames.append({"video_id": video_id, "frame_index": index, "timestamp_s": t, "token": token,
                           "ocr": [{"text": a, "score": b, "box": c} for a, b, c in lines]})
        for j, s in enumerate(segs):
            segments.append({"video_id": video_id, "segment_index": j, "start_s": float(s.start),
                             "end_s": float(s.end), "text": s.text, "avg_logprob": float(s.avg_logprob),
                             "no_speech_prob": float(s.no_speech_prob)})
        per_video.append({"video_id": video_id, "seconds": time.perf_counter() - t_video,
                          "kept_frames": len(kept), "duration_s": duration})
        del kept

    clock.start("write")
    os.makedirs(args.output, exist_ok=True)
    dim = len(videos[0]["embedding"]) if videos else 512
    box = pa.list_(pa.float32(), 8)
    line = pa.struct([("text", pa.string()), ("score", pa.float32()), ("box", box)])
    schemas = {
        "videos": pa.schema([
            ("video_id", pa.string()), ("uri", pa.string()), ("duration_s", pa.float64()), ("fps", pa.float64()),
            ("width", pa.int32()), ("height", pa.int32()), ("num_keyframes", pa.int32()),
            ("embedding", pa.list_(pa.float16(), dim)), ("ocr_text", pa.string()), ("asr_text", pa.string()),
            ("asr_language", pa.string()),
        ]),
        "frames": pa.schema([
            ("video_id", pa.string()), ("frame_index", pa.int32()), ("timestamp_s", pa.float64()),
            ("token", pa.int16()), ("ocr", pa.list_(line)),
        ]),
        "asr_segments": pa.schema([
            ("video_id", pa.string()), ("segment_index", pa.int32()), ("start_s", pa.float64()),
            ("end_s", pa.float64()), ("text", pa.string()), ("avg_logprob", pa.float32()),
            ("no_speech_prob", pa.float32()),
        ]),
    }
    for name, rows in (("videos", videos), ("frames", frames), ("asr_segments", segments)):
        pq.write_table(pa.Table.from_pylist(rows, schema=schemas[name]), os.path.join(args.output, f"{name}.parquet"),
                       compression="zstd")
    clock.stop()

    total = time.perf_counter() - started
    with open(os.path.join(args.output, "timings.json"), "w") as f:
        json.dump({"wall_s": total, "stage_wall_s": clock.wall, "stage_cpu_s": clock.cpu,
                   "stage_peak_rss_mib": {k: v / 1024.0 for k, v in clock.peak_kb.items()},
                   "videos": per_video, "threads": args.threads}, f, indent=2)
    print(f"naive: {len(videos)} videos, {len(frames)} frames, {len(segments)} segments in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
