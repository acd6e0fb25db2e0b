"""Guarded unlearning on real knowledge: the embedded default model as shipped, facts it knows.

For each case (`mixed`, `same-template`; see src/unlearnkit/benchmark/real_knowledge.py) and
each method, from the same starting weights: apply the request guarded, as `unlearnkit unlearn`
does (damage budget, forget target, calibration unless --no-auto), and record the forget
accuracy (plain and paraphrased), retain accuracy, never-mentioned accuracy and fluency
(general-text perplexity) before and after, the verdict and the seconds.

    python bench/real_knowledge.py                          # every family's default, both cases
    python bench/real_knowledge.py --methods npo_gd --set npo_gd.lr=1e-4 --no-auto --cases mixed

Writes JSON (default bench/results/real_knowledge.json), one row per case and method, after
each row, so a long run keeps what it finished.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from unlearnkit.benchmark.real_knowledge import CASES, build_case
from unlearnkit.commands._options import parse_set
from unlearnkit.files import write_json
from unlearnkit.methods.base import METHODS, UnlearnContext, get_method
from unlearnkit.models.stack import load_subject
from unlearnkit.models.weights import scale_change, snapshot
from unlearnkit.safety.apply import apply_request
from unlearnkit.safety.measure import accuracies
from unlearnkit.safety.probes import build_probes, known_facts
from unlearnkit.safety.settings import Guard

# One method per family (the families of `unlearnkit methods`), plus the preference variants.
DEFAULT_METHODS = ["gd", "npo_gd", "simnpo", "idk_nll", "rmu", "task_vector", "guardrail"]


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="METHOD.KEY=VALUE")
    parser.add_argument("--guard-set", dest="guard_sets", action="append", default=[], help="KEY=VALUE into the guard settings")
    parser.add_argument("--no-auto", action="store_true", help="no calibration (one run at the method's settings)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/real_knowledge.json"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; 1 when the machine is shared)")
    args = parser.parse_args()
    for name in args.methods:
        METHODS.get(name)  # unknown names fail before the model loads

    if args.threads:
        torch.set_num_threads(args.threads)
    from unlearnkit.commands.unlearn import guard_settings

    guard: Guard = guard_settings(True, not args.no_auto, False, args.guard_sets)
    method_sets = parse_set(args.sets, grouped=True)
    subject = load_subject(args.model, device="cpu")
    base = snapshot(subject.model)
    known = known_facts(subject, source=args.model)
    rows: list[dict[str, Any]] = []
    payload: dict[str, Any] = {"model": args.model, "known_facts": len(known), "guard": guard.model_dump(), "rows": rows}
    for case_name in args.cases:
        case = build_case(known, case_name)
        never_before = mean(accuracies(subject, case.never, guard.max_new_tokens))
        for name in args.methods:
            scale_change(subject.model, base, 0.0)  # every method starts from the shipped weights
            method = get_method(name, method_sets.get(name))
            print(f"== {case_name}: {name} ({len(case.request.records)} to forget, {len(case.keep)} kept, {len(case.never)} never mentioned)", flush=True)
            tick = time.perf_counter()
            probes = build_probes(subject, case.request, guard, retain=case.keep, known=case.collateral_pool)
            context = UnlearnContext(retain=case.keep, extras={"utility": case.collateral_pool})
            applied = apply_request(subject, case.request, [method], context, guard, probes)
            seconds = time.perf_counter() - tick
            card = applied.card
            assert card is not None
            never_after = mean(accuracies(applied.subject, case.never, guard.max_new_tokens))
            before, after = card.before, card.after
            rows.append({
                "case": case_name, "method": name, "settings": {k: v for k, v in method.model_dump().items() if k in (method_sets.get(name) or {}) or k in ("lr", "epochs", "alpha")},
                "verdict": card.verdict, "target_met": card.target_met, "rolled_back_to": card.rolled_back_to,
                "forget_plain": [before.forget_accuracy, after.forget_accuracy],
                "forget_paraphrased": [before.forget_paraphrased_accuracy, after.forget_paraphrased_accuracy],
                "forget_said": [before.forget_said, after.forget_said],
                "forget_probability": [before.forget_probability, after.forget_probability],
                "retain_accuracy": [before.retain_accuracy, after.retain_accuracy],
                "retain_said": [before.retain_said, after.retain_said],
                "collateral_accuracy": [before.collateral_accuracy, after.collateral_accuracy],
                "collateral_said": [before.collateral_said, after.collateral_said],
                "never_mentioned_accuracy": [never_before, never_after],
                "perplexity": [before.perplexity, after.perplexity],
                "seconds": seconds, "train_steps": applied.steps, "trials": card.trials, "violations": card.violations,
            })
            r = rows[-1]
            print(f"   {card.verdict}: forget {r['forget_plain']} para {r['forget_paraphrased']} retain {r['retain_accuracy']} "
                  f"never {r['never_mentioned_accuracy']} retain-said {r['retain_said']} collateral {r['collateral_accuracy']} ppl {r['perplexity']} in {seconds:.0f}s", flush=True)
            write_json(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
