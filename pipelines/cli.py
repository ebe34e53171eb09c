"""`vmm` command line: one entry point, one sub-command per pipeline or tool.

    vmm extract --input videos.jsonl --output out/ [Beam options]
    vmm train-codebook --input videos.jsonl --output dict/ --k 8192 --level frame
    vmm make-sample --output sample/
    vmm check-weights [--clip-model M] [--clip-pretrained P]
    vmm export-clip --clip-model M --source TAG_OR_FILE --output clip.pt
    vmm report --input out/ --output report/ [--limit 200] [--video-id ID ...]
    vmm index --input out/ --output search/
    vmm search search/ --query TEXT [--query-tower tower/]
    vmm train-query-tower --index out/ --pairs clicks.parquet --output tower/
    vmm eval-query-tower --index out/ --pairs heldout.parquet [--query-tower tower/]
    vmm score --pairs pairs.parquet --index out/ --output feats/ [--query-tower tower/]

A command is one line of `COMMANDS` plus a module with `add_arguments(parser)` and
`execute(args, options)`; `pipelines.options` gives every command the same --help, refusal of
unknown arguments and one-line errors (its module doc says how to add one).
"""

from __future__ import annotations

import sys

from pipelines.options import Command, run_command, setup_logging

COMMANDS = {c.name: c for c in (
    Command("extract", "pipelines.extract", "videos -> forward index (also: python -m pipelines.extract)"),
    Command("train-codebook", "pipelines.train_codebook",
            "learn a visual dictionary from videos or an index (also: python -m pipelines.train_codebook)"),
    Command("make-sample", "pipelines.make_sample", "generate the sample videos and their manifest", beam=False),
    Command("export-clip", "pipelines.export_clip",
            "CLIP weights (a pretrained tag or a checkpoint file) -> the state dict --clip-pretrained PATH takes",
            beam=False),
    Command("report", "pipelines.report",
            "a static HTML report of an index (open report/index.html in a browser, offline)", beam=False),
    Command("check-weights", "pipelines.check_weights",
            "say whether CLIP weights can be had here (exit 0) or not (exit 1, with why)", beam=False),
    Command("index", "pipelines.index",
            "forward index -> search index: vectors, BM25, visual words (also: python -m pipelines.index)"),
    Command("search", "pipelines.search", "query a search index by text, image or video", beam=False),
    Command("train-query-tower", "pipelines.train_query_tower",
            "train the CLIP text tower against an index's locked video vectors on query/title pairs", beam=False),
    Command("eval-query-tower", "pipelines.eval_query_tower",
            "held-out text->video recall of the base text tower and a trained query tower", beam=False),
    Command("score", "pipelines.score",
            "<query, video> pair log + index -> ranking features per pair (also: python -m pipelines.score)"),
)}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS.values()]
    return ("usage: vmm COMMAND [ARGS]   (vmm COMMAND --help lists its flags)\n\ncommands:\n"
            + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        import difflib

        near = difflib.get_close_matches(argv[0], list(COMMANDS), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        print(f"vmm: unknown command {argv[0]!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    setup_logging()
    return run_command(command, argv[1:])


def console() -> None:
    """The `vmm` console script: `main` ended without interpreter teardown (see process_exit)."""
    from pipelines.process_exit import exit_process

    exit_process(main)


if __name__ == "__main__":
    console()
