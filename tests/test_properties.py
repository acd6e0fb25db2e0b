"""Property-based tests (Hypothesis): generated malformed and hostile inputs to the loaders, the
plan parser and every command's options. Whatever is generated, the answer is a value or one
clear error line: a loader or the parser raises only its own one-line error naming the file;
a command exits non-zero with exactly one `error:` line, no traceback, no internal error, and
no new file anywhere in its folder.

Every generated command line holds at least one input that is wrong in a way the command must
catch before it loads a model (a missing file, a value out of bounds, an output on a file of
the user's, ...), mixed with other options drawn from good and bad values alike. The example
counts (EXAMPLES) are what docs/reliability.md reports; they keep this file near a minute.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import invoke, tree

EXAMPLES = {"loader bytes": 120, "loader rows": 150, "plan dicts": 200, "plan files": 60, "per command": 25}


# The same examples on every run by default, so a CI run is reproducible; UNLEARNKIT_EXPLORE=1
# draws new ones each run (how `eval --suite ''` read as the default suite was found).
EXPLORE = bool(os.environ.get("UNLEARNKIT_EXPLORE"))


def examples(kind: str) -> settings:
    return settings(max_examples=EXAMPLES[kind], deadline=None, derandomize=not EXPLORE,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])



GOOD_ROWS = [{"id": "q1", "question": "Where was Liora born?", "answer": "In Tarnholm."}, {"id": "p1", "text": "Once upon a time."}]
HOSTILE_TEXT = ["", " ", "-", "--", "../../etc/passwd", "a" * 300, "x\ny", "ünï", "CON", "nul\x00byte", "%s%n", "$(rm -rf /)", "🙂", "\\"]


# -- the sandbox every generated input points into --------------------------------------------------
@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("sandbox")
    (root / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GOOD_ROWS))
    (root / "requests.jsonl").write_text(json.dumps({"id": "r1", "records": GOOD_ROWS}) + "\n")
    (root / "garbage.jsonl").write_bytes(b"{not json\n\xff\xfe\x00\n")
    (root / "empty.jsonl").write_text("")
    (root / "bad.json").write_text('{"suite": "quick", "rows": [')
    (root / "notes.txt").write_text("my notes")
    (root / "afile").write_text("a file of the user's")
    (root / "mine").mkdir()
    (root / "mine" / "photo.jpg").write_bytes(b"\xff\xd8")
    (root / "runs").mkdir()  # beside which `runs/typo` is a mistyped local folder
    (root / "nomodel").mkdir()
    (root / "nomodel" / "x.txt").write_text("no config.json here")
    (root / "badledger").mkdir()
    (root / "badledger" / "ledger.sqlite").write_bytes(b"not a database" * 64)
    (root / "badplan.yaml").write_bytes(b"model: [unclosed\n\xff")
    os.symlink(tiny_model_dir, root / "model")  # a good model, so other options must carry the fault
    from unlearnkit.benchmark.world import build_world

    build_world(root / "world", seed=0, size="tiny", num_requests=1)
    return root


@pytest.fixture()
def inside(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(sandbox)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing generated may wait on a network
    return sandbox


# -- loaders ---------------------------------------------------------------------------------------
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=False), st.text(max_size=40),
                        st.sampled_from(HOSTILE_TEXT))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)
record_keys = st.sampled_from(["id", "question", "answer", "text", "prompt", "continuation", "choices", "answer_index", "paraphrased_question",
                               "paraphrased_questions", "perturbed_answers", "meta", "records", "probes", "received_at", "kind", "anwser"])
row = st.dictionaries(record_keys, json_value, max_size=6)


def loaded_or_one_line(path: Path) -> None:
    from unlearnkit.data.loaders import load_records, load_requests
    from unlearnkit.errors import DataError

    for load in (load_records, load_requests):
        try:
            load(path)
        except DataError as exc:
            message = str(exc)
            assert len(message.splitlines()) == 1, message
            assert str(path) in message or path.name in message, message


@examples("loader bytes")
@given(content=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]))
def test_loaders_on_arbitrary_bytes(tmp_path: Path, content: bytes, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    path.write_bytes(content)
    loaded_or_one_line(path)


@examples("loader rows")
@given(rows=st.lists(st.one_of(row, json_value), min_size=1, max_size=4), suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_loaders_on_hostile_rows(tmp_path: Path, rows: list[Any], suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        keys = sorted({k for r in rows if isinstance(r, dict) for k in r}) or ["question"]
        lines = [",".join(json.dumps(k) for k in keys)] + [",".join(json.dumps(str(r.get(k, ""))) if isinstance(r, dict) else json.dumps(str(r)) for k in keys) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    loaded_or_one_line(path)


# -- the plan parser -------------------------------------------------------------------------------
plan_keys = st.sampled_from(["model", "method", "requests", "output", "retain", "utility", "evaluation", "attacks", "seed", "checkpoints",
                             "purge", "relapse", "final", "guard", "prepare", "benchmark", "format", "dtype", "device", "lora",
                             "accelerate_config", "sed", "source"])
path_text = st.sampled_from(["good.jsonl", "requests.jsonl", "garbage.jsonl", "empty.jsonl", "missing.jsonl", "mine", "afile", "model",
                             "runs/typo", "/no/such/thing", *HOSTILE_TEXT])
plan_value = st.one_of(json_value, path_text, st.lists(path_text, max_size=3),
                       st.fixed_dictionaries({"name": st.sampled_from(["ga", "npo", "ssu", "nope", ""])}, optional={"settings": st.dictionaries(st.text(max_size=8), json_scalar, max_size=3)}),
                       st.fixed_dictionaries({}, optional={"file": path_text, "world": path_text, "first": json_scalar, "kind": json_scalar}))
plan_dict = st.dictionaries(plan_keys, plan_value, max_size=8)


def planned_or_one_line(data: Any, base: Path) -> None:
    from unlearnkit.plan import PlanError, parse_plan

    try:
        parse_plan(data, "plan.yaml", base)
    except PlanError as exc:
        message = str(exc)
        assert message.startswith("plan.yaml") and len(message.splitlines()) == 1, message


@examples("plan dicts")
@given(data=st.one_of(plan_dict, json_value))
def test_plan_parser_on_hostile_plans(inside: Path, data: Any) -> None:
    before = tree(inside)
    planned_or_one_line(data, inside)
    assert tree(inside) == before


@examples("plan files")
@given(content=st.one_of(st.binary(max_size=300), plan_dict.map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode("utf-8", "surrogatepass"))))
def test_load_plan_on_hostile_files(tmp_path: Path, content: bytes) -> None:
    from unlearnkit.plan import PlanError, load_plan

    path = tmp_path / "plan.yaml"
    path.write_bytes(content)
    try:
        load_plan(path)
    except PlanError as exc:
        assert str(exc).startswith(str(path)) and len(str(exc).splitlines()) == 1, str(exc)


# -- every command's options -----------------------------------------------------------------------
number = st.one_of(st.integers(-(2**70), 2**70).map(str), st.floats().map(str), st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e999", "", "abc", "0x10", " 3"]))
small_positive = st.sampled_from(["1", "2", "8"])
text = st.one_of(st.text(max_size=20), st.sampled_from(HOSTILE_TEXT))
data_path = st.sampled_from(["good.jsonl", "requests.jsonl", "garbage.jsonl", "empty.jsonl", "missing.jsonl", "mine", "notes.txt", "afile", *HOSTILE_TEXT])
bad_data = st.sampled_from(["garbage.jsonl", "empty.jsonl", "missing.jsonl", "mine", "notes.txt", "afile", "nul\x00byte", ""])
model_path = st.sampled_from(["model", "missing-model", "runs/typo", "nomodel", "afile", "nobody/nothing", "", "nul\x00byte"])
bad_model = st.sampled_from(["missing-model", "runs/typo", "nomodel", "afile", "nobody/nothing", "", "nul\x00byte"])
json_out = st.sampled_from(["out.json", "sub/out.json", "mine", "afile", "out.txt", "good.jsonl", "afile/x.json", "", *HOSTILE_TEXT])
bad_json_out = st.sampled_from(["mine", "afile", "out.txt", "good.jsonl", "afile/x.json", "", "nul\x00byte"])
bad_folder_out = st.sampled_from(["afile", "mine", "afile/sub", "", "nul\x00byte"])
bad_number = st.sampled_from(["0", "-1", "nan", "inf", "abc", ""])
bad_device = st.sampled_from(["gpu", "cuda:x", "", "tpu", "cpu "])
bad_format = st.sampled_from(["no slot", "{answer}", "chatty"])

# command -> (good arguments, {option: values drawn at random}, {option: values that are certainly
# wrong}). A generated line starts from the good arguments, so its one certain fault is what
# stops it: missed, the command would load the tiny model and write its output, and fail the test.
SPECS: dict[str, tuple[dict[str, str | None], dict[str, Any], dict[str, Any]]] = {
    "score": ({"--data": "good.jsonl", "--model": "model", "--device": "cpu"},
              {"--batch-size": number, "--json": json_out, "--format": text},
              {"--data": bad_data, "--model": bad_model, "--batch-size": bad_number, "--json": bad_json_out, "--device": bad_device, "--format": bad_format}),
    "generate": ({"--data": "good.jsonl", "--model": "model", "--device": "cpu", "--max-new-tokens": "2"},
                 {"--n": number, "--temperature": number, "--top-p": number, "--seed": number, "--stop": text, "--json": json_out},
                 {"--data": bad_data, "--model": bad_model, "--n": bad_number, "--top-p": st.sampled_from(["0", "1.5", "nan"]),
                  "--max-new-tokens": bad_number, "--seed": st.sampled_from(["-1", "abc"]), "--json": bad_json_out}),
    "unlearn": ({"--out": "new-model", "--forget": "requests.jsonl", "--model": "model", "--method": "ga", "--set": "max_steps=1", "--no-guard": None, "--device": "cpu"},
                {"--retain": data_path, "--lora-r": number, "--guard-set": text, "--request": text},
                {"--out": bad_folder_out, "--forget": bad_data, "--model": bad_model, "--retain": bad_data, "--control": bad_data,
                 "--method": st.sampled_from(["nope", "", "GA"]), "--set": st.sampled_from(["noequals", "=1", "lr=-1", "max_steps=abc"]),
                 "--lora-r": bad_number, "--lora-alpha": bad_number, "--guard-set": st.sampled_from(["budget.retain_drop=abc", "nonsense=1", "x"]),
                 "--request": st.sampled_from(["no-such-request", ""])}),
    "eval": ({"--data": "retain=good.jsonl", "--model": "model", "--device": "cpu", "--limit": "1", "--max-new-tokens": "2"},
             {"--suite": st.sampled_from(["quick", "nope", ""]), "--json": json_out, "--batch-size": number},
             {"--data": bad_data, "--model": bad_model, "--suite": st.sampled_from(["nope", ""]), "--oracle": st.sampled_from(["bad.json", "missing.json", "missing-model"]),
              "--benchmark": st.sampled_from(["tofu", "nope:x", "muse:nope", ""]), "--data-dir": st.sampled_from(["mine", "missing"]),
              "--reference-logs": st.sampled_from(["missing.json", "afile"]), "--json": bad_json_out, "--ou-dir": st.sampled_from(["afile", "afile/sub"]),
              "--limit": bad_number, "--max-new-tokens": bad_number, "--lm-eval-limit": bad_number, "--lm-eval-include": st.sampled_from(["missing", "afile"]),
              "--batch-size": bad_number}),
    "attack": ({"--model": "model", "--attack": "leak_at_k", "--data": "requests=requests.jsonl", "--set": "leak_at_k.n=1", "--device": "cpu"},
               {"--json": json_out, "--request": text, "--target": model_path},
               {"--model": bad_model, "--attack": st.sampled_from(["nope", ",", "leak_at_k,nope"]), "--data": bad_data, "--json": bad_json_out,
                "--set": st.sampled_from(["noequals", "nope.n=1", "leak_at_k"]), "--request": st.sampled_from(["no-such-request"]),
                "--target": bad_model, "--oracle": bad_model, "--batch-size": bad_number}),
    "world": ({"--out": "new-world", "--size": "tiny", "--requests": "1"}, {"--seed": number},
              {"--out": bad_folder_out, "--seed": st.sampled_from(["-1", "abc"]), "--size": st.sampled_from(["huge", "", "TINY"]), "--requests": bad_number}),
    "prepare": ({"--world": "world", "--model": "model", "--device": "cpu", "--epochs": "1", "--oracles": "none"}, {"--lora": number, "--lr": number, "--json": json_out},
                {"--world": st.sampled_from(["missing", "mine", "afile", ""]), "--model": bad_model, "--oracles": st.sampled_from(["some", ""]), "--lora": st.sampled_from(["-1", "abc"]),
                 "--lr": bad_number, "--epochs": bad_number, "--batch-size": bad_number, "--finetune-share": st.sampled_from(["0", "1.5", "nan"]),
                 "--precision": st.sampled_from(["float8", ""]), "--json": bad_json_out}),
    "run": ({}, {}, {"": st.sampled_from(["missing.yaml", "mine", "afile", "badplan.yaml", "good.jsonl", "", "nul\x00byte"])}),
    "ledger": ({}, {"--metric": text, "--long": st.just(None)}, {"": st.sampled_from(["missing", "mine", "afile", "badledger", "good.jsonl", "", "nul\x00byte"])}),
    "report": ({}, {"--out": json_out}, {"": st.sampled_from(["missing", "mine", "afile", "badledger", ""])}),
    "compare": ({}, {"--out": json_out, "--json": json_out}, {"": st.sampled_from(["missing", "mine", "afile", "badledger", ""])}),
    "demo": ({"--out": "new-demo", "--model": "model", "--size": "tiny", "--requests": "1", "--attacks": ""},
             {"--seed": number, "--set": text},
             {"--out": bad_folder_out, "--size": st.sampled_from(["huge", ""]), "--seed": st.sampled_from(["-1", "x"]), "--method": st.sampled_from(["nope", "GA"]),
              "--set": st.sampled_from(["noequals", "epochs=abc"]), "--requests": bad_number, "--attacks": st.sampled_from(["nope", "leak_at_k,nope"]),
              "--model": bad_model}),
    "models": ({}, {"--json": st.just(None)}, {"--bogus": st.just(None), "": st.sampled_from(["extra"])}),
    "methods": ({}, {"--json": st.just(None)}, {"--bogus": st.just(None), "": st.sampled_from(["extra"])}),
    "benchmarks": ({}, {}, {"--bogus": st.just(None), "": st.sampled_from(["extra"])}),
}


def as_args(option: str, value: str | None) -> list[str]:
    """An option and its value (a flag has none; "" names a positional argument)."""
    if option == "":
        return [value or ""]
    return [option] if value is None else [option, value]


@st.composite
def command_line(draw: st.DrawFn, command: str) -> list[str]:
    good, anything, wrong = SPECS[command]
    fault = draw(st.sampled_from(sorted(wrong)))
    chosen = draw(st.lists(st.sampled_from(sorted(anything)), unique=True, max_size=len(anything))) if anything else []
    values = {option: value for option, value in good.items() if option != fault}
    for option in chosen:
        if option != fault:
            values[option] = draw(anything[option])
    args = [command]
    for option, value in values.items():
        args += as_args(option, value)
    return args + as_args(fault, draw(wrong[fault]))


@pytest.mark.parametrize("command", sorted(SPECS))
def test_every_command_refuses_hostile_options_with_one_line(inside: Path, command: str) -> None:
    @examples("per command")
    @given(args=command_line(command))
    def check(args: list[str]) -> None:
        before = tree(inside)
        outcome = invoke(*args)
        assert outcome.failed_cleanly(), (args, outcome.code, outcome.err[-2000:])
        assert tree(inside) == before, (args, sorted(tree(inside) ^ before))

    check()
