"""A run plan: what `unlearnkit run PLAN` does, as a validated YAML file.

```yaml
model: default                  # or a model folder, a .gguf file, a hub id
method: ssu                     # or {name: ssu, settings: {lr: 1e-4}}, or a list to stack
requests:                       # applied in this order
  - world: runs/world           # every forget request of a built-in world
  - examples/requests.jsonl     # or request files
  - submitted: true             # then the requests submitted to `unlearnkit serve` (last only)
coalesce: 1                     # requests applied together in one step (each still measured on its own)
benchmark: {name: tofu:forget10, data_dir: data/TOFU}  # or a benchmark's request(s) and sets
retain: [examples/retain.jsonl] # a built-in world adds its retain set by itself
evaluation: {suite: quick, per_set: 8, earlier: 64, full_every: 25, holdout_reference: true}  # for long streams
prepare: true                   # start from the world's target, compare with its oracles ({oracles: [25, 50, 100]})
attacks: []
output: runs/seq
seed: 0
checkpoints: {keep: last:2}     # all | last:N | deltas
purge: false
relapse: {metric: probability, threshold: 0.5}
final: {references: true, attacks: [leak_at_k], attack_settings: {leak_at_k: {n: 8}}, report: true}
guard: {budget: {retain_drop: 0.05}, target: {probability: control}, calibrate: {enabled: false}}
service: {retire_guard: false, max_body_bytes: 1048576}   # `unlearnkit serve` only
```

Relative paths are resolved against the plan file's folder. Every error is one line that names
the file and the key: `plan.yaml: method.settings.lr: Input should be greater than 0`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from unlearnkit.errors import OutputError, UnlearnkitError, did_you_mean, one_line, printable
from unlearnkit.files import check_output_folder
from unlearnkit.registry import SettingError
from unlearnkit.safety.settings import Guard


class PlanError(UnlearnkitError):
    """A plan file that cannot be run, with the key that is wrong."""


RUN_MARKER = "ledger.sqlite"  # a folder holding it is a run folder (engine/runner.py)
MAX_PLAN_BYTES = 2**20  # a plan names files; it does not hold data
MAX_PLAN_NODES = 100_000  # values once YAML aliases are expanded (an alias bomb stops here)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MethodSpec(Strict):
    name: str
    settings: dict[str, Any] = Field(default_factory=dict)


class RequestSource(Strict):
    """One entry of `requests`: a request file (or folder), a built-in world's requests, or the
    requests submitted to `unlearnkit serve` (kept in the run folder: its ledger and `requests/`)."""

    file: Path | None = None
    world: Path | None = None
    submitted: bool = False
    kind: str = "free"  # the kind given to a plain records file
    first: int | None = Field(None, ge=0, description="a world's first N requests only (e.g. to compare methods on one); 0: only its data and target")

    @model_validator(mode="after")
    def _one_of(self) -> RequestSource:
        if (self.file is not None) + (self.world is not None) + self.submitted != 1:
            raise ValueError("give exactly one of 'file', 'world' or 'submitted: true'")
        if self.first is not None and self.world is None:
            raise ValueError("'first' applies to a world's requests only")
        return self


class BenchmarkSpec(Strict):
    """A benchmark's requests and sets (`unlearnkit benchmarks`), read from `data_dir` (a local
    copy of its hub files) or the hub; `stream` (MUSE News: scal, sust) makes its folds the
    requests, applied in order."""

    name: str
    data_dir: Path | None = None
    stream: str | None = None


class ServiceSpec(Strict):
    """How `unlearnkit serve` runs this plan (docs/service.md); `unlearnkit run` ignores it."""

    retire_guard: bool = Field(False, description="retire a request's blocking entry once it is verified in the weights")
    guard: dict[str, Any] = Field(default_factory=dict, description="settings of the blocking guardrail (the `guardrail` method's)")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="larger request bodies are refused with 413")
    max_records: int = Field(1000, ge=1, description="records (and probes) per submitted request")
    max_text_chars: int = Field(20_000, ge=1, description="characters per text field of a submitted request")
    max_new_tokens: int = Field(256, ge=1, description="cap on a chat completion's max_tokens")
    rate_limit: float | None = Field(None, gt=0, description="requests per minute per API key (a key's own limit wins)")
    generation_slots: int = Field(1, ge=1, description="chat completions generated at the same time")


class EvalSpec(Strict):
    suite: str = "quick"
    per_set: int | None = Field(None, ge=1, description="records per kind and set (default: the suite's own)")
    max_new_tokens: int | None = Field(None, ge=1, description="cap on generation length in the suite")
    oracle: bool = True  # compare with the step's retrain oracle where `prepare` provides one
    lm_eval: list[str] = Field(default_factory=list, description="lm-evaluation-harness tasks after every step (needs unlearnkit[lm-eval])")
    lm_eval_include: Path | None = None  # a folder of task YAMLs of your own
    lm_eval_limit: int | None = Field(None, ge=1, description="questions per lm-eval task")
    # Long streams (docs/sequential.md, "Evaluation that scales"): besides the new request(s),
    # measure a seeded rotating sample of earlier requests of about this many records per step
    # instead of all of them, and everything every `full_every` steps, at oracle steps and at the end.
    earlier: int | None = Field(None, ge=1, description="records of earlier requests measured per step (default: every earlier request)")
    full_every: int | None = Field(None, ge=1, description="with `earlier`: measure every request at every N-th step")
    holdout_reference: bool = Field(False, description="also measure forget quality against the holdout reference (between sparse oracles)")

    @model_validator(mode="after")
    def _full_every_needs_earlier(self) -> EvalSpec:
        if self.full_every is not None and self.earlier is None:
            raise ValueError("'full_every' applies with 'earlier' (without it every step measures every request)")
        return self


class RelapseSpec(Strict):
    metric: str = "probability"  # a forget-scope row of the suite
    threshold: float
    higher_means_remembered: bool = True


class FinalSpec(Strict):
    """What the runner does after the last step (each stage is cached in the run folder)."""

    references: bool = False  # the suite on the start model and on every oracle: the report's reference lines
    attacks: list[str] = Field(default_factory=list)  # attacks on the last step's model, target and oracle
    attack_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per attack, e.g. {leak_at_k: {n: 8}}
    report: bool = True  # report.html

    @field_validator("attacks", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [] if value is None else value if isinstance(value, list) else [value]


UTILITY_ROLES = ("retain", "neighbours", "holdout", "real_authors", "real_facts", "general_text")
KEEP_PATTERN = re.compile(r"^(all|deltas|last:[1-9][0-9]*)$")


class CheckpointSpec(Strict):
    keep: str = "all"

    @field_validator("keep")
    @classmethod
    def _keep(cls, value: str) -> str:
        if not KEEP_PATTERN.match(value):
            raise ValueError(f"'{value}' is not one of all, last:N (N >= 1), deltas")
        return value

    @property
    def last(self) -> int | None:
        return int(self.keep.split(":")[1]) if self.keep.startswith("last:") else None


class Plan(Strict):
    model: str
    format: str | None = None  # prompt format: auto, chat, plain, raw or a template
    dtype: str = "auto"
    device: str = "auto"
    # bf16 autocast where native (models/precision.py) for scoring, generation and, unless a
    # method's own `precision` setting says otherwise, training (docs/performance.md).
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    method: list[MethodSpec]
    lora: dict[str, Any] | None = None  # LoRA for training methods (SSU brings its own)
    requests: list[RequestSource] = Field(default_factory=list)
    benchmark: BenchmarkSpec | None = None
    retain: list[Path] = Field(default_factory=list)
    utility: list[str] = Field(default_factory=list)  # ROLE=PATH or a file named after its role (real_facts.jsonl)
    prepare: dict[str, Any] | None = None  # start from a built-in world's target; oracles per step
    evaluation: EvalSpec = Field(default_factory=EvalSpec)
    attacks: list[str] = Field(default_factory=list)
    output: Path
    seed: int = Field(0, ge=0, lt=2**63)
    checkpoints: CheckpointSpec = Field(default_factory=CheckpointSpec)
    purge: bool = False
    relapse: RelapseSpec | None = None
    final: FinalSpec = Field(default_factory=FinalSpec)
    guard: Guard = Field(default_factory=Guard)  # damage budget, forget target, calibration (docs/guarded.md)
    coalesce: int = Field(1, ge=1, description="at most this many pending requests applied together in one step")
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    accelerate_config: Path | None = None
    source: Path | None = Field(None, exclude=True)  # the YAML file, for error messages

    @field_validator("method", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        # `method: ssu`, `method: {name: ssu, ...}` and a list of either all mean a list.
        items = value if isinstance(value, list) else [value]
        return [{"name": v} if isinstance(v, str) else v for v in items]

    @field_validator("requests", mode="before")
    @classmethod
    def _requests(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        return [{"file": v} if isinstance(v, str) else v for v in items]

    @field_validator("benchmark", mode="before")
    @classmethod
    def _benchmark(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("prepare", mode="before")
    @classmethod
    def _prepare(cls, value: Any) -> Any:
        # `prepare: true` means the default prepare settings; false or absent means none.
        return {} if value is True else None if value is False else value

    @field_validator("retain", "utility", "attacks", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [] if value is None else value if isinstance(value, list) else [value]

    @field_validator("requests")
    @classmethod
    def _submitted_last(cls, value: list[RequestSource]) -> list[RequestSource]:
        if any(source.submitted for source in value[:-1]):
            raise ValueError("'submitted: true' must be the last entry (submitted requests come after the plan's own)")
        return value

    @field_validator("method")
    @classmethod
    def _not_empty(cls, value: list[MethodSpec]) -> list[MethodSpec]:
        if not value:
            raise ValueError("name at least one method")
        return value

    @property
    def label(self) -> str:
        return "+".join(m.name for m in self.method)

    @property
    def takes_submitted(self) -> bool:
        """Whether requests submitted to `unlearnkit serve` follow the plan's own."""
        return self.requests[-1].submitted


def show_key(key: Any) -> str:
    """A key as an error line shows it: control characters escaped, at most 60 characters."""
    return printable(key, 60)


def _loc(parts: tuple[Any, ...]) -> str:
    return ".".join(show_key(p) for p in parts if p not in ("function-after", "function-before"))


def _check_methods(plan: Plan, where: str) -> None:
    """Each method exists and its settings are valid, reported as `method.settings.KEY`."""
    from unlearnkit.methods.base import METHODS

    names = METHODS.names()
    many = len(plan.method) > 1
    for index, spec in enumerate(plan.method):
        key = f"method.{index}" if many else "method"
        if spec.name not in names:
            raise PlanError(f"{where}: {key}.name: unknown method '{spec.name}'{did_you_mean(spec.name, names)}; valid: {', '.join(names)}")
        try:
            METHODS.get(spec.name).from_settings(spec.settings)
        except SettingError as exc:
            raise PlanError(f"{where}: {key}.settings.{exc.key}: {exc.problem}") from None
    try:  # the service's blocking guard is the guardrail method with these settings
        METHODS.get("guardrail").from_settings(plan.service.guard)
    except SettingError as exc:
        raise PlanError(f"{where}: service.guard.{exc.key}: {exc.problem}") from None


def _check_sections(plan: Plan, where: str) -> None:
    """The suite exists and `prepare` settings are valid (checked now, not after step 1)."""
    from unlearnkit.eval.suites import SUITES

    if plan.evaluation.suite not in SUITES:
        names = list(SUITES)
        raise PlanError(f"{where}: evaluation.suite: unknown suite '{plan.evaluation.suite}'{did_you_mean(plan.evaluation.suite, names)}; valid: {', '.join(names)}")
    if plan.attacks or plan.final.attacks:
        from unlearnkit.eval.attacks import build_attacks, parse_names

        try:
            plan.attacks = parse_names(plan.attacks) if plan.attacks else []
        except UnlearnkitError as exc:
            raise PlanError(f"{where}: attacks: {exc}") from None
        try:
            plan.final.attacks = parse_names(plan.final.attacks) if plan.final.attacks else []
            build_attacks(plan.final.attacks, plan.final.attack_settings)
        except UnlearnkitError as exc:
            raise PlanError(f"{where}: final.attacks: {exc}") from None
    if plan.benchmark is not None:
        from unlearnkit.data.benchmarks import BENCHMARKS, parse_name

        try:
            bench, _ = parse_name(plan.benchmark.name)
        except UnlearnkitError as exc:
            raise PlanError(f"{where}: benchmark.name: {exc}") from None
        stream = plan.benchmark.stream
        if stream is not None and stream not in bench.streams:
            streams = ", ".join(b for b in BENCHMARKS[bench.family].streams) or "none"
            raise PlanError(f"{where}: benchmark.stream: unknown stream '{stream}' for {plan.benchmark.name}; streams: {streams}")
    if plan.prepare is not None:
        from unlearnkit.benchmark.prepare import PrepareSettings

        try:
            PrepareSettings(**plan.prepare)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise PlanError(f"{where}: prepare.{_loc(first['loc'])}: {one_line(first['msg'])}") from None


def _resolve(plan: Plan, base: Path) -> Plan:
    def fix(path: Path | None) -> Path | None:
        return None if path is None else path if path.expanduser().is_absolute() else base / path

    for source in plan.requests:
        source.file, source.world = fix(source.file), fix(source.world)
    plan.retain = [fix(p) for p in plan.retain]  # type: ignore[misc]
    plan.utility = [_fix_spec(spec, base) for spec in plan.utility]
    plan.output = fix(plan.output)  # type: ignore[assignment]
    if plan.benchmark is not None:
        plan.benchmark.data_dir = fix(plan.benchmark.data_dir)
    plan.evaluation.lm_eval_include = fix(plan.evaluation.lm_eval_include)
    plan.accelerate_config = fix(plan.accelerate_config)
    model = Path(plan.model).expanduser()
    if plan.model != "default" and not model.is_absolute() and (base / model).exists():
        plan.model = str(base / model)
    return plan


def _fix_spec(spec: str, base: Path) -> str:
    role, sep, path = spec.rpartition("=")
    full = Path(path).expanduser()
    return f"{role}{sep}{full if full.is_absolute() else base / full}"


def _check_files(plan: Plan, where: str) -> None:
    for index, source in enumerate(plan.requests):
        if source.file is not None and not source.file.exists():
            raise PlanError(f"{where}: requests.{index}.file: no such file or folder: {source.file}")
        if source.world is not None and not (source.world / "requests.jsonl").exists():
            raise PlanError(f"{where}: requests.{index}.world: {source.world} is not a built-in world folder (no requests.jsonl)")
    if plan.benchmark is not None and plan.benchmark.data_dir is not None and not plan.benchmark.data_dir.is_dir():
        raise PlanError(f"{where}: benchmark.data_dir: no such folder: {plan.benchmark.data_dir}")
    for index, path in enumerate(plan.retain):
        if not path.exists():
            raise PlanError(f"{where}: retain.{index}: no such file: {path}")
    for index, spec in enumerate(plan.utility):
        role, _, path = spec.rpartition("=")
        role = role or Path(path).stem
        if role not in UTILITY_ROLES:
            raise PlanError(f"{where}: utility.{index}: '{role}' is not a record set role; write ROLE=PATH with ROLE one of {', '.join(UTILITY_ROLES)}")
        if not Path(path).exists():
            raise PlanError(f"{where}: utility.{index}: no such file: {path}")
    if plan.prepare is not None and not any(s.world for s in plan.requests):
        raise PlanError(f"{where}: prepare: needs a built-in world in requests (- world: DIR)")
    if plan.accelerate_config is not None and not plan.accelerate_config.exists():
        raise PlanError(f"{where}: accelerate_config: no such file: {plan.accelerate_config}")
    try:  # a run folder only adds files: it may also start beside worlds and models we wrote
        check_output_folder(plan.output, (RUN_MARKER,), None, beside_ours=True)
    except OutputError as exc:
        raise PlanError(f"{where}: output: {exc}") from None


def parse_plan(data: Any, where: str = "plan", base: Path | None = None, *, check_files: bool = True) -> Plan:
    """Validate a plan given as a dict; `where` names it in errors, `base` resolves paths."""
    if not isinstance(data, dict):
        raise PlanError(f"{where}: expected a mapping of keys (model, method, requests, output, ...)")
    if _count_nodes(data, MAX_PLAN_NODES) > MAX_PLAN_NODES:
        raise PlanError(f"{where}: more than {MAX_PLAN_NODES} values once its aliases are expanded; a plan names files, it does not hold data")
    fields = list(Plan.model_fields)
    for key in data:
        if key not in Plan.model_fields or key == "source":
            raise PlanError(f"{where}: {show_key(key)}: unknown key{did_you_mean(str(key), fields)}")
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = _loc(first["loc"]) or "(top level)"
        msg = one_line(first["msg"].removeprefix("Value error, "))
        if first["type"] == "missing":
            msg = "missing (required)"
        raise PlanError(f"{where}: {loc}: {msg}") from None
    plan.source = Path(where)
    if not plan.requests and plan.benchmark is None:
        raise PlanError(f"{where}: requests: nothing to unlearn: name request files or worlds, or a benchmark (benchmark: tofu:forget10)")
    if base is not None:
        plan = _resolve(plan, base)
    _check_methods(plan, where)
    _check_sections(plan, where)
    if check_files:
        _check_files(plan, where)
    return plan


def load_plan(path: str | Path, *, check_files: bool = True) -> Plan:
    """Read and validate a YAML plan file."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"{path}: no such plan file")
    if path.stat().st_size > MAX_PLAN_BYTES:
        raise PlanError(f"{path}: {path.stat().st_size} bytes; a plan names files, it does not hold data (at most {MAX_PLAN_BYTES} bytes)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PlanError(f"{path} line {line}: not valid UTF-8 (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise PlanError(f"{path}{line}: not valid YAML ({problem})") from None
    except (ValueError, OverflowError, RecursionError) as exc:  # a date such as 2026-13-45, nesting 10000 deep
        raise PlanError(f"{path}: not a usable YAML value ({' '.join(str(exc).split()) or type(exc).__name__})") from None
    return parse_plan(data, str(path), path.parent.resolve(), check_files=check_files)


def _count_nodes(data: Any, budget: int) -> int:
    """How many values `data` holds once aliases are expanded, counting no further than `budget`."""
    stack, seen = [data], 0
    while stack and seen <= budget:
        value = stack.pop()
        seen += 1
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return seen

