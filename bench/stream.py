"""A long request stream, measured: time, per-step cost, and how each recipe ends up after it.

    .venv/bin/python bench/stream.py [--model default] [--requests 100] [--recipes npo_replay,npo_gd,ssu]
        [--coalesce 1,5] [--oracles 25,50,100] [--earlier 64] [--full-every 25] [--demo]
        [--work runs/bench-stream] [--out bench/results/stream.json]
    .venv/bin/python bench/stream.py --small        # a tiny model, 8 requests: the script itself, in minutes
    .venv/bin/python bench/stream.py --tokens-only --out bench/results/stream-tokens.json  # prepare's tokens, no training
    .venv/bin/python bench/stream.py --partial --recipes npo_replay --coalesce 1 --out bench/results/stream-partial.json
        # a run stopped before its last request (Ctrl-C; rerun to resume): its figures so far
    .venv/bin/python bench/stream.py --demo-only --recipes npo_replay --out bench/results/stream-demo.json
    .venv/bin/python bench/stream.py --read-demo runs/demo --out bench/results/demo-calibrated.json
        # the figures of a folder `unlearnkit demo` wrote (its own recipe), nothing run

Runs `examples/stream.yaml` (the stream world, sparse oracles, the holdout reference between
them, the rotating evaluation, the guard) once per recipe, and the first recipe once more per
further `--coalesce` value. Writes, per run: wall time; unlearning, checkpoint and evaluation
seconds and scored items at the steps that applied requests 1, 10, 50 and 100 (and the middle
and last one); and after the
last request: model utility against the target's and the last oracle's, every request's forget
probability against its oracle's (or the holdout reference's where none was trained), the
relapses, the budget's rollbacks and the holdout reference beside each oracle. The world and
prepare are timed on their own: with an empty `$UNLEARNKIT_CACHE` the first run is the cold
measurement (`prepare.trained_now`), run the script again for the warm one. `--demo` also runs
`unlearnkit demo` (3 requests, small world) with the first recipe and the stream plan's guard
(its forget target) and reads its figures; `--demo-only` runs only that.

The thresholds checked (`checks`) are the issue's: utility ≥ 0.9 × the target's and within 0.05
of the last oracle's; forget probability within 0.1 of the reference for every request; for the
demo, forget quality ≥ 0.05 for every request, utility ≥ 0.95 × the target's, leak@k recovery
within 10 points of the oracle's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "stream.yaml"
AT_REQUESTS = (1, 10, 50, 100)


def recipes() -> dict[str, dict[str, Any]]:
    """The recipes compared: the stream recipe; the same with only the MLPs training (the tied
    embeddings and attention fixed), or with a KL to the model before the request, or a floor at
    it, as its retain term (bench/drift.py: the NLL retain term was what cost fluency), or with
    the anchor passages held at the run's start (`anchor_weight`, methods/anchor.py); the
    demo's npo_gd setting; SSU (clean, its reference's defaults); any other registered method
    by name with its defaults."""
    from unlearnkit.demo import DEFAULT_METHOD

    return {"npo_replay": {"name": "npo_replay"}, "npo_replay_mlp": {"name": "npo_replay", "settings": {"trainable": r"\.mlp\."}},
            "npo_replay_kl": {"name": "npo_replay", "settings": {"retain_loss": "kl"}},
            "npo_replay_floor": {"name": "npo_replay", "settings": {"retain_loss": "floor"}},
            "npo_replay_anchor": {"name": "npo_replay", "settings": {"anchor_weight": 1.0}},
            "npo_gd": DEFAULT_METHOD, "ssu": {"name": "ssu"}}


def recipe(name: str, small: bool) -> dict[str, Any]:
    spec = dict(recipes().get(name, {"name": name}))
    if small:  # a tiny random model needs large steps to move at all
        spec["settings"] = {**spec.get("settings", {}), "lr": 1e-3}
    return spec


def tiny_base(world: Path, out: Path) -> Path:
    """A tiny Llama with a tokenizer of the world's words (prepare then teaches it the world)."""
    from unlearnkit.benchmark.prepare import rehearsal_for
    from unlearnkit.data.world import load_world
    from unlearnkit.models.stack import save_subject
    from unlearnkit.models.subject import Subject
    from unlearnkit.models.tiny import tiny_model, tiny_tokenizer

    loaded = load_world(world)
    records = [*loaded.trained(), *loaded.holdout, *loaded.real_facts, *rehearsal_for(loaded), *loaded.general_text]
    texts = [r.passage_text if r.kind == "passage" else f"{r.question} {r.answer} {' '.join(r.perturbed_answers)}" for r in records]
    tokenizer = tiny_tokenizer(texts, vocab_size=1000)
    return save_subject(Subject(tiny_model(tokenizer, hidden_size=128, num_layers=4, intermediate_size=256, max_positions=512), tokenizer), out)


def prepare_tokens(world: Path, model: str, oracles: list[int]) -> dict[str, int]:
    """Tokens per epoch of every model prepare trains (its records and the rehearsal set, as
    encoded for training; length groups add some padding): what prepare's time is made of."""
    from unlearnkit.benchmark.prepare import encode_records, rehearsal_for
    from unlearnkit.data.world import load_world
    from unlearnkit.models.stack import load_subject

    loaded, subject = load_world(world), load_subject(model, device="cpu")
    rehearsal = rehearsal_for(loaded)
    count = lambda removed: sum(len(e["x"].input_ids) for e in encode_records(subject, loaded.trained(without=removed) + rehearsal))  # noqa: E731
    tokens = {"target": count(0), **{f"oracle-{t}": count(t) for t in oracles}}
    return {**tokens, "all": sum(tokens.values())}


def stream_plan(world: Path, model: str, method: dict[str, Any], coalesce: int, out: Path, args: argparse.Namespace) -> Any:
    from unlearnkit.plan import parse_plan

    data = yaml.safe_load(TEMPLATE.read_text())
    data.update(model=model, method=method, coalesce=coalesce, output=str(out), requests=[{"world": str(world)}])
    data["prepare"] = {**data.get("prepare", {}), "oracles": args.oracles}
    data["evaluation"] = {**data.get("evaluation", {}), "earlier": args.earlier, "full_every": args.full_every or None}
    if args.small:
        data["prepare"].update(max_steps=120, lr=3e-3, batch_size=16, precision="float32")
        data["evaluation"]["per_set"] = 2
        data["guard"] = {"collateral": 0, "general_probes": 1, "max_new_tokens": 8}
    return parse_plan(data, where="bench/stream.py plan", base=Path.cwd())


def utility_row(metrics: dict[str, dict[str, float | None]]) -> tuple[str | None, float | None]:
    row = metrics.get("utility", {})
    name = next(iter(row), None)
    return name, row.get(name) if name else None


def drift(step: dict[str, Any]) -> dict[str, Any]:
    """How the model stood after a step: its verdict, the guard's general-text perplexity and
    retain questions answered (after the step as kept), the evaluation's utility and general-text
    perplexity: over a stream, whether small losses add up."""
    card = step.get("verdict") or {}
    after = card.get("after") or {}
    metrics = step["metrics"]
    return {"verdict": card.get("verdict"), "guard_perplexity": after.get("perplexity"), "guard_retain_answered": after.get("retain_accuracy"),
            "utility": utility_row(metrics)[1], "general_text_perplexity": metrics.get("general_text", {}).get("perplexity")}


def figures(folder: Path, requests: int, upto: int | None = None) -> dict[str, Any]:
    """What the issue's "Measured" section asks of one run, read from its run folder (as it stood
    after step `upto`, if given)."""
    results = json.loads((folder / "results.json").read_text())
    references = json.loads((folder / "references.json").read_text()) if (folder / "references.json").exists() else {}
    check = json.loads((folder / "holdout_check.json").read_text()) if (folder / "holdout_check.json").exists() else {}
    if upto is not None:
        results["steps"] = [s for s in results["steps"] if s["step"] <= upto]
        results["flags"] = [f for f in results["flags"] if f["step"] <= upto]
        check["steps"] = {k: v for k, v in check.get("steps", {}).items() if int(k) <= upto}
    steps = {s["step"]: s for s in results["steps"]}
    applied_by = {r["id"]: r["step"] for r in results["requests"] if r["step"] is not None and r["step"] in steps}
    order = [r["id"] for r in results["requests"] if r["id"] in applied_by]  # all of them, unless stopped early (--partial)
    per_step = []
    for k in sorted({*(k for k in AT_REQUESTS if k <= len(order)), max(1, len(order) // 2), len(order)}):
        step = steps[applied_by[order[k - 1]]]
        cost = step["metrics"].get("evaluation", {})
        per_step.append({"request": k, "step": step["step"], "unlearn_s": step["unlearn_s"], "checkpoint_s": step["checkpoint_s"],
                         "eval_s": step["eval_s"], "score_items": cost.get("score_items"), "requests_measured": cost.get("requests"),
                         "full": bool(cost.get("full"))})
    every_step = [{"step": n, "unlearn_s": s["unlearn_s"], "eval_s": s["eval_s"], **{k: s["metrics"].get("evaluation", {}).get(k)
                   for k in ("requests", "earlier", "full", "score_items")}, **drift(s)} for n, s in sorted(steps.items())]
    last = max(steps)
    final = steps[last]["metrics"]
    oracle = references.get("oracles", {}).get(str(last), {})
    holdout = references.get("holdout", {}).get("probability")
    name, utility = utility_row(final)
    target_utility = references.get("target", {}).get("utility", {}).get(name) if name else None
    oracle_utility = oracle.get("utility", {}).get(name) if name else None
    forget = []
    for rid in order:
        value = final.get(rid, {}).get("probability")
        reference = oracle.get(rid, {}).get("probability")
        source = "oracle" if reference is not None else "holdout"
        reference = reference if reference is not None else holdout
        forget.append({"request": rid, "probability": value, "reference": reference, "reference_from": source,
                       "gap": None if value is None or reference is None else value - reference})
    gaps = [abs(f["gap"]) for f in forget if f["gap"] is not None]
    relapses = [f for f in results["flags"] if f["kind"] == "relapse"]
    budget = [f for f in results["flags"] if f["kind"] == "budget"]
    return {
        "steps": len(steps), "requests": len(order), "per_step": per_step, "every_step": every_step,
        "totals_s": {k: sum(s[k] or 0.0 for s in steps.values()) for k in ("unlearn_s", "checkpoint_s", "eval_s")},
        "utility": {"name": name, "after": utility, "target": target_utility, "oracle": oracle_utility, "oracle_step": last if oracle else None},
        "forget_probability": {"within_0.1": sum(g <= 0.1 for g in gaps), "measured": len(gaps), "mean_abs_gap": sum(gaps) / len(gaps) if gaps else None,
                               "max_abs_gap": max(gaps) if gaps else None, "per_request": forget},
        "relapses": {"requests": len({f["request_id"] for f in relapses}), "flags": len(relapses)},
        "budget": {"steps": len({f["step"] for f in budget}), "flags": budget},
        "holdout_check": {step: entry["summary"] for step, entry in check.get("steps", {}).items()},
        "checks": {
            "utility_at_least_0.9_of_target": None if utility is None or target_utility is None else utility >= 0.9 * target_utility,
            "utility_within_0.05_of_oracle": None if utility is None or oracle_utility is None else abs(utility - oracle_utility) <= 0.05,
            "every_forget_probability_within_0.1": bool(gaps) and len(gaps) == requests and max(gaps) <= 0.1,
        },
    }


def leak_check(leak: dict[str, dict[str, float | None]]) -> bool | None:
    """Every request's leak@k recovery at most 10 points over the oracle's; None where a request
    has no recovered fraction (unlearning left its metric at the target's: nothing to recover)."""
    pairs = [(v["recovered"], v["oracle_recovered"]) for v in leak.values()]
    if not pairs or any(a is None or b is None for a, b in pairs):
        return None
    return all(a - b <= 0.10 for a, b in pairs)


def demo_figures(folder: Path) -> dict[str, Any]:
    """The demo's run folder: forget quality per request, utility against the target's, leak@k
    recovery against the oracle's."""
    run = figures(folder, 3)
    results = json.loads((folder / "results.json").read_text())
    last = max(s["step"] for s in results["steps"])
    final = next(s for s in results["steps"] if s["step"] == last)["metrics"]
    quality = {r["id"]: final.get(r["id"], {}).get("forget_quality") for r in results["requests"]}
    attacks = json.loads((folder / "attacks.json").read_text()).get("results", []) if (folder / "attacks.json").exists() else []
    leak = {}
    for result in attacks:
        if result["attack"] != "leak_at_k":
            continue
        ours = [r["recovered"] for r in result["rows"] if r.get("recovered") is not None]
        theirs = [r["oracle_recovered"] for r in result["rows"] if r.get("oracle_recovered") is not None]
        leak[result["request"]] = {"recovered": sum(ours) / len(ours) if ours else None, "oracle_recovered": sum(theirs) / len(theirs) if theirs else None}
    utility = run["utility"]
    return {
        "forget_quality": quality, "utility": utility, "leak_at_k": leak,
        "checks": {
            "every_forget_quality_at_least_0.05": all(q is not None and q >= 0.05 for q in quality.values()),
            "utility_at_least_0.95_of_target": None if utility["after"] is None or utility["target"] is None else utility["after"] >= 0.95 * utility["target"],
            "leak_at_k_within_10_points_of_oracle": leak_check(leak),
        },
        "forget_probability": run["forget_probability"],
    }


def read_demo(folder: Path) -> dict[str, Any]:
    """A folder `unlearnkit demo` wrote: its recipe, verdicts, every calibration trial, timings and figures."""
    results = json.loads((folder / "results.json").read_text())
    timings = folder / "demo_timings.json"
    steps = sorted(results["steps"], key=lambda s: s["step"])
    return {
        "method": results["plan"].get("method"), "guard": results["plan"].get("guard"),
        "verdicts": [s.get("verdict", {}).get("verdict") for s in steps],
        "trials": [[{k: t[k] for k in ("lr", "epochs", "steps", "stop_reason", "rolled_back_to", "within_budget", "chosen", "seconds")}
                    for t in s.get("verdict", {}).get("trials", [])] for s in steps],
        "unlearn_s": [s["unlearn_s"] for s in steps], "train_steps": [s.get("train_steps") for s in steps],
        "timings": json.loads(timings.read_text()) if timings.exists() else None,
        **demo_figures(folder),
    }


def demo(name: str, work: Path, model: str, small: bool) -> dict[str, Any]:
    """`unlearnkit demo` (3 requests, small world) with a stream recipe and the stream plan's
    guard (its control-level forget target), and the demo's figures."""
    from unlearnkit.demo import run_demo

    folder = work / f"demo-{name}"
    guard = yaml.safe_load(TEMPLATE.read_text()).get("guard")
    tick = time.perf_counter()
    run_demo(folder, method=recipe(name, small), model=model, guard=guard)
    return {"recipe": name, "guard": guard, "seconds": time.perf_counter() - tick, **demo_figures(folder)}


def partial(plan: Any, name: str, coalesce: int) -> dict[str, Any]:
    """The figures of a run stopped before its last request: results.json, the references of the
    target and of the oracles of the steps applied, the holdout check, as `run` writes them at its end."""
    from unlearnkit.engine.runner import RunLock, open_run, write_holdout_check, write_references, write_results

    with RunLock(plan.output):  # not while the run itself goes on
        run = open_run(plan)
        try:
            write_results(run)
            write_references(run)
            write_holdout_check(run)
        finally:
            run.ledger.close()
    steps = len(json.loads((plan.output / "results.json").read_text())["steps"])
    # As it stood at each step with an oracle (its utility and forget probability against that
    # oracle's), and at the last step applied.
    at = sorted({*(t for t in plan.prepare.get("oracles", []) if t <= steps), steps}) if isinstance(plan.prepare, dict) else [steps]
    return {"bench": "stream", "partial": True, "model": plan.model, "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
            "runs": [{"recipe": name, "method": recipe(name, False), "coalesce": coalesce, "folder": str(plan.output), "after_step": t,
                      **figures(plan.output, t, upto=t)} for t in at]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--recipes", default="npo_replay,npo_gd,ssu", help="comma-separated; the first is also run at each --coalesce value")
    parser.add_argument("--coalesce", default="1,5", help="comma-separated: every recipe runs at the first, the first recipe at the others")
    parser.add_argument("--oracles", default="25,50,100", help="the steps that get a retrain oracle")
    parser.add_argument("--earlier", type=int, default=64, help="records of earlier requests measured per step")
    parser.add_argument("--full-every", type=int, default=25, help="0: full only at oracle steps and the last")
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument("--demo", action="store_true", help="also run the demo (3 requests, small world) with the first recipe")
    parser.add_argument("--demo-only", action="store_true", help="only the demo with the first recipe (no stream runs)")
    parser.add_argument("--small", action="store_true", help="a tiny model and 8 requests: checks the script, not the recipes")
    parser.add_argument("--tokens-only", action="store_true", help="write the world and prepare's tokens per epoch, train nothing")
    parser.add_argument("--partial", action="store_true", help="train nothing: the figures of the first run's folder as far as it got")
    parser.add_argument("--read-demo", default=None, help="train nothing: the demo figures of this `unlearnkit demo` folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=None, help="folder for the world and run folders (default runs/bench-stream[-small])")
    parser.add_argument("--out", default=None, help="default bench/results/stream[-small].json")
    args = parser.parse_args()
    if args.read_demo:
        from unlearnkit.files import write_json

        folder = Path(args.read_demo)
        out = Path(args.out or ROOT / "bench" / "results" / "demo.json")
        write_json(out, {"bench": "demo", "folder": str(folder), **read_demo(folder)})
        print(f"wrote {out}")
        return
    if args.small:
        args.requests, args.oracles, args.earlier, args.full_every = 8, "4,8", 6, 0
    args.oracles = [int(x) for x in args.oracles.split(",")]
    names = [n for n in args.recipes.split(",") if n]
    values = [int(x) for x in args.coalesce.split(",") if x]
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from unlearnkit.benchmark.prepare import PrepareSettings, prepare_world
    from unlearnkit.benchmark.world import build_world
    from unlearnkit.engine.runner import run_plan
    from unlearnkit.files import write_json

    suffix = "-small" if args.small else ""
    work = Path(args.work or f"runs/bench-stream{suffix}")
    out = Path(args.out or ROOT / "bench" / "results" / f"stream{suffix}.json")
    started = time.perf_counter()
    world = build_world(work / "world", seed=args.seed, size="stream", num_requests=args.requests)
    world_s = time.perf_counter() - started
    model = str(tiny_base(world, work / "tiny-base")) if args.small and args.model == "default" else args.model
    if args.demo_only:
        write_json(out, {"bench": "stream", "model": args.model, "demo": demo(names[0], work, model, args.small)})
        print(f"wrote {out}")
        return
    if args.partial:
        write_json(out, partial(stream_plan(world, model, recipe(names[0], args.small), values[0], work / f"{names[0]}-coalesce{values[0]}", args), names[0], values[0]))
        print(f"wrote {out}")
        return
    tokens = prepare_tokens(world, model, args.oracles)
    if args.tokens_only:
        write_json(out, {"bench": "stream", "model": args.model, "requests": args.requests, "oracles": args.oracles, "prepare_tokens_per_epoch": tokens})
        print(f"wrote {out}")
        return
    # Prepare on its own first, so its time is apart from the runs' (which then find it cached).
    first = stream_plan(world, model, recipe(names[0], args.small), values[0], work / "probe", args)
    tick = time.perf_counter()
    prepared = prepare_world(first.model, world, PrepareSettings(**(first.prepare or {})))
    prepare_s = time.perf_counter() - tick
    payload: dict[str, Any] = {
        "bench": "stream", "model": args.model if not args.small else "tiny (4 layers, 128 wide; prepared on the world)",
        "machine": {"cpu_count": os.cpu_count(), "threads": args.threads, "platform": platform.platform(),
                    "device": "cuda" if torch.cuda.is_available() else "cpu", "load_avg_at_start": list(os.getloadavg())},
        "settings": {"requests": args.requests, "recipes": names, "coalesce": values, "oracles": args.oracles, "earlier": args.earlier,
                     "full_every": args.full_every, "world_seed": args.seed, "plan_template": str(TEMPLATE.relative_to(ROOT))},
        "world_s": world_s,
        "prepare_tokens_per_epoch": tokens,
        "prepare": {"seconds": prepare_s, "trained_now": prepared.trained_any,
                    "models": [{"name": m.name, "trained_now": m.trained_now, "seconds": m.stats.get("seconds"), "tokens": m.stats.get("tokens")}
                               for m in prepared.models]},
        "runs": [],
    }
    jobs = [(name, values[0]) for name in names] + [(names[0], c) for c in values[1:]]
    for name, coalesce in jobs:
        folder = work / f"{name}-coalesce{coalesce}"
        plan = stream_plan(world, model, recipe(name, args.small), coalesce, folder, args)
        tick = time.perf_counter()
        run_plan(plan)
        wall = time.perf_counter() - tick
        payload["runs"].append({"recipe": name, "method": recipe(name, args.small), "coalesce": coalesce, "folder": str(folder),
                                "wall_s": wall, **figures(folder, args.requests)})
        write_json(out, payload)  # after every run: a long measurement keeps what it has
    payload["first_run_total_s"] = {"seconds": world_s + prepare_s + payload["runs"][0]["wall_s"],
                                    "cold": prepared.trained_any, "what": "world + prepare (target and oracles) + the first recipe's whole run"}
    runs = {(r["recipe"], r["coalesce"]): r for r in payload["runs"]}
    base = runs[(names[0], values[0])]
    payload["coalescing"] = [{"coalesce": c, "steps": runs[(names[0], c)]["steps"], "wall_s": runs[(names[0], c)]["wall_s"],
                              "saved_s": base["wall_s"] - runs[(names[0], c)]["wall_s"],
                              "saved_share": 1 - runs[(names[0], c)]["wall_s"] / base["wall_s"]} for c in values]
    if args.demo:
        payload["demo"] = demo(names[0], work, model, args.small)
    payload["load_avg_at_end"] = list(os.getloadavg())
    write_json(out, payload)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
