"""Query tower benchmark (issue 20): what training and using `vmm train-query-tower` costs on this machine.

    python -m bench.bench_tower                 # every case below (ViT-B-32 cases take minutes on 2 cores)
    python -m bench.bench_tower --quick         # the tiny config only
    python -m bench.bench_tower --json out.json

Cases, each in a fresh child process (so its peak RSS is its own):
  * train: `Trainer.fit` on the query view for a few steps (no held-out evaluation), for the tiny
    test config (`vmm-tiny-text`) and ViT-B-32's text tower, at several batch sizes: pairs per
    second over the training steps (`pairs_per_s` of the epoch log), seconds per step, and the
    process's peak RSS (the weights come from a checkpoint file: random, seeded; speed and memory
    do not depend on the values);
  * index size: the same steps against 10k and 1M video vectors, alternating: the video side is a
    gather of the batch's rows, so the step time should not move (held-out evaluation, which ranks
    against every video, is the part that grows with the index; it runs once per epoch);
  * step context: one forward + backward step run up to the batch's last end-of-text token vs
    over the whole 77-token context (open_clip's call), same tower, same batch;
  * encode: the time to embed a held-out query set with the text tower, as `vmm eval-query-tower`
    and the end of training do (models.query_tower.encode: the causal tower run up to the batch's
    last end-of-text token), against open_clip's own call over the whole 77-token context.
Queries come from bench/tower_world.py (two or three common words each, like search queries).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench._common import load_average, print_table

TINY = "vmm-tiny-text"
BIG = "ViT-B-32"


def _checkpoint(model: str, folder: str) -> str:
    """A seeded random checkpoint of `model` (a state dict), as --clip-pretrained PATH takes."""
    import torch

    from models import clip

    path = os.path.join(folder, f"{model}-random.pt")
    if not os.path.exists(path):
        torch.save(clip.random_model(model).state_dict(), path)
    return path


def _data(model: str, pairs: int, videos: int, seed: int = 0):
    """(VideoVectors with `videos` rows, query View of `pairs` pairs on the first rows, queries)."""
    from bench.tower_world import make_world
    from models import clip
    from models import query_tower as qt

    dim = clip.embed_dim(model)
    world = make_world(n_videos=min(700, videos), dim=dim, seed=seed, queries_per_pair=4)
    texts = [q for q, _ in world.train + world.heldout]
    vids = [v for _, v in world.train + world.heldout]
    rng = np.random.default_rng(seed)
    take = rng.integers(0, len(texts), pairs)
    vectors = world.vectors
    if videos > len(world.ids):
        extra = rng.standard_normal((videos - len(world.ids), dim)).astype(np.float32)
        vectors = np.concatenate([vectors, extra / np.linalg.norm(extra, axis=1, keepdims=True)])
    ids = tuple(world.ids) + tuple(f"x{i:08d}" for i in range(videos - len(world.ids)))
    vectors = np.ascontiguousarray(vectors, np.float32)
    vectors.setflags(write=False)
    vv = qt.VideoVectors("memory", (), model, "bench", ids, vectors, {"title": [None] * len(ids)}, "bench")
    row = vv.row
    p = qt.Pairs(tuple(texts[i] for i in take), np.asarray([row[vids[i]] for i in take], np.int64),
                 np.ones(pairs), np.zeros(pairs, bool), {})
    return vv, qt.build_views((("query", 1.0),), p, vv), texts


def case_train(model: str, batch: int, steps: int, videos: int, folder: str, epochs: int = 3) -> dict:
    """`epochs` epochs of `steps` steps; the fastest epoch is reported (the machine is shared: the
    fastest is the one least slowed by other processes), with the median."""
    from models import clip
    from models import query_tower as qt

    base = clip.ClipConfig(model, _checkpoint(model, folder))
    vv, views, _ = _data(model, batch * steps, videos)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    config = qt.TrainConfig(views=(("query", 1.0),), batch_size=batch, epochs=epochs, lr=1e-5, patience=0)
    started = time.perf_counter()
    info = qt.Trainer(config, base, vv, views, qt.HeldOut((), ()), os.path.join(folder, "out")).fit()
    wall = time.perf_counter() - started
    log = json.load(open(os.path.join(folder, "out", qt.LOG_JSON)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fastest = max(log, key=lambda r: r["pairs_per_s"])
    return {"case": "train", "model": model, "batch": batch, "steps": steps, "epochs": epochs, "videos": videos,
            "pairs_per_s": fastest["pairs_per_s"], "step_s": round(fastest["train_s"] / steps, 3),
            "median_pairs_per_s": float(np.median([r["pairs_per_s"] for r in log])),
            "fit_wall_s": round(wall, 1), "peak_rss_mib": round(peak), "rss_before_fit_mib": round(rss0),
            "trainable_parameters": info["training"]["trainable_parameters"]}


def case_index_size(model: str, batch: int, steps: int, sizes: list, folder: str, rounds: int = 3) -> dict:
    """The same training steps against indexes of each size, alternating (so the machine's other
    load falls on every size alike); the fastest round of each size is reported."""
    from models import clip
    from models import query_tower as qt

    base = clip.ClipConfig(model, _checkpoint(model, folder))
    data = {n: _data(model, batch * steps, n) for n in sizes}
    best: dict = {n: float("inf") for n in sizes}
    config = qt.TrainConfig(views=(("query", 1.0),), batch_size=batch, epochs=1, lr=1e-5, patience=0)
    for _ in range(rounds):
        for n in sizes:
            vv, views, _ = data[n]
            qt.Trainer(config, base, vv, views, qt.HeldOut((), ()), os.path.join(folder, "out")).fit()
            log = json.load(open(os.path.join(folder, "out", qt.LOG_JSON)))[0]
            best[n] = min(best[n], log["train_s"] / steps)
    return {"case": "index_size", "model": model, "batch": batch, "steps": steps, "rounds": rounds,
            "step_s": {str(n): round(best[n], 3) for n in sizes},
            "ratio_largest_to_smallest": round(best[max(sizes)] / best[min(sizes)], 3)}


def case_encode(model: str, queries: int, folder: str, rounds: int = 2) -> dict:
    import torch

    from models import clip
    from models import query_tower as qt

    tower, _, _ = qt.load_base_tower(clip.ClipConfig(model, _checkpoint(model, folder)))
    tower.eval()
    tokenize = qt.tokenizer(model)
    _, _, texts = _data(model, 1, 1)
    texts = (texts * (queries // len(texts) + 1))[:queries]

    def full_context(batch):  # open_clip's call: the whole context for every query
        with torch.no_grad():
            return torch.nn.functional.normalize(tower(tokenize(batch)), dim=-1).numpy()

    sides = {"ours": lambda: qt.encode(tower, tokenize, texts, batch_size=512),
             "full": lambda: np.concatenate([full_context(texts[i:i + 512]) for i in range(0, len(texts), 512)])}
    for side in ("ours", "full"):  # warm: tokenizer cache, allocator
        qt.encode(tower, tokenize, texts[:64]) if side == "ours" else full_context(texts[:64])
    times, out = {"ours": [], "full": []}, {}
    for _ in range(rounds):  # alternating; the fastest round of each side counts
        for side, run in sides.items():
            started = time.perf_counter()
            out[side] = run()
            times[side].append(time.perf_counter() - started)
    ours_s, full_s = min(times["ours"]), min(times["full"])
    diff = float(np.abs(out["full"] - out["ours"]).max())
    return {"case": "encode", "model": model, "queries": queries, "encode_s": round(ours_s, 2),
            "full_context_s": round(full_s, 2), "speedup": round(full_s / ours_s, 1), "max_abs_diff": diff,
            "queries_per_s": round(queries / ours_s)}


def case_step_context(model: str, batch: int, folder: str, rounds: int = 2) -> dict:
    """One training step's forward and backward through the text tower, run up to the batch's last
    end-of-text token (models.query_tower.forward_text) vs open_clip's call over the whole context;
    alternating, the fastest round of each side counts."""
    import torch

    from models import clip
    from models import query_tower as qt

    tower, _, _ = qt.load_base_tower(clip.ClipConfig(model, _checkpoint(model, folder)))
    tower.train()
    tokenize = qt.tokenizer(model)
    _, _, texts = _data(model, 1, 1)
    tokens = tokenize(texts[:batch])
    sides = {"ours": lambda: qt.forward_text(tower, tokens), "full": lambda: tower(tokens)}
    times: dict = {"ours": [], "full": []}
    for _ in range(rounds):
        for side, run in sides.items():
            tower.zero_grad(set_to_none=True)
            started = time.perf_counter()
            run().square().sum().backward()
            times[side].append(time.perf_counter() - started)
    ours, full = min(times["ours"]), min(times["full"])
    return {"case": "step_context", "model": model, "batch": batch, "tokens": int(tokens.argmax(-1).max()) + 1,
            "context": int(tokens.shape[1]), "step_s": round(ours, 3), "full_context_step_s": round(full, 3),
            "speedup": round(full / ours, 1)}


def _child(spec: dict, folder: str, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=os.getcwd(), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "bench.bench_tower", "--case", json.dumps(spec), "--folder", folder]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(spec, error=f"did not finish in {timeout:.0f} s")
    if proc.returncode != 0:
        return dict(spec, error=proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]), load_average=load_average())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny config only")
    parser.add_argument("--json", default=None, help="write the results here too")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    parser.add_argument("--big-batches", default="256,1024", help="ViT-B-32 batch sizes (4096 needs ~15 GB)")
    parser.add_argument("--queries", type=int, default=2000, help="held-out queries to embed")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        spec = json.loads(args.case)
        kind = spec.pop("case")
        result = {"train": case_train, "encode": case_encode, "index_size": case_index_size,
                  "step_context": case_step_context}[kind](
            folder=args.folder, **spec)
        print(json.dumps(result))
        return 0
    cases = [{"case": "train", "model": TINY, "batch": b, "steps": 2, "videos": 10_000} for b in (256, 1024, 4096)]
    cases += [{"case": "index_size", "model": TINY, "batch": 1024, "steps": 2, "sizes": [10_000, 1_000_000]}]
    cases += [{"case": "encode", "model": TINY, "queries": args.queries}]
    cases += [{"case": "step_context", "model": "vmm-tiny-vit", "batch": 256}]
    if not args.quick:
        cases += [{"case": "train", "model": BIG, "batch": int(b), "steps": 1, "epochs": 2, "videos": 10_000}
                  for b in args.big_batches.split(",")]
        cases += [{"case": "index_size", "model": BIG, "batch": 256, "steps": 1, "sizes": [10_000, 1_000_000]}]
        cases += [{"case": "encode", "model": BIG, "queries": args.queries}]
        cases += [{"case": "step_context", "model": BIG, "batch": 64}]
    results = []
    with tempfile.TemporaryDirectory(prefix="vmm-bench-tower-") as folder:
        for spec in cases:
            r = _child(spec, folder, args.timeout)
            print(json.dumps(r), flush=True)
            results.append(r)
    train = [r for r in results if r["case"] == "train"]
    print_table(["model", "batch", "videos", "pairs/s", "s/step", "peak RSS MiB", "load"],
                [[r["model"], r["batch"], r["videos"], r.get("pairs_per_s", r.get("error")), r.get("step_s", ""),
                  r.get("peak_rss_mib", ""), r.get("load_average", "")] for r in train])
    sizes = [r for r in results if r["case"] == "index_size"]
    print_table(["model", "batch", "s/step by videos", "largest / smallest", "load"],
                [[r["model"], r["batch"], r.get("step_s", r.get("error")), r.get("ratio_largest_to_smallest", ""),
                  r.get("load_average", "")] for r in sizes])
    enc = [r for r in results if r["case"] == "encode"]
    print_table(["model", "queries", "encode s", "full context s", "speedup", "load"],
                [[r["model"], r["queries"], r.get("encode_s", r.get("error")), r.get("full_context_s", ""),
                  r.get("speedup", ""), r.get("load_average", "")] for r in enc])
    ctx = [r for r in results if r["case"] == "step_context"]
    print_table(["model", "batch", "tokens run / context", "s/step", "full context s/step", "speedup", "load"],
                [[r["model"], r["batch"], f"{r.get('tokens')}/{r.get('context')}", r.get("step_s", r.get("error")),
                  r.get("full_context_step_s", ""), r.get("speedup", ""), r.get("load_average", "")] for r in ctx])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
