"""Seconds per training batch of `prepare` on the embedded default, with and without running the
shared prompt prefix once per length group (benchmark/prepare.py: LengthGroupedFineTune).

    .venv/bin/python bench/prepare_step.py [--world runs/demo/world] [--repeats 3]

Writes bench/results/prepare_step.json. Batches are the target's real first batches (QA and
biographies mixed, as training sees them); each configuration runs forward + backward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from unlearnkit.benchmark.world import build_world
from unlearnkit.data.world import load_world
from unlearnkit.training import make_batch
from unlearnkit.benchmark.prepare import encode_records, rehearsal_for
from unlearnkit.training import LengthGroupedFineTune, resolve_precision
from unlearnkit.models.subject import Subject
from unlearnkit.models.stack import load_subject


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", default="runs/demo/world")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    if not (Path(args.world) / "world.json").exists():
        build_world(args.world, seed=0, size="small")
    world = load_world(args.world)
    subject = load_subject("default", device="cpu")
    precision = resolve_precision("auto", subject.device)
    examples = encode_records(subject, world.trained() + rehearsal_for(world))
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    batches = [make_batch(examples, order[i * 8 : (i + 1) * 8], subject.tokenizer.pad_token_id) for i in range(args.batches)]
    tokens = sum(int(b["x"]["attention_mask"].sum()) for b in batches)
    results = {}
    for share in (False, True):
        objective = LengthGroupedFineTune(precision, share_prefix=share)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for batch in batches:
                loss, _ = objective.loss(subject.model, batch, None)
                loss.backward()
                subject.model.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        results["shared_prefix" if share else "plain"] = {"seconds": statistics.median(times), "all_seconds": times,
                                                          "tokens_per_s": tokens / statistics.median(times)}
        print(share, results)
    out = {"model": "default", "precision": precision, "threads": torch.get_num_threads(), "batches": args.batches,
           "batch_size": 8, "tokens": tokens, "results": results,
           "speedup": results["plain"]["seconds"] / results["shared_prefix"]["seconds"]}
    Path("bench/results/prepare_step.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
