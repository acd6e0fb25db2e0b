"""Per-step cost of a sequential run: does it grow with the number of earlier requests?

    .venv/bin/python bench/sequential.py [--model tiny|default|PATH] [--requests 5] [--method ssu]
        [--keep last:1] [--out bench/results/sequential-<model>.json]

Builds a built-in world of N requests (size `tiny`: one person per request), runs `run_plan`
with the `quick` suite after every step, and writes, per step, the seconds spent unlearning,
checkpointing and evaluating (from the ledger), the tokens trained and how many requests the
step evaluated. Unlearning and checkpointing only touch the current request and one model, so
they should stay flat; evaluation re-checks every earlier request, so it grows by design.
The `slope` fields are least-squares seconds per extra step.

`--model tiny` builds a tiny Llama and fine-tunes it on the world first (via the shared loop),
so there is something to forget; `default` runs the embedded SmolLM2-135M as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def tiny_learned_model(world_dir: Path, out: Path) -> Path:
    from unlearnkit.data.world import load_world
    from unlearnkit.training import FineTune, TrainConfig, train
    from unlearnkit.models.stack import save_subject
    from unlearnkit.models.subject import Subject
    from unlearnkit.models.stack import load_subject
    from unlearnkit.models.tiny import tiny_model, tiny_tokenizer

    world = load_world(world_dir)
    records = world.trained()
    texts = [" ".join(r.as_pair()) for r in records + world.real_facts + world.general_text]
    tokenizer = tiny_tokenizer(texts, vocab_size=1000)
    subject = Subject(tiny_model(tokenizer, hidden_size=128, num_layers=4, intermediate_size=256, max_positions=512), tokenizer)
    for p in subject.model.parameters():
        p.requires_grad_(True)
    examples = [{"x": subject.encode_record(r, where=r.id or "")} for r in records]
    train(subject, examples, FineTune(), TrainConfig(lr=2e-3, epochs=15, batch_size=8, schedule="constant", max_grad_norm=None), description="learn the world")
    return save_subject(subject, out)


def slope(ys: list[float]) -> float:
    n = len(ys)
    xs = list(range(1, n + 1))
    mx, my = sum(xs) / n, sum(ys) / n
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-12, sum((x - mx) ** 2 for x in xs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--method", default="ssu")
    parser.add_argument("--settings", default=None, help="method settings as JSON")
    parser.add_argument("--keep", default="last:1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from unlearnkit.benchmark.world import build_world
    from unlearnkit.engine.ledger import Ledger
    from unlearnkit.engine.runner import run_plan
    from unlearnkit.plan import parse_plan

    work = Path(tempfile.mkdtemp(prefix="bench-seq-"))
    world = build_world(work / "world", seed=0, size="tiny", num_requests=args.requests)
    started = time.perf_counter()
    model = str(tiny_learned_model(world, work / "model")) if args.model == "tiny" else args.model
    learn_s = time.perf_counter() - started
    settings = json.loads(args.settings) if args.settings else (
        {"lr": 1e-3, "epochs": 3} if args.model == "tiny" else {"lr": 1e-4, "epochs": 3}
    )
    plan = parse_plan({
        "model": model,
        "method": {"name": args.method, "settings": settings},
        "requests": [{"world": str(world)}],
        "evaluation": {"suite": "quick"},
        "output": str(work / "run"),
        "checkpoints": {"keep": args.keep},
    }, "bench-plan")
    # Untimed warm-up: the first evaluation in a process pays one-time costs (imports, metric
    # set-up) that would otherwise be booked to step 1.
    from unlearnkit.engine.runner import suite_evaluate
    from unlearnkit.eval.data import EvalData
    from unlearnkit.models.subject import Subject

    suite_evaluate(plan, load_subject(model), EvalData.from_world(world), None)
    run_plan(plan)

    ledger = Ledger(work / "run" / "ledger.sqlite")
    steps = []
    request_ids = {r["id"] for r in ledger.requests()}
    for s in ledger.steps():
        scopes = {row["scope"] for row in ledger.metrics(s.step)}
        steps.append({
            "step": s.step, "request": s.request_id, "unlearn_s": round(s.unlearn_s, 3), "checkpoint_s": round(s.checkpoint_s, 3),
            "eval_s": round(s.eval_s or 0.0, 3), "tokens": s.tokens, "train_steps": s.train_steps,
            "requests_evaluated": len(scopes & request_ids),
        })
    summary = {
        phase: {"first": steps[0][phase], "last": steps[-1][phase], "mean": round(sum(s[phase] for s in steps) / len(steps), 3),
                "slope_s_per_step": round(slope([s[phase] for s in steps]), 4)}
        for phase in ("unlearn_s", "checkpoint_s", "eval_s")
    }
    report = {
        "bench": "sequential",
        "model": args.model, "method": args.method, "settings": settings, "requests": args.requests, "keep": args.keep,
        "machine": {"cpu_count": os.cpu_count(), "threads": args.threads, "platform": platform.platform(),
                    "device": "cuda" if torch.cuda.is_available() else "cpu", "load_avg_1m_at_end": os.getloadavg()[0]},
        "learn_world_s": round(learn_s, 1),
        "steps": steps,
        "summary": summary,
        "run_folder": str(work / "run"),
    }
    out = Path(args.out or f"bench/results/sequential-{Path(args.model).name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out)
    for s in steps:
        print(json.dumps(s))
    print(json.dumps(summary))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
