"""`vmm` command line: one entry point, one sub-command per pipeline or tool.

    vmm extract --input videos.jsonl --output out/ [Beam options]
    vmm train-codebook --input videos.jsonl --output dict/ --k 8192 --level frame
    vmm make-sample --output sample/
    vmm check-weights [--clip-model M] [--clip-pretrained P]
"""

from __future__ import annotations

import argparse
import logging
import sys

USAGE = """usage: vmm COMMAND [ARGS]

commands:
  extract         videos -> forward index (python -m pipelines.extract)
  train-codebook  learn a visual dictionary (python -m pipelines.train_codebook)
  make-sample     generate the sample videos and manifest (python -m pipelines.make_sample)
  check-weights   say whether CLIP weights can be had here (exit 0) or not (exit 1, with why)
"""


def check_weights(argv: list[str]) -> int:
    from models import clip

    parser = argparse.ArgumentParser(prog="vmm check-weights")
    parser.add_argument("--clip-model", default=clip.DEFAULT_MODEL)
    parser.add_argument("--clip-pretrained", default=clip.DEFAULT_PRETRAINED)
    args = parser.parse_args(argv)
    try:
        weights = clip.check_weights(clip.ClipConfig(args.clip_model, args.clip_pretrained))
    except (clip.WeightsUnavailable, ValueError) as e:
        print(str(e))
        return 1
    print(f"CLIP {args.clip_model} weights available: {weights}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "extract":
        from pipelines import extract

        return extract.main(rest)
    if command == "train-codebook":
        from pipelines import train_codebook

        return train_codebook.main(rest)
    if command == "make-sample":
        from pipelines import make_sample

        return make_sample.main(rest)
    if command == "check-weights":
        logging.basicConfig(level=logging.ERROR)
        return check_weights(rest)
    print(f"vmm: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def console() -> None:
    """The `vmm` console script: `main` ended without interpreter teardown (see process_exit)."""
    from pipelines.process_exit import exit_process

    exit_process(main)


if __name__ == "__main__":
    console()
