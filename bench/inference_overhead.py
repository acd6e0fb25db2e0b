"""Inference-time wrappers: latency overhead per generated token, and on the built-in world,
forget effectiveness and false refusals.

    .venv/bin/python bench/inference_overhead.py [--model default] [--out bench/results/inference_overhead.json]

Wrappers (each built over the requests of a small world, seed 0):
- `guardrail`: calibrated on the requests' 2-hop probes against the retain set and half of the
  real-knowledge questions, so paraphrases, neighbours and the other real half are held out;
- `icul`: instructions + refused demonstrations;
- `logit_offset`: a copy of the model as helper, unlearned with NPO on the combined logits
  (on the requests' QA records only, to keep this CPU bench to minutes);
- `stack`: guardrail over icul over logit_offset.

Latency: greedy generation of real-knowledge questions (which the guard passes through), seconds
per generated token, wrapper vs bare model. Effectiveness: the guard's refusal decisions on every
prompt group (no generation needed), and for every wrapper the refusal rate and answer accuracy of
greedy outputs on a sample of each group, plus the change in mean answer NLL (score).
The default model was never fine-tuned on the world, so "accuracy" on world facts is ~0 for the
bare model: what shows forgetting there is refusals and the NLL change, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from unlearnkit.data.schema import Record
from unlearnkit.methods.base import UnlearnContext, get_method
from unlearnkit.methods.guard import GuardedSubject
from unlearnkit.models.stack import find_wrapper
from unlearnkit.models.subject import GenerationSettings, Subject
from unlearnkit.models.stack import load_subject

REFUSAL = "I'm sorry, but I can't share information about that."
REFUSAL_MARKS = ("sorry", "can't share", "cannot share", "can't help", "cannot help", "unable to")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def is_refusal(text: str) -> bool:
    lowered = text.lower()
    return any(mark in lowered for mark in REFUSAL_MARKS)


def groups(world: Any, rng: random.Random) -> tuple[dict[str, list[Record]], list[str]]:
    """Prompt groups (as QA records with the answer to look for) and the calibration utility half."""
    forget = [r for q in world.requests for r in q.records if r.kind == "qa"]
    probes = [r for q in world.requests for r in q.probes if r.kind == "qa"]
    real = [r for r in world.real_facts if r.kind == "qa"]
    rng.shuffle(real)
    calibration_real, held_real = real[: len(real) // 2], real[len(real) // 2 :]
    para = lambda rs: [Record(question=r.paraphrased_questions[0], answer=r.answer or "") for r in rs if r.paraphrased_questions]  # noqa: E731
    retain = [r for r in world.retain if r.kind == "qa"]
    pairs = list(zip(rng.sample(held_real, min(len(held_real), len(forget))), para(forget)))
    out = {
        "forget_questions": forget,
        "forget_paraphrases": para(forget),
        "forget_probes_2hop": probes,
        "mixed_real_then_forget": [Record(question=f"{a.question} Also, {b.question}", answer=b.answer or "") for a, b in pairs],
        "multi_turn": [Record(question=f"User: {a.question}\nAssistant: {a.answer}.\nUser: {b.question}", answer=b.answer or "") for a, b in pairs],
        "retain_questions": retain,
        "retain_paraphrases": para(retain),
        "neighbour_questions": [r for r in world.neighbours if r.kind == "qa"],
        "real_questions": held_real,
    }
    return out, [r.question or "" for r in calibration_real]


def build(subject: Subject, world: Any, utility: list[str], offset_steps: int, offset_lr: float, wanted: set[str]) -> dict[str, Subject]:
    context = UnlearnContext(retain=[r for r in world.retain if r.kind == "qa"], extras={"utility": utility})
    guard_m = get_method("guardrail", {"refusal": REFUSAL, "calibrate_on": "probes"})
    icul_m = get_method("icul", {"refusal": REFUSAL})
    offset_m = get_method("logit_offset", {"trainer": "npo", "trainer_settings": {"max_steps": offset_steps, "batch_size": 4, "lr": offset_lr}})
    built: dict[str, Subject] = {}
    timings: dict[str, float] = {}
    for name, methods in (("guardrail", [guard_m]), ("icul", [icul_m]), ("logit_offset", [offset_m]), ("stack", [offset_m, icul_m, guard_m])):
        if name not in wanted and not (name == "logit_offset" and "stack" in wanted) and name != "guardrail":
            continue
        if name == "stack":  # reuse the trained offset: the stack adds icul and guard above it
            current, methods = built["logit_offset"], [icul_m, guard_m]
        else:
            current = subject
        start = time.perf_counter()
        for request in world.requests:
            for method in methods:
                # The helper trains on the QA records only: the 150-word biographies through three
                # 135M models would take most of a CPU hour.
                qa_only = request.model_copy(update={"records": [r for r in request.records if r.kind == "qa"]})
                current = method.unlearn(current, qa_only if method is offset_m else request, context)
        timings[name] = time.perf_counter() - start
        log(f"built {name} in {timings[name]:.1f}s")
        built[name] = current
    built["_timings"] = timings  # type: ignore[assignment]
    return built


def latency(subject: Subject, prompts: list[str], new_tokens: int, batch_size: int) -> dict[str, float]:
    settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=batch_size)
    guard = find_wrapper(subject, GuardedSubject)
    subject.generate(prompts[:2], settings)  # warm-up
    best = float("inf")
    outputs: list[list[str]] = []
    for _ in range(2):
        if guard is not None:
            guard.embedder.cache.clear()  # each run pays for its embeddings
        start = time.perf_counter()
        outputs = subject.generate(prompts, settings)
        best = min(best, time.perf_counter() - start)
    tokens = sum(min(new_tokens, len(subject.tokenizer(o[0], add_special_tokens=False)["input_ids"]) + 1) for o in outputs)
    return {"seconds": best, "new_tokens": tokens, "seconds_per_token": best / max(tokens, 1)}


def effectiveness(subject: Subject, bare: Subject, sample: dict[str, list[Record]], new_tokens: int) -> dict[str, dict[str, float]]:
    rows = {}
    settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=16)
    for name, records in sample.items():
        prompts, answers = [r.question or "" for r in records], [r.answer or "" for r in records]
        outputs = [o[0] for o in subject.generate(prompts, settings)]
        nll = float(subject.score(prompts, answers).mean_nll.mean())
        rows[name] = {
            "refusal_rate": sum(map(is_refusal, outputs)) / len(outputs),
            "answer_accuracy": sum(a.lower() in o.lower() for a, o in zip(answers, outputs)) / len(outputs),
            "answer_nll": nll,
            "n": len(outputs),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--world-size", default="small")
    parser.add_argument("--per-group", type=int, default=6, help="generated prompts per group and wrapper")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--offset-steps", type=int, default=4)
    parser.add_argument("--offset-lr", type=float, default=1e-5)
    parser.add_argument("--wrappers", default="guardrail,icul,logit_offset,stack", help="which wrappers to measure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady numbers on a shared machine)")
    parser.add_argument("--out", default="bench/results/inference_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    subject = load_subject(args.model, device="cpu")
    from unlearnkit.benchmark.world import build_world
    from unlearnkit.data.world import load_world

    world = load_world(build_world(Path(tempfile.mkdtemp()) / "world", seed=0, size=args.world_size, num_requests=3))
    prompt_groups, utility = groups(world, rng)
    wanted = set(args.wrappers.split(","))
    wrappers = build(subject, world, utility, args.offset_steps, args.offset_lr, wanted)
    build_seconds = wrappers.pop("_timings")  # type: ignore[arg-type]
    guard = find_wrapper(wrappers["guardrail"], GuardedSubject)
    assert guard is not None

    guard_rates = {name: sum(guard.refused([r.question or "" for r in rs])) / len(rs) for name, rs in prompt_groups.items()}
    sample = {name: rng.sample(rs, min(args.per_group, len(rs))) for name, rs in prompt_groups.items()
              if name in ("forget_questions", "forget_paraphrases", "multi_turn", "neighbour_questions", "real_questions")}
    latency_prompts = [r.question or "" for r in prompt_groups["real_questions"][:8]]
    rows: dict[str, Any] = {}
    bare_latency = latency(subject, latency_prompts, args.new_tokens, 8)
    rows["bare"] = {"latency": bare_latency, "groups": effectiveness(subject, subject, sample, args.new_tokens)}
    for name, wrapped in wrappers.items():
        if name not in wanted:
            continue
        lat = latency(wrapped, latency_prompts, args.new_tokens, 8)
        lat["overhead_per_token"] = lat["seconds_per_token"] / bare_latency["seconds_per_token"] - 1
        log(f"measured {name}")
        rows[name] = {"latency": lat, "build_seconds": build_seconds[name], "groups": effectiveness(wrapped, subject, sample, args.new_tokens)}
    result = {
        "model": args.model,
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "world": {"size": args.world_size, "seed": 0, "requests": len(world.requests)},
        "settings": vars(args),
        "guard_thresholds": {k: v["threshold"] for k, v in guard.calibrations.items()},
        "guard_refusal_rate": guard_rates,
        "wrappers": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"guard_refusal_rate": guard_rates, "thresholds": result["guard_thresholds"]}, indent=2))
    for name, row in rows.items():
        lat = row["latency"]
        groups_line = "  ".join(f"{g}: ref {v['refusal_rate']:.2f} acc {v['answer_accuracy']:.2f} nll {v['answer_nll']:.2f}" for g, v in row["groups"].items())
        print(f"{name:13s} {lat['seconds_per_token'] * 1000:7.1f} ms/token  overhead {lat.get('overhead_per_token', 0):+.0%}\n    {groups_line}")


if __name__ == "__main__":
    main()
