"""The command line every vmm command shares (pipelines/options.py, pipelines/cli.py): --help, refusal
of unknown arguments before any work, one-line errors, and what a run prints and commits."""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

import pytest

from models.decode import DecodeConfig, decode_keyframes
from pipelines import cli, options
from tests.conftest import REPO, TINY_MODEL, watch_timer_flushes


def _vmm(*argv, cwd=REPO, timeout=600):
    """`vmm ARGV` as a user runs it (a fresh process: what it prints is all there is)."""
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("argv", [
    ["-m", "pipelines.cli", "extract", "--help"],
    ["-m", "pipelines.extract", "--help"],
    ["-m", "pipelines.cli", "train-codebook", "--help"],
    ["-m", "pipelines.train_codebook", "--help"],
])
def test_help_lists_every_flag_with_its_default(argv):
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    name = "extract" if "extract" in " ".join(argv) else "train-codebook"
    parser = options.command_parser(cli.COMMANDS[name])
    flags = [f for a in parser._actions for f in a.option_strings]
    assert len(flags) > 20
    for flag in flags:
        assert flag in text, flag
    for action in parser._actions:  # every flag explains itself
        assert action.help, action.option_strings
    assert "--max-frames MAX_FRAMES keyframes per video at most (default: 32)" in text
    assert "--clip-pretrained CLIP_PRETRAINED" in text and "(default: laion2b_s34b_b79k)" in text
    assert "--isolate-decode, --no-isolate-decode" in text and "(default: on)" in text
    assert "--help-beam" in text  # Beam's own options are one flag away


def test_help_beam_lists_beams_options():
    proc = _vmm("extract", "--help-beam")
    assert proc.returncode == 0
    for flag in ("--runner", "--direct_num_workers", "--temp_location", "--sdk_container_image"):
        assert flag in proc.stdout


def test_vmm_help_lists_the_command_table():
    proc = _vmm("--help")
    assert proc.returncode == 0
    for name in cli.COMMANDS:
        assert name in proc.stdout
    proc = _vmm("extrct")
    assert proc.returncode == 2 and "did you mean extract?" in proc.stderr


@pytest.mark.parametrize("bad, named, nearest", [
    (["--max-frame", "4", "--no-ocrr"], ["--max-frame", "--no-ocrr"], ["--max-frames", "--no-ocr"]),
    (["--clip-pretrianed", "none"], ["--clip-pretrianed"], ["--clip-pretrained"]),
    (["--direct-num-workers", "2"], ["--direct-num-workers"], ["--direct_num_workers"]),  # a Beam option
    (["videos.jsonl"], ["'videos.jsonl'"], []),
])
def test_unknown_arguments_are_refused_before_any_work(tmp_path, sample, bad, named, nearest):
    out = tmp_path / "out"
    proc = _vmm("extract", "--input", sample["manifest"], "--output", str(out), "--clip-model", TINY_MODEL,
                "--clip-pretrained", "none", "--no-progress", *bad)
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert line.startswith("vmm extract: unknown argument"), line
    for arg in named:
        assert arg in line
    for flag in nearest:
        assert f"did you mean {flag}?" in line
    assert not out.exists()  # nothing was written: refused before the run


def test_beam_options_and_runner_passthrough_are_accepted(sample, tmp_path):
    command = cli.COMMANDS["extract"]
    args, beam_options = options.parse(command, [
        "--input", sample["manifest"], "--output", str(tmp_path), "--max-frames", "4", "--no-ocr",
        "--runner", "DirectRunner", "--direct_num_workers=2", "--direct_running_mode", "multi_threading",
        "--", "--a_job_server_option", "1"])
    assert (args.max_frames, args.ocr) == (4, False)
    all_options = beam_options.get_all_options(retain_unknown_options=True)
    assert all_options["direct_num_workers"] == 2 and all_options["direct_running_mode"] == "multi_threading"
    assert all_options["a_job_server_option"] == "1"  # after --: the runner's, unchecked
    from pipelines.extract import ExtractOptions

    assert beam_options.view_as(ExtractOptions).max_frames == 4


def test_every_command_refuses_unknown_flags_and_has_help(tmp_path):
    nearest = {"make-sample": ("--seeds", "--seed"), "report": ("--limt", "--limit"), "index": ("--shard", "--shards"),
               "search": ("--quer", "--query"), "train-query-tower": ("--epoch", "--epochs"),
               "eval-query-tower": ("--query-towr", "--query-tower"), "score": ("--pair", "--pairs")}
    required = {"make-sample": ["--output", str(tmp_path)], "export-clip": ["--source", "x", "--output", str(tmp_path)],
                "report": ["--input", str(tmp_path), "--output", str(tmp_path)],
                "index": ["--input", str(tmp_path), "--output", str(tmp_path)], "search": ["--like", "v"]}
    for name, command in cli.COMMANDS.items():
        bad, near = nearest.get(name, ("--clip-modle", "--clip-model"))
        with pytest.raises(options.UsageError, match=f"unknown argument: {bad} .did you mean {near}"):
            options.parse(command, [bad, "x"] + required.get(name, []))
        assert options.run_command(command, ["--help"]) == 0
    proc = _vmm("make-sample", "--output", str(tmp_path / "s"), "--num-video", "1")
    assert proc.returncode == 2 and "did you mean --num-videos?" in _one_line(proc.stderr)
    assert not (tmp_path / "s").exists()
    # Without the required flags too: the misspelt flag is what is named, not the one it hides.
    for name, (bad, near) in {**nearest, "extract": ("--inptu", "--input"), "export-clip": ("--sorce", "--source")}.items():
        with pytest.raises(options.UsageError, match=f"unknown argument: {bad} .did you mean {near}"):
            options.parse(cli.COMMANDS[name], [bad, "x"])


def test_a_flag_with_two_meanings_is_refused():
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = options.beam_flags(_BeamArgumentParser())
    parser.add_argument("--k", type=int, default=8192)
    parser.add_argument("--k", type=int, default=10)  # same meaning, other default: one flag
    with pytest.raises(ValueError, match="--k is defined twice"):
        parser.add_argument("--k", default="10")


def test_cuda_without_cuda_is_one_line_at_construction(sample, tmp_path):
    import torch

    out = tmp_path / "out"
    proc = _vmm("extract", "--input", sample["manifest"], "--output", str(out), "--clip-model", TINY_MODEL,
                "--clip-pretrained", "none", "--no-ocr", "--no-asr", "--no-progress", "--device", "cuda",
                "--overwrite")
    if torch.cuda.is_available():
        assert proc.returncode == 0, proc.stderr[-3000:]
        return
    assert proc.returncode == 2
    line = [line for line in proc.stderr.splitlines() if "vmm extract:" in line]
    assert line == ["vmm extract: --device cuda: CUDA is not available on this machine; "
                    "pass --device cpu (or auto: CUDA when there is one)"], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize("make_input, says", [
    (lambda d: str(d / "no-such-dir") + "/", "does not exist"),
    (lambda d: str(d / "no-such-dir"), "does not exist"),
    (lambda d: str(d / "missing.jsonl"), "does not exist"),
])
def test_a_run_that_cannot_start_says_why_once(tmp_path, make_input, says):
    proc = _vmm("extract", "--input", make_input(tmp_path), "--output", str(tmp_path / "out"),
                "--clip-model", TINY_MODEL, "--clip-pretrained", "none")
    assert proc.returncode == 2
    line = _one_line(proc.stderr)  # not a log line and then the same again
    assert line.startswith("vmm extract: ") and says in line, line


def test_empty_directory_input_holds_no_videos(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = _vmm("extract", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "out"),
                "--clip-model", TINY_MODEL, "--clip-pretrained", "none")
    assert proc.returncode == 2 and "holds no video files" in _one_line(proc.stderr)


def _keyframes(sample) -> int:
    """Keyframes the sample's videos give with the default sampling, counted by the decoder itself."""
    config = DecodeConfig(short_side=32)
    return sum(len(decode_keyframes(v["uri"], config).keyframes) for v in sample["expected"]["videos"])


def test_train_codebook_with_too_large_k_says_the_largest_k_alone(sample, tiny_checkpoint, tmp_path):
    proc = _vmm("train-codebook", "--input", sample["manifest"], "--output", str(tmp_path / "dict"), "--k", "64",
                "--min-points-per-centroid", "2", "--clip-model", TINY_MODEL, "--clip-pretrained", tiny_checkpoint,
                "--no-progress")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    refusals = [line for line in proc.stderr.splitlines() if line.startswith("vmm train-codebook:")]
    n = _keyframes(sample)
    assert refusals == [
        f"vmm train-codebook: --k 64 needs at least 64 x --min-points-per-centroid 2 = 128 training vectors, "
        f"the input gave {n}: the largest K the data supports is {n // 2} (or lower --min-points-per-centroid)"
    ], proc.stderr[-3000:]
    assert not (tmp_path / "dict" / "codebook.json").exists()


def test_resume_with_nothing_new_commits_nothing_and_says_so(sample, tiny_checkpoint, tmp_path):
    manifest = tmp_path / "one.jsonl"
    video = sample["expected"]["videos"][0]
    manifest.write_text(json.dumps({"uri": video["uri"], "video_id": "v0"}) + "\n")
    out = tmp_path / "out"
    flags = ["--input", str(manifest), "--output", str(out), "--clip-model", TINY_MODEL,
             "--clip-pretrained", tiny_checkpoint, "--no-ocr", "--no-asr", "--no-progress"]
    first = _vmm("extract", *flags)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "this run: 1 new videos, 0 new errors" in first.stdout
    # What a user reads on stderr: nothing that contradicts the run (the checkpoint was loaded).
    assert "No pretrained weights loaded" not in first.stderr
    assert "Resource module is not available" not in first.stderr
    assert f"loaded CLIP {TINY_MODEL} from {tiny_checkpoint}" in first.stderr
    files = {t: sorted(glob.glob(str(out / t / "*.parquet"))) for t in ("videos", "frames", "errors", "asr_segments")}
    assert all(len(f) == 1 for f in files.values()), files  # every table readable, the empty ones too

    again = _vmm("extract", *flags, "--skip-existing")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "this run: 0 new videos, 0 new errors (1 entries were already in the index)" in again.stdout
    assert {t: sorted(glob.glob(str(out / t / "*.parquet"))) for t in files} == files  # no empty shards
    assert len(os.listdir(out / "_runs")) == 2
    assert not (out / "_staging").exists()  # nothing left behind after the commit
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["new"] == {"videos": 0, "frames": 0, "asr_segments": 0, "errors": 0}
    assert summary["counts"]["videos"] == 1 and summary["accounting_ok"]


def test_switches_parse_both_ways():
    parser = options.VmmParser("vmm test")
    options.switch(parser, "ocr", True, "OCR")
    assert parser.parse_args([]).ocr is True
    assert parser.parse_args(["--no-ocr"]).ocr is False
    assert parser.parse_args(["--no-ocr", "--ocr"]).ocr is True
    with pytest.raises(options.UsageError, match="ignored explicit argument|expected"):
        parser.parse_args(["--ocr=1"])
    assert isinstance(parser, argparse.ArgumentParser)


@pytest.mark.parametrize("fixed", [True, False])
def test_local_pipelines_lose_no_output_to_beams_timer_flush(monkeypatch, fixed):
    """Every command's DirectRunner pipeline comes from `options.new_pipeline`. In multi_threading
    mode Beam's in-process gRPC workers flush each output stream from a timer thread that takes the
    buffer and then clears it, unlocked against the bundle writing into it: what the bundle writes
    in between is lost (vmm score lost hundreds of pairs on a loaded machine). Here the timer, where
    a worker has one, fires every 20 ms and watches the stream for 20 ms instead of flushing,
    counting the windows in which a bundle wrote. new_pipeline's workers must have no timer; the
    plain runner (fixed=False) shows the check can fail."""
    import time

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    raced = watch_timer_flushes(monkeypatch, 20)
    opts = PipelineOptions(["--runner", "DirectRunner", "--direct_num_workers", "2",
                            "--direct_running_mode", "multi_threading"])
    n = 200_000
    p = options.new_pipeline(opts) if fixed else beam.Pipeline(options=opts)

    def slow_square(x):
        if x % 20_000 == 0:
            time.sleep(0.05)  # a bundle long enough to meet the timer several times
        return x * x

    squares = (p | beam.Create(range(n), reshuffle=False) | beam.Map(slow_square)
               | beam.combiners.Count.Globally())
    assert_that(squares, equal_to([n]))
    p.run().wait_until_finish()
    if fixed:
        assert not raced, f"{len(raced)} timer flushes while a bundle wrote {sum(raced)} bytes"
    else:
        assert raced, "the plain runner's workers never met their timer: this test cannot see the race"
