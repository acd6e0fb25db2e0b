"""One recipe experiment of bench/README.md ("Prepare recipe experiments E1-E6"): train the
target only with the given learning rate and epochs (other settings from the default recipe,
overridable as JSON), then measure its quality bar without the oracles.

    .venv/bin/python bench/prepare_recipe.py LR EPOCHS ['{"schedule": "constant"}'] [--world DIR] [--share S]

E1-E6 ran before prepare merged its models with the base, so `--share` defaults to 1.0 (the model
as trained); `--share 0.6` measures the current default recipe.

Prints the training stats and the check as JSON and appends them to
bench/results/prepare_recipe.jsonl. Models land in `$UNLEARNKIT_CACHE/prepared` like any other.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from unlearnkit.benchmark.world import build_world
from unlearnkit.data.world import load_world
from unlearnkit.benchmark.prepare import PrepareSettings, check_quality, default_train_config, prepare_world
from unlearnkit.models.subject import Subject
from unlearnkit.models.stack import load_subject


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lr", type=float)
    parser.add_argument("epochs", type=float)
    parser.add_argument("overrides", nargs="?", default="{}", help="more TrainConfig keys as JSON")
    parser.add_argument("--world", default="runs/demo/world")
    parser.add_argument("--share", type=float, default=1.0, help="finetune_share: weight change kept after training")
    args = parser.parse_args()
    if not (Path(args.world) / "world.json").exists():
        build_world(args.world, seed=0, size="small")
    train = default_train_config().model_copy(update={"lr": args.lr, "epochs": args.epochs, **json.loads(args.overrides)})
    base = load_subject("default")
    start = time.perf_counter()
    prepared = prepare_world("default", args.world, PrepareSettings(train=train, oracles="none", finetune_share=args.share), subject=base)
    quality = check_quality(prepared, load_world(args.world), base)
    record = {"train": train.model_dump(), "finetune_share": args.share, "world": args.world, "stats": prepared.models[0].stats,
              "quality": quality, "total_s": time.perf_counter() - start}
    print(json.dumps(record, indent=1))
    with Path("bench/results/prepare_recipe.jsonl").open("a") as out:
        out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
