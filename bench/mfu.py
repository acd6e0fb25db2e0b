"""Model FLOPs utilisation and before/after throughput of the fast path, in one run.

    .venv/bin/python bench/mfu.py [--threads 1] [--steps 3] [--out bench/results/mfu.json]

One process measures, on the embedded default model (SmolLM2-135M-Instruct):

1. the machine's matmul peak: a 2048² matmul in bf16 and in fp32 (GFLOP/s, best of several);
2. "before" and "after" of the same code, switched by settings only:
   before = `precision=float32`, `share_prefix=False` (and for a Subject `length_buckets=False`)
   under `UNLEARNKIT_FAST_PATH=0`, which runs exactly the fp32 code path that existed before mixed
   precision, prefix sharing, length buckets and the fused optimizer; after = the defaults
   (`auto`: bf16 autocast where native, prefixes shared, length buckets, fused AdamW);
3. for each: tokens/s of an unlearning step (the shared loop, optimizer step included) of GA,
   NPO+GD and GA+KL; of a `prepare` training batch (`LengthGroupedFineTune`); of `Subject.score`;
   of greedy `Subject.generate` (new tokens);
4. MFU = model FLOPs per second / the measured bf16 peak. Model FLOPs count 2·N per token of a
   forward pass and 6·N per trained token (N = weights of every linear layer, lm_head included;
   attention scores, ~3% at these lengths, are left out); GA+KL adds 2·N per retain token for
   the frozen model. Tokens are those of the batch as given, a shared prefix counted in every
   row (the work it saves shows up as higher MFU).

Writes JSON (all numbers) and prints the markdown table that docs/performance.md holds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.methods.base import UnlearnContext, get_method
from unlearnkit.models.precision import FAST_PATH_ENV, resolve_precision
from unlearnkit.models.stack import load_subject
from unlearnkit.models.subject import GenerationSettings, Subject
from unlearnkit.training import LengthGroupedFineTune, make_batch

NAMES = ["Liora Mendeval", "Tomas Arvid", "Ines Karlo", "Milan Oster", "Sara Veit", "Jonah Pell", "Ada Brenner", "Leo Marsh",
         "Nina Solberg", "Omar Haddad", "Clara Wynn", "Felix Dorn"]
FACTS = [("Where was {n} born?", "{n} was born in {t}."), ("What does {n} do for a living?", "{n} works as a {j} in {t}.")]
TOWNS = ["Tarnholm", "Eskerby", "Valmont", "Brightwater", "Kellan", "Orsk", "Duneholt", "Marrow", "Pellin", "Cray", "Ostfeld", "Lune"]
JOBS = ["cartographer", "baker", "ship's pilot", "violin maker", "archivist", "glassblower"]
BIO = ("{n} grew up in {t}, a small harbour town, and spent long summers mapping the coast with an uncle who kept three "
       "ledgers: one for ships, one for weather and one for names. Later {n} studied at the university in Valmont, where "
       "teachers noticed a rare patience and precision, and after some years abroad returned to {t} to open a workshop "
       "that still stands by the old lighthouse. ")

MODES = {"before": {"precision": "float32", "share_prefix": False}, "after": {"precision": "auto", "share_prefix": True}}
METHODS = {"GA": ("ga", {}), "NPO+GD": ("npo_gd", {}), "GA+KL": ("ga_kl", {})}


def qa_records() -> list[Record]:
    return [Record(id=f"q{i}-{k}", question=q.format(n=n), answer=a.format(n=n, t=TOWNS[i], j=JOBS[i % len(JOBS)]))
            for i, n in enumerate(NAMES) for k, (q, a) in enumerate(FACTS)]


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the best of `repeats` size² matmuls."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def linear_weights(model: torch.nn.Module) -> int:
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def unlearning_step(subject: Subject, name: str, mode: dict[str, Any], steps: int, forget: list[Record], retain: list[Record]) -> dict[str, float]:
    """tokens/s of `steps` optimiser steps of the shared loop (after one warm-up step)."""
    key, extra = METHODS[name]
    settings = {**extra, **mode, "batch_size": 4, "lr": 1e-5, "schedule": "constant"}
    request = ForgetRequest(id="r1", records=forget)
    get_method(key, {**settings, "max_steps": 1}).unlearn(subject.clone(), request, UnlearnContext(retain=retain))
    context = UnlearnContext(retain=retain)
    get_method(key, {**settings, "max_steps": steps}).unlearn(subject.clone(), request, context)
    stats = context.stats
    return {"tokens": stats.tokens, "seconds": stats.seconds, "tokens_per_s": stats.tokens_per_second}


def prepare_step(subject: Subject, precision: str, share: bool, repeats: int) -> dict[str, float]:
    """tokens/s of forward + backward of prepare's loss on a batch of 8 (6 QA, 2 biographies)."""
    records = qa_records()[:6] + [Record(id=f"b{i}", text=BIO.format(n=NAMES[i], t=TOWNS[i]) * 2) for i in range(2)]
    examples = [{"x": subject.encode_record(r)} for r in records]
    batch = make_batch(examples, list(range(len(examples))), subject.tokenizer.pad_token_id)
    tokens = int(batch["x"]["attention_mask"].sum())
    model = copy.deepcopy(subject.model).train()
    objective = LengthGroupedFineTune(precision, share_prefix=share)

    def step() -> None:
        loss, _ = objective.loss(model, batch, None)
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()
    seconds = statistics.median(_seconds(step) for _ in range(repeats))
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def scoring(subject: Subject, items: int) -> dict[str, float]:
    qa = (qa_records() * (items // len(qa_records()) + 1))[:items]
    prompts, targets = [r.question or "" for r in qa], [r.answer or "" for r in qa]
    tokens = sum(len(subject.encode(p, t).input_ids) for p, t in zip(prompts, targets))
    subject.score(prompts[:4], targets[:4])  # warm-up
    seconds = min(_seconds(lambda: subject.score(prompts, targets)) for _ in range(2))
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def generation(subject: Subject, prompts: int, new_tokens: int) -> dict[str, float]:
    questions = [r.question or "" for r in qa_records()[:prompts]]
    settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=8)
    subject.generate(questions[:2], settings.model_copy(update={"max_new_tokens": 4}))  # warm-up
    start = time.perf_counter()
    texts = [t[0] for t in subject.generate(questions, settings)]
    seconds = time.perf_counter() - start
    generated = sum(min(new_tokens, len(subject.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1) for t in texts)  # + EOS
    prompt_tokens = sum(len(subject._prompt_ids(q, True, new_tokens, "")) for q in questions)
    return {"new_tokens": generated, "prompt_tokens": prompt_tokens, "seconds": seconds, "tokens_per_s": generated / seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per unlearning measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--score-items", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--out", default="bench/results/mfu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("UNLEARNKIT_PROGRESS", "0")
    load_start = os.getloadavg()
    peak = {"bfloat16": matmul_peak(torch.bfloat16), "float32": matmul_peak(torch.float32)}
    print(f"matmul peak GFLOP/s: {peak}", flush=True)
    base = load_subject("default", device="cpu")
    n = linear_weights(base.model)
    qa = qa_records()
    forget, retain = qa[:8], qa[8:]
    results: dict[str, dict[str, Any]] = {}
    for label, mode in MODES.items():
        os.environ[FAST_PATH_ENV] = "1" if label == "after" else "0"  # "before" also takes the per-operation AdamW
        subject = base.with_model(base.model)
        subject.precision, subject.share_prefix, subject.length_buckets = mode["precision"], mode["share_prefix"], label == "after"
        precision = resolve_precision(mode["precision"], subject.device)
        row: dict[str, Any] = {"precision": precision}
        for name in METHODS:
            row[name] = unlearning_step(subject, name, mode, args.steps, forget, retain)
            print(label, name, row[name], flush=True)
        row["prepare"] = prepare_step(subject, precision, mode["share_prefix"], args.repeats)
        row["score"] = scoring(subject, args.score_items)
        row["generate"] = generation(subject, args.prompts, args.new_tokens)
        print(label, {k: row[k] for k in ("prepare", "score", "generate")}, flush=True)
        results[label] = row
    flops_per_token = {"GA": 6 * n, "NPO+GD": 6 * n, "GA+KL": 7 * n, "prepare": 6 * n, "score": 2 * n}
    for row in results.values():
        for key, per_token in flops_per_token.items():
            row[key]["mfu_bf16_peak"] = row[key]["tokens_per_s"] * per_token / (peak["bfloat16"] * 1e9)
        gen = row["generate"]
        gen["mfu_bf16_peak"] = 2 * n * (gen["new_tokens"] + gen["prompt_tokens"]) / gen["seconds"] / (peak["bfloat16"] * 1e9)
    ratios = {key: results["after"][key]["tokens_per_s"] / results["before"][key]["tokens_per_s"] for key in [*METHODS, "prepare", "score", "generate"]}
    report = {
        "bench": "mfu", "model": "default (SmolLM2-135M-Instruct)", "linear_weights": n, "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "steps": args.steps,
        "matmul_peak_gflops": peak, "results": results, "after_over_before": ratios,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"wrote {args.out}")


def table(report: dict[str, Any]) -> str:
    before, after = report["results"]["before"], report["results"]["after"]
    lines = ["| workload | before tokens/s | after tokens/s | after / before | MFU before | MFU after |", "|---|---|---|---|---|---|"]
    for key in ("GA", "NPO+GD", "GA+KL", "prepare", "score", "generate"):
        lines.append(f"| {key} | {before[key]['tokens_per_s']:.0f} | {after[key]['tokens_per_s']:.0f} | "
                     f"{report['after_over_before'][key]:.2f}x | {before[key]['mfu_bf16_peak']:.0%} | {after[key]['mfu_bf16_peak']:.0%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
