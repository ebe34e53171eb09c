"""`vmm eval-query-tower`: text -> video retrieval of held-out queries, base CLIP text tower vs a trained one.

    vmm eval-query-tower --index out/ --pairs heldout.parquet [--query-tower tower/] [--json]

Each held-out query (the pair file's rows; with a `split` column, its held-out rows) is ranked
against every video of the index; a query's rank is that of its best-ranked clicked video. Prints
R@1, R@5, R@10, median and mean rank per tower, side by side (models.query_tower).
"""

from __future__ import annotations

import json
import sys


def add_text_tower_arguments(parser) -> None:
    """--clip-pretrained and --device: the CLIP text tower's weights by the index's rule (models.query)
    and where it runs (train-query-tower, eval-query-tower, vmm score)."""
    parser.add_argument("--clip-pretrained", dest="clip_pretrained", default=None,
                        help="the text tower's weights: default the index's recorded tag (or none); for an "
                             "index built from a local checkpoint, its path (the file's id must match)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="where the text tower runs (auto: CUDA when available)")


def add_data_arguments(parser) -> None:
    """The flags train-query-tower and eval-query-tower share: the index, the pairs, the base weights."""
    from pipelines.options import INDEX_INPUT

    INDEX_INPUT.add_arguments(parser)
    parser.add_argument("--pairs", required=True,
                        help="pairs: .jsonl, .csv or .parquet with query, video_id and optionally clicks, "
                             "impressions (weights: clicks, or clicks / impressions) and split (heldout/val/test "
                             "rows are held out)")
    add_text_tower_arguments(parser)
    parser.add_argument("--torch-threads", dest="torch_threads", type=int, default=0,
                        help="torch threads (0: torch's default)")


def base_weights(videos, pretrained):
    """The index's CLIP model with the weights the --clip-pretrained rule allows (models.query), checked."""
    from models import clip
    from models.query import resolve_weights

    config = resolve_weights(videos.clip_model, videos.clip_weights, pretrained)
    clip.check_weights(config)
    return config


def metrics_table(columns: dict) -> str:
    """Held-out metrics of several towers, one column each."""
    keys = ("queries", "R@1", "R@5", "R@10", "median_rank", "mean_rank", "encode_s")
    names = list(columns)
    width = max(12, *(len(n) for n in names))
    lines = [f"{'':<12}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for k in keys:
        cells = [columns[n].get(k) for n in names]
        lines.append(f"{k:<12}" + "".join(f"{'-' if c is None else c:>{width + 2}}" for c in cells))
    return "\n".join(lines)


def add_arguments(parser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--query-tower", dest="query_tower", default=None,
                        help="a trained tower folder (vmm train-query-tower --output); without it, the base tower only")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=512, help="queries per text tower call")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")


def execute(args, options=None) -> int:
    import torch

    from models import query_tower as qt
    from models.hub import resolve_device
    from pipelines.options import check, starting

    with starting():
        check(args.batch_size >= 1, "--batch-size", ">= 1", args.batch_size)
        device = resolve_device(args.device)
        videos = qt.load_videos(args.index, columns=())
        base = base_weights(videos, args.clip_pretrained)
        tower = None
        if args.query_tower is not None:
            tower = qt.QueryTower(args.query_tower, videos.clip_model, videos.clip_weights, device=args.device,
                                  threads=args.torch_threads)
        table = qt.read_pairs(args.pairs)
        pairs = qt.match_pairs(table, videos, all_heldout="split" not in table.column_names)
        heldout = qt.HeldOut.of(pairs)
        if not len(heldout):
            raise qt.TowerError(f"{args.pairs} has no held-out pair on a video of the index ({pairs.counts})")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model, _, _ = qt.load_base_tower(base)
    model = model.to(device).eval()
    tokenize = qt.tokenizer(base.model_name)
    results = {"base": qt.evaluate(lambda t: qt.encode(model, tokenize, t, device, args.batch_size), heldout, videos)}
    del model
    if tower is not None:
        results["trained"] = qt.evaluate(tower.encode_texts, heldout, videos)
    if args.json:
        print(json.dumps({"pairs": pairs.counts, "videos": len(videos.ids), "metrics": results}))
    else:
        print(f"{len(heldout)} held-out queries ranked against {len(videos.ids)} videos "
              f"({pairs.counts['unknown_video']} pairs skipped: video not in the index)")
        print(metrics_table(results))
    return 0


if __name__ == "__main__":
    from pipelines.options import main_of

    sys.exit(main_of("eval-query-tower")())
