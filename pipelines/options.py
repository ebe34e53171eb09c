"""What every `vmm` command shares: option groups, argument checking, and how a run starts or refuses.

A command is a module with two functions and one line in `pipelines.cli.COMMANDS`:

    def add_arguments(parser):        # its flags: shared groups (CLIP, DECODE, RUN, INDEX_INPUT)
        CLIP.add_arguments(parser)    #   plus its own, each with a help text
        parser.add_argument("--k", type=int, default=10, help="...")

    def execute(args, options) -> int:  # the work; exit status
        ...                             # args: the parsed vmm flags (argparse.Namespace)
                                        # options: Beam's PipelineOptions (None when beam=False)

    # pipelines/cli.py
    Command("search", "pipelines.search", "one line for `vmm --help`", beam=False),

and, optionally, `main = main_of("search")` for `python -m pipelines.search`, and for a command with a
Beam pipeline (beam=True) its PipelineOptions subclass:

    class SearchOptions(PipelineOptions):
        @classmethod
        def _add_argparse_args(cls, parser):
            add_arguments(beam_flags(parser))

`run_command(command, argv)` then gives it, like every other command:
  * `vmm NAME --help`: every vmm flag with its help and default; `--help-beam` lists Beam's options.
  * refusal before any work, one line and exit 2, of an argument that is neither a flag of the
    command nor (for Beam commands) a Beam pipeline option, naming the nearest real flag; arguments
    after a lone `--` go to the runner unchecked (a job server's own options);
  * the known reasons a run cannot start -- `models.errors.CannotStart` (a `ModelUnavailable`
    model, weights or device) and, inside `starting()`, a ValueError from building the config --
    printed as one line `vmm NAME: why`, exit 2, no traceback.

A group's `to_config(args, ...)` turns its flags into the frozen config the models take (options in,
frozen config out) and checks them, so commands do not repeat the validation.

Beam commands keep a `PipelineOptions` subclass registered with Beam (e.g. `ExtractOptions`, so that
`options.view_as(ExtractOptions)` and Beam's own parsing know the flags); it is built from the same
`add_arguments` through `beam_flags(parser)`, which adds each flag once across all commands (Beam
parses with every subclass at once) and refuses one flag name given two different meanings.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import importlib
import json
import logging
import os
import sys
from typing import Callable

from models.errors import CannotStart

BEAM_OPTIONS_HELP = ("Beam pipeline options (--runner, --direct_num_workers, --direct_running_mode, "
                     "--temp_location, ...) are accepted too: --help-beam lists them. Arguments after a "
                     "lone -- go to the runner unchecked (a job server's own options).")


class UsageError(CannotStart, ValueError):
    """A flag or argument the command does not take, or a value it cannot use."""


# ---------------------------------------------------------------------------------------------
# Parsers


class _HelpFormatter(argparse.HelpFormatter):
    """Adds each flag's default to its help unless the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if isinstance(action, _Switch) and action.default is not None:
            return f"{text} (default: {'on' if action.default else 'off'})"
        if "%(default)" in text or "default" in text.lower() or action.default in (None, argparse.SUPPRESS):
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class VmmParser(argparse.ArgumentParser):
    """A command's own parser: no abbreviations (`--max-frame` is not `--max-frames`), and errors
    raised as UsageError (one line) instead of a usage block and exit."""

    def __init__(self, prog: str, **kwargs):
        super().__init__(prog=prog, allow_abbrev=False, formatter_class=_HelpFormatter, **kwargs)

    def error(self, message):
        raise UsageError(f"{message} (`{self.prog} --help` lists the flags)")


class _Switch(argparse.Action):
    """`--name` turns a setting on, `--no-name` off."""

    def __init__(self, option_strings, dest, default=None, help=None, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no-"))

    def format_usage(self):
        return " | ".join(self.option_strings)


def switch(parser, name: str, default: bool | None, help: str, dest: str | None = None) -> None:
    """`--name` / `--no-name`, one line in --help with its default (None: decided at run time,
    the help says how)."""
    parser.add_argument(f"--{name}", f"--no-{name}", dest=dest or name.replace("-", "_"), default=default,
                        action=_Switch, help=help)


def check(condition: bool, flag: str, requirement: str, value) -> None:
    """ValueError `--flag must be <requirement>, got <value>` unless `condition`."""
    if not condition:
        raise ValueError(f"{flag} must be {requirement}, got {value}")


def weighted_names(text: str, known, flag: str, what: str) -> dict[str, float]:
    """`a:2,b` -> {"a": 2.0, "b": 1.0}: names from `known`, each once, weights > 0 (default 1).
    ValueError `<flag>: ...` saying what is wrong."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        if name not in known:
            raise ValueError(f"{flag}: unknown {what} {name!r}; choose from {', '.join(known)}")
        if name in out:
            raise ValueError(f"{flag}: {what} {name} is given twice")
        try:
            w = float(weight) if weight else 1.0
        except ValueError as e:
            raise ValueError(f"{flag}: weight of {name} must be a number, got {weight!r}") from e
        if not w > 0:
            raise ValueError(f"{flag}: weight of {name} must be positive, got {w}")
        out[name] = w
    if not out:
        raise ValueError(f"{flag} names no {what}")
    return out


class _OnceParser:
    """Beam's parser as `add_arguments` sees it: Beam parses every PipelineOptions subclass into one
    parser, so a flag two vmm commands share (`--clip-model`) is added by the first only. Groups are
    flattened (Beam prints no help of ours). A flag given two meanings (type, choices, action) is a
    bug and fails here, on the first parse."""

    def __init__(self, parser: argparse.ArgumentParser):
        self._parser = parser

    def add_argument_group(self, *args, **kwargs):
        return self

    def add_argument(self, *flags, **kwargs):
        # The command's own parser enforces required flags; Beam's parses every command's flags at
        # once and would demand another command's required flag.
        kwargs.pop("required", None)
        taken = [self._parser._option_string_actions[f] for f in flags if f in self._parser._option_string_actions]
        if not taken:
            return self._parser.add_argument(*flags, **kwargs)
        new = argparse.ArgumentParser(add_help=False).add_argument(*flags, **kwargs)
        old = taken[0]

        def meaning(a):
            return type(a), a.dest, a.nargs, a.const, a.type, tuple(a.choices or ())

        if meaning(old) != meaning(new):
            raise ValueError(f"vmm flag {flags[0]} is defined twice with different meanings; "
                             "give one of them another name")
        return old


def beam_flags(parser) -> _OnceParser:
    """What a command's PipelineOptions subclass passes to `add_arguments` (see the module doc)."""
    return _OnceParser(parser)


def _beam_parser():
    """Beam's own options (every registered PipelineOptions subclass but vmm's), as Beam parses them."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False, prog="Beam pipeline options",
                                 usage="vmm COMMAND [flags] [Beam pipeline options]")
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        if not cls.__module__.startswith("pipelines."):
            classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def _nearest(arg: str, *candidates: list[str]) -> str | None:
    name = arg.split("=", 1)[0]
    for flags in candidates:  # vmm's own flags first: the likeliest typo is of one of them
        match = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
        if match:
            return match[0]
    return None


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [f for a in parser._actions for f in a.option_strings if f.startswith("--")]


def _unknown(leftover: list[str], own: list[str], beam: list[str]) -> str | None:
    """One line naming each argument nobody takes, with the nearest real flag; None if all are taken."""
    parts, follows_flag = [], False
    for arg in leftover:
        if arg.startswith("-"):
            near = _nearest(arg, own, beam)
            parts.append(f"{arg.split('=', 1)[0]}" + (f" (did you mean {near}?)" if near else ""))
            follows_flag = "=" not in arg
        elif not follows_flag:
            parts.append(repr(arg))
        else:
            follows_flag = False  # the value of the unknown flag before it
    if not parts:
        return None
    return f"unknown argument{'s' if len(parts) > 1 else ''}: {', '.join(parts)}"


# ---------------------------------------------------------------------------------------------
# Running a command


@dataclasses.dataclass(frozen=True)
class Command:
    """One line of the command table: the name, the module (imported only when the command runs),
    one line for `vmm --help`, and whether it takes Beam pipeline options."""

    name: str
    module: str
    summary: str
    beam: bool = True


class _BeamHelp(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="list Beam's pipeline options and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        _beam_parser().print_help()
        parser.exit()


def command_parser(command: Command, module=None) -> VmmParser:
    module = module or importlib.import_module(command.module)
    parser = VmmParser(f"vmm {command.name}", description=command.summary,
                       usage=f"%(prog)s [flags]{' [Beam pipeline options]' if command.beam else ''}",
                       epilog=BEAM_OPTIONS_HELP if command.beam else None)
    if command.beam:
        parser.add_argument("--help-beam", action=_BeamHelp)
    module.add_arguments(parser)
    return parser


@contextlib.contextmanager
def starting():
    """Inside: building a run's config. A ValueError here is a flag or input the run cannot use
    (a CannotStart), not a bug: `run_command` prints it as one line."""
    try:
        yield
    except CannotStart:
        raise
    except ValueError as e:
        raise UsageError(str(e)) from e


def parse(command: Command, argv: list[str], module=None):
    """(vmm flags, Beam options or None). Raises UsageError for anything neither takes; --help exits."""
    argv = list(argv)
    passthrough: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, passthrough = argv[:at], argv[at + 1:]
        if not command.beam:
            raise UsageError(f"vmm {command.name} takes no runner options (after --): {' '.join(passthrough)}")
    parser = command_parser(command, module)
    # A misspelt flag is named first, even when a required one is missing because of it
    # (`vmm search DIR --querry x` is about --querry, not about --query being absent).
    _refuse_unknown(command, parser, _leftover_ignoring_required(parser, argv))
    args, leftover = parser.parse_known_args(argv)
    _refuse_unknown(command, parser, leftover)
    if not command.beam:
        return args, None
    from apache_beam.options.pipeline_options import PipelineOptions

    return args, PipelineOptions(argv + passthrough)


def _leftover_ignoring_required(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The arguments `parser` does not take, found with every flag optional; [] when the parse
    fails for another reason (a bad value), which the real parse then reports."""
    actions = [(a, a.required) for a in parser._actions]
    groups = [(g, g.required) for g in parser._mutually_exclusive_groups]
    try:
        for a, _ in actions:
            a.required = False
        for g, _ in groups:
            g.required = False
        return parser.parse_known_args(argv)[1]
    except UsageError:
        return []
    finally:
        for a, required in actions:
            a.required = required
        for g, required in groups:
            g.required = required


def _refuse_unknown(command: Command, parser: argparse.ArgumentParser, leftover: list[str]) -> None:
    """UsageError naming each argument that neither the command nor (for Beam commands) Beam takes."""
    if not leftover:
        return
    beam_flags: list[str] = []
    unknown = leftover
    if command.beam:
        beam = _beam_parser()

        def refuse(message):
            raise UsageError(f"{message} (--help-beam lists Beam's options)")

        beam.error = refuse
        _, unknown = beam.parse_known_args(leftover)
        beam_flags = _flags(beam)
    problem = _unknown(unknown, _flags(parser), beam_flags)
    if problem:
        raise UsageError(f"{problem} (`vmm {command.name} --help` lists the flags)")


def run_command(command: Command, argv: list[str]) -> int:
    """Parses `argv` for `command` and runs it; a run that cannot start is one line on stderr and
    exit 2 (see the module doc). --help prints and returns 0."""
    module = importlib.import_module(command.module)
    try:
        args, options = parse(command, argv, module)
        return module.execute(args, options)
    except SystemExit as stop:  # --help, --help-beam
        return stop.code if isinstance(stop.code, int) else 0
    except CannotStart as e:
        print(f"vmm {command.name}: {e}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------
# Option groups: each adds its flags and turns them into a frozen config (`to_config`).

_DIRECT_RUNNERS = (None, "DirectRunner", "direct", "BundleBasedDirectRunner", "SwitchingDirectRunner")
# Names that mean Beam's DirectRunner, which in Beam 2.77 first tries Prism (Beam's Go runner: with a
# binary in Beam's cache, or one it can download, the run moves there) and only then its in-process
# runner. vmm runs these on the in-process runner, always (`new_pipeline`).
_SWITCHING_DIRECT = (None, "directrunner", "direct", "switchingdirectrunner")

# Runners that run vmm's pipelines but lose their data: refused before any work, with the reason.
REFUSED_RUNNERS = {
    "daskrunner": (
        "DaskRunner loses data on vmm's pipelines: it drops outputs emitted in finish_bundle (RunInference "
        "and BatchElements lose their last batch), does not separate tagged outputs (with_outputs, "
        "Partition), writes Parquet files empty and runs only the last of several sinks (measured with "
        "Beam 2.77). Use DirectRunner on one machine, or Flink, Spark or Dataflow (README: Running on a "
        "cluster)"),
}


def runner_key(runner) -> str | None:
    """`--runner` as a lower-case class name ('apache_beam.runners.dask.dask_runner.DaskRunner',
    'dask', 'DaskRunner' -> 'daskrunner'); None when not given."""
    if runner is None:
        return None
    if not isinstance(runner, str):
        runner = type(runner).__name__
    name = runner.rsplit(".", 1)[-1].lower()
    return name if name.endswith("runner") or name == "direct" else name + "runner"


def check_runner(options) -> None:
    """UsageError when `--runner` is one that loses vmm's data (REFUSED_RUNNERS)."""
    from apache_beam.options.pipeline_options import StandardOptions

    key = runner_key(options.view_as(StandardOptions).runner)
    if key in REFUSED_RUNNERS:
        raise UsageError(f"--runner {options.view_as(StandardOptions).runner}: {REFUSED_RUNNERS[key]}")


def new_pipeline(options):
    """`beam.Pipeline(options=options)`, except that DirectRunner is Beam's in-process runner
    (FnApiRunner, built as DirectRunner builds it) and never Prism: the direct_running_mode and
    direct_num_workers that RunConfig splits the cores by, and the models preloaded into this
    process for in-process workers, are that runner's; and its in-process gRPC workers flush their
    outputs by size (`size_flushed`: Beam's timer flush loses data). Refused runners raise UsageError."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions

    check_runner(options)
    standard = options.view_as(StandardOptions)
    if runner_key(standard.runner) not in _SWITCHING_DIRECT or standard.streaming:
        return beam.Pipeline(options=options)
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    class SizeFlushedRunner(fn_runner.FnApiRunner):
        """Beam's in-process runner, its embedded gRPC workers flushing by size (`size_flushed`)."""

        def run_via_runner_api(self, pipeline_proto, options):
            size_flushed(pipeline_proto.components.environments)
            return super().run_via_runner_api(pipeline_proto, options)

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return beam.Pipeline(runner=SizeFlushedRunner(provision_info=provision), options=options)


def size_flushed(environments) -> None:
    """Makes Beam's embedded gRPC workers (DirectRunner multi_threading) flush their outputs by size
    only, like every portable SDK worker (`environments`: a pipeline proto's, changed in place).

    Beam gives those workers a timer thread that flushes each output stream every second
    (data_plane.TimeBasedBufferingClosableOutputStream): it takes the buffer, hands it on and then
    clears it, while the bundle's thread keeps writing into the same buffer without a lock.
    Whatever a bundle wrote in between is dropped without an error; on a loaded machine the timer
    thread loses the CPU there, and `vmm score` lost a block of hundreds of consecutive pairs. Every
    pipeline is exposed (extract, index, train-codebook, score). A time limit <= 0 gives the
    size-flushed stream, whose flushes run on the writing thread itself."""
    from apache_beam.portability import python_urns

    for env in environments.values():
        if env.urn == python_urns.EMBEDDED_PYTHON_GRPC:
            config = json.loads(env.payload or b"{}")
            config["data_buffer_time_limit_ms"] = -1  # not 0: Beam's handler reads 0 as "its default, 1 s"
            env.payload = json.dumps(config).encode("utf-8")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where the workers of a run are and how many threads each model may use."""

    local_workers: int  # worker processes sharing this machine's cores (0: not DirectRunner)
    worker_threads: int  # worker threads sharing one process's models (multi_threading), else 1
    in_process: bool  # the DoFns run in this process (DirectRunner in_memory / multi_threading)
    on_this_machine: bool  # the models run on this machine (DirectRunner, or a LOOPBACK environment)
    threads: int  # threads per model call (torch, ONNX Runtime, CTranslate2); 0: the runtime's default
    progress: bool
    plugins: tuple[str, ...] = ()  # --beam_plugins: imported by decode children too


class RunGroup:
    title = "run"

    def add_arguments(self, parser) -> None:
        group = parser.add_argument_group(self.title)
        group.add_argument("--torch-threads", dest="torch_threads", type=int, default=0,
                           help="threads per model call (torch, ONNX Runtime, CTranslate2); 0: this machine's "
                                "cores / (local worker processes x worker threads)")
        switch(group, "progress", None, "progress bar (default: when stderr is a terminal and the run is local)")

    def to_config(self, args, options) -> RunConfig:
        from apache_beam.options.pipeline_options import (
            DirectOptions, PortableOptions, SetupOptions, StandardOptions)

        check_runner(options)
        mode, workers = None, 0
        if options.view_as(StandardOptions).runner in _DIRECT_RUNNERS:
            direct = options.view_as(DirectOptions)
            mode = direct.direct_running_mode
            workers = direct.direct_num_workers or 1
            workers = workers if workers > 0 else os.cpu_count() or 1
        local_workers = 0 if mode is None else workers if mode == "multi_processing" else 1
        worker_threads = workers if mode == "multi_threading" else 1
        # Threads per model: the cores split over the callers that run models at once (worker
        # processes x worker threads): a second thread makes one call only ~1.5x faster for twice the
        # CPU, which pays only while the other callers idle (bench/E2E.md).
        check(args.torch_threads >= 0, "--torch-threads", ">= 0", args.torch_threads)
        callers = local_workers * worker_threads
        threads = args.torch_threads or (max(1, (os.cpu_count() or 1) // callers) if local_workers else 0)
        loopback = (options.view_as(PortableOptions).environment_type or "").upper() == "LOOPBACK"
        progress = args.progress if args.progress is not None else bool(local_workers) and sys.stderr.isatty()
        return RunConfig(
            local_workers=local_workers, worker_threads=worker_threads,
            in_process=mode in ("in_memory", "multi_threading"), on_this_machine=mode is not None or loopback,
            threads=threads, progress=progress,
            plugins=tuple(options.view_as(SetupOptions).beam_plugins or ()),
        )


@dataclasses.dataclass(frozen=True)
class ClipSetup:
    """The CLIP model a run uses: its config, the weights id written into outputs, and how it is called."""

    config: "ClipConfig"
    weights: str
    batch_size: int
    model_copies: int  # shared copies per machine (RunInference model_copies); 0: one per process

    @property
    def dim(self) -> int:
        from models.clip import embed_dim

        return embed_dim(self.config.model_name)

    @property
    def image_size(self) -> int:
        from models.clip import image_size

        return image_size(self.config.model_name)


class ClipGroup:
    title = "CLIP model and weights"

    def add_arguments(self, parser, weights_only: bool = False) -> None:
        """The CLIP flags; `weights_only`: just which model and weights (for a command that runs none)."""
        from models.clip import DEFAULT_MODEL, DEFAULT_PRETRAINED

        group = parser.add_argument_group(self.title)
        group.add_argument("--clip-model", dest="clip_model", default=DEFAULT_MODEL,
                           help="open_clip architecture")
        group.add_argument("--clip-pretrained", dest="clip_pretrained", default=DEFAULT_PRETRAINED,
                           help="open_clip pretrained tag, path to a local state-dict checkpoint, or 'none' "
                                "(random weights, testing only)")
        if weights_only:
            return
        group.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                           help="where the models run (auto: CUDA when available)")
        group.add_argument("--clip-batch-size", dest="clip_batch_size", type=int, default=32,
                           help="frames per CLIP call")
        group.add_argument("--clip-model-copies", dest="clip_model_copies", type=int, default=0,
                           help="hold CLIP in this many shared copies per machine (RunInference model_copies, "
                                "e.g. 1 per GPU) instead of one per worker process (0: one per process)")

    def to_config(self, args, run: RunConfig) -> ClipSetup:
        """Checks the model, the weights (`WeightsUnavailable`) and, when the models run on this
        machine, the device (`DeviceUnavailable`): a launcher without a GPU may build a job for GPU
        workers, a local run may not."""
        from models import clip as clip_models
        from models.hub import resolve_device
        from transforms.files import localize

        check(args.clip_batch_size >= 1, "--clip-batch-size", ">= 1", args.clip_batch_size)
        check(args.clip_model_copies >= 0, "--clip-model-copies", ">= 0", args.clip_model_copies)
        config = clip_models.ClipConfig(args.clip_model, args.clip_pretrained, args.device, run.threads)
        clip_models.model_info(config.model_name)  # an unknown model fails here, with the known ones
        if run.on_this_machine and args.device != "cpu":
            resolve_device(args.device)
        # Workers copy a checkpoint in a bucket themselves; the launcher copies it to learn its id.
        weights = clip_models.check_weights(dataclasses.replace(config, pretrained=localize(config.pretrained)))
        return ClipSetup(config, weights, args.clip_batch_size, args.clip_model_copies)


class DecodeGroup:
    title = "decoding and keyframes"

    def add_arguments(self, parser) -> None:
        from models.decode import DecodeConfig
        from models.keyframes import SamplingConfig

        group = parser.add_argument_group(self.title)
        group.add_argument("--max-frames", dest="max_frames", type=int, default=SamplingConfig.max_frames,
                           help="keyframes per video at most")
        group.add_argument("--scene-threshold", dest="scene_threshold", type=float,
                           default=SamplingConfig.scene_threshold,
                           help="colour-histogram distance between analysed frames that counts as a scene cut")
        group.add_argument("--clock-interval-s", dest="clock_interval_s", type=float,
                           default=SamplingConfig.clock_interval_s,
                           help="a clock keyframe after this many seconds without a keyframe")
        group.add_argument("--analysis-fps", dest="analysis_fps", type=float,
                           default=SamplingConfig.analysis_fps,
                           help="frames per second looked at for scene cuts (as 64x36 thumbnails)")
        group.add_argument("--max-duration-s", dest="max_duration_s", type=float, default=3600.0,
                           help="read at most this many seconds of each video")
        group.add_argument("--decode-timeout-s", dest="decode_timeout_s", type=float, default=900.0,
                           help="a video whose decoding takes longer is an error row 'Timeout'")
        group.add_argument("--max-pixels", dest="max_pixels", type=int, default=DecodeConfig.max_pixels,
                           help="frames with more pixels are refused as 'TooLarge'")
        switch(group, "isolate-decode", True, "decode in a child process per worker, so a decoder crash or hang "
                                              "costs one video")

    def to_config(self, args, short_side: int, **more) -> "DecodeConfig":
        """The decoder's config; `more`: the DecodeConfig fields a command sets itself (text, audio)."""
        from models.decode import DecodeConfig
        from models.keyframes import SamplingConfig

        check(args.max_frames >= 1, "--max-frames", ">= 1", args.max_frames)
        sampling = SamplingConfig(max_frames=args.max_frames, analysis_fps=args.analysis_fps,
                                  scene_threshold=args.scene_threshold, clock_interval_s=args.clock_interval_s)
        return DecodeConfig(sampling=sampling, short_side=short_side, max_duration_s=args.max_duration_s,
                            max_pixels=args.max_pixels, timeout_s=args.decode_timeout_s, **more)


@dataclasses.dataclass(frozen=True)
class IndexSource:
    """A forward index written by `vmm extract`: its committed shards and the models that wrote them."""

    path: str
    files: dict  # table -> committed shard paths
    clip_model: str
    clip_weights: str
    embedding_dim: int
    frame_embeddings: bool  # frames.embedding was stored (--store-frame-embeddings)
    metadata: dict  # every vmm.* key of the files


def read_index(path: str) -> IndexSource:
    """The committed shards of the index at `path` (any Beam filesystem) and its newest run's
    metadata (schemas.index.IndexReader). Raises UsageError when `path` holds no committed index."""
    from schemas.index import TABLES, IndexReader

    index = IndexReader(path)
    files = {t: index.files(t) for t in TABLES}
    if not files["videos"] and not files["frames"]:
        raise UsageError(f"{index.root} holds no forward index (no committed videos/ or frames/ files; "
                         "write one with vmm extract)")
    meta = index.metadata
    return IndexSource(
        path=index.root, files=files, clip_model=meta.get("vmm.clip_model", ""),
        clip_weights=meta.get("vmm.clip_weights", ""), embedding_dim=int(meta.get("vmm.embedding_dim", 0)),
        frame_embeddings=bool(files["frames"]) and all("embedding" in index.file_schema(p).names
                                                       for p in files["frames"]),
        metadata=meta,
    )


class IndexInputGroup:
    """`--index`: a forward index to read (for commands that consume what `vmm extract` wrote)."""

    title = "index input"

    def __init__(self, flag: str = "--index"):
        self.flag = flag

    def add_arguments(self, parser) -> None:
        group = parser.add_argument_group(self.title)
        group.add_argument(self.flag, dest=self.flag.lstrip("-").replace("-", "_"), required=True,
                           help="a forward index written by vmm extract (its --output: local path or URI)")

    def to_config(self, args) -> IndexSource:
        return read_index(getattr(args, self.flag.lstrip("-").replace("-", "_")))


RUN = RunGroup()
CLIP = ClipGroup()
DECODE = DecodeGroup()
INDEX_INPUT = IndexInputGroup()


def setup_logging() -> None:
    """vmm's own INFO lines only: Beam's (and, in multi-processing mode, every worker's, relayed) and
    open_clip's, which logs through the root logger, would drown them."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for package in ("pipelines", "transforms", "models", "schemas", "__main__"):
        logging.getLogger(package).setLevel(logging.INFO)


def main_of(name: str) -> Callable[[list[str] | None], int]:
    """`main(argv)` of a command module run as `python -m pipelines.NAME`: logging, then run_command."""

    def main(argv: list[str] | None = None) -> int:
        from pipelines.cli import COMMANDS

        setup_logging()
        return run_command(COMMANDS[name], sys.argv[1:] if argv is None else argv)

    return main
