"""`vmm export-clip`: CLIP weights -> the plain state dict that `--clip-pretrained PATH` loads.

    vmm export-clip --clip-model ViT-B-32 --source laion2b_s34b_b79k --output clip-vit-b-32.pt

Run it where the model hub (or a file from it) can be had, then copy the output to an offline
machine or a bucket. `--source` is an open_clip pretrained tag or a checkpoint file (state dict,
training checkpoint, `.safetensors`); see `models.clip.export_checkpoint`.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    from models.clip import DEFAULT_MODEL

    parser.add_argument("--clip-model", dest="clip_model", default=DEFAULT_MODEL,
                        help="open_clip architecture of the weights (default %(default)s)")
    parser.add_argument("--source", required=True,
                        help="an open_clip pretrained tag of the model (downloaded through open_clip), or a "
                             "checkpoint file: a state dict, a training checkpoint or .safetensors")
    parser.add_argument("--output", required=True, help="the state-dict file to write (.pt)")


def execute(args, options=None) -> int:
    from models import clip

    try:
        weights = clip.export_checkpoint(args.clip_model, args.source, args.output)
    except clip.WeightsUnavailable as e:
        print(f"vmm export-clip: {e}")
        return 2
    print(f"wrote {args.output}: pass --clip-model {args.clip_model} --clip-pretrained {args.output} "
          f"(recorded as vmm.clip_weights={weights})")
    return 0
