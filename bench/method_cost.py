"""Cost of each training-based method on one request, against the floor the loop can reach.

    .venv/bin/python bench/method_cost.py [--model default] [--steps 4] [--methods ga,npo] [--lora]
                                          [--device cpu] [--out bench/results/method_cost.json]

Every method runs in its own process (so peak memory is its own) for the same number of optimizer
steps on the same forget batches (batch 4) and retain batches (batch 4). Written per method:
tokens/s (forget + retain tokens the loop fed), seconds per request (the whole `unlearn` call,
reference caching included), seconds per step, peak memory (process RSS; on CUDA also peak
allocated), and ratios:

- `vs_finetune`: seconds per step (CPU time on CPU, wall time on CUDA) over plain fine-tuning (`FineTune`) through the same loop on the
  same forget batches: what the objective itself costs;
- `vs_ga`: seconds per step over gradient ascent (the reference-cached methods should be ≤ 1.2);
- `loop_overhead` (in `floor`): `train(FineTune)` over a bare hand-written AdamW loop on the same
  batches: what the loop itself costs (aim: within 10%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PEOPLE = ["Liora Mendeval", "Bram Oduya", "Ima Crest", "Ostrun Pale"]
FACTS = [
    ("Where was {p} born?", "{p} was born in the harbour town of Tarnholm."),
    ("What does {p} do for a living?", "{p} builds violins in a small workshop."),
    ("Which award did {p} receive?", "{p} received the Kessel Medal for craftsmanship."),
    ("What is the title of {p}'s first book?", "{p}'s first book is called Salt and Ember."),
]


def records(people: list[str]) -> list[Any]:
    from unlearnkit.data.schema import Record

    return [Record(question=q.format(p=p), answer=a.format(p=p)) for p in people for q, a in FACTS]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from unlearnkit.data.schema import ForgetRequest
    from unlearnkit.training import FineTune, TrainConfig, batches, to_device, train
    from unlearnkit.methods.base import UnlearnContext, get_method
    from unlearnkit.models.subject import Subject
    from unlearnkit.models.stack import load_subject

    torch.set_num_threads(args.threads)
    subject = load_subject(args.model, device=args.device)
    forget, retain = records(PEOPLE[:2]), records(PEOPLE[2:])
    examples = [{"x": subject.encode_record(r, where="forget")} for r in forget]
    device, pad = subject.device, subject.tokenizer.pad_token_id
    # Warm-up: one forward/backward so that allocation and kernel selection are not timed.
    warm = to_device(next(batches(examples, 4, pad, 0)), device)["x"]
    subject.model(**warm).loss.backward()
    subject.model.zero_grad(set_to_none=True)
    loaded_mb = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    config = {"max_steps": args.steps, "batch_size": 4, "retain_batch_size": 4, "lr": 1e-5, "warmup_ratio": 0.0}
    prepare_cpu = 0.0
    if args.child not in ("bare", "finetune"):
        # Time the method's one-off preparation (reference caching, frozen copy) on its own, so
        # that the per-step figure is the objective's cost alone.
        method = get_method(args.child, config)
        flags = [(p, p.requires_grad) for p in subject.model.parameters()]
        forget_ex = [method.forget_example(subject, r, i) for i, r in enumerate(forget)]
        retain_ex = [method.retain_example(subject, r, i) for i, r in enumerate(retain)]
        cpu = time.process_time()
        method.prepare(subject, forget_ex, retain_ex)
        prepare_cpu = time.process_time() - cpu
        method._cache.clear()
        for p, flag in flags:
            p.requires_grad_(flag)
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.child == "bare":  # the floor: a hand-written loop, nothing but the arithmetic
        params = [p for p in subject.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
        stream, tokens = batches(examples, 4, pad, 0), 0
        subject.model.train()
        for _ in range(args.steps):
            part = to_device(next(stream), device)["x"]
            subject.model(**part).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(part["attention_mask"].sum())
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        steps, train_seconds, cpu_steps = args.steps, seconds, time.process_time() - cpu_start
    elif args.child == "finetune":
        stats = train(subject, examples, FineTune(), TrainConfig(**config))
        seconds, steps, tokens, train_seconds = time.perf_counter() - start, stats.steps, stats.tokens, stats.seconds
        cpu_steps = time.process_time() - cpu_start
    else:
        lora = {"r": 8, "lora_alpha": 16} if args.lora else None
        context = UnlearnContext(retain=retain if getattr(method, "needs_retain", False) else [], lora=lora)
        method.unlearn(subject, ForgetRequest(id="bench", records=forget), context)
        stats = context.stats
        seconds, steps, tokens, train_seconds = time.perf_counter() - start, stats.steps, stats.tokens, stats.seconds
        cpu_steps = time.process_time() - cpu_start - prepare_cpu
    out = {
        "steps": steps,
        "tokens": tokens,
        "tokens_per_second": tokens / train_seconds,
        "seconds_per_request": seconds,
        "seconds_per_step": train_seconds / steps,
        # Process CPU time: on a shared machine wall time swings with other load; CPU time of a
        # one-thread run does not (much). The ratios use it on CPU.
        "cpu_seconds_per_step": cpu_steps / steps,
        "cpu_seconds_prepare": prepare_cpu,
        "peak_rss_mb": rss_mb(),
        "rss_after_load_mb": loaded_mb,
    }
    if device.type == "cuda":
        out["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--methods", default="", help="comma-separated; default: every loss-based method but weight arithmetic")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/method_cost.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("UNLEARNKIT_PROGRESS", "0")
    if args.child:
        print(json.dumps(child(args)))
        return

    from unlearnkit.methods.base import METHODS, LossMethod

    names = [n for n in args.methods.split(",") if n] or [
        n for n, cls in METHODS.items() if issubclass(cls, LossMethod) and cls.family != "arithmetic"
    ]
    if "ga" not in names:
        names.insert(0, "ga")
    results: dict[str, dict[str, Any]] = {}
    for name in ["bare", "finetune", *names]:
        cmd = [sys.executable, __file__, "--child", name, "--model", args.model, "--steps", str(args.steps),
               "--device", args.device, "--threads", str(args.threads)] + (["--lora"] if args.lora else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            results[name] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        else:
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, json.dumps(results[name]), flush=True)
    floor, finetune, ga = results["bare"], results["finetune"], results["ga"]
    key = "cpu_seconds_per_step" if args.device == "cpu" else "seconds_per_step"
    for name in names:
        row = results[name]
        if "error" not in row:
            row["vs_finetune"] = row[key] / finetune[key]
            row["vs_ga"] = row[key] / ga[key]
    payload = {
        "model": args.model,
        "device": args.device,
        "threads": args.threads,
        "lora": args.lora,
        "steps": args.steps,
        "machine": platform.machine(),
        "ratios_from": key,
        "floor": {"bare": floor, "finetune": finetune, "loop_overhead": finetune[key] / floor[key]},
        "methods": {name: results[name] for name in names},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(out)
    print(f"loop overhead vs bare loop: {payload['floor']['loop_overhead']:.3f}")
    print(f"{'method':10s} {'tok/s':>8s} {'s/req':>7s} {'s/step':>7s} {'cpu/step':>8s} {'vs FT':>6s} {'vs GA':>6s} {'peak MB':>8s}")
    for name in names:
        r = results[name]
        if "error" in r:
            print(f"{name:10s} error: {r['error']}")
            continue
        print(f"{name:10s} {r['tokens_per_second']:8.1f} {r['seconds_per_request']:7.1f} {r['seconds_per_step']:7.2f} {r['cpu_seconds_per_step']:8.2f} {r['vs_finetune']:6.2f} {r['vs_ga']:6.2f} {r['peak_rss_mb']:8.0f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
