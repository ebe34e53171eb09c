"""`vmm check-weights`: whether the CLIP weights can be had here (exit 0) or not (exit 1, with why).

run_local.sh asks it before the quickstart, to fall back to `--clip-pretrained none` offline.
"""

from __future__ import annotations

import logging


def add_arguments(parser) -> None:
    from pipelines.options import CLIP

    CLIP.add_arguments(parser, weights_only=True)


def execute(args, options=None) -> int:
    from models import clip

    logging.getLogger("models").setLevel(logging.ERROR)  # the answer is the one line printed
    try:
        weights = clip.check_weights(clip.ClipConfig(args.clip_model, args.clip_pretrained))
    except (clip.WeightsUnavailable, ValueError) as e:
        print(str(e))
        return 1
    print(f"CLIP {args.clip_model} weights available: {weights}")
    return 0
