"""The sequential runner: `run_plan(plan)` applies removal requests one after another.

One step, for request t (see `run_plan`; with `coalesce: N`, a step applies up to N pending
requests together, as one request whose records are theirs):

    method(s).unlearn  ->  checkpoint (atomic)  ->  ledger step row (commit = step done)
    ->  evaluate requests 1..t, retain, utility (+ oracle t)  ->  metric rows (one commit)
    ->  housekeeping: status, purge of the request text, pruning of old checkpoints

Every request is measured on its own scope, coalesced or not. With `evaluation.earlier` a step
measures its own requests and a rotating sample of earlier ones (`engine.rotation`), and every
request at full steps (`full_every`, oracle steps, the last step); with a holdout set, forget
quality is also measured against the holdout reference (`eval.holdout`).

Resume: run the same plan again. Steps with a committed ledger row are skipped; a checkpoint
without a row (a crash between rename and commit) is deleted and its step redone from the
previous checkpoint; a step without metrics is evaluated again; housekeeping is idempotent.
Every step reseeds torch with `seed + step`, so a redone step gives the same weights.

After the last step, the final stages (plan key `final`), each cached in the run folder so a
rerun only does what is missing: `results.json`; `references.json` (the suite on the start model
and on every oracle, the report's reference lines) and `holdout_check.json` (the holdout
reference beside each oracle); `attacks.json` (attacks on the last step's model, with the
target and the last oracle under the same attacks); `report.html`.

Requests come from the plan's sources in order; with `submitted: true` last, also from the
ledger: requests appended by `unlearnkit serve` (text in `requests/<id>.jsonl`) follow the
plan's own in the order they arrived (`refresh_submitted`). The ledger decides what is done.

Starting: everything the plan names (request files, sets, the model source, the output
folder) is read and checked before the run folder is written; a folder this call created is
removed again when the run fails or is interrupted before its first step is committed, and a
folder whose ledger holds no step does not tie a corrected plan to the failed one.

Run folder:
    plan.yaml  ledger.sqlite  results.json  references.json  attacks.json  report.html
    requests/<name>.jsonl      the request text (deleted by `purge`); <name> is `names.safe_name(id)`
    checkpoints/step-NNN[...]  see engine/checkpoints.py
    eval/step-NNN.json         the full SuiteResult of each step (per item values included)
    eval/step-NNN/             the same in open-unlearning's layout (<NAME>_EVAL.json, _SUMMARY.json)
    eval/reference-*.json      the suite on the target and each oracle (final stage)
    eval/holdout-reference.json  the target on the holdout people (eval.holdout)
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from unlearnkit import distributed
from unlearnkit.data.loaders import load_records, load_requests, show_id, write_jsonl
from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.engine.checkpoints import Checkpoints
from unlearnkit.engine.faults import arm_training_crash, crash_point
from unlearnkit.engine.follower import Evaluation, Job, end_jobs, share_job
from unlearnkit.engine.ledger import Ledger, now
from unlearnkit.engine.rotation import schedule
from unlearnkit.errors import UnlearnkitError
from unlearnkit.eval.data import RECORD_ROLES, EvalData
from unlearnkit.eval.interop import write_ou_logs
from unlearnkit.eval.result import SuiteResult
from unlearnkit.eval.sequential import holdout_agreement, relapsed
from unlearnkit.files import remove_path, write_json, write_text
from unlearnkit.methods.base import METHODS, Method, UnlearnContext, get_method
from unlearnkit.models.loading import check_source
from unlearnkit.models.stack import load_subject
from unlearnkit.models.subject import Subject
from unlearnkit.names import safe_child
from unlearnkit.plan import Plan, PlanError
from unlearnkit.progress import console
from unlearnkit.safety.apply import apply_request
from unlearnkit.safety.measure import Measurement
from unlearnkit.safety.probes import build_probes, known_facts

Rows = list[tuple[str, str, float | None]]  # (scope, metric, value)


@dataclass
class Run:
    """Everything the steps share, loaded once."""

    plan: Plan
    folder: Path
    ledger: Ledger
    checkpoints: Checkpoints
    requests: list[ForgetRequest]  # in ledger order: the plan's own, then submitted ones
    data: EvalData  # retain, holdout and utility sets (requests are added per step)
    start_model: str  # the plan's model, or the prepared target of a built-in world
    oracles: dict[int, Path] = field(default_factory=dict)  # k -> retrain oracle without the world's first k requests
    planned: int = 0  # how many of `requests` come from the plan's own sources
    train_retain: list[Record] = field(default_factory=list)  # what unlearning keeps, where it is not the measured retain set
    world_ids: list[str] = field(default_factory=list)  # the world's request ids, in order (for the oracles)
    _start: Subject | None = None
    _known: list[Record] | None = None
    _holdout: SuiteResult | None = None
    _anchor: list[Record] | None = None

    def start_subject(self) -> Subject:
        """The model before any request (what attacks measure recovery against), loaded once."""
        if self._start is None:
            self._start = load(self, self.start_model)
        return self._start

    def known_facts(self) -> list[Record]:
        """The fact-bank questions the start model answers (guarded unlearning's collateral
        probes), asked once per start model and cached on disk."""
        if self._known is None:
            self._known = known_facts(self.start_subject(), source=self.start_model) if self.plan.guard.collateral else []
        return self._known

    def holdout_reference(self) -> SuiteResult | None:
        """The start model on the holdout people (`eval.holdout`), computed once and kept in
        `eval/holdout-reference.json`; None unless the plan asks for it
        (`evaluation.holdout_reference`) and has holdout questions."""
        if not self.plan.evaluation.holdout_reference:
            return None
        path = self.folder / "eval" / "holdout-reference.json"
        if self._holdout is None and path.exists():
            self._holdout = SuiteResult.load(path)
        if self._holdout is None and any(r.kind == "qa" for r in self.data.holdout):
            from unlearnkit.eval.holdout import holdout_reference

            console.print("[bold]holdout reference[/bold]: the start model on the holdout people")
            self._holdout = holdout_reference(plan_suite(self.plan), self.start_subject(), self.data.holdout)
            if self._holdout is not None:
                self._holdout.save(path)
        return self._holdout

    def anchor_passages(self, methods: list[Method]) -> list[Record]:
        """The run's anchor passages (`methods.anchor`) for methods that train on them: written by
        the start model once, kept in `anchor-passages.jsonl` so a resumed run trains on the same."""
        count = max((m.anchor_wanted for m in methods), default=0)
        if not count:
            return []
        path = self.folder / "anchor-passages.jsonl"
        if self._anchor is None and path.exists():
            self._anchor = load_records(path)
        if self._anchor is None:
            from unlearnkit.methods.anchor import anchor_passages

            console.print(f"[bold]anchor passages[/bold]: {count} paragraphs the start model writes, and its log-probs on them")
            wanting = next(m for m in methods if m.anchor_wanted == count)
            self._anchor = anchor_passages(self.start_subject(), count, wanting.train_config())  # type: ignore[attr-defined]
            write_jsonl(path, self._anchor)
        return self._anchor

    def say(self, step: int, text: str, group: list[ForgetRequest] | None = None) -> None:
        """A progress line; `group` for a step not committed yet (the ledger knows the others)."""
        label = group_label(group or self.group(step))
        console.print(f"[bold]step {step}[/bold] {label} (of {len(self.requests)} requests): {text}")

    # -- which requests a step applied: the ledger decides ------------------------------------
    def group(self, step: int) -> list[ForgetRequest]:
        """The requests a committed step applied."""
        steps = self.ledger.request_steps()
        return [r for r in self.requests if steps.get(r.id) == step]

    def through(self, step: int) -> list[ForgetRequest]:
        """Every request applied by steps 1..`step` whose text is still here, in order (a purged
        submitted request has no copy left anywhere, so later steps cannot measure it)."""
        steps = self.ledger.request_steps()
        return [r for r in self.requests if steps.get(r.id, step + 1) <= step and r.records]

    def oracle_for(self, step: int) -> Path | None:
        """The retrain oracle of the model after `step`: the one without exactly the requests
        applied so far, where those are the world's first k (prepared by `prepare`)."""
        steps = self.ledger.request_steps()
        ids = [r.id for r in self.requests if steps.get(r.id, step + 1) <= step]
        return self.oracles.get(len(ids)) if ids == self.world_ids[: len(ids)] else None

    def measured(self, step: int) -> tuple[list[ForgetRequest], bool]:
        """The requests the evaluation after `step` measures (its own, then the earlier ones the
        rotation picks, in ledger order) and whether the step measures every request."""
        spec, own = self.plan.evaluation, self.ledger.request_steps()
        applied = {rid: s for rid, s in own.items() if s <= step}
        last = len(own) == len(self.requests) and step == max(own.values(), default=0)
        full_steps = {t for t in range(1, step + 1) if self.oracle_for(t) is not None or (spec.full_every and t % spec.full_every == 0)}
        if last:
            full_steps.add(step)
        per_set = spec.per_set if spec.per_set is not None else plan_suite(self.plan).per_set
        items = {r.id: len(r.records) for r in EvalData(requests=self.through(step)).limited(per_set).requests}
        earlier = set(schedule(applied, items, spec.earlier, full_steps, self.plan.seed, step)[step])
        return [r for r in self.through(step) if applied[r.id] == step or r.id in earlier], step in full_steps or spec.earlier is None


def run_plan(plan: Plan) -> Path:
    """Apply every request of the plan in order (resuming a killed run); returns the run folder."""
    check_source(plan.model)  # before the run folder exists: a wrong model writes nothing
    if not distributed.is_main():  # several processes: the others train each step with rank 0 (engine/follower.py)
        from unlearnkit.engine.follower import follow_plan

        follow_plan(plan)
        return plan.output
    if distributed.world_size() > 1:
        sharded = " (FSDP 2: weights, gradients and optimizer sharded while training)" if distributed.sharded() else ""
        console.print(f"training on {distributed.world_size()} processes{sharded}; rank 0 writes, all of them evaluate")
    with _run_folder(plan.output):
        run = open_run(plan)
        with distributed.solo():  # reading, evaluating and writing: rank 0 alone, the others wait
            prepare_references(run)
            subject = resume(run)
        methods = plan_methods(plan)
        while group := next_group(run):
            step = len(run.ledger.steps()) + 1
            subject = unlearn_step(run, step, group, subject, methods)
            evaluate_step(run, step, subject)  # the others score their share of the suite
            with distributed.solo():
                finish_step(run, step)
        end_jobs()
        with distributed.solo():
            final_stages(run, subject)
        run.ledger.close()
    console.print(f"run complete: {len(run.requests)} requests, ledger {run.ledger.path}")
    return run.folder


def resume(run: Run) -> Subject:
    """Finish what a killed run left behind (unfinished checkpoints removed, committed steps
    evaluated and housekept) and return the model after the last committed step."""
    done = run.ledger.steps()
    removed = run.checkpoints.clean({s.step for s in done})
    if done or removed:
        console.print(f"resuming {run.folder}: {len(done)} step(s) done, {len(run.ledger.request_steps())} of {len(run.requests)} requests applied"
                      + (f", removed {len(removed)} unfinished checkpoint(s)" if removed else ""))
    subject = load_step(run, len(done))
    for row in done:  # a crash after the step's commit: finish what is missing
        if not row.evaluated:
            evaluate_step(run, row.step, subject if row.step == len(done) else load_step(run, row.step))
        finish_step(run, row.step)
    return subject


def prepare_references(run: Run) -> None:
    """What the steps compare with and is the same for all of them, computed (or read back) once
    before the first: the holdout reference and, for the guard, the facts the start model knows.
    So no step's timings carry this one-off cost (a finished run has nothing left to compute)."""
    unevaluated = any(not s.evaluated for s in run.ledger.steps())
    pending = len(run.ledger.request_steps()) < len(run.requests)
    if unevaluated or pending:
        run.holdout_reference()
    if pending and run.plan.guard.enabled:
        run.known_facts()


def plan_methods(plan: Plan) -> list[Method]:
    return [get_method(m.name, with_plan_precision(m.name, m.settings, plan.precision)) for m in plan.method]


def next_group(run: Run) -> list[ForgetRequest]:
    """The requests of the next step: the first pending ones in order, at most `coalesce`.

    Pending requests are those after the applied ones, so a resumed run forms the same groups.
    """
    applied = len(run.ledger.request_steps())
    return run.requests[applied : applied + run.plan.coalesce]


def coalesced(group: list[ForgetRequest]) -> ForgetRequest:
    """One request standing for a group applied in one step: their records and probes, in order."""
    if len(group) == 1:
        return group[0]
    return ForgetRequest(id=group_label(group), kind=group[0].kind if len({r.kind for r in group}) == 1 else "free",
                         received_at=group[-1].received_at, records=[x for r in group for x in r.records],
                         probes=[x for r in group for x in r.probes], meta={"coalesced": [r.id for r in group]})


def group_label(group: list[ForgetRequest]) -> str:
    return group[0].id if len(group) == 1 else f"{group[0].id}..{group[-1].id}" if group else "-"


@contextmanager
def _run_folder(folder: Path) -> Iterator[None]:
    """Create and lock the run folder. When this call created it and the run stops (an error, a
    signal) before its first step is committed, it holds nothing worth keeping: it is removed
    again, under the lock (so never from under another run), and a corrected rerun starts clean."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    with RunLock(folder):  # a folder another run holds fails here, before anything is removed
        try:
            yield
        except BaseException:
            if created:
                _remove_failed_start(folder)
            raise


def _remove_failed_start(folder: Path) -> None:
    """Remove the folder unless its ledger holds a step (or cannot be read: then keep it)."""
    ledger_path = folder / "ledger.sqlite"
    if ledger_path.exists():
        try:
            ledger = Ledger(ledger_path)
            applied = ledger.steps()
            ledger.close()
        except UnlearnkitError:
            return  # cannot tell: keep it
        if applied:
            return
    remove_path(folder)


# -- one step ----------------------------------------------------------------------------------
def unlearn_step(run: Run, step: int, group: list[ForgetRequest], subject: Subject, methods: list[Method]) -> Subject:
    """Methods, then the checkpoint, then the ledger row: the commit that makes the step done."""
    request = coalesced(group)
    started, tick = now(), time.perf_counter()
    torch.manual_seed(run.plan.seed + step)  # LoRA dropout and friends: a redone step repeats exactly
    # Real-knowledge questions tell a guardrail what it must keep answering (its calibration);
    # earlier requests and never-trained records are there for stream recipes (`npo_replay`).
    context = UnlearnContext(retain=run.train_retain or run.data.retain, seed=run.plan.seed + step, lora=run.plan.lora,
                             extras={"utility": run.data.real_facts},
                             earlier=[x for r in run.through(step - 1) for x in r.records], control=run.data.holdout)
    with distributed.solo():  # rank 0's to make: the job carries them
        context.anchor = run.anchor_passages(methods)
    guard, data = run.plan.guard, run.data
    probes = None
    if guard.enabled:
        with distributed.solo():  # rank 0's to make: the job carries them
            probes = build_probes(subject, request, guard, retain=data.retain, known=run.known_facts(),
                                  general=data.general_text or None, control=data.holdout, seed=run.plan.seed)
    anchor = run_start_measurement(run)
    share_job(Job(step, request, context, probes, torch.get_rng_state(), anchor))  # the other processes train it too
    hook = arm_training_crash(step)
    run.say(step, f"unlearn ({run.plan.label}, {len(request.records)} records{', guarded' if guard.enabled else ''})", group)
    applied = apply_request(subject, request, methods, context, guard, probes, anchor)
    subject, tokens, train_steps = applied.subject, applied.tokens, applied.steps
    if hook is not None:
        hook.remove()
    if applied.card is not None:
        console.print(applied.card.table())
    unlearn_s, tick = time.perf_counter() - tick, time.perf_counter()
    run.say(step, f"checkpoint ({run.checkpoints.keep})", group)
    meta = {"step": step, "request": request.id, "requests": [r.id for r in group], "method": run.plan.label, "seed": run.plan.seed, "start_model": run.start_model}
    path = run.checkpoints.write(step, subject, meta, before_rename=lambda: crash_point("checkpoint", step))
    checkpoint_s = time.perf_counter() - tick
    crash_point("ledger", step)
    run.ledger.record_step(step, group[0].id, run.plan.label, str(path.relative_to(run.folder)), started_at=started,
                           unlearn_s=unlearn_s, checkpoint_s=checkpoint_s, tokens=tokens, train_steps=train_steps,
                           card=applied.card.to_json() if applied.card else None, coalesced=[r.id for r in group[1:]])
    return subject


def run_start_measurement(run: Run) -> Measurement | None:
    """The run's start model as its first guarded request measured it (that card's "before"):
    what `Budget.since_start` holds every later request to. None before the first card."""
    card = run.ledger.first_verdict()
    return Measurement.from_json(card["before"]) if card else None


def evaluate_step(run: Run, step: int, subject: Subject) -> None:
    """The step's requests, earlier ones (all, or the rotation's sample), retain, utility
    (+ oracle, + holdout reference); metric rows and flags in one commit. Under several
    processes working together, every one runs the suite (each scores its share of the batches)
    and rank 0 alone does the rest."""
    tick = time.perf_counter()
    with distributed.solo():
        measured, full = run.measured(step)
        data = replace(run.data, requests=measured)
        oracle_path = run.oracle_for(step)
        oracle = load(run, oracle_path) if oracle_path is not None else None
        holdout = run.holdout_reference()
        applied = len(run.through(step))
        run.say(step, f"evaluate ({run.plan.evaluation.suite}: {len(measured)} of {applied} requests{'' if full else ' (rotation)'}, "
                      f"retain, utility{', oracle' if oracle else ''})")
    share_job(Evaluation(step, data, oracle_path, holdout))
    result = suite_evaluate(run.plan, subject, data, oracle, holdout)
    with distributed.solo():
        rows: Rows = [(r.scope, r.metric, r.value) for r in result.rows]
        rows += evaluation_rows(result, len(measured), len(measured) - len(run.group(step)), full)
        for name in run.plan.attacks:
            run.say(step, f"attack ({name})")
            rows += run_attack(name, subject, data, target=run.start_subject(), oracle=oracle)
        crash_point("eval", step)
        result.save(run.folder / "eval" / f"step-{step:03d}.json")
        write_ou_logs(result, run.folder / "eval" / f"step-{step:03d}")  # open-unlearning's layout too
        flags = relapses(run, step, rows)
        for request_id, _, metric, value, threshold in flags:
            run.say(step, f"[yellow]relapse: {request_id} {metric} = {value:.3f} is above {threshold} again[/yellow]")
        run.ledger.record_evaluation(step, rows, time.perf_counter() - tick, flags)


def evaluation_rows(result: SuiteResult, requests: int, earlier: int, full: bool) -> Rows:
    """What the step's evaluation cost, as rows of scope `evaluation`: requests measured (and
    of those, earlier ones), whether every request was, and the items the suite scored and
    generated (forward passes after sharing: the measure of cost that seconds are not)."""
    return [("evaluation", "requests", float(requests)), ("evaluation", "earlier", float(earlier)), ("evaluation", "full", float(full)),
            ("evaluation", "score_items", float(result.passes.get("score_computed", 0))),
            ("evaluation", "generations", float(result.passes.get("generate_computed", 0)))]


def finish_step(run: Run, step: int) -> None:
    """After a verified step: status, purge, pruning. Idempotent, so a crash here is harmless."""
    crash_point("purge", step)
    group = {r.id for r in run.group(step)}
    for position, request in enumerate(run.requests):
        if request.id not in group:
            continue
        status = run.ledger.request_status(request.id)
        if run.plan.purge and status != "purged":
            for copy in request_copies(run.folder, request.id):
                copy.unlink(missing_ok=True)
            run.ledger.set_status(request.id, "purged")
        elif not run.plan.purge and status == "applied":
            run.ledger.set_status(request.id, "verified")
        if run.plan.purge and position >= run.planned:  # a submitted request's only copy is gone
            run.requests[position] = purged_request(request.id, request.kind)
    steps = run.ledger.steps()
    for old in run.checkpoints.to_prune([s.step for s in steps if s.evaluated], run.plan.checkpoints.last):
        if next(s for s in steps if s.step == old).kept:
            run.ledger.mark_pruned(old)  # ledger first: a crash leaves a file the ledger disowns
        run.checkpoints.remove(old)


# -- evaluation adaptors (the only code that knows the eval API) --------------------------------
def plan_suite(plan: Plan) -> Any:
    """The plan's suite with its per-set cut and generation cap."""
    from unlearnkit.eval.suites import get_suite, with_max_new_tokens

    suite = get_suite(plan.evaluation.suite)
    if plan.evaluation.per_set is not None:
        suite = replace(suite, per_set=plan.evaluation.per_set)
    if plan.evaluation.max_new_tokens is not None:
        suite = with_max_new_tokens(suite, plan.evaluation.max_new_tokens)
    return suite


def suite_evaluate(plan: Plan, subject: Subject, data: EvalData, oracle: Subject | None, holdout: SuiteResult | None = None) -> Any:
    from unlearnkit.eval.suites import evaluate

    suite = plan_suite(plan)
    result = evaluate(suite, subject, data, oracle, holdout=holdout)
    if plan.evaluation.lm_eval:
        from unlearnkit.eval.lm_eval import add_lm_eval, run_lm_eval

        scores = run_lm_eval(subject, plan.evaluation.lm_eval, include_path=plan.evaluation.lm_eval_include, limit=plan.evaluation.lm_eval_limit)
        add_lm_eval(result, scores, suite.utility_name if suite.utility else None)
    return result


def run_attack(name: str, subject: Subject, data: EvalData, target: Subject | None, oracle: Subject | None) -> Rows:
    """Attack rows named `attack:<name>:<variant>/<metric>[/before|/recovered]`; the start model
    is the target the recovered fractions are measured against."""
    from unlearnkit.eval.attacks import run_attack as attack

    result = attack(name, subject, data, target=target, oracle=oracle)
    return [(r.scope, f"attack:{name}:{r.metric}", r.value) for r in result.rows]


def relapses(run: Run, step: int, rows: Rows) -> list[tuple[str, str, str, float, float]]:
    """Earlier requests whose forget metric is back over the threshold after their own step had
    brought it under (the rule of `eval.sequential.relapsed`)."""
    spec = run.plan.relapse
    if spec is None:
        return []
    current = {scope: value for scope, name, value in rows if name == spec.metric}
    own_steps = run.ledger.request_steps()
    flags = []
    for request in run.requests:
        own_step = own_steps.get(request.id)
        if own_step is None or own_step >= step:
            continue
        baseline, value = run.ledger.metric(own_step, request.id, spec.metric), current.get(request.id)
        if relapsed(baseline, value, spec.threshold, spec.higher_means_remembered):
            flags.append((request.id, "relapse", spec.metric, value, spec.threshold))
    return flags


# -- opening a run -----------------------------------------------------------------------------
def plan_fingerprint(plan: Plan) -> str:
    """The plan as canonical JSON, what a resumed run must match. `service` is left out (how the
    service runs, not what is applied), and so are keys added after runs existed while they keep
    their defaults (`coalesce: 1`, `submitted: false`, `precision: auto`, `evaluation.earlier`
    and `evaluation.full_every` unset, `evaluation.holdout_reference: false`), so an older run
    still resumes."""
    data = plan.model_dump(mode="json", exclude={"source", "service"})
    if data["coalesce"] == 1:
        del data["coalesce"]
    if data["precision"] == "auto":
        del data["precision"]
    for source in data["requests"]:
        if not source["submitted"]:
            del source["submitted"]
    for key, default in (("earlier", None), ("full_every", None), ("holdout_reference", False)):
        if data["evaluation"][key] == default:
            del data["evaluation"][key]
    return json.dumps(data, sort_keys=True)


def open_run(plan: Plan) -> Run:
    folder = plan.output
    requests, data, worlds, train_retain = load_requests_and_data(plan)  # all read and checked before writing
    ledger = Ledger(folder / "ledger.sqlite")
    fingerprint = plan_fingerprint(plan)
    recorded = ledger.meta("plan")
    if recorded is not None and recorded != fingerprint:
        if ledger.steps():
            raise PlanError(f"{plan.source}: the plan changed since run {folder} started; resume needs the same plan (or use a new output folder)")
        restart(folder, ledger, "the plan changed")
        recorded = None
    if recorded is None:
        ledger.set_meta("plan", fingerprint)
        write_text(folder / "plan.yaml", yaml.safe_dump(json.loads(fingerprint), sort_keys=False))
    try:
        ledger.register_requests(requests, submitted=plan.takes_submitted)
    except UnlearnkitError:
        if ledger.steps():
            raise
        restart(folder, ledger, "the requests changed")
        ledger.set_meta("plan", fingerprint)
        ledger.register_requests(requests, submitted=plan.takes_submitted)
    for request in requests:  # the run's own copy of the text, until purged
        copy = request_copy(folder, request.id)
        if ledger.request_status(request.id) != "purged" and not copy.exists():
            write_jsonl(copy, [request])
    start_model, oracles, world_ids = plan.model, {}, []
    if plan.prepare is not None:
        start_model, oracles, world_ids = _prepared(plan, worlds[0])
    checkpoints = Checkpoints(folder / "checkpoints", plan.checkpoints.keep)
    run = Run(plan, folder, ledger, checkpoints, requests, data, start_model, oracles, planned=len(requests),
              train_retain=train_retain, world_ids=world_ids)
    refresh_submitted(run)
    return run


def refresh_submitted(run: Run) -> list[ForgetRequest]:
    """Append to `run.requests` the submitted requests the ledger holds beyond them (in arrival
    order), read from the run folder's `requests/<id>.jsonl`; returns the new ones."""
    if not run.plan.takes_submitted:
        return []
    rows = [row for row in run.ledger.requests() if row["position"] > len(run.requests)]
    new = [load_submitted(run.folder, row["id"], row["kind"], row["status"]) for row in rows]
    run.requests += new
    return new


def load_submitted(folder: Path, request_id: str, kind: str, status: str) -> ForgetRequest:
    if status == "purged":
        return purged_request(request_id, kind)
    path = request_copy(folder, request_id)
    if not path.exists():
        raise UnlearnkitError(f"{path}: missing; the ledger holds submitted request '{request_id}' (status {status}) but its text is gone")
    (request,) = load_requests(path)
    return request


def purged_request(request_id: str, kind: str) -> ForgetRequest:
    """A submitted request whose text was purged: its id only (no records to measure)."""
    return ForgetRequest.model_construct(id=request_id, kind=kind, records=[], probes=[], meta={"purged": True})


def request_copy(folder: Path, request_id: str) -> Path:
    """The run folder's copy of a request's text, until purged: a safe name made from the id
    (`names.safe_name`), so no id can write outside `requests/` (the ledger keeps the real id)."""
    return safe_child(folder / "requests", request_id, ".jsonl")


def request_copies(folder: Path, request_id: str) -> list[Path]:
    """Every copy that may hold a request's text: its safe name, and the raw-id name that runs
    written before safe names used (only where that name is one plain entry of `requests/`)."""
    copies = [request_copy(folder, request_id)]
    legacy = f"{request_id}.jsonl"
    plain = not any(c in legacy for c in "/\\\0") and len(legacy.encode("utf-8", "replace")) < 256
    if plain and legacy != copies[0].name and legacy.isprintable():
        copies.append(folder / "requests" / legacy)
    return copies


def restart(folder: Path, ledger: Ledger, why: str) -> None:
    """A run folder whose ledger holds no step (a start killed or failed before its first
    step): nothing was applied, so the plan now given starts it afresh. The recorded plan and
    requests are forgotten and their old copies removed (they are ours, and a purge of the new
    plan would not know them); requests submitted to the service stay, with their copies."""
    console.print(f"{folder}: {why}, but no step was applied: starting afresh")
    ledger.restart()  # keeps requests submitted to the service: their copies are their only text
    kept = {path for row in ledger.requests() for path in request_copies(folder, row["id"])}
    for copy in (folder / "requests").glob("*.jsonl"):
        if copy not in kept:
            copy.unlink()


def load_requests_and_data(plan: Plan) -> tuple[list[ForgetRequest], EvalData, list[Path], list[Record]]:
    """The ordered requests, and the sets around them: a benchmark's or a world's own, then the
    plan's files; and what unlearning keeps where a benchmark trains on another retain set."""
    requests: list[ForgetRequest] = []
    data, worlds, train_retain = EvalData(), [], []
    if plan.benchmark is not None:
        from unlearnkit.data.benchmarks import load_benchmark

        spec = plan.benchmark
        bench = load_benchmark(spec.name, spec.data_dir, training=True, stream=spec.stream)
        data = replace(EvalData.from_benchmark(bench), requests=[])
        requests, train_retain = list(bench.requests), bench.train_retain
    for source in plan.requests:
        if source.world is not None:
            world = EvalData.from_world(source.world)
            requests += world.requests[: source.first]
            if not worlds and plan.benchmark is None:
                data = replace(world, requests=[])
            worlds.append(source.world)
        elif source.file is not None:
            requests += load_requests(source.file, source.kind)
        # `submitted: true` adds nothing here: those requests are in the ledger (refresh_submitted)
    seen: set[str] = set()
    for request in requests:
        if request.id in seen:
            raise PlanError(f"{plan.source}: requests: request id {show_id(request.id)} appears twice")
        seen.add(request.id)
    for path in plan.retain:
        data.retain = data.retain + load_records(path)
    if plan.utility:
        extra = EvalData.from_files(plan.utility)
        for role in RECORD_ROLES:
            setattr(data, role, getattr(data, role) + getattr(extra, role))
    return requests, data, worlds, train_retain


def _prepared(plan: Plan, world: Path) -> tuple[str, dict[int, Path], list[str]]:
    """The world's target (start model), its oracles (k -> the model trained without the world's
    first k requests) and the world's request ids; `Run.oracle_for` matches them to steps."""
    from unlearnkit.benchmark.prepare import PrepareSettings, prepare_world

    prepared = prepare_world(plan.model, world, PrepareSettings(**(plan.prepare or {})))
    world_ids = [r.id for r in EvalData.from_world(world).requests]
    oracles = dict(prepared.oracles) if plan.evaluation.oracle else {}
    return str(prepared.target), oracles, world_ids


def load_step(run: Run, step: int) -> Subject:
    """The model after `step` (0: the start model)."""
    if step == 0 or run.checkpoints.deltas:
        subject = load(run, run.start_model)
        if run.checkpoints.deltas:
            run.checkpoints.set_base(subject.model)
            if step > 0:
                run.checkpoints.apply_delta(step, subject.model)
        return subject
    return load(run, run.checkpoints.path(step))


def load(run: Run, source: str | Path) -> Subject:
    """Any model of the run (start model, checkpoint, oracle) in the plan's format, dtype, device."""
    return load_subject(source, fmt=run.plan.format, dtype=run.plan.dtype, device=run.plan.device, precision=run.plan.precision)


# -- after the last step: the final stages --------------------------------------------------------
def final_stages(run: Run, last: Subject) -> None:
    """results.json, then the plan's `final` stages; each cached, so a rerun does only what is missing."""
    final = run.plan.final
    write_results(run)
    if not run.ledger.steps():  # nothing applied yet (a plan that waits for submitted requests)
        return
    if final.references:
        write_references(run)
        write_holdout_check(run)
    if final.attacks:
        write_attacks(run, last)
    if final.report:
        from unlearnkit.report.html import write_report

        console.print(f"report: {write_report(run.folder)}")


def write_results(run: Run) -> Path:
    """results.json: the ledger's steps, metrics by step and scope, and flags."""
    metrics: dict[int, dict[str, dict[str, float | None]]] = {}
    for row in run.ledger.metrics():
        metrics.setdefault(row["step"], {}).setdefault(row["scope"], {})[row["name"]] = row["value"]
    verdicts = run.ledger.verdicts()
    payload = {
        "plan": json.loads(run.ledger.meta("plan") or "{}"),
        "requests": [dict(r) for r in run.ledger.requests()],
        "steps": [s.__dict__ | {"metrics": metrics.get(s.step, {}), "verdict": verdicts.get(s.step)} for s in run.ledger.steps()],
        "flags": [dict(f) for f in run.ledger.flags()],
    }
    return write_json(run.folder / "results.json", payload)


def _reference_eval(run: Run, name: str, source: str | Path) -> SuiteResult:
    path = run.folder / "eval" / f"reference-{name}.json"
    if path.exists():
        return SuiteResult.load(path)
    console.print(f"[bold]reference[/bold] {name}: evaluating ({run.plan.evaluation.suite})")
    result = suite_evaluate(run.plan, load(run, source), replace(run.data, requests=[r for r in run.requests if r.records]), None)
    result.save(path)
    return result


def write_references(run: Run) -> Path:
    """`references.json`: {"target": {scope: {metric: value}}, "oracles": {step: {...}}}, the
    suite on the start model and on each step's retrain oracle (every request measured)."""
    target = _reference_eval(run, "target", run.start_model)
    paths = {s.step: run.oracle_for(s.step) for s in run.ledger.steps()}
    oracles = {step: _reference_eval(run, f"oracle-{step:03d}", path).aggregates() for step, path in paths.items() if path is not None}
    payload: dict[str, Any] = {"suite": run.plan.evaluation.suite, "target": target.aggregates(), "oracles": oracles}
    holdout = run.holdout_reference()
    if holdout is not None:
        payload["holdout"] = holdout.aggregates().get("holdout", {})
    return write_json(run.folder / "references.json", payload)


def write_holdout_check(run: Run) -> Path | None:
    """`holdout_check.json`: at every step with an oracle, the holdout reference beside the
    oracle for each request applied so far (`eval.sequential.holdout_agreement`), printed."""
    holdout = run.holdout_reference()
    if holdout is None:
        return None
    steps = {}
    for row in run.ledger.steps():
        path = run.folder / "eval" / f"reference-oracle-{row.step:03d}.json"
        if run.oracle_for(row.step) is None or not path.exists():
            continue
        measured = SuiteResult.load(run.folder / "eval" / f"step-{row.step:03d}.json")
        ids = [r.id for r in run.through(row.step)]
        steps[row.step] = holdout_agreement(ids, measured, SuiteResult.load(path), holdout)
    if not steps:
        return None
    for step, check in steps.items():
        summary = check["summary"]
        console.print(f"[bold]holdout reference vs oracle[/bold] after step {step} ({summary['requests']} requests): "
                      f"forget probability oracle {summary['oracle_probability']:.3f} vs holdout {summary['holdout_probability']:.3f} "
                      f"(mean |difference| {summary['mean_abs_probability_gap']:.3f}); forget quality vs oracle "
                      f"{summary['forget_quality_oracle']:.3f}, vs holdout {summary['forget_quality_holdout']:.3f}; "
                      f"same pass/fail at 0.05: {summary['same_verdict']:.0%}")
    return write_json(run.folder / "holdout_check.json", {"steps": steps})


def write_attacks(run: Run, last_subject: Subject) -> Path:
    """`attacks.json`: the plan's final attacks on the last step's model, with target and oracle."""
    from unlearnkit.eval.attacks import run_attacks

    final = run.plan.final
    out = run.folder / "attacks.json"
    if out.exists() and json.loads(out.read_text()).get("names") == final.attacks:
        return out
    last = run.ledger.steps()[-1].step
    oracle_path = run.oracle_for(last)
    oracle = load(run, oracle_path) if oracle_path is not None else None
    data = replace(run.data, requests=run.through(last)).limited(run.plan.evaluation.per_set)
    console.print(f"[bold]attacks[/bold] after step {last}: {', '.join(final.attacks)}")
    results = run_attacks(final.attacks, last_subject, data, target=run.start_subject(), oracle=oracle, settings=final.attack_settings)
    return write_json(out, {"names": final.attacks, "step": last, "settings": final.attack_settings, "results": [r.to_json() for r in results]})


class RunLock:
    """An exclusive lock on the run folder (released by the OS even on SIGKILL); `run` holds it
    for a run, `serve` for its whole life."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"

    def acquire(self) -> None:
        self.handle = self.path.open("w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise UnlearnkitError(f"{self.path.parent}: another unlearnkit run or service is using this folder") from None
        self.handle.write(str(os.getpid()))
        self.handle.flush()

    def release(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def with_plan_precision(name: str, settings: dict[str, Any], precision: str) -> dict[str, Any]:
    """A training method's settings with the plan's `precision` where the method sets none."""
    if "precision" in settings or "precision" not in METHODS.get(name).model_fields:
        return settings
    return {**settings, "precision": precision}
