"""`vmm train-query-tower`: train CLIP's text tower against an index's locked video vectors (LiT).

    vmm train-query-tower --index out/ --pairs clicks.parquet --output tower/ \\
        [--views query,title] [--batch-size 4096] [--epochs 5] [--lr 1e-5] [--device cuda] [--resume]

Reads the index's `videos` vectors once (never changed) and the pairs, trains the text tower of
the index's CLIP model and weights on the views, and writes tower/ (models.query_tower): the
weights, tower.json, and log.csv / log.json per epoch. `vmm search --query-tower tower/` uses it.
"""

from __future__ import annotations

import os
import sys

from pipelines.eval_query_tower import add_data_arguments, base_weights, metrics_table
from pipelines.options import switch, weighted_names


def parse_views(spec: str) -> tuple[tuple[str, float], ...]:
    """`query,title:0.5` -> (("query", 1.0), ("title", 0.5))."""
    from models.query_tower import VIEWS

    return tuple(weighted_names(spec, VIEWS, "--views", "view").items())


def add_arguments(parser) -> None:
    from models.query_tower import TrainConfig

    d = TrainConfig()
    add_data_arguments(parser)
    parser.add_argument("--output", required=True, help="the tower folder to write")
    parser.add_argument("--views", default="query,title",
                        help="views and their loss weights: query (the pairs), title (<title, video> from the "
                             "index), ocr (the video's key subtitle/scene lines; noisy), e.g. query,title:0.5")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=d.batch_size,
                        help="pairs per view per step (in-batch negatives; the video side costs no memory)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="passes over the first view's pairs")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW, cosine decay)")
    parser.add_argument("--weight-decay", dest="weight_decay", type=float, default=d.weight_decay,
                        help="AdamW weight decay (not on gains, biases, the logit scale)")
    parser.add_argument("--warmup-steps", dest="warmup_steps", type=int, default=d.warmup_steps,
                        help="linear learning-rate warm-up steps")
    parser.add_argument("--unlocked-layers", dest="unlocked_layers", type=int, default=None,
                        help="train only the last N transformer blocks (plus the final norm and projection); "
                             "default: the whole text tower")
    parser.add_argument("--seed", type=int, default=d.seed, help="data order and held-out split")
    parser.add_argument("--patience", type=int, default=d.patience,
                        help="stop after this many epochs without a better held-out R@10 (0: never)")
    parser.add_argument("--heldout-fraction", dest="heldout_fraction", type=float, default=0.1,
                        help="without a split column: this share of the distinct queries is held out")
    parser.add_argument("--ocr-lines", dest="ocr_lines", type=int, default=d.ocr_lines,
                        help="ocr view: the video's longest distinct lines kept")
    switch(parser, "amp", False, "bfloat16 autocast on CUDA (ignored on CPU)")
    switch(parser, "progress", None, "progress bar (default: when stderr is a terminal)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --output from its "
                                                              "last epoch checkpoint (same settings and data)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished tower in --output")


def execute(args, options=None) -> int:
    from models import query_tower as qt
    from models.hub import resolve_device
    from pipelines.options import starting

    with starting():
        views = parse_views(args.views)
        config = qt.TrainConfig(
            views=views, batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps, unlocked_layers=args.unlocked_layers, seed=args.seed, device=args.device,
            amp=args.amp, patience=args.patience, heldout_fraction=args.heldout_fraction, ocr_lines=args.ocr_lines,
            threads=args.torch_threads,
            progress=args.progress if args.progress is not None else sys.stderr.isatty())
        config.check()
        resolve_device(config.device)  # CUDA asked for on a machine without it: refused before any reading
        if os.path.exists(os.path.join(args.output, qt.TOWER_JSON)) and not (args.overwrite or args.resume):
            raise qt.TowerError(f"{args.output} already holds a tower (--overwrite replaces it)")
        names = [n for n, _ in views]
        videos = qt.load_videos(args.index, columns=["title"] + (list(qt.OCR_COLUMNS) if "ocr" in names else []))
        base = base_weights(videos, args.clip_pretrained)
        pairs = qt.match_pairs(qt.read_pairs(args.pairs), videos, heldout_fraction=args.heldout_fraction,
                               seed=args.seed)
        train_views = qt.build_views(views, pairs, videos, args.ocr_lines)
        heldout = qt.HeldOut.of(pairs)
    try:
        info = qt.Trainer(config, base, videos, train_views, heldout, args.output,
                          data={"pairs": pairs.counts}).fit(resume=args.resume)
    except qt.TowerError as e:  # --resume of another run, --unlocked-layers beyond the tower's blocks
        print(f"vmm train-query-tower: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {info['training']['epochs_run']} epochs "
          f"(best {info['training']['best_epoch']}), {len(heldout)} held-out queries against {len(videos.ids)} videos")
    print(metrics_table(info["metrics"]))
    return 0


if __name__ == "__main__":
    from pipelines.options import main_of

    sys.exit(main_of("train-query-tower")())
